//! Models on demand through orcd's real HTTP surface, with fake pool managers (small axum
//! servers that "start" fake workers and report their host) so no model is loaded: a request
//! for an unloaded model loads it and completes, idle workers are unloaded after keep_alive,
//! no room is a 503 with the figures, a failed start answers with the host's reason and the
//! next request avoids that host, a native stream says which host its model loads on while it
//! waits, the pool routes need the worker token, and a catalog model no host has is downloaded
//! on a host first.

use crate::support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::{Json, Router};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use llorch_api::fleet::FleetEvent;
use llorch_api::pool::{
    DiskModel, DownloadState, HostFacts, HostInfo, HostState, ModelDownload, PoolErrorBody,
    PoolRegistration, PoolWorker, PoolWorkerState, StopMode, WorkerLaunch, WorkerStarted,
};
use llorch_api::{Backend, ErrorBody, ErrorKind, StreamEvent};
use orcd::pools::{Policies, PoolSettings};
use orcd::Settings;
use support::{eventually, within, FakeWorker, Orcd, Script};
use tokio::net::TcpListener;

const MIB: u64 = 1 << 20;
const MODEL: &str = "qwen2.5-coder-0.5b";

/// What a fake pool manager does with `POST /workers`.
#[derive(Debug, Clone)]
enum OnStart {
    /// Starts a fake worker that registers with orcd.
    Register,
    /// Answers 500 with this message, as a pool manager whose worker binary is missing would.
    Fail(&'static str),
}

#[derive(Default)]
struct PoolLog {
    workers: Vec<PoolWorker>,
    starts: Vec<WorkerLaunch>,
    stops: Vec<(String, StopMode)>,
    fake_workers: Vec<FakeWorker>,
    /// Models orcd asked it to download.
    downloads: Vec<String>,
}

#[derive(Clone)]
struct FakePool {
    host_id: String,
    orcd_url: String,
    on_start: OnStart,
    log: Arc<Mutex<PoolLog>>,
    /// `MODEL` is on its disk (false until a download of it "finished").
    on_disk: Arc<AtomicBool>,
    /// Its downloads fail (as one whose bytes do not match the catalog's checksum).
    download_fails: bool,
}

impl FakePool {
    /// Serves the pool manager's API, registers with orcd and heartbeats `ram_free_mib` of
    /// RAM with `MODEL` (estimated at `model_mib`) on disk.
    async fn start(
        orcd: &Orcd,
        host_id: &str,
        ram_free_mib: u64,
        model_mib: u64,
        on_start: OnStart,
    ) -> FakePool {
        FakePool::start_with(
            orcd,
            host_id,
            ram_free_mib,
            model_mib,
            on_start,
            true,
            false,
        )
        .await
    }

    /// [`FakePool::start`] without `MODEL` on its disk; a download of it lands after 300 ms.
    async fn start_without_model(orcd: &Orcd, host_id: &str) -> FakePool {
        FakePool::start_with(orcd, host_id, 4096, 400, OnStart::Register, false, false).await
    }

    /// [`FakePool::start_without_model`] whose downloads fail.
    async fn start_with_failing_downloads(orcd: &Orcd, host_id: &str) -> FakePool {
        FakePool::start_with(orcd, host_id, 4096, 400, OnStart::Register, false, true).await
    }

