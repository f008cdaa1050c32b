//! Keeps the worker known to orcd: register once the model is loaded, heartbeat every few
//! seconds and at once when a slot frees that orcd still counts as busy, register again when a
//! restarted orcd answers 404, retry with backoff while orcd is down, and deregister on shutdown.
//! orcd's answers list the jobs it gave up on this worker while it could not reach it (marked
//! dead, and their clients told so); those are handed to `on_given_up`, which cancels them: a
//! worker cut off from orcd cannot tell otherwise, since the connection of each still looks open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use llorch_api::{
    ErrorBody, Heartbeat, HeartbeatAccepted, RegistrationAccepted, RegistrationState,
    RegistrationStatus, WorkerRegistration,
};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::engine::EngineLoad;

/// Each call to orcd gives up after this; a hung orcd must not stall the heartbeat loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Deregistering happens during shutdown, which should not wait long on a vanished orcd.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// The closest heartbeats orcd can ask for, so a misconfigured orcd cannot make a worker flood it.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct RegistrationSettings {
    /// orcd's base URL, e.g. `http://127.0.0.1:8080`.
    pub orchestrator_url: String,
    pub registration: WorkerRegistration,
    pub heartbeat_interval: Duration,
    /// Bearer token presented to orcd (`--worker-token-file`).
    pub token: Option<String>,
}

/// What `/health` reports about registering; shared between the registration loop and the
/// HTTP handler. Empty while the worker has no orchestrator or has not tried yet.
#[derive(Debug, Clone, Default)]
pub struct RegistrationReport(Arc<Mutex<Option<RegistrationStatus>>>);

impl RegistrationReport {
    pub fn get(&self) -> Option<RegistrationStatus> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    fn set(&self, status: RegistrationStatus) {
        *self.0.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(status);
    }

    fn update(
        &self,
        settings: &RegistrationSettings,
        state: RegistrationState,
        error: Option<String>,
    ) {
        let failures = match (&error, self.get()) {
            (None, _) => 0,
            (Some(_), Some(previous)) => previous.failures + 1,
            (Some(_), None) => 1,
        };
        self.set(RegistrationStatus {
            orchestrator_url: settings.orchestrator_url.clone(),
            state,
            advertised_url: settings.registration.url.clone(),
            last_error: error,
            failures,
        });
    }
}

