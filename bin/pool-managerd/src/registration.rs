//! Keeps this host known to orcd: register with its facts, heartbeat them, register again when
//! a restarted orcd answers 404, retry with backoff while orcd is down, deregister on shutdown.

use std::time::Duration;

use llorch_api::pool::{HostFacts, PoolAccepted, PoolRegistration};
use reqwest::StatusCode;
use tokio::sync::watch;

use crate::server::AppState;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// The closest heartbeats orcd can ask for.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct OrcdSettings {
    pub orchestrator_url: String,
    /// The URL orcd reaches this pool manager at.
    pub advertise_url: String,
    pub heartbeat_interval: Duration,
    /// The worker token presented to orcd.
    pub token: Option<String>,
}

/// Runs until `stop` turns true, then deregisters.
pub async fn run(settings: OrcdSettings, state: AppState, mut stop: watch::Receiver<bool>) {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("a plain HTTP client builds");
    let base = settings.orchestrator_url.trim_end_matches('/').to_owned();
    let host_id = state.host_id().to_owned();
    let mut registered = false;
    let mut interval = settings.heartbeat_interval;
    let mut retry = FIRST_RETRY;
    loop {
        let facts = state.facts_now().await;
        let wait = if registered {
            let url = format!("{base}/pools/{host_id}/heartbeat");
            match send(&settings, http.post(url).json(&facts)).await {
                Ok(StatusCode::NO_CONTENT | StatusCode::OK) => interval,
                Ok(StatusCode::NOT_FOUND) => {
                    tracing::info!(
                        "orcd does not know this pool manager (restarted?); registering again"
                    );
                    registered = false;
                    continue;
                }
                Ok(status) => {
                    tracing::warn!(%status, "orcd refused the heartbeat");
                    interval
                }
                Err(error) => {
                    tracing::warn!("heartbeat to orcd failed: {error:#}");
                    interval
                }
            }
        } else {
            match register(&http, &settings, &base, &host_id, facts).await {
                Ok(asked) => {
                    interval = settings
                        .heartbeat_interval
                        .min(asked.max(MIN_HEARTBEAT_INTERVAL));
                    tracing::info!(orchestrator = %base, %host_id, "registered with orcd");
                    registered = true;
                    retry = FIRST_RETRY;
                    interval
                }
                Err(error) => {
                    tracing::warn!(
                        retry_ms = retry.as_millis() as u64,
                        "registering with orcd failed: {error:#}"
                    );
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
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
        let url = format!("{base}/pools/{host_id}");
        match send(&settings, http.delete(url)).await {
            Ok(status) if status.is_success() => tracing::info!("deregistered from orcd"),
            Ok(status) => tracing::warn!(%status, "deregistering from orcd was refused"),
            Err(error) => tracing::warn!("deregistering from orcd failed: {error:#}"),
        }
    }
}

async fn register(
    http: &reqwest::Client,
    settings: &OrcdSettings,
    base: &str,
    host_id: &str,
    facts: HostFacts,
) -> anyhow::Result<Duration> {
    let registration = PoolRegistration {
        host_id: host_id.to_owned(),
        url: settings.advertise_url.clone(),
        facts,
    };
    let mut request = http
        .post(format!("{base}/pools/register"))
        .json(&registration);
    if let Some(token) = &settings.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("orcd answered {status}: {body}");
    }
    let accepted: PoolAccepted = response.json().await?;
    Ok(Duration::from_millis(accepted.heartbeat_interval_ms))
}

async fn send(
    settings: &OrcdSettings,
    request: reqwest::RequestBuilder,
) -> anyhow::Result<StatusCode> {
    let request = match &settings.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    Ok(request.send().await?.status())
}
