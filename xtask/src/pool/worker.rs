//! `pool worker spawn|restart|list|stop|logs`: llorch-worker processes on this machine, run
//! detached through [`crate::daemon`] so they outlive the command (and the SSH session) that
//! started them. A worker counts as started once it has registered with orcd; how it was
//! started is kept, so `restart` brings it back with the same id, also after a reboot.

use std::{
    ffi::OsString,
    io::{Read, Seek, SeekFrom, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use llorch_api::{pool::WorkerLaunch, RegistrationState, WorkerHealth};
use llorch_client::wait::{wait_for_health, HealthAnswer, Verdict};
use serde::{Deserialize, Serialize};

use crate::{
    daemon::{self, DaemonInfo, DaemonSpec, RunDir},
    flags::PoolWorkerCmd,
    pool::launch::{LocalStart, Machine, SpawnSpec},
    pool::registry,
};

/// The `kind` of worker daemons in the run directory.
pub const WORKER_KIND: &str = "worker";
/// How long `stop` waits after SIGTERM before SIGKILL: enough to finish a token and deregister.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a loaded worker may take to register before spawn gives up: a few of its retries.
const REGISTRATION_WAIT: Duration = Duration::from_secs(20);
/// How long a listed worker may take to answer its `/health` before it counts as unresponsive.
const HEALTH_PROBE: Duration = Duration::from_millis(800);
/// Overrides where spawn records are kept (tests use a temporary directory).
pub const STATE_DIR_ENV: &str = "LLORCH_STATE_DIR";

/// The spec of a `spawn` command line; `None` for the other commands.
pub fn spec_of_spawn(cmd: PoolWorkerCmd) -> Option<SpawnSpec> {
    let PoolWorkerCmd::Spawn {
        backend,
        model,
        gpu,
        slots,
        ctx_size,
        threads,
        embeddings,
        port,
        bind,
        advertise_host,
        advertise_url,
        name,
        id,
        orchestrator_url,
        worker_token_file,
        bin_dir,
        timeout,
        worker_args,
    } = cmd
    else {
        return None;
    };
    let launch = WorkerLaunch {
        model,
        backend,
        gpu,
        slots,
        ctx_size,
        threads,
        embeddings,
    };
    Some(SpawnSpec {
        port,
        bind,
        advertise_host,
        advertise_url,
        name,
        id,
        orchestrator_url,
        worker_token_file,
        bin_dir,
        timeout: Duration::from_secs(timeout),
        worker_args,
        ..SpawnSpec::new(launch)
    })
}

/// Starts the worker of `spec` on this machine and waits until it has registered with orcd.
pub fn spawn_here(cx: &crate::Context, spec: &SpawnSpec) -> anyhow::Result<DaemonInfo> {
    let run_dir = RunDir::from_env()?;
    start_worker(cx, &run_dir, spec)
}

/// `spec` resolved on this machine: its port, address, id and binary chosen.
pub fn resolve(cx: &crate::Context, spec: &SpawnSpec) -> anyhow::Result<LocalStart> {
    let program = locate_worker(spec.bin_dir.clone(), &cx.settings, spec.launch.backend)?;
    let host_label = crate::host_name::hostname_label();
    let machine = Machine {
        host_label: &host_label,
        orchestrator_url: &cx.settings.orchestrator_url,
        free_port: &crate::ports::free_port,
    };
    LocalStart::resolve(spec, program, &machine)
}

/// The program, arguments and environment of `start`, for the run directory or for another
/// supervisor (`fleet` writes them into a systemd unit).
pub fn daemon_spec(cx: &crate::Context, start: &LocalStart) -> anyhow::Result<DaemonSpec> {
    let url = format!(
        "http://{}",
        SocketAddr::new(reachable_address(start.bind), start.port)
    );
    let model_args = crate::models::worker_model_args(cx, &start.launch.model)?;
    // A catalog chosen in the config file or LLORCH_CATALOG would not reach the worker
    // otherwise: daemons get no LLORCH_* variable from the caller.
    let catalog = (cx.settings.origins.get("catalog_path")
        != Some(&crate::config::Origin::Default))
    .then_some(cx.settings.catalog_path.as_path());
    Ok(DaemonSpec {
        name: start.id.clone(),
        kind: WORKER_KIND.to_owned(),
        program: start.program.clone(),
        args: start.args(model_args, &cx.settings.model_base_dir, catalog),
        env: vec![("RUST_LOG".into(), cx.settings.log_level.clone().into())],
        port: Some(start.port),
        url: Some(url),
        model: Some(start.launch.model.clone()),
        backend: Some(start.launch.backend.to_string()),
    })
}

/// Starts the worker of `spec` detached, waits until its `/health` says ready and then until
/// it has registered with orcd. A worker that never gets there is stopped again (its log
/// stays) and the error carries its own reason: the log's tail, or the registration failure
/// it reports.
pub fn start_worker(
    cx: &crate::Context,
    run_dir: &RunDir,
    spec: &SpawnSpec,
) -> anyhow::Result<DaemonInfo> {
    let start = resolve(cx, spec)?;
    let daemon = daemon_spec(cx, &start)?;
    let info = start_spec(cx, run_dir, &daemon, spec.timeout)?;
    if let Err(error) = SavedSpawn::new(&daemon, start.launch).save() {
        cx.out.warn(format!(
            "`pool worker restart` will not know this worker: {error:#}"
        ));
    }
    Ok(info)
}

/// Spawns `spec`, waits for health and registration, and stops it again on failure.
fn start_spec(
    cx: &crate::Context,
    run_dir: &RunDir,
    spec: &DaemonSpec,
    timeout: Duration,
) -> anyhow::Result<DaemonInfo> {
    let spinner = cx.out.spinner(format!(
        "starting {} ({} on {})",
        spec.name,
        spec.model.as_deref().unwrap_or("?"),
        spec.backend.as_deref().unwrap_or("?")
    ));
    let info = run_dir
        .spawn(spec)
        .with_context(|| format!("starting worker `{}`", spec.name))?;
    let ready = daemon::wait_healthy(&info, timeout).and_then(|_| {
        spinner.set_message(format!(
            "{} is loaded; waiting for orcd to accept it",
            spec.name
        ));
        wait_registered(&info)
    });
    spinner.finish_and_clear();
    if let Err(error) = ready {
        if let Err(stop_error) = run_dir.stop(&info.name, STOP_GRACE) {
            cx.out.warn(format!("{stop_error:#}"));
        }
        return Err(error);
    }
    Ok(info)
}

/// Polls the worker's `/health` until it reports `registered`. A refusal fails at once; an
/// orcd that stays unreachable fails after [`REGISTRATION_WAIT`]; both with the worker's own
/// message, which names the fix.
fn wait_registered(info: &DaemonInfo) -> anyhow::Result<()> {
    let Some(url) = &info.url else {
        bail!("waiting for `{}`: it has no URL to check", info.name);
    };
    let mut last: Option<llorch_api::RegistrationStatus> = None;
    let mut refused = false;
    let judge = |answer: &HealthAnswer| {
        let Some(status) = answer
            .json::<WorkerHealth>()
            .and_then(|health| health.registration)
        else {
            return Verdict::NotYet("no registration reported".to_owned());
        };
        match status.state {
            RegistrationState::Registered => Verdict::Ready(()),
            RegistrationState::Refused => {
                refused = true;
                Verdict::Failed(registration_error(info, &status))
            }
            RegistrationState::Pending => {
                last = Some(status);
                Verdict::NotYet("registering".to_owned())
            }
        }
    };
    let still_running = || {
        if info.is_running() {
            return Ok(());
        }
        bail!(
            "`{}` exited before it registered with orcd\n{}\nhint: fix the cause shown in the log, then start it again",
            info.name,
            daemon::log_tail_section(&info.log_path, daemon::LOG_TAIL_LINES)
        )
    };
    let outcome = wait_for_health(url, REGISTRATION_WAIT, judge, still_running);
    if outcome.is_err() && !refused && info.is_running() {
        // The deadline passed: the worker's own last report names the fix.
        return Err(match &last {
            Some(status) => registration_error(info, status),
            None => anyhow::anyhow!(
                "`{}` is ready but does not report registering with orcd (an llorch-worker older than this xtask?); it was stopped\nhint: rebuild it with `cargo xtask build worker`",
                info.name
            ),
        });
    }
    outcome
}

/// The worker's registration failure as the spawn's error; its hint stays the last line.
fn registration_error(info: &DaemonInfo, status: &llorch_api::RegistrationStatus) -> anyhow::Error {
    let reported = status
        .last_error
        .clone()
        .unwrap_or_else(|| "no answer yet".to_owned());
    let (cause, hint) = match reported.split_once("\nhint: ") {
        Some((cause, hint)) => (cause.to_owned(), Some(hint.to_owned())),
        None => (reported, None),
    };
    let mut message = format!(
        "worker `{}` did not register with orcd at {} (advertising {}; {} failed attempts): {cause}\nthe worker was stopped; its log: {}",
        info.name,
        status.orchestrator_url,
        status.advertised_url,
        status.failures,
        info.log_path.display()
    );
    if let Some(hint) = hint {
        message.push_str("\nhint: ");
        message.push_str(&hint);
    }
    anyhow::anyhow!(message)
}

/// How a worker was started, kept outside the run directory (which a reboot empties) so that
/// `pool worker restart ID` can start it again exactly so: the very arguments it ran with, and
/// the launch they came from. The launch is flattened, so a record of an older xtask (whose
/// `model` and `backend` stood alone) reads the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSpawn {
    pub name: String,
    #[serde(flatten)]
    pub launch: WorkerLaunch,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub port: Option<u16>,
    pub url: Option<String>,
}

impl SavedSpawn {
    fn new(spec: &DaemonSpec, launch: WorkerLaunch) -> SavedSpawn {
        let text = |value: &OsString| value.to_string_lossy().into_owned();
        SavedSpawn {
            name: spec.name.clone(),
            launch,
            program: spec.program.clone(),
            args: spec.args.iter().map(text).collect(),
            env: spec
                .env
                .iter()
                .map(|(key, value)| (text(key), text(value)))
                .collect(),
            port: spec.port,
            url: spec.url.clone(),
        }
    }

    fn to_spec(&self) -> DaemonSpec {
        DaemonSpec {
            name: self.name.clone(),
            kind: WORKER_KIND.to_owned(),
            program: self.program.clone(),
            args: self.args.iter().map(OsString::from).collect(),
            env: self
                .env
                .iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
            port: self.port,
            url: self.url.clone(),
            model: Some(self.launch.model.clone()),
            backend: Some(self.launch.backend.to_string()),
        }
    }

    /// `LLORCH_STATE_DIR`, else `~/.local/state/llorch`, then `workers/`.
    pub fn dir() -> anyhow::Result<PathBuf> {
        if let Some(dir) = crate::config::process_env(STATE_DIR_ENV) {
            return Ok(PathBuf::from(dir).join("workers"));
        }
        use etcetera::BaseStrategy;
        let strategy = etcetera::choose_base_strategy().context(
            "finding the state directory: no home directory\nhint: set LLORCH_STATE_DIR to a writable directory",
        )?;
        Ok(strategy
            .state_dir()
            .unwrap_or_else(|| strategy.data_dir())
            .join("llorch")
            .join("workers"))
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = Self::dir()?.join(format!("{}.json", self.name));
        let json = serde_json::to_string_pretty(self).expect("a saved spawn always serializes");
        crate::files::write_atomically(&path, &format!("{json}\n"))
    }

    pub fn load(id: &str) -> anyhow::Result<Option<SavedSpawn>> {
        daemon::validate_name(id)?;
        let path = Self::dir()?.join(format!("{id}.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).map(Some).with_context(|| {
            format!(
                "reading {}\nhint: delete it and spawn the worker again",
                path.display()
            )
        })
    }

    /// The orchestrator URL the worker was given.
    fn orchestrator_url(&self) -> Option<&str> {
        self.args
            .iter()
            .position(|arg| arg == "--orchestrator-url")
            .and_then(|index| self.args.get(index + 1))
            .map(String::as_str)
    }
}

/// `pool worker restart ID`: stops the worker if it runs and starts it again as it was
/// spawned; same id, so orcd replaces the old record.
pub fn restart(
    cx: &crate::Context,
    run_dir: &RunDir,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<DaemonInfo> {
    let Some(saved) = SavedSpawn::load(id)? else {
        bail!(
            "there is no saved spawn of worker `{id}` in {}\nhint: start it with `cargo xtask pool worker spawn`; `pool worker list` shows the workers",
            SavedSpawn::dir()?.display()
        );
    };
    if run_dir.get(id)?.is_some() {
        run_dir.stop(id, STOP_GRACE)?;
    }
    let info = start_spec(cx, run_dir, &saved.to_spec(), timeout)?;
    if let Some(orchestrator_url) = saved.orchestrator_url() {
        if registry::confirm_live(cx, orchestrator_url, id)?.is_none() {
            let _ = run_dir.stop(id, STOP_GRACE);
            bail!(
                "orcd at {orchestrator_url} does not list `{id}` as live although the worker registered; it was stopped\nhint: is another orcd answering at that URL? check `GET /workers` there"
            );
        }
    }
    Ok(info)
}

pub fn print_started(cx: &crate::Context, info: &DaemonInfo) -> anyhow::Result<()> {
    let health = info
        .url
        .as_deref()
        .and_then(|url| reqwest::blocking::get(format!("{url}/health")).ok())
        .and_then(|response| response.json::<llorch_api::WorkerHealth>().ok());
    let advertised = health
        .as_ref()
        .and_then(|health| health.registration.as_ref())
        .map(|registration| registration.advertised_url.clone());
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "worker_id": info.name,
            "port": info.port,
            "pid": info.pid,
            "url": info.url,
            "advertised_url": advertised,
            "model": info.model,
            "backend": info.backend,
            "log_path": info.log_path,
            "health": health,
        }));
    }
    // The URL orcd reaches it at (what the operator of a pool host needs), not the loopback
    // address this machine checks its health on.
    cx.out.println(format!(
        "{}  port {}  pid {}  {}",
        cx.out.paint().bold(&info.name),
        info.port.map(|port| port.to_string()).unwrap_or_default(),
        info.pid,
        advertised.as_deref().or(info.url.as_deref()).unwrap_or("")
    ));
    cx.out.status(format!(
        "ready and registered with orcd; log: {}",
        info.log_path.display()
    ));
    Ok(())
}

