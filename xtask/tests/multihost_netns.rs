//! The README's multi-host path across real network boundaries: orcd (and the operator) in one
//! network namespace, two pool hosts in two others, each with its own sshd, joined by veth
//! pairs. Run command by command as the README's "Many hosts" section says, then the failures
//! the path must report: a loopback orchestrator URL, a loopback advertised address, and a link
//! that dies mid-stream (the client hears of it when orcd marks the worker dead).
//!
//! Needs root and `ip netns`; without them every test is reported as ignored (skipped), never
//! passed. Needs the release `orcd` and `llorch-worker` (`cargo xtask build all`) and the default
//! model (`cargo xtask models download`). Namespaces are named `lo-mh-*`.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libtest_mimic::{Arguments, Failed, Trial};
use support::netns::{in_netns, ip, KillOnDrop};
use support::{Sshd, SshdOptions, Xtask, API_TOKEN, WORKER_TOKEN};

fn main() {
    let mut args = Arguments::from_args();
    // Each test loads the model on two hosts; running them one at a time keeps them in time.
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let skip = netns_unavailable();
    if let Some(reason) = &skip {
        eprintln!("multihost_netns: skipping every test: network namespaces are not available here ({reason})");
    }
    let trial = |name: &'static str, test: fn() -> Result<(), Failed>| {
        Trial::test(name, test).with_ignored_flag(skip.is_some())
    };
    let tests = vec![
        trial(
            "readme_multi_host_path_gives_two_hosts_serving_jobs",
            readme_multi_host_path_gives_two_hosts_serving_jobs,
        ),
        trial(
            "a_loopback_orchestrator_or_advertised_address_is_refused_with_the_flag_to_set",
            a_loopback_orchestrator_or_advertised_address_is_refused_with_the_flag_to_set,
        ),
        trial(
            "a_dead_link_ends_the_clients_stream_within_the_heartbeat_timeout",
            a_dead_link_ends_the_clients_stream_within_the_heartbeat_timeout,
        ),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Why namespaces cannot be made here, or `None` when they can (one is made and deleted).
fn netns_unavailable() -> Option<String> {
    // SAFETY: geteuid has no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".to_owned());
    }
    let probe = format!("lo-mh-probe-{}", std::process::id());
    match ip(&["netns", "add", &probe]) {
        Ok(()) => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Err(error) => Some(error),
    }
}

/// Three namespaces: `orcd` (orcd and the operator) joined to `a` and `b` by veth pairs, with
/// routes so both hosts reach orcd at one address, `orcd_ip`. Deleted on drop.
struct Net {
    orcd: String,
    a: String,
    b: String,
    orcd_ip: String,
    a_ip: String,
    b_ip: String,
    /// The orcd side of the link to `a`, for cutting it.
    link_to_a: String,
}

impl Net {
    fn create(test: &str) -> Net {
        let tag = format!("{}-{test}", std::process::id() % 100_000);
        let net = Net {
            orcd: format!("lo-mh-o-{tag}"),
            a: format!("lo-mh-a-{tag}"),
            b: format!("lo-mh-b-{tag}"),
            orcd_ip: "10.77.1.1".to_owned(),
            a_ip: "10.77.1.2".to_owned(),
            b_ip: "10.77.2.2".to_owned(),
            link_to_a: format!("mhoa{tag}").chars().take(15).collect(),
        };
        let link_to_b: String = format!("mhob{tag}").chars().take(15).collect();
        let (a_end, b_end): (String, String) = (
            format!("mhao{tag}").chars().take(15).collect(),
            format!("mhbo{tag}").chars().take(15).collect(),
        );
        let run = |args: &[&str]| ip(args).unwrap_or_else(|error| panic!("{error}"));
        for netns in [&net.orcd, &net.a, &net.b] {
            run(&["netns", "add", netns]);
            run(&["-n", netns, "link", "set", "lo", "up"]);
        }
        for (host, orcd_end, host_end, orcd_address, host_address) in [
            (
                &net.a,
                &net.link_to_a,
                &a_end,
                "10.77.1.1/24",
                "10.77.1.2/24",
            ),
            (&net.b, &link_to_b, &b_end, "10.77.2.1/24", "10.77.2.2/24"),
        ] {
            run(&[
                "link", "add", orcd_end, "netns", &net.orcd, "type", "veth", "peer", "name",
                host_end, "netns", host,
            ]);
            run(&[
                "-n",
                &net.orcd,
                "addr",
                "add",
                orcd_address,
                "dev",
                orcd_end,
            ]);
            run(&["-n", host, "addr", "add", host_address, "dev", host_end]);
            run(&["-n", &net.orcd, "link", "set", orcd_end, "up"]);
            run(&["-n", host, "link", "set", host_end, "up"]);
            let gateway = orcd_address.trim_end_matches("/24");
            run(&["-n", host, "route", "add", "default", "via", gateway]);
        }
        net
    }

