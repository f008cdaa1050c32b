//! `pool worker spawn|list|stop|logs`: llorch-worker processes on this machine, run detached
//! through [`crate::daemon`] so they outlive the command (and the SSH session) that started them.

use std::{
    ffi::OsString,
    io::{Read, Seek, SeekFrom, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::{
    daemon::{self, DaemonInfo, DaemonSpec, RunDir},
    flags::PoolWorkerCmd,
};

/// The `kind` of worker daemons in the run directory.
pub const WORKER_KIND: &str = "worker";
/// How long `stop` waits after SIGTERM before SIGKILL: enough to finish a token and deregister.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn run(cmd: PoolWorkerCmd, cx: &crate::Context) -> anyhow::Result<()> {
    let run_dir = RunDir::from_env()?;
    match cmd {
        PoolWorkerCmd::Spawn {
            backend,
            model,
            gpu,
            port,
            bind,
            advertise_url,
            id,
            orchestrator_url,
            bin_dir,
            timeout,
            worker_args,
        } => {
            let launch = WorkerLaunch {
                backend,
                model,
                program: locate_worker(bin_dir, &cx.settings, backend)?,
                gpu,
                port,
                bind,
                advertise_url,
                id,
                orchestrator_url: orchestrator_url
                    .unwrap_or_else(|| cx.settings.orchestrator_url.clone()),
                extra_args: worker_args.into_iter().map(OsString::from).collect(),
            };
            let info = start_worker(cx, &run_dir, &launch, Duration::from_secs(timeout))?;
            print_started(cx, &info)
        }
        PoolWorkerCmd::List => list(cx, &run_dir),
        PoolWorkerCmd::Stop { id } => stop(cx, &run_dir, &id),
        PoolWorkerCmd::Logs { id, lines, follow } => logs(cx, &run_dir, &id, lines, follow),
    }
}

/// Everything needed to start one local worker; `pool worker spawn`, `up` and `bench` fill it.
#[derive(Debug, Clone)]
pub struct WorkerLaunch {
    pub backend: llorch_api::Backend,
    /// Catalog id (or GGUF path).
    pub model: String,
    /// The llorch-worker executable.
    pub program: PathBuf,
    pub gpu: Option<u32>,
    /// `None` or 0: a free port chosen here.
    pub port: Option<u16>,
    pub bind: IpAddr,
    pub advertise_url: Option<String>,
    /// Default: `worker-<hostname>-<port>`.
    pub id: Option<String>,
    pub orchestrator_url: String,
    /// Further llorch-worker arguments.
    pub extra_args: Vec<OsString>,
}

impl WorkerLaunch {
    /// The configured backend and orchestrator, loopback, and the release build's worker.
    pub fn defaults(cx: &crate::Context) -> WorkerLaunch {
        WorkerLaunch {
            backend: cx.settings.default_backend,
            model: String::new(),
            program: cx.settings.repo_root.join("target/release/llorch-worker"),
            gpu: None,
            port: None,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertise_url: None,
            id: None,
            orchestrator_url: cx.settings.orchestrator_url.clone(),
            extra_args: Vec::new(),
        }
    }

    fn into_spec(self, cx: &crate::Context) -> anyhow::Result<DaemonSpec> {
        let port = match self.port {
            Some(port) if port != 0 => port,
            _ => free_port(self.bind)?,
        };
        let id = self
            .id
            .unwrap_or_else(|| format!("worker-{}-{port}", hostname_label()));
        daemon::validate_name(&id)?;
        let url = format!(
            "http://{}",
            SocketAddr::new(reachable_address(self.bind), port)
        );
        let mut args: Vec<OsString> = vec![
            "--model".into(),
            self.model.clone().into(),
            "--backend".into(),
            self.backend.as_str().into(),
            "--host".into(),
            self.bind.to_string().into(),
            "--port".into(),
            port.to_string().into(),
            "--worker-id".into(),
            id.clone().into(),
            "--orchestrator-url".into(),
            self.orchestrator_url.into(),
            "--model-base-dir".into(),
            cx.settings.model_base_dir.clone().into(),
        ];
        if let Some(gpu) = self.gpu {
            args.extend(["--gpu".into(), gpu.to_string().into()]);
        }
        if let Some(advertise_url) = self.advertise_url {
            args.extend(["--advertise-url".into(), advertise_url.into()]);
        }
        // A catalog chosen in the config file or LLORCH_CATALOG would not reach the worker
        // otherwise: daemons get no LLORCH_* variable from the caller.
        if cx.settings.origins.get("catalog_path") != Some(&crate::config::Origin::Default) {
            args.extend(["--catalog".into(), cx.settings.catalog_path.clone().into()]);
        }
        args.extend(self.extra_args);
        Ok(DaemonSpec {
            name: id,
            kind: WORKER_KIND.to_owned(),
            program: self.program,
            args,
            env: vec![("RUST_LOG".into(), cx.settings.log_level.clone().into())],
            port: Some(port),
            url: Some(url),
            model: Some(self.model),
            backend: Some(self.backend.to_string()),
        })
    }
}

impl WorkerLaunch {
    /// The program, arguments and environment this launch runs, for supervisors other than
    /// the run directory (`fleet` writes them into a systemd unit).
    pub fn into_daemon_spec(self, cx: &crate::Context) -> anyhow::Result<DaemonSpec> {
        self.into_spec(cx)
    }
}

/// Starts a worker detached and waits until its `/health` says ready; one that never gets
/// ready is stopped again (its log stays) and the error carries the log's tail.
pub fn start_worker(
    cx: &crate::Context,
    run_dir: &RunDir,
    launch: &WorkerLaunch,
    timeout: Duration,
) -> anyhow::Result<DaemonInfo> {
    if !launch.program.is_file() {
        bail!(
            "starting a worker: {} does not exist\nhint: build it with `cargo xtask build worker {}`",
            launch.program.display(),
            launch.backend
        );
    }
    let spec = launch.clone().into_spec(cx)?;
    let spinner = cx.out.spinner(format!(
        "starting {} ({} on {})",
        spec.name, launch.model, launch.backend
    ));
    let info = run_dir
        .spawn(&spec)
        .with_context(|| format!("starting worker `{}`", spec.name))?;
    let ready = daemon::wait_healthy(&info, timeout);
    spinner.finish_and_clear();
    if let Err(error) = ready {
        if let Err(stop_error) = run_dir.stop(&info.name, STOP_GRACE) {
            cx.out.warn(format!("{stop_error:#}"));
        }
        return Err(error);
    }
    Ok(info)
}

fn print_started(cx: &crate::Context, info: &DaemonInfo) -> anyhow::Result<()> {
    let health = info
        .url
        .as_deref()
        .and_then(|url| reqwest::blocking::get(format!("{url}/health")).ok())
        .and_then(|response| response.json::<llorch_api::WorkerHealth>().ok());
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "worker_id": info.name,
            "port": info.port,
            "pid": info.pid,
            "url": info.url,
            "model": info.model,
            "backend": info.backend,
            "log_path": info.log_path,
            "health": health,
        }));
    }
    cx.out.println(format!(
        "{}  port {}  pid {}  {}",
        cx.out.paint().bold(&info.name),
        info.port.map(|port| port.to_string()).unwrap_or_default(),
        info.pid,
        info.url.as_deref().unwrap_or("")
    ));
    cx.out
        .status(format!("ready; log: {}", info.log_path.display()));
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
}

