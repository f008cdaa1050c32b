//! `cargo xtask jobs`: submit, list, inspect and cancel jobs on orcd, and report usage by
//! key. Tokens are printed as the SSE events arrive, so a person sees the model write.

use std::io::Write;

use anyhow::{bail, Context as _};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use llorch_api::{
    CancelResult, ChatMessage, ErrorBody, GenerationStats, JobInfo, SamplingParams, StreamEvent,
    TaskRequest,
};
use serde::Serialize;

use crate::{
    flags::{JobsArgs, JobsCmd, SubmitArgs},
    Context,
};

pub fn run(args: JobsArgs, cx: &Context) -> anyhow::Result<()> {
    let client = OrcdClient::for_settings(
        cx,
        args.orchestrator_url
            .unwrap_or_else(|| cx.settings.orchestrator_url.clone()),
    )?;
    match args.command {
        JobsCmd::Submit(submit) => {
            let request = task_request(cx, submit)?;
            submit_and_print(cx, &client, &request).map(|_| ())
        }
        JobsCmd::List => {
            let jobs: Vec<JobInfo> = client.get_json("/v2/tasks")?;
            print_jobs(cx, &jobs)
        }
        JobsCmd::Status { id } => {
            let job: JobInfo = client.get_json(&format!("/v2/tasks/{}", url_segment(&id)))?;
            if cx.out.json() {
                return cx.out.print_json(&job);
            }
            print_jobs(cx, std::slice::from_ref(&job))
        }
        JobsCmd::Usage { since } => print_usage(cx, &client, since.as_deref()),
        JobsCmd::Cancel { id } => {
            let result: CancelResult =
                client.delete_json(&format!("/v2/tasks/{}", url_segment(&id)))?;
            if cx.out.json() {
                return cx.out.print_json(&result);
            }
            cx.out.println(format!(
                "cancelled {} (it was {})",
                result.job_id,
                format!("{:?}", result.previous_state).to_lowercase()
            ));
            Ok(())
        }
    }
}

fn task_request(cx: &Context, submit: SubmitArgs) -> anyhow::Result<TaskRequest> {
    let model = match submit.model {
        Some(model) => model,
        None => crate::models::default_model_id(cx)?,
    };
    let messages = submit.chat.map(|content| {
        let mut messages = Vec::new();
        if let Some(system) = submit.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", content));
        messages
    });
    Ok(TaskRequest {
        model,
        prompt: submit.prompt,
        messages,
        parse_special: false,
        sampling: SamplingParams {
            max_tokens: submit.max_tokens,
            temperature: submit.temperature,
            top_k: submit.top_k,
            top_p: submit.top_p,
            seed: submit.seed,
            stop: submit.stop,
            ..SamplingParams::default()
        },
        tools: Default::default(),
        stream: true,
        unknown: Default::default(),
    })
}

/// The client token for orcd from `LLORCH_API_TOKEN_FILE` / `[orchestrator] api_token_file`
/// (the file's first token), or none when orcd runs without tokens. A line of orcd's own client
/// token file works too: the key's settings after the token are not sent.
pub fn api_token(cx: &Context) -> anyhow::Result<Option<String>> {
    let Some(path) = &cx.settings.api_token_file else {
        return Ok(None);
    };
    let tokens = llorch_api::secret::read_token_file(path, "API token")
        .map_err(|error| anyhow::anyhow!("reading the API token for orcd: {error}"))?;
    Ok(tokens
        .into_iter()
        .next()
        .and_then(|line| line.split_whitespace().next().map(str::to_owned)))
}

/// Where this client's token comes from, for the hint of a 401: the file and the setting that
/// named it, or how to give one.
pub fn token_source(settings: &crate::config::Settings) -> String {
    let origin = settings.origins.get("api_token_file").copied();
    match (&settings.api_token_file, origin) {
        (Some(path), Some(crate::config::Origin::Env)) => format!(
            "the client read its token from {} (LLORCH_API_TOKEN_FILE); it must hold a token of orcd's --api-token-file",
            path.display()
        ),
        (Some(path), _) => format!(
            "the client read its token from {} (`orchestrator.api_token_file` in {}); it must hold a token of orcd's --api-token-file",
            path.display(),
            settings.config_path.display()
        ),
        (None, _) => "the client sent no token: export LLORCH_API_TOKEN_FILE=FILE, or run `cargo xtask config set orchestrator.api_token_file FILE`".to_owned(),
    }
}

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