/// Runs until `stop` turns true (or its sender is dropped), then deregisters.
pub async fn run(
    settings: RegistrationSettings,
    mut load: watch::Receiver<EngineLoad>,
    mut stop: watch::Receiver<bool>,
    report: RegistrationReport,
    on_given_up: impl Fn(Vec<String>),
) {
    let orcd = Orcd::new(&settings);
    let slots_total = settings.registration.slots;
    let mut registered = false;
    let mut heartbeat_interval = settings.heartbeat_interval;
    let mut retry = FIRST_RETRY;
    // The busy slots orcd last heard of; None until a heartbeat is accepted.
    let mut busy_reported: Option<u32> = None;
    // Log the first failure of a streak as a warning, the repeats only at debug level.
    let mut failing = false;
    report.update(&settings, RegistrationState::Pending, None);
    loop {
        let wait = if !registered {
            match orcd.register(&settings.registration).await {
                Ok((asked_interval, given_up)) => {
                    on_given_up(given_up);
                    heartbeat_interval =
                        heartbeat_interval_within(settings.heartbeat_interval, asked_interval);
                    tracing::info!(
                        orchestrator = %settings.orchestrator_url,
                        worker_id = %settings.registration.worker_id,
                        heartbeat_interval_ms = heartbeat_interval.as_millis() as u64,
                        "registered with orcd"
                    );
                    report.update(&settings, RegistrationState::Registered, None);
                    registered = true;
                    failing = false;
                    retry = FIRST_RETRY;
                    // orcd takes a new registration as idle; a worker that registers again
                    // while busy (after orcd restarted) says so at once.
                    Duration::ZERO
                }
                Err(error) => {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    let error = error.explained(&settings);
                    let state = match error.refused {
                        true => RegistrationState::Refused,
                        false => RegistrationState::Pending,
                    };
                    report.update(&settings, state, Some(error.message.clone()));
                    log_failure(
                        &mut failing,
                        "registering with orcd",
                        &anyhow::anyhow!(error.message),
                        wait,
                    );
                    wait
                }
            }
        } else {
            let load_now = *load.borrow();
            let heartbeat = Heartbeat {
                slots_busy: load_now.busy,
                slots_total,
                jobs_waiting: load_now.waiting,
            };
            busy_reported = None;
            match orcd.heartbeat(&heartbeat).await {
                Ok(HeartbeatReply::Accepted(given_up)) => {
                    on_given_up(given_up);
                    failing = false;
                    busy_reported = Some(heartbeat.slots_busy);
                    heartbeat_interval
                }
                Ok(HeartbeatReply::UnknownWorker) => {
                    tracing::info!(
                        "orcd does not know this worker (restarted, or told to forget it); registering again"
                    );
                    registered = false;
                    report.update(&settings, RegistrationState::Pending, None);
                    continue;
                }
                // orcd is down or failing: keep heartbeating; once it is back it either
                // accepts or answers 404, which leads to registering again.
                Err(error) => {
                    let wait = heartbeat_interval;
                    log_failure(&mut failing, "heartbeat to orcd", &error, wait);
                    wait
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(wait) => {}
            _ = slot_freed(&mut load, busy_reported) => {}
        }
    }
    if registered {
        match orcd.deregister().await {
            Ok(()) => tracing::info!("deregistered from orcd"),
            Err(error) => tracing::warn!(%error, "deregistering from orcd failed"),
        }
    }
}

/// Resolves once the engine runs fewer jobs than orcd last heard of (never while orcd has heard
/// nothing). orcd counts a worker's slots as busy by its last heartbeat until a job orcd sent
/// there ends, so a slot freed by a job orcd did not send (a client of the worker's own
/// `/execute`) would stay unused by orcd for up to a whole heartbeat interval.
async fn slot_freed(load: &mut watch::Receiver<EngineLoad>, busy_reported: Option<u32>) {
    let Some(reported) = busy_reported else {
        return std::future::pending().await;
    };
    if load.wait_for(|load| load.busy < reported).await.is_err() {
        // The engine is gone; the stop signal follows.
        std::future::pending::<()>().await;
    }
}

/// `--heartbeat-interval-ms`, or less when orcd asks for heartbeats closer together: orcd marks
/// the worker dead after its own timeout, which a longer interval would overrun.
fn heartbeat_interval_within(configured: Duration, asked_by_orcd: Option<Duration>) -> Duration {
    match asked_by_orcd {
        Some(asked) => configured.min(asked.max(MIN_HEARTBEAT_INTERVAL)),
        None => configured,
    }
}

fn log_failure(failing: &mut bool, what: &str, error: &anyhow::Error, retry_in: Duration) {
    let retry_in_ms = retry_in.as_millis() as u64;
    if *failing {
        tracing::debug!(error = %format!("{error:#}"), retry_in_ms, "{what} failed");
    } else {
        tracing::warn!(error = %format!("{error:#}"), retry_in_ms, "{what} failed; retrying");
    }
    *failing = true;
}

enum HeartbeatReply {
    /// With the jobs orcd gave up on this worker.
    Accepted(Vec<String>),
    /// 404: orcd restarted or forgot the worker.
    UnknownWorker,
}

struct Orcd {
    client: reqwest::Client,
    base: String,
    worker_id: String,
    token: Option<String>,
}

impl Orcd {
    fn new(settings: &RegistrationSettings) -> Orcd {
        Orcd {
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("building an HTTP client with static settings"),
            base: settings.orchestrator_url.trim_end_matches('/').to_owned(),
            worker_id: settings.registration.worker_id.clone(),
            token: settings.token.clone(),
        }
    }

    /// A request to orcd, with the worker token when there is one.
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Registers; on success returns the heartbeat interval orcd asked for, if it named one,
    /// and the jobs orcd gave up on this worker.
    async fn register(
        &self,
        registration: &WorkerRegistration,
    ) -> Result<(Option<Duration>, Vec<String>), RegisterError> {
        let url = format!("{}/workers/register", self.base);
        let response = self
            .request(reqwest::Method::POST, &url)
            .json(registration)
            .send()
            .await
            .map_err(|error| RegisterError::Unreachable(error_chain(&error)))?;
        let status = response.status();
        if status.is_success() {
            // An answer without the field (or an unreadable one) keeps the worker's own interval:
            // orcd has accepted the registration either way.
            let Ok(accepted) = response.json::<RegistrationAccepted>().await else {
                return Ok((None, Vec::new()));
            };
            let interval = accepted.heartbeat_interval_ms.map(Duration::from_millis);
            return Ok((interval, accepted.given_up_jobs));
        }
        Err(RegisterError::Answered {
            status,
            detail: error_detail(response).await,
        })
    }

    async fn heartbeat(&self, heartbeat: &Heartbeat) -> anyhow::Result<HeartbeatReply> {
        let url = format!("{}/workers/{}/heartbeat", self.base, self.worker_id);
        let response = self
            .request(reqwest::Method::POST, &url)
            .json(heartbeat)
            .send()
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(HeartbeatReply::UnknownWorker);
        }
        let response = expect_success(response, &url).await?;
        // An older orcd answers 204 without a body: nothing given up.
        let accepted: HeartbeatAccepted = response.json().await.unwrap_or_default();
        Ok(HeartbeatReply::Accepted(accepted.given_up_jobs))
    }

    async fn deregister(&self) -> anyhow::Result<()> {
        let url = format!("{}/workers/{}", self.base, self.worker_id);
        let response = self
            .request(reqwest::Method::DELETE, &url)
            .timeout(DEREGISTER_TIMEOUT)
            .send()
            .await?;
        // Already gone (orcd restarted meanwhile) is what deregistering wants anyway.
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        expect_success(response, &url).await.map(drop)
    }
}

/// The response when its status is a success, else an error naming `url` and orcd's answer.
async fn expect_success(
    response: reqwest::Response,
    url: &str,
) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let detail = error_detail(response).await;
    anyhow::bail!("{url} answered {status}: {detail}")
}