/// A worker as `list` and `pool status` report it.
#[derive(Debug, Serialize)]
pub struct WorkerRow {
    #[serde(flatten)]
    pub info: DaemonInfo,
    pub running: bool,
    /// `ready`, `loading` or `draining` from its /health; `unresponsive` or `exited` otherwise.
    pub state: String,
    pub health: Option<llorch_api::WorkerHealth>,
    /// The URL of the pool manager that supervises it, for a worker it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_manager: Option<String>,
}

/// A worker of this host's pool manager as a row of `list`: its facts from the pool manager,
/// its log where the fleet's pool manager writes them.
fn pool_worker_row(
    run_dir: &RunDir,
    pool_url: &str,
    worker: &llorch_api::pool::PoolWorker,
) -> WorkerRow {
    use llorch_api::pool::PoolWorkerState;
    let state = match worker.state {
        PoolWorkerState::Starting => "loading",
        PoolWorkerState::Running => "ready",
        PoolWorkerState::Restarting => "restarting",
        PoolWorkerState::Failed => "failed",
        PoolWorkerState::Stopping => "draining",
    };
    let url = worker.port.and_then(|port| {
        let mut url = reqwest::Url::parse(pool_url).ok()?;
        url.set_port(Some(port)).ok()?;
        Some(url.as_str().trim_end_matches('/').to_owned())
    });
    WorkerRow {
        info: DaemonInfo {
            name: worker.worker_id.clone(),
            kind: WORKER_KIND.to_owned(),
            pid: worker.pid.unwrap_or(0),
            port: worker.port,
            url,
            model: Some(worker.launch.model.clone()),
            backend: Some(worker.launch.backend.to_string()),
            // The pool manager does not report start times: no uptime is shown.
            started_at: 0,
            program: PathBuf::new(),
            args: Vec::new(),
            log_path: run_dir
                .path()
                .join("pool-logs")
                .join(format!("{}.log", worker.worker_id)),
            process_start: None,
        },
        running: worker.pid.is_some() && worker.state != PoolWorkerState::Failed,
        state: state.to_owned(),
        health: None,
        pool_manager: Some(pool_url.to_owned()),
    }
}

