//! [`OrcdClient`]: orcd's native API (`/v2/tasks`, `/workers`, `/v2/events`, ...) for the CLI,
//! the bench and the end-to-end tests, async underneath ([`crate::blocking`] wraps it for
//! xtask's plain scripted code).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use llorch_api::{ErrorBody, GenerationStats, StreamEvent, TaskRequest, WorkerInfo};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    http,
    wait::{NotLive, TimedOut},
};

/// How long a request that expects a JSON answer may take, unless the caller says otherwise.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a wait asks orcd again.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A client of one orcd.
#[derive(Clone)]
pub struct OrcdClient {
    base_url: String,
    http: reqwest::Client,
    request_timeout: Duration,
    /// Said after a 401/403: where the token came from or how to give one.
    token_hint: String,
    /// Said when orcd cannot be reached: how to start it or point at it.
    unreachable_hint: String,
}

/// orcd answered, but not with success: the status and orcd's own message, kept apart so a
/// caller can act on the status (`error.downcast_ref::<OrcdRefusal>()`).
#[derive(Debug, Clone)]
pub struct OrcdRefusal {
    pub status: reqwest::StatusCode,
    /// orcd's `error` field, or the raw body when it was not orcd's error shape.
    pub message: String,
    pub retry_after: Option<String>,
    /// What to do about it, as a last `hint:` line (empty when orcd's message has one).
    pub hint: String,
}

impl std::fmt::Display for OrcdRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "orcd answered {}: {}{}",
            self.status, self.message, self.hint
        )
    }
}

impl std::error::Error for OrcdRefusal {}

/// What a finished streamed job produced.
#[derive(Debug, Clone, Serialize)]
pub struct JobOutcome {
    pub job_id: Option<String>,
    pub model: String,
    pub worker_id: Option<String>,
    pub text: String,
    /// Position in the queue when the job had to wait.
    pub queued_at_position: Option<u32>,
    pub stats: GenerationStats,
}

/// An open task stream, event by event.
pub struct TaskStream {
    /// The job's id from orcd's header, before any event.
    pub job_id: Option<String>,
    events: std::pin::Pin<Box<dyn Stream<Item = anyhow::Result<StreamEvent>> + Send>>,
}

impl TaskStream {
    pub async fn next(&mut self) -> Option<anyhow::Result<StreamEvent>> {
        self.events.next().await
    }

    /// Reads events until the stream ends or a terminal event (done, error) arrives.
    pub async fn collect(mut self) -> anyhow::Result<Vec<StreamEvent>> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            let event = event?;
            let terminal = event.is_terminal();
            events.push(event);
            if terminal {
                break;
            }
        }
        Ok(events)
    }
}

impl OrcdClient {
    /// A client of the orcd at `base_url`, sending `token` as a bearer token when given.
    pub fn new(base_url: &str, token: Option<&str>) -> OrcdClient {
        OrcdClient {
            base_url: http::trim_base(base_url),
            http: http::client_for(base_url, token),
            request_timeout: REQUEST_TIMEOUT,
            token_hint: if token.is_some() {
                "check the API token the client sent".to_owned()
            } else {
                "the client sent no API token".to_owned()
            },
            unreachable_hint: "is orcd running at that address?".to_owned(),
        }
    }

    /// Replaces what a 401/403 error suggests (where the token came from, how to fix it).
    pub fn with_token_hint(mut self, hint: impl Into<String>) -> OrcdClient {
        self.token_hint = hint.into();
        self
    }

    /// Replaces what an unreachable orcd's error suggests.
    pub fn with_unreachable_hint(mut self, hint: impl Into<String>) -> OrcdClient {
        self.unreachable_hint = hint.into();
        self
    }