    async fn start_with(
        orcd: &Orcd,
        host_id: &str,
        ram_free_mib: u64,
        model_mib: u64,
        on_start: OnStart,
        on_disk: bool,
        download_fails: bool,
    ) -> FakePool {
        let pool = FakePool {
            host_id: host_id.into(),
            orcd_url: orcd.url.clone(),
            on_start,
            log: Arc::default(),
            on_disk: Arc::new(AtomicBool::new(on_disk)),
            download_fails,
        };
        let router = Router::new()
            .route("/workers", post(start_worker).get(list_workers))
            .route("/workers/{worker_id}", delete(stop_worker))
            .route("/models/{model}/download", post(download_model))
            .route("/downloads", axum::routing::get(list_downloads))
            .with_state(pool.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let registration = PoolRegistration {
            host_id: host_id.into(),
            url,
            facts: pool.facts(ram_free_mib, model_mib),
        };
        let response = client
            .post(format!("{}/pools/register", orcd.url))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let heartbeats = pool.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let facts = heartbeats.facts(ram_free_mib, model_mib);
                let url = format!(
                    "{}/pools/{}/heartbeat",
                    heartbeats.orcd_url, heartbeats.host_id
                );
                let _ = client.post(url).json(&facts).send().await;
            }
        });
        pool
    }

    fn facts(&self, ram_free_mib: u64, model_mib: u64) -> HostFacts {
        HostFacts {
            host_name: self.host_id.clone(),
            os: "test".into(),
            cpu_model: "test cpu".into(),
            physical_cores: 2,
            ram_total_bytes: 16 << 30,
            ram_available_bytes: ram_free_mib * MIB,
            load_average: 0.0,
            gpus: Vec::new(),
            disk_free_bytes: 1 << 40,
            models: [DiskModel {
                model: MODEL.into(),
                file: "model.gguf".into(),
                bytes: model_mib * MIB / 2,
                verified: true,
                estimated_bytes: model_mib * MIB,
            }]
            .into_iter()
            .filter(|_| self.on_disk.load(Ordering::SeqCst))
            .collect(),
            workers: self.log.lock().unwrap().workers.clone(),
            memory_budget_bytes: None,
            backends: vec![Backend::Cpu],
        }
    }

    fn starts(&self) -> Vec<WorkerLaunch> {
        self.log.lock().unwrap().starts.clone()
    }

    fn stops(&self) -> Vec<(String, StopMode)> {
        self.log.lock().unwrap().stops.clone()
    }

    fn downloads(&self) -> Vec<String> {
        self.log.lock().unwrap().downloads.clone()
    }
}

fn download_of(pool: &FakePool, model: String) -> ModelDownload {
    if pool.download_fails {
        return ModelDownload {
            model,
            state: DownloadState::Failed,
            bytes_done: 100,
            bytes_total: 100,
            error: Some("checksum mismatch for `model.gguf`".into()),
        };
    }
    let done = pool.on_disk.load(Ordering::SeqCst);
    ModelDownload {
        model,
        state: if done {
            DownloadState::Done
        } else {
            DownloadState::Downloading
        },
        bytes_done: if done { 100 } else { 0 },
        bytes_total: 100,
        error: None,
    }
}

async fn download_model(
    State(pool): State<FakePool>,
    Path(model): Path<String>,
) -> (StatusCode, Json<ModelDownload>) {
    pool.log.lock().unwrap().downloads.push(model.clone());
    (StatusCode::ACCEPTED, Json(download_of(&pool, model)))
}

/// A started download is under way when it is asked for, and done (on disk) by the first time
/// orcd asks how it goes: no clock in the fake.
async fn list_downloads(State(pool): State<FakePool>) -> Json<Vec<ModelDownload>> {
    let models = pool.log.lock().unwrap().downloads.clone();
    if !models.is_empty() && !pool.download_fails {
        pool.on_disk.store(true, Ordering::SeqCst);
    }
    Json(
        models
            .into_iter()
            .map(|model| download_of(&pool, model))
            .collect(),
    )
}