/// The workers recorded in the run directory, each asked for its health.
pub fn worker_rows(run_dir: &RunDir) -> anyhow::Result<Vec<WorkerRow>> {
    let rows = run_dir
        .list()?
        .into_iter()
        .filter(|info| info.kind == WORKER_KIND)
        .map(|info| {
            let running = info.is_running();
            let health = match (&info.url, running) {
                (Some(url), true) => llorch_client::http::blocking_client_for(url, HEALTH_PROBE)
                    .get(format!("{}/health", url.trim_end_matches('/')))
                    .send()
                    .and_then(|response| response.json::<llorch_api::WorkerHealth>())
                    .ok(),
                _ => None,
            };
            let state = match (&health, running) {
                (_, false) => "exited".to_owned(),
                (Some(health), true) => serde_json::to_value(health.status)
                    .ok()
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unknown".to_owned()),
                (None, true) => "unresponsive".to_owned(),
            };
            WorkerRow {
                info,
                running,
                state,
                health,
                pool_manager: None,
            }
        })
        .collect();
    Ok(rows)
}

/// A running pool manager's URL and workers, or why they could not be read.
pub type PoolWorkers = anyhow::Result<(String, Vec<llorch_api::pool::PoolWorker>)>;

/// The run directory's workers, then `pooled`: those of this host's pool manager when one runs.
pub fn list(
    cx: &crate::Context,
    run_dir: &RunDir,
    pooled: Option<PoolWorkers>,
) -> anyhow::Result<()> {
    let mut rows = worker_rows(run_dir)?;
    match pooled {
        Some(Ok((url, workers))) => rows.extend(
            workers
                .iter()
                .map(|worker| pool_worker_row(run_dir, &url, worker)),
        ),
        Some(Err(error)) => cx.out.status(format!("warning: {error:#}")),
        None => {}
    }
    if cx.out.json() {
        return cx.out.print_json(&rows);
    }
    if rows.is_empty() {
        cx.out.status(format!(
            "no workers in {}\nhint: start one with `cargo xtask pool worker spawn cpu --model ID`",
            run_dir.path().display()
        ));
        return Ok(());
    }
    print_worker_table(cx, &rows);
    Ok(())
}

