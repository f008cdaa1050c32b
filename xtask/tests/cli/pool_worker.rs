//! `cargo xtask pool worker spawn|restart|forget|list|logs|stop` on this machine, with a fake
//! llorch-worker (tests/support/fake_worker.py, which registers like the real one) and the real
//! orcd, so no model or llama.cpp build is needed.

use crate::support;

use std::time::{Duration, Instant};

use support::{http_status, pid_alive, Orcd, Xtask};

/// An isolated environment for the local pool: run dir, model dir, the fake worker, and an
/// orcd the workers register with.
struct LocalPool {
    dir: tempfile::TempDir,
    orcd: Orcd,
}

impl LocalPool {
    fn new() -> LocalPool {
        LocalPool::with_orcd(Orcd::start(&[]))
    }

    fn with_orcd(orcd: Orcd) -> LocalPool {
        let dir = tempfile::Builder::new()
            .prefix("llorch-pool-")
            .tempdir()
            .unwrap();
        support::install_fake_worker(&dir.path().join("bin"));
        LocalPool { dir, orcd }
    }

    fn run_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("run")
    }

    fn xtask(&self) -> Xtask {
        let mut xtask = support::xtask();
        xtask
            .env("LLORCH_CONFIG_PATH", self.dir.path().join("config.toml"))
            .env("LLORCH_RUN_DIR", self.run_dir())
            .env("LLORCH_STATE_DIR", self.dir.path().join("state"))
            .env("LLORCH_MODEL_BASE_DIR", self.dir.path().join("models"))
            .env("LLORCH_BIN_DIR", self.dir.path().join("bin"))
            .env("LLORCH_ORCHESTRATOR_URL", &self.orcd.url);
        if let Some(file) = &self.orcd.api_token_file {
            xtask.env("LLORCH_API_TOKEN_FILE", file);
        }
        xtask
    }
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        support::kill_recorded_daemons(&self.run_dir());
    }
}

#[test]
fn spawn_list_logs_and_stop_a_worker() {
    let pool = LocalPool::new();
    let spawned = pool
        .xtask()
        .run([
            "--json", "pool", "worker", "spawn", "cpu", "--model", "tiny", "--", "--slots", "2",
        ])
        .success()
        .json();
    let id = spawned["worker_id"].as_str().unwrap().to_owned();
    let port = spawned["port"].as_u64().unwrap();
    let pid = spawned["pid"].as_u64().unwrap() as u32;
    // HOST-MODEL, the id the fleet gives the same worker.
    assert!(id.ends_with("-tiny"), "a stable id: {spawned}");
    assert_eq!(spawned["health"]["status"], "ready", "{spawned}");
    assert_eq!(
        spawned["health"]["registration"]["state"], "registered",
        "{spawned}"
    );
    let registered = pool.orcd.worker(&id).expect("orcd lists the worker");
    assert_eq!(registered["state"], "live", "{registered}");
    assert_eq!(
        registered["url"],
        format!("http://127.0.0.1:{port}"),
        "{registered}"
    );
    // The worker outlives the xtask process that started it.
    assert!(pid_alive(pid));
    assert_eq!(
        http_status(&format!("http://127.0.0.1:{port}/health")),
        Some(200)
    );
    assert!(pool.run_dir().join(format!("{id}.pid")).exists());

    let listed = pool
        .xtask()
        .run(["--json", "pool", "worker", "list"])
        .success()
        .json();
    assert_eq!(listed[0]["name"], id.as_str(), "{listed}");
    assert_eq!(listed[0]["state"], "ready", "{listed}");
    assert_eq!(listed[0]["model"], "tiny", "{listed}");
    let table = pool.xtask().run(["pool", "worker", "list"]).success();
    assert!(
        table.stdout.contains(&id) && table.stdout.contains("ready"),
        "{table}"
    );

    let logs = pool.xtask().run(["pool", "worker", "logs", &id]).success();
    assert!(
        logs.stdout
            .contains(&format!("listening on http://127.0.0.1:{port}")),
        "{logs}"
    );
    assert!(
        logs.stdout
            .contains(&format!("orchestrator {}", pool.orcd.url)),
        "{logs}"
    );
    assert!(logs.stdout.contains("extra ['--slots', '2']"), "{logs}");
    let last = pool
        .xtask()
        .run(["pool", "worker", "logs", &id, "-n", "1"])
        .success();
    assert_eq!(last.stdout.lines().count(), 1, "{last}");

    let stopped = pool
        .xtask()
        .run(["--json", "pool", "worker", "stop", &id])
        .success()
        .json();
    assert_eq!(stopped["outcome"], "terminated", "{stopped}");
    assert!(!pid_alive(pid));
    assert_eq!(
        http_status(&format!("http://127.0.0.1:{port}/health")),
        None
    );
    let listed = pool
        .xtask()
        .run(["--json", "pool", "worker", "list"])
        .success()
        .json();
    assert_eq!(listed, serde_json::json!([]));
    // The log of a stopped worker can still be read.
    let logs = pool.xtask().run(["pool", "worker", "logs", &id]).success();
    assert!(logs.stdout.contains("SIGTERM, shutting down"), "{logs}");
}