async fn start_worker(
    State(pool): State<FakePool>,
    Json(launch): Json<WorkerLaunch>,
) -> axum::response::Response {
    pool.log.lock().unwrap().starts.push(launch.clone());
    if let OnStart::Fail(message) = pool.on_start {
        let body = PoolErrorBody {
            error: message.into(),
            error_type: ErrorKind::Internal,
            no_room: None,
        };
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
    }
    let worker_id = format!("{}-{}-1", pool.host_id, launch.model);
    let fake = FakeWorker::start(Script::complete(3, Duration::ZERO)).await;
    let registration = fake.registration(&worker_id, &launch.model, launch.slots_or_default());
    let worker = PoolWorker {
        worker_id: worker_id.clone(),
        launch,
        port: None,
        pid: Some(1),
        state: PoolWorkerState::Running,
        rss_bytes: None,
        estimated_bytes: 100 * MIB,
        restarts: 0,
        last_log: Vec::new(),
    };
    {
        let mut log = pool.log.lock().unwrap();
        log.workers.push(worker.clone());
        log.fake_workers.push(fake);
    }
    // The worker registers once "loaded", a moment after the start was answered.
    let orcd_url = pool.orcd_url.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = client
            .post(format!("{orcd_url}/workers/register"))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    });
    (StatusCode::CREATED, Json(WorkerStarted { worker })).into_response()
}

async fn list_workers(State(pool): State<FakePool>) -> Json<Vec<PoolWorker>> {
    Json(pool.log.lock().unwrap().workers.clone())
}

#[derive(serde::Deserialize)]
struct StopQuery {
    mode: StopMode,
}

async fn stop_worker(
    State(pool): State<FakePool>,
    Path(worker_id): Path<String>,
    Query(query): Query<StopQuery>,
) -> StatusCode {
    {
        let mut log = pool.log.lock().unwrap();
        log.stops.push((worker_id.clone(), query.mode));
        log.workers.retain(|worker| worker.worker_id != worker_id);
    }
    // A drained worker deregisters from orcd as it exits.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let _ = client
        .delete(format!("{}/workers/{worker_id}", pool.orcd_url))
        .send()
        .await;
    StatusCode::ACCEPTED
}

fn settings(policies: &str) -> Settings {
    Settings {
        pools: PoolSettings {
            policies: Policies::parse(policies).unwrap(),
            load_timeout: Duration::from_secs(8),
            host_timeout: Duration::from_secs(10),
        },
        ..Settings::default()
    }
}

fn task() -> serde_json::Value {
    serde_json::json!({"model": MODEL, "prompt": "hello", "max_tokens": 3, "stream": false})
}

/// Collects `/v2/events` placement events until `done` says enough.
/// The fleet event stream of orcd, subscribed: once this returns, orcd publishes every later
/// event to it, so a test can start what it watches without waiting for the subscription.
type FleetStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

async fn subscribe(orcd_url: &str) -> FleetStream {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client
        .get(format!("{orcd_url}/v2/events"))
        .send()
        .await
        .unwrap();
    Box::pin(response.bytes_stream().eventsource())
}

/// The placement events of `stream` until `done` says enough.
async fn placement_events(
    mut stream: FleetStream,
    done: impl Fn(&[FleetEvent]) -> bool,
) -> Vec<FleetEvent> {
    within("the placement events", async {
        let mut seen = Vec::new();
        while let Some(Ok(event)) = stream.next().await {
            if event.event.starts_with("model_") || event.event == "load_failed" {
                seen.push(FleetEvent::from_sse(&event.event, &event.data).unwrap());
                if done(&seen) {
                    break;
                }
            }
        }
        seen
    })
    .await
}

#[tokio::test]
async fn a_catalog_model_no_host_has_is_downloaded_on_a_host_then_loaded_there() {
    let orcd = Orcd::start(settings("")).await;
    let pool = FakePool::start_without_model(&orcd, "host-a").await;
    let stream = subscribe(&orcd.url).await;
    let events = tokio::spawn(placement_events(stream, |seen| {
        seen.iter()
            .any(|e| matches!(e, FleetEvent::ModelLoaded { .. }))
    }));
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(pool.downloads(), vec![MODEL.to_owned()], "one download");
    assert_eq!(pool.starts().len(), 1, "then one worker");
    let events = within("the events task", events).await.unwrap();
    assert!(
        matches!(&events[0], FleetEvent::ModelDownloading { model, host_id } if model == MODEL && host_id == "host-a"),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], FleetEvent::ModelDownloaded { host_id, .. } if host_id == "host-a"),
        "{events:?}"
    );
    assert!(
        matches!(&events[2], FleetEvent::ModelLoading { host_id, .. } if host_id == "host-a"),
        "{events:?}"
    );
    // On disk now: the next load needs no download.
    let hosts: Vec<HostInfo> = orcd.get_json("/v2/hosts").await;
    assert_eq!(hosts[0].facts.models[0].model, MODEL);
}

