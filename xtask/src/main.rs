//! `cargo xtask`: the llama-orch dev-ops toolkit. Parse flags, resolve settings, hand the
//! command to its domain module; nothing else lives here.

mod audit;
mod bench;
mod build;
mod config;
mod context;
mod coverage;
mod daemon;
mod dev;
mod files;
mod flags;
mod fleet;
mod git;
mod host_name;
mod jobs;
mod lint;
mod metrics;
mod models;
mod orcd;
mod output;
mod pool;
mod ports;
mod process;
mod remote;
mod stack;
mod test;
mod top;

use std::process::ExitCode;

use clap::Parser;

use crate::{flags::Command, output::Printer};

// Every domain takes `crate::Context`; it lives in a module of its own, below all of them.
pub use context::Context;

fn main() -> ExitCode {
    let cli = flags::Cli::parse();
    let out = Printer::new(&cli.global, config::env_color_disabled());
    match run(cli, out.clone()) {
        Ok(code) => code,
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => match error.downcast_ref::<output::ExitCode>() {
            // The command already reported; it only chose the exit status.
            Some(output::ExitCode(code)) => ExitCode::from(*code),
            None => {
                out.error(&error);
                ExitCode::FAILURE
            }
        },
    }
}

fn run(cli: flags::Cli, out: Printer) -> anyhow::Result<ExitCode> {
    let settings = config::Settings::resolve(&cli.global, &config::process_env)?;
    let out = out.with_color_choice(settings.color);
    let cx = Context { settings, out };
    if let Some(host) = &cli.global.remote {
        remote::forward_invocation(&cx, host)?;
        return Ok(ExitCode::SUCCESS);
    }
    match cli.command {
        Command::Audit(cmd) => audit::run(cmd, &cx)?,
        Command::Build(cmd) => build::run(cmd, &cx)?,
        Command::Config(cmd) => config::run(cmd, &cx)?,
        Command::Dev(cmd) => dev::run(cmd, &cx)?,
        Command::Fleet(cmd) => fleet::run(cmd, &cx)?,
        Command::Git(cmd) => git::run(cmd, &cx)?,
        Command::Jobs(args) => jobs::run(args, &cx)?,
        Command::Lint(args) => lint::run(args, &cx)?,
        Command::Coverage(args) => coverage::run(args, &cx)?,
        Command::Models(cmd) => models::run(cmd, &cx)?,
        Command::Pool(cmd) => pool::run(cmd, &cx)?,
        Command::Remote(cmd) => remote::run(cmd, &cx)?,
        Command::Test(cmd) => test::run(cmd, &cx)?,
        Command::Top(args) => top::run(args, &cx)?,
        Command::Up(args) => stack::up(args, &cx)?,
        Command::Down(args) => stack::down(args, &cx)?,
        Command::Bench(args) => bench::run(args, &cx)?,
    }
    Ok(ExitCode::SUCCESS)
}
