//! `cargo xtask pool`: the machines that run workers. Without `--host` a command acts on this
//! machine; with it, the same command runs in the host's checkout over SSH.

pub mod launch;
pub mod registry;
pub mod spawn;
pub mod status;
pub mod worker;

use std::ffi::OsString;

use anyhow::bail;

use crate::{
    flags::{PoolCmd, PoolModelsCmd, PoolSubcommand, PoolWorkerCmd},
    remote,
};

pub fn run(cmd: PoolCmd, cx: &crate::Context) -> anyhow::Result<()> {
    if let PoolSubcommand::Models(models) = cmd.command {
        return run_models(models, cmd.host.as_deref(), cx);
    }
    match (&cmd.command, &cmd.host) {
        // Decided here, not on the host: the orchestrator, the advertised address, the id and
        // the token are the operator's.
        (PoolSubcommand::Worker(PoolWorkerCmd::Spawn { .. }), Some(host)) => {
            let PoolSubcommand::Worker(worker_cmd) = cmd.command else {
                unreachable!("matched above")
            };
            let spec = worker::spec_of_spawn(worker_cmd).expect("a spawn command");
            let spawned = spawn::spawn_worker(cx, Some(host), &spec)?;
            cx.out.status(format!(
                "orcd lists `{}` as live{}",
                spawned.worker_id,
                match spawned.orcd.url.is_empty() {
                    true => String::new(),
                    false => format!(" at {}", spawned.orcd.url),
                }
            ));
            return Ok(());
        }
        // orcd's records are reached from here, whichever host the worker ran on.
        (PoolSubcommand::Worker(PoolWorkerCmd::Forget { id }), _) => {
            return registry::forget(cx, id);
        }
        _ => {}
    }
    if let Some(host) = &cmd.host {
        // The remote side runs the very same command, minus `--host`, and acts locally there.
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        let args = remote::strip_option(&args, "--host");
        return remote::run_xtask_on(cx, host, &remote::to_strings(args)?);
    }
    match cmd.command {
        PoolSubcommand::Worker(worker) => run_worker(worker, cx),
        PoolSubcommand::Status => status::run(cx),
        PoolSubcommand::Models(_) => unreachable!("handled above"),
    }
}

/// `pool models ... --host HOST` is `cargo xtask models ...` on that host.
/// `pool worker ...` on this machine.
fn run_worker(cmd: PoolWorkerCmd, cx: &crate::Context) -> anyhow::Result<()> {
    let run_dir = crate::daemon::RunDir::from_env()?;
    match cmd {
        cmd @ PoolWorkerCmd::Spawn { .. } => {
            let spec = worker::spec_of_spawn(cmd).expect("a spawn command");
            let spawned = spawn::spawn_worker(cx, None, &spec)?;
            let info = worker::worker(&run_dir, &spawned.worker_id)?;
            worker::print_started(cx, &info)
        }
        PoolWorkerCmd::Restart { id, timeout } => {
            let info = worker::restart(cx, &run_dir, &id, std::time::Duration::from_secs(timeout))?;
            worker::print_started(cx, &info)
        }
        PoolWorkerCmd::Forget { id } => registry::forget(cx, &id),
        PoolWorkerCmd::List => {
            let token = spawn::host_token_path()
                .ok()
                .and_then(|path| std::fs::read_to_string(path).ok());
            let pooled = crate::fleet::pool_manager::local_workers(
                &run_dir,
                token.as_deref().map(str::trim),
            );
            worker::list(cx, &run_dir, pooled)
        }
        PoolWorkerCmd::Stop { id } => worker::stop(cx, &run_dir, &id),
        PoolWorkerCmd::Logs { id, lines, follow } => worker::logs(cx, &run_dir, &id, lines, follow),
    }
}

fn run_models(cmd: PoolModelsCmd, host: Option<&str>, cx: &crate::Context) -> anyhow::Result<()> {
    let Some(host) = host else {
        bail!("`pool models` acts on a pool host: pass --host HOST\nhint: for this machine's models use `cargo xtask models list` or `cargo xtask models download ID`");
    };
    let mut args = output_flags(cx);
    match cmd {
        PoolModelsCmd::Download {
            id,
            as_id,
            revision,
        } => {
            args.extend(["models".into(), "download".into(), id]);
            if let Some(as_id) = as_id {
                args.extend(["--id".into(), as_id]);
            }
            if let Some(revision) = revision {
                args.extend(["--revision".into(), revision]);
            }
        }
        PoolModelsCmd::List => args.extend(["models".into(), "list".into()]),
    }
    remote::run_xtask_on(cx, host, &args)
}

/// The output flags of this invocation, so the remote command prints the same way.
pub fn output_flags(cx: &crate::Context) -> Vec<String> {
    let mut flags = Vec::new();
    if cx.out.json() {
        flags.push("--json".to_owned());
    }
    if cx.out.quiet() {
        flags.push("--quiet".to_owned());
    }
    if cx.out.verbose() {
        flags.push("--verbose".to_owned());
    }
    flags
}