#[tokio::test]
async fn a_failed_download_answers_503_with_the_hosts_reason_and_starts_nothing() {
    let orcd = Orcd::start(settings("")).await;
    let pool = FakePool::start_with_failing_downloads(&orcd, "host-a").await;
    let stream = subscribe(&orcd.url).await;
    let events = tokio::spawn(placement_events(stream, |seen| {
        seen.iter()
            .any(|e| matches!(e, FleetEvent::LoadFailed { .. }))
    }));
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 503);
    let body: ErrorBody = response.json().await.unwrap();
    assert!(body.error.contains(MODEL), "{}", body.error);
    assert!(body.error.contains("checksum mismatch"), "{}", body.error);
    assert_eq!(pool.downloads(), vec![MODEL.to_owned()]);
    assert!(
        pool.starts().is_empty(),
        "nothing to start without the file"
    );
    let events = within("the events task", events).await.unwrap();
    assert!(
        matches!(&events[0], FleetEvent::ModelDownloading { host_id, .. } if host_id == "host-a"),
        "{events:?}"
    );
    assert!(
        matches!(events.last().unwrap(), FleetEvent::LoadFailed { host_id: Some(host), reason, .. } if host == "host-a" && reason.contains("checksum mismatch")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_request_for_an_unloaded_model_loads_it_and_completes() {
    let orcd = Orcd::start(settings(&format!(
        "[models.\"{MODEL}\"]\nslots = 2\nctx_size = 1024\n"
    )))
    .await;
    let pool = FakePool::start(&orcd, "host-a", 4096, 400, OnStart::Register).await;

    let models: serde_json::Value = orcd.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["status"], "unloaded");
    let hosts: Vec<HostInfo> = orcd.get_json("/v2/hosts").await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        (hosts[0].host_id.as_str(), hosts[0].state),
        ("host-a", HostState::Live)
    );
    assert_eq!(hosts[0].facts.models[0].model, MODEL);

    // Subscribed before the load begins, so no placement event is missed.
    let stream = subscribe(&orcd.url).await;
    let events = tokio::spawn(placement_events(stream, |seen| {
        seen.iter()
            .any(|e| matches!(e, FleetEvent::ModelLoaded { .. }))
    }));
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let result: llorch_api::TaskResult = response.json().await.unwrap();
    assert_eq!(result.worker_id, format!("host-a-{MODEL}-1"));
    let starts = pool.starts();
    assert_eq!(starts.len(), 1, "one worker started");
    assert_eq!(
        (starts[0].slots, starts[0].ctx_size),
        (Some(2), Some(1024)),
        "the model's policy"
    );
    let events = within("the events task", events).await.unwrap();
    assert!(
        matches!(&events[0], FleetEvent::ModelLoading { model, host_id } if model == MODEL && host_id == "host-a"),
        "{events:?}"
    );
    assert!(
        matches!(events.last().unwrap(), FleetEvent::ModelLoaded { worker_id, .. } if worker_id == &result.worker_id)
    );

    // Loaded now: a second request uses the worker without another start.
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(pool.starts().len(), 1);
    let models: serde_json::Value = orcd.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["status"], "loaded");
    let metrics = orcd
        .client
        .get(format!("{}/metrics", orcd.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "llorch_model_loads_total{{model=\"{MODEL}\",host=\"host-a\",outcome=\"loaded\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_native_stream_says_its_model_loads_on_which_host_then_streams() {
    let orcd = Orcd::start(settings("")).await;
    let _pool = FakePool::start(&orcd, "host-a", 4096, 400, OnStart::Register).await;
    let mut task = task();
    task["stream"] = true.into();
    let response = orcd.submit(task).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let events: Vec<StreamEvent> = within("the whole stream", async {
        response
            .bytes_stream()
            .eventsource()
            .map(|event| {
                let event = event.unwrap();
                StreamEvent::from_sse(&event.event, &event.data).unwrap()
            })
            .collect()
            .await
    })
    .await;
    // The fake worker registers 200 ms after its start: the stream is told meanwhile.
    let StreamEvent::Queued {
        state,
        host_id,
        elapsed_ms,
        position,
        ..
    } = &events[0]
    else {
        panic!("the stream starts with `queued`: {events:?}");
    };
    assert_eq!(*state, Some(llorch_api::QueuedState::Loading), "{events:?}");
    assert_eq!(host_id.as_deref(), Some("host-a"));
    assert_eq!((*position, elapsed_ms.is_some()), (0, true));
    let started = events
        .iter()
        .position(|event| matches!(event, StreamEvent::Started { .. }))
        .expect("the job starts once the model is loaded");
    assert!(events[..started]
        .iter()
        .all(|event| matches!(event, StreamEvent::Queued { .. })));
    assert!(
        matches!(events.last(), Some(StreamEvent::Done(_))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_native_stream_for_a_model_with_no_room_is_still_a_503() {
    let orcd = Orcd::start(settings("")).await;
    let _pool = FakePool::start(&orcd, "host-a", 1024, 4096, OnStart::Register).await;
    let mut task = task();
    task["stream"] = true.into();
    let response = orcd.submit(task).await;
    assert_eq!(response.status(), 503);
    let body: ErrorBody = response.json().await.unwrap();
    assert!(body.error.contains("4096 MiB"), "{}", body.error);
}

#[tokio::test]
async fn an_idle_worker_is_unloaded_after_keep_alive() {
    let orcd = Orcd::start(settings(&format!(
        "[models.\"{MODEL}\"]\nkeep_alive = \"1s\"\n"
    )))
    .await;
    let pool = FakePool::start(&orcd, "host-a", 4096, 400, OnStart::Register).await;
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 200);
    let worker_id = format!("host-a-{MODEL}-1");
    eventually("the idle worker to be stopped", async || {
        !pool.stops().is_empty()
    })
    .await;
    assert_eq!(pool.stops(), vec![(worker_id.clone(), StopMode::Drain)]);
    eventually("orcd to forget the worker", async || {
        let workers: Vec<llorch_api::WorkerInfo> = orcd.get_json("/workers").await;
        workers.is_empty()
    })
    .await;
    let models: serde_json::Value = orcd.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["status"], "unloaded");
    // The next request loads it again.
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(pool.starts().len(), 2);
}

#[tokio::test]
async fn no_room_anywhere_is_503_naming_the_model_and_the_figures() {
    let orcd = Orcd::start(settings("")).await;
    let pool = FakePool::start(&orcd, "host-a", 1024, 4096, OnStart::Register).await;
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 503);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error_type, ErrorKind::NoWorker);
    assert!(body.error.contains(MODEL), "{}", body.error);
    assert!(body.error.contains("4096 MiB"), "{}", body.error);
    assert!(body.error.contains("1024 MiB"), "{}", body.error);
    assert!(pool.starts().is_empty(), "nothing was started");
}

