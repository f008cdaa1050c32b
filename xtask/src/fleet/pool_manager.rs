//! The host's pool manager (`llorch-pool-managerd`) as `fleet host apply` keeps it: found as
//! the systemd user unit `llorch-pool-managerd.service` or as the detached daemon
//! `pool-managerd` of the run directory, each with the spec it was started with, compared with
//! the fleet file's, and started, restarted or stopped like a fleet worker. orcd then loads
//! models on the host through it.

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use llorch_client::wait::is_healthy;
use serde::{Deserialize, Serialize};

pub use super::file::PoolManagerSpec;
use super::{
    plan::{Action, Change, Running, WorkerOutcome},
    units,
};
use crate::daemon::{DaemonSpec, RunDir};

/// The daemon's name in the run directory and in reports.
pub const NAME: &str = "pool-managerd";
/// The executable, built with the worker (`--workspace --bins`).
pub const BINARY: &str = "llorch-pool-managerd";
const UNIT: &str = "llorch-pool-managerd.service";
/// The pool manager drains its workers (15 s each at most, together) before it exits.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The host's pool manager as found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActualPoolManager {
    /// What it was started with; `None` when its record is unreadable.
    pub spec: Option<PoolManagerSpec>,
    pub supervisor: Running,
    pub running: bool,
    /// Its `/health` answered 200.
    pub healthy: bool,
}

/// The detached pool manager's spec, beside its run-directory record (not `.json`: the run
/// directory lists those as daemons).
fn marker(run_dir: &RunDir) -> PathBuf {
    run_dir.path().join(format!("{NAME}.fleet-spec"))
}

/// Where this machine reaches the pool manager: its bind address, loopback for a wildcard.
fn local_url(spec: &PoolManagerSpec) -> String {
    let address = match spec.bind {
        IpAddr::V4(address) if address.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(address) if address.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        address => address,
    };
    format!("http://{}", SocketAddr::new(address, spec.port))
}

/// The pool manager the fleet started here, if any: its unit where `systemd` runs one, else
/// the run directory's record.
pub fn observe(run_dir: &RunDir, systemd: bool) -> anyhow::Result<Option<ActualPoolManager>> {
    let unit_path = units::unit_dir()?.join(UNIT);
    let found = if systemd && unit_path.is_file() {
        let text = std::fs::read_to_string(&unit_path)
            .with_context(|| format!("reading {}", unit_path.display()))?;
        let spec = units::spec_json(&text).and_then(|json| serde_json::from_str(json).ok());
        Some((spec, Running::Systemd, units::is_active(UNIT)))
    } else {
        let record = run_dir.get(NAME)?;
        let spec = std::fs::read_to_string(marker(run_dir))
            .ok()
            .and_then(|text| serde_json::from_str::<PoolManagerSpec>(&text).ok());
        match (record, spec) {
            (None, None) => None,
            (record, spec) => Some((
                spec,
                Running::Detached,
                record.is_some_and(|info| info.is_running()),
            )),
        }
    };
    Ok(found.map(|(spec, supervisor, running)| {
        let healthy = running
            && spec
                .as_ref()
                .is_some_and(|spec| is_healthy(&local_url(spec), Duration::from_secs(2)));
        ActualPoolManager {
            spec,
            supervisor,
            running,
            healthy,
        }
    }))
}

/// What to do about the host's pool manager: the fleet file's (`desired`) against what runs.
pub fn plan(
    desired: Option<&PoolManagerSpec>,
    actual: Option<&ActualPoolManager>,
    stop_reason: &str,
) -> Action {
    let (desired, actual) = match (desired, actual) {
        (None, None) => return Action::Nothing,
        (None, Some(_)) => {
            return Action::Stop {
                reason: stop_reason.to_owned(),
            }
        }
        (Some(_), None) => {
            return Action::Start {
                reason: "new".to_owned(),
            }
        }
        (Some(desired), Some(actual)) => (desired, actual),
    };
    if !actual.running {
        return Action::Start {
            reason: "not running".to_owned(),
        };
    }
    let Some(running) = &actual.spec else {
        return Action::Restart {
            reason: "its record is unreadable".to_owned(),
            changes: Vec::new(),
        };
    };
    let changes = differences(running, desired);
    if !changes.is_empty() {
        return Action::Restart {
            reason: "settings changed".to_owned(),
            changes,
        };
    }
    if !actual.healthy {
        return Action::Restart {
            reason: "running but not answering /health".to_owned(),
            changes,
        };
    }
    Action::Nothing
}

