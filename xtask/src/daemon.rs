//! Detached local processes (workers, orcd): start one in its own session with its output in a
//! log file, remember it in a run directory (pid file + JSON state), wait for its `/health`,
//! list and stop what is there. Generic on purpose: `pool` and `up` both build on it.
//!
//! The run directory is `LLORCH_RUN_DIR`, else `$XDG_RUNTIME_DIR/llorch`, else
//! `~/.local/state/llorch/run`. Each daemon `NAME` owns `NAME.pid`, `NAME.json` and `NAME.log`.

use std::{
    ffi::OsString,
    fs::File,
    io::{BufRead, BufReader, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::process;

/// Overrides the run directory (tests use a temporary one).
pub const RUN_DIR_ENV: &str = "LLORCH_RUN_DIR";

/// How many lines of a daemon's log an error message shows.
pub const LOG_TAIL_LINES: usize = 20;

/// The only variables a daemon takes from the caller: what the OS, the dynamic loader, the GPU
/// runtime and the XDG base directories need. Everything else stays out — above all the
/// `LLORCH_*` variables a person exported for the client (`LLORCH_API_TOKEN_FILE` would make
/// orcd demand tokens); a daemon's own settings reach it as flags or in [`DaemonSpec::env`].
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "RUST_BACKTRACE",
];

/// The whole environment of a daemon: [`INHERITED_ENV`] from the caller (`caller` looks one
/// up), then the spec's own variables, which win.
pub fn daemon_environment(
    caller: impl Fn(&str) -> Option<OsString>,
    spec_env: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = INHERITED_ENV
        .iter()
        .filter(|name| !spec_env.iter().any(|(key, _)| key == **name))
        .filter_map(|name| caller(name).map(|value| (OsString::from(*name), value)))
        .collect();
    env.extend(spec_env.iter().cloned());
    env
}

/// What to start. `name` identifies the daemon in the run directory; `kind` ("worker", "orcd")
/// is what callers filter `list` on; the remaining labels are recorded for `list` and `status`.
#[derive(Debug, Clone, Default)]
pub struct DaemonSpec {
    pub name: String,
    pub kind: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The daemon's own variables; with [`INHERITED_ENV`] they are its whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub port: Option<u16>,
    /// Base URL whose `/health` says whether the daemon is ready.
    pub url: Option<String>,
    pub model: Option<String>,
    pub backend: Option<String>,
}

/// A started daemon as recorded in `<run_dir>/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub name: String,
    pub kind: String,
    pub pid: u32,
    pub port: Option<u16>,
    pub url: Option<String>,
    pub model: Option<String>,
    pub backend: Option<String>,
    /// Unix time in seconds when it was started.
    pub started_at: u64,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log_path: PathBuf,
    /// The kernel's start time of the process: with the pid it identifies our process, so a
    /// recycled pid that now belongs to someone else is never signalled.
    pub process_start: Option<String>,
}

impl DaemonInfo {
    /// True while the recorded process runs and is still the one we started.
    pub fn is_running(&self) -> bool {
        process_alive(self.pid)
            && self.process_start.is_some()
            && process_start(self.pid) == self.process_start
    }
}

/// How `stop` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopOutcome {
    /// It exited after SIGTERM.
    Terminated,
    /// It ignored SIGTERM for the grace period and was killed.
    Killed,
    /// It had already exited; its stale pid and state files were removed.
    AlreadyExited,
}

