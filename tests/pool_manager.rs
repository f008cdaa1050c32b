//! End to end on one host: the real orcd, the real `llorch-pool-managerd` and the real worker
//! on loopback. A request for an unloaded model loads it and streams; the pool manager's
//! memory estimate is within ±25 % of the worker's measured RSS for both catalog models; a
//! SIGKILLed worker is restarted; a model too large for the `--memory-budget` gets 503 with the
//! figures; `keep_alive` unloads an idle worker.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use llorch_api::pool::{HostInfo, PoolWorker, PoolWorkerState};
use llorch_api::{StreamEvent, WorkerState};
use llorch_tests::{
    binary, greedy_task, model_base_dir, runtime, start_orcd, submit, text_of, wait_until, workers,
    Daemon,
};

const GEMMA: &str = "gemma3-270m";
const QWEN: &str = "qwen2.5-coder-0.5b";
/// Loading a model on two busy shared cores can take a while.
const LOAD_WAIT: Duration = Duration::from_secs(60);

/// Fails naming the download command when a catalog model is not on disk.
fn require_model(model: &str) {
    let catalog = llorch_catalog::Catalog::builtin();
    let entry = catalog.get(model).expect("a catalog model");
    let path = llorch_catalog::model_path(&model_base_dir(), entry);
    assert!(
        path.is_file(),
        "{model} is not at {}: run `cargo xtask models download {model}`",
        path.display()
    );
}

/// orcd with `policies`, and one pool manager registered with it.
fn start_host(dir: &Path, policies: &str, pool_args: &[&str]) -> anyhow::Result<(Daemon, Daemon)> {
    let policy_file = dir.join("policies.toml");
    std::fs::write(&policy_file, policies)?;
    let orcd = start_orcd(
        "127.0.0.1:0",
        &[
            "--model-policies",
            policy_file.to_str().unwrap(),
            "--load-timeout-secs",
            "80",
        ],
    )?;
    let mut args: Vec<String> = vec![
        "--port".into(),
        "0".into(),
        "--host-id".into(),
        "test-host".into(),
        "--orchestrator-url".into(),
        orcd.url.clone(),
        "--model-base-dir".into(),
        model_base_dir().display().to_string(),
        "--log-dir".into(),
        dir.join("logs").display().to_string(),
        "--heartbeat-interval-ms".into(),
        "200".into(),
        "--drain-timeout-secs".into(),
        "2".into(),
    ];
    args.extend(pool_args.iter().map(|arg| arg.to_string()));
    let pool = Daemon::start(
        "llorch-pool-managerd",
        &binary("llorch-pool-managerd"),
        &args,
        &[],
    )?;
    Ok((orcd, pool))
}

async fn get_json<T: serde::de::DeserializeOwned>(url: String) -> anyhow::Result<T> {
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}

async fn hosts(orcd_url: &str) -> anyhow::Result<Vec<HostInfo>> {
    get_json(format!("{orcd_url}/v2/hosts")).await
}

async fn pool_workers(pool_url: &str) -> anyhow::Result<Vec<PoolWorker>> {
    get_json(format!("{pool_url}/workers")).await
}

/// Streams a short greedy completion of `model` through orcd and returns its text.
async fn complete(orcd_url: &str, model: &str) -> anyhow::Result<String> {
    let mut task = greedy_task("The capital of France is", 8);
    task.model = model.to_owned();
    let events = submit(orcd_url, &task).await?.collect().await?;
    anyhow::ensure!(
        matches!(events.last(), Some(StreamEvent::Done(_))),
        "the stream did not end with `done`: {events:?}"
    );
    Ok(text_of(&events))
}

/// The pool manager's worker of `model`.
async fn worker_of(pool_url: &str, model: &str) -> anyhow::Result<PoolWorker> {
    pool_workers(pool_url)
        .await?
        .into_iter()
        .find(|worker| worker.launch.model == model)
        .with_context(|| format!("the pool manager lists no worker of {model}"))
}

/// |estimate − RSS| ≤ 25 % of RSS, for a worker that has served a request (its weights are
/// read in then).
fn check_estimate(worker: &PoolWorker) {
    let rss = worker.rss_bytes.expect("the RSS of a running worker") as f64;
    let estimate = worker.estimated_bytes as f64;
    let error = (estimate - rss).abs() / rss;
    eprintln!(
        "{}: estimate {:.0} MiB, measured RSS {:.0} MiB ({:+.1} %)",
        worker.launch.model,
        estimate / 1048576.0,
        rss / 1048576.0,
        (estimate - rss) / rss * 100.0
    );
    assert!(
        error <= 0.25,
        "{}: the estimate {estimate} is {:.1} % off the measured RSS {rss}",
        worker.launch.model,
        error * 100.0
    );
}