/// The fields whose values differ, named as in the fleet file.
fn differences(actual: &PoolManagerSpec, desired: &PoolManagerSpec) -> Vec<Change> {
    let fields = |spec: &PoolManagerSpec| match serde_json::to_value(spec) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => unreachable!("a pool manager spec serializes to an object"),
    };
    let show = |value: Option<&serde_json::Value>| match value {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    let (actual, desired) = (fields(actual), fields(desired));
    desired
        .iter()
        .filter(|(field, value)| actual.get(*field) != Some(value))
        .map(|(field, value)| Change {
            field: field.clone(),
            actual: show(actual.get(field)),
            desired: show(Some(value)),
        })
        .collect()
}

/// How `apply` starts the pool manager: this host's side of its settings.
pub struct Launch {
    /// The `llorch-pool-managerd` executable; its workers are the `llorch-worker` beside it.
    pub program: PathBuf,
    pub token: Option<PathBuf>,
    pub model_base_dir: PathBuf,
    pub catalog_dir: PathBuf,
    pub log_dir: PathBuf,
    pub log_level: String,
    pub use_systemd: bool,
    pub timeout: Duration,
}

/// Carries out `action`; the outcome is reported like a worker's.
pub fn apply(
    run_dir: &RunDir,
    action: &Action,
    desired: Option<&PoolManagerSpec>,
    actual: Option<&ActualPoolManager>,
    launch: &dyn Fn() -> anyhow::Result<Launch>,
) -> WorkerOutcome {
    let result = match (action, desired) {
        (Action::Nothing, _) => Ok(()),
        (Action::Stop { .. }, _) => stop(run_dir, actual),
        (_, Some(spec)) => stop(run_dir, actual)
            .and_then(|()| launch())
            .and_then(|launch| start(run_dir, spec, &launch)),
        (_, None) => unreachable!("only a stop has no spec"),
    };
    WorkerOutcome {
        name: NAME.to_owned(),
        action: action.clone(),
        ok: result.is_ok(),
        error: result.err().map(|error| format!("{error:#}")),
    }
}

/// The `llorch-pool-managerd` arguments for `spec`.
fn arguments(spec: &PoolManagerSpec, launch: &Launch) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--host".into(),
        spec.bind.to_string().into(),
        "--port".into(),
        spec.port.to_string().into(),
        "--advertise-url".into(),
        spec.advertise_url.clone().into(),
        "--host-id".into(),
        spec.host_id.clone().into(),
        "--orchestrator-url".into(),
        spec.orchestrator_url.clone().into(),
        "--model-base-dir".into(),
        launch.model_base_dir.clone().into(),
        "--catalog-dir".into(),
        launch.catalog_dir.clone().into(),
        "--log-dir".into(),
        launch.log_dir.clone().into(),
        "--worker-bin".into(),
        launch
            .program
            .with_file_name(crate::build::WORKER_BINARY)
            .into(),
        "--backends".into(),
        spec.backends
            .iter()
            .map(|backend| backend.as_str())
            .collect::<Vec<_>>()
            .join(",")
            .into(),
    ];
    if let Some(token) = &launch.token {
        args.extend(["--worker-token-file".into(), token.into()]);
    }
    if let Some(budget) = &spec.memory_budget {
        args.extend(["--memory-budget".into(), budget.into()]);
    }
    args
}

