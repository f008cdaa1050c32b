//! What orcd says of a worker that `pool` started: waiting until orcd lists it live, and
//! removing a dead worker's record (`pool worker forget`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use llorch_api::{Backend, WorkerInfo, WorkerState};

/// How long orcd may take to list a worker as live once the worker says it registered.
const ORCD_CONFIRM_WAIT: Duration = Duration::from_secs(15);

/// Polls orcd's `GET /workers` until `worker_id` is live. `Ok(None)`: orcd answers but does
/// not list it live in time. An orcd this machine cannot reach is only a warning: the worker
/// itself reported its registration, and orcd may sit behind a network this machine is not on.
pub fn confirm_live(
    cx: &crate::Context,
    orchestrator_url: &str,
    worker_id: &str,
) -> anyhow::Result<Option<WorkerInfo>> {
    let client = orcd_client(cx)?;
    let has_client_token = crate::jobs::api_token(cx)?.is_some();
    let url = format!("{}/workers", orchestrator_url.trim_end_matches('/'));
    let deadline = Instant::now() + ORCD_CONFIRM_WAIT;
    loop {
        match client.get(&url).send() {
            Ok(response) if response.status().is_success() => {
                let workers: Vec<WorkerInfo> = response
                    .json()
                    .with_context(|| format!("reading orcd's answer to GET {url}"))?;
                if let Some(worker) = workers
                    .into_iter()
                    .find(|worker| worker.worker_id == worker_id)
                    .filter(|worker| worker.state == WorkerState::Live)
                {
                    return Ok(Some(worker));
                }
            }
            Ok(response) => {
                let status = response.status();
                let message =
                    format!("could not confirm `{worker_id}` in orcd: GET {url} answered {status}");
                match (status.as_u16(), has_client_token) {
                    // No client token here (a pool host: the operator's side confirms with its
                    // own): nothing is wrong, and the worker reported its registration.
                    (401 | 403, false) => cx.out.debug(format!(
                        "{message}; no client token on this machine, the worker reported its registration"
                    )),
                    (401 | 403, true) => cx.out.warn(format!(
                        "{message}: orcd refused the client token of LLORCH_API_TOKEN_FILE / `orchestrator.api_token_file`"
                    )),
                    _ => cx.out.warn(message),
                }
                return Ok(Some(unconfirmed(worker_id)));
            }
            Err(error) => {
                cx.out.warn(format!(
                    "could not confirm `{worker_id}` in orcd from this machine ({}); the worker reported its registration",
                    error.without_url()
                ));
                return Ok(Some(unconfirmed(worker_id)));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Stands in for orcd's record when orcd could not be asked from here.
fn unconfirmed(worker_id: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: worker_id.to_owned(),
        url: String::new(),
        model: String::new(),
        backend: Backend::Cpu,
        slots_total: 0,
        slots_busy: 0,
        ctx_size: 0,
        last_seen_ms_ago: 0,
        state: WorkerState::Live,
        embeddings: false,
    }
}

/// A blocking client for orcd with the client API token and short timeouts.
fn orcd_client(cx: &crate::Context) -> anyhow::Result<reqwest::blocking::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = crate::jobs::api_token(cx)? {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the API token is not a valid HTTP header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::blocking::Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .context("building an HTTP client")
}

/// `pool worker forget ID`: orcd removes a dead worker's record.
pub fn forget(cx: &crate::Context, worker_id: &str) -> anyhow::Result<()> {
    crate::daemon::validate_name(worker_id)?;
    let orchestrator_url = &cx.settings.orchestrator_url;
    let url = format!(
        "{}/workers/{worker_id}/forget",
        orchestrator_url.trim_end_matches('/')
    );
    let response = orcd_client(cx)?
        .post(&url)
        .send()
        .with_context(|| format!("could not reach orcd at {orchestrator_url}\nhint: set the orchestrator with LLORCH_ORCHESTRATOR_URL or `orchestrator.url` in the config file"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().unwrap_or_default();
        let message = serde_json::from_str::<llorch_api::ErrorBody>(&body)
            .map(|error| error.error)
            .unwrap_or(body);
        let hint = match status.as_u16() {
            401 | 403 if !message.contains("hint:") => "\nhint: forgetting needs the client API token: set LLORCH_API_TOKEN_FILE or `orchestrator.api_token_file`",
            404 if !message.contains("hint:") => "\nhint: `GET /workers` on orcd lists the workers it knows",
            _ => "",
        };
        bail!("forgetting `{worker_id}`: orcd answered {status}: {message}{hint}");
    }
    let info: WorkerInfo = response
        .json()
        .with_context(|| format!("reading orcd's answer to POST {url}"))?;
    if cx.out.json() {
        return cx.out.print_json(&info);
    }
    cx.out.println(format!(
        "orcd forgot `{worker_id}` (was {} at {})",
        match info.state {
            WorkerState::Live => "live",
            WorkerState::Dead => "dead",
        },
        info.url
    ));
    Ok(())
}
