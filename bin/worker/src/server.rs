//! The worker's HTTP API: `GET /health`, `GET /metrics`, `POST /embed` (with `--embeddings`,
//! see [`crate::embeddings`]) and `POST /execute`, which answers an SSE stream of `token` events ending in `done` or `error`. Dropping the stream cancels the
//! job, and so does a client that takes none of it for [`STREAM_STALL_LIMIT`]: a link that
//! died without closing the connection, or an orcd that stopped reading (its TCP stack
//! acknowledges nothing more, see [`llorch_serve::delivery`]). With a worker token configured,
//! `/execute` needs it (see [`crate::auth`]); without one, only local and allowed `Host` names
//! are answered ([`app_with_host_rule`]).

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Extension, State},
    http::{header::HeaderName, HeaderMap, HeaderValue, StatusCode},
    middleware,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures::{Stream, StreamExt};
use llorch_api::{ErrorBody, ErrorKind, ExecuteRequest, StreamEvent, WorkerHealth, WorkerStatus};
use llorch_serve::delivery::{Delivery, StallClock};
use tokio::sync::mpsc::{self, error::SendTimeoutError, UnboundedReceiver};
use tokio_stream::wrappers::ReceiverStream;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::{Instrument, Level};

use crate::{
    auth::require_worker_token,
    body::check_json_body,
    engine::{EngineHandle, EngineStatus},
    error::WorkerError,
    state::AppState,
    validation::{validate, ValidationError},
};

/// Events buffered between the engine and one client connection: small, so a client that
/// stops reading fills it within a few tokens and the stall limit starts counting.
const STREAM_BUFFER: usize = 16;
/// How long an event may wait for a client that stopped reading, or the stream's bytes may
/// wait unacknowledged by the client's TCP stack, before the job is cancelled and its slot
/// freed. A dead link keeps the connection open (nothing closes it), and the kernel's socket
/// buffers would otherwise let the engine generate a long answer into them.
pub const STREAM_STALL_LIMIT: Duration = Duration::from_secs(10);

pub fn app(state: AppState) -> Router {
    // Only orcd may run jobs; health stays open for probes and `pool worker list`.
    let protected = Router::new()
        .route("/execute", post(execute))
        .route("/embed", post(crate::embeddings::embed))
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            require_worker_token,
        ));
    // Metrics stay open like health: they tell no more than health does, and a scraper holding
    // the worker token could run jobs.
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus_metrics))
        .merge(protected)
        .fallback(not_found)
        // One `request{method uri version}` span per request; responses and 5xx are logged at
        // debug (the worker's errors are logged where they are understood).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// [`app`] behind the `Host` rule (see [`llorch_serve::host`]) unless the worker token protects
/// it: without one, a web page rebinding its domain to this address could run jobs.
pub fn app_with_host_rule(state: AppState, allowed_hosts: llorch_serve::AllowedHosts) -> Router {
    let protected = state.auth.is_enabled();
    let router = app(state);
    if protected {
        router
    } else {
        allowed_hosts.guard(router)
    }
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<WorkerHealth>) {
    let settings = state.engine.settings();
    let status = match state.engine.status() {
        EngineStatus::Loading => WorkerStatus::Loading,
        EngineStatus::Ready => WorkerStatus::Ready,
        // A failed or stopped engine takes no jobs; the process is on its way out.
        EngineStatus::Draining | EngineStatus::Failed(_) | EngineStatus::Stopped => {
            WorkerStatus::Draining
        }
    };
    let code = if status == WorkerStatus::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let health = WorkerHealth {
        status,
        model: settings.model_id.clone(),
        slots_total: settings.slots,
        slots_busy: state.engine.load().busy,
        registration: state.registration.get(),
    };
    (code, Json(health))
}

async fn prometheus_metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        state.engine.metrics_text(),
    )
        .into_response()
}

