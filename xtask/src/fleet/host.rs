//! The host side of the fleet: `fleet host state` and `fleet host apply`, run on each host
//! (over SSH, in its checkout) by `fleet up`, `plan`, `status` and `down`. Everything here acts
//! on this machine only: it prepares it (setup, build, models, token), reads which fleet
//! workers run, and starts, restarts or stops them as systemd user units or, where there is no
//! systemd, with the pool's detached supervisor.

use std::{
    collections::BTreeSet,
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use llorch_api::Backend;
use llorch_client::wait::{wait_for_health, HealthAnswer, Verdict};
use serde::{Deserialize, Serialize};

use super::{
    file::{PoolManagerSpec, Supervisor, WorkerSpec},
    plan::{self, Action, ActualWorker, Running, WorkerOutcome},
    pool_manager::{self, ActualPoolManager},
    units,
};
mod restart;

use crate::{
    daemon::RunDir,
    flags::FleetHostCmd,
    pool::{launch::SpawnSpec, spawn as pool_spawn, worker as pool_worker},
    Context,
};

/// How long a stopped worker gets to finish its tokens and deregister.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// What `fleet up` and `down` ask of one host (stdin of `fleet host apply`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub workers: Vec<WorkerSpec>,
    /// Setup, build, models and token first (`up`); `down` only stops.
    #[serde(default = "yes")]
    pub prepare: bool,
    #[serde(default)]
    pub supervisor: Supervisor,
    /// The worker token to put in place, when orcd has worker tokens.
    #[serde(default)]
    pub worker_token: Option<String>,
    /// The entries of the operator's catalog.d that this host's workers use (`models download
    /// hf:...`, `models add`), so their ids resolve here as well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalog_entries: Vec<llorch_catalog::ModelEntry>,
    /// The host's pool manager; `None` stops the one that runs (`down`, or turned off).
    #[serde(default)]
    pub pool_manager: Option<PoolManagerSpec>,
}

fn yes() -> bool {
    true
}

impl ApplyRequest {
    /// The catalog models the host needs: its workers' and its pool manager's.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.workers
            .iter()
            .map(|spec| spec.launch.model.as_str())
            .chain(
                self.pool_manager
                    .iter()
                    .flat_map(|spec| spec.models.iter().map(String::as_str)),
            )
    }
}

/// Whether a step changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    /// Already as wanted: checked, nothing done.
    Unchanged,
    Changed,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub step: String,
    pub outcome: StepOutcome,
    pub detail: String,
}

/// A model the host could not download: `fleet up` copies it from the operator's machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissingModel {
    pub id: String,
    /// Its directory on the host.
    pub dir: PathBuf,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyReport {
    pub steps: Vec<StepReport>,
    pub workers: Vec<WorkerOutcome>,
    pub missing_models: Vec<MissingModel>,
    /// What happened to the host's pool manager (`None` from an older host).
    #[serde(default)]
    pub pool_manager: Option<WorkerOutcome>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.steps
            .iter()
            .all(|step| step.outcome != StepOutcome::Failed)
            && self.workers.iter().all(|worker| worker.ok)
            && self.pool_manager.as_ref().is_none_or(|outcome| outcome.ok)
    }
}

/// `fleet host state`: what runs here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    pub systemd: bool,
    pub workers: Vec<ActualWorker>,
    /// The pool manager the fleet started here (`None` from an older host, or none runs).
    #[serde(default)]
    pub pool_manager: Option<ActualPoolManager>,
}

