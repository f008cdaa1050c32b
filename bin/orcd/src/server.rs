//! The HTTP surface of orcd: application state, routes, handlers and graceful shutdown.
//!
//! Shutdown keeps the listener open: after SIGTERM `/health` answers 503 `draining` and new
//! tasks get 503 while admitted jobs run for up to the drain time; then the rest are ended
//! and connections close.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{middleware, Extension, Json, Router};
use llorch_api::audit::{Actor, AuditEvent};
use llorch_api::usage::{is_day, UsageReport};
use llorch_api::{
    Heartbeat, HeartbeatAccepted, RegistrationAccepted, WorkerInfo, WorkerRegistration,
};
use tokio::net::TcpListener;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::JobScope;
use crate::error::OrcdError;
use crate::extract::{JsonBody, PathParam};
use crate::metrics::{self};
use crate::openai;
use crate::state::AppState;
use crate::validation::{check_advertised_url, validate_registration, validate_worker_id};

/// How long open connections may linger after in-flight jobs were ended at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub fn app(state: AppState) -> Router {
    let router = routes(state.clone());
    // A browser's preflight carries no token and must be answered before auth.
    let router = match crate::cors::layer(state.cors_origins()) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    // Outermost, without tokens: a page rebinding its domain to orcd gets nothing at all.
    if state.auth().is_enabled() {
        router
    } else {
        state.allowed_hosts().clone().guard(router)
    }
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus_metrics))
        .route("/workers", get(list_workers))
        .route("/workers/register", post(register_worker))
        .route("/workers/{worker_id}", delete(deregister_worker))
        .route("/workers/{worker_id}/heartbeat", post(heartbeat))
        .route("/workers/{worker_id}/forget", post(forget_worker))
        .merge(crate::tasks::routes())
        .route("/v2/events", get(crate::event_stream::fleet_events))
        .route("/v2/usage", get(usage))
        .merge(crate::pools::routes())
        .merge(crate::console::routes())
        .merge(openai::routes())
        .merge(crate::anthropic::routes())
        .fallback(unknown_route)
        // Outermost first: the size limit holds before anything reads the body, and no
        // handler runs for a request that fails authentication.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::authenticate::authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.limits().max_body_bytes()))
        // One `request{method uri version}` span per request, around authentication too;
        // responses are logged at debug (errors are logged where they are understood).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// Serves until `signal` resolves; then, with the listener still open (`/health` answers
/// `draining`, new tasks 503), lets admitted jobs run for up to `drain`, ends the rest with a
/// `shutting_down` error, closes the connections and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    signal: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> anyhow::Result<()> {
    let draining_state = state.clone();
    let stop = async move {
        signal.await;
        tracing::info!("shutting down: refusing new jobs, draining in-flight ones for {drain:?}");
        draining_state.begin_shutdown();
        if !wait_for_jobs_to_end(&draining_state, drain).await {
            tracing::warn!("jobs still in flight after {drain:?}; ending them");
            draining_state.abort_jobs();
            // Ended jobs record their end from their own tasks; let them.
            wait_for_jobs_to_end(&draining_state, CLOSE_WAIT).await;
        }
    };
    let housekeeping = tokio::spawn(crate::pools::housekeeping(state.clone()));
    llorch_serve::serve(
        listener,
        app(state.clone()),
        state.connections(),
        stop,
        CLOSE_WAIT,
    )
    .await;
    housekeeping.abort();
    if let Some(audit) = state.audit() {
        audit.flush().await;
    }
    Ok(())
}