/// The workers recorded in the run directory, each asked for its health.
pub fn worker_rows(run_dir: &RunDir) -> anyhow::Result<Vec<WorkerRow>> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .context("building an HTTP client")?;
    let rows = run_dir
        .list()?
        .into_iter()
        .filter(|info| info.kind == WORKER_KIND)
        .map(|info| {
            let running = info.is_running();
            let health = match (&info.url, running) {
                (Some(url), true) => client
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
            }
        })
        .collect();
    Ok(rows)
}

fn list(cx: &crate::Context, run_dir: &RunDir) -> anyhow::Result<()> {
    let rows = worker_rows(run_dir)?;
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
        let uptime = if row.running {
            human_duration(now.saturating_sub(row.info.started_at))
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

fn stop(cx: &crate::Context, run_dir: &RunDir, id: &str) -> anyhow::Result<()> {
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

fn worker(run_dir: &RunDir, id: &str) -> anyhow::Result<DaemonInfo> {
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

fn logs(
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
    let dir = bin_dir.unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|dir| settings.repo_root.join(dir))
            .unwrap_or_else(|| settings.repo_root.join("target"));
        target.join("release")
    });
    let program = dir.join("llorch-worker");
    if !program.is_file() {
        bail!(
            "starting a worker: {} does not exist\nhint: build it with `cargo xtask build worker {backend}`, or point --bin-dir (LLORCH_BIN_DIR) at the directory that holds llorch-worker",
            program.display()
        );
    }
    Ok(program)
}

/// A port nobody listens on right now. The worker binds it a moment later; choosing it here
/// means the worker id, URL and state file are known before the worker starts.
pub fn free_port(bind: IpAddr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(bind, 0))
        .with_context(|| format!("finding a free port on {bind}\nhint: is {bind} an address of this machine? pass --bind"))?;
    Ok(listener.local_addr()?.port())
}

/// Where to reach a worker listening on `bind`: a wildcard address is reached on loopback.
fn reachable_address(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(address) if address.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(address) if address.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        address => address,
    }
}

/// This machine's host name up to the first dot, reduced to characters valid in a worker id.
pub fn hostname_label() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at most that much.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let name = if result == 0 {
        let end = buffer
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        String::new()
    };
    let label: String = name
        .split('.')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        "localhost".to_owned()
    } else {
        label.to_owned()
    }
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..=86399 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86400, seconds % 86400 / 3600),
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

    #[test]
    fn hostname_label_is_a_valid_daemon_name_part() {
        let label = hostname_label();
        daemon::validate_name(&format!("worker-{label}-9001")).unwrap();
        assert!(!label.contains('.'));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(125), "2m05s");
        assert_eq!(human_duration(7260), "2h01m");
        assert_eq!(human_duration(90000), "1d01h");
    }
}
