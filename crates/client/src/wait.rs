//! The two waits every start of a daemon needs, each once: until a daemon's `/health` says it
//! is ready ([`wait_for_health`]), and until orcd lists the workers a caller expects as live
//! ([`crate::OrcdClient::wait_until_live`], whose timeout is a [`NotLive`]). Both poll against a
//! deadline — never a fixed sleep — and say on timeout what they saw last.

use std::time::{Duration, Instant};

use llorch_api::{WorkerInfo, WorkerState};

use crate::http;

/// How often a wait asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How long one `/health` request may take before it counts as no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One answer of `GET {base}/health`.
#[derive(Debug, Clone)]
pub struct HealthAnswer {
    pub status: reqwest::StatusCode,
    pub body: String,
}

impl HealthAnswer {
    /// The body as `T` (a worker's [`llorch_api::WorkerHealth`], say).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(&self.body).ok()
    }
}

/// What a caller makes of one health answer.
pub enum Verdict<T> {
    /// Ready: the wait ends with this value.
    Ready(T),
    /// Not yet: keep waiting; the reason is shown if the deadline passes.
    NotYet(String),
    /// It will never be ready (a refused registration, say): the wait ends with this error.
    Failed(anyhow::Error),
}

/// The usual judgement: ready on 200, with the body.
pub fn ok_status(answer: &HealthAnswer) -> Verdict<String> {
    if answer.status == reqwest::StatusCode::OK {
        Verdict::Ready(answer.body.clone())
    } else {
        Verdict::NotYet(format!("HTTP {}", answer.status))
    }
}

/// Polls `GET {base_url}/health` until `judge` calls an answer ready or failed, or `timeout`
/// passes. Before each probe `still_running` may end the wait (the process exited: its error
/// says so with the log). Blocking: for xtask's plain code, not inside an async runtime.
pub fn wait_for_health<T>(
    base_url: &str,
    timeout: Duration,
    mut judge: impl FnMut(&HealthAnswer) -> Verdict<T>,
    mut still_running: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<T> {
    let health_url = format!("{}/health", http::trim_base(base_url));
    let client = http::blocking_client_for(base_url, PROBE_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        still_running()?;
        let answer = client.get(&health_url).send().and_then(|response| {
            let status = response.status();
            response.text().map(|body| HealthAnswer { status, body })
        });
        match answer {
            Ok(answer) => match judge(&answer) {
                Verdict::Ready(value) => return Ok(value),
                Verdict::Failed(error) => return Err(error),
                Verdict::NotYet(reason) => last = reason,
            },
            Err(error) => last = error.without_url().to_string(),
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{health_url} was not ready after {} s (last answer: {last})",
                timeout.as_secs()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One probe: whether `GET {base_url}/health` answers 2xx within `timeout`.
pub fn is_healthy(base_url: &str, timeout: Duration) -> bool {
    http::blocking_client_for(base_url, timeout)
        .get(format!("{}/health", http::trim_base(base_url)))
        .send()
        .is_ok_and(|response| response.status().is_success())
}

/// A wait on orcd ended at its deadline: what orcd answered last.
#[derive(Debug, Clone)]
pub struct TimedOut<T> {
    pub orcd_url: String,
    /// What was awaited, in words ("2 worker(s) live").
    pub what: String,
    pub waited: Duration,
    /// orcd's last answer (empty when it never answered).
    pub last: T,
    /// Why orcd gave no answer the last time it was asked, if it did not.
    pub last_error: Option<String>,
}

/// orcd did not list the expected workers as live in time; `last` is its last `/workers`.
pub type NotLive = TimedOut<Vec<WorkerInfo>>;

impl<T> std::fmt::Display for TimedOut<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "waited {} s for {} at orcd {}",
            self.waited.as_secs(),
            self.what,
            self.orcd_url
        )?;
        match &self.last_error {
            Some(error) => write!(f, ": orcd did not answer ({error})"),
            None => Ok(()),
        }
    }
}

impl<T: std::fmt::Debug> std::error::Error for TimedOut<T> {}

/// The workers of a list that are live, by id, for messages.
pub fn live_ids(workers: &[WorkerInfo]) -> String {
    let live: Vec<&str> = workers
        .iter()
        .filter(|worker| worker.state == WorkerState::Live)
        .map(|worker| worker.worker_id.as_str())
        .collect();
    match live.is_empty() {
        true => "no worker is live".to_owned(),
        false => format!("live are {}", live.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(router: axum::Router) -> (String, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, router).await });
        (url, runtime)
    }

    #[test]
    fn a_wait_for_health_ends_when_the_judge_says_ready() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let router = axum::Router::new().route(
            "/health",
            axum::routing::get(|| async {
                // Loading twice, then ready: the wait must see all three answers.
                if CALLS.fetch_add(1, Ordering::SeqCst) < 2 {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "loading")
                } else {
                    (axum::http::StatusCode::OK, "ready")
                }
            }),
        );
        let (url, _runtime) = serve(router);
        let body = wait_for_health(&url, Duration::from_secs(20), ok_status, || Ok(())).unwrap();
        assert_eq!(body, "ready");
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_wait_for_health_times_out_with_the_last_answer() {
        let router = axum::Router::new().route(
            "/health",
            axum::routing::get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "") }),
        );
        let (url, _runtime) = serve(router);
        let error = wait_for_health(&url, Duration::from_millis(300), ok_status, || Ok(()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("was not ready after 0 s"), "{error}");
        assert!(error.contains("last answer: HTTP 503"), "{error}");
    }

    #[test]
    fn a_failed_verdict_or_an_exited_process_ends_the_wait_at_once() {
        let router = axum::Router::new().route("/health", axum::routing::get(|| async { "x" }));
        let (url, _runtime) = serve(router);
        let started = Instant::now();
        let refused = wait_for_health(
            &url,
            Duration::from_secs(60),
            |_| Verdict::<()>::Failed(anyhow::anyhow!("refused")),
            || Ok(()),
        );
        assert_eq!(refused.unwrap_err().to_string(), "refused");
        let exited = wait_for_health(&url, Duration::from_secs(60), ok_status, || {
            anyhow::bail!("the process exited")
        });
        assert_eq!(exited.unwrap_err().to_string(), "the process exited");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn nothing_listening_is_no_answer_and_not_healthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        assert!(!is_healthy(&url, Duration::from_millis(500)));
        let error = wait_for_health(&url, Duration::ZERO, ok_status, || Ok(()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/health was not ready"), "{error}");
    }
}