pub fn run(cmd: FleetHostCmd, cx: &Context) -> anyhow::Result<()> {
    match cmd {
        FleetHostCmd::State { verify_models } => {
            let state = observe(cx, verify_models)?;
            if cx.out.json() {
                return cx.out.print_json(&state);
            }
            for worker in &state.workers {
                cx.out.println(format!(
                    "{}  {}  {}",
                    worker.name,
                    if worker.running { "running" } else { "stopped" },
                    worker.health.as_deref().unwrap_or("-")
                ));
            }
            Ok(())
        }
        FleetHostCmd::Apply { timeout } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the fleet request on stdin")?;
            let request: ApplyRequest = serde_json::from_str(&input).context(
                "reading the fleet request on stdin\nhint: `fleet host apply` is run by `cargo xtask fleet up`; it reads JSON such as {\"workers\":[]}",
            )?;
            let report = apply(cx, &request, Duration::from_secs(timeout))?;
            if cx.out.json() {
                cx.out.print_json(&report)?;
            } else {
                for step in &report.steps {
                    cx.out
                        .println(format!("{}: {:?} {}", step.step, step.outcome, step.detail));
                }
                for worker in &report.workers {
                    cx.out.println(format!(
                        "{}: {}{}",
                        worker.name,
                        worker.action.describe(),
                        worker
                            .error
                            .as_deref()
                            .map(|error| format!(" FAILED: {error}"))
                            .unwrap_or_default()
                    ));
                }
            }
            if report.ok() {
                Ok(())
            } else {
                Err(crate::output::ExitCode(1).into())
            }
        }
    }
}

/// Markers of detached fleet workers: `<run dir>/fleet/NAME.json` holds the spec it was
/// started with, which tells fleet workers from those started by hand.
fn marker_dir(run_dir: &RunDir) -> PathBuf {
    run_dir.path().join("fleet")
}

/// The fleet's workers on this machine: units and detached ones, each asked for its health.
pub fn observe(cx: &Context, verify_models: bool) -> anyhow::Result<HostState> {
    let run_dir = RunDir::from_env()?;
    let systemd = units::available();
    // (name, spec, supervisor, running, started by `pool worker spawn`)
    let mut found: Vec<(String, Option<WorkerSpec>, Running, bool, bool)> = Vec::new();
    if systemd {
        for (name, spec) in units::list()? {
            let running = units::is_active(&units::unit_name(&name));
            found.push((name, spec, Running::Systemd, running, false));
        }
    }
    let markers = marker_dir(&run_dir);
    if let Ok(entries) = std::fs::read_dir(&markers) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .filter(|_| path.extension().is_some_and(|ext| ext == "json"))
            else {
                continue;
            };
            let spec = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str::<WorkerSpec>(&text).ok());
            let running = run_dir
                .get(name)
                .ok()
                .flatten()
                .is_some_and(|info| info.is_running());
            found.push((name.to_owned(), spec, Running::Detached, running, false));
        }
    }
    // Workers `pool worker spawn` started here: the same ids, so the fleet sees them.
    for info in run_dir.list()? {
        if info.kind == pool_worker::WORKER_KIND && !found.iter().any(|seen| seen.0 == info.name) {
            let running = info.is_running();
            found.push((info.name, None, Running::Detached, running, true));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut verified = std::collections::BTreeMap::new();
    let workers = found
        .into_iter()
        .map(|(name, spec, supervisor, running, started_by_pool)| {
            let base = spec.as_ref().map(local_url);
            let client = llorch_client::http::blocking_client_for(
                base.as_deref().unwrap_or_default(),
                Duration::from_secs(2),
            );
            let health = match (&base, running) {
                (Some(base), true) => client
                    .get(format!("{base}/health"))
                    .send()
                    .and_then(|response| response.json::<llorch_api::WorkerHealth>())
                    .ok(),
                _ => None,
            };
            let tokens_per_second = match (&base, &health) {
                (Some(base), Some(_)) => client
                    .get(format!("{base}/metrics"))
                    .send()
                    .and_then(|response| response.text())
                    .ok()
                    .and_then(|text| mean_tokens_per_second(&text)),
                _ => None,
            };
            let model_verified = match (&spec, verify_models) {
                (Some(spec), true) => Some(
                    *verified
                        .entry(spec.launch.model.clone())
                        .or_insert_with(|| {
                            crate::models::is_verified(cx, &spec.launch.model).unwrap_or(false)
                        }),
                ),
                _ => None,
            };
            ActualWorker {
                name,
                spec,
                supervisor,
                running,
                health: health.as_ref().map(|health| {
                    serde_json::to_value(health.status)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "unknown".to_owned())
                }),
                slots_busy: health.as_ref().map(|health| health.slots_busy),
                tokens_per_second,
                model_verified,
                started_by_pool,
            }
        })
        .collect();
    let pool_manager = pool_manager::observe(&run_dir, systemd)?;
    Ok(HostState {
        systemd,
        workers,
        pool_manager,
    })
}

