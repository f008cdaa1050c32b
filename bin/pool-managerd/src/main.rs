//! Entry point of `llorch-pool-managerd`: flags, logging, the runtime, then [`lifecycle::run`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llorch_pool_managerd::{flags::PoolArgs, lifecycle};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = PoolArgs::parse();
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lifecycle::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout carries only the `listening on` line). `RUST_LOG` wins, then
/// `LLORCH_LOG_LEVEL`, then info.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| match std::env::var("LLORCH_LOG_LEVEL") {
            Ok(level) => EnvFilter::try_new(level),
            Err(_) => EnvFilter::try_new("info"),
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes would litter log files.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
