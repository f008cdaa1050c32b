//! Flags of `cargo xtask dev`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask dev doctor
  cargo xtask dev setup --yes
  cargo xtask --json dev check")]
pub enum DevCmd {
    /// Check the tools this project needs (Rust, git, C/C++ compiler, cmake, libclang, ssh,
    /// python3 + pip, CUDA or Metal where relevant) and print the fix for each problem
    #[command(after_help = "Examples:\n  cargo xtask dev doctor\n  cargo xtask --json dev doctor")]
    Doctor,
    /// Install what `dev doctor` finds missing, initialise submodules, fetch the default model,
    /// install what the tests need (sshd, the `openai` and `anthropic` Python clients, the chat
    /// model) and write
    /// a default config file if none exists; quick when nothing is missing
    #[command(
        after_help = "Examples:\n  cargo xtask dev setup          # asks before installing packages\n  cargo xtask dev setup --yes    # installs without asking (CI)"
    )]
    Setup {
        /// Install missing system packages without asking
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Validate the config file and the model catalog, and check that built binaries exist
    #[command(after_help = "Examples:\n  cargo xtask dev check\n  cargo xtask --json dev check")]
    Check,
}
