//! `GET /v2/workers/{id}/log?lines=N` (operator token): the tail of a pool-managed worker's
//! log, relayed from the pool manager that runs it, so an operator's view (`cargo xtask top`)
//! follows the log of a worker on another machine without reaching that machine itself.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use llorch_api::pool::{LogTail, PoolErrorBody};

use crate::auth::JobScope;
use crate::error::OrcdError;
use crate::extract::PathParam;
use crate::state::AppState;
use crate::validation::validate_worker_id;

/// The pool manager's own bound (`MAX_LOG_LINES` in pool-managerd), checked here first so a
/// bad request is refused without a round trip.
const MAX_LOG_LINES: usize = 2000;
const DEFAULT_LOG_LINES: usize = 100;
/// A log tail is small; a pool manager slower than this is in trouble.
const POOL_LOG_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes() -> Router<AppState> {
    Router::new().route("/v2/workers/{worker_id}/log", get(worker_log))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    lines: Option<usize>,
}

async fn worker_log(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
    PathParam(worker_id): PathParam,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogTail>, OrcdError> {
    scope.require_operator("reading a worker's log")?;
    validate_worker_id(&worker_id)?;
    let lines = requested_lines(query)?;
    let host = state
        .pools()
        .hosts()
        .records()
        .into_iter()
        .find(|record| {
            record
                .facts
                .workers
                .iter()
                .any(|worker| worker.worker_id == worker_id)
        })
        .ok_or_else(|| OrcdError::NoWorkerLog(worker_id.clone()))?;
    let pool_error = |message: String| OrcdError::PoolManager {
        host_id: host.host_id.clone(),
        message,
    };
    let response = state
        .http()
        .get(format!("{}/workers/{worker_id}/log", host.url))
        .query(&[("lines", lines)])
        .timeout(POOL_LOG_TIMEOUT)
        .send()
        .await
        .map_err(|error| pool_error(format!("at {} did not answer: {error}", host.url)))?;
    let status = response.status();
    if status.is_success() {
        return response.json::<LogTail>().await.map(Json).map_err(|error| {
            pool_error(format!("sent a log tail orcd did not understand: {error}"))
        });
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        // The worker stopped since the host's last heartbeat listed it.
        return Err(OrcdError::NoWorkerLog(worker_id));
    }
    let body = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<PoolErrorBody>(&body)
        .map(|error| error.error)
        .unwrap_or(body);
    Err(pool_error(format!(
        "refused the log request ({status}): {reason}"
    )))
}

fn requested_lines(
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<usize, OrcdError> {
    let Query(query) = query.map_err(|rejection| {
        OrcdError::InvalidPath(format!(
            "{}: the only parameter is `lines`",
            rejection.body_text()
        ))
    })?;
    let lines = query.lines.unwrap_or(DEFAULT_LOG_LINES);
    if !(1..=MAX_LOG_LINES).contains(&lines) {
        return Err(OrcdError::InvalidPath(format!(
            "`lines` must be 1..={MAX_LOG_LINES}, got {lines}"
        )));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use llorch_api::pool::{
        HostFacts, PoolRegistration, PoolWorker, PoolWorkerState, WorkerLaunch,
    };
    use llorch_api::ErrorBody;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Settings;

    /// A pool manager on loopback that knows one worker, `w1`, whose log has three lines.
    async fn fake_pool_manager() -> String {
        let app = axum::Router::new().route(
            "/workers/{worker_id}/log",
            get(
                |axum::extract::Path(worker_id): axum::extract::Path<String>,
                 Query(query): Query<LogQuery>| async move {
                    if worker_id != "w1" {
                        return Err(StatusCode::NOT_FOUND);
                    }
                    let all = ["loading model", "listening on :9001", "job done"];
                    let lines = query.lines.unwrap_or(100).min(all.len());
                    Ok(Json(LogTail {
                        worker_id,
                        lines: all[all.len() - lines..]
                            .iter()
                            .map(|line| line.to_string())
                            .collect(),
                    }))
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn facts_with_workers(workers: &[&str]) -> HostFacts {
        HostFacts {
            host_name: "box".into(),
            os: "linux".into(),
            cpu_model: "cpu".into(),
            physical_cores: 2,
            ram_total_bytes: 8 << 30,
            ram_available_bytes: 4 << 30,
            load_average: 0.5,
            gpus: vec![],
            disk_free_bytes: 0,
            models: vec![],
            workers: workers
                .iter()
                .map(|id| PoolWorker {
                    worker_id: (*id).into(),
                    launch: WorkerLaunch::of_model("gemma3-270m"),
                    port: Some(9001),
                    pid: Some(1),
                    state: PoolWorkerState::Running,
                    rss_bytes: None,
                    estimated_bytes: 0,
                    restarts: 0,
                    last_log: vec![],
                })
                .collect(),
            memory_budget_bytes: None,
            backends: vec![],
        }
    }

    /// The route as an operator's request reaches it (the auth layer gives the scope).
    fn operator_app(state: AppState) -> axum::Router {
        routes().layer(Extension(JobScope::All)).with_state(state)
    }

    async fn get_log(app: &axum::Router, uri: &str) -> (StatusCode, Vec<u8>) {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn the_log_of_a_pool_managed_worker_is_relayed_from_its_pool_manager() {
        // A client that is not an operator is refused first.
        let state = AppState::new(&Settings::default()).unwrap();
        let client = routes()
            .layer(Extension(JobScope::Owner("client-fingerprint".into())))
            .with_state(state);
        let (status, body) = get_log(&client, "/v2/workers/w1/log").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(String::from_utf8_lossy(&body).contains("--admin-token-file"));

        let state = AppState::new(&Settings::default()).unwrap();
        let url = fake_pool_manager().await;
        // `w2` is listed by the host but has gone from its pool manager since.
        state.pools().hosts().register(
            PoolRegistration {
                host_id: "box".into(),
                url,
                facts: facts_with_workers(&["w1", "w2"]),
            },
            Instant::now(),
        );
        let app = operator_app(state);

        let (status, body) = get_log(&app, "/v2/workers/w1/log?lines=2").await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let tail: LogTail = serde_json::from_slice(&body).unwrap();
        assert_eq!(tail.lines, ["listening on :9001", "job done"]);

        for (uri, status, names) in [
            ("/v2/workers/w2/log", StatusCode::NOT_FOUND, "`w2`"),
            (
                "/v2/workers/by-hand/log",
                StatusCode::NOT_FOUND,
                "`by-hand`",
            ),
            (
                "/v2/workers/w1/log?lines=0",
                StatusCode::BAD_REQUEST,
                "`lines`",
            ),
            (
                "/v2/workers/w1/log?tail=5",
                StatusCode::BAD_REQUEST,
                "`lines`",
            ),
        ] {
            let (got, body) = get_log(&app, uri).await;
            let error: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(got, status, "{uri}: {}", error.error);
            assert!(error.error.contains(names), "{uri}: {}", error.error);
        }
    }

    #[tokio::test]
    async fn an_unreachable_pool_manager_is_a_bad_gateway_naming_the_host() {
        let state = AppState::new(&Settings::default()).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        state.pools().hosts().register(
            PoolRegistration {
                host_id: "gone".into(),
                url,
                facts: facts_with_workers(&["w1"]),
            },
            Instant::now(),
        );
        let (status, body) = get_log(&operator_app(state), "/v2/workers/w1/log").await;
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", error.error);
        assert!(
            error.error.contains("host `gone`") && error.error.contains("did not answer"),
            "{}",
            error.error
        );
    }
}
