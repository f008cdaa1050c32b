//! Flags of `cargo xtask build`: the worker for one backend, orcd, or both.

use clap::{builder::PossibleValuesParser, builder::TypedValueParser, Args, Subcommand};
use llorch_api::Backend;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask build worker cpu
  cargo xtask build worker cuda --release
  cargo xtask build orcd --debug
  cargo xtask build all

Release is the default; `[build] release = false` in the config file makes debug the default.")]
pub enum BuildCmd {
    /// Build the worker (llorch-worker) for one backend and print the binary's path
    #[command(
        after_help = "Examples:\n  cargo xtask build worker cpu\n  cargo xtask build worker cuda\n  cargo xtask build worker metal --debug\n\ncuda and metal builds use target/<backend>, so switching backends never rebuilds llama.cpp over\nthe cpu build."
    )]
    Worker {
        /// cpu, cuda or metal [default: `[build] default_backend` from the config, else cpu]
        #[arg(value_parser = backend_parser())]
        backend: Option<Backend>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Build the orchestrator daemon (orcd) and print the binary's path
    #[command(
        after_help = "Examples:\n  cargo xtask build orcd\n  cargo xtask build orcd --debug"
    )]
    Orcd {
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Build orcd and the worker in one cargo run and print both paths
    #[command(
        after_help = "Examples:\n  cargo xtask build all\n  cargo xtask build all --backend cuda"
    )]
    All {
        /// The worker's backend [default: `[build] default_backend` from the config, else cpu]
        #[arg(long, value_parser = backend_parser())]
        backend: Option<Backend>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
}

/// `--release` / `--debug`; neither means the config's `[build] release` (release by default).
#[derive(Debug, Clone, Copy, Args)]
pub struct ProfileArgs {
    /// Build with the release profile (the default)
    #[arg(long, conflicts_with = "debug")]
    pub release: bool,
    /// Build with the dev profile (compiles llama.cpp once more, for the debug profile)
    #[arg(long)]
    pub debug: bool,
}

impl ProfileArgs {
    /// Whether to build in release mode, given the configured default.
    pub fn release(self, configured: bool) -> bool {
        if self.release {
            true
        } else if self.debug {
            false
        } else {
            configured
        }
    }
}

/// Parses `cpu|cuda|metal` and lists the three in `--help` and in the error for a typo.
pub fn backend_parser() -> impl TypedValueParser<Value = Backend> {
    PossibleValuesParser::new(Backend::ALL.map(Backend::as_str)).map(|value| {
        value
            .parse::<Backend>()
            .expect("clap only passes the listed backend names")
    })
}