/// Where this machine reaches a worker: its bind address, loopback for a wildcard.
fn local_url(spec: &WorkerSpec) -> String {
    let address = match spec.bind {
        IpAddr::V4(address) if address.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(address) if address.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        address => address,
    };
    format!("http://{}", SocketAddr::new(address, spec.port))
}

/// The mean of the worker's `generation_tokens_per_second` histogram (sum / count).
fn mean_tokens_per_second(metrics: &str) -> Option<f64> {
    let value = |suffix: &str| {
        crate::metrics::metric_sample(
            metrics,
            &format!("llorch_worker_generation_tokens_per_second{suffix}"),
        )
    };
    let count = value("_count")?;
    (count > 0.0).then(|| value("_sum").map(|sum| sum / count))?
}

/// `fleet host apply`: prepares this machine and brings its workers to `request`.
pub fn apply(
    cx: &Context,
    request: &ApplyRequest,
    timeout: Duration,
) -> anyhow::Result<ApplyReport> {
    let mut report = ApplyReport {
        steps: Vec::new(),
        workers: Vec::new(),
        missing_models: Vec::new(),
        pool_manager: None,
    };
    let mut programs: Vec<(Backend, PathBuf)> = Vec::new();
    let mut token_path = None;
    let mut desired = request.workers.clone();
    // Before anything else: ids of the operator's catalog.d must resolve here for the model
    // step and for the workers' units, and `down` must know them too.
    if !request.catalog_entries.is_empty() {
        let adopted =
            crate::models::adopt_user_entries(cx, &request.catalog_entries).map(|written| {
                match written.as_slice() {
                    [] => (
                        StepOutcome::Unchanged,
                        "the operator's catalog.d entries are in place".to_owned(),
                    ),
                    ids => (
                        StepOutcome::Changed,
                        format!("catalog.d entries written for {}", ids.join(", ")),
                    ),
                }
            });
        let (outcome, detail) =
            adopted.unwrap_or_else(|error| (StepOutcome::Failed, format!("{error:#}")));
        report.steps.push(StepReport {
            step: "catalog".to_owned(),
            outcome,
            detail,
        });
        if outcome == StepOutcome::Failed {
            return Ok(report);
        }
    }
    if request.prepare && (!desired.is_empty() || request.pool_manager.is_some()) {
        if !prepare(cx, request, &mut report, &mut programs, &mut token_path) {
            return Ok(report);
        }
        // Workers whose model is not here yet wait for `fleet up` to copy it.
        let missing: BTreeSet<&str> = report
            .missing_models
            .iter()
            .map(|model| model.id.as_str())
            .collect();
        desired.retain(|spec| !missing.contains(spec.launch.model.as_str()));
    } else if request.worker_token.is_some() {
        token_path = Some(pool_spawn::host_token_path()?);
    }
    let waiting: BTreeSet<String> = request
        .workers
        .iter()
        .filter(|spec| !desired.contains(spec))
        .map(|spec| spec.name.clone())
        .collect();

    let state = observe(cx, false)?;
    let actual: Vec<ActualWorker> = state
        .workers
        .into_iter()
        .filter(|worker| !waiting.contains(&worker.name))
        .collect();
    let use_systemd = match request.supervisor {
        Supervisor::Detached => false,
        Supervisor::Auto => state.systemd,
        Supervisor::Systemd if state.systemd => true,
        Supervisor::Systemd => bail!("the fleet file asks for systemd units on this host, but no systemd user manager runs here\nhint: set `supervisor = \"detached\"` (or \"auto\") for this host"),
    };
    let run_dir = RunDir::from_env()?;
    let supervisor = match use_systemd {
        true => Running::Systemd,
        false => Running::Detached,
    };
    for planned in plan::plan_host(&desired, &actual, stop_reason(request)) {
        let current = actual.iter().find(|worker| worker.name == planned.name);
        if !planned.action.is_nothing() {
            cx.out
                .status(format!("{}: {}", planned.name, planned.action.describe()));
        }
        let launch = |spec: &WorkerSpec| -> anyhow::Result<()> {
            let program = program_for(cx, &programs, spec.launch.backend)?;
            start(
                cx,
                &run_dir,
                spec,
                &program,
                token_path.as_deref(),
                use_systemd,
                timeout,
            )
        };
        let result = match (&planned.action, &planned.desired) {
            (Action::Nothing, _) => Ok(()),
            (Action::Stop { .. }, _) => stop(&run_dir, &planned.name, current),
            (action, Some(spec)) => match restorable(action, current) {
                // It runs and answers: its replacement starts beside it first where the host
                // has the room (restart.rs).
                Some(previous) => restart::Restart {
                    cx,
                    run_dir: &run_dir,
                    spec,
                    previous,
                    current,
                    supervisor,
                    launch: &launch,
                }
                .run(),
                None => stop(&run_dir, &planned.name, current).and_then(|()| launch(spec)),
            },
            (_, None) => Ok(()),
        };
        report.workers.push(WorkerOutcome {
            name: planned.name,
            action: planned.action,
            ok: result.is_ok(),
            error: result.err().map(|error| format!("{error:#}")),
        });
    }
    let action = pool_manager::plan(
        request.pool_manager.as_ref(),
        state.pool_manager.as_ref(),
        stop_reason(request),
    );
    if !action.is_nothing() {
        cx.out
            .status(format!("{}: {}", pool_manager::NAME, action.describe()));
    }
    let launch = || -> anyhow::Result<pool_manager::Launch> {
        let backend = request
            .pool_manager
            .as_ref()
            .and_then(|spec| spec.backends.first().copied())
            .unwrap_or(Backend::Cpu);
        let worker = program_for(cx, &programs, backend)?;
        Ok(pool_manager::Launch {
            program: worker.with_file_name(pool_manager::BINARY),
            token: token_path.clone(),
            model_base_dir: cx.settings.model_base_dir.clone(),
            catalog_dir: cx.settings.catalog_dir.clone(),
            log_dir: run_dir.path().join("pool-logs"),
            log_level: cx.settings.log_level.clone(),
            use_systemd,
            timeout,
        })
    };
    report.pool_manager = Some(pool_manager::apply(
        &run_dir,
        &action,
        request.pool_manager.as_ref(),
        state.pool_manager.as_ref(),
        &launch,
    ));
    Ok(report)
}