#[test]
fn memory_estimates_are_within_a_quarter_of_measured_rss() {
    require_model(GEMMA);
    require_model(QWEN);
    let dir = tempfile::tempdir().unwrap();
    let (orcd, mut pool) = start_host(dir.path(), "", &[]).unwrap();
    runtime().block_on(async {
        wait_until("the host to register", LOAD_WAIT, || async {
            hosts(&orcd.url).await.is_ok_and(|hosts| hosts.len() == 1)
        })
        .await
        .unwrap();
        for model in [GEMMA, QWEN] {
            let text = complete(&orcd.url, model).await.unwrap();
            assert!(!text.is_empty(), "{model} generated nothing");
            check_estimate(&worker_of(&pool.url, model).await.unwrap());
        }
    });
    let status = pool.terminate(Duration::from_secs(60)).unwrap();
    assert!(
        status.success(),
        "the pool manager drains its workers and exits 0: {status}"
    );
}

#[test]
fn one_host_loads_on_demand_restarts_a_killed_worker_refuses_what_does_not_fit_and_unloads() {
    require_model(GEMMA);
    require_model(QWEN);
    let dir = tempfile::tempdir().unwrap();
    // By the estimates gemma3-270m (about 370 MiB) fits 520 MiB; qwen2.5-coder-0.5b (about
    // 630 MiB) does not.
    let policies = format!("[models.\"{GEMMA}\"]\nkeep_alive = \"6s\"\n");
    let (orcd, mut pool) =
        start_host(dir.path(), &policies, &["--memory-budget", "520MiB"]).unwrap();
    runtime().block_on(async {
        wait_until("the host to register", LOAD_WAIT, || async {
            hosts(&orcd.url).await.is_ok_and(|hosts| hosts.len() == 1)
        })
        .await
        .unwrap();
        let models: serde_json::Value = get_json(format!("{}/v1/models", orcd.url)).await.unwrap();
        let status_of = |models: &serde_json::Value, id: &str| {
            models["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|model| model["id"] == id)
                .map(|model| model["status"].clone())
        };
        assert_eq!(
            status_of(&models, GEMMA),
            Some("unloaded".into()),
            "{models}"
        );

        // Unloaded → loaded on demand, and the request streams.
        let text = complete(&orcd.url, GEMMA).await.unwrap();
        assert!(!text.is_empty());
        let first = worker_of(&pool.url, GEMMA).await.unwrap();
        assert_eq!(first.state, PoolWorkerState::Running);

        // SIGKILL: the pool manager restarts it under the same id, and it serves again.
        let pid = first.pid.expect("a running worker has a pid");
        // SAFETY: kill(2) on the worker the pool manager started for this test.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        wait_until("the restart", LOAD_WAIT, || async {
            worker_of(&pool.url, GEMMA).await.is_ok_and(|worker| {
                worker.restarts == 1
                    && worker.state == PoolWorkerState::Running
                    && worker.pid != Some(pid)
            })
        })
        .await
        .unwrap();
        wait_until("orcd to see it live again", LOAD_WAIT, || async {
            workers(&orcd.url).await.is_ok_and(|workers| {
                workers.iter().any(|worker| {
                    worker.worker_id == first.worker_id && worker.state == WorkerState::Live
                })
            })
        })
        .await
        .unwrap();
        assert!(!complete(&orcd.url, GEMMA).await.unwrap().is_empty());

        // Too large for what the budget leaves: 503 naming the model and the figures.
        let mut task = greedy_task("hello", 4);
        task.model = QWEN.into();
        let error = submit(&orcd.url, &task)
            .await
            .err()
            .expect("a 503")
            .to_string();
        assert!(error.contains("503"), "{error}");
        assert!(error.contains(QWEN), "{error}");
        assert!(error.contains("MiB"), "{error}");

        // keep_alive: the idle worker is stopped, and its process is gone.
        wait_until("the idle unload", LOAD_WAIT, || async {
            pool_workers(&pool.url)
                .await
                .is_ok_and(|workers| workers.is_empty())
        })
        .await
        .unwrap();
        assert!(
            log_shows_two_starts(&first.worker_id, dir.path()),
            "the worker log records both starts"
        );
        let models: serde_json::Value = get_json(format!("{}/v1/models", orcd.url)).await.unwrap();
        assert_eq!(
            status_of(&models, GEMMA),
            Some("unloaded".into()),
            "{models}"
        );
    });
    let status = pool.terminate(Duration::from_secs(30)).unwrap();
    assert!(
        status.success(),
        "the pool manager exits 0 on SIGTERM: {status}"
    );
}

/// The worker's log holds the output of both of its processes (the first and the restart).
fn log_shows_two_starts(worker_id: &str, dir: &Path) -> bool {
    let log = std::fs::read_to_string(dir.join("logs").join(format!("{worker_id}.log")))
        .unwrap_or_default();
    log.matches("llorch-worker listening on").count() >= 2
}
