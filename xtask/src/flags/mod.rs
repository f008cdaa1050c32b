//! The whole command-line surface of `cargo xtask`: global flags here, one file per domain
//! beside this one. Every `///` line is the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod config;
mod dev;

pub use config::ConfigCmd;
pub use dev::DevCmd;

const AFTER_HELP: &str = "\
Examples:
  cargo xtask config show                 # effective settings and where each came from
  cargo xtask --json config show          # the same as one JSON document

Configuration precedence: flags > LLORCH_* environment > ~/.config/llorch/config.toml > defaults.";

/// llama-orch dev-ops toolkit: models, workers, jobs and the developer workflow.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every command, before or after the subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalFlags {
    /// Print one JSON document on stdout instead of human output
    #[arg(long, global = true)]
    pub json: bool,
    /// Disable colours (also NO_COLOR or LLORCH_NO_COLOR)
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Print more detail (commands run, decisions taken)
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Config file to use instead of ~/.config/llorch/config.toml [env: LLORCH_CONFIG_PATH]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Directory that holds downloaded models [env: LLORCH_MODEL_BASE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub model_base_dir: Option<PathBuf>,
    /// Root of the llama-orch checkout [env: LLORCH_REPO_ROOT]
    #[arg(long, global = true, value_name = "DIR")]
    pub repo_root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show, locate or create the configuration file
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Check, set up and validate this machine for llama-orch development
    #[command(subcommand)]
    Dev(DevCmd),
}
