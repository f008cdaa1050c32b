//! `cargo xtask up` and `down`: the product's main job in one command. `up` installs what is
//! missing, builds the release binaries, fetches the model, starts orcd and one worker detached,
//! streams a first answer, and leaves the stack running; `down` stops what `up` started.

use std::time::Duration;

use anyhow::{bail, Context as _};
use llorch_api::{
    pool::WorkerLaunch, Backend, ChatMessage, SamplingParams, TaskRequest, WorkerInfo, WorkerState,
};

use crate::{
    daemon::{self, DaemonInfo, DaemonSpec, RunDir},
    flags::{DownArgs, UpArgs},
    jobs,
    pool::{launch::SpawnSpec, worker as pool_worker},
    Context,
};

/// The name orcd has in the run directory.
pub const ORCD_DAEMON: &str = "orcd";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub fn up(args: UpArgs, cx: &Context) -> anyhow::Result<()> {
    crate::dev::run_setup(cx, args.yes, crate::dev::SetupScope::Run)?;
    let model = match &args.model {
        Some(model) => model.clone(),
        None => crate::models::default_model_id(cx)?,
    };
    crate::models::ensure_downloaded(cx, &model)?;
    let backend = args.backend.unwrap_or(cx.settings.default_backend);
    let binaries = match &args.bin_dir {
        Some(dir) => prebuilt_binaries(dir)?,
        None => crate::build::build_binaries(cx, backend, true)?,
    };

    let run_dir = RunDir::from_env()?;
    let orcd_url = cx
        .settings
        .orchestrator_url
        .trim_end_matches('/')
        .to_owned();
    let orcd = ensure_orcd(cx, &run_dir, &binaries.orcd, &orcd_url)?;
    let client = crate::orcd::client(cx, &orcd_url)?;
    let worker = ensure_worker(
        cx,
        &run_dir,
        &client,
        &model,
        backend,
        &binaries.worker,
        args.slots,
    )?;

    let request = first_request(&args, model.clone());
    cx.out.status(
        cx.out
            .paint()
            .bold(&format!("streaming a first answer from {model}:")),
    );
    if let Some(prompt) = &request.prompt {
        cx.out
            .status(cx.out.paint().dim(&format!("prompt: {prompt}")));
    }
    jobs::submit_and_print(cx, &client, &request)?;
    print_next_steps(cx, &orcd_url, orcd.as_ref(), &worker, &model);
    Ok(())
}

/// orcd and llorch-worker from `--bin-dir`, both required to exist.
fn prebuilt_binaries(dir: &std::path::Path) -> anyhow::Result<crate::build::BuiltBinaries> {
    let binaries = crate::build::BuiltBinaries {
        orcd: dir.join(crate::build::ORCD_BINARY),
        worker: dir.join(crate::build::WORKER_BINARY),
    };
    for program in [&binaries.orcd, &binaries.worker] {
        if !program.is_file() {
            bail!(
                "starting the stack: {} does not exist\nhint: build it with `cargo xtask build all`, or leave out --bin-dir so that `up` builds it",
                program.display()
            );
        }
    }
    Ok(binaries)
}

fn first_request(args: &UpArgs, model: String) -> TaskRequest {
    let (prompt, messages) = match &args.chat {
        Some(chat) => (None, Some(vec![ChatMessage::new("user", chat.clone())])),
        None => (Some(args.prompt.clone()), None),
    };
    TaskRequest {
        model,
        prompt,
        messages,
        parse_special: false,
        sampling: SamplingParams {
            max_tokens: args.max_tokens,
            ..SamplingParams::default()
        },
        tools: Default::default(),
        stream: true,
        unknown: Default::default(),
    }
}

/// Uses the orcd already answering at `url` (ours or the user's), else starts one detached.
fn ensure_orcd(
    cx: &Context,
    run_dir: &RunDir,
    program: &std::path::Path,
    url: &str,
) -> anyhow::Result<Option<DaemonInfo>> {
    if llorch_client::wait::is_healthy(url, Duration::from_secs(2)) {
        cx.out.status(format!("orcd already answers at {url}"));
        return Ok(run_dir.get(ORCD_DAEMON)?.filter(DaemonInfo::is_running));
    }
    let listen = url
        .strip_prefix("http://")
        .with_context(|| format!("starting orcd at {url}: only http:// URLs can be started locally\nhint: set orchestrator.url (or LLORCH_ORCHESTRATOR_URL) to http://127.0.0.1:8080"))?;
    let spinner = cx.out.spinner(format!("starting orcd on {listen}"));
    let started = start_orcd(cx, run_dir, ORCD_DAEMON, program, listen, &[]);
    spinner.finish_and_clear();
    let info = started.map_err(|error| {
        error.context(format!(
            "starting orcd on {listen}\nhint: is the port taken? pick another with LLORCH_ORCHESTRATOR_URL=http://127.0.0.1:PORT"
        ))
    })?;
    cx.out.status(format!(
        "orcd ready at {url} (pid {}, log {})",
        info.pid,
        info.log_path.display()
    ));
    Ok(Some(info))
}