/// The directory that holds pid, state and log files.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// `LLORCH_RUN_DIR`, else `$XDG_RUNTIME_DIR/llorch`, else `~/.local/state/llorch/run`.
    pub fn from_env() -> anyhow::Result<RunDir> {
        if let Some(dir) = crate::config::process_env(RUN_DIR_ENV) {
            return Ok(RunDir::at(dir));
        }
        use etcetera::BaseStrategy;
        let strategy = etcetera::choose_base_strategy().context(
            "finding the run directory: no home directory\nhint: set LLORCH_RUN_DIR to a writable directory",
        )?;
        let path = match strategy.runtime_dir() {
            Some(runtime) => runtime.join("llorch"),
            None => strategy
                .state_dir()
                .unwrap_or_else(|| strategy.data_dir())
                .join("llorch")
                .join("run"),
        };
        Ok(RunDir::at(path))
    }

    pub fn at(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str, extension: &str) -> PathBuf {
        self.path.join(format!("{name}.{extension}"))
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.file(name, "log")
    }

    /// Starts `spec.program` detached: a new session (so it outlives this process and the
    /// terminal or SSH session that started it), an explicit environment
    /// ([`daemon_environment`]), stdin from /dev/null, stdout and stderr to `<name>.log`
    /// (truncated), and records it.
    pub fn spawn(&self, spec: &DaemonSpec) -> anyhow::Result<DaemonInfo> {
        validate_name(&spec.name)?;
        std::fs::create_dir_all(&self.path)
            .with_context(|| format!("creating the run directory {}", self.path.display()))?;
        if let Some(existing) = self.get(&spec.name)? {
            if existing.is_running() {
                bail!(
                    "starting `{}`: a daemon of that name is already running (pid {})\nhint: stop it first, or pick another name or port",
                    spec.name,
                    existing.pid
                );
            }
        }
        let log_path = self.log_path(&spec.name);
        let log = File::create(&log_path)
            .with_context(|| format!("creating the log file {}", log_path.display()))?;
        let log_for_stderr = log
            .try_clone()
            .with_context(|| format!("opening {} twice", log_path.display()))?;

        // In its own session, so that it outlives this process and our terminal's signals.
        let expression = process::cmd(&spec.program).args(&spec.args).expression();
        let child = process::in_new_session(expression)
            .full_env(daemon_environment(|name| std::env::var_os(name), &spec.env))
            .stdin_null()
            .stdout_file(log)
            .stderr_file(log_for_stderr)
            .unchecked()
            .start()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        let pid = child.pids()[0];
        // Reap the child when it exits so a long-lived caller (`up`, tests) never sees a zombie
        // that still looks alive; a short-lived xtask simply leaves it to init.
        std::thread::spawn(move || {
            let _ = child.wait();
        });

        let info = DaemonInfo {
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            pid,
            port: spec.port,
            url: spec.url.clone(),
            model: spec.model.clone(),
            backend: spec.backend.clone(),
            started_at: unix_now(),
            program: spec.program.clone(),
            args: spec
                .args
                .iter()
                .map(|arg| arg.to_string_lossy().into_owned())
                .collect(),
            log_path,
            process_start: process_start(pid),
        };
        self.record(&info)?;
        Ok(info)
    }

    /// Writes the state file and the pid file of `info`.
    pub fn record(&self, info: &DaemonInfo) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(info).expect("daemon state always serializes");
        crate::files::write_atomically(&self.file(&info.name, "json"), &format!("{json}\n"))?;
        crate::files::write_atomically(&self.file(&info.name, "pid"), &format!("{}\n", info.pid))
    }

    /// The recorded daemon called `name`, running or not.
    pub fn get(&self, name: &str) -> anyhow::Result<Option<DaemonInfo>> {
        validate_name(name)?;
        let path = self.file(name, "json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        let info = serde_json::from_str(&text)
            .with_context(|| format!("reading daemon state {}\nhint: delete the file if it is left over from an older version", path.display()))?;
        Ok(Some(info))
    }

    /// Every recorded daemon, running or not, sorted by name.
    pub fn list(&self) -> anyhow::Result<Vec<DaemonInfo>> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("listing {}", self.path.display()))
            }
        };
        let mut daemons = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", self.path.display()))?
                .path();
            let is_state = path.extension().is_some_and(|ext| ext == "json");
            let name = path.file_stem().and_then(|stem| stem.to_str());
            if let (true, Some(name)) = (is_state, name) {
                if let Some(info) = self.get(name)? {
                    daemons.push(info);
                }
            }
        }
        daemons.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(daemons)
    }

    /// Stops `name`: SIGTERM to its process group, up to `grace` for it to exit, then SIGKILL.
    /// Pid and state files are removed; the log stays for `logs`.
    pub fn stop(&self, name: &str, grace: Duration) -> anyhow::Result<StopOutcome> {
        let Some(info) = self.get(name)? else {
            bail!(
                "stopping `{name}`: no such daemon in {}\nhint: list what runs with `cargo xtask pool worker list`",
                self.path.display()
            );
        };
        let outcome = if !info.is_running() {
            StopOutcome::AlreadyExited
        } else {
            signal_group(info.pid, libc::SIGTERM)
                .with_context(|| format!("sending SIGTERM to `{name}` (pid {})", info.pid))?;
            if wait_for_exit(&info, grace) {
                StopOutcome::Terminated
            } else {
                signal_group(info.pid, libc::SIGKILL)
                    .with_context(|| format!("sending SIGKILL to `{name}` (pid {})", info.pid))?;
                if !wait_for_exit(&info, Duration::from_secs(5)) {
                    bail!(
                        "stopping `{name}`: pid {} survived SIGKILL\nhint: check it with `ps -o pid,stat,cmd -p {}`",
                        info.pid,
                        info.pid
                    );
                }
                StopOutcome::Killed
            }
        };
        self.forget(name)?;
        Ok(outcome)
    }

    /// Removes the pid and state files of `name`, keeping its log.
    pub fn forget(&self, name: &str) -> anyhow::Result<()> {
        for extension in ["pid", "json"] {
            let path = self.file(name, extension);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("removing {}", path.display()))
                }
            }
        }
        Ok(())
    }
}

