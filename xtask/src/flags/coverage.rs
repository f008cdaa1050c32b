//! Flags of `cargo xtask coverage`.

use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask coverage                # line coverage of the unit suite, per crate and in total
  cargo xtask coverage --files        # also every file, lowest first
  cargo xtask --json coverage         # one JSON document: crates, files, total
  cargo xtask coverage -p llorch-catalog -p xtask --files   # two crates, no llama.cpp build

Runs the unit suite (`--workspace --lib --bins`, release) under cargo-llvm-cov, in its own
target directory (target/llvm-cov-target: instrumented code is another build). Installs what
it needs first, as `dev setup` does: Debian's llvm-22 (llvm-cov and llvm-profdata matching
rustc's LLVM 22; or set LLVM_COV and LLVM_PROFDATA) and cargo-llvm-cov.")]
pub struct CoverageArgs {
    /// Also list every file's coverage, lowest first
    #[arg(long)]
    pub files: bool,
    /// Measure only this workspace package (repeatable); default: the whole workspace, whose
    /// instrumented build includes llama.cpp's
    #[arg(long = "package", short = 'p', value_name = "NAME")]
    pub packages: Vec<String>,
    /// Install missing tools without asking
    #[arg(long)]
    pub yes: bool,
}
