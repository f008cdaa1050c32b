//! The whole command-line surface of `cargo xtask`: global flags here, one file per domain
//! beside this one. Every `///` line is the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod audit;
mod build;
mod config;
mod coverage;
mod dev;
mod fleet;
mod git;
mod jobs;
mod lint;
mod models;
mod pool;
mod remote;
mod stack;
mod test;
mod top;

pub use audit::AuditCmd;
pub use build::BuildCmd;
pub use config::ConfigCmd;
pub use coverage::CoverageArgs;
pub use dev::DevCmd;
pub use fleet::{FleetCmd, FleetHostCmd, FleetSubcommand};
pub use git::{GitCmd, SubmodulesCmd};
pub use jobs::{JobsArgs, JobsCmd, SubmitArgs};
pub use lint::LintArgs;
pub use models::ModelsCmd;
pub use pool::{PoolCmd, PoolModelsCmd, PoolSubcommand, PoolWorkerCmd};
pub use remote::{HostsCmd, RemoteCmd};
pub use stack::{BenchArgs, DownArgs, UpArgs};
pub use test::{TestArgs, TestCmd};
pub use top::TopArgs;

const AFTER_HELP: &str = "\
Examples:
  cargo xtask up                                  # install, build, start, stream an answer
  cargo xtask jobs submit --prompt 'Once upon a time' --max-tokens 64
  cargo xtask top                                 # the fleet live: workers, queues, jobs, logs
  cargo xtask test all                            # every suite; what CI runs
  cargo xtask models download gemma3-270m
  cargo xtask pool worker spawn cpu --model gemma3-270m
  cargo xtask fleet up                            # every host of fleet.toml, in parallel
  cargo xtask --remote workstation git status     # the same command on another host over SSH
  cargo xtask --json dev doctor                   # one JSON document on stdout

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
    /// Run the command on this host over SSH, in its profile's repo_path (git, models, build, test, dev, pool)
    #[arg(long, global = true, value_name = "HOST")]
    pub remote: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check orcd's hash-chained audit log
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Build the worker (per backend) and orcd, showing progress and the binaries' paths
    #[command(subcommand)]
    Build(BuildCmd),
    /// Show, locate or create the configuration file
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Check, set up and validate this machine for llama-orch development
    #[command(subcommand)]
    Dev(DevCmd),
    /// orcd and every host's workers from one file: plan, up, status, down
    Fleet(FleetCmd),
    /// Status, pull, sync, clean, branches and submodules of the checkout
    #[command(subcommand)]
    Git(GitCmd),
    /// Submit, list, inspect and cancel jobs on orcd (tokens stream to stdout)
    Jobs(JobsArgs),
    /// The model catalog; download, list, inspect, verify and delete models
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Workers and models on this machine or a pool host
    Pool(PoolCmd),
    /// Host profiles and commands on other machines over SSH
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Check formatting (rustfmt), lints (clippy, warnings denied) and import circles
    Lint(LintArgs),
    /// Line coverage of the unit suite per crate and in total (cargo-llvm-cov)
    Coverage(CoverageArgs),
    /// Run the unit, integration and smoke suites and report `N passed, N failed, N skipped`
    #[command(subcommand)]
    Test(TestCmd),
    /// The fleet live in the terminal: workers, queues, jobs and a worker's log; cancel jobs
    Top(TopArgs),
    /// The main job: install what is missing, build, fetch the model, start orcd and a worker,
    /// and stream a first answer; the stack keeps running
    Up(UpArgs),
    /// Stop the orcd and workers started by `up` or `pool worker spawn` on this machine
    Down(DownArgs),
    /// Measure the worker against llama.cpp's llama-server (alternating, with ratios) and orcd
    /// against talking to the worker direct
    Bench(BenchArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and subcommand shows examples in `--help` (the spec's rule), and every
    /// option says what it does.
    #[test]
    fn every_command_has_examples_and_every_option_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_name() != "help" {
                let after = command
                    .get_after_help()
                    .map(|text| text.to_string())
                    .unwrap_or_default();
                if !after.contains("Example") {
                    missing.push(format!("{path}: no examples"));
                }
                for argument in command.get_arguments() {
                    let id = argument.get_id().as_str();
                    if argument.get_help().is_none() && id != "help" && id != "version" {
                        missing.push(format!("{path} --{id}: no help text"));
                    }
                }
            }
            for subcommand in command.get_subcommands() {
                walk(subcommand, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "add a `///` line or an `after_help` with examples:\n{}",
            missing.join("\n")
        );
    }
}
