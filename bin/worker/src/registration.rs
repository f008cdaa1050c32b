//! Keeps the worker known to orcd: register once the model is loaded, heartbeat every few
//! seconds, register again when a restarted orcd answers 404, retry with backoff while orcd is
//! down, and deregister on shutdown.

use std::time::Duration;

use llorch_api::{ErrorBody, Heartbeat, WorkerRegistration};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::engine::EngineLoad;

/// Each call to orcd gives up after this; a hung orcd must not stall the heartbeat loop.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Deregistering happens during shutdown, which should not wait long on a vanished orcd.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RegistrationSettings {
    /// orcd's base URL, e.g. `http://127.0.0.1:8080`.
    pub orchestrator_url: String,
    pub registration: WorkerRegistration,
    pub heartbeat_interval: Duration,
    /// Bearer token presented to orcd (`--worker-token-file`).
    pub token: Option<String>,
}

/// Runs until `stop` turns true (or its sender is dropped), then deregisters.
pub async fn run(
    settings: RegistrationSettings,
    load: watch::Receiver<EngineLoad>,
    mut stop: watch::Receiver<bool>,
) {
    let orcd = Orcd::new(&settings);
    let slots_total = settings.registration.slots;
    let mut registered = false;
    let mut retry = FIRST_RETRY;
    // Log the first failure of a streak as a warning, the repeats only at debug level.
    let mut failing = false;
    loop {
        let wait = if !registered {
            match orcd.register(&settings.registration).await {
                Ok(()) => {
                    tracing::info!(
                        orchestrator = %settings.orchestrator_url,
                        worker_id = %settings.registration.worker_id,
                        "registered with orcd"
                    );
                    registered = true;
                    failing = false;
                    retry = FIRST_RETRY;
                    settings.heartbeat_interval
                }
                Err(error) => {
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    log_failure(&mut failing, "registering with orcd", &error, wait);
                    wait
                }
            }
        } else {
            let heartbeat = Heartbeat {
                slots_busy: load.borrow().busy,
                slots_total,
            };
            match orcd.heartbeat(&heartbeat).await {
                Ok(HeartbeatReply::Accepted) => {
                    failing = false;
                    settings.heartbeat_interval
                }
                Ok(HeartbeatReply::UnknownWorker) => {
                    tracing::info!(
                        "orcd does not know this worker (restarted?); registering again"
                    );
                    registered = false;
                    continue;
                }
                // orcd is down or failing: keep heartbeating; once it is back it either
                // accepts or answers 404, which leads to registering again.
                Err(error) => {
                    let wait = settings.heartbeat_interval;
                    log_failure(&mut failing, "heartbeat to orcd", &error, wait);
                    wait
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if registered {
        match orcd.deregister().await {
            Ok(()) => tracing::info!("deregistered from orcd"),
            Err(error) => tracing::warn!(%error, "deregistering from orcd failed"),
        }
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
    Accepted,
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

    async fn register(&self, registration: &WorkerRegistration) -> anyhow::Result<()> {
        let url = format!("{}/workers/register", self.base);
        let response = self
            .request(reqwest::Method::POST, &url)
            .json(registration)
            .send()
            .await?;
        expect_success(response, &url).await
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
        expect_success(response, &url).await?;
        Ok(HeartbeatReply::Accepted)
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
        expect_success(response, &url).await
    }
}

async fn expect_success(response: reqwest::Response, url: &str) -> anyhow::Result<()> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<ErrorBody>(&body)
        .map(|error| error.error)
        .unwrap_or(body);
    anyhow::bail!("{url} answered {status}: {detail}")
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
        let worker = tokio::spawn(run(settings(port), load, stop));

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

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("registration loop stops")
            .unwrap();
        assert_eq!(calls.snapshot().last().unwrap(), "deregister w1");
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
        let worker = tokio::spawn(run(settings(port), load, stop));
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

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("registration loop stops")
            .unwrap();
        server.abort();
    }
}