/// Starts the pool manager of `spec` (the unit, or a detached daemon named [`NAME`] in
/// `run_dir`) and waits until it answers; the bench starts its own this way too.
pub fn start(run_dir: &RunDir, spec: &PoolManagerSpec, launch: &Launch) -> anyhow::Result<()> {
    let args = arguments(spec, launch);
    let env = vec![("RUST_LOG".to_owned(), launch.log_level.clone())];
    let spec_json = serde_json::to_string(spec).expect("a pool manager spec always serializes");
    if launch.use_systemd {
        let text = units::render_service(
            &format!("llama-orch pool manager of {}", spec.host_id),
            &spec_json,
            &launch.program,
            &args,
            &env,
            // SIGTERM to the pool manager alone: it drains its workers itself, then exits.
            "KillMode=mixed\nKillSignal=SIGTERM\nTimeoutStopSec=40\n",
        );
        units::install_and_start(UNIT, &text)?;
        return wait_health(spec, launch.timeout).map_err(|error| {
            anyhow::anyhow!(
                "{error:#}\n--- journal of {UNIT} ---\n{}",
                units::journal_tail(UNIT)
            )
        });
    }
    let daemon = DaemonSpec {
        name: NAME.to_owned(),
        kind: NAME.to_owned(),
        program: launch.program.clone(),
        args,
        env: env
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect(),
        port: Some(spec.port),
        url: Some(local_url(spec)),
        model: None,
        backend: None,
    };
    let info = run_dir
        .spawn(&daemon)
        .context("starting the pool manager")?;
    if let Err(error) = crate::daemon::wait_healthy(&info, launch.timeout) {
        let _ = run_dir.stop(NAME, STOP_GRACE);
        return Err(error);
    }
    crate::files::write_atomically(&marker(run_dir), &format!("{spec_json}\n"))
}

/// Polls the unit's pool manager until its `/health` answers.
fn wait_health(spec: &PoolManagerSpec, timeout: Duration) -> anyhow::Result<()> {
    llorch_client::wait::wait_for_health(
        &local_url(spec),
        timeout,
        llorch_client::wait::ok_status,
        || Ok(()),
    )
    .map(|_| ())
    .context("the pool manager did not answer")
}

/// Stops the pool manager however it runs (it drains its workers) and forgets it.
fn stop(run_dir: &RunDir, actual: Option<&ActualPoolManager>) -> anyhow::Result<()> {
    let Some(actual) = actual else {
        return Ok(());
    };
    match actual.supervisor {
        Running::Systemd => units::remove(UNIT),
        Running::Detached => {
            if run_dir.get(NAME)?.is_some() {
                run_dir
                    .stop(NAME, STOP_GRACE)
                    .context("stopping the pool manager")?;
            }
            match std::fs::remove_file(marker(run_dir)) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error).context("removing the pool manager's record"),
            }
        }
    }
}