/// orcd's `error` from an `ErrorBody`, or the raw body.
async fn error_detail(response: reqwest::Response) -> String {
    let body = response.text().await.unwrap_or_default();
    serde_json::from_str::<ErrorBody>(&body)
        .map(|error| error.error)
        .unwrap_or(body)
}

/// A reqwest error with its causes ("error sending request: ... Connection refused").
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a registration failed, before it is explained to the operator.
#[derive(Debug)]
enum RegisterError {
    /// No answer: orcd is down or this host cannot reach its URL.
    Unreachable(String),
    /// orcd answered with an error status.
    Answered { status: StatusCode, detail: String },
}

/// A registration failure as `/health` and the log show it: what happened and the fix.
#[derive(Debug)]
struct ExplainedFailure {
    message: String,
    /// True when orcd refused (retrying cannot help until the operator fixes something).
    refused: bool,
}

impl RegisterError {
    fn explained(self, settings: &RegistrationSettings) -> ExplainedFailure {
        let orcd = &settings.orchestrator_url;
        let (message, hint, refused) = match self {
            RegisterError::Unreachable(cause) => (
                format!("orcd at {orcd} did not answer: {cause}"),
                "check that orcd runs and listens on an address this host can reach (`orcd --listen 0.0.0.0:8080`), and give that address to the worker (`--orchestrator-url`; `cargo xtask pool worker spawn --orchestrator-url URL`)".to_owned(),
                false,
            ),
            RegisterError::Answered { status, detail } => {
                let hint = match status {
                    StatusCode::UNAUTHORIZED if settings.token.is_none() => "this orcd requires the worker token: start the worker with `--worker-token-file FILE` holding one of the tokens of orcd's `--worker-token-file` (`cargo xtask pool worker spawn --worker-token-file FILE`)".to_owned(),
                    StatusCode::UNAUTHORIZED => "the worker token is not one orcd accepts: use a token from the file orcd reads with `--worker-token-file`".to_owned(),
                    StatusCode::FORBIDDEN => "the worker presented a client API token: give it the worker token (orcd's `--worker-token-file`) instead".to_owned(),
                    _ => "fix what orcd names above and start the worker again".to_owned(),
                };
                let refused = status.is_client_error()
                    && !matches!(
                        status,
                        StatusCode::NOT_FOUND
                            | StatusCode::REQUEST_TIMEOUT
                            | StatusCode::TOO_MANY_REQUESTS
                    );
                (
                    format!("orcd at {orcd} refused the registration ({status}): {detail}"),
                    hint,
                    refused,
                )
            }
        };
        // orcd's own message may already carry a hint; one is enough.
        let message = match message.contains("hint:") {
            true => message,
            false => format!("{message}\nhint: {hint}"),
        };
        ExplainedFailure { message, refused }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::{
        extract::{Path, State},
        http::{HeaderMap, StatusCode},
        routing::{delete, post},
        Json, Router,
    };
    use llorch_api::Backend;

    use super::*;

    /// What a fake orcd saw, in order.
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<Vec<String>>>);