/// Daemon names become file names: letters, digits, `-`, `_` and `.`, not starting with `-` or `.`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || !valid_chars || name.starts_with(['-', '.']) {
        bail!(
            "`{name}` is not a valid daemon name: use letters, digits, `-`, `_` and `.`, not starting with `-` or `.`"
        );
    }
    Ok(())
}

/// Polls `GET {url}/health` until it answers 200 and returns the body. Fails, showing the last
/// lines of the log, when the process exits first or `timeout` passes.
pub fn wait_healthy(info: &DaemonInfo, timeout: Duration) -> anyhow::Result<String> {
    let Some(url) = &info.url else {
        bail!("waiting for `{}`: it has no URL to check", info.name);
    };
    let exited = || {
        if info.is_running() {
            return Ok(());
        }
        bail!(
            "`{}` exited before it was ready\n{}\nhint: fix the cause shown in the log, then start it again",
            info.name,
            log_tail_section(&info.log_path, LOG_TAIL_LINES)
        )
    };
    let mut exited_early = false;
    llorch_client::wait::wait_for_health(url, timeout, llorch_client::wait::ok_status, || {
        exited().inspect_err(|_| exited_early = true)
    })
    .map_err(|error| {
        if exited_early {
            return error;
        }
        error.context(format!(
            "`{}` was not ready\n{}\nhint: a large model may need a longer --timeout; otherwise see the log",
            info.name,
            log_tail_section(&info.log_path, LOG_TAIL_LINES)
        ))
    })
}

/// The last `lines` lines of a log, framed for an error message.
pub fn log_tail_section(path: &Path, lines: usize) -> String {
    match tail_lines(path, lines) {
        Ok(tail) if tail.is_empty() => format!("(the log {} is empty)", path.display()),
        Ok(tail) => format!(
            "--- last lines of {} ---\n{}\n---",
            path.display(),
            tail.join("\n")
        ),
        Err(error) => format!("(could not read the log {}: {error})", path.display()),
    }
}

/// The last `lines` lines of a file (all of them when it is shorter), lossily decoded.
pub fn tail_lines(path: &Path, lines: usize) -> std::io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    // Logs can grow large; the tail lives in the last few hundred kB.
    const WINDOW: u64 = 256 * 1024;
    let length = file.metadata()?.len();
    let skipped_partial_line = length > WINDOW;
    if skipped_partial_line {
        file.seek(SeekFrom::Start(length - WINDOW))?;
    }
    let mut all = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        all.push(String::from_utf8_lossy(&line?).into_owned());
    }
    if skipped_partial_line && !all.is_empty() {
        all.remove(0);
    }
    let start = all.len().saturating_sub(lines);
    Ok(all.split_off(start))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Polls until the process is gone; true when it exited within `timeout`.
