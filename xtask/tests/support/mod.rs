//! Shared by xtask's integration tests: a private sshd on a loopback port (its own host key, an
//! `authorized_keys` holding a key made for the test, no passwords) standing in for a remote
//! host, and a runner for the real `cargo xtask` binary in an environment that never touches
//! the user's config, run directory or `~/.ssh`.
//!
//! The "remote host" is this machine seen through sshd: its sessions get their own config
//! file, run directory, model directory and worker binary directory through sshd's `SetEnv`,
//! so what a command does "there" is kept apart from what it does "here".

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod netns;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The checkout this test binary was built from; the "remote" profiles point their repo_path
/// here, so `--remote` runs `cargo xtask` in this very checkout.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Reports that `test` cannot run on this machine: the reason on stderr and, under `cargo xtask
/// test`, a record in `LLORCH_TEST_SKIP_DIR` so that the run counts the test as skipped, not
/// passed. The test returns right after.
pub fn report_skipped(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(dir) = std::env::var_os("LLORCH_TEST_SKIP_DIR") {
        let record = Path::new(&dir).join(format!(
            "{}-{}",
            test.replace("::", "-"),
            std::process::id()
        ));
        std::fs::write(&record, format!("{test}\t{reason}\n")).unwrap_or_else(|error| {
            panic!("writing the skip record {}: {error}", record.display())
        });
    }
}

/// Finds an executable the way a shell would; panics with the fix when it is missing.
pub fn require_tool(name: &str, candidates: &[&str]) -> PathBuf {
    for candidate in candidates {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let full = dir.join(name);
        if full.is_file() {
            return full;
        }
    }
    panic!("`{name}` is required by this test but was not found; run `cargo xtask dev setup` (it installs openssh-server and python3)");
}

fn run_tool(program: &Path, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A port that nothing listens on at this moment.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn current_user() -> String {
    let output = Command::new("id")
        .arg("-un")
        .output()
        .expect("running `id -un`");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The "remote" side's own environment, set by sshd on every session.
pub struct RemoteEnv {
    pub config_path: PathBuf,
    pub run_dir: PathBuf,
    /// LLORCH_STATE_DIR: saved spawns for `pool worker restart`.
    pub state_dir: PathBuf,
    /// XDG_CONFIG_HOME: where a copied worker token lands, not in the real home.
    pub config_home: PathBuf,
    pub model_base_dir: PathBuf,
    pub bin_dir: PathBuf,
}

/// Where and how the private sshd runs.
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// Run sshd inside this network namespace (`ip netns exec`), so sessions and whatever
    /// they start live on the far side of a network boundary.
    pub netns: Option<String>,
    /// The address sshd listens on.
    pub listen: std::net::IpAddr,
    /// The remote side's LLORCH_BIN_DIR; default: a directory with the fake worker.
    pub remote_bin_dir: Option<PathBuf>,
    /// The remote side's LLORCH_MODEL_BASE_DIR; default: an empty temporary directory.
    pub remote_model_base_dir: Option<PathBuf>,
}

impl Default for SshdOptions {
    fn default() -> SshdOptions {
        SshdOptions {
            netns: None,
            listen: std::net::Ipv4Addr::LOCALHOST.into(),
            remote_bin_dir: None,
            remote_model_base_dir: None,
        }
    }
}

/// A private sshd, stopped (with any daemon left in its run directories) on drop.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub listen: std::net::IpAddr,
    pub port: u16,
    pub user: String,
    /// The key in `authorized_keys`.
    pub client_key: PathBuf,
    /// A key sshd does not know, for authentication failures.
    pub stranger_key: PathBuf,
    /// The ssh client config the tests use instead of ~/.ssh/config (LLORCH_SSH_CONFIG).
    pub ssh_config: PathBuf,
    /// An alias defined only in `ssh_config`, reaching this sshd.
    pub alias: String,
    pub remote: RemoteEnv,
    /// This side's own environment for the xtask under test.
    pub local: LocalEnv,
    child: Child,
}