    impl Calls {
        fn push(&self, call: String) {
            self.0.lock().unwrap().push(call);
        }
        fn snapshot(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    const TOKEN: &str = "worker-token-0123456789";

    fn authorized(headers: &HeaderMap) -> bool {
        headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"))
    }

    /// A fake orcd that forgets the worker once: its first heartbeat answers 404, as after a
    /// restart. Calls without the worker token are refused, as orcd with auth does.
    async fn fake_orcd(listener: tokio::net::TcpListener, calls: Calls) {
        async fn register(
            State(calls): State<Calls>,
            headers: HeaderMap,
            Json(registration): Json<WorkerRegistration>,
        ) -> StatusCode {
            if !authorized(&headers) {
                return StatusCode::UNAUTHORIZED;
            }
            calls.push(format!("register {}", registration.worker_id));
            StatusCode::OK
        }
        async fn heartbeat(
            State(calls): State<Calls>,
            headers: HeaderMap,
            Path(id): Path<String>,
            Json(heartbeat): Json<Heartbeat>,
        ) -> StatusCode {
            if !authorized(&headers) {
                return StatusCode::UNAUTHORIZED;
            }
            let first = !calls
                .snapshot()
                .iter()
                .any(|call| call.starts_with("heartbeat"));
            calls.push(format!(
                "heartbeat {id} {}/{}",
                heartbeat.slots_busy, heartbeat.slots_total
            ));
            if first {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            }
        }
        async fn deregister(
            State(calls): State<Calls>,
            headers: HeaderMap,
            Path(id): Path<String>,
        ) -> StatusCode {
            if !authorized(&headers) {
                return StatusCode::UNAUTHORIZED;
            }
            calls.push(format!("deregister {id}"));
            StatusCode::OK
        }
        let app = Router::new()
            .route("/workers/register", post(register))
            .route("/workers/{id}/heartbeat", post(heartbeat))
            .route("/workers/{id}", delete(deregister))
            .with_state(calls);
        axum::serve(listener, app).await.unwrap();
    }

    fn settings(port: u16) -> RegistrationSettings {
        RegistrationSettings {
            orchestrator_url: format!("http://127.0.0.1:{port}/"),
            registration: WorkerRegistration {
                worker_id: "w1".into(),
                url: "http://127.0.0.1:1".into(),
                model: "m".into(),
                backend: Backend::Cpu,
                slots: 4,
                ctx_size: 512,
                embeddings: false,
            },
            heartbeat_interval: Duration::from_millis(20),
            token: Some(TOKEN.into()),
        }
    }

    async fn wait_for_calls(calls: &Calls, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = calls.snapshot();
            if done(&seen) {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "orcd saw only {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the registration loop and waits for it to end (it deregisters first).
    async fn stop_and_wait(stop: &watch::Sender<bool>, worker: tokio::task::JoinHandle<()>) {
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("registration loop stops")
            .unwrap();
    }

    #[test]
    fn heartbeats_come_as_often_as_orcd_asks_but_not_less_often_than_configured() {
        let within = |asked: Option<u64>| {
            heartbeat_interval_within(Duration::from_secs(3), asked.map(Duration::from_millis))
        };
        // orcd started with `--heartbeat-timeout-secs 3` asks for 1 s: a 3 s interval would
        // get the worker marked dead whenever one heartbeat is a little late.
        assert_eq!(within(Some(1000)), Duration::from_secs(1));
        // orcd's default (10 s timeout) asks for 3.3 s: the worker's 3 s stands.
        assert_eq!(within(Some(3333)), Duration::from_secs(3));
        // An orcd that does not say keeps the worker's own interval.
        assert_eq!(within(None), Duration::from_secs(3));
        // A misconfigured orcd cannot make the worker flood it.
        assert_eq!(within(Some(1)), MIN_HEARTBEAT_INTERVAL);
    }

    #[tokio::test]
    async fn registers_again_after_404_and_deregisters_on_stop() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Calls::default();
        let server = tokio::spawn(fake_orcd(listener, calls.clone()));
        let (_load_tx, load) = watch::channel(EngineLoad {
            busy: 3,
            waiting: 0,
        });
        let (stop_tx, stop) = watch::channel(false);
        let worker = tokio::spawn(run(
            settings(port),
            load,
            stop,
            RegistrationReport::default(),
            |_| {},
        ));

        let seen = wait_for_calls(&calls, |seen| {
            seen.iter()
                .filter(|call| call.starts_with("heartbeat"))
                .count()
                >= 2
        })
        .await;
        assert_eq!(
            &seen[..4],
            [
                "register w1",
                "heartbeat w1 3/4",
                "register w1",
                "heartbeat w1 3/4"
            ]
        );

        stop_and_wait(&stop_tx, worker).await;
        assert_eq!(calls.snapshot().last().unwrap(), "deregister w1");
        server.abort();
    }

    #[tokio::test]
    async fn a_slot_freed_is_reported_at_once_and_a_slot_taken_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Calls::default();
        let server = tokio::spawn(fake_orcd(listener, calls.clone()));
        let (load_tx, load) = watch::channel(EngineLoad {
            busy: 3,
            waiting: 0,
        });
        let (stop_tx, stop) = watch::channel(false);
        // No periodic heartbeat comes within the test: every one after registering is early.
        let slow = RegistrationSettings {
            heartbeat_interval: Duration::from_secs(600),
            ..settings(port)
        };
        let worker = tokio::spawn(run(slow, load, stop, RegistrationReport::default(), |_| {}));
        let heartbeats = |seen: &[String]| {
            seen.iter()
                .filter(|call| call.starts_with("heartbeat"))
                .cloned()
                .collect::<Vec<_>>()
        };
        // The fake orcd forgets the worker at its first heartbeat; the second is accepted.
        wait_for_calls(&calls, |seen| heartbeats(seen).len() >= 2).await;

        load_tx.send_modify(|load| load.busy = 1);
        wait_for_calls(&calls, |seen| heartbeats(seen).len() >= 3).await;
        // Busier than orcd heard: orcd learns that from its own dispatches or a refusal.
        load_tx.send_modify(|load| load.busy = 2);
        tokio::time::sleep(Duration::from_millis(200)).await;
        load_tx.send_modify(|load| load.busy = 0);
        let seen = wait_for_calls(&calls, |seen| heartbeats(seen).len() >= 4).await;
        assert_eq!(
            heartbeats(&seen),
            [
                "heartbeat w1 3/4",
                "heartbeat w1 3/4",
                "heartbeat w1 1/4",
                "heartbeat w1 0/4"
            ]
        );

        stop_and_wait(&stop_tx, worker).await;
        server.abort();
    }

    #[tokio::test]
    async fn keeps_retrying_until_orcd_comes_up() {
        // Reserve a port, then leave it closed: orcd is "down".
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (_load_tx, load) = watch::channel(EngineLoad::default());
        let (stop_tx, stop) = watch::channel(false);
        let worker = tokio::spawn(run(
            settings(port),
            load,
            stop,
            RegistrationReport::default(),
            |_| {},
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!worker.is_finished());

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let calls = Calls::default();
        let server = tokio::spawn(fake_orcd(listener, calls.clone()));
        wait_for_calls(&calls, |seen| {
            seen.iter().any(|call| call.starts_with("register"))
        })
        .await;

        stop_and_wait(&stop_tx, worker).await;
        server.abort();
    }

    #[tokio::test]
    async fn a_refused_registration_is_reported_with_the_flag_that_fixes_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(fake_orcd(listener, Calls::default()));
        let (_load_tx, load) = watch::channel(EngineLoad::default());
        let (stop_tx, stop) = watch::channel(false);
        let report = RegistrationReport::default();
        let without_token = RegistrationSettings {
            token: None,
            ..settings(port)
        };
        let worker = tokio::spawn(run(without_token, load, stop, report.clone(), |_| {}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            match report.get() {
                Some(status) if status.state == RegistrationState::Refused => break status,
                seen => assert!(
                    tokio::time::Instant::now() < deadline,
                    "never refused: {seen:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let error = status.last_error.unwrap();
        assert!(error.contains("401"), "{error}");
        assert!(error.contains("\nhint: "), "{error}");
        assert!(error.contains("--worker-token-file"), "{error}");
        assert!(status.failures >= 1);
        stop_and_wait(&stop_tx, worker).await;
        server.abort();
    }

    #[tokio::test]
    async fn an_unreachable_orcd_stays_pending_and_names_the_url() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let (_load_tx, load) = watch::channel(EngineLoad::default());
        let (stop_tx, stop) = watch::channel(false);
        let report = RegistrationReport::default();
        let worker = tokio::spawn(run(settings(port), load, stop, report.clone(), |_| {}));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            match report.get() {
                Some(status) if status.last_error.is_some() => break status,
                seen => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no failure reported: {seen:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(status.state, RegistrationState::Pending);
        let error = status.last_error.unwrap();
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
        assert!(error.contains("--orchestrator-url"), "{error}");
        stop_and_wait(&stop_tx, worker).await;
    }

    /// A fake orcd that lists a job it gave up in its answers to the registration and to the
    /// first heartbeat, and nothing after.
    async fn orcd_that_gave_up_jobs(listener: tokio::net::TcpListener) {
        async fn register() -> Json<serde_json::Value> {
            Json(serde_json::json!({
                "worker_id": "w1", "url": "http://127.0.0.1:1", "model": "m", "backend": "cpu",
                "slots_total": 4, "slots_busy": 0, "ctx_size": 512, "last_seen_ms_ago": 0,
                "state": "live", "given_up_jobs": ["lost-at-registration"],
            }))
        }
        async fn heartbeat(State(beats): State<Arc<Mutex<u32>>>) -> Json<HeartbeatAccepted> {
            let mut beats = beats.lock().unwrap();
            *beats += 1;
            let given_up_jobs = match *beats {
                1 => vec!["lost-1".to_owned(), "lost-2".to_owned()],
                _ => Vec::new(),
            };
            Json(HeartbeatAccepted { given_up_jobs })
        }
        let app = Router::new()
            .route("/workers/register", post(register))
            .route("/workers/{id}/heartbeat", post(heartbeat))
            .route("/workers/{id}", delete(|| async { StatusCode::OK }))
            .with_state(Arc::new(Mutex::new(0)));
        axum::serve(listener, app).await.unwrap();
    }

    #[tokio::test]
    async fn jobs_orcd_gave_up_are_handed_over_for_cancelling() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(orcd_that_gave_up_jobs(listener));
        let (_load_tx, load) = watch::channel(EngineLoad::default());
        let (stop_tx, stop) = watch::channel(false);
        let cancelled = Calls::default();
        let recorder = cancelled.clone();
        let worker = tokio::spawn(run(
            settings(port),
            load,
            stop,
            RegistrationReport::default(),
            move |job_ids: Vec<String>| {
                for job_id in job_ids {
                    recorder.push(job_id);
                }
            },
        ));
        wait_for_calls(&cancelled, |seen| seen.len() >= 3).await;
        // Later heartbeats list nothing more.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            cancelled.snapshot(),
            ["lost-at-registration", "lost-1", "lost-2"]
        );
        stop_and_wait(&stop_tx, worker).await;
        server.abort();
    }
}
