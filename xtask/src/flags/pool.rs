//! Flags of `cargo xtask pool`.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Subcommand};

/// `pool` and, for every subcommand, the host it acts on.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask pool worker spawn cpu --model gemma3-270m
  cargo xtask pool worker list
  cargo xtask pool status --host gpu-box
  cargo xtask pool models download gemma3-270m --host gpu-box

With --host, the command runs as `cargo xtask pool ...` in the host's checkout (its profile's
repo_path) over SSH; without it, it acts on this machine.")]
pub struct PoolCmd {
    /// Act on this host (profile name or ssh alias) instead of this machine
    #[arg(long, global = true, value_name = "HOST")]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: PoolSubcommand,
}

#[derive(Debug, Subcommand)]
pub enum PoolSubcommand {
    /// Download or list the models of a pool host (needs --host; `cargo xtask models` is local)
    #[command(subcommand)]
    Models(PoolModelsCmd),
    /// Start, list, stop and read the logs of workers
    #[command(subcommand)]
    Worker(PoolWorkerCmd),
    /// Models present, workers running, and a GPU, CPU and memory summary
    #[command(after_help = "\
Examples:
  cargo xtask pool status
  cargo xtask --json pool status --host gpu-box")]
    Status,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask pool models list --host gpu-box
  cargo xtask pool models download gemma3-270m --host gpu-box")]
pub enum PoolModelsCmd {
    /// Download a catalog model on the host (`cargo xtask models download ID` there)
    #[command(
        after_help = "Example:\n  cargo xtask pool models download gemma3-270m --host gpu-box"
    )]
    Download {
        /// Catalog id of the model
        id: String,
    },
    /// List the models on the host (`cargo xtask models list` there)
    #[command(after_help = "Example:\n  cargo xtask --json pool models list --host gpu-box")]
    List,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask pool worker spawn cpu --model gemma3-270m --port 9001
  cargo xtask pool worker list
  cargo xtask pool worker logs worker-box-9001 --follow
  cargo xtask pool worker stop worker-box-9001")]
pub enum PoolWorkerCmd {
    /// Start a worker detached, wait until its /health says ready, print its id, port and pid
    #[command(after_help = "\
Examples:
  cargo xtask pool worker spawn cpu --model gemma3-270m
  cargo xtask pool worker spawn cuda --model gemma3-270m --gpu 1 --port 9002
  cargo xtask pool worker spawn cpu --model gemma3-270m --host gpu-box --bind 0.0.0.0
  cargo xtask pool worker spawn cpu --model gemma3-270m -- --slots 4 --ctx-size 4096

Without --port, a free port is picked before the worker starts. The worker's output goes to
<run dir>/<id>.log; the run dir is LLORCH_RUN_DIR, $XDG_RUNTIME_DIR/llorch or
~/.local/state/llorch/run.")]
    Spawn {
        /// Backend to run the model on: cpu, cuda or metal
        backend: llorch_api::Backend,
        /// Catalog id (or GGUF path) of the model to serve
        #[arg(long, value_name = "ID")]
        model: String,
        /// GPU index for cuda and metal
        #[arg(long, value_name = "N")]
        gpu: Option<u32>,
        /// Port to listen on (default: a free port)
        #[arg(long, value_name = "P")]
        port: Option<u16>,
        /// Address the worker listens on; the orchestrator must be able to reach it
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
        bind: IpAddr,
        /// URL the orchestrator uses to reach the worker (default: http://BIND:PORT); needed
        /// with --bind 0.0.0.0
        #[arg(long, value_name = "URL")]
        advertise_url: Option<String>,
        /// Worker id (default: worker-<hostname>-<port>)
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Orchestrator the worker registers with (default: the configured orchestrator url)
        #[arg(long, value_name = "URL")]
        orchestrator_url: Option<String>,
        /// Directory holding the llorch-worker binary (default: <repo>/target/release)
        #[arg(long, env = "LLORCH_BIN_DIR", value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Seconds to wait for the worker to load its model and report ready
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
        /// Further arguments for llorch-worker itself (after `--`)
        #[arg(last = true, value_name = "WORKER_ARGS")]
        worker_args: Vec<String>,
    },
    /// List the workers started on this machine (or --host) and whether they are ready
    #[command(
        after_help = "Examples:\n  cargo xtask pool worker list\n  cargo xtask --json pool worker list --host gpu-box"
    )]
    List,
    /// Stop a worker: SIGTERM, then SIGKILL if it has not exited after 10 s
    #[command(after_help = "Example:\n  cargo xtask pool worker stop worker-box-9001")]
    Stop {
        /// Worker id, as `pool worker list` shows it
        id: String,
    },
    /// Print a worker's log
    #[command(
        after_help = "Examples:\n  cargo xtask pool worker logs worker-box-9001 -n 50\n  cargo xtask pool worker logs worker-box-9001 --follow"
    )]
    Logs {
        /// Worker id, as `pool worker list` shows it
        id: String,
        /// Print only the last N lines
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<usize>,
        /// Keep printing new lines until the worker exits
        #[arg(short, long)]
        follow: bool,
    },
}
