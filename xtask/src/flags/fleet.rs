//! Flags of `cargo xtask fleet`: the whole fleet of orcd and workers, described in one file.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `fleet` and the file it reads.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask fleet plan                      # what `up` would change, changing nothing
  cargo xtask fleet up                        # every host in parallel; idempotent
  cargo xtask fleet up gpu-box --force        # one host, even over a dirty checkout there
  cargo xtask --json fleet status
  cargo xtask fleet down

The fleet file is --fleet FILE, else LLORCH_FLEET, else `file` under [fleet] in the config
file, else fleet.toml beside the config file. deploy/fleet.example.toml shows every key.")]
pub struct FleetCmd {
    /// The fleet file [env: LLORCH_FLEET]
    #[arg(long, global = true, value_name = "FILE")]
    pub fleet: Option<PathBuf>,
    #[command(subcommand)]
    pub command: FleetSubcommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetSubcommand {
    /// Per host, for its pool manager and each worker: start, restart (and what differs), stop
    /// or nothing; changes nothing
    #[command(after_help = "\
Examples:
  cargo xtask fleet plan
  cargo xtask --json fleet plan gpu-box")]
    Plan {
        /// Hosts to plan for (default: every host of the fleet file)
        hosts: Vec<String>,
    },
    /// Bring hosts to the fleet file: checkout, setup, build, models, token, the pool manager and
    /// workers as systemd user units (or detached where there is no systemd), then wait until
    /// orcd lists each worker and pool manager live
    #[command(after_help = "\
Examples:
  cargo xtask fleet up
  cargo xtask fleet up gpu-box mac-mini
  cargo xtask fleet up --force --timeout 600

Hosts are brought up in parallel and each step runs only when needed, so a second `up`
changes nothing. A host that fails is named in the summary with its reason while the
others come up; the exit status is then 1.")]
    Up {
        /// Hosts to bring up (default: every host of the fleet file)
        hosts: Vec<String>,
        /// Check out this commit over a host's uncommitted changes
        #[arg(long)]
        force: bool,
        /// Seconds to wait for a worker to be ready and live in orcd
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
    },
    /// Desired against actual: host reachable, worker running, registered, slots busy, tok/s,
    /// model verified, and each host's resources (CPU, RAM, VRAM, disk, models, workers) from
    /// orcd's /v2/hosts; exit status 1 when they differ
    #[command(after_help = "\
Examples:
  cargo xtask fleet status
  cargo xtask --json fleet status gpu-box")]
    Status {
        /// Hosts to report on (default: every host of the fleet file)
        hosts: Vec<String>,
    },
    /// Drain and stop the fleet's workers and pool managers and remove their units
    #[command(after_help = "\
Examples:
  cargo xtask fleet down
  cargo xtask fleet down gpu-box")]
    Down {
        /// Hosts to take down (default: every host of the fleet file)
        hosts: Vec<String>,
    },
    /// What `fleet up`, `plan`, `status` and `down` run on each host (over SSH); reads a JSON
    /// request on stdin and acts on this machine only
    #[command(subcommand)]
    Host(FleetHostCmd),
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask --json fleet host state
  echo '{\"workers\":[]}' | cargo xtask --json fleet host apply")]
pub enum FleetHostCmd {
    /// Print the fleet's workers on this machine: how each was started and whether it runs
    #[command(after_help = "\
Examples:
  cargo xtask --json fleet host state
  cargo xtask --json fleet host state --verify-models")]
    State {
        /// Also re-hash the models of the fleet's workers against their SHA-256
        #[arg(long)]
        verify_models: bool,
    },
    /// Bring this machine to the workers of the JSON request on stdin (setup, build, models,
    /// token, then start, restart or stop workers)
    #[command(after_help = "\
Example:
  echo '{\"workers\":[],\"prepare\":false}' | cargo xtask --json fleet host apply")]
    Apply {
        /// Seconds to wait for each started worker to be ready
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
    },
}