/// Starts orcd detached as daemon `name`, listening on `listen` (`HOST:PORT`), and waits until
/// it answers `/health`; one that never does is stopped again (its log stays).
pub fn start_orcd(
    cx: &Context,
    run_dir: &RunDir,
    name: &str,
    program: &std::path::Path,
    listen: &str,
    extra_args: &[std::ffi::OsString],
) -> anyhow::Result<DaemonInfo> {
    let url = format!("http://{listen}");
    let spec = DaemonSpec {
        name: name.to_owned(),
        kind: ORCD_DAEMON.to_owned(),
        program: program.to_path_buf(),
        args: [vec!["--listen".into(), listen.into()], extra_args.to_vec()].concat(),
        env: vec![("RUST_LOG".into(), cx.settings.log_level.clone().into())],
        port: listen.rsplit(':').next().and_then(|port| port.parse().ok()),
        url: Some(url),
        model: None,
        backend: None,
    };
    let info = run_dir.spawn(&spec).context("starting orcd")?;
    if let Err(error) = daemon::wait_healthy(&info, Duration::from_secs(30)) {
        let _ = run_dir.stop(name, Duration::from_secs(5));
        return Err(error);
    }
    Ok(info)
}

fn live_worker_for(
    client: &llorch_client::blocking::OrcdClient,
    model: &str,
) -> anyhow::Result<Option<WorkerInfo>> {
    let workers: Vec<WorkerInfo> = client.get_json("/workers")?;
    Ok(workers
        .into_iter()
        .find(|worker| worker.model == model && worker.state == WorkerState::Live))
}

/// Uses a live worker that already serves `model`, else spawns one and waits until orcd has
/// it registered (its health can be ready a moment before the registration lands).
fn ensure_worker(
    cx: &Context,
    run_dir: &RunDir,
    client: &llorch_client::blocking::OrcdClient,
    model: &str,
    backend: Backend,
    program: &std::path::Path,
    slots: u32,
) -> anyhow::Result<WorkerInfo> {
    if let Some(worker) = live_worker_for(client, model)? {
        cx.out.status(format!(
            "worker {} already serves {model}",
            worker.worker_id
        ));
        return Ok(worker);
    }
    let launch = WorkerLaunch {
        backend,
        slots: Some(slots),
        ..WorkerLaunch::of_model(model)
    };
    let spec = SpawnSpec {
        orchestrator_url: Some(client.base_url().to_owned()),
        timeout: READY_TIMEOUT,
        ..SpawnSpec::new(launch).with_program(program)
    };
    let info = pool_worker::start_worker(cx, run_dir, &spec)?;
    let serves_model =
        |worker: &WorkerInfo| worker.model == model && worker.state == WorkerState::Live;
    let workers = client
        .wait_until_live(
            &format!("a live worker of {model}"),
            Duration::from_secs(30),
            |workers| workers.iter().any(serves_model),
        )
        .map_err(|not_live| {
            anyhow::anyhow!(
                "worker {} is running but orcd does not list it live: {not_live} ({})\n{}\nhint: check that the worker's --orchestrator-url reaches orcd",
                info.name,
                llorch_client::wait::live_ids(&not_live.last),
                daemon::log_tail_section(&info.log_path, daemon::LOG_TAIL_LINES)
            )
        })?;
    let worker = workers
        .into_iter()
        .find(serves_model)
        .expect("the wait ends only once such a worker is listed");
    cx.out.status(format!(
        "worker {} ready (pid {}, log {})",
        worker.worker_id,
        info.pid,
        info.log_path.display()
    ));
    Ok(worker)
}

fn print_next_steps(
    cx: &Context,
    orcd_url: &str,
    orcd: Option<&DaemonInfo>,
    worker: &WorkerInfo,
    model: &str,
) {
    if cx.out.json() {
        return;
    }
    let paint = cx.out.paint();
    let orcd_line = match orcd {
        Some(info) => format!(
            "orcd at {orcd_url} (pid {}, log {})",
            info.pid,
            info.log_path.display()
        ),
        None => format!("orcd at {orcd_url}"),
    };
    cx.out.status(format!(
        "\n{}\n  {orcd_line}\n  worker {} serving {model} at {}\n  web console at {orcd_url}/\n\n{}\n  cargo xtask jobs submit --model {model} --prompt 'Once upon a time'\n  curl -N {orcd_url}/v2/tasks -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"prompt\":\"Hello\",\"max_tokens\":32}}'\n  cargo xtask jobs list\n  cargo xtask pool worker list\n{}\n  cargo xtask down",
        paint.green("the stack is running:"),
        worker.worker_id,
        worker.url,
        paint.bold("try:"),
        paint.bold("stop it with:"),
    ));
}

/// Stops every worker in the run directory, then orcd (workers first, so they can deregister).
pub fn down(_args: DownArgs, cx: &Context) -> anyhow::Result<()> {
    let run_dir = RunDir::from_env()?;
    let daemons = run_dir.list()?;
    let (orcds, workers): (Vec<_>, Vec<_>) = daemons
        .into_iter()
        .partition(|info| info.kind == ORCD_DAEMON);
    let mut stopped = Vec::new();
    for info in workers.iter().chain(&orcds) {
        let outcome = run_dir
            .stop(&info.name, Duration::from_secs(10))
            .with_context(|| format!("stopping {}", info.name))?;
        stopped
            .push(serde_json::json!({ "name": info.name, "kind": info.kind, "outcome": outcome }));
        cx.out.status(format!(
            "stopped {} ({})",
            info.name,
            format!("{outcome:?}").to_lowercase()
        ));
    }
    if cx.out.json() {
        return cx
            .out
            .print_json(&serde_json::json!({ "stopped": stopped }));
    }
    if stopped.is_empty() {
        cx.out.println("nothing to stop: no orcd or worker started by `cargo xtask up` or `pool worker spawn` is running");
    }
    Ok(())
}
