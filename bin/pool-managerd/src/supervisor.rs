//! The workers of this host: spawns `llorch-worker` processes, restarts one that crashes after
//! a growing backoff, marks one that keeps crashing failed (with its last log lines), and
//! stops them on request (drain: SIGTERM, then SIGKILL after the drain timeout; now: SIGKILL).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use llorch_api::pool::{PoolWorker, PoolWorkerState, StopMode, WorkerLaunch};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// A crash this long after its start counts toward a crash loop; a worker that ran longer
/// starts a new count.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Log lines kept with a failed worker.
pub const FAILED_LOG_LINES: usize = 20;
/// How far from the end of a log file a tail is read.
const TAIL_WINDOW_BYTES: u64 = 256 << 10;
/// How often a starting worker's `/health` is asked whether its model is loaded.
const READY_POLL: Duration = Duration::from_millis(250);
/// After SIGKILL, how long the exit may take to be reaped.
const KILL_REAP: Duration = Duration::from_secs(5);

/// What every worker of this host is started with, besides its [`WorkerLaunch`].
#[derive(Debug, Clone)]
pub struct WorkerDefaults {
    pub program: PathBuf,
    /// Address workers listen on (the pool manager's own).
    pub bind: String,
    /// Host name or address orcd reaches workers at; their advertised URL is
    /// `http://HOST:PORT`.
    pub advertise_host: Option<String>,
    pub orchestrator_url: Option<String>,
    pub worker_token_file: Option<PathBuf>,
    pub model_base_dir: PathBuf,
    pub catalog: Option<PathBuf>,
    pub catalog_dir: PathBuf,
    pub log_dir: PathBuf,
    pub host_id: String,
    pub drain_timeout: Duration,
    pub crash_loop_limit: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no free port on {bind}: {source}")]
    NoPort {
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the worker log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The handle the HTTP API and the heartbeat use; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    defaults: Arc<WorkerDefaults>,
    workers: Arc<Mutex<Workers>>,
    http: reqwest::Client,
}

#[derive(Default)]
struct Workers {
    by_id: BTreeMap<String, Supervised>,
    /// Numbers the workers of this pool manager's life, so ids are never reused while an old
    /// record may linger in orcd.
    started: u64,
}

struct Supervised {
    info: PoolWorker,
    log_path: PathBuf,
    stop: watch::Sender<Option<StopMode>>,
    /// Resolves when its supervision task ends (the process exited for good).
    ended: watch::Receiver<bool>,
}

impl Supervisor {
    pub fn new(defaults: WorkerDefaults) -> Supervisor {
        Supervisor {
            defaults: Arc::new(defaults),
            workers: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Workers> {
        self.workers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Every worker, with its resident memory read now.
    pub fn workers(&self) -> Vec<PoolWorker> {
        let mut workers: Vec<PoolWorker> = self
            .lock()
            .by_id
            .values()
            .map(|worker| worker.info.clone())
            .collect();
        for worker in &mut workers {
            worker.rss_bytes = worker.pid.and_then(crate::host::resident_bytes);
        }
        workers
    }

    pub fn worker(&self, worker_id: &str) -> Option<PoolWorker> {
        self.workers()
            .into_iter()
            .find(|worker| worker.worker_id == worker_id)
    }

    /// Sum of the estimates of the workers that hold (or will hold) memory.
    pub fn committed_bytes(&self) -> u64 {
        self.lock()
            .by_id
            .values()
            .filter(|worker| worker.info.state != PoolWorkerState::Failed)
            .map(|worker| worker.info.estimated_bytes)
            .sum()
    }

    /// Spawns a worker and supervises it from now on; answers once the process runs.
    pub fn start(
        &self,
        launch: WorkerLaunch,
        estimated_bytes: u64,
    ) -> Result<PoolWorker, StartError> {
        let port = free_port(&self.defaults.bind)?;
        let (worker_id, log_path) = {
            let mut workers = self.lock();
            workers.started += 1;
            let id = worker_id_for(&self.defaults.host_id, &launch.model, workers.started);
            let log_path = self.defaults.log_dir.join(format!("{id}.log"));
            (id, log_path)
        };
        std::fs::create_dir_all(&self.defaults.log_dir).map_err(|source| StartError::Log {
            path: self.defaults.log_dir.clone(),
            source,
        })?;
        let info = PoolWorker {
            worker_id: worker_id.clone(),
            launch,
            port: Some(port),
            pid: None,
            state: PoolWorkerState::Starting,
            rss_bytes: None,
            estimated_bytes,
            restarts: 0,
            last_log: Vec::new(),
        };
        let (stop, stop_receiver) = watch::channel(None);
        let (ended_sender, ended) = watch::channel(false);
        self.lock().by_id.insert(
            worker_id.clone(),
            Supervised {
                info: info.clone(),
                log_path: log_path.clone(),
                stop,
                ended,
            },
        );
        let supervisor = self.clone();
        tokio::spawn(async move {
            supervisor
                .supervise(worker_id.clone(), log_path, stop_receiver)
                .await;
            let _ = ended_sender.send(true);
        });
        Ok(info)
    }

    /// Asks a worker to stop; `None` when there is no such worker. With `wait`, returns once
    /// the process has exited.
    pub async fn stop(&self, worker_id: &str, mode: StopMode, wait: bool) -> Option<PoolWorker> {
        let (info, mut ended) = {
            let mut workers = self.lock();
            let worker = workers.by_id.get_mut(worker_id)?;
            if worker.info.state != PoolWorkerState::Failed {
                worker.info.state = PoolWorkerState::Stopping;
            }
            let _ = worker.stop.send(Some(mode));
            (worker.info.clone(), worker.ended.clone())
        };
        if wait {
            let _ = ended.wait_for(|ended| *ended).await;
        }
        Some(info)
    }

    /// Drains every worker and waits until all have exited.
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.lock().by_id.keys().cloned().collect();
        let stops = ids.iter().map(|id| self.stop(id, StopMode::Drain, true));
        futures::future::join_all(stops).await;
    }

    /// The last `lines` lines of a worker's log; `None` for an unknown worker.
    pub fn log_tail(&self, worker_id: &str, lines: usize) -> Option<std::io::Result<Vec<String>>> {
        let path = self.lock().by_id.get(worker_id)?.log_path.clone();
        Some(tail_lines(&path, lines))
    }

    fn update(&self, worker_id: &str, change: impl FnOnce(&mut PoolWorker)) {
        if let Some(worker) = self.lock().by_id.get_mut(worker_id) {
            change(&mut worker.info);
        }
    }

    fn remove(&self, worker_id: &str) {
        self.lock().by_id.remove(worker_id);
    }

    /// Runs a worker until it is stopped or fails for good.
    async fn supervise(
        &self,
        worker_id: String,
        log_path: PathBuf,
        mut stop: watch::Receiver<Option<StopMode>>,
    ) {
        let mut crashes_in_a_row = 0u32;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let Some(info) = self.lock().by_id.get(&worker_id).map(|w| w.info.clone()) else {
                return;
            };
            let mut child = match self.spawn(&info, &log_path) {
                Ok(child) => child,
                Err(error) => {
                    let message = format!(
                        "starting {} failed: {error}\nhint: build it with `cargo build --release -p llorch-worker`, or point `--worker-bin` at it",
                        self.defaults.program.display()
                    );
                    tracing::error!(%worker_id, "{message}");
                    self.update(&worker_id, |worker| {
                        worker.state = PoolWorkerState::Failed;
                        worker.pid = None;
                        worker.last_log = message.lines().map(str::to_owned).collect();
                    });
                    return;
                }
            };
            let started_at = Instant::now();
            let pid = child.id();
            self.update(&worker_id, |worker| {
                worker.pid = pid;
                worker.state = PoolWorkerState::Starting;
            });
            tracing::info!(%worker_id, pid, model = %info.launch.model, "worker started");
            let outcome = tokio::select! {
                exit = self.run_until_exit(&worker_id, &mut child, info.port) => Ok(exit),
                requested = stop.wait_for(Option::is_some) => {
                    Err(requested.map_or(StopMode::Now, |mode| mode.unwrap_or_default()))
                }
            };
            let exit = match outcome {
                Ok(exit) => exit,
                Err(mode) => {
                    self.terminate(&worker_id, &mut child, mode).await;
                    self.remove(&worker_id);
                    return;
                }
            };
            if stop.borrow().is_some() {
                self.remove(&worker_id);
                return;
            }
            crashes_in_a_row = match started_at.elapsed() < CRASH_LOOP_WINDOW {
                true => crashes_in_a_row + 1,
                false => {
                    backoff = FIRST_BACKOFF;
                    1
                }
            };
            let last_log = tail_lines(&log_path, FAILED_LOG_LINES).unwrap_or_default();
            if crashes_in_a_row >= self.defaults.crash_loop_limit {
                tracing::error!(%worker_id, crashes_in_a_row, "worker keeps crashing ({exit}); marked failed");
                self.update(&worker_id, |worker| {
                    worker.state = PoolWorkerState::Failed;
                    worker.pid = None;
                    worker.last_log = last_log;
                });
                return;
            }
            tracing::warn!(%worker_id, backoff_ms = backoff.as_millis() as u64, "worker exited ({exit}); restarting");
            self.update(&worker_id, |worker| {
                worker.state = PoolWorkerState::Restarting;
                worker.pid = None;
                worker.restarts += 1;
                worker.last_log = last_log;
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(Option::is_some) => {
                    self.remove(&worker_id);
                    return;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn spawn(&self, info: &PoolWorker, log_path: &Path) -> std::io::Result<Child> {
        let defaults = &self.defaults;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let port = info.port.unwrap_or(0);
        let mut command = Command::new(&defaults.program);
        command
            .args(info.launch.worker_args())
            .arg("--host")
            .arg(&defaults.bind)
            .arg("--port")
            .arg(port.to_string())
            .arg("--worker-id")
            .arg(&info.worker_id)
            .arg("--drain-timeout-secs")
            .arg(defaults.drain_timeout.as_secs().to_string())
            .arg("--model-base-dir")
            .arg(&defaults.model_base_dir)
            .arg("--catalog-dir")
            .arg(&defaults.catalog_dir);
        if let Some(catalog) = &defaults.catalog {
            command.arg("--catalog").arg(catalog);
        }
        if let Some(url) = &defaults.orchestrator_url {
            command.arg("--orchestrator-url").arg(url);
        }
        if let Some(file) = &defaults.worker_token_file {
            command.arg("--worker-token-file").arg(file);
        }
        if let Some(host) = &defaults.advertise_host {
            command
                .arg("--advertise-url")
                .arg(format!("http://{host}:{port}"));
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(false);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it runs in
        // the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // A pool manager killed without draining (SIGKILL, a crash) must not leave
                // its workers running unsupervised: they get SIGTERM and drain themselves.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn()
    }

    /// Waits for the process to exit; meanwhile marks it running once its `/health` says its
    /// model is loaded. Returns how it exited.
    async fn run_until_exit(
        &self,
        worker_id: &str,
        child: &mut Child,
        port: Option<u16>,
    ) -> String {
        let ready = self.wait_until_ready(port);
        tokio::pin!(ready);
        let mut marked = false;
        loop {
            tokio::select! {
                status = child.wait() => {
                    return match status {
                        Ok(status) => status.to_string(),
                        Err(error) => format!("waiting for it failed: {error}"),
                    };
                }
                () = &mut ready, if !marked => {
                    marked = true;
                    self.update(worker_id, |worker| worker.state = PoolWorkerState::Running);
                    tracing::info!(%worker_id, "worker ready");
                }
            }
        }
    }

    async fn wait_until_ready(&self, port: Option<u16>) {
        let Some(port) = port else {
            return std::future::pending().await;
        };
        let host = match self.defaults.bind.as_str() {
            "0.0.0.0" => "127.0.0.1",
            "::" => "[::1]",
            bind => bind,
        };
        let url = format!("http://{host}:{port}/health");
        loop {
            let health = self.http.get(&url).send().await;
            if let Ok(response) = health {
                if let Ok(health) = response.json::<llorch_api::WorkerHealth>().await {
                    if health.status == llorch_api::WorkerStatus::Ready {
                        return;
                    }
                }
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    async fn terminate(&self, worker_id: &str, child: &mut Child, mode: StopMode) {
        if mode == StopMode::Drain {
            if let Some(pid) = child.id() {
                send_sigterm(pid);
                // The worker's own drain timeout, plus time to close and deregister.
                let grace = self.defaults.drain_timeout + Duration::from_secs(5);
                if tokio::time::timeout(grace, child.wait()).await.is_ok() {
                    tracing::info!(%worker_id, "worker drained and exited");
                    return;
                }
                tracing::warn!(%worker_id, "worker did not exit {grace:?} after SIGTERM; killing it");
            }
        }
        let _ = child.start_kill();
        let _ = tokio::time::timeout(KILL_REAP, child.wait()).await;
        tracing::info!(%worker_id, "worker killed");
    }
}

fn send_sigterm(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid of our own child and a valid signal number has no memory
    // effects; a failure (already exited) is harmless.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A port free on `bind` now; the worker binds it a moment later (and again on restarts, so
/// orcd keeps reaching it at one URL).
fn free_port(bind: &str) -> Result<u16, StartError> {
    let no_port = |source| StartError::NoPort {
        bind: bind.to_owned(),
        source,
    };
    let listener = TcpListener::bind((bind, 0)).map_err(no_port)?;
    Ok(listener.local_addr().map_err(no_port)?.port())
}

/// `HOST-MODEL-N`, restricted to the characters worker ids allow.
fn worker_id_for(host_id: &str, model: &str, number: u64) -> String {
    let safe = |text: &str| -> String {
        text.chars()
            .map(
                |c| match c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    true => c,
                    false => '-',
                },
            )
            .collect()
    };
    format!("{}-{}-{number}", safe(host_id), safe(model))
}

/// The last `count` lines of a file, reading at most its last [`TAIL_WINDOW_BYTES`].
pub fn tail_lines(path: &Path, count: usize) -> std::io::Result<Vec<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    let start = length.saturating_sub(TAIL_WINDOW_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        // The first line was cut by the window.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(count);
    Ok(lines[skip..]
        .iter()
        .map(|line| (*line).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_path_safe_and_numbered() {
        assert_eq!(
            worker_id_for("gpu box", "qwen2.5-coder-0.5b", 3),
            "gpu-box-qwen2.5-coder-0.5b-3"
        );
        assert!(
            llorch_api::validation::validate_worker_id(&worker_id_for("a/b", "m:x", 1)).is_ok()
        );
    }

    #[test]
    fn tail_reads_the_last_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.log");
        assert!(tail_lines(&path, 3).unwrap().is_empty());
        let text: String = (1..=1000).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            tail_lines(&path, 3).unwrap(),
            vec!["line 998", "line 999", "line 1000"]
        );
        let big: String = (1..=40_000).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, big).unwrap();
        let all = tail_lines(&path, usize::MAX).unwrap();
        assert!(all.len() < 40_000 && all.last().unwrap() == "line 40000");
        assert!(all[0].starts_with("line "), "{}", all[0]);
    }
}