#[tokio::test]
async fn a_failed_start_answers_with_the_hosts_reason_then_another_host_is_used() {
    let orcd = Orcd::start(settings("")).await;
    // The roomier host is tried first, and fails.
    let broken = FakePool::start(
        &orcd,
        "host-broken",
        8192,
        400,
        OnStart::Fail("llorch-worker is missing"),
    )
    .await;
    let good = FakePool::start(&orcd, "host-good", 2048, 400, OnStart::Register).await;
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 503);
    let body: ErrorBody = response.json().await.unwrap();
    assert!(
        body.error.contains("llorch-worker is missing"),
        "{}",
        body.error
    );
    assert_eq!(broken.starts().len(), 1);
    assert!(good.starts().is_empty());

    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 200, "the broken host is avoided now");
    assert_eq!(broken.starts().len(), 1);
    assert_eq!(good.starts().len(), 1);
}

#[tokio::test]
async fn without_pool_managers_a_model_without_a_worker_is_still_a_plain_503() {
    let orcd = Orcd::start(settings("")).await;
    let response = orcd.submit(task()).await;
    assert_eq!(response.status(), 503);
    let body: ErrorBody = response.json().await.unwrap();
    assert!(
        body.error.contains("no live worker serves model"),
        "{}",
        body.error
    );
}