/// The settings a worker ran with before a restart, when it ran and answered: what to start
/// again if the restart fails.
fn restorable<'a>(action: &Action, current: Option<&'a ActualWorker>) -> Option<&'a WorkerSpec> {
    let current = current?;
    match action {
        Action::Restart { .. } if current.running && current.health.is_some() => {
            current.spec.as_ref()
        }
        _ => None,
    }
}

/// What the stops of this request are for: `down` (which prepares nothing) stops every fleet
/// worker, `up` only those the fleet file no longer has.
fn stop_reason(request: &ApplyRequest) -> &'static str {
    match request.prepare {
        true => plan::STOP_STRAY,
        false => plan::STOP_DOWN,
    }
}

/// Setup, build, models and token; false when the host cannot go on.
fn prepare(
    cx: &Context,
    request: &ApplyRequest,
    report: &mut ApplyReport,
    programs: &mut Vec<(Backend, PathBuf)>,
    token_path: &mut Option<PathBuf>,
) -> bool {
    let step =
        |report: &mut ApplyReport, name: &str, result: anyhow::Result<(StepOutcome, String)>| {
            let (outcome, detail) =
                result.unwrap_or_else(|error| (StepOutcome::Failed, format!("{error:#}")));
            report.steps.push(StepReport {
                step: name.to_owned(),
                outcome,
                detail,
            });
            outcome != StepOutcome::Failed
        };

    cx.out.status("checking the tools (dev doctor)");
    if !step(report, "setup", setup(cx)) {
        return false;
    }
    let pool_backend = request
        .pool_manager
        .as_ref()
        .and_then(|spec| spec.backends.first().copied());
    let backends: BTreeSet<&'static str> = request
        .workers
        .iter()
        .map(|spec| spec.launch.backend)
        .chain(pool_backend)
        .map(|backend| backend.as_str())
        .collect();
    for backend in backends {
        let backend: Backend = backend.parse().expect("a backend name parses back");
        cx.out.status(format!("building llorch-worker ({backend})"));
        let built = crate::build::CargoBuild::new(backend, true)
            .package(crate::build::WORKER_PACKAGE)
            .run(cx)
            .and_then(|outcome| {
                let program = outcome.executable(crate::build::WORKER_BINARY)?;
                programs.push((backend, program.clone()));
                Ok(match outcome.compiled {
                    0 => (
                        StepOutcome::Unchanged,
                        format!(
                            "llorch-worker ({backend}) up to date: {}",
                            program.display()
                        ),
                    ),
                    compiled => (
                        StepOutcome::Changed,
                        format!("llorch-worker ({backend}) built, {compiled} crates compiled"),
                    ),
                })
            });
        if !step(report, "build", built) {
            return false;
        }
    }
    let models: BTreeSet<&str> = request.models().collect();
    for model in models {
        cx.out.status(format!("checking model {model}"));
        let outcome = match crate::models::installed_file(cx, model) {
            Ok(Some(path)) => Ok((
                StepOutcome::Unchanged,
                format!("{model} present: {}", path.display()),
            )),
            Ok(None) => match crate::models::ensure_downloaded(cx, model) {
                Ok(path) => Ok((
                    StepOutcome::Changed,
                    format!("{model} downloaded: {}", path.display()),
                )),
                Err(error) => {
                    report.missing_models.push(MissingModel {
                        id: model.to_owned(),
                        dir: llorch_catalog::model_dir(&cx.settings.model_base_dir, model),
                        error: format!("{error:#}"),
                    });
                    Ok((
                        StepOutcome::Changed,
                        format!("{model} could not be downloaded here; to be copied"),
                    ))
                }
            },
            Err(error) => Err(error),
        };
        if !step(report, "model", outcome) {
            return false;
        }
    }
    if let Some(token) = &request.worker_token {
        let result = pool_spawn::host_token_path().and_then(|path| {
            let placed = place_token(&path, token);
            *token_path = Some(path);
            placed
        });
        if !step(report, "token", result) {
            return false;
        }
    }
    true
}