    /// Replaces [`REQUEST_TIMEOUT`] for requests that expect a JSON answer.
    pub fn with_request_timeout(mut self, timeout: Duration) -> OrcdClient {
        self.request_timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The underlying HTTP client (token and proxy rule set), for requests this type has no
    /// method for, such as the OpenAI routes in tests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        anyhow::Error::new(error).context(format!(
            "could not reach orcd at {}\nhint: {}",
            self.base_url, self.unreachable_hint
        ))
    }

    /// Turns a non-2xx answer into an [`OrcdRefusal`] with the hint that fits its status.
    async fn check(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> anyhow::Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|error| error.error)
            .unwrap_or(body);
        let hint = match (status.as_u16(), &retry_after) {
            _ if message.contains("hint:") => String::new(),
            (429, Some(seconds)) => format!("\nhint: the queue is full; retry in {seconds} s"),
            (429, None) => "\nhint: the queue is full; retry shortly".to_owned(),
            (401 | 403, _) => format!("\nhint: {}", self.token_hint),
            _ => String::new(),
        };
        let refusal = OrcdRefusal {
            status,
            message,
            retry_after,
            hint,
        };
        Err(anyhow::Error::new(refusal).context(what.to_owned()))
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: String,
    ) -> anyhow::Result<T> {
        let response = request
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        let response = self.check(&what, response).await?;
        response
            .json()
            .await
            .with_context(|| format!("reading orcd's answer to {what}"))
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send_json(self.http.get(self.url(path)), format!("GET {path}"))
            .await
    }

    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send_json(self.http.delete(self.url(path)), format!("DELETE {path}"))
            .await
    }

    /// A POST without a body (an action named by its path).
    pub async fn post_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send_json(self.http.post(self.url(path)), format!("POST {path}"))
            .await
    }

    /// A POST of `body` as JSON.
    pub async fn post_body<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send_json(
            self.http.post(self.url(path)).json(body),
            format!("POST {path}"),
        )
        .await
    }

    /// The workers orcd knows (`GET /workers`).
    pub async fn workers(&self) -> anyhow::Result<Vec<WorkerInfo>> {
        self.get_json("/workers").await
    }

    /// Polls `GET path` until `ready` accepts orcd's answer, and returns that answer; after
    /// `timeout`, a [`TimedOut`] with the last answer orcd gave (or why it gave none). The one
    /// wait on orcd: for workers ([`OrcdClient::wait_until_live`]), hosts, models.
    pub async fn wait_for<T: DeserializeOwned + Default>(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&T) -> bool,
    ) -> Result<T, TimedOut<T>> {
        let deadline = Instant::now() + timeout;
        let mut last = TimedOut {
            orcd_url: self.base_url.clone(),
            what: what.to_owned(),
            waited: timeout,
            last: T::default(),
            last_error: None,
        };
        loop {
            match self.get_json::<T>(path).await {
                Ok(answer) if ready(&answer) => return Ok(answer),
                Ok(answer) => {
                    last.last = answer;
                    last.last_error = None;
                }
                Err(error) => last.last_error = Some(format!("{error:#}")),
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls `GET /workers` until `ready` accepts the list: the one wait until orcd lists the
    /// workers a caller started as live.
    pub async fn wait_until_live(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&[WorkerInfo]) -> bool,
    ) -> Result<Vec<WorkerInfo>, NotLive> {
        self.wait_for("/workers", what, timeout, |workers: &Vec<WorkerInfo>| {
            ready(workers)
        })
        .await
    }

    /// Opens a server-sent event stream (`GET path`) and calls `on_event` with each event's
    /// name and data until it returns `false`. The stream ending by itself is an error: the
    /// streams orcd serves end only when it shuts down.
    pub async fn follow_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let what = format!("GET {path}");
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        let response = self.check(&what, response).await?;
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.with_context(|| {
                format!("reading orcd's event stream {path} at {}", self.base_url)
            })?;
            if !on_event(&event.event, &event.data)? {
                return Ok(());
            }
        }
        anyhow::bail!("orcd at {} closed its event stream {path}", self.base_url)
    }

    /// Submits a task (`POST /v2/tasks`) and returns its event stream; a refusal is an
    /// [`OrcdRefusal`] error.
    pub async fn submit_stream(&self, request: &TaskRequest) -> anyhow::Result<TaskStream> {
        let response = self
            .http
            .post(self.url("/v2/tasks"))
            .json(request)
            .send()
            .await
            .map_err(|error| self.unreachable(error))?;
        let what = format!("submitting a job for model `{}`", request.model);
        let response = self.check(&what, response).await?;
        // The header names the job before any event, so every error below can name it.
        let job_id = response
            .headers()
            .get(llorch_api::JOB_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let label = job_id.clone().unwrap_or_else(|| "?".to_owned());
        let events = response.bytes_stream().eventsource().map(move |event| {
            let event =
                event.with_context(|| format!("reading orcd's event stream of job {label}"))?;
            StreamEvent::from_sse(&event.event, &event.data).with_context(|| {
                format!(
                    "orcd sent an event this client does not understand: `{}` {}",
                    event.event, event.data
                )
            })
        });
        Ok(TaskStream {
            job_id,
            events: Box::pin(events),
        })
    }

    /// Submits a task and follows it to its end, calling `on_event` for each event as it
    /// arrives; a job that fails is an error naming it.
    pub async fn submit(
        &self,
        request: &TaskRequest,
        mut on_event: impl FnMut(&StreamEvent) -> anyhow::Result<()>,
    ) -> anyhow::Result<JobOutcome> {
        let mut stream = self.submit_stream(request).await?;
        let mut job_id = stream.job_id.clone();
        let (mut worker_id, mut queued_at_position) = (None, None);
        let mut text = String::new();
        while let Some(event) = stream.next().await {
            let event = event?;
            on_event(&event)?;
            match event {
                StreamEvent::Queued {
                    job_id: id,
                    position,
                    state: None,
                    ..
                } => {
                    job_id = Some(id);
                    queued_at_position.get_or_insert(position);
                }
                // Waiting for its model to load: not a place in the queue.
                StreamEvent::Queued { job_id: id, .. } => job_id = Some(id),
                StreamEvent::Started {
                    job_id: id,
                    worker_id: worker,
                } => {
                    job_id = Some(id);
                    worker_id = Some(worker);
                }
                StreamEvent::Token { text: piece, .. } => text.push_str(&piece),
                StreamEvent::Done(stats) => {
                    return Ok(JobOutcome {
                        job_id,
                        model: request.model.clone(),
                        worker_id,
                        text,
                        queued_at_position,
                        stats,
                    })
                }
                StreamEvent::Error {
                    message,
                    error_type,
                } => anyhow::bail!(
                    "job {} failed ({error_type:?}): {message}",
                    job_id.as_deref().unwrap_or("?")
                ),
            }
        }
        let job_id = job_id.as_deref().unwrap_or("?");
        anyhow::bail!(
            "orcd closed the stream of job {job_id} before it finished\nhint: check orcd's log; `cargo xtask jobs status ID` shows what it recorded"
        )
    }
}

/// Percent-encodes a user-given id for use as one URL path segment.
pub fn url_segment(id: &str) -> String {
    id.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
