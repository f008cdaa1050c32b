//! `cargo xtask fleet`: orcd and every host's workers from one file. `plan` compares the fleet
//! file with what runs, `up` brings every host to it in parallel (each step only when
//! needed), `status` reports desired against actual, `down` stops the fleet's workers.
//! Each host does its own part through `fleet host` (see `host.rs`), run over SSH in its
//! checkout; this side connects, moves checkouts, copies models, starts orcd and waits until
//! orcd lists the workers live.

mod file;
mod host;
mod link;
mod plan;
pub mod pool_manager;
mod resources;
mod units;

use std::{collections::BTreeMap, time::Duration};

use anyhow::{bail, Context as _};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use self::{
    file::{Fleet, FleetHost},
    host::{ApplyReport, ApplyRequest, HostState, StepOutcome, StepReport},
    link::HostLink,
    plan::{WorkerOutcome, WorkerPlan},
};
use crate::{
    daemon::{DaemonSpec, RunDir},
    flags::{FleetCmd, FleetSubcommand},
    output::ExitCode,
    Context,
};

pub fn run(cmd: FleetCmd, cx: &Context) -> anyhow::Result<()> {
    if let FleetSubcommand::Host(host_cmd) = cmd.command {
        return host::run(host_cmd, cx);
    }
    let path = link::expand_home(&file::fleet_path(cmd.fleet, &cx.settings));
    let fleet = file::load(&path, &cx.settings)?;
    match cmd.command {
        FleetSubcommand::Plan { hosts } => plan_fleet(cx, &fleet, &fleet.select(&hosts)?),
        FleetSubcommand::Up {
            hosts,
            force,
            timeout,
        } => up(
            cx,
            &fleet,
            &fleet.select(&hosts)?,
            force,
            Duration::from_secs(timeout),
        ),
        FleetSubcommand::Status { hosts } => status(cx, &fleet, &fleet.select(&hosts)?),
        FleetSubcommand::Down { hosts } => down(cx, &fleet, &fleet.select(&hosts)?),
        FleetSubcommand::Host(_) => unreachable!("handled above"),
    }
}

/// One line of the per-host progress display; without a terminal, step changes and the host's
/// own status lines become plain status lines, each prefixed with the host.
struct HostProgress {
    out: crate::output::Printer,
    host: String,
    bar: ProgressBar,
}

impl HostProgress {
    fn new(
        out: &crate::output::Printer,
        multi: &MultiProgress,
        host: &str,
        width: usize,
    ) -> HostProgress {
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {wide_msg} {elapsed}")
                .expect("static template is valid"),
        );
        bar.set_prefix(format!("{host:<width$}"));
        if out.shows_progress() {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        HostProgress {
            out: out.clone(),
            host: host.to_owned(),
            bar,
        }
    }

    /// A step of this side, or a line the host printed (its build's progress, its steps):
    /// shown on the bar, or printed as a status line, so that a long step on a host (a first
    /// build) is followed from here also without a terminal.
    fn step(&self, message: &str) {
        if self.out.shows_progress() {
            self.bar.set_message(message.to_owned());
        } else {
            self.out.status(format!("{}: {message}", self.host));
        }
    }

    fn finish(&self, message: &str) {
        if self.out.shows_progress() {
            self.bar.finish_with_message(message.to_owned());
        }
    }
}

