//! `llorch-worker` entry point: parse flags, set up logging, run the worker until it is told
//! to stop.

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use llorch_worker::{flags::WorkerArgs, lifecycle};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = WorkerArgs::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
/// `LLORCH_LOG_LEVEL`; llama.cpp's own chatter (target `llama-cpp-2`, about 150 lines per
/// model load at info) is kept to warnings unless asked for explicitly.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| match std::env::var("LLORCH_LOG_LEVEL") {
            Ok(level) => EnvFilter::try_new(format!("{level},llama-cpp-2=warn")),
            Err(_) => EnvFilter::try_new("info,llama-cpp-2=warn"),
        })
        .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes would litter log files (`pool worker logs` reads them).
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
