//! Flags of `cargo xtask lint`.

use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask lint                # rustfmt --check, then clippy -D warnings over the workspace
  cargo xtask --json lint

`cargo xtask test all` runs the same checks as its first suite.")]
pub struct LintArgs {}