/// Runs `work` for every host at once, each on its own thread with its own progress line; the
/// results come back in the hosts' order.
fn per_host<T: Send>(
    cx: &Context,
    hosts: &[FleetHost],
    work: impl Fn(&Context, &FleetHost, &HostProgress) -> T + Sync,
) -> Vec<T> {
    let multi = cx.out.multi_progress();
    let width = hosts.iter().map(|host| host.name.len()).max().unwrap_or(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|host| {
                let progress = HostProgress::new(&cx.out, &multi, &host.name, width);
                let work = &work;
                scope.spawn(move || work(cx, host, &progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a host thread panicked"))
            .collect()
    })
}

/// The fleet's desired workers of one host, with the supervisor and token it asks for.
fn request_for(fleet: &Fleet, host: &FleetHost, prepare: bool) -> anyhow::Result<ApplyRequest> {
    let worker_token = match (&fleet.orchestrator.worker_token_file, prepare) {
        (Some(path), true) => Some(link::first_token(&link::expand_home(path), "worker token")?),
        _ => None,
    };
    Ok(ApplyRequest {
        workers: if prepare {
            host.workers.clone()
        } else {
            Vec::new()
        },
        prepare,
        supervisor: host.supervisor,
        worker_token,
        catalog_entries: Vec::new(),
        pool_manager: match prepare {
            true => host.pool_manager.clone(),
            false => None,
        },
    })
}

/// Reads what runs on a host (`fleet host state` there).
fn host_state(
    cx: &Context,
    link: &HostLink,
    verify_models: bool,
    progress: &HostProgress,
) -> anyhow::Result<HostState> {
    let mut args = vec!["fleet", "host", "state"];
    if verify_models {
        args.push("--verify-models");
    }
    link.xtask(cx, &args, None, &mut |line| progress.step(line))?
        .json("`cargo xtask fleet host state` on the host")
}

// ---------------------------------------------------------------------------------------------
// plan

#[derive(Debug, Serialize)]
struct HostPlan {
    host: String,
    ok: bool,
    error: Option<String>,
    workers: Vec<WorkerPlan>,
    /// What `up` does about the host's pool manager.
    pool_manager: Option<plan::Action>,
}

/// What `up` will do about orcd, as `plan` says it.
#[derive(Debug, Serialize)]
struct OrcdPlan {
    url: String,
    /// `nothing` (it answers), `start` (on `listen`, here) or `missing` (`up` fails).
    action: &'static str,
    listen: Option<String>,
}

impl OrcdPlan {
    fn of(fleet: &Fleet) -> OrcdPlan {
        let url = fleet.orchestrator.url.clone();
        let listen = fleet.orchestrator.listen.clone();
        let action = match (orcd_health(&url), &listen) {
            (true, _) => "nothing",
            (false, Some(_)) => "start",
            (false, None) => "missing",
        };
        OrcdPlan {
            url,
            action,
            listen,
        }
    }

    fn describe(&self) -> String {
        match (self.action, &self.listen) {
            ("nothing", _) => format!("orcd: answers at {}; nothing to do", self.url),
            ("start", Some(listen)) => format!(
                "orcd: nothing answers at {}; `fleet up` starts orcd here on {listen}",
                self.url
            ),
            _ => format!(
                "orcd: nothing answers at {} and the fleet file has no `listen` under [orchestrator]: `fleet up` fails until orcd runs there",
                self.url
            ),
        }
    }
}

fn plan_fleet(cx: &Context, fleet: &Fleet, hosts: &[FleetHost]) -> anyhow::Result<()> {
    let orcd = OrcdPlan::of(fleet);
    let plans = per_host(cx, hosts, |cx, host, progress| {
        progress.step("reading what runs there");
        let result = HostLink::for_status(cx, &host.name).and_then(|link| {
            link.check_reachable(cx)?;
            host_state(cx, &link, false, progress)
        });
        progress.finish("");
        match result {
            Ok(state) => HostPlan {
                host: host.name.clone(),
                ok: true,
                error: None,
                workers: plan::plan_host(&host.workers, &state.workers, plan::STOP_STRAY),
                pool_manager: Some(pool_manager::plan(
                    host.pool_manager.as_ref(),
                    state.pool_manager.as_ref(),
                    plan::STOP_STRAY,
                )),
            },
            Err(error) => HostPlan {
                host: host.name.clone(),
                ok: false,
                error: Some(format!("{error:#}")),
                workers: Vec::new(),
                pool_manager: None,
            },
        }
    });
    let changes = plans
        .iter()
        .flat_map(|plan| &plan.workers)
        .filter(|worker| !worker.action.is_nothing())
        .count()
        + plans
            .iter()
            .filter_map(|plan| plan.pool_manager.as_ref())
            .filter(|action| !action.is_nothing())
            .count()
        + usize::from(orcd.action == "start");
    let failed = plans.iter().filter(|plan| !plan.ok).count();
    if cx.out.json() {
        cx.out.print_json(&serde_json::json!({
            "orchestrator": orcd,
            "hosts": plans,
            "changes": changes,
            "ok": failed == 0,
        }))?;
    } else {
        let paint = cx.out.paint();
        cx.out.println(match orcd.action {
            "nothing" => paint.dim(&orcd.describe()),
            "start" => paint.yellow(&orcd.describe()),
            _ => paint.red(&orcd.describe()),
        });
        for plan in &plans {
            cx.out.println(paint.bold(&plan.host));
            if let Some(error) = &plan.error {
                cx.out.println(format!(
                    "  {} {}",
                    paint.red("unreachable:"),
                    error.replace('\n', "\n    ")
                ));
            }
            let width = plan
                .workers
                .iter()
                .map(|worker| worker.name.len())
                .max()
                .unwrap_or(0);
            let paint_action = |action: &plan::Action| match action {
                plan::Action::Nothing => paint.dim(&action.describe()),
                plan::Action::Stop { .. } => paint.red(&action.describe()),
                _ => paint.yellow(&action.describe()),
            };
            let width = width.max(pool_manager::NAME.len());
            if let Some(action) = &plan.pool_manager {
                cx.out.println(format!(
                    "  {:<width$}  {}",
                    pool_manager::NAME,
                    paint_action(action)
                ));
            }
            for worker in &plan.workers {
                cx.out.println(format!(
                    "  {:<width$}  {}",
                    worker.name,
                    paint_action(&worker.action)
                ));
            }
        }
        match changes {
            0 => cx
                .out
                .status("nothing to do: what runs matches the fleet file"),
            count => cx.out.status(format!(
                "{count} change(s); `cargo xtask fleet up` makes them"
            )),
        }
    }
    if failed > 0 {
        return Err(ExitCode(1).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// up

#[derive(Debug, Serialize)]
struct HostResult {
    host: String,
    ok: bool,
    /// Why the host failed: the first failed step, worker or registration.
    error: Option<String>,
    steps: Vec<StepReport>,
    workers: Vec<WorkerOutcome>,
    pool_manager: Option<WorkerOutcome>,
}

impl HostResult {
    fn failed(host: &str, steps: Vec<StepReport>, error: anyhow::Error) -> HostResult {
        HostResult {
            host: host.to_owned(),
            ok: false,
            error: Some(format!("{error:#}")),
            steps,
            workers: Vec::new(),
            pool_manager: None,
        }
    }

    /// From a host's report: failed at its first failed step, worker or pool manager.
    fn of_report(host: &str, steps: Vec<StepReport>, report: ApplyReport) -> HostResult {
        let error = steps
            .iter()
            .find(|step| step.outcome == StepOutcome::Failed)
            .map(|step| format!("{}: {}", step.step, step.detail))
            .or_else(|| {
                report
                    .workers
                    .iter()
                    .chain(&report.pool_manager)
                    .find(|worker| !worker.ok)
                    .map(|worker| {
                        format!(
                            "{} {}: {}",
                            match worker.name == pool_manager::NAME {
                                true => "the",
                                false => "worker",
                            },
                            worker.name,
                            worker.error.as_deref().unwrap_or("failed")
                        )
                    })
            });
        HostResult {
            host: host.to_owned(),
            ok: error.is_none(),
            error,
            steps,
            workers: report.workers,
            pool_manager: report.pool_manager,
        }
    }

    fn changed(&self) -> bool {
        self.steps
            .iter()
            .any(|step| step.outcome == StepOutcome::Changed)
            || self
                .workers
                .iter()
                .chain(&self.pool_manager)
                .any(|worker| !worker.action.is_nothing())
    }
}

fn up(
    cx: &Context,
    fleet: &Fleet,
    hosts: &[FleetHost],
    force: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let orcd = ensure_orcd(cx, fleet)?;
    let commit = link::local_commit(cx)?;
    let mut results = per_host(cx, hosts, |cx, host, progress| {
        let result = up_host(cx, fleet, host, &commit, force, timeout, progress);
        progress.finish(if result.ok { "done" } else { "FAILED" });
        result
    });
    wait_live(cx, fleet, hosts, &mut results, timeout)?;
    wait_hosts_live(cx, fleet, hosts, &mut results, timeout);
    report_hosts(cx, "up", Some(&orcd), &results)
}

#[allow(clippy::too_many_arguments)]
fn up_host(
    cx: &Context,
    fleet: &Fleet,
    host: &FleetHost,
    commit: &str,
    force: bool,
    timeout: Duration,
    progress: &HostProgress,
) -> HostResult {
    let mut steps = Vec::new();
    progress.step("connecting");
    let link = match HostLink::new(cx, &host.name).and_then(|link| {
        link.check_reachable(cx)?;
        Ok(link)
    }) {
        Ok(link) => link,
        Err(error) => return HostResult::failed(&host.name, steps, error),
    };
    progress.step("checking the checkout");
    match link::sync_checkout(cx, &link, commit, force) {
        Ok(step) => steps.push(step),
        Err(error) => return HostResult::failed(&host.name, steps, error.context("checkout")),
    }
    let request = match request_for(fleet, host, true).and_then(|mut request| {
        let entries = crate::models::user_entries_for(cx, request.models())?;
        request.catalog_entries = entries;
        Ok(request)
    }) {
        Ok(request) => request,
        Err(error) => return HostResult::failed(&host.name, steps, error),
    };
    let apply = |progress: &HostProgress| -> anyhow::Result<ApplyReport> {
        let input = serde_json::to_vec(&request).expect("a request always serializes");
        let timeout = timeout.as_secs().to_string();
        link.xtask(
            cx,
            &["fleet", "host", "apply", "--timeout", &timeout],
            Some(&input),
            &mut |line| progress.step(line),
        )?
        .json("`cargo xtask fleet host apply` on the host")
    };
    progress.step("setup, build, models, token, workers");
    let mut report = match apply(progress) {
        Ok(report) => report,
        Err(error) => return HostResult::failed(&host.name, steps, error),
    };
    if !report.missing_models.is_empty() {
        for missing in std::mem::take(&mut report.missing_models) {
            progress.step(&format!("copying model {} from here", missing.id));
            match link::copy_model(cx, &link, &missing.id, &missing.dir) {
                Ok(step) => report.steps.push(step),
                Err(error) => {
                    steps.append(&mut report.steps);
                    return HostResult::failed(
                        &host.name,
                        steps,
                        error.context(format!(
                            "model `{}` (the host could not download it: {})",
                            missing.id, missing.error
                        )),
                    );
                }
            }
        }
        progress.step("starting the workers that waited for their model");
        match apply(progress) {
            Ok(second) => {
                let started: Vec<WorkerOutcome> = second
                    .workers
                    .into_iter()
                    .filter(|worker| !worker.action.is_nothing())
                    .collect();
                report
                    .workers
                    .retain(|worker| !started.iter().any(|other| other.name == worker.name));
                report.workers.extend(started);
            }
            Err(error) => {
                steps.append(&mut report.steps);
                return HostResult::failed(&host.name, steps, error);
            }
        }
    }
    steps.append(&mut report.steps);
    HostResult::of_report(&host.name, steps, report)
}

/// What `up` or `down` did about orcd.
#[derive(Debug, Serialize)]
struct OrcdOutcome {
    url: String,
    started: bool,
    /// `down` stopped the orcd that `up` had started here.
    stopped: bool,
    pid: Option<u32>,
}

/// Uses the orcd answering at the fleet's URL, else starts one here when `listen` is set.
fn ensure_orcd(cx: &Context, fleet: &Fleet) -> anyhow::Result<OrcdOutcome> {
    let url = &fleet.orchestrator.url;
    if orcd_health(url) {
        return Ok(OrcdOutcome {
            url: url.clone(),
            started: false,
            stopped: false,
            pid: None,
        });
    }
    let Some(listen) = &fleet.orchestrator.listen else {
        bail!(
            "orcd does not answer at {url}\nhint: start it there, or set `listen` under [orchestrator] in {} so that `fleet up` starts it on this machine",
            fleet.path.display()
        );
    };
    cx.out.status(format!("starting orcd on {listen}"));
    let program = orcd_program(cx)?;
    let mut args: Vec<std::ffi::OsString> = vec!["--listen".into(), listen.into()];
    if let Some(path) = &fleet.orchestrator.api_token_file {
        args.extend(["--api-token-file".into(), link::expand_home(path).into()]);
    }
    if let Some(path) = &fleet.orchestrator.worker_token_file {
        args.extend(["--worker-token-file".into(), link::expand_home(path).into()]);
    }
    if let Some(path) = &fleet.orchestrator.model_policies {
        args.extend(["--model-policies".into(), link::expand_home(path).into()]);
    }
    if let Some(secs) = fleet.orchestrator.heartbeat_timeout_secs {
        args.extend(["--heartbeat-timeout-secs".into(), secs.to_string().into()]);
    }
    let spec = DaemonSpec {
        name: crate::stack::ORCD_DAEMON.to_owned(),
        kind: crate::stack::ORCD_DAEMON.to_owned(),
        program,
        args,
        env: vec![("RUST_LOG".into(), cx.settings.log_level.clone().into())],
        port: listen.rsplit(':').next().and_then(|port| port.parse().ok()),
        url: Some(url.clone()),
        model: None,
        backend: None,
    };
    let run_dir = RunDir::from_env()?;
    let info = run_dir.spawn(&spec).context("starting orcd")?;
    if let Err(error) = crate::daemon::wait_healthy(&info, Duration::from_secs(30)) {
        let _ = run_dir.stop(&info.name, Duration::from_secs(5));
        return Err(error.context(format!("starting orcd on {listen}")));
    }
    cx.out.status(format!(
        "orcd ready at {url} (pid {}, log {})",
        info.pid,
        info.log_path.display()
    ));
    Ok(OrcdOutcome {
        url: url.clone(),
        started: true,
        stopped: false,
        pid: Some(info.pid),
    })
}

/// The orcd `up` starts: LLORCH_BIN_DIR's when it holds one (as `pool worker spawn` finds its
/// worker), else the release build, built now.
fn orcd_program(cx: &Context) -> anyhow::Result<std::path::PathBuf> {
    if let Some(dir) = crate::config::process_env("LLORCH_BIN_DIR") {
        let program = std::path::Path::new(&dir).join(crate::build::ORCD_BINARY);
        if program.is_file() {
            cx.out
                .status(format!("using {} (LLORCH_BIN_DIR)", program.display()));
            return Ok(program);
        }
    }
    crate::build::CargoBuild::new(llorch_api::Backend::Cpu, true)
        .package(crate::build::ORCD_PACKAGE)
        .run(cx)?
        .executable(crate::build::ORCD_BINARY)
}

/// After `down` of the whole fleet: stops the orcd that `up` started here (the run
/// directory's orcd at the fleet's URL, when the fleet file lets `up` start one).
fn stop_started_orcd(fleet: &Fleet) -> anyhow::Result<Option<OrcdOutcome>> {
    if fleet.orchestrator.listen.is_none() {
        return Ok(None);
    }
    let run_dir = RunDir::from_env()?;
    let url = &fleet.orchestrator.url;
    let Some(info) = run_dir
        .get(crate::stack::ORCD_DAEMON)?
        .filter(|info| info.url.as_deref().map(|own| own.trim_end_matches('/')) == Some(url))
    else {
        return Ok(None);
    };
    run_dir
        .stop(&info.name, Duration::from_secs(10))
        .with_context(|| format!("stopping orcd (pid {}) at {url}", info.pid))?;
    Ok(Some(OrcdOutcome {
        url: url.clone(),
        started: false,
        stopped: true,
        pid: Some(info.pid),
    }))
}

fn orcd_health(url: &str) -> bool {
    llorch_client::wait::is_healthy(url, Duration::from_secs(3))
}

/// A client of the fleet's orcd with the fleet file's client token.
fn orcd_client(fleet: &Fleet) -> anyhow::Result<llorch_client::blocking::OrcdClient> {
    let token = match &fleet.orchestrator.api_token_file {
        Some(path) => Some(link::first_token(&link::expand_home(path), "API token")?),
        None => None,
    };
    let client = llorch_client::OrcdClient::new(&fleet.orchestrator.url, token.as_deref())
        .with_token_hint(format!(
            "check `api_token_file` under [orchestrator] in {}",
            fleet.path.display()
        ))
        .with_request_timeout(Duration::from_secs(5));
    Ok(llorch_client::blocking::OrcdClient::new(client))
}

/// orcd's `/workers`, with the fleet's client token.
fn orcd_workers(fleet: &Fleet) -> anyhow::Result<Vec<llorch_api::WorkerInfo>> {
    orcd_client(fleet)?
        .workers()
        .context("asking orcd for its workers")
}

/// orcd's `/v2/hosts`: the pool managers and their facts.
fn orcd_hosts(fleet: &Fleet) -> anyhow::Result<Vec<llorch_api::pool::HostInfo>> {
    orcd_client(fleet)?
        .get_json("/v2/hosts")
        .context("asking orcd for its hosts")
}

/// Waits until orcd lists the pool manager of every host that came up as a live host; a host
/// whose pool manager never registers is marked failed.
fn wait_hosts_live(
    cx: &Context,
    fleet: &Fleet,
    hosts: &[FleetHost],
    results: &mut [HostResult],
    timeout: Duration,
) {
    let expected: Vec<(usize, &file::PoolManagerSpec)> = hosts
        .iter()
        .enumerate()
        .filter(|(index, _)| results[*index].ok)
        .filter_map(|(index, host)| host.pool_manager.as_ref().map(|spec| (index, spec)))
        .collect();
    if expected.is_empty() {
        return;
    }
    let spinner = cx.out.spinner(format!(
        "waiting until orcd lists {} pool manager(s) live",
        expected.len()
    ));
    let is_live = |listed: &[llorch_api::pool::HostInfo], spec: &file::PoolManagerSpec| {
        listed.iter().any(|host| {
            host.host_id == spec.host_id && host.state == llorch_api::pool::HostState::Live
        })
    };
    let what = format!("{} pool manager(s) live", expected.len());
    let waited = orcd_client(fleet).map(|client| {
        client.wait_for("/v2/hosts", &what, timeout, |listed: &Vec<_>| {
            expected.iter().all(|(_, spec)| is_live(listed, spec))
        })
    });
    let (listed, error) = match waited {
        Ok(Ok(listed)) => (listed, None),
        Ok(Err(timed_out)) => (timed_out.last, timed_out.last_error),
        Err(error) => (Vec::new(), Some(format!("{error:#}"))),
    };
    spinner.finish_and_clear();
    for (index, spec) in expected {
        if is_live(&listed, spec) {
            continue;
        }
        let result = &mut results[index];
        result.ok = false;
        result.error.get_or_insert(format!(
            "the pool manager is not a live host in orcd after {} s ({})\nhint: its log is {}.log in the host's run directory; it must reach {} and orcd must reach {}",
            timeout.as_secs(),
            error.as_deref().unwrap_or("orcd does not list it"),
            pool_manager::NAME,
            spec.orchestrator_url,
            spec.advertise_url
        ));
    }
}

/// Waits until orcd lists every worker of the hosts that came up as live at its advertised
/// URL; a host with a worker that never gets there is marked failed.
fn wait_live(
    cx: &Context,
    fleet: &Fleet,
    hosts: &[FleetHost],
    results: &mut [HostResult],
    timeout: Duration,
) -> anyhow::Result<()> {
    let expected: Vec<(usize, &file::WorkerSpec)> = hosts
        .iter()
        .enumerate()
        .filter(|(index, _)| results[*index].ok)
        .flat_map(|(index, host)| host.workers.iter().map(move |spec| (index, spec)))
        .collect();
    if expected.is_empty() {
        return Ok(());
    }
    let spinner = cx.out.spinner(format!(
        "waiting until orcd lists {} worker(s) live",
        expected.len()
    ));
    let is_live = |workers: &[llorch_api::WorkerInfo], spec: &file::WorkerSpec| {
        workers.iter().any(|worker| {
            worker.worker_id == spec.name
                && worker.state == llorch_api::WorkerState::Live
                && worker.url.trim_end_matches('/') == spec.advertise_url
        })
    };
    let what = format!("{} worker(s) live", expected.len());
    let workers = orcd_client(fleet)?
        .wait_until_live(&what, timeout, |workers| {
            expected.iter().all(|(_, spec)| is_live(workers, spec))
        })
        .unwrap_or_else(|not_live| not_live.last);
    spinner.finish_and_clear();
    for (index, spec) in expected {
        if is_live(&workers, spec) {
            continue;
        }
        let seen = match workers.iter().find(|worker| worker.worker_id == spec.name) {
            Some(worker) => format!("orcd lists it as {:?} at {}", worker.state, worker.url),
            None => "orcd does not list it".to_owned(),
        };
        let result = &mut results[index];
        result.ok = false;
        result.error.get_or_insert(format!(
            "worker {} is not live in orcd after {} s: {seen}\nhint: read its log on the host (`cargo xtask pool worker logs {} --host {}`); it must reach {} and orcd must reach {}",
            spec.name,
            timeout.as_secs(),
            spec.name,
            crate::remote::ssh::shell_word(&result.host),
            spec.orchestrator_url,
            spec.advertise_url
        ));
    }
    Ok(())
}

/// `  NAME  ACTION`, and why it failed on the lines below.
fn outcome_line(paint: &crate::output::Paint, outcome: &WorkerOutcome) -> String {
    format!(
        "  {}  {}{}",
        outcome.name,
        outcome.action.describe(),
        outcome
            .error
            .as_deref()
            .map(|error| format!(": {}", paint.red("failed"))
                + "\n    "
                + &error.replace('\n', "\n    "))
            .unwrap_or_default()
    )
}

/// The summary of `up` and `down`: every host, what changed, every failure and why.
fn report_hosts(
    cx: &Context,
    command: &str,
    orcd: Option<&OrcdOutcome>,
    results: &[HostResult],
) -> anyhow::Result<()> {
    let failed: Vec<&HostResult> = results.iter().filter(|result| !result.ok).collect();
    let changed = results.iter().any(HostResult::changed)
        || orcd.is_some_and(|orcd| orcd.started || orcd.stopped);
    if cx.out.json() {
        cx.out.print_json(&serde_json::json!({
            "ok": failed.is_empty(),
            "changed": changed,
            "orchestrator": orcd,
            "hosts": results,
        }))?;
    } else {
        let paint = cx.out.paint();
        if let Some(orcd) = orcd {
            cx.out.println(match (orcd.started, orcd.stopped) {
                (true, _) => format!("orcd: started at {}", orcd.url),
                (_, true) => format!(
                    "orcd: stopped at {} (pid {}; `fleet up` had started it)",
                    orcd.url,
                    orcd.pid.unwrap_or_default()
                ),
                _ => format!("orcd: answers at {}", orcd.url),
            });
        }
        for result in results {
            let steps: Vec<String> = result
                .steps
                .iter()
                .map(|step| {
                    let outcome = match step.outcome {
                        StepOutcome::Unchanged => "unchanged",
                        StepOutcome::Changed => "changed",
                        StepOutcome::Failed => "FAILED",
                    };
                    format!("{} {outcome}", step.step)
                })
                .collect();
            let head = match result.ok {
                true => paint.green("ok"),
                false => paint.red("FAILED"),
            };
            cx.out.println(format!(
                "{}: {head}  {}",
                paint.bold(&result.host),
                steps.join(", ")
            ));
            if let Some(outcome) = result
                .pool_manager
                .as_ref()
                .filter(|outcome| !outcome.action.is_nothing() || !outcome.ok)
            {
                cx.out.println(outcome_line(&paint, outcome));
            }
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for worker in &result.workers {
                let kind = match worker.action {
                    _ if !worker.ok => "failed",
                    plan::Action::Start { .. } => "started",
                    plan::Action::Restart { .. } => "restarted",
                    plan::Action::Stop { .. } => "stopped",
                    plan::Action::Nothing => "unchanged",
                };
                *counts.entry(kind).or_default() += 1;
                if !worker.action.is_nothing() || !worker.ok {
                    cx.out.println(outcome_line(&paint, worker));
                }
            }
            if !counts.is_empty() {
                cx.out.println(format!(
                    "  workers: {}",
                    counts
                        .iter()
                        .map(|(kind, count)| format!("{count} {kind}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(error) = &result.error {
                cx.out.println(format!("  {}", error.replace('\n', "\n  ")));
            }
        }
        if failed.is_empty() {
            cx.out.status(match (changed, command) {
                (false, _) => "nothing to do: every host already matches the fleet file".to_owned(),
                (true, _) => format!("fleet {command}: {} host(s) done", results.len()),
            });
        } else {
            cx.out.status(paint.red(&format!(
                "fleet {command}: {} of {} host(s) failed: {}",
                failed.len(),
                results.len(),
                failed.iter().map(|result| result.host.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ExitCode(1).into())
    }
}

// ---------------------------------------------------------------------------------------------
// down

fn down(cx: &Context, fleet: &Fleet, hosts: &[FleetHost]) -> anyhow::Result<()> {
    let results = per_host(cx, hosts, |cx, host, progress| {
        progress.step("stopping the fleet's workers");
        let result = (|| -> anyhow::Result<ApplyReport> {
            let link = HostLink::new(cx, &host.name)?;
            link.check_reachable(cx)?;
            let request = request_for(fleet, host, false)?;
            let input = serde_json::to_vec(&request).expect("a request always serializes");
            link.xtask(cx, &["fleet", "host", "apply"], Some(&input), &mut |line| {
                progress.step(line)
            })?
            .json("`cargo xtask fleet host apply` on the host")
        })();
        progress.finish("");
        match result {
            Ok(mut report) => {
                let steps = std::mem::take(&mut report.steps);
                HostResult::of_report(&host.name, steps, report)
            }
            Err(error) => HostResult::failed(&host.name, Vec::new(), error),
        }
    });
    // Only when the whole fleet went down: a host taken out alone leaves orcd to the others.
    let orcd = match hosts.len() == fleet.hosts.len() {
        true => stop_started_orcd(fleet)?,
        false => None,
    };
    report_hosts(cx, "down", orcd.as_ref(), &results)
}

// ---------------------------------------------------------------------------------------------
// status

/// One desired (or stray) worker as `status` reports it.
#[derive(Debug, Serialize)]
struct WorkerStatus {
    host: String,
    worker: String,
    desired: bool,
    host_reachable: bool,
    /// `None` when the host could not be asked.
    running: Option<bool>,
    registered: bool,
    slots_busy: Option<u32>,
    slots_total: Option<u32>,
    tokens_per_second: Option<f64>,
    model_verified: Option<bool>,
    /// Settings that differ from the fleet file.
    differs: Vec<String>,
    ok: bool,
    problem: Option<String>,
}

fn status(cx: &Context, fleet: &Fleet, hosts: &[FleetHost]) -> anyhow::Result<()> {
    let states = per_host(cx, hosts, |cx, host, progress| {
        progress.step("reading what runs there");
        let result = HostLink::for_status(cx, &host.name).and_then(|link| {
            link.check_reachable(cx)?;
            host_state(cx, &link, true, progress)
        });
        progress.finish("");
        result
    });
    let (orcd_workers, orcd_error) = match orcd_workers(fleet) {
        Ok(workers) => (workers, None),
        Err(error) => (Vec::new(), Some(format!("{error:#}"))),
    };
    let mut rows = Vec::new();
    for (host, state) in hosts.iter().zip(&states) {
        let actual = state
            .as_ref()
            .map(|state| state.workers.as_slice())
            .unwrap_or_default();
        for spec in &host.workers {
            let found = actual.iter().find(|worker| worker.name == spec.name);
            let registered = orcd_workers.iter().find(|worker| {
                worker.worker_id == spec.name && worker.state == llorch_api::WorkerState::Live
            });
            let differs: Vec<String> = found
                .and_then(|worker| worker.spec.as_ref())
                .map(|running| {
                    plan::differences(running, spec)
                        .into_iter()
                        .map(|change| {
                            format!("{} {} -> {}", change.field, change.actual, change.desired)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let running = found.is_some_and(|worker| worker.running && worker.health.is_some());
            let problem = match (&state, found) {
                (Err(error), _) => Some(format!(
                    "host unreachable: {}",
                    error.to_string().lines().next().unwrap_or("")
                )),
                (Ok(_), None) => Some("not started".to_owned()),
                (Ok(_), Some(_)) if !running => Some("not running".to_owned()),
                (Ok(_), Some(_)) if !differs.is_empty() => {
                    Some(format!("differs: {}", differs.join(", ")))
                }
                (Ok(_), Some(worker)) if worker.model_verified == Some(false) => Some(format!(
                    "model {} does not match its SHA-256",
                    spec.launch.model
                )),
                (Ok(_), Some(_)) if registered.is_none() => Some(match &orcd_error {
                    Some(error) => format!("orcd: {}", error.lines().next().unwrap_or("")),
                    None => "not live in orcd".to_owned(),
                }),
                _ => None,
            };
            rows.push(WorkerStatus {
                host: host.name.clone(),
                worker: spec.name.clone(),
                desired: true,
                host_reachable: state.is_ok(),
                running: state.is_ok().then_some(running),
                registered: registered.is_some(),
                slots_busy: registered.map(|worker| worker.slots_busy),
                slots_total: registered.map(|worker| worker.slots_total),
                tokens_per_second: found.and_then(|worker| worker.tokens_per_second),
                model_verified: found.and_then(|worker| worker.model_verified),
                differs,
                ok: problem.is_none(),
                problem,
            });
        }
        for stray in actual.iter().filter(|worker| {
            !worker.started_by_pool && !host.workers.iter().any(|spec| spec.name == worker.name)
        }) {
            rows.push(WorkerStatus {
                host: host.name.clone(),
                worker: stray.name.clone(),
                desired: false,
                host_reachable: true,
                running: Some(stray.running),
                registered: orcd_workers
                    .iter()
                    .any(|worker| worker.worker_id == stray.name),
                slots_busy: None,
                slots_total: None,
                tokens_per_second: stray.tokens_per_second,
                model_verified: stray.model_verified,
                differs: Vec::new(),
                ok: false,
                problem: Some("not in the fleet file (`fleet up` stops it)".to_owned()),
            });
        }
    }
    let resources = match (
        hosts.iter().any(|host| host.pool_manager.is_some()),
        &orcd_error,
    ) {
        (false, _) => resources::rows(hosts, &[], None),
        (true, Some(error)) => resources::rows(hosts, &[], Some(error)),
        (true, None) => match orcd_hosts(fleet) {
            Ok(listed) => resources::rows(hosts, &listed, None),
            Err(error) => resources::rows(hosts, &[], Some(&format!("{error:#}"))),
        },
    };
    let ok = rows.iter().all(|row| row.ok) && resources.iter().all(|row| row.problem.is_none());
    if cx.out.json() {
        cx.out.print_json(&serde_json::json!({
            "ok": ok,
            "orchestrator": { "url": fleet.orchestrator.url, "error": orcd_error },
            "workers": rows,
            "hosts": resources,
        }))?;
    } else {
        let paint = cx.out.paint();
        if let Some(error) = &orcd_error {
            cx.out.println(format!("{} {error}", paint.red("orcd:")));
        }
        cx.out.println(paint.bold(&format!(
            "{:<14} {:<28} {:<8} {:<10} {:>7} {:>7} {:<8} {}",
            "HOST", "WORKER", "RUNNING", "REGISTERED", "SLOTS", "TOK/S", "MODEL", "PROBLEM"
        )));
        let yes_no = |value: bool| if value { "yes" } else { "no" };
        let known = |value: Option<bool>| value.map_or("unknown", yes_no);
        for row in &rows {
            let slots = match (row.slots_busy, row.slots_total) {
                (Some(busy), Some(total)) => format!("{busy}/{total}"),
                _ => "-".to_owned(),
            };
            let model = match row.model_verified {
                Some(true) => "verified",
                Some(false) => "BAD",
                None => "-",
            };
            let problem = match &row.problem {
                Some(problem) => paint.red(problem),
                None => paint.green("ok"),
            };
            cx.out.println(format!(
                "{:<14} {:<28} {:<8} {:<10} {:>7} {:>7} {:<8} {problem}",
                row.host,
                row.worker,
                known(row.running),
                yes_no(row.registered),
                slots,
                row.tokens_per_second
                    .map_or("-".to_owned(), |speed| format!("{speed:.1}")),
                model,
            ));
        }
        for (row, line) in resources
            .iter()
            .filter(|row| row.pool_manager)
            .zip(resources::describe(&resources))
        {
            cx.out.println(match &row.problem {
                Some(_) => paint.red(&line),
                None => line,
            });
        }
    }
    if ok {
        Ok(())
    } else {
        Err(ExitCode(1).into())
    }
}