/// Waits until the scheduler has no queued or running job (`true`), or `limit` passes.
async fn wait_for_jobs_to_end(state: &AppState, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match state.scheduler().models().await {
            Ok(models) if models.iter().all(|m| m.queued == 0 && m.running == 0) => return true,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
}

async fn health(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        let body = serde_json::json!({"status": "draining"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn prometheus_metrics(State(state): State<AppState>) -> Result<Response, OrcdError> {
    let models = state.scheduler().models().await?;
    let text = state.metrics().render(&models);
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

async fn register_worker(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(registration): JsonBody<WorkerRegistration>,
) -> Result<Json<RegistrationAccepted>, OrcdError> {
    let registration = validate_registration(registration)?;
    let peer = actor
        .peer
        .as_deref()
        .and_then(|peer| peer.parse::<SocketAddr>().ok());
    if let Err(error) = check_advertised_url(&registration.url, peer.map(|peer| peer.ip())) {
        // The worker only logs it on its host; orcd's operator should see it too.
        tracing::warn!(worker_id = %registration.worker_id, "registration refused: {error}");
        return Err(error.into());
    }
    let (info, given_up_jobs) = state.scheduler().register(registration).await?;
    if let Some(audit) = state.audit() {
        audit.record(
            Some(actor),
            AuditEvent::WorkerRegistered {
                worker_id: info.worker_id.clone(),
                url: info.url.clone(),
                model: info.model.clone(),
                backend: info.backend,
                slots: info.slots_total,
            },
        );
    }
    Ok(Json(RegistrationAccepted {
        worker: info,
        heartbeat_interval_ms: Some(state.heartbeat_interval().as_millis() as u64),
        given_up_jobs,
    }))
}

async fn heartbeat(
    State(state): State<AppState>,
    PathParam(worker_id): PathParam,
    JsonBody(heartbeat): JsonBody<Heartbeat>,
) -> Result<Json<HeartbeatAccepted>, OrcdError> {
    validate_worker_id(&worker_id)?;
    let given_up_jobs = state.scheduler().heartbeat(worker_id, heartbeat).await?;
    Ok(Json(HeartbeatAccepted { given_up_jobs }))
}

async fn deregister_worker(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParam(worker_id): PathParam,
) -> Result<StatusCode, OrcdError> {
    validate_worker_id(&worker_id)?;
    state.scheduler().deregister(worker_id.clone()).await?;
    if let Some(audit) = state.audit() {
        audit.record(
            Some(actor),
            AuditEvent::WorkerRemoved {
                worker_id,
                reason: "deregistered".to_owned(),
            },
        );
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The operator removes a dead worker's record (client token: the operator's, not a worker's).
async fn forget_worker(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParam(worker_id): PathParam,
) -> Result<Json<WorkerInfo>, OrcdError> {
    validate_worker_id(&worker_id)?;
    let info = state.scheduler().forget(worker_id.clone()).await?;
    if let Some(audit) = state.audit() {
        audit.record(
            Some(actor),
            AuditEvent::WorkerRemoved {
                worker_id,
                reason: "forgotten by the operator".to_owned(),
            },
        );
    }
    Ok(Json(info))
}

async fn list_workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerInfo>>, OrcdError> {
    Ok(Json(state.scheduler().workers().await?))
}

#[derive(Debug, serde::Deserialize)]
struct UsageQuery {
    since: Option<String>,
}

/// Tokens by client key, model and day since orcd started; the operator's (an admin token, or
/// authentication off), as it shows every client's use.
async fn usage(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
    query: Result<axum::extract::Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, OrcdError> {
    if scope != JobScope::All {
        return Err(OrcdError::Forbidden(
            "`GET /v2/usage` shows every client's use and needs an operator token (`--admin-token-file`)"
                .to_owned(),
        ));
    }
    let since = match query {
        Ok(axum::extract::Query(query)) => query.since,
        Err(rejection) => {
            return Err(crate::validation::ValidationError::Field {
                field: "since".into(),
                problem: rejection.body_text(),
            }
            .into())
        }
    };
    if let Some(day) = since.as_deref().filter(|day| !is_day(day)) {
        return Err(crate::validation::ValidationError::Field {
            field: "since".into(),
            problem: format!(
                "must be a day as `YYYY-MM-DD`, got `{}`",
                crate::validation::log_safe(day)
            ),
        }
        .into());
    }
    let rows = state.keys().usage(since.as_deref());
    Ok(Json(UsageReport { since, rows }))
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    let error = OrcdError::RouteNotFound(format!("{method} {}", uri.path()));
    crate::openai_error::error_response_for_path(uri.path(), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use axum::body::Body;
    use axum::http::Request;
    use llorch_api::JobInfo;
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
        let body = body.map(|json| ("application/json", json.to_string().into_bytes()));
        call_raw(app, method, uri, body).await
    }

    async fn call_raw(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (StatusCode, Vec<u8>) {
        let request = Request::builder().method(method).uri(uri);
        let request = match body {
            Some((content_type, bytes)) => request
                .header("content-type", content_type)
                .body(Body::from(bytes)),
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
            embeddings: false,
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
        let accepted: RegistrationAccepted = serde_json::from_slice(&body).unwrap();
        assert_eq!(accepted.worker.url, "http://127.0.0.1:9001");
        // A third of the default heartbeat timeout (10 s).
        assert_eq!(accepted.heartbeat_interval_ms, Some(3333));

        let heartbeat = serde_json::json!({"slots_busy": 1, "slots_total": 4});
        let (status, body) = call(&app, "POST", "/workers/w1/heartbeat", Some(heartbeat)).await;
        assert_eq!(status, StatusCode::OK);
        // Nothing given up: the answer lists no jobs.
        let answer: HeartbeatAccepted = serde_json::from_slice(&body).unwrap();
        assert!(answer.given_up_jobs.is_empty());

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

    /// A registration as if it came over a socket from `peer`.
    async fn register_from(app: &Router, peer: &str, url: &str) -> (StatusCode, Vec<u8>) {
        let mut body = registration();
        body["url"] = url.into();
        let mut request = Request::builder()
            .method("POST")
            .uri("/workers/register")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    #[tokio::test]
    async fn a_loopback_url_from_another_machine_is_refused_naming_the_flag() {
        let (app, state) = test_app();
        let (status, body) = register_from(&app, "10.1.2.3:40000", "http://127.0.0.1:9001").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error = error_of(&body).error;
        assert!(error.contains("10.1.2.3"), "{error}");
        assert!(error.contains("--advertise-url"), "{error}");
        assert!(error.contains("\nhint: "), "{error}");
        assert!(state.scheduler().workers().await.unwrap().is_empty());
        // The same URL from the worker's own machine, and a routable URL from afar, are fine.
        let (status, _) = register_from(&app, "127.0.0.1:40000", "http://127.0.0.1:9001").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = register_from(&app, "10.1.2.3:40000", "http://10.1.2.3:9001").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = register_from(&app, "10.1.2.3:40000", "http://localhost:9001").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
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

        let nested =
            serde_json::json!({"model": "m", "prompt": "hi", "sampling": {"max_tokens": 4}});
        let (status, body) = call(&app, "POST", "/v2/tasks", Some(nested)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error = error_of(&body);
        assert_eq!(error.error_type, ErrorKind::Validation);
        assert!(
            error.error.starts_with("`sampling` is not a field"),
            "{}",
            error.error
        );

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
            ("GET", "/v3/whatever"),
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

    #[tokio::test]
    async fn unknown_v1_routes_answer_in_openai_shape() {
        let (app, _state) = test_app();
        let (status, body) = call(&app, "GET", "/v1/whatever", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/whatever"));
    }

    #[tokio::test]
    async fn oversized_non_json_deep_and_hostile_bodies_are_4xx_naming_the_limit() {
        let (app, state) = test_app();
        let limit = state.limits().max_body_bytes();
        let huge = serde_json::json!({"model": "m", "prompt": "x".repeat(limit)});
        let (status, body) = call(&app, "POST", "/v2/tasks", Some(huge)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error_of(&body).error.contains(&limit.to_string()));

        let form = Some(("text/plain", br#"{"model":"m","prompt":"x"}"#.to_vec()));
        let (status, body) = call_raw(&app, "POST", "/v2/tasks", form).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(error_of(&body).error.contains("content-type"));

        let deep = format!(
            r#"{{"model":"m","prompt":"x","extra":{}{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        let (status, body) = call_raw(
            &app,
            "POST",
            "/v2/tasks",
            Some(("application/json", deep.into_bytes())),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).error.contains("deeper than 32 levels"));

        let (status, body) = call(&app, "GET", "/v2/tasks/..%2Fetc", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&body).error.contains("`job_id`"));
        let heartbeat = serde_json::json!({"slots_busy": 0, "slots_total": 1});
        let (status, _) = call(&app, "POST", "/workers/a%20b/heartbeat", Some(heartbeat)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn metrics_are_served_in_openmetrics_text() {
        let (app, _state) = test_app();
        let (status, _) = call(&app, "POST", "/workers/register", Some(registration())).await;
        assert_eq!(status, StatusCode::OK);
        let task = serde_json::json!({"model": "nobody-serves-this", "prompt": "hi"});
        call(&app, "POST", "/v2/tasks", Some(task)).await;
        let request = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], metrics::CONTENT_TYPE);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        for expected in [
            "llorch_workers{state=\"live\"} 1",
            "llorch_queue_depth{model=\"gemma3-270m\"} 0",
            "llorch_jobs_total{state=\"rejected\"} 1",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }
}
