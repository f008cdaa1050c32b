//! orcd's entry point: parse flags, set up logging, run the server; everything else is in the
//! library so tests can start it in-process.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = orcd::Args::parse();
    // `--log-level`/LLORCH_LOG_LEVEL, else RUST_LOG, else `info`; logs go to stderr because
    // stdout carries the listening address.
    let filter = match &args.log_level {
        Some(level) => EnvFilter::try_new(level),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("error: invalid log filter: {error}\nhint: try `--log-level info` or `--log-level orcd=debug`");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(orcd::run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
