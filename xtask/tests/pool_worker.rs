//! `cargo xtask pool worker spawn|list|logs|stop` on this machine, with a fake llorch-worker
//! (tests/support/fake_worker.py) so no model or llama.cpp build is needed.

mod support;

use support::{http_status, pid_alive, Xtask};

/// An isolated environment for the local pool: run dir, model dir and the fake worker.
struct LocalPool {
    dir: tempfile::TempDir,
}

impl LocalPool {
    fn new() -> LocalPool {
        let dir = tempfile::Builder::new()
            .prefix("llorch-pool-")
            .tempdir()
            .unwrap();
        support::install_fake_worker(&dir.path().join("bin"));
        LocalPool { dir }
    }

    fn run_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("run")
    }

    fn xtask(&self) -> Xtask {
        let mut xtask = Xtask::new();
        xtask
            .env("LLORCH_CONFIG_PATH", self.dir.path().join("config.toml"))
            .env("LLORCH_RUN_DIR", self.run_dir())
            .env("LLORCH_MODEL_BASE_DIR", self.dir.path().join("models"))
            .env("LLORCH_BIN_DIR", self.dir.path().join("bin"))
            .env("LLORCH_ORCHESTRATOR_URL", "http://127.0.0.1:1");
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
    assert!(
        id.starts_with("worker-") && id.ends_with(&format!("-{port}")),
        "{spawned}"
    );
    assert_eq!(spawned["health"]["status"], "ready", "{spawned}");
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
        logs.stdout.contains("orchestrator http://127.0.0.1:1"),
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