/// Streams one job; tokens go to stdout as they arrive unless `--json` asked for one document.
pub fn submit_and_print(
    cx: &Context,
    client: &OrcdClient,
    request: &TaskRequest,
) -> anyhow::Result<JobOutcome> {
    let live = !cx.out.json();
    let mut stdout = std::io::stdout();
    let outcome = client.submit(request, |event| {
        match event {
            StreamEvent::Token { text, .. } if live => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            StreamEvent::Queued {
                state: Some(_),
                host_id,
                elapsed_ms,
                ..
            } => cx.out.debug(format!(
                "loading the model on {} ({} ms)",
                host_id.as_deref().unwrap_or("a host"),
                elapsed_ms.unwrap_or_default()
            )),
            StreamEvent::Queued { position, .. } => {
                cx.out.debug(format!("queued at position {position}"));
            }
            StreamEvent::Started { worker_id, .. } => {
                cx.out.debug(format!("started on {worker_id}"))
            }
            _ => {}
        }
        Ok(())
    })?;
    if cx.out.json() {
        cx.out.print_json(&outcome)?;
    } else {
        if !outcome.text.ends_with('\n') {
            println!();
        }
        cx.out.status(cx.out.paint().dim(&stats_line(&outcome)));
    }
    Ok(outcome)
}

fn stats_line(outcome: &JobOutcome) -> String {
    let stats = &outcome.stats;
    format!(
        "-- {} tokens ({}), prompt {} tokens, first token {:.0} ms, {:.1} tok/s, worker {}, job {}",
        stats.generated_tokens,
        format!("{:?}", stats.finish_reason).to_lowercase(),
        stats.prompt_tokens,
        stats.time_to_first_token_ms,
        stats.tokens_per_second,
        outcome.worker_id.as_deref().unwrap_or("?"),
        outcome.job_id.as_deref().unwrap_or("?"),
    )
}

fn print_jobs(cx: &Context, jobs: &[JobInfo]) -> anyhow::Result<()> {
    if cx.out.json() {
        return cx.out.print_json(jobs);
    }
    if jobs.is_empty() {
        cx.out.println("no jobs yet");
        return Ok(());
    }
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{:<38} {:<20} {:<24} {:<10} {:>6} {:>9} {:>9}",
        "JOB", "MODEL", "WORKER", "STATE", "TOKENS", "TTFT ms", "TOTAL ms"
    )));
    for job in jobs {
        let millis = |value: Option<f64>| value.map_or("-".to_owned(), |ms| format!("{ms:.0}"));
        cx.out.println(format!(
            "{:<38} {:<20} {:<24} {:<10} {:>6} {:>9} {:>9}",
            job.job_id,
            job.model,
            job.worker_id.as_deref().unwrap_or("-"),
            format!("{:?}", job.state).to_lowercase(),
            job.generated_tokens,
            millis(job.time_to_first_token_ms),
            millis(job.duration_ms),
        ));
        if let Some(error) = &job.error {
            cx.out.println(format!("    {}", paint.red(error)));
        }
    }
    Ok(())
}

/// `GET /v2/usage` as a table by key, model and day (or the report as JSON).
fn print_usage(cx: &Context, client: &OrcdClient, since: Option<&str>) -> anyhow::Result<()> {
    let path = match since {
        Some(day) if !llorch_api::usage::is_day(day) => {
            bail!("`--since {day}` is not a day\nhint: give it as YYYY-MM-DD, e.g. `--since 2026-12-01`")
        }
        Some(day) => format!("/v2/usage?since={day}"),
        None => "/v2/usage".to_owned(),
    };
    let report: llorch_api::usage::UsageReport = client
        .get_json(&path)
        .context("reading usage from orcd (it needs an operator token: LLORCH_API_TOKEN_FILE pointing at a line of orcd's --admin-token-file)")?;
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    if report.rows.is_empty() {
        cx.out.println("no finished jobs counted yet");
        return Ok(());
    }
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{:<24} {:<24} {:<10} {:>8} {:>12} {:>12} {:>12}",
        "KEY", "MODEL", "DAY", "JOBS", "PROMPT", "COMPLETION", "TOTAL"
    )));
    for row in &report.rows {
        let totals = &row.totals;
        cx.out.println(format!(
            "{:<24} {:<24} {:<10} {:>8} {:>12} {:>12} {:>12}",
            row.key,
            row.model,
            row.day,
            totals.requests,
            totals.prompt_tokens,
            totals.completion_tokens,
            totals.prompt_tokens + totals.completion_tokens,
        ));
    }
    Ok(())
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

/// A small blocking client of orcd's task API (a private single-threaded runtime underneath).
pub struct OrcdClient {
    base_url: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    /// Where the token came from: the hint when orcd refuses it.
    token_source: String,
}

/// Every request carries the client token as a bearer header when there is one.
fn http_client(token: Option<String>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client with static settings always builds")
}

