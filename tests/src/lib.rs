//! Harness for the end-to-end tests: starts the real `orcd` and `llorch-worker` binaries on
//! OS-chosen loopback ports, talks to them over HTTP/SSE, and always stops them (on drop, also
//! when a test fails).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use llorch_api::{StreamEvent, TaskRequest, WorkerInfo};

/// Where the release binaries are: `LLORCH_BIN_DIR` (set by `cargo xtask test`), else this
/// workspace's `target/release`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join("target/release")
        })
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo xtask build all` (or run the suite through `cargo xtask test`)",
        path.display()
    );
    path
}

/// The xtask binary: `LLORCH_XTASK_BIN` (set by `cargo xtask test`), else the debug build that
/// `cargo xtask` itself runs from.
pub fn xtask_binary() -> PathBuf {
    let path = std::env::var_os("LLORCH_XTASK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join("target/debug/xtask")
        });
    assert!(
        path.is_file(),
        "{} is missing: run the suite through `cargo xtask test`",
        path.display()
    );
    path
}

/// The built xtask through the one test harness (no `LLORCH_*` setting of the caller's, colour
/// off, a time limit).
pub fn xtask() -> llorch_testkit::Xtask {
    llorch_testkit::Xtask::new(xtask_binary())
}

pub use llorch_testkit::Outcome;

pub fn default_model_id() -> String {
    llorch_catalog::Catalog::builtin()
        .default_model()
        .id
        .clone()
}

/// A child process killed on drop; its stdout's first `... listening on URL` line gives the URL.
pub struct Daemon {
    pub name: &'static str,
    pub url: String,
    child: Child,
}

impl Daemon {
    /// Starts `program` and waits until it prints the line announcing its URL.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Daemon> {
        let mut command = Command::new(program);
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        // Keep draining stdout for the daemon's whole life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sender = Some(sender);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    if let Some(sender) = sender.take() {
                        let _ = sender.send(url.trim().to_owned());
                    }
                }
            }
        });
        let mut daemon = Daemon {
            name,
            url: String::new(),
            child,
        };
        match receiver.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => daemon.url = url,
            Err(_) => bail!(
                "{name} did not print its listening address within 120 s (exit status: {:?})",
                daemon.child.try_wait()
            ),
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the process ended (a signal shows as such), or `None` while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: sending a signal to our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.kill_hard();
                bail!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port part of the URL.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.trim_end_matches('/').parse().ok())
            .expect("url has a port")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts orcd on `listen` (`127.0.0.1:0` for an OS-chosen port).
pub fn start_orcd(listen: &str, extra: &[&str]) -> anyhow::Result<Daemon> {
    let mut args = vec!["--listen".to_owned(), listen.to_owned()];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    Daemon::start("orcd", &binary("orcd"), &args, &[])
}

/// The model directory the worker resolves catalog ids in.
pub fn model_base_dir() -> PathBuf {
    std::env::var_os("LLORCH_MODEL_BASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(llorch_catalog::default_model_base_dir)
}

/// Starts a worker for the default model (by catalog id, as users do) that registers with
/// `orcd_url`.
pub fn start_worker(orcd_url: &str, slots: u32, extra: &[&str]) -> anyhow::Result<Daemon> {
    start_worker_for(&default_model_id(), orcd_url, slots, extra)
}

/// Starts a worker for catalog model `model`; fails early, naming the download command, when
/// the model is not on disk.
pub fn start_worker_for(
    model: &str,
    orcd_url: &str,
    slots: u32,
    extra: &[&str],
) -> anyhow::Result<Daemon> {
    let catalog = llorch_catalog::Catalog::builtin();
    let entry = catalog
        .get(model)
        .with_context(|| format!("`{model}` is not in the catalog"))?;
    let path = llorch_catalog::model_path(&model_base_dir(), entry);
    if !path.is_file() {
        bail!(
            "{model} is not at {}: run `cargo xtask models download {model}`",
            path.display()
        );
    }
    let mut args: Vec<String> = [
        "--model",
        model,
        "--model-base-dir",
        &model_base_dir().display().to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--orchestrator-url",
        orcd_url,
        "--slots",
        &slots.to_string(),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    Daemon::start("llorch-worker", &binary("llorch-worker"), &args, &[])
}

/// orcd on an OS-chosen port and one worker with `slots` slots, registered and live.
pub async fn start_stack(slots: u32) -> anyhow::Result<(Daemon, Daemon)> {
    let orcd = start_orcd("127.0.0.1:0", &[])?;
    let worker = start_worker(&orcd.url, slots, &[])?;
    wait_for_live_workers(&orcd.url, 1, Duration::from_secs(60)).await?;
    Ok((orcd, worker))
}

/// Writes a private (mode 0600) token file, as orcd and the worker demand, and returns its path.
pub fn token_file(dir: &Path, name: &str, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// The token files of an orcd started by [`start_orcd_with_tokens`].
pub struct TokenFiles {
    pub client: String,
    pub worker: String,
}

/// orcd on a free loopback port that demands `client_token` from clients and `worker_token`
/// from workers (each written to a private file in `dir`), with `extra` flags.
pub fn start_orcd_with_tokens(
    dir: &Path,
    client_token: &str,
    worker_token: &str,
    extra: &[&str],
) -> anyhow::Result<(Daemon, TokenFiles)> {
    let tokens = TokenFiles {
        client: token_file(dir, "client", client_token),
        worker: token_file(dir, "worker", worker_token),
    };
    let mut args = vec![
        "--api-token-file",
        tokens.client.as_str(),
        "--worker-token-file",
        tokens.worker.as_str(),
    ];
    args.extend_from_slice(extra);
    let orcd = start_orcd("127.0.0.1:0", &args)?;
    Ok((orcd, tokens))
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// orcd's workers, asked through the one client of orcd.
pub async fn workers(orcd_url: &str) -> anyhow::Result<Vec<WorkerInfo>> {
    llorch_client::OrcdClient::new(orcd_url, None)
        .workers()
        .await
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Waits until orcd lists `count` live workers.
pub async fn wait_for_live_workers(
    orcd_url: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    llorch_client::OrcdClient::new(orcd_url, None)
        .wait_until_live(&format!("{count} live worker(s)"), timeout, |workers| {
            workers
                .iter()
                .filter(|worker| worker.state == llorch_api::WorkerState::Live)
                .count()
                == count
        })
        .await?;
    Ok(())
}

/// A greedy completion request for the default model.
pub fn greedy_task(prompt: &str, max_tokens: u32) -> TaskRequest {
    TaskRequest {
        model: default_model_id(),
        prompt: Some(prompt.to_owned()),
        messages: None,
        parse_special: false,
        sampling: llorch_api::SamplingParams {
            max_tokens,
            temperature: 0.0,
            ..Default::default()
        },
        tools: Default::default(),
        stream: true,
        unknown: Default::default(),
    }
}

pub use llorch_client::TaskStream;

/// POSTs a task through the one client of orcd and returns its event stream. A refusal is an
/// error whose message holds the whole chain (what was submitted, orcd's status and message),
/// so a test can read it with `to_string()`.
pub async fn submit(orcd_url: &str, task: &TaskRequest) -> anyhow::Result<TaskStream> {
    llorch_client::OrcdClient::new(orcd_url, None)
        .submit_stream(task)
        .await
        .map_err(|error| anyhow::anyhow!("{error:#}"))
}

/// The concatenated text of the `token` events.
pub fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            StreamEvent::Token { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub fn token_count(events: &[StreamEvent]) -> usize {
    events
        .iter()
        .filter(|event| matches!(event, StreamEvent::Token { .. }))
        .count()
}

/// Fails the test, naming the setup command, when a Python module the OpenAI tests drive the
/// stack with (`openai`, `jsonschema`) is missing.
pub fn require_python_modules(modules: &[&str]) {
    for module in modules {
        let found = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            found,
            "the `{module}` Python package is missing: run `cargo xtask dev setup`"
        );
    }
}

/// Waits until orcd's `GET /v1/models` (asked with a client token) lists `model`.
pub async fn wait_for_model(orcd_url: &str, token: &str, model: &str) -> anyhow::Result<()> {
    wait_until(
        &format!("{model} to be served"),
        Duration::from_secs(120),
        || async {
            let models = reqwest::Client::new()
                .get(format!("{orcd_url}/v1/models"))
                .bearer_auth(token)
                .send()
                .await;
            match models {
                Ok(response) => response.text().await.unwrap_or_default().contains(model),
                Err(_) => false,
            }
        },
    )
    .await
}

/// Runs a Python client script of the e2e tests with `args`; it must exit 0 and print `ok:`.
pub fn run_python_checks(script: &Path, args: &[&std::ffi::OsStr]) {
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running python3 {}: {error}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    assert!(stdout.contains("ok:"), "{stdout}");
}