pub fn print_worker_table(cx: &crate::Context, rows: &[WorkerRow]) {
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{:<28} {:<13} {:>8} {:>6} {:<20} {:<7} {}",
        "ID", "STATE", "PID", "PORT", "MODEL", "BACKEND", "UPTIME"
    )));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    for row in rows {
        // Padded before painting: colour codes would throw the column width off.
        let padded = format!("{:<13}", row.state);
        let state = match row.state.as_str() {
            "ready" => paint.green(&padded),
            "exited" | "unresponsive" => paint.red(&padded),
            _ => paint.yellow(&padded),
        };
        let uptime = if row.running && row.info.started_at > 0 {
            crate::output::human_duration(now.saturating_sub(row.info.started_at))
        } else {
            "-".to_owned()
        };
        cx.out.println(format!(
            "{:<28} {state} {:>8} {:>6} {:<20} {:<7} {}",
            row.info.name,
            row.info.pid,
            row.info
                .port
                .map(|port| port.to_string())
                .unwrap_or_default(),
            row.info.model.as_deref().unwrap_or("-"),
            row.info.backend.as_deref().unwrap_or("-"),
            uptime
        ));
    }
}

pub fn stop(cx: &crate::Context, run_dir: &RunDir, id: &str) -> anyhow::Result<()> {
    let info = worker(run_dir, id)?;
    let outcome = run_dir.stop(id, STOP_GRACE)?;
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "worker_id": id,
            "pid": info.pid,
            "outcome": outcome,
        }));
    }
    let how = match outcome {
        daemon::StopOutcome::Terminated => "stopped",
        daemon::StopOutcome::Killed => "killed (it ignored SIGTERM for 10 s)",
        daemon::StopOutcome::AlreadyExited => "had already exited; removed its pid file",
    };
    cx.out.println(format!("{id} (pid {}) {how}", info.pid));
    Ok(())
}