async fn execute(
    State(state): State<AppState>,
    delivery: Option<Extension<Delivery>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WorkerError> {
    let received_at = Instant::now();
    check_json_body(&headers, &body)?;
    // Parsed by hand rather than with axum's `Json` so a bad body answers in the same
    // `ErrorBody` vocabulary as every other refusal.
    let request: ExecuteRequest = serde_json::from_slice(&body)
        .map_err(|error| ValidationError::InvalidBody(error.to_string()))?;
    let request = validate(request, state.engine.settings().limits())?;
    // `?`: the id comes from the client; Debug escapes whatever it holds.
    let span = tracing::info_span!("job", job_id = ?request.job_id);
    let events = state
        .engine
        .submit(request, received_at)
        .instrument(span)
        .await?;
    let watch = StallWatch {
        limit: STREAM_STALL_LIMIT,
        delivery: delivery.map(|Extension(delivery)| delivery),
        engine: Some(state.engine.clone()),
    };
    Ok(sse_response(relay_with_stall_limit(
        events,
        STREAM_BUFFER,
        watch,
    )))
}

/// When a relay gives up on its client, and where it counts that.
struct StallWatch {
    limit: Duration,
    /// The connection's acknowledged bytes; `None` where they cannot be read.
    delivery: Option<Delivery>,
    /// Counts the cancellation in the worker's metrics.
    engine: Option<EngineHandle>,
}

/// How often the acknowledged bytes of a stream are read.
const DELIVERY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Passes the engine's events on through a bounded buffer. When the client has not taken an
/// event for the limit with the buffer full, or its TCP stack has acknowledged none of the
/// stream's bytes for the limit while some wait, the relay gives up and drops the engine's
/// receiver, which cancels the job and frees its slot.
fn relay_with_stall_limit(
    mut events: UnboundedReceiver<StreamEvent>,
    capacity: usize,
    watch: StallWatch,
) -> ReceiverStream<StreamEvent> {
    let (sender, receiver) = mpsc::channel(capacity);
    let limit = watch.limit;
    tokio::spawn(
        async move {
            let relay = async {
                while let Some(event) = events.recv().await {
                    match sender.send_timeout(event, limit).await {
                        Ok(()) => {}
                        Err(SendTimeoutError::Timeout(_)) => {
                            return Some("has not read the stream");
                        }
                        Err(SendTimeoutError::Closed(_)) => return None,
                    }
                }
                None
            };
            let stalled = tokio::select! {
                stalled = relay => stalled,
                () = unacknowledged_for(watch.delivery.as_ref(), limit) => {
                    Some("has acknowledged none of the stream's bytes")
                }
            };
            if let Some(what) = stalled {
                tracing::warn!("the client {what} for {limit:?}; cancelling the job");
                if let Some(engine) = &watch.engine {
                    engine.metrics().stream_stalled();
                }
            }
        }
        .in_current_span(),
    );
    ReceiverStream::new(receiver)
}

/// Resolves once the connection's bytes have waited unacknowledged for `limit`; never where
/// that cannot be read.
async fn unacknowledged_for(delivery: Option<&Delivery>, limit: Duration) {
    let Some(delivery) = delivery else {
        return std::future::pending().await;
    };
    let mut clock = StallClock::default();
    let mut check = tokio::time::interval(DELIVERY_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        check.tick().await;
        let Some(progress) = delivery.sample() else {
            // Closed: the relay notices on its own when the stream is dropped.
            return std::future::pending().await;
        };
        if clock.observe(progress, Instant::now()) >= limit {
            return;
        }
    }
}

async fn not_found() -> (StatusCode, Json<ErrorBody>) {
    let body = ErrorBody {
        error:
            "no such endpoint; the worker serves `GET /health`, `GET /metrics`, `POST /execute` and `POST /embed`"
                .into(),
        error_type: ErrorKind::NotFound,
    };
    (StatusCode::NOT_FOUND, Json(body))
}

/// Frames stream events as SSE (`event:` = [`StreamEvent::name`], `data:` =
/// [`StreamEvent::data_json`]). A stream that ends without `done` or `error` (the engine
/// stopped under it) gets a final `error` event, so a client never mistakes it for success.
pub fn sse_response(events: impl Stream<Item = StreamEvent> + Send + 'static) -> Response {
    let ended = Arc::new(AtomicBool::new(false));
    let seen = ended.clone();
    let tail = futures::stream::once(async move {
        (!seen.load(Ordering::Relaxed)).then(|| {
            WorkerError::EngineStopped("the stream ended before the job finished".into())
                .to_stream_event()
        })
    })
    .filter_map(futures::future::ready);
    let events = events
        .inspect(move |event| {
            if event.is_terminal() {
                ended.store(true, Ordering::Relaxed);
            }
        })
        .chain(tail)
        .map(|event| Ok::<_, Infallible>(sse_event(&event)));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Reverse proxies (nginx) would otherwise buffer the stream and defeat token streaming.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    response
}

fn sse_event(event: &StreamEvent) -> Event {
    Event::default().event(event.name()).data(event.data_json())
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use llorch_api::{FinishReason, GenerationStats, WorkerHealth};
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::WorkerAuth;
    use crate::embeddings::Embeddings;
    use crate::engine::{EngineHandle, EngineSettings};
    use crate::registration::RegistrationReport;

    fn settings() -> EngineSettings {
        EngineSettings {
            model_id: "gemma3-270m".into(),
            backend: llorch_api::Backend::Cpu,
            gpu: 0,
            threads: 1,
            threads_batch: 1,
            adapt_threads: false,
            ctx_size: 512,
            slots: 4,
            batch_size: 512,
            queue_size: 4,
            max_burst_wait: Duration::from_millis(5),
            speculation: crate::engine::Speculation::Off,
        }
    }

    fn loading_app() -> (Router, EngineHandle) {
        let engine = EngineHandle::without_engine(settings());
        let state = AppState {
            engine: engine.clone(),
            auth: Arc::new(WorkerAuth::disabled()),
            registration: RegistrationReport::default(),
            embeddings: Embeddings::disabled(),
        };
        (app(state), engine)
    }

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    async fn post_execute(app: Router, body: impl Into<Body>) -> (StatusCode, String) {
        let request = Request::post("/execute")
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        (status, body_text(response).await)
    }

    #[tokio::test]
    async fn health_is_503_while_loading() {
        let (app, _engine) = loading_app();
        let response = app
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let health: WorkerHealth = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            health,
            WorkerHealth {
                status: WorkerStatus::Loading,
                model: "gemma3-270m".into(),
                slots_total: 4,
                slots_busy: 0,
                registration: None,
            }
        );
    }

    #[tokio::test]
    async fn invalid_requests_are_400_naming_the_field() {
        let cases = [
            (
                json!({"job_id": "j", "prompt": "a", "messages": [{"role": "user", "content": "b"}]}),
                "`messages`",
            ),
            (json!({"job_id": "j"}), "`prompt`"),
            (
                json!({"job_id": "j", "prompt": "a", "max_tokens": 0}),
                "`max_tokens`",
            ),
            (
                json!({"job_id": "j", "prompt": "a", "max_tokens": 513}),
                "between 1 and 512",
            ),
            (
                json!({"job_id": "j", "prompt": "a", "temperature": -1.0}),
                "`temperature`",
            ),
            (
                json!({"job_id": "j", "prompt": "a", "top_p": 0.0}),
                "`top_p`",
            ),
            (
                json!({"job_id": "j", "prompt": "a", "stop": [""]}),
                "`stop[0]`",
            ),
            (json!({"prompt": "a"}), "job_id"),
            (
                json!({"job_id": "j", "prompt": "a", "max_token": 4}),
                "`max_token` is not a field",
            ),
        ];
        for (body, needle) in cases {
            let (app, _engine) = loading_app();
            let (status, text) = post_execute(app, body.to_string()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
            let error: ErrorBody = serde_json::from_str(&text).unwrap();
            assert_eq!(error.error_type, ErrorKind::Validation, "{body}");
            assert!(error.error.contains(needle), "{body}: {}", error.error);
        }
        let (app, _engine) = loading_app();
        let (status, text) = post_execute(app, "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains("not a valid execute request"), "{text}");
    }

    #[tokio::test]
    async fn execute_needs_a_json_content_type_like_orcd() {
        let body = json!({"job_id": "j", "prompt": "a"}).to_string();
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let (app, _engine) = loading_app();
            let mut request = Request::post("/execute");
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = app
                .oneshot(request.body(Body::from(body.clone())).unwrap())
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}"
            );
            let error: ErrorBody = serde_json::from_str(&body_text(response).await).unwrap();
            assert_eq!(error.error_type, ErrorKind::Validation);
            assert!(error.error.contains("application/json"), "{}", error.error);
        }
    }

    #[tokio::test]
    async fn job_ids_that_could_forge_log_lines_are_400() {
        for job_id in [
            "j\n2025-01-01T00:00:00Z INFO forged".to_owned(),
            "j\u{1b}[31mred".to_owned(),
            "j".repeat(129),
            String::new(),
        ] {
            let (app, _engine) = loading_app();
            let body = json!({"job_id": job_id, "prompt": "a"}).to_string();
            let (status, text) = post_execute(app, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{job_id:?}: {text}");
            let error: ErrorBody = serde_json::from_str(&text).unwrap();
            assert!(error.error.contains("`job_id`"), "{}", error.error);
        }
    }

    #[tokio::test]
    async fn deeply_nested_bodies_are_400_before_parsing() {
        let (app, _engine) = loading_app();
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let (status, text) = post_execute(app, deep).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains("deeper than"), "{text}");
    }

    #[tokio::test]
    async fn valid_request_while_loading_is_503() {
        let (app, _engine) = loading_app();
        let (status, text) =
            post_execute(app, json!({"job_id": "j", "prompt": "a"}).to_string()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        assert!(text.contains("still loading"), "{text}");
    }

    #[tokio::test]
    async fn draining_worker_refuses_jobs_and_reports_draining() {
        let (app, engine) = loading_app();
        engine.begin_drain();
        let (status, text) = post_execute(
            app.clone(),
            json!({"job_id": "j", "prompt": "a"}).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
        let error: ErrorBody = serde_json::from_str(&text).unwrap();
        assert_eq!(error.error_type, ErrorKind::ShuttingDown);
        let response = app
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body_text(response).await.contains("\"draining\""));
    }

    #[tokio::test]
    async fn without_a_token_only_local_and_allowed_hosts_are_answered() {
        let allowed = llorch_serve::AllowedHosts::new(&["gpu-box".into()]).unwrap();
        let state = |auth: WorkerAuth| AppState {
            engine: EngineHandle::without_engine(settings()),
            auth: Arc::new(auth),
            registration: RegistrationReport::default(),
            embeddings: Embeddings::disabled(),
        };
        let execute = |host: &str| {
            Request::post("/execute")
                .header("host", host)
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"job_id": "j", "prompt": "a"}).to_string(),
                ))
                .unwrap()
        };
        let open = app_with_host_rule(state(WorkerAuth::disabled()), allowed.clone());
        let refused = open.clone().oneshot(execute("rebind.example:9000")).await;
        let refused = refused.unwrap();
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        assert!(body_text(refused).await.contains("--allowed-host"));
        for host in ["127.0.0.1:9000", "localhost", "gpu-box:9000"] {
            let response = open.clone().oneshot(execute(host)).await.unwrap();
            // Past the rule, to "still loading".
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{host}");
        }
        let token = WorkerAuth::from_tokens(vec!["worker-token-0123456789".into()]).unwrap();
        let protected = app_with_host_rule(state(token), allowed);
        let response = protected.oneshot(execute("rebind.example")).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn execute_needs_the_worker_token_when_one_is_configured() {
        const TOKEN: &str = "worker-token-0123456789";
        let state = AppState {
            engine: EngineHandle::without_engine(settings()),
            auth: Arc::new(WorkerAuth::from_tokens(vec![TOKEN.into()]).unwrap()),
            registration: RegistrationReport::default(),
            embeddings: Embeddings::disabled(),
        };
        let app = app(state);
        let execute = |token: Option<&str>| {
            let mut request = Request::post("/execute").header("content-type", "application/json");
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            request
                .body(Body::from(
                    json!({"job_id": "j", "prompt": "a"}).to_string(),
                ))
                .unwrap()
        };
        for token in [None, Some("not-the-worker-token-000")] {
            let response = app.clone().oneshot(execute(token)).await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let error: ErrorBody = serde_json::from_str(&body_text(response).await).unwrap();
            assert_eq!(error.error_type, ErrorKind::Unauthorized);
        }
        // The right token gets past authentication (to "still loading").
        let response = app.clone().oneshot(execute(Some(TOKEN))).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Health needs no token.
        let response = app
            .oneshot(Request::get("/health").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn metrics_are_open_and_report_the_slots() {
        let state = AppState {
            engine: EngineHandle::without_engine(settings()),
            auth: Arc::new(
                WorkerAuth::from_tokens(vec!["worker-token-0123456789".into()]).unwrap(),
            ),
            registration: RegistrationReport::default(),
            embeddings: Embeddings::disabled(),
        };
        let response = app(state)
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            crate::metrics::CONTENT_TYPE
        );
        let text = body_text(response).await;
        assert!(
            text.contains("llorch_worker_slots{state=\"free\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("llorch_worker_decode_step_seconds_count 0"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn unknown_path_is_a_json_404() {
        let (app, _engine) = loading_app();
        let response = app
            .oneshot(Request::get("/v1/models").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let error: ErrorBody = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(error.error_type, ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn sse_framing_is_one_event_per_stream_event() {
        let done = StreamEvent::Done(GenerationStats {
            finish_reason: FinishReason::Length,
            prompt_tokens: 3,
            generated_tokens: 2,
            time_to_first_token_ms: 1.5,
            tokens_per_second: 10.0,
            prompt_tokens_per_second: 100.0,
            cached_prompt_tokens: 0,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
        });
        let token = StreamEvent::Token {
            text: "line one\nline two".into(),
            index: 0,
            logprobs: Vec::new(),
            tokens: 2,
        };
        let events = vec![token.clone(), done.clone()];
        let response = sse_response(futures::stream::iter(events));
        assert_eq!(
            response.headers()["content-type"],
            HeaderValue::from_static("text/event-stream")
        );
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        let text = body_text(response).await;
        // A newline inside the text stays escaped inside the JSON, so each event is exactly
        // one `event:` and one `data:` line.
        let token_data = token.data_json();
        assert!(
            token_data.contains(r#""line one\nline two""#),
            "{token_data}"
        );
        let expected = format!(
            "event: token\ndata: {token_data}\n\nevent: done\ndata: {}\n\n",
            done.data_json()
        );
        assert_eq!(text, expected);
    }

    #[tokio::test]
    async fn stream_without_terminal_event_ends_with_an_error_event() {
        let events = vec![StreamEvent::Token {
            text: "partial".into(),
            index: 0,
            logprobs: Vec::new(),
            tokens: 1,
        }];
        let text = body_text(sse_response(futures::stream::iter(events))).await;
        let frames: Vec<&str> = text
            .split("\n\n")
            .filter(|frame| !frame.is_empty())
            .collect();
        assert_eq!(frames.len(), 2, "{text}");
        let last = frames[1];
        assert!(last.starts_with("event: error\ndata: "), "{last}");
        let data = last.trim_start_matches("event: error\ndata: ");
        let event = StreamEvent::from_sse("error", data).unwrap();
        assert!(matches!(
            event,
            StreamEvent::Error {
                error_type: ErrorKind::Internal,
                ..
            }
        ));
    }

    fn without_delivery(limit_ms: u64) -> StallWatch {
        StallWatch {
            limit: Duration::from_millis(limit_ms),
            delivery: None,
            engine: None,
        }
    }

    fn token(index: u32) -> StreamEvent {
        StreamEvent::Token {
            text: "x".into(),
            index,
            tokens: 1,
            logprobs: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_stream_nobody_reads_is_cancelled_at_the_worker_after_the_stall_limit() {
        let (engine_side, events) = mpsc::unbounded_channel();
        let stream = relay_with_stall_limit(events, 2, without_delivery(200));
        for index in 0..10 {
            engine_side.send(token(index)).unwrap();
        }
        // Nobody polls `stream`: the relay must give up and drop the engine's receiver, which
        // is how the engine learns to cancel the job.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !engine_side.is_closed() {
            assert!(
                Instant::now() < deadline,
                "the job was not cancelled although its stream was not read"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(stream);
    }

    #[tokio::test]
    async fn a_reader_within_the_stall_limit_gets_every_event_in_order() {
        let (engine_side, events) = mpsc::unbounded_channel();
        let stream = relay_with_stall_limit(events, 2, without_delivery(500));
        for index in 0..20 {
            engine_side.send(token(index)).unwrap();
        }
        drop(engine_side);
        let mut received = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            // Slower than the engine, faster than the limit.
            tokio::time::sleep(Duration::from_millis(20)).await;
            received.push(event);
        }
        assert_eq!(received, (0..20).map(token).collect::<Vec<_>>());
    }
}
