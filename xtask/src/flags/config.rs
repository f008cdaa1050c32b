//! Flags of `cargo xtask config`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask config show
  LLORCH_MODEL_BASE_DIR=/srv/models cargo xtask --json config show
  cargo xtask config path
  cargo xtask config init")]
pub enum ConfigCmd {
    /// Print the effective settings and where each value came from
    #[command(after_help = "Example:\n  cargo xtask --json config show")]
    Show,
    /// Print the path of the config file in use
    #[command(after_help = "Example:\n  cargo xtask config path")]
    Path,
    /// Write a commented default config file if none exists
    #[command(
        after_help = "Example:\n  cargo xtask config init\n  cargo xtask config init --force"
    )]
    Init {
        /// Overwrite an existing file
        #[arg(long)]
        force: bool,
    },
}