pub fn worker(run_dir: &RunDir, id: &str) -> anyhow::Result<DaemonInfo> {
    match run_dir.get(id)? {
        Some(info) if info.kind == WORKER_KIND => Ok(info),
        Some(info) => bail!(
            "`{id}` is not a worker but a {} daemon\nhint: `cargo xtask pool worker list` shows the workers",
            info.kind
        ),
        None => bail!(
            "there is no worker `{id}` in {}\nhint: `cargo xtask pool worker list` shows the workers",
            run_dir.path().display()
        ),
    }
}

pub fn logs(
    cx: &crate::Context,
    run_dir: &RunDir,
    id: &str,
    lines: Option<usize>,
    follow: bool,
) -> anyhow::Result<()> {
    daemon::validate_name(id)?;
    // The log outlives the worker's state files, so a stopped or crashed worker's log is
    // still readable.
    let log_path = run_dir.log_path(id);
    if !log_path.exists() {
        bail!(
            "there is no log for worker `{id}` in {}\nhint: `cargo xtask pool worker list` shows the workers",
            run_dir.path().display()
        );
    }
    if cx.out.json() {
        if follow {
            bail!("--follow streams text and cannot be combined with --json");
        }
        let tail = daemon::tail_lines(&log_path, lines.unwrap_or(usize::MAX))
            .with_context(|| format!("reading {}", log_path.display()))?;
        return cx.out.print_json(&serde_json::json!({
            "worker_id": id,
            "log_path": log_path,
            "lines": tail,
        }));
    }
    let mut stdout = std::io::stdout().lock();
    let mut file = std::fs::File::open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    match lines {
        Some(count) => {
            for line in daemon::tail_lines(&log_path, count)
                .with_context(|| format!("reading {}", log_path.display()))?
            {
                writeln!(stdout, "{line}")?;
            }
            file.seek(SeekFrom::End(0))
                .with_context(|| format!("reading {}", log_path.display()))?;
        }
        None => {
            std::io::copy(&mut file, &mut stdout)
                .with_context(|| format!("reading {}", log_path.display()))?;
        }
    }
    stdout.flush()?;
    if !follow {
        return Ok(());
    }
    let mut buffer = Vec::new();
    loop {
        // Checked before reading, so the last lines written before exiting are still printed.
        let running = run_dir.get(id)?.is_some_and(|info| info.is_running());
        buffer.clear();
        file.read_to_end(&mut buffer)
            .with_context(|| format!("reading {}", log_path.display()))?;
        stdout.write_all(&buffer)?;
        stdout.flush()?;
        if !running {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `<dir>/llorch-worker`, where dir is --bin-dir / LLORCH_BIN_DIR or the release target dir.
fn locate_worker(
    bin_dir: Option<PathBuf>,
    settings: &crate::config::Settings,
    backend: llorch_api::Backend,
) -> anyhow::Result<PathBuf> {
    let dir = bin_dir
        .unwrap_or_else(|| crate::build::default_target_dir(&settings.repo_root).join("release"));
    let program = dir.join("llorch-worker");
    if !program.is_file() {
        bail!(
            "starting a worker: {} does not exist\nhint: build it with `cargo xtask build worker {backend}`, or point --bin-dir (LLORCH_BIN_DIR) at the directory that holds llorch-worker",
            program.display()
        );
    }
    Ok(program)
}

/// Where to reach a worker listening on `bind`: a wildcard address is reached on loopback.
fn reachable_address(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(address) if address.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(address) if address.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        address => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        assert_eq!(
            reachable_address("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            reachable_address("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        let lan: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(reachable_address(lan), lan);
    }

    fn spec_of(args: &[&str]) -> SpawnSpec {
        use crate::flags::{Cli, Command, PoolSubcommand};
        use clap::Parser as _;
        let argv = [&["cargo xtask", "pool", "worker", "spawn"], args].concat();
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Pool(pool) = cli.command else {
            panic!("not a pool command")
        };
        let PoolSubcommand::Worker(cmd) = pool.command else {
            panic!("not a pool worker command")
        };
        spec_of_spawn(cmd).expect("a spawn command")
    }

    #[test]
    fn spawn_flags_reach_the_worker_as_before() {
        let spec = spec_of(&[
            "cuda",
            "--model",
            "gemma3-270m",
            "--gpu",
            "1",
            "--port",
            "9002",
            "--advertise-host",
            "10.0.0.2",
            "--orchestrator-url",
            "http://10.0.0.1:8080",
            "--worker-token-file",
            "/etc/llorch/worker.token",
            "--",
            "--slots",
            "2",
        ]);
        let argv = crate::pool::launch::argv_on_test_machine(&spec);
        assert_eq!(
            argv.join(" "),
            "--model gemma3-270m --backend cuda --gpu 1 --host 0.0.0.0 --port 9002 \
             --worker-id box-gemma3-270m-9002 --orchestrator-url http://10.0.0.1:8080 \
             --model-base-dir /models --advertise-url http://10.0.0.2:9002 \
             --worker-token-file /etc/llorch/worker.token --slots 2"
        );
        // What the previous version (a spawn spec, then a local WorkerLaunch with --gpu after
        // the address flags) passed: the same flags and values.
        let before = "--model gemma3-270m --backend cuda --host 0.0.0.0 --port 9002 \
             --worker-id box-gemma3-270m-9002 --orchestrator-url http://10.0.0.1:8080 \
             --model-base-dir /models --gpu 1 --advertise-url http://10.0.0.2:9002 \
             --worker-token-file /etc/llorch/worker.token --slots 2";
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(
            crate::pool::launch::flag_pairs(&argv),
            crate::pool::launch::flag_pairs(&before.split_whitespace().collect::<Vec<_>>())
        );
    }

    #[test]
    fn spawn_settings_are_flags_of_the_launch_and_none_is_passed_unasked() {
        let plain = spec_of(&["cpu", "--model", "gemma3-270m", "--port", "9001"]);
        assert_eq!(plain.launch, WorkerLaunch::of_model("gemma3-270m"));
        assert_eq!(
            crate::pool::launch::argv_on_test_machine(&plain).join(" "),
            "--model gemma3-270m --backend cpu --host 127.0.0.1 --port 9001 \
             --worker-id box-gemma3-270m-9001 --orchestrator-url http://127.0.0.1:8080 \
             --model-base-dir /models"
        );
        let tuned = spec_of(&[
            "cpu",
            "--model",
            "gemma3-270m",
            "--slots",
            "2",
            "--ctx-size",
            "4096",
            "--threads",
            "3",
            "--embeddings",
        ]);
        assert_eq!(
            tuned.launch.setting_args().join(" "),
            "--slots 2 --ctx-size 4096 --threads 3 --embeddings"
        );
    }

    #[test]
    fn a_saved_spawn_of_the_previous_version_restarts_the_same_worker() {
        // Written by the version whose record had `model` and `backend` of its own.
        let old = r#"{
  "name": "box-gemma3-270m",
  "program": "/repo/target/release/llorch-worker",
  "args": ["--model", "gemma3-270m", "--backend", "cpu", "--host", "127.0.0.1", "--port", "9001", "--worker-id", "box-gemma3-270m", "--orchestrator-url", "http://127.0.0.1:8080", "--model-base-dir", "/models", "--slots", "2"],
  "env": [["RUST_LOG", "info"]],
  "port": 9001,
  "url": "http://127.0.0.1:9001",
  "model": "gemma3-270m",
  "backend": "cpu"
}"#;
        let saved: SavedSpawn = serde_json::from_str(old).unwrap();
        assert_eq!(saved.launch, WorkerLaunch::of_model("gemma3-270m"));
        let spec = saved.to_spec();
        assert_eq!(spec.args.len(), 16);
        assert_eq!(spec.args[15], "2");
        assert_eq!(spec.model.as_deref(), Some("gemma3-270m"));
        assert_eq!(spec.backend.as_deref(), Some("cpu"));
        assert_eq!(saved.orchestrator_url(), Some("http://127.0.0.1:8080"));
        // And the new record reads back as itself, with the launch it was spawned with.
        let newer = SavedSpawn {
            launch: WorkerLaunch {
                slots: Some(2),
                ..saved.launch.clone()
            },
            ..saved
        };
        let json = serde_json::to_string(&newer).unwrap();
        assert_eq!(serde_json::from_str::<SavedSpawn>(&json).unwrap(), newer);
    }
}