#[test]
fn logs_follow_streams_until_the_worker_exits() {
    let pool = LocalPool::new();
    let spawned = pool
        .xtask()
        .run([
            "--json", "pool", "worker", "spawn", "cpu", "--model", "tiny", "--id", "followed",
        ])
        .success()
        .json();
    assert_eq!(spawned["worker_id"], "followed");
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(1));
            pool.xtask()
                .run(["pool", "worker", "stop", "followed"])
                .success();
        });
        pool.xtask()
            .timeout(std::time::Duration::from_secs(60))
            .run(["pool", "worker", "logs", "followed", "--follow"])
    });
    let outcome = outcome.success();
    assert!(outcome.stdout.contains("listening on"), "{outcome}");
    assert!(
        outcome.stdout.contains("SIGTERM, shutting down"),
        "the lines written while stopping arrive: {outcome}"
    );
}

#[test]
fn a_worker_that_dies_while_loading_reports_its_log_tail() {
    let pool = LocalPool::new();
    let outcome = pool.xtask().run([
        "pool",
        "worker",
        "spawn",
        "cpu",
        "--model",
        "missing-model",
        "--id",
        "doomed",
    ]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome
            .stderr
            .contains("`doomed` exited before it was ready"),
        "{outcome}"
    );
    assert!(
        outcome
            .stderr
            .contains("error: model `missing-model` is not in the catalog"),
        "{outcome}"
    );
    let listed = pool
        .xtask()
        .run(["--json", "pool", "worker", "list"])
        .success()
        .json();
    assert_eq!(listed, serde_json::json!([]), "no stale entry is left");
}