impl OrcdClient {
    pub fn new(base_url: String, token: Option<String>) -> OrcdClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime always builds");
        let token_source = if token.is_some() {
            "check the API token the client sent".to_owned()
        } else {
            "the client sent no API token".to_owned()
        };
        OrcdClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: http_client(token),
            runtime,
            token_source,
        }
    }

    /// A client with the token the settings name; a refused token's hint says where it came
    /// from.
    pub fn for_settings(cx: &Context, base_url: String) -> anyhow::Result<OrcdClient> {
        let mut client = OrcdClient::new(base_url, api_token(cx)?);
        client.token_source = token_source(&cx.settings);
        Ok(client)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Names the unreachable orcd and how to start one.
    fn connect_error(&self, error: reqwest::Error) -> anyhow::Error {
        anyhow::Error::new(error).context(format!(
            "could not reach orcd at {}\nhint: start the stack with `cargo xtask up`, or pass --orchestrator-url / set LLORCH_ORCHESTRATOR_URL",
            self.base_url
        ))
    }

    /// Turns a non-2xx answer into an error carrying orcd's own message.
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
        let hint = match (status.as_u16(), retry_after) {
            (429, Some(seconds)) => format!("\nhint: the queue is full; retry in {seconds} s"),
            (429, None) => "\nhint: the queue is full; retry shortly".to_owned(),
            (401 | 403, _) => format!("\nhint: {}", self.token_source),
            _ => String::new(),
        };
        bail!("{what}: orcd answered {status}: {message}{hint}")
    }

    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request_json(reqwest::Method::GET, path)
    }

    pub fn delete_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request_json(reqwest::Method::DELETE, path)
    }

    /// A POST without a body (an action named by its path).
    pub fn post_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request_json(reqwest::Method::POST, path)
    }

    fn request_json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let what = format!("{method} {path}");
        self.runtime.block_on(async {
            let response = self
                .http
                .request(method, self.url(path))
                .send()
                .await
                .map_err(|e| self.connect_error(e))?;
            let response = self.check(&what, response).await?;
            response
                .json()
                .await
                .with_context(|| format!("reading orcd's answer to {what}"))
        })
    }

    /// Follows a server-sent event stream (`GET path`), calling `on_event` with each event's
    /// name and data until it returns `false`. The stream ending by itself is an error: the
    /// streams orcd serves end only when it shuts down.
    pub fn follow_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let what = format!("GET {path}");
        self.runtime.block_on(async {
            let response = self
                .http
                .get(self.url(path))
                .send()
                .await
                .map_err(|e| self.connect_error(e))?;
            let response = self.check(&what, response).await?;
            let mut events = response.bytes_stream().eventsource();
            while let Some(event) = events.next().await {
                let event = event.with_context(|| {
                    format!("reading orcd's event stream {} at {}", path, self.base_url)
                })?;
                if !on_event(&event.event, &event.data)? {
                    return Ok(());
                }
            }
            bail!("orcd at {} closed its event stream {path}", self.base_url)
        })
    }

    /// Submits a streaming task and calls `on_event` for each event as it arrives.
    pub fn submit(
        &self,
        request: &TaskRequest,
        mut on_event: impl FnMut(&StreamEvent) -> anyhow::Result<()>,
    ) -> anyhow::Result<JobOutcome> {
        self.runtime.block_on(async {
            let response = self
                .http
                .post(self.url("/v2/tasks"))
                .json(request)
                .send()
                .await
                .map_err(|e| self.connect_error(e))?;
            let response = self.check(&format!("submitting a job for model `{}`", request.model), response).await?;
            // The header names the job before any event, so every error below can name it.
            let mut job_id: Option<String> = response
                .headers()
                .get(llorch_api::JOB_ID_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let mut events = response.bytes_stream().eventsource();
            let mut text = String::new();
            let (mut worker_id, mut queued_at_position) = (None, None);
            while let Some(event) = events.next().await {
                let event = event.with_context(|| format!("reading orcd's event stream of job {}", job_id.as_deref().unwrap_or("?")))?;
                let event = StreamEvent::from_sse(&event.event, &event.data)
                    .with_context(|| format!("orcd sent an event this client does not understand: `{}` {}", event.event, event.data))?;
                on_event(&event)?;
                match event {
                    StreamEvent::Queued { job_id: id, position, state: None, .. } => {
                        job_id = Some(id);
                        queued_at_position.get_or_insert(position);
                    }
                    // Waiting for its model to load: not a queue position.
                    StreamEvent::Queued { job_id: id, .. } => job_id = Some(id),
                    StreamEvent::Started { job_id: id, worker_id: worker } => {
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
                    StreamEvent::Error { message, error_type } => {
                        bail!("job {} failed ({error_type:?}): {message}", job_id.as_deref().unwrap_or("?"))
                    }
                }
            }
            bail!("orcd closed the stream of job {} before it finished\nhint: check orcd's log; `cargo xtask jobs status ID` shows what it recorded", job_id.as_deref().unwrap_or("?"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_segment_escapes_path_separators_and_spaces() {
        assert_eq!(url_segment("job-1_a.b"), "job-1_a.b");
        assert_eq!(url_segment("../x y"), "..%2Fx%20y");
    }
}
