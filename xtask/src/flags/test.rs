//! Flags of `cargo xtask test`: which suites to run, on which backend, with which filter.

use clap::{Args, Subcommand};
use llorch_api::Backend;

use super::build::backend_parser;

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask test all                     # what CI runs: setup, then every suite
  cargo xtask test unit
  cargo xtask test integration submodule   # only tests whose name contains `submodule`
  cargo xtask test smoke --backend cuda

Every suite runs in the release profile. The run ends with one line `N passed, N failed,
N skipped` and exits non-zero when anything failed. A test that cannot run on this machine (no
network namespaces, no systemd) is counted skipped, with its reason. A backend whose hardware is
missing fails the run.")]
pub enum TestCmd {
    /// Each crate's own tests (`--lib --bins`)
    #[command(after_help = "Examples:\n  cargo xtask test unit\n  cargo xtask test unit catalog")]
    Unit(TestArgs),
    /// Every package's tests/ targets (end-to-end and xtask tests) except the smoke test
    #[command(
        after_help = "Examples:\n  cargo xtask test integration\n  cargo xtask test integration submodule"
    )]
    Integration(TestArgs),
    /// The end-to-end run of orcd and a worker on the default model
    #[command(
        after_help = "Examples:\n  cargo xtask test smoke\n  cargo xtask test smoke --backend cuda"
    )]
    Smoke(TestArgs),
    /// Run `dev setup` (idempotent), then the unit, integration and smoke suites
    #[command(after_help = "Examples:\n  cargo xtask test all\n  cargo xtask -q test all")]
    All(TestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// Backend to build and test the worker with [default: `[build] default_backend`, else cpu]
    #[arg(long, value_parser = backend_parser())]
    pub backend: Option<Backend>,
    /// Run only tests whose name contains this text
    pub filter: Option<String>,
}