#[test]
fn a_worker_that_never_gets_ready_is_stopped_after_the_timeout() {
    let pool = LocalPool::new();
    let port = support::free_port().to_string();
    let outcome = pool.xtask().run([
        "pool",
        "worker",
        "spawn",
        "cpu",
        "--model",
        "never-ready",
        "--port",
        &port,
        "--timeout",
        "2",
    ]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome.stderr.contains("was not ready after 2 s"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("HTTP 503"), "{outcome}");
    assert_eq!(
        http_status(&format!("http://127.0.0.1:{port}/health")),
        None,
        "it was stopped"
    );
}

#[test]
fn a_missing_worker_binary_names_the_build_command() {
    let pool = LocalPool::new();
    let outcome = pool
        .xtask()
        .env("LLORCH_BIN_DIR", pool.dir.path().join("empty"))
        .run(["pool", "worker", "spawn", "cuda", "--model", "tiny"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome.stderr.contains("cargo xtask build worker cuda"),
        "{outcome}"
    );
}

#[test]
fn stopping_or_reading_an_unknown_worker_is_an_error() {
    let pool = LocalPool::new();
    for args in [
        ["pool", "worker", "stop", "ghost"],
        ["pool", "worker", "logs", "ghost"],
    ] {
        let outcome = pool.xtask().run(args);
        assert_eq!(outcome.code(), 1, "{outcome}");
        assert!(
            outcome
                .stderr
                .contains("`cargo xtask pool worker list` shows the workers"),
            "{outcome}"
        );
    }
}

#[test]
fn pool_models_needs_a_host() {
    let pool = LocalPool::new();
    let outcome = pool.xtask().run(["pool", "models", "list"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(outcome.stderr.contains("pass --host HOST"), "{outcome}");
}

/// Waits until orcd's record of `id` satisfies `done`.
fn wait_for_orcd(
    orcd: &Orcd,
    id: &str,
    done: impl Fn(Option<&serde_json::Value>) -> bool,
) -> Option<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let worker = orcd.worker(id);
        if done(worker.as_ref()) {
            return worker;
        }
        assert!(
            Instant::now() < deadline,
            "orcd's record of `{id}` never changed as expected: {worker:?}\n{}",
            orcd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_spawn_whose_worker_cannot_register_fails_with_the_workers_reason() {
    let pool = LocalPool::with_orcd(Orcd::start_with_tokens(&[]));
    let port = support::free_port().to_string();
    let outcome = pool.xtask().run([
        "pool",
        "worker",
        "spawn",
        "cpu",
        "--model",
        "tiny",
        "--id",
        "tokenless",
        "--port",
        &port,
    ]);
    assert_eq!(outcome.code(), 1, "spawn must fail: {outcome}");
    assert!(
        outcome.stderr.contains("did not register with orcd"),
        "{outcome}"
    );
    assert!(
        outcome.stderr.contains("401"),
        "the worker's reason: {outcome}"
    );
    assert!(
        outcome.stderr.contains("\nhint: ") && outcome.stderr.contains("--worker-token-file"),
        "the fix: {outcome}"
    );
    assert_eq!(
        http_status(&format!("http://127.0.0.1:{port}/health")),
        None,
        "the worker was stopped"
    );
    assert!(pool.orcd.worker("tokenless").is_none());

    // With the token, the same spawn succeeds and orcd lists the worker.
    let token = pool.orcd.worker_token_file.clone().unwrap();
    let spawned = pool
        .xtask()
        .run([
            "--json",
            "pool",
            "worker",
            "spawn",
            "cpu",
            "--model",
            "tiny",
            "--id",
            "tokenless",
            "--worker-token-file",
            token.to_str().unwrap(),
        ])
        .success()
        .json();
    assert_eq!(spawned["worker_id"], "tokenless", "{spawned}");
    assert_eq!(pool.orcd.worker("tokenless").unwrap()["state"], "live");
}

#[test]
fn a_spawn_whose_orchestrator_is_unreachable_fails_naming_the_url() {
    let pool = LocalPool::new();
    let outcome = pool
        .xtask()
        .env("LLORCH_ORCHESTRATOR_URL", "http://127.0.0.1:1")
        .run([
            "pool", "worker", "spawn", "cpu", "--model", "tiny", "--id", "lonely",
        ]);
    assert_eq!(outcome.code(), 1, "spawn must fail: {outcome}");
    assert!(
        outcome
            .stderr
            .contains("orcd at http://127.0.0.1:1 did not answer"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("--orchestrator-url"), "{outcome}");
    let listed = pool
        .xtask()
        .run(["--json", "pool", "worker", "list"])
        .success()
        .json();
    assert_eq!(listed, serde_json::json!([]), "the worker was stopped");
}

#[test]
fn a_restarted_worker_keeps_its_id_and_replaces_its_record() {
    let pool = LocalPool::new();
    let spawned = pool
        .xtask()
        .run([
            "--json", "pool", "worker", "spawn", "cpu", "--model", "tiny",
        ])
        .success()
        .json();
    let id = spawned["worker_id"].as_str().unwrap().to_owned();
    let first_pid = spawned["pid"].as_u64().unwrap() as u32;

    let restarted = pool
        .xtask()
        .run(["--json", "pool", "worker", "restart", &id])
        .success()
        .json();
    assert_eq!(restarted["worker_id"], id.as_str(), "{restarted}");
    let second_pid = restarted["pid"].as_u64().unwrap() as u32;
    assert_ne!(first_pid, second_pid);
    assert!(!pid_alive(first_pid));
    let records: Vec<_> = pool
        .orcd
        .workers()
        .into_iter()
        .filter(|worker| worker["state"] == "live")
        .collect();
    assert_eq!(records.len(), 1, "one live record, not two: {records:?}");
    assert_eq!(records[0]["worker_id"], id.as_str());

    // As after a reboot: the process and the run directory are gone, the saved spawn is not.
    unsafe { libc::kill(-(second_pid as libc::pid_t), libc::SIGKILL) };
    std::fs::remove_dir_all(pool.run_dir()).unwrap();
    let again = pool
        .xtask()
        .run(["--json", "pool", "worker", "restart", &id])
        .success()
        .json();
    assert_eq!(again["worker_id"], id.as_str(), "{again}");
    assert_eq!(pool.orcd.worker(&id).unwrap()["state"], "live");
}

#[test]
fn forget_removes_a_dead_worker_from_orcd_and_refuses_a_live_one() {
    let pool = LocalPool::with_orcd(Orcd::start(&["--heartbeat-timeout-secs", "2"]));
    let spawned = pool
        .xtask()
        .run([
            "--json", "pool", "worker", "spawn", "cpu", "--model", "tiny", "--id", "goner",
        ])
        .success()
        .json();
    let pid = spawned["pid"].as_u64().unwrap() as u32;

    let refused = pool.xtask().run(["pool", "worker", "forget", "goner"]);
    assert_eq!(refused.code(), 1, "{refused}");
    assert!(refused.stderr.contains("is live"), "{refused}");
    assert!(refused.stderr.contains("pool worker stop"), "{refused}");

    // Killed without a chance to deregister: orcd keeps it as dead.
    unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
    wait_for_orcd(&pool.orcd, "goner", |worker| {
        worker.is_some_and(|worker| worker["state"] == "dead")
    });
    let forgotten = pool
        .xtask()
        .run(["pool", "worker", "forget", "goner"])
        .success();
    assert!(forgotten.stdout.contains("forgot `goner`"), "{forgotten}");
    assert!(pool.orcd.worker("goner").is_none());
    assert!(
        pool.orcd
            .log()
            .contains("forgotten at the operator's request"),
        "orcd logs it: {}",
        pool.orcd.log()
    );
}

#[test]
fn a_catalog_d_model_reaches_the_worker_as_its_file_and_registers_under_its_id() {
    let pool = LocalPool::new();
    let original = pool.dir.path().join("Mine-Q4.gguf");
    std::fs::write(&original, b"GGUF\x03\0\0\0 a tiny stand-in for a model").unwrap();
    let original = original.to_str().unwrap().to_owned();
    pool.xtask()
        .run(["models", "add", &original, "--id", "mine"])
        .success();

    let spawned = pool
        .xtask()
        .run([
            "--json", "pool", "worker", "spawn", "cpu", "--model", "mine", "--id", "w-mine",
        ])
        .success()
        .json();
    assert_eq!(spawned["model"], "mine", "{spawned}");
    let registered = pool.orcd.worker("w-mine").expect("orcd lists the worker");
    assert_eq!(registered["model"], "mine", "{registered}");
    // The worker does not read catalog.d: it was handed the file and the id.
    let file = pool.dir.path().join("models/mine/Mine-Q4.gguf");
    let logs = pool
        .xtask()
        .run(["pool", "worker", "logs", "w-mine"])
        .success();
    assert!(
        logs.stdout
            .contains(&format!("model {} on cpu", file.display())),
        "{logs}"
    );
    pool.xtask()
        .run(["pool", "worker", "stop", "w-mine"])
        .success();

    // Once deleted, spawning says how to get it back instead of starting a doomed worker.
    pool.xtask()
        .run(["models", "delete", "mine", "--force"])
        .success();
    let outcome = pool.xtask().run([
        "pool", "worker", "spawn", "cpu", "--model", "mine", "--id", "w-mine",
    ]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome.stderr.contains("model `mine` (")
            && outcome
                .stderr
                .contains("is in the catalog but not downloaded"),
        "{outcome}"
    );
}