/// The workers of the pool manager the fleet runs on this machine, with its URL; `None` when
/// none runs here. Asked with `token`, this host's worker token (the one `fleet up` placed).
pub fn local_workers(
    run_dir: &RunDir,
    token: Option<&str>,
) -> Option<anyhow::Result<(String, Vec<llorch_api::pool::PoolWorker>)>> {
    let found = observe(run_dir, units::available()).ok().flatten()?;
    let spec = found.spec.filter(|_| found.running)?;
    let url = local_url(&spec);
    Some((|| {
        let mut request = llorch_client::http::blocking_client_for(&url, Duration::from_secs(3))
            .get(format!("{url}/workers"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let workers = request
            .send()
            .and_then(|response| response.error_for_status())
            .and_then(|response| response.json())
            .with_context(|| {
                format!("asking this host's pool manager for its workers (GET {url}/workers)")
            })?;
        Ok((url.clone(), workers))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PoolManagerSpec {
        PoolManagerSpec {
            host_id: "box-a".into(),
            port: 9100,
            bind: "10.0.0.2".parse().unwrap(),
            advertise_url: "http://10.0.0.2:9100".into(),
            orchestrator_url: "http://10.0.0.1:8080".into(),
            memory_budget: Some("2GiB".into()),
            backends: vec![llorch_api::Backend::Cpu],
            models: vec!["gemma3-270m".into()],
        }
    }

    fn running(spec: Option<PoolManagerSpec>, healthy: bool) -> ActualPoolManager {
        ActualPoolManager {
            spec,
            supervisor: Running::Detached,
            running: true,
            healthy,
        }
    }

    #[test]
    fn a_missing_or_stopped_pool_manager_is_started() {
        assert_eq!(
            plan(Some(&spec()), None, "x"),
            Action::Start {
                reason: "new".into()
            }
        );
        let stopped = ActualPoolManager {
            running: false,
            ..running(Some(spec()), false)
        };
        assert_eq!(
            plan(Some(&spec()), Some(&stopped), "x"),
            Action::Start {
                reason: "not running".into()
            }
        );
    }

    #[test]
    fn a_healthy_pool_manager_with_the_same_spec_is_left_alone() {
        assert_eq!(
            plan(Some(&spec()), Some(&running(Some(spec()), true)), "x"),
            Action::Nothing
        );
        assert_eq!(plan(None, None, "x"), Action::Nothing);
    }

    #[test]
    fn changed_settings_restart_it_and_say_what_changed() {
        let mut desired = spec();
        desired.memory_budget = None;
        desired.port = 9200;
        let Action::Restart { changes, .. } =
            plan(Some(&desired), Some(&running(Some(spec()), true)), "x")
        else {
            panic!("a restart expected");
        };
        let described: Vec<String> = changes
            .iter()
            .map(|change| format!("{} {} -> {}", change.field, change.actual, change.desired))
            .collect();
        assert_eq!(described, ["memory_budget 2GiB -> -", "port 9100 -> 9200"]);
        assert!(matches!(
            plan(Some(&spec()), Some(&running(Some(spec()), false)), "x"),
            Action::Restart { .. }
        ));
        assert!(matches!(
            plan(Some(&spec()), Some(&running(None, true)), "x"),
            Action::Restart { .. }
        ));
    }

    #[test]
    fn down_or_a_disabled_pool_manager_stops_it() {
        assert_eq!(
            plan(None, Some(&running(Some(spec()), true)), "fleet down"),
            Action::Stop {
                reason: "fleet down".into()
            }
        );
    }

    #[test]
    fn the_arguments_name_the_host_orcd_budget_and_token() {
        let launch = Launch {
            program: "/opt/llorch/llorch-pool-managerd".into(),
            token: Some("/home/me/.config/llorch/worker-token".into()),
            model_base_dir: "/models".into(),
            catalog_dir: "/catalog.d".into(),
            log_dir: "/run/pool-logs".into(),
            log_level: "info".into(),
            use_systemd: false,
            timeout: Duration::from_secs(1),
        };
        let args: Vec<String> = arguments(&spec(), &launch)
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let after = |flag: &str| {
            let at = args
                .iter()
                .position(|arg| arg == flag)
                .unwrap_or_else(|| panic!("{flag} in {args:?}"));
            args[at + 1].clone()
        };
        assert_eq!(after("--host"), "10.0.0.2");
        assert_eq!(after("--port"), "9100");
        assert_eq!(after("--host-id"), "box-a");
        assert_eq!(after("--orchestrator-url"), "http://10.0.0.1:8080");
        assert_eq!(after("--memory-budget"), "2GiB");
        assert_eq!(after("--worker-bin"), "/opt/llorch/llorch-worker");
        assert_eq!(
            after("--worker-token-file"),
            "/home/me/.config/llorch/worker-token"
        );
        assert_eq!(after("--backends"), "cpu");
        assert_eq!(after("--model-base-dir"), "/models");
    }
}