    fn orcd_url(&self) -> String {
        format!("http://{}:8080", self.orcd_ip)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for netns in [&self.orcd, &self.a, &self.b] {
            let _ = ip(&["netns", "del", netns]);
        }
    }
}

fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target/release"));
    for name in ["orcd", "llorch-worker"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build it with `cargo xtask build all`",
            dir.join(name).display()
        );
    }
    dir
}

fn model_base_dir() -> (PathBuf, String) {
    let dir = std::env::var_os("LLORCH_MODEL_BASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(llorch_catalog::default_model_base_dir);
    let catalog = llorch_catalog::Catalog::builtin();
    let model = catalog.default_model();
    let path = llorch_catalog::model_path(&dir, model);
    assert!(
        path.is_file(),
        "the default model is not at {}: run `cargo xtask models download {}`",
        path.display(),
        model.id
    );
    (dir, model.id.clone())
}

/// orcd, off loopback and so with tokens, in the `orcd` namespace; and both hosts' sshd.
struct Fleet {
    net: Net,
    tokens: tempfile::TempDir,
    a: Sshd,
    b: Sshd,
    model: String,
    _orcd: KillOnDrop,
    orcd_log: PathBuf,
}

impl Fleet {
    fn start(test: &str) -> Fleet {
        let net = Net::create(test);
        let bin_dir = bin_dir();
        let (model_dir, model) = model_base_dir();
        let tokens = tempfile::tempdir().unwrap();
        for (name, token) in [("api.token", API_TOKEN), ("worker.token", WORKER_TOKEN)] {
            let path = tokens.path().join(name);
            std::fs::write(&path, format!("{token}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // orcd's log goes to stderr; stdout has only its "listening" line.
        let orcd_log = tokens.path().join("orcd.err");
        let orcd = KillOnDrop(
            Command::new("ip")
                .args(["netns", "exec", &net.orcd])
                .arg(bin_dir.join("orcd"))
                .args(["--listen", "0.0.0.0:8080", "--heartbeat-timeout-secs", "3"])
                .arg("--api-token-file")
                .arg(tokens.path().join("api.token"))
                .arg("--worker-token-file")
                .arg(tokens.path().join("worker.token"))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(tokens.path().join("orcd.out")).unwrap())
                .stderr(std::fs::File::create(&orcd_log).unwrap())
                .spawn()
                .expect("starting orcd"),
        );
        let health = format!("{}/health", net.orcd_url());
        let up = in_netns(&net.orcd, || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if support::http_status(&health) == Some(200) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        });
        assert!(
            up,
            "orcd did not come up: {}",
            std::fs::read_to_string(tokens.path().join("orcd.err")).unwrap_or_default()
        );
        let sshd = |netns: &str, address: &str| {
            Sshd::start_with(SshdOptions {
                netns: Some(netns.to_owned()),
                listen: address.parse().unwrap(),
                remote_bin_dir: Some(bin_dir.clone()),
                remote_model_base_dir: Some(model_dir.clone()),
            })
        };
        let a = sshd(&net.a, &net.a_ip);
        let b = sshd(&net.b, &net.b_ip);
        // The operator's config starts empty: the README's commands fill it.
        std::fs::write(&a.local.config_path, "version = 1\n").unwrap();
        Fleet {
            net,
            tokens,
            a,
            b,
            model,
            _orcd: orcd,
            orcd_log,
        }
    }

    fn api_token_file(&self) -> PathBuf {
        self.tokens.path().join("api.token")
    }

    fn worker_token_file(&self) -> PathBuf {
        self.tokens.path().join("worker.token")
    }

    /// The operator's xtask: in orcd's namespace, with the orchestrator and client token set
    /// the way the README says (environment variables).
    fn operator(&self) -> Xtask {
        let mut xtask = self.a.xtask_in_netns(Some(&self.net.orcd));
        xtask
            .env("LLORCH_ORCHESTRATOR_URL", self.net.orcd_url())
            .env("LLORCH_API_TOKEN_FILE", self.api_token_file());
        xtask
    }

    /// `remote hosts add` for both hosts, as the README does.
    fn add_hosts(&self) {
        for (name, sshd) in [("host-a", &self.a), ("host-b", &self.b)] {
            self.operator()
                .run([
                    "remote",
                    "hosts",
                    "add",
                    name,
                    &format!("{}@{}:{}", sshd.user, sshd.listen, sshd.port),
                    "--identity",
                    sshd.client_key.to_str().unwrap(),
                    "--repo-path",
                    support::repo_root().to_str().unwrap(),
                ])
                .success();
        }
    }

    fn spawn(&self, host: &str, extra: &[&str]) -> support::Outcome {
        let mut args = vec![
            "pool",
            "worker",
            "spawn",
            "cpu",
            "--model",
            &self.model,
            "--host",
            host,
            "--timeout",
            "240",
        ];
        args.extend_from_slice(extra);
        self.operator().run(args)
    }

    /// orcd's `GET /workers`, asked from its own namespace.
    fn workers(&self) -> Vec<llorch_api::WorkerInfo> {
        in_netns(&self.net.orcd, || {
            support::orcd_client(&self.net.orcd_url(), Some(API_TOKEN))
                .workers()
                .unwrap()
        })
    }

    fn orcd_log(&self) -> String {
        std::fs::read_to_string(&self.orcd_log).unwrap_or_default()
    }
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    match condition {
        true => Ok(()),
        false => Err(message().into()),
    }
}

fn readme_multi_host_path_gives_two_hosts_serving_jobs() -> Result<(), Failed> {
    let fleet = Fleet::start("1");
    fleet.add_hosts();
    fleet
        .operator()
        .run(["remote", "check", "host-a", "host-b"])
        .success();
    let token = fleet.worker_token_file();
    let token = token.to_str().unwrap();
    let worker_args = ["--", "--slots", "1", "--ctx-size", "512"];
    for host in ["host-a", "host-b"] {
        let mut extra = vec!["--worker-token-file", token];
        extra.extend_from_slice(&worker_args);
        let outcome = fleet.spawn(host, &extra);
        check(outcome.status.success(), || {
            format!(
                "spawn on {host} failed: {outcome}\norcd:\n{}",
                fleet.orcd_log()
            )
        })?;
        check(outcome.stderr.contains("as live"), || {
            format!("spawn on {host} did not confirm the worker in orcd: {outcome}")
        })?;
    }
    // The token went to each host, with mode 0600.
    for sshd in [&fleet.a, &fleet.b] {
        let copied = sshd.remote.config_home.join("llorch/worker.token");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copied)?.permissions().mode() & 0o777;
        check(mode == 0o600, || {
            format!("{} has mode {mode:o}", copied.display())
        })?;
        check(
            std::fs::read_to_string(&copied)?.contains(WORKER_TOKEN),
            || format!("{} does not hold the worker token", copied.display()),
        )?;
    }

    let id_a = format!("host-a-{}", fleet.model);
    let id_b = format!("host-b-{}", fleet.model);
    let workers = fleet.workers();
    for (id, address) in [(&id_a, &fleet.net.a_ip), (&id_b, &fleet.net.b_ip)] {
        let worker = workers.iter().find(|worker| &worker.worker_id == id);
        check(
            worker.is_some_and(|worker| {
                worker.state == llorch_api::WorkerState::Live
                    && worker.url.starts_with(&format!("http://{address}:"))
            }),
            || format!("`{id}` is not live at {address} in orcd: {workers:?}"),
        )?;
    }

    // Two jobs at once, one slot per worker: each host serves one.
    let served: Vec<String> = in_netns(&fleet.net.orcd, || {
        std::thread::scope(|scope| {
            let jobs: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        support::orcd_client(&fleet.net.orcd_url(), Some(API_TOKEN))
                            .post_body(
                                "/v2/tasks",
                                &serde_json::json!({
                                    "model": fleet.model,
                                    "prompt": "The capital of France is",
                                    "max_tokens": 24,
                                    "stream": false,
                                }),
                            )
                            .map(|result: llorch_api::TaskResult| result.worker_id)
                            .unwrap_or_else(|error| format!("failed: {error:#}"))
                    })
                })
                .collect();
            jobs.into_iter().map(|job| job.join().unwrap()).collect()
        })
    });
    let mut sorted = served.clone();
    sorted.sort();
    check(sorted == [id_a.clone(), id_b.clone()], || {
        format!(
            "the two jobs ran on {served:?}, not one on each host; orcd:\n{}",
            fleet.orcd_log()
        )
    })?;

    // The README's client command.
    let submitted = fleet.operator().run([
        "jobs",
        "submit",
        "--model",
        &fleet.model,
        "--prompt",
        "Hello",
        "--max-tokens",
        "8",
    ]);
    check(
        submitted.status.success() && !submitted.stdout.is_empty(),
        || format!("jobs submit: {submitted}"),
    )?;

    // A restart keeps the id, so orcd has one record for it, live again.
    let restarted = fleet
        .operator()
        .run(["pool", "worker", "restart", &id_a, "--host", "host-a"]);
    check(restarted.status.success(), || {
        format!("restart: {restarted}")
    })?;
    let records: Vec<_> = fleet
        .workers()
        .into_iter()
        .filter(|worker| worker.worker_id.starts_with("host-a-"))
        .collect();
    check(
        records.len() == 1 && records[0].state == llorch_api::WorkerState::Live,
        || format!("after the restart orcd has {records:?}"),
    )?;

    for (id, host) in [(&id_a, "host-a"), (&id_b, "host-b")] {
        fleet
            .operator()
            .run(["pool", "worker", "stop", id, "--host", host])
            .success();
    }
    Ok(())
}