fn wait_for_exit(info: &DaemonInfo, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !info.is_running() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !info.is_running()
}

/// Signals the daemon's whole process group (it leads its own session), so helpers it started
/// stop with it; falls back to the pid alone when the group is gone.
fn signal_group(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: kill has no memory effects; a negative pid addresses the process group.
    if unsafe { libc::kill(-pid, signal) } == 0 || unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(error)
}

/// True when `pid` exists and is not a zombie.
#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    proc_stat_fields(pid).is_some_and(|fields| fields.first().is_some_and(|state| state != "Z"))
}

#[cfg(not(target_os = "linux"))]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The process's start time: field 22 of /proc/PID/stat (clock ticks after boot).
#[cfg(target_os = "linux")]
fn process_start(pid: u32) -> Option<String> {
    proc_stat_fields(pid).and_then(|fields| fields.get(19).cloned())
}

/// The process's start time as `ps` prints it.
#[cfg(not(target_os = "linux"))]
fn process_start(pid: u32) -> Option<String> {
    let output = process::cmd("ps")
        .args(["-o", "lstart=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    let start = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !start.is_empty()).then_some(start)
}

/// The fields of /proc/PID/stat after the command name, starting with the state (field 3).
/// The name is skipped by its closing parenthesis because it may itself contain spaces.
#[cfg(target_os = "linux")]
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A daemon that sleeps a minute, for tests that start and stop daemons.
    pub(crate) fn sleeper(name: &str) -> DaemonSpec {
        DaemonSpec {
            name: name.into(),
            kind: "test".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "echo started; exec sleep 60".into()],
            ..Default::default()
        }
    }

    #[test]
    fn spawn_records_and_stop_terminates() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        let info = run_dir.spawn(&sleeper("sleeper")).unwrap();
        assert!(info.is_running());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("sleeper.pid"))
                .unwrap()
                .trim(),
            info.pid.to_string()
        );
        assert_eq!(run_dir.list().unwrap(), vec![info.clone()]);

        let error = run_dir.spawn(&sleeper("sleeper")).unwrap_err().to_string();
        assert!(error.contains("already running"), "{error}");

        assert_eq!(
            run_dir.stop("sleeper", Duration::from_secs(10)).unwrap(),
            StopOutcome::Terminated
        );
        assert!(!info.is_running());
        assert!(run_dir.list().unwrap().is_empty());
        assert!(dir.path().join("sleeper.log").exists(), "the log is kept");
        assert!(run_dir.stop("sleeper", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn daemon_leads_its_own_session() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        let info = run_dir.spawn(&sleeper("session")).unwrap();
        let session = proc_stat_fields(info.pid).unwrap()[3].clone();
        run_dir.stop("session", Duration::from_secs(10)).unwrap();
        assert_eq!(
            session,
            info.pid.to_string(),
            "session id equals the daemon's pid"
        );
    }

    #[test]
    fn sigterm_ignored_leads_to_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        let spec = DaemonSpec {
            args: vec![
                "-c".into(),
                "trap '' TERM; echo ready; while :; do sleep 0.1; done".into(),
            ],
            ..sleeper("stubborn")
        };
        let info = run_dir.spawn(&spec).unwrap();
        // The trap must be installed before SIGTERM arrives.
        let deadline = Instant::now() + Duration::from_secs(5);
        while tail_lines(&info.log_path, 1).unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            run_dir
                .stop("stubborn", Duration::from_millis(300))
                .unwrap(),
            StopOutcome::Killed
        );
        assert!(!info.is_running());
    }

    #[test]
    fn recycled_pid_is_never_signalled() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        // A state file pointing at this very test process, as if its pid had been reused.
        let info = DaemonInfo {
            name: "recycled".into(),
            kind: "test".into(),
            pid: std::process::id(),
            port: None,
            url: None,
            model: None,
            backend: None,
            started_at: 0,
            program: "sleep".into(),
            args: vec![],
            log_path: dir.path().join("recycled.log"),
            process_start: Some("1".into()),
        };
        run_dir.record(&info).unwrap();
        assert!(!info.is_running());
        assert_eq!(
            run_dir.stop("recycled", Duration::from_secs(1)).unwrap(),
            StopOutcome::AlreadyExited
        );
        assert!(
            run_dir.get("recycled").unwrap().is_none(),
            "stale files cleaned"
        );
    }

    #[test]
    fn wait_healthy_reports_log_tail_when_the_process_exits() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        let spec = DaemonSpec {
            args: vec![
                "-c".into(),
                "echo loading model; echo 'error: model file not found' >&2; exit 1".into(),
            ],
            url: Some("http://127.0.0.1:9".into()),
            ..sleeper("crasher")
        };
        let info = run_dir.spawn(&spec).unwrap();
        let error = wait_healthy(&info, Duration::from_secs(10))
            .unwrap_err()
            .to_string();
        assert!(error.contains("exited before it was ready"), "{error}");
        assert!(error.contains("error: model file not found"), "{error}");
    }

    #[test]
    fn wait_healthy_returns_the_body_of_a_200() {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir(&www).unwrap();
        std::fs::write(www.join("health"), "{\"status\":\"ready\"}").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let run_dir = RunDir::at(dir.path().join("run"));
        let spec = DaemonSpec {
            name: "web".into(),
            kind: "test".into(),
            program: "python3".into(),
            args: vec![
                "-m".into(),
                "http.server".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--directory".into(),
                www.clone().into(),
                port.to_string().into(),
            ],
            url: Some(format!("http://127.0.0.1:{port}")),
            port: Some(port),
            ..Default::default()
        };
        let info = run_dir.spawn(&spec).unwrap();
        let body = wait_healthy(&info, Duration::from_secs(20));
        run_dir.stop("web", Duration::from_secs(10)).unwrap();
        assert_eq!(body.unwrap(), "{\"status\":\"ready\"}");
    }

    #[test]
    fn a_daemon_gets_the_system_variables_and_its_own_but_nothing_of_the_client() {
        let caller = |name: &str| {
            [
                ("PATH", "/usr/bin"),
                ("HOME", "/home/me"),
                ("RUST_LOG", "trace"),
                ("LLORCH_API_TOKEN_FILE", "/home/me/.config/llorch/api-token"),
                ("LLORCH_ORCHESTRATOR_URL", "http://10.0.0.1:8080"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
            ]
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| OsString::from(value))
        };
        let env = daemon_environment(caller, &[("RUST_LOG".into(), "info".into())]);
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/usr/bin".into()),
                ("HOME".into(), "/home/me".into()),
                ("RUST_LOG".into(), "info".into()),
            ]
        );
    }

    #[test]
    fn a_spawned_daemon_sees_only_its_explicit_environment() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        let spec = DaemonSpec {
            args: vec!["-c".into(), "env; echo END".into()],
            env: vec![("LLORCH_OWN".into(), "mine".into())],
            ..sleeper("env-printer")
        };
        let info = run_dir.spawn(&spec).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        while Instant::now() < deadline {
            lines = tail_lines(&info.log_path, 1000).unwrap();
            if lines.last().is_some_and(|line| line == "END") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(lines.last().map(String::as_str), Some("END"), "{lines:?}");
        let names: Vec<&str> = lines
            .iter()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        assert!(names.contains(&"LLORCH_OWN"), "{lines:?}");
        for name in names {
            // sh sets PWD, SHLVL and `_` itself.
            assert!(
                INHERITED_ENV.contains(&name)
                    || ["LLORCH_OWN", "PWD", "SHLVL", "_"].contains(&name),
                "`{name}` leaked from the caller into the daemon: {lines:?}"
            );
        }
    }

    #[test]
    fn tail_lines_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail_lines(&path, 2).unwrap(), vec!["b", "c"]);
        assert_eq!(tail_lines(&path, 10).unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn names_must_be_file_safe() {
        assert!(validate_name("worker-box-9001").is_ok());
        for bad in ["", "../x", "-x", "a/b", ".hidden", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