/// This side's config file and directories.
pub struct LocalEnv {
    pub config_path: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub model_base_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl Sshd {
    /// An sshd on 127.0.0.1 with a fake worker on the remote side.
    pub fn start() -> Sshd {
        Sshd::start_with(SshdOptions::default())
    }

    pub fn start_with(options: SshdOptions) -> Sshd {
        let sshd = require_tool("sshd", &["/usr/sbin/sshd"]);
        let keygen = require_tool("ssh-keygen", &["/usr/bin/ssh-keygen"]);
        require_tool("ssh", &["/usr/bin/ssh"]);
        // sshd refuses to start without its privilege separation directory, which the
        // openssh-server package normally creates at boot.
        if !Path::new("/run/sshd").is_dir() {
            std::fs::create_dir_all("/run/sshd").unwrap_or_else(|error| {
                panic!("sshd needs /run/sshd and it could not be created ({error}); run `sudo mkdir -p /run/sshd` or `cargo xtask dev setup`")
            });
        }

        let dir = tempfile::Builder::new()
            .prefix("llorch-sshd-")
            .tempdir()
            .unwrap();
        let path = |name: &str| dir.path().join(name);
        for key in ["host_key", "client_key", "stranger_key"] {
            run_tool(
                &keygen,
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    key,
                    "-f",
                    path(key).to_str().unwrap(),
                ],
            );
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).unwrap();

        let remote = RemoteEnv {
            config_path: path("remote/config.toml"),
            run_dir: path("remote/run"),
            state_dir: path("remote/state"),
            config_home: path("remote/xdg-config"),
            model_base_dir: options
                .remote_model_base_dir
                .clone()
                .unwrap_or_else(|| path("remote/models")),
            bin_dir: options
                .remote_bin_dir
                .clone()
                .unwrap_or_else(|| path("remote/bin")),
        };
        let local = LocalEnv {
            config_path: path("local/config.toml"),
            run_dir: path("local/run"),
            state_dir: path("local/state"),
            model_base_dir: path("local/models"),
            bin_dir: path("local/bin"),
        };
        for dir in [
            &remote.run_dir,
            &remote.model_base_dir,
            &local.run_dir,
            &local.model_base_dir,
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        if options.remote_bin_dir.is_none() {
            install_fake_worker(&remote.bin_dir);
        }
        install_fake_worker(&local.bin_dir);
        link_built_orcd(&local.bin_dir);

        let user = current_user();
        let alias = "llorch-test-alias".to_owned();
        let mut last_log = String::new();
        for _attempt in 0..3 {
            // A fresh namespace has every port free, and this one cannot be probed from here.
            let port = match options.netns {
                Some(_) => 2222,
                None => free_port(),
            };
            let config = sshd_config(dir.path(), options.listen, port, &remote);
            std::fs::write(path("sshd_config"), config).unwrap();
            let log = std::fs::File::create(path("sshd.log")).unwrap();
            let mut command = match &options.netns {
                Some(netns) => {
                    let mut command = Command::new("ip");
                    command.args(["netns", "exec", netns]).arg(&sshd);
                    command
                }
                None => Command::new(&sshd),
            };
            let mut child = command
                .args(["-D", "-e", "-f"])
                .arg(path("sshd_config"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting sshd");
            if wait_for_listening(&path("sshd.log"), &mut child, Duration::from_secs(10)) {
                let ssh_config = path("ssh_config");
                std::fs::write(
                    &ssh_config,
                    format!(
                        "Host {alias}\n    HostName {listen}\n    Port {port}\n    User {user}\n    IdentityFile {key}\n\n\
                         Host *\n    UserKnownHostsFile {known}\n    GlobalKnownHostsFile /dev/null\n    IdentitiesOnly yes\n    IdentityAgent none\n",
                        listen = options.listen,
                        key = path("client_key").display(),
                        known = path("known_hosts").display(),
                    ),
                )
                .unwrap();
                return Sshd {
                    listen: options.listen,
                    port,
                    user,
                    client_key: path("client_key"),
                    stranger_key: path("stranger_key"),
                    ssh_config,
                    alias,
                    remote,
                    local,
                    child,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(path("sshd.log")).unwrap_or_default();
        }
        panic!("sshd did not start listening; its log:\n{last_log}");
    }

    /// Writes this side's config file with a profile `name` for this sshd.
    pub fn write_local_config(&self, name: &str, ssh_timeout: u64) {
        let text = format!(
            "version = 1\n\n[remote]\nssh_timeout = {ssh_timeout}\n\n{}",
            self.profile_toml(name)
        );
        std::fs::write(&self.local.config_path, text).unwrap();
    }

    /// The `[remote.hosts.NAME]` table for this sshd, logging in with the authorized key.
    pub fn profile_toml(&self, name: &str) -> String {
        format!(
            "[remote.hosts.{name}]\nuser = \"{}\"\nhost = \"{}\"\nport = {}\nidentity_file = \"{}\"\nrepo_path = \"{}\"\n",
            self.user,
            self.listen,
            self.port,
            self.client_key.display(),
            repo_root().display()
        )
    }

    /// `cargo xtask` (the binary under test) with this side's isolated environment.
    pub fn xtask(&self) -> Xtask {
        self.xtask_in_netns(None)
    }

    /// Like [`Sshd::xtask`], run inside network namespace `netns`.
    pub fn xtask_in_netns(&self, netns: Option<&str>) -> Xtask {
        let mut xtask = xtask_in_netns(netns);
        xtask
            .env("LLORCH_CONFIG_PATH", &self.local.config_path)
            .env("LLORCH_RUN_DIR", &self.local.run_dir)
            .env("LLORCH_STATE_DIR", &self.local.state_dir)
            .env("LLORCH_MODEL_BASE_DIR", &self.local.model_base_dir)
            .env("LLORCH_BIN_DIR", &self.local.bin_dir)
            .env("LLORCH_SSH_CONFIG", &self.ssh_config);
        xtask
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Daemons a failed test left behind in either run directory.
        for run_dir in [&self.remote.run_dir, &self.local.run_dir] {
            kill_recorded_daemons(run_dir);
        }
        // SAFETY: kill has no memory effects; sshd is our child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Sends SIGKILL to the process group of every `*.pid` file in `run_dir`.
pub fn kill_recorded_daemons(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "pid") {
            if let Some(pid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
            {
                // SAFETY: as above; the daemon leads its own process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
    }
}

fn sshd_config(dir: &Path, listen: std::net::IpAddr, port: u16, remote: &RemoteEnv) -> String {
    let inherit = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.is_empty() && !value.contains(char::is_whitespace))
            .map(|value| format!(" {name}={value}"))
            .unwrap_or_default()
    };
    // The remote side needs the same toolchain to run `cargo xtask` in this checkout.
    let toolchain: String = [
        "PATH",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ]
    .iter()
    .map(|name| inherit(name))
    .collect();
    format!(
        "ListenAddress {listen}\n\
         Port {port}\n\
         HostKey {dir}/host_key\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin prohibit-password\n\
         UsePAM no\n\
         StrictModes no\n\
         PidFile {dir}/sshd.pid\n\
         LogLevel VERBOSE\n\
         SetEnv LLORCH_CONFIG_PATH={config} LLORCH_RUN_DIR={run} LLORCH_STATE_DIR={state} LLORCH_MODEL_BASE_DIR={models} LLORCH_BIN_DIR={bin} XDG_CONFIG_HOME={config_home} NO_COLOR=1{toolchain}\n",
        dir = dir.display(),
        config = remote.config_path.display(),
        run = remote.run_dir.display(),
        state = remote.state_dir.display(),
        config_home = remote.config_home.display(),
        models = remote.model_base_dir.display(),
        bin = remote.bin_dir.display(),
    )
}

/// Waits for sshd's "Server listening on" line: unlike a connection attempt, that also works
/// when sshd sits in another network namespace.
fn wait_for_listening(log: &Path, child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if std::fs::read_to_string(log).is_ok_and(|text| text.contains("Server listening on")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Puts a `llorch-worker` into `bin_dir` that runs `fake_worker.py` with an absolute python3,
/// so it works the same in an sshd session with a bare PATH.
pub fn install_fake_worker(bin_dir: &Path) {
    let python = require_tool("python3", &["/usr/bin/python3"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_worker.py");
    std::fs::create_dir_all(bin_dir).unwrap();
    let worker = bin_dir.join("llorch-worker");
    std::fs::write(
        &worker,
        format!(
            "#!/bin/sh\nexec {} {} \"$@\"\n",
            python.display(),
            script.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[allow(unused_imports)] // each test file uses part of this module
pub use llorch_testkit::{Outcome, Xtask};

/// The xtask binary under test, run from this checkout through the one test harness.
pub fn xtask() -> Xtask {
    xtask_in_netns(None)
}

/// Like [`xtask`], run inside network namespace `netns` (`ip netns exec`), if any.
pub fn xtask_in_netns(netns: Option<&str>) -> Xtask {
    let mut xtask = Xtask::in_netns(env!("CARGO_BIN_EXE_xtask"), netns);
    xtask.current_dir(repo_root());
    xtask
}

/// The one client of orcd, for the orcd at `url` (blocking: call it off any async runtime).
pub fn orcd_client(url: &str, token: Option<&str>) -> llorch_client::blocking::OrcdClient {
    llorch_client::blocking::OrcdClient::new(
        llorch_client::OrcdClient::new(url, token).with_request_timeout(Duration::from_secs(120)),
    )
}

/// GET `url` and return the status code, or None when nothing answers.
pub fn http_status(url: &str) -> Option<u16> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .get(url)
        .send()
        .ok()
        .map(|response| response.status().as_u16())
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Puts the orcd the suite built (LLORCH_BIN_DIR's, else the release build) into `bin_dir`
/// when there is one. Commands run "here" that start orcd (`fleet up`) then take it from their
/// LLORCH_BIN_DIR instead of running `cargo build -p orcd` themselves, which compiles orcd's
/// own feature variant: minutes in a fresh clone, inside a test that may take 90 s.
pub fn link_built_orcd(bin_dir: &Path) {
    let built = std::env::var_os("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release"))
        .join("orcd");
    if built.is_file() {
        std::os::unix::fs::symlink(&built, bin_dir.join("orcd")).unwrap_or_else(|error| {
            panic!(
                "linking {} into {}: {error}",
                built.display(),
                bin_dir.display()
            )
        });
    }
}

/// The release orcd (`cargo xtask build orcd`), or LLORCH_BIN_DIR's.
pub fn orcd_binary() -> PathBuf {
    let dir = std::env::var_os("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release"));
    let path = dir.join("orcd");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo xtask build orcd`",
        path.display()
    );
    path
}

/// A real orcd on a loopback port (optionally with tokens), stopped on drop.
pub struct Orcd {
    pub url: String,
    pub dir: tempfile::TempDir,
    /// Set when started with tokens.
    pub api_token_file: Option<PathBuf>,
    pub worker_token_file: Option<PathBuf>,
    child: Child,
}

/// The client token of [`Orcd::start_with_tokens`].
pub const API_TOKEN: &str = "api-token-for-the-pool-tests-0123456789";
/// The worker token of [`Orcd::start_with_tokens`].
pub const WORKER_TOKEN: &str = "worker-token-for-the-pool-tests-0123456789";

impl Orcd {
    /// orcd without tokens on 127.0.0.1; `args` are added to its command line.
    pub fn start(args: &[&str]) -> Orcd {
        Orcd::launch(args, false)
    }

    /// orcd that requires [`API_TOKEN`] from clients and [`WORKER_TOKEN`] from workers.
    pub fn start_with_tokens(args: &[&str]) -> Orcd {
        Orcd::launch(args, true)
    }

    fn launch(args: &[&str], tokens: bool) -> Orcd {
        let dir = tempfile::Builder::new()
            .prefix("llorch-orcd-")
            .tempdir()
            .unwrap();
        let (api_token_file, worker_token_file) = if tokens {
            let api = dir.path().join("api.token");
            let worker = dir.path().join("worker.token");
            for (path, token) in [(&api, API_TOKEN), (&worker, WORKER_TOKEN)] {
                std::fs::write(path, format!("{token}\n")).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            (Some(api), Some(worker))
        } else {
            (None, None)
        };
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let log_path = dir.path().join("orcd.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut command = Command::new(orcd_binary());
            command
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if let (Some(api), Some(worker)) = (&api_token_file, &worker_token_file) {
                command
                    .arg("--api-token-file")
                    .arg(api)
                    .arg("--worker-token-file")
                    .arg(worker);
            }
            let mut child = command.spawn().expect("starting orcd");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                if http_status(&format!("{url}/health")) == Some(200) {
                    return Orcd {
                        url,
                        dir,
                        api_token_file,
                        worker_token_file,
                        child,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("orcd did not come up; its log:\n{last_log}");
    }

    /// orcd's `GET /workers`, with the client token when it has tokens.
    pub fn workers(&self) -> Vec<serde_json::Value> {
        let token = self.api_token_file.is_some().then_some(API_TOKEN);
        orcd_client(&self.url, token)
            .get_json("/workers")
            .unwrap_or_else(|error| panic!("GET /workers on orcd: {error:#}"))
    }

    /// The one worker `id` in orcd's list, if it is there.
    pub fn worker(&self, id: &str) -> Option<serde_json::Value> {
        self.workers()
            .into_iter()
            .find(|worker| worker["worker_id"] == id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orcd.log")).unwrap_or_default()
    }
}

impl Drop for Orcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
