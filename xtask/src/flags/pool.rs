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

// Parsed once per run; the size of the spawn variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum PoolSubcommand {
    /// Download or list the models of a pool host (needs --host; `cargo xtask models` is local)
    #[command(subcommand)]
    Models(PoolModelsCmd),
    /// Start, restart, list, stop, forget and read the logs of workers
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
        after_help = "Examples:\n  cargo xtask pool models download gemma3-270m --host gpu-box\n  cargo xtask pool models download hf:OWNER/REPO/FILE.gguf --id mine --host gpu-box"
    )]
    Download {
        /// Catalog id of the model, or hf:OWNER/REPO/FILE.gguf
        id: String,
        /// Catalog id to record an hf: download under on the host
        #[arg(long = "id", value_name = "ID")]
        as_id: Option<String>,
        /// Branch, tag or commit of an hf: download
        #[arg(long, value_name = "REV")]
        revision: Option<String>,
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
  cargo xtask pool worker logs box-gemma3-270m-9001 --follow
  cargo xtask pool worker stop box-gemma3-270m-9001
  cargo xtask pool worker forget box-gemma3-270m-9001")]
#[allow(clippy::large_enum_variant)]
pub enum PoolWorkerCmd {
    /// Start a worker detached and wait until orcd lists it live; print its id, URL and pid
    #[command(after_help = "\
Examples:
  cargo xtask pool worker spawn cpu --model gemma3-270m
  cargo xtask pool worker spawn cuda --model gemma3-270m --gpu 1 --port 9002
  cargo xtask pool worker spawn cpu --model gemma3-270m --host gpu-box
  cargo xtask pool worker spawn cpu --model gemma3-270m --host gpu-box --worker-token-file ~/.config/llorch/worker.token
  cargo xtask pool worker spawn cpu --model gemma3-270m --slots 4 --ctx-size 4096
  cargo xtask pool worker spawn cpu --model gemma3-270m --embeddings
  cargo xtask pool worker spawn cpu --model gemma3-270m -- --queue-size 64

The worker registers with the orchestrator configured HERE (--orchestrator-url, else
LLORCH_ORCHESTRATOR_URL or `orchestrator.url` in the config file), also with --host. With
--host it listens on 0.0.0.0 and advertises http://ADDRESS:PORT, ADDRESS being the address
the host profile connects to (--advertise-host or --advertise-url to override).
The command succeeds only once orcd lists the worker as live; otherwise it prints the worker's
own reason (a refused token, an unreachable orchestrator URL), stops the worker and fails.
The worker id is HOST-MODEL-NAME (NAME: --name, else the --port, else cpu or cudaN), so the same
spawn command, or `pool worker restart ID`, replaces the worker's record in orcd.
Without --port, a free port is picked before the worker starts. The worker's output goes to
<run dir>/<id>.log; the run dir is LLORCH_RUN_DIR, $XDG_RUNTIME_DIR/llorch or
~/.local/state/llorch/run.")]
    Spawn {
        /// Backend to run the model on: cpu, cuda or metal
        backend: llorch_api::Backend,
        /// Catalog id (or GGUF path) of the model to serve
        #[arg(long, value_name = "ID")]
        model: String,
        /// GPU index for cuda and metal [default: the worker's, 0]
        #[arg(long, value_name = "N")]
        gpu: Option<u32>,
        /// Requests the worker serves at once [default: the worker's, 4]
        #[arg(long, value_name = "N")]
        slots: Option<u32>,
        /// Context of each slot in tokens [default: the worker's, 2048]
        #[arg(long, value_name = "TOKENS")]
        ctx_size: Option<u32>,
        /// Decode threads [default: the worker's choice, all physical cores adapted to load]
        #[arg(long, value_name = "N")]
        threads: Option<u32>,
        /// Also serve embeddings of the model (orcd's /v1/embeddings)
        #[arg(long)]
        embeddings: bool,
        /// Port to listen on (default: a free port)
        #[arg(long, value_name = "P")]
        port: Option<u16>,
        /// Address the worker listens on [default: 127.0.0.1; with --host or --advertise-host: 0.0.0.0]
        #[arg(long, value_name = "ADDR")]
        bind: Option<IpAddr>,
        /// Host name or address orcd reaches the worker at; the URL becomes http://ADDRESS:PORT
        /// [default with --host: the address the host profile connects to]
        #[arg(long, value_name = "ADDRESS", conflicts_with = "advertise_url")]
        advertise_host: Option<String>,
        /// Full URL orcd reaches the worker at (a proxy, another port)
        #[arg(long, value_name = "URL")]
        advertise_url: Option<String>,
        /// Name that tells this worker apart from others of the same model on the host; part of
        /// its id
        #[arg(long, value_name = "NAME", conflicts_with = "id")]
        name: Option<String>,
        /// Worker id, replacing the HOST-MODEL-NAME default
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Orchestrator the worker registers with (default: the orchestrator url configured on
        /// this machine)
        #[arg(long, value_name = "URL")]
        orchestrator_url: Option<String>,
        /// orcd's worker token file, for an orcd with tokens; with --host its first token is
        /// put on the host (~/.config/llorch/worker.token, mode 0600), replacing a different one
        #[arg(long, env = "LLORCH_WORKER_TOKEN_FILE", value_name = "FILE")]
        worker_token_file: Option<PathBuf>,
        /// Directory holding the llorch-worker binary (default: <repo>/target/release); with
        /// --host only the flag is passed on, not this machine's LLORCH_BIN_DIR
        #[arg(long, env = "LLORCH_BIN_DIR", value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Seconds to wait for the worker to load its model and report ready
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
        /// Further arguments for llorch-worker itself (after `--`)
        #[arg(last = true, value_name = "WORKER_ARGS")]
        worker_args: Vec<String>,
    },
    /// Stop a worker and start it again with the flags it was spawned with (also after a reboot)
    #[command(after_help = "\
Examples:
  cargo xtask pool worker restart gpu-box-gemma3-270m --host gpu-box
  cargo xtask pool worker restart mybox-gemma3-270m

The spawn flags are kept in ~/.local/state/llorch/workers/<id>.json; the restarted worker keeps
its id, so orcd replaces its old record.")]
    Restart {
        /// Worker id, as `pool worker list` shows it
        id: String,
        /// Seconds to wait for the worker to load its model and report ready
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
    },
    /// Remove a dead worker from orcd's list (orcd refuses a live one; stop it first)
    #[command(after_help = "\
Example:
  cargo xtask pool worker forget gpu-box-gemma3-270m

Talks to the configured orchestrator with the client API token, from this machine (also
with --host). orcd logs the removal.")]
    Forget {
        /// Worker id, as orcd's `GET /workers` shows it
        id: String,
    },
    /// List the workers started on this machine (or --host), and those of its pool manager when
    /// one runs, and whether they are ready
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