#[tokio::test]
async fn pool_routes_need_the_worker_token_and_refuse_bad_host_ids() {
    const CLIENT: &str = "client-token-0123456789";
    const WORKER: &str = "worker-token-0123456789";
    let orcd = Orcd::start(Settings {
        auth: orcd::auth::AuthConfig::from_tokens(&[CLIENT], &[WORKER]).unwrap(),
        ..settings("")
    })
    .await;
    let registration = serde_json::json!({
        "host_id": "h", "url": "http://127.0.0.1:9", "facts": {
            "host_name": "h", "os": "x", "cpu_model": "x", "physical_cores": 1,
            "ram_total_bytes": 1, "ram_available_bytes": 1, "load_average": 0.0,
            "disk_free_bytes": 0
        }
    });
    let post = |token: Option<&str>, body: serde_json::Value| {
        let mut request = orcd
            .client
            .post(format!("{}/pools/register", orcd.url))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(
        post(None, registration.clone()).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(Some(CLIENT), registration.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(Some(WORKER), registration.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    let mut bad = registration.clone();
    bad["host_id"] = "a/b".into();
    let response = post(Some(WORKER), bad).await.unwrap();
    assert_eq!(response.status(), 400);
    let mut unknown_field = registration;
    unknown_field["facts"]["ram_total_bytes"] = "lots".into();
    assert_eq!(
        post(Some(WORKER), unknown_field).await.unwrap().status(),
        400
    );
    let hosts = orcd
        .client
        .get(format!("{}/v2/hosts", orcd.url))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(hosts.status(), 200);
    let hosts: Vec<HostInfo> = hosts.json().await.unwrap();
    assert_eq!(hosts.len(), 1);
    let heartbeat = orcd
        .client
        .post(format!("{}/pools/unknown/heartbeat", orcd.url))
        .bearer_auth(WORKER)
        .json(&hosts[0].facts)
        .send()
        .await
        .unwrap();
    assert_eq!(heartbeat.status(), 404, "an unknown host registers again");
}

#[tokio::test]
async fn operators_load_and_unload_models_by_hand() {
    let orcd = Orcd::start(settings("")).await;
    let pool = FakePool::start(&orcd, "host-a", 4096, 400, OnStart::Register).await;
    let post = |path: String| orcd.client.post(format!("{}{path}", orcd.url)).send();
    let response = post(format!("/v2/models/{MODEL}/load?host=host-a"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(pool.starts().len(), 1);
    let response = post(format!("/v2/models/{MODEL}/load?host=a%2Fb"))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = post(format!("/v2/models/{MODEL}/unload")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        pool.stops(),
        vec![(format!("host-a-{MODEL}-1"), StopMode::Drain)]
    );
    eventually("the host to stop listing the worker", async || {
        let hosts: Vec<HostInfo> = orcd.get_json("/v2/hosts").await;
        hosts[0].facts.workers.is_empty()
    })
    .await;
    let response = post(format!("/v2/models/{MODEL}/unload")).await.unwrap();
    assert_eq!(response.status(), 404);

    const CLIENT: &str = "client-token-0123456789";
    let guarded = Orcd::start(Settings {
        auth: orcd::auth::AuthConfig::from_tokens(&[CLIENT], &["worker-token-0123456789"]).unwrap(),
        ..settings("")
    })
    .await;
    let response = guarded
        .client
        .post(format!("{}/v2/models/{MODEL}/load", guarded.url))
        .bearer_auth(CLIENT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "a client token is not an operator's"
    );
}
