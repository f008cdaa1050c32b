//! Flags of `cargo xtask config`.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask config show
  LLORCH_MODEL_BASE_DIR=/srv/models cargo xtask --json config show
  cargo xtask config path
  cargo xtask config init
  cargo xtask config set orchestrator.url http://10.0.0.2:8080")]
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
    /// Set one value in the config file (comments stay; key and value are checked first)
    #[command(after_help = "\
Examples:
  cargo xtask config set orchestrator.url http://10.0.0.2:8080
  cargo xtask config set orchestrator.api_token_file ~/.config/llorch/api-token
  cargo xtask config set remote.ssh_timeout 5

KEY is SECTION.KEY as in the file (`cargo xtask config init` writes one listing every key).
Token files must exist and hold a token (mode 0600); they are stored as absolute paths.")]
    Set {
        /// The setting, e.g. `orchestrator.url`
        key: String,
        /// Its new value
        value: String,
    },
}