/// Runs `dev setup` only when `dev doctor` finds a required tool missing.
fn setup(cx: &Context) -> anyhow::Result<(StepOutcome, String)> {
    let missing: Vec<&'static str> = crate::dev::diagnose(&cx.settings.repo_root)
        .into_iter()
        .filter(|finding| finding.is_problem() && finding.need == crate::dev::Need::Required)
        .map(|finding| finding.name)
        .collect();
    if missing.is_empty() {
        return Ok((
            StepOutcome::Unchanged,
            "every required tool present".to_owned(),
        ));
    }
    crate::dev::run_setup(cx, true, crate::dev::SetupScope::Run)?;
    Ok((
        StepOutcome::Changed,
        format!("installed {}", missing.join(", ")),
    ))
}

/// Writes the token (mode 0600) unless the file already holds it; a different token there
/// (rotated on the operator's side) is replaced, and the step says so.
fn place_token(path: &Path, token: &str) -> anyhow::Result<(StepOutcome, String)> {
    let wanted = format!("{}\n", token.trim());
    let existing = std::fs::read_to_string(path).ok();
    if existing.as_deref() == Some(wanted.as_str()) {
        return Ok((
            StepOutcome::Unchanged,
            format!("worker token in {}", path.display()),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // NamedTempFile is created with mode 0600 already; the token never exists more widely.
    std::io::Write::write_all(&mut temp, wanted.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    let detail = match existing {
        Some(_) => format!(
            "worker token replaced in {} (0600): it held a different one",
            path.display()
        ),
        None => format!("worker token written to {} (0600)", path.display()),
    };
    Ok((StepOutcome::Changed, detail))
}

fn program_for(
    cx: &Context,
    programs: &[(Backend, PathBuf)],
    backend: Backend,
) -> anyhow::Result<PathBuf> {
    if let Some((_, program)) = programs.iter().find(|(built, _)| *built == backend) {
        return Ok(program.clone());
    }
    // `down` and plain restarts do not build: the release worker of the checkout (or
    // LLORCH_BIN_DIR), as `pool worker spawn` finds it.
    let dir = crate::config::process_env("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cx.settings.repo_root.join("target/release"));
    let program = dir.join(crate::build::WORKER_BINARY);
    if !program.is_file() {
        bail!(
            "starting a worker: {} does not exist\nhint: `cargo xtask fleet up` builds it; by hand: `cargo xtask build worker {backend}`",
            program.display()
        );
    }
    Ok(program)
}

/// The spawn spec of a fleet worker: its launch, with the place the fleet file gives it.
fn spawn_spec(
    spec: &WorkerSpec,
    program: &Path,
    token: Option<&Path>,
    timeout: Duration,
) -> SpawnSpec {
    SpawnSpec {
        port: Some(spec.port),
        bind: Some(spec.bind),
        advertise_url: Some(spec.advertise_url.clone()),
        id: Some(spec.name.clone()),
        orchestrator_url: Some(spec.orchestrator_url.clone()),
        worker_token_file: token.map(Path::to_path_buf),
        timeout,
        ..SpawnSpec::new(spec.launch.clone()).with_program(program)
    }
}

fn start(
    cx: &Context,
    run_dir: &RunDir,
    spec: &WorkerSpec,
    program: &Path,
    token: Option<&Path>,
    use_systemd: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let spawn = spawn_spec(spec, program, token, timeout);
    if use_systemd {
        let daemon = pool_worker::daemon_spec(cx, &pool_worker::resolve(cx, &spawn)?)?;
        let env: Vec<(String, String)> = daemon
            .env
            .iter()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let text = units::render(spec, &daemon.program, &daemon.args, &env);
        units::install_and_start(&units::unit_name(&spec.name), &text)?;
        return wait_ready(spec, timeout).map_err(|error| {
            anyhow::anyhow!(
                "{error:#}\n--- journal of {} ---\n{}",
                units::unit_name(&spec.name),
                units::journal_tail(&units::unit_name(&spec.name))
            )
        });
    }
    pool_worker::start_worker(cx, run_dir, &spawn)?;
    let marker = marker_dir(run_dir).join(format!("{}.json", spec.name));
    let json = serde_json::to_string_pretty(spec).expect("a worker spec always serializes");
    crate::files::write_atomically(&marker, &format!("{json}\n"))
}

/// Polls a unit's worker until its /health says ready and that orcd accepted its registration
/// (a worker older than the registration report: ready is enough). A refusal fails at once,
/// with the worker's reason.
fn wait_ready(spec: &WorkerSpec, timeout: Duration) -> anyhow::Result<()> {
    let judge = |answer: &HealthAnswer| {
        if !answer.status.is_success() {
            return Verdict::NotYet(format!("HTTP {}", answer.status));
        }
        let Some(health) = answer.json::<llorch_api::WorkerHealth>() else {
            return Verdict::NotYet("an answer that is not a worker's health".to_owned());
        };
        let Some(status) = health.registration else {
            return Verdict::Ready(());
        };
        match status.state {
            llorch_api::RegistrationState::Registered => Verdict::Ready(()),
            llorch_api::RegistrationState::Refused => Verdict::Failed(anyhow::anyhow!(
                "worker `{}` is ready but orcd at {} refused its registration (advertising {}): {}",
                spec.name,
                status.orchestrator_url,
                status.advertised_url,
                status.last_error.as_deref().unwrap_or("no reason given")
            )),
            llorch_api::RegistrationState::Pending => {
                Verdict::NotYet("registering with orcd".to_owned())
            }
        }
    };
    wait_for_health(&local_url(spec), timeout, judge, || Ok(())).with_context(|| {
        format!(
            "worker `{}` was not ready and registered with orcd",
            spec.name
        )
    })
}

/// Stops a fleet worker however it runs and forgets it (unit file or marker removed).
fn stop(run_dir: &RunDir, name: &str, current: Option<&ActualWorker>) -> anyhow::Result<()> {
    match current {
        Some(current) => stop_as(run_dir, name, current.supervisor),
        None => Ok(()),
    }
}

/// Stops the worker `name` that runs under `supervisor` (nothing when it does not run).
fn stop_as(run_dir: &RunDir, name: &str, supervisor: Running) -> anyhow::Result<()> {
    match supervisor {
        Running::Systemd => units::remove(&units::unit_name(name)),
        Running::Detached => {
            if run_dir.get(name)?.is_some() {
                run_dir.stop(name, STOP_GRACE)?;
            }
            let marker = marker_dir(run_dir).join(format!("{name}.json"));
            match std::fs::remove_file(&marker) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error).with_context(|| format!("removing {}", marker.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_per_second_is_the_histogram_mean() {
        let metrics = "# TYPE llorch_worker_generation_tokens_per_second histogram\n\
                       llorch_worker_generation_tokens_per_second_sum 150.0\n\
                       llorch_worker_generation_tokens_per_second_count 3\n\
                       llorch_worker_generation_tokens_per_second_bucket{le=\"1.0\"} 0\n";
        assert_eq!(mean_tokens_per_second(metrics), Some(50.0));
        let none_yet = "llorch_worker_generation_tokens_per_second_sum 0.0\nllorch_worker_generation_tokens_per_second_count 0\n";
        assert_eq!(mean_tokens_per_second(none_yet), None);
        assert_eq!(mean_tokens_per_second(""), None);
    }

    #[test]
    fn the_token_is_written_private_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        assert_eq!(
            place_token(&path, "secret").unwrap().0,
            StepOutcome::Changed
        );
        assert_eq!(
            place_token(&path, "secret").unwrap().0,
            StepOutcome::Unchanged
        );
        let (outcome, detail) = place_token(&path, "rotated").unwrap();
        assert_eq!(outcome, StepOutcome::Changed);
        assert!(detail.contains("replaced"), "{detail}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "rotated\n");
    }

    #[test]
    fn down_says_why_it_stops_a_worker() {
        let mut request: ApplyRequest = serde_json::from_str("{\"workers\":[]}").unwrap();
        let stray = ActualWorker {
            name: "a".into(),
            spec: None,
            supervisor: Running::Detached,
            running: true,
            health: Some("ready".into()),
            slots_busy: None,
            tokens_per_second: None,
            model_verified: None,
            started_by_pool: false,
        };
        let describe = |request: &ApplyRequest| {
            plan::plan_host(&[], std::slice::from_ref(&stray), stop_reason(request))[0]
                .action
                .describe()
        };
        assert_eq!(describe(&request), "stop (not in the fleet file)");
        request.prepare = false;
        assert_eq!(describe(&request), "stop (fleet down)");
    }

    #[test]
    fn requests_default_to_preparing_the_host() {
        let request: ApplyRequest = serde_json::from_str("{\"workers\":[]}").unwrap();
        assert!(request.prepare);
        assert_eq!(request.supervisor, Supervisor::Auto);
    }

    #[test]
    fn a_fleet_worker_reaches_the_worker_with_the_flags_of_before() {
        let text = "[orchestrator]\nurl = \"http://127.0.0.1:8080\"\n[hosts.local]\n\
                    [[hosts.local.workers]]\nmodel = \"gemma3-270m\"\nbackend = \"cuda\"\n\
                    gpu = 1\nslots = 2\nembeddings = true\n";
        let fleet = super::super::file::parse(text, Path::new("fleet.toml"), &|_| None).unwrap();
        let worker = &fleet.hosts[0].workers[0];
        let spec = spawn_spec(
            worker,
            Path::new("/opt/llorch/llorch-worker"),
            Some(Path::new("/home/me/.config/llorch/worker.token")),
            Duration::from_secs(60),
        );
        let argv = crate::pool::launch::argv_on_test_machine(&spec);
        assert_eq!(
            argv.join(" "),
            "--model gemma3-270m --backend cuda --gpu 1 --slots 2 --ctx-size 2048 --embeddings \
             --host 127.0.0.1 --port 9001 --worker-id local-gemma3-270m-cuda1 \
             --orchestrator-url http://127.0.0.1:8080 --model-base-dir /models \
             --advertise-url http://127.0.0.1:9001 \
             --worker-token-file /home/me/.config/llorch/worker.token"
        );
        // What the previous version (settings and token as extra arguments after the address
        // flags) passed: the same flags and values.
        let before = "--model gemma3-270m --backend cuda --host 127.0.0.1 --port 9001 \
             --worker-id local-gemma3-270m-cuda1 --orchestrator-url http://127.0.0.1:8080 \
             --model-base-dir /models --gpu 1 --advertise-url http://127.0.0.1:9001 \
             --slots 2 --ctx-size 2048 --worker-token-file /home/me/.config/llorch/worker.token \
             --embeddings";
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(
            crate::pool::launch::flag_pairs(&argv),
            crate::pool::launch::flag_pairs(&before.split_whitespace().collect::<Vec<_>>())
        );
    }
}