fn a_loopback_orchestrator_or_advertised_address_is_refused_with_the_flag_to_set(
) -> Result<(), Failed> {
    let fleet = Fleet::start("2");
    fleet.add_hosts();
    let token = fleet.worker_token_file();
    let token = token.to_str().unwrap();

    // The orchestrator URL of a single-machine setup: refused before anything starts.
    let outcome = fleet
        .operator()
        .env("LLORCH_ORCHESTRATOR_URL", "http://127.0.0.1:8080")
        .run([
            "pool",
            "worker",
            "spawn",
            "cpu",
            "--model",
            &fleet.model,
            "--host",
            "host-a",
        ]);
    check(outcome.code() == 1, || {
        format!("expected a refusal: {outcome}")
    })?;
    check(
        outcome.stderr.contains("loopback") && outcome.stderr.contains("--orchestrator-url"),
        || format!("the error must name the flag: {outcome}"),
    )?;

    // A worker advertising loopback from another machine: orcd refuses it, the worker reports
    // why, spawn fails with the flag to set and leaves nothing running.
    let outcome = fleet.spawn(
        "host-a",
        &[
            "--worker-token-file",
            token,
            "--advertise-host",
            "127.0.0.1",
            "--id",
            "loopy",
            "--",
            "--slots",
            "1",
            "--ctx-size",
            "512",
        ],
    );
    check(outcome.code() == 1, || {
        format!("expected a failure: {outcome}")
    })?;
    check(
        outcome.stderr.contains("loopback") && outcome.stderr.contains("--advertise-url"),
        || format!("the worker's reason and the flag: {outcome}"),
    )?;
    check(
        !fleet
            .workers()
            .iter()
            .any(|worker| worker.worker_id == "loopy"),
        || "orcd registered the loopback worker".to_owned(),
    )?;
    check(!fleet.a.remote.run_dir.join("loopy.pid").exists(), || {
        "the refused worker was left running".to_owned()
    })?;
    check(fleet.orcd_log().contains("registration refused"), || {
        format!("orcd logs the refusal: {}", fleet.orcd_log())
    })?;
    Ok(())
}

