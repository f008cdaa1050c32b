//! The HTTP surface of orcd: application state, routes, handlers and graceful shutdown.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use llorch_api::{
    CancelResult, Heartbeat, JobInfo, StreamEvent, TaskRequest, TaskResult, WorkerInfo,
    WorkerRegistration,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Settings;
use crate::dispatch::{spawn_job, JobContext, JobItem};
use crate::error::OrcdError;
use crate::scheduler::{NewJob, SchedulerHandle};
use crate::sse::sse_response;
use crate::validation::{validate_registration, validate_task, validate_worker_id, TaskLimits};

/// Names the job of a `POST /v2/tasks` answer, so a client can cancel it before any event.
pub const JOB_ID_HEADER: HeaderName = HeaderName::from_static("x-llorch-job-id");

/// How long open connections may linger after in-flight jobs were ended at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    scheduler: SchedulerHandle,
    http: reqwest::Client,
    limits: TaskLimits,
    /// Set to `true` to end every in-flight job with a `shutting_down` error.
    abort: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    /// Starts the scheduler actor; call from inside a tokio runtime.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.worker_connect_timeout)
            // Workers are reached directly; an HTTP_PROXY meant for the internet must not
            // capture loopback and LAN traffic.
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client that talks to workers")?;
        Ok(AppState {
            scheduler: SchedulerHandle::spawn(settings.scheduler.clone()),
            http,
            limits: settings.limits,
            abort: watch::Sender::new(false),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Refuses new jobs from now on; jobs already admitted carry on.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.scheduler.stop_accepting();
    }

    /// Ends every in-flight job's stream with a `shutting_down` error.
    pub fn abort_jobs(&self) {
        self.abort.send_replace(true);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub fn app(state: AppState) -> Router {
    // JSON escapes can make a prompt up to six times its size on the wire.
    let body_limit = (state.limits.max_prompt_bytes * 6 + 64 * 1024).max(2 * 1024 * 1024);
    Router::new()
        .route("/health", get(health))
        .route("/workers", get(list_workers))
        .route("/workers/register", post(register_worker))
        .route("/workers/{worker_id}", delete(deregister_worker))
        .route("/workers/{worker_id}/heartbeat", post(heartbeat))
        .route("/v2/tasks", post(create_task).get(list_tasks))
        .route("/v2/tasks/{job_id}", get(get_task).delete(cancel_task))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves until `signal` resolves, then stops accepting connections and jobs, lets in-flight
/// jobs run for `drain`, ends the rest with a `shutting_down` error and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> anyhow::Result<()> {
    let (signalled_sender, mut signalled) = watch::channel(false);
    let draining_state = state.clone();
    let graceful = async move {
        signal.await;
        tracing::info!("shutting down: refusing new jobs, draining in-flight ones for {drain:?}");
        draining_state.begin_shutdown();
        signalled_sender.send_replace(true);
    };
    let server = axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(graceful)
        .into_future();
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result.context("serving HTTP"),
        _ = signalled.wait_for(|signalled| *signalled) => {}
    }
    tokio::select! {
        result = &mut server => return result.context("serving HTTP"),
        () = tokio::time::sleep(drain) => {}
    }
    tracing::warn!("jobs still in flight after {drain:?}; ending them");
    state.abort_jobs();
    match tokio::time::timeout(CLOSE_WAIT, &mut server).await {
        Ok(result) => result.context("serving HTTP"),
        Err(_) => {
            tracing::warn!("connections still open after ending all jobs; exiting anyway");
            Ok(())
        }
    }
}

fn malformed(rejection: JsonRejection) -> OrcdError {
    OrcdError::MalformedBody(rejection.body_text())
}

async fn health(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        let body = serde_json::json!({"status": "draining"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn register_worker(
    State(state): State<AppState>,
    body: Result<Json<WorkerRegistration>, JsonRejection>,
) -> Result<Json<WorkerInfo>, OrcdError> {
    let Json(registration) = body.map_err(malformed)?;
    let registration = validate_registration(registration)?;
    Ok(Json(state.scheduler.register(registration).await?))
}

async fn heartbeat(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<StatusCode, OrcdError> {
    let Json(heartbeat) = body.map_err(malformed)?;
    state.scheduler.heartbeat(worker_id, heartbeat).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deregister_worker(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
) -> Result<StatusCode, OrcdError> {
    validate_worker_id(&worker_id)?;
    state.scheduler.deregister(worker_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerInfo>>, OrcdError> {
    Ok(Json(state.scheduler.workers().await?))
}

/// Validates, admits (503 without a worker, 429 when the queue is full) and answers an SSE
/// stream, or one JSON result for `"stream": false`.
async fn create_task(
    State(state): State<AppState>,
    body: Result<Json<TaskRequest>, JsonRejection>,
) -> Result<Response, OrcdError> {
    let Json(request) = body.map_err(malformed)?;
    let task = validate_task(request, &state.limits)?;
    let job_id = uuid::Uuid::new_v4().to_string();
    let notices = state
        .scheduler
        .submit(NewJob {
            job_id: job_id.clone(),
            model: task.model.clone(),
            submitted_at_ms: unix_millis(),
        })
        .await?;
    tracing::info!(%job_id, model = %task.model, stream = task.stream, "task accepted");
    let stream = task.stream;
    let model = task.model.clone();
    let items = spawn_job(
        JobContext {
            job_id: job_id.clone(),
            task,
            scheduler: state.scheduler.clone(),
            http: state.http.clone(),
            abort: state.abort.subscribe(),
        },
        notices,
    );
    let mut response = if stream {
        sse_response(items)
    } else {
        Json(collect_result(&job_id, model, items).await?).into_response()
    };
    let header = HeaderValue::from_str(&job_id).expect("a uuid is a valid header value");
    response.headers_mut().insert(JOB_ID_HEADER, header);
    Ok(response)
}

/// Gathers a job's stream into one [`TaskResult`]. A job cancelled before it started has an
/// empty `worker_id`.
async fn collect_result(
    job_id: &str,
    model: String,
    mut items: mpsc::Receiver<JobItem>,
) -> Result<TaskResult, OrcdError> {
    let mut text = String::new();
    let mut worker_id = String::new();
    while let Some(item) = items.recv().await {
        match item? {
            StreamEvent::Queued { .. } => {}
            StreamEvent::Started { worker_id: id, .. } => worker_id = id,
            StreamEvent::Token { text: piece, .. } => text.push_str(&piece),
            StreamEvent::Done(stats) => {
                return Ok(TaskResult {
                    job_id: job_id.to_owned(),
                    model,
                    worker_id,
                    text,
                    stats,
                })
            }
            // Errors travel as `Err` items; a relayed `error` event here would be a bug.
            StreamEvent::Error { message, .. } => {
                return Err(OrcdError::Internal(format!(
                    "unexpected error event: {message}"
                )))
            }
        }
    }
    Err(OrcdError::Internal(format!(
        "job `{job_id}` ended without a result"
    )))
}

async fn list_tasks(State(state): State<AppState>) -> Result<Json<Vec<JobInfo>>, OrcdError> {
    Ok(Json(state.scheduler.jobs().await?))
}

async fn get_task(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<JobInfo>, OrcdError> {
    Ok(Json(state.scheduler.job(job_id).await?))
}

/// Cancels a queued job at once; a running one is stopped by its task, whose stream then ends
/// with a `done` event with `finish_reason: cancelled`.
async fn cancel_task(
    State(state): State<AppState>,
    Path(job_id): Path<String>,
) -> Result<Json<CancelResult>, OrcdError> {
    let previous_state = state.scheduler.cancel(job_id.clone()).await?;
    tracing::info!(%job_id, ?previous_state, "job cancelled");
    Ok(Json(CancelResult {
        job_id,
        previous_state,
    }))
}

async fn unknown_route(method: Method, uri: Uri) -> OrcdError {
    OrcdError::RouteNotFound(format!("{method} {}", uri.path()))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use llorch_api::{Backend, ErrorBody, ErrorKind, WorkerState};
    use tower::ServiceExt;

    fn test_app() -> (Router, AppState) {
        let state = AppState::new(&Settings::default()).unwrap();
        (app(state.clone()), state)
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, Vec<u8>) {
        let request = Request::builder().method(method).uri(uri);
        let request = match body {
            Some(json) => request
                .header("content-type", "application/json")
                .body(Body::from(json.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    fn error_of(bytes: &[u8]) -> ErrorBody {
        serde_json::from_slice(bytes).unwrap_or_else(|error| {
            panic!(
                "not an ErrorBody ({error}): {}",
                String::from_utf8_lossy(bytes)
            )
        })
    }

    fn registration() -> serde_json::Value {
        serde_json::to_value(WorkerRegistration {
            worker_id: "w1".into(),
            url: "http://127.0.0.1:9001/".into(),
            model: "gemma3-270m".into(),
            backend: Backend::Cpu,
            slots: 4,
            ctx_size: 4096,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn health_answers_ok_until_shutdown_begins() {
        let (app, state) = test_app();
        let (status, body) = call(&app, "GET", "/health", None).await;
        assert_eq!(status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "ok");
        state.begin_shutdown();
        let (status, _) = call(&app, "GET", "/health", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn workers_register_heartbeat_list_and_leave() {
        let (app, _state) = test_app();
        let (status, body) = call(&app, "POST", "/workers/register", Some(registration())).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let info: WorkerInfo = serde_json::from_slice(&body).unwrap();
        assert_eq!(info.url, "http://127.0.0.1:9001");

        let heartbeat = serde_json::json!({"slots_busy": 1, "slots_total": 4});
        let (status, _) = call(&app, "POST", "/workers/w1/heartbeat", Some(heartbeat)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let (status, body) = call(&app, "GET", "/workers", None).await;
        assert_eq!(status, StatusCode::OK);
        let workers: Vec<WorkerInfo> = serde_json::from_slice(&body).unwrap();
        assert_eq!(workers.len(), 1);
        let worker = &workers[0];
        assert_eq!(
            (
                worker.worker_id.as_str(),
                worker.model.as_str(),
                worker.slots_total,
                worker.slots_busy,
                worker.state
            ),
            ("w1", "gemma3-270m", 4, 1, WorkerState::Live)
        );

        let (status, _) = call(&app, "DELETE", "/workers/w1", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = call(&app, "GET", "/workers", None).await;
        assert_eq!(
            serde_json::from_slice::<Vec<WorkerInfo>>(&body).unwrap(),
            vec![]
        );
        let (status, body) = call(&app, "DELETE", "/workers/w1", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_of(&body).error_type, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn heartbeat_from_an_unknown_worker_is_404() {
        let (app, _state) = test_app();
        let heartbeat = serde_json::json!({"slots_busy": 0, "slots_total": 1});
        let (status, body) = call(&app, "POST", "/workers/ghost/heartbeat", Some(heartbeat)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let error = error_of(&body);
        assert_eq!(error.error_type, ErrorKind::NotFound);
        assert!(error.error.contains("`ghost`"), "{}", error.error);
    }

    #[tokio::test]
    async fn bad_registrations_are_400() {
        let (app, _state) = test_app();
        let mut bad_url = registration();
        bad_url["url"] = "localhost:9001".into();
        let (status, body) = call(&app, "POST", "/workers/register", Some(bad_url)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).error.contains("`url`"));
        let (status, body) = call(
            &app,
            "POST",
            "/workers/register",
            Some(serde_json::json!({"worker_id": "x"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_of(&body).error_type, ErrorKind::Validation);
    }

    #[tokio::test]
    async fn task_for_a_model_nobody_serves_is_503_naming_the_fix() {
        let (app, _state) = test_app();
        let task = serde_json::json!({"model": "qwen3-0.6b", "prompt": "hi"});
        let (status, body) = call(&app, "POST", "/v2/tasks", Some(task)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let error = error_of(&body);
        assert_eq!(error.error_type, ErrorKind::NoWorker);
        assert!(
            error
                .error
                .contains("cargo xtask pool worker spawn cpu --model qwen3-0.6b"),
            "{}",
            error.error
        );
    }

    #[tokio::test]
    async fn invalid_tasks_are_400_naming_the_field() {
        let (app, _state) = test_app();
        let task = serde_json::json!({"model": "m", "prompt": "hi", "max_tokens": 0});
        let (status, body) = call(&app, "POST", "/v2/tasks", Some(task)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error = error_of(&body);
        assert_eq!(error.error_type, ErrorKind::Validation);
        assert!(error.error.contains("`max_tokens`"), "{}", error.error);

        let (status, body) = call(
            &app,
            "POST",
            "/v2/tasks",
            Some(serde_json::json!({"prompt": "no model"})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).error.starts_with("malformed request body"));
    }

    #[tokio::test]
    async fn unknown_jobs_and_routes_are_404_with_an_error_body() {
        let (app, _state) = test_app();
        for (method, uri) in [
            ("GET", "/v2/tasks/nope"),
            ("DELETE", "/v2/tasks/nope"),
            ("GET", "/v1/whatever"),
        ] {
            let (status, body) = call(&app, method, uri, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
            assert_eq!(
                error_of(&body).error_type,
                ErrorKind::NotFound,
                "{method} {uri}"
            );
        }
        let (status, body) = call(&app, "GET", "/v2/tasks", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_slice::<Vec<JobInfo>>(&body).unwrap(),
            vec![]
        );
    }
}