/// The worker's side of a dead link (a stream nobody reads is cancelled after 10 s) is tested
/// in llorch-worker's `server` tests: how much a dead TCP link absorbs before a write stalls
/// depends on kernel buffers, too much to bound a test on.
fn a_dead_link_ends_the_clients_stream_within_the_heartbeat_timeout() -> Result<(), Failed> {
    let fleet = Fleet::start("3");
    fleet.add_hosts();
    let token = fleet.worker_token_file();
    let outcome = fleet.spawn(
        "host-a",
        &[
            "--worker-token-file",
            token.to_str().unwrap(),
            "--id",
            "cut-off",
            "--",
            "--slots",
            "1",
            "--ctx-size",
            "2048",
        ],
    );
    check(outcome.status.success(), || format!("spawn: {outcome}"))?;

    let url = format!("{}/v2/tasks", fleet.net.orcd_url());
    let link = fleet.net.link_to_a.clone();
    let orcd_netns = fleet.net.orcd.clone();
    // Stream a long job; after a few tokens the link to the host goes down for good.
    let (tokens_before_cut, ended_after, last_line) = in_netns(&fleet.net.orcd, || {
        let response = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
            .post(&url)
            .bearer_auth(API_TOKEN)
            .json(&serde_json::json!({
                "model": fleet.model,
                "prompt": "List the numbers from one to one thousand, one per line:",
                "max_tokens": 1800,
                "stream": true,
            }))
            .send()
            .and_then(|response| response.error_for_status())
            .expect("submitting the job");
        let mut lines = BufReader::new(response).lines();
        let mut tokens = 0;
        let mut cut_at = None;
        let mut last = String::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.starts_with("event: token") {
                tokens += 1;
                if tokens == 5 && cut_at.is_none() {
                    ip(&["-n", &orcd_netns, "link", "set", &link, "down"]).unwrap();
                    cut_at = Some(Instant::now());
                }
            }
            if !line.is_empty() {
                last = line;
            }
        }
        (tokens, cut_at.map(|cut| cut.elapsed()), last)
    });
    let ended_after = ended_after.ok_or_else(|| {
        Failed::from(format!(
            "the job ended after {tokens_before_cut} tokens, before the link was cut"
        ))
    })?;
    // orcd marks the worker dead after 3 s without heartbeats and ends the stream then, not
    // when its 60 s read timeout would.
    check(ended_after < Duration::from_secs(10), || {
        format!("the client learned of the lost worker only after {ended_after:?}")
    })?;
    check(last_line.contains("cut-off"), || {
        format!("the stream must end with an error naming the worker: {last_line}")
    })?;

    Ok(())
}
