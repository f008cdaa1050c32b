//! Running one job: wait for the scheduler to pick a worker, `POST {worker}/execute`, relay the
//! worker's SSE events in order to the client's channel, and report every step back to the
//! scheduler. One spawned task per job, so cleanup runs whatever the client does.
//!
//! How a job's stream ends:
//! - the worker's `done` is relayed as is;
//! - a cancellation (`DELETE /v2/tasks/{id}`) always ends with a `done` event whose
//!   `finish_reason` is `cancelled`, made by orcd from what it relayed: orcd cancels by dropping
//!   the worker connection, so the worker never gets to send one itself;
//! - a failure ends with one `error` event; a shutdown with `error_type: shutting_down`.
//!
//! A dispatch the worker refused (429/503, or another server error) or that could not reach it
//! (no connection) is retried on another worker; the client may then see a second `started`
//! event, naming the new worker. Once the worker has the request, a lost connection is final,
//! before the first token too: the request may be what broke the worker (one hostile schema
//! once aborted every worker of its model in turn), so it is never sent to the next one.
//!
//! Tokens are counted from the `tokens` field of the worker's `token` events, not by event: a
//! multibyte character can take several tokens to complete.
//!
//! The task runs inside the job's `tracing` span (`job{job_id=...}`), so its log lines carry
//! the id without repeating it.

use std::future::pending;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use llorch_api::audit::{Actor, AuditEvent};
use llorch_api::{ErrorBody, ErrorKind, FinishReason, GenerationStats, StreamEvent};
use reqwest::StatusCode;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, Span};

use crate::audit::AuditLog;
use crate::error::OrcdError;
use crate::metrics::{JobMetrics, Metrics};
use crate::scheduler::{
    DispatchFailure, JobNotice, JobOutcome, SchedulerHandle, FINISHING_LEAD_TOKENS,
};
use crate::validation::ValidTask;

/// One item of a job's stream: an event to relay, or the error that ends it.
pub type JobItem = Result<StreamEvent, OrcdError>;

/// Items buffered between the job's task and the client; a slow client slows the relay.
const CLIENT_BUFFER: usize = 64;
/// How long a final event may wait for a slow client before it is dropped.
const FINAL_EVENT_WAIT: Duration = Duration::from_secs(1);
/// How long reading a refusal's body may take.
const REFUSAL_BODY_WAIT: Duration = Duration::from_secs(2);
/// How stale a running job's token count in `GET /v2/tasks` may be.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Everything a job's task needs besides its channels.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: String,
    pub task: ValidTask,
    pub scheduler: SchedulerHandle,
    pub http: reqwest::Client,
    /// Becomes `true` when in-flight jobs must end because orcd is shutting down.
    pub abort: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// This job's model's counters and histograms.
    pub job_metrics: JobMetrics,
    pub audit: Option<AuditLog>,
    /// Who submitted the job: its end is recorded in the audit log under their name.
    pub submitted_by: Actor,
    /// When orcd admitted the job: time to first token and duration count from here.
    pub accepted_at: Instant,
    /// `job{job_id=...}`: everything the job's task logs is logged inside it.
    pub span: Span,
}

/// Starts the job's task and returns the client's side of its stream. The stream ends after a
/// terminal item; dropping the receiver cancels the job.
pub fn spawn_job(
    context: JobContext,
    notices: mpsc::UnboundedReceiver<JobNotice>,
) -> mpsc::Receiver<JobItem> {
    let (items, receiver) = mpsc::channel(CLIENT_BUFFER);
    let span = context.span.clone();
    let task = async move {
        let mut report = FinishReport {
            scheduler: context.scheduler.clone(),
            job_id: context.job_id.clone(),
            model: context.task.model.clone(),
            accepted_at: context.accepted_at,
            metrics: context.metrics.clone(),
            job_metrics: context.job_metrics.clone(),
            audit: context.audit.clone(),
            submitted_by: context.submitted_by.clone(),
            outcome: None,
            worker_id: None,
            generated_tokens: 0,
        };
        let mut job = JobRun {
            context,
            notices,
            items,
            relayed: Relayed::default(),
            final_item: None,
        };
        let outcome = job.run().await;
        tracing::info!(tokens = job.relayed.tokens, ?outcome, "job ended");
        report.outcome = Some(outcome);
        report.worker_id = job.relayed.worker_id.take();
        report.generated_tokens = job.relayed.tokens;
        // The job's end is recorded before the client reads it: a client that asks for the
        // job as soon as its stream ends must find it finished, not still running.
        drop(report);
        job.send_final().await;
    };
    tokio::spawn(task.instrument(span));
    receiver
}

/// Tells the scheduler, the metrics and the audit log how the job ended when the task
/// finishes, even if it panicked.
struct FinishReport {
    scheduler: SchedulerHandle,
    job_id: String,
    model: String,
    accepted_at: Instant,
    metrics: Arc<Metrics>,
    job_metrics: JobMetrics,
    audit: Option<AuditLog>,
    submitted_by: Actor,
    outcome: Option<JobOutcome>,
    worker_id: Option<String>,
    generated_tokens: u32,
}

impl Drop for FinishReport {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| JobOutcome::Failed("the job's task ended unexpectedly".into()));
        let elapsed = self.accepted_at.elapsed();
        self.metrics
            .job_finished(&self.job_metrics, &outcome, elapsed.as_secs_f64());
        if let Some(audit) = &self.audit {
            // The job is the submitter's action; a `cancel_requested` record before a
            // `task_cancelled` names whoever cancelled it, if someone else did.
            let actor = Some(self.submitted_by.clone());
            audit.record(actor, self.audit_event(&outcome, millis(elapsed)));
        }
        if !matches!(outcome, JobOutcome::Completed(_)) && self.generated_tokens > 0 {
            // The count in a cancelled or failed job's record is orcd's, not the worker's.
            self.scheduler.progress(&self.job_id, self.generated_tokens);
        }
        self.scheduler.finish(&self.job_id, outcome);
    }
}

impl FinishReport {
    fn audit_event(&self, outcome: &JobOutcome, duration_ms: f64) -> AuditEvent {
        let job_id = self.job_id.clone();
        let model = self.model.clone();
        let worker_id = self.worker_id.clone();
        match outcome {
            JobOutcome::Completed(stats) => AuditEvent::TaskFinished {
                job_id,
                model,
                worker_id,
                finish_reason: stats.finish_reason,
                prompt_tokens: stats.prompt_tokens,
                generated_tokens: stats.generated_tokens,
                duration_ms,
            },
            JobOutcome::Cancelled => AuditEvent::TaskCancelled {
                job_id,
                model,
                worker_id,
                generated_tokens: self.generated_tokens,
                duration_ms,
            },
            JobOutcome::Failed(error) => AuditEvent::TaskFailed {
                job_id,
                model,
                worker_id,
                error: error.clone(),
                generated_tokens: self.generated_tokens,
                duration_ms,
            },
        }
    }
}

/// What orcd itself measured, for `done` events it has to make up.
#[derive(Debug, Default)]
struct Relayed {
    /// Tokens generated so far, as the worker counted them in its `token` events.
    tokens: u32,
    /// When the scheduler last heard the token count, and what it heard.
    progress_reported_at: Option<Instant>,
    progress_reported: u32,
    /// The worker of the latest dispatch.
    worker_id: Option<String>,
    dispatched_at: Option<Instant>,
    first_token_at: Option<Instant>,
}

impl Relayed {
    fn cancelled_stats(&self) -> GenerationStats {
        let now = Instant::now();
        let time_to_first_token_ms = match (self.dispatched_at, self.first_token_at) {
            (Some(dispatched), Some(first)) => millis(first - dispatched),
            _ => 0.0,
        };
        let tokens_per_second = match self.first_token_at {
            Some(first) if self.tokens > 1 && now > first => {
                f64::from(self.tokens - 1) / (now - first).as_secs_f64()
            }
            _ => 0.0,
        };
        GenerationStats {
            finish_reason: FinishReason::Cancelled,
            // Only the worker knows; it did not get to tell.
            prompt_tokens: 0,
            generated_tokens: self.tokens,
            time_to_first_token_ms,
            tokens_per_second,
            prompt_tokens_per_second: 0.0,
            cached_prompt_tokens: 0,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Why a job stopped early, whatever it was doing at the time.
#[derive(Debug)]
enum Interrupt {
    Cancelled,
    ClientGone,
    ShuttingDown,
    SchedulerGone,
    /// The scheduler marked the job's worker dead; the message says why.
    WorkerDead(String),
}

/// How one dispatch to one worker ended.
enum Attempt {
    Finished(JobOutcome),
    Retry(DispatchFailure),
}

struct JobRun {
    context: JobContext,
    notices: mpsc::UnboundedReceiver<JobNotice>,
    items: mpsc::Sender<JobItem>,
    relayed: Relayed,
    /// The item that ends the client's stream, sent once the scheduler knows the outcome.
    final_item: Option<JobItem>,
}

impl JobRun {
    async fn run(&mut self) -> JobOutcome {
        loop {
            let (worker_id, url) = match self.wait_for_worker().await {
                Ok(assignment) => assignment,
                Err(outcome) => return outcome,
            };
            match self.execute(&worker_id, &url).await {
                Attempt::Finished(outcome) => return outcome,
                Attempt::Retry(failure) => {
                    self.context.scheduler.dispatch_failed(
                        &self.context.job_id,
                        &worker_id,
                        failure,
                    );
                }
            }
        }
    }

    /// Waits in the queue (relaying positions) until the scheduler assigns a worker.
    async fn wait_for_worker(&mut self) -> Result<(String, String), JobOutcome> {
        loop {
            let notice = tokio::select! {
                notice = self.notices.recv() => notice,
                () = self.items.closed() => return Err(self.interrupted(Interrupt::ClientGone).await),
                () = aborted(&mut self.context.abort) => {
                    return Err(self.interrupted(Interrupt::ShuttingDown).await)
                }
            };
            match notice {
                Some(JobNotice::Dispatch { worker_id, url }) => return Ok((worker_id, url)),
                Some(JobNotice::Queued { position }) => {
                    let queued = StreamEvent::queued(self.context.job_id.clone(), position);
                    // Not `emit`: blocking on a slow client here could swallow the `Dispatch`
                    // notice. A position a full buffer misses is superseded by the next one.
                    match self.items.try_send(Ok(queued)) {
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        Err(TrySendError::Closed(_)) => {
                            return Err(self.interrupted(Interrupt::ClientGone).await)
                        }
                    }
                }
                Some(JobNotice::Cancel) => {
                    return Err(self.interrupted(Interrupt::Cancelled).await)
                }
                // About a worker of an earlier attempt; the job waits for another one now.
                Some(JobNotice::WorkerDead { .. }) => {}
                Some(JobNotice::Fail(error)) => {
                    let outcome = JobOutcome::Failed(error.to_string());
                    self.end_with(Err(error));
                    return Err(outcome);
                }
                None => return Err(self.interrupted(Interrupt::SchedulerGone).await),
            }
        }
    }

    /// Tells the scheduler the token count: at the first token (its time to first token), as
    /// the job comes within [`FINISHING_LEAD_TOKENS`] of its `max_tokens` (its slot is about to
    /// free), and otherwise at most every [`PROGRESS_INTERVAL`]. Counting happens here, so a
    /// relayed token costs the scheduler no message.
    fn report_progress(&mut self, job_id: &str) {
        let now = Instant::now();
        let finishing_at = self
            .context
            .task
            .sampling
            .max_tokens
            .saturating_sub(FINISHING_LEAD_TOKENS);
        let finishing_unheard =
            self.relayed.tokens >= finishing_at && self.relayed.progress_reported < finishing_at;
        let due = finishing_unheard
            || self
                .relayed
                .progress_reported_at
                .is_none_or(|at| now.duration_since(at) >= PROGRESS_INTERVAL);
        if due {
            self.relayed.progress_reported_at = Some(now);
            self.relayed.progress_reported = self.relayed.tokens;
            self.context.scheduler.progress(job_id, self.relayed.tokens);
        }
    }

    /// When a count the scheduler has not heard yet is due: a worker that pauses after a burst
    /// of tokens must not leave `GET /v2/tasks` stale until its next token.
    fn progress_due_at(&self) -> Option<Instant> {
        let at = self.relayed.progress_reported_at?;
        (self.relayed.progress_reported < self.relayed.tokens).then(|| at + PROGRESS_INTERVAL)
    }

    /// One dispatch: send the request, then relay the worker's stream until it ends.
    async fn execute(&mut self, worker_id: &str, url: &str) -> Attempt {
        let job_id = self.context.job_id.clone();
        self.relayed.dispatched_at = Some(Instant::now());
        self.relayed.worker_id = Some(worker_id.to_owned());
        tracing::debug!(%worker_id, "dispatching");
        let request = self
            .context
            .http
            .post(format!("{url}/execute"))
            .json(&self.context.task.execute_request(&job_id))
            .send();
        // Dropping the request or the stream below closes the worker connection, which is how
        // the worker learns that the job is cancelled.
        let response = tokio::select! {
            response = request => response,
            interrupt = next_interrupt(&mut self.notices, &self.items, &mut self.context.abort) => {
                return self.stop(worker_id, interrupt).await;
            }
        };
        let response = match response {
            Ok(response) => response,
            // No connection: the worker never saw the request.
            Err(error) if error.is_connect() => {
                return Attempt::Retry(DispatchFailure::Unreachable(error_chain(&error)))
            }
            // Sent, and the connection broke before an answer: it may be what broke it.
            Err(error) => return self.lost(worker_id, error_chain(&error)).await,
        };
        if !response.status().is_success() {
            return self.refused(worker_id, response).await;
        }
        let started = StreamEvent::Started {
            job_id: job_id.clone(),
            worker_id: worker_id.to_owned(),
        };
        if let Err(interrupt) = self.emit(Ok(started)).await {
            return self.stop(worker_id, interrupt).await;
        }

        let mut events = response.bytes_stream().eventsource();
        loop {
            let progress_due_at = self.progress_due_at();
            let next = tokio::select! {
                next = events.next() => next,
                interrupt = next_interrupt(&mut self.notices, &self.items, &mut self.context.abort) => {
                    return self.stop(worker_id, interrupt).await;
                }
                () = sleep_until(progress_due_at) => {
                    self.report_progress(&job_id);
                    continue;
                }
            };
            let event = match next {
                Some(Ok(event)) => event,
                Some(Err(EventStreamError::Transport(error))) => {
                    return self.lost(worker_id, error_chain(&error)).await
                }
                Some(Err(error)) => return self.lost(worker_id, error.to_string()).await,
                None => {
                    return self
                        .lost(worker_id, "the stream ended without a `done` event".into())
                        .await
                }
            };
            let event = match StreamEvent::from_sse(&event.event, &event.data) {
                Ok(event) => event,
                Err(error) => {
                    let message = format!("unreadable `{}` event: {error}", event.event);
                    return self.lost(worker_id, message).await;
                }
            };
            match event {
                StreamEvent::Token { tokens, .. } => {
                    self.relayed.tokens = self.relayed.tokens.saturating_add(tokens);
                    self.context.job_metrics.tokens(tokens);
                    if self.relayed.first_token_at.is_none() {
                        self.relayed.first_token_at = Some(Instant::now());
                        let waited = self.context.accepted_at.elapsed().as_secs_f64();
                        self.context.job_metrics.first_token_after(waited);
                    }
                    self.report_progress(&job_id);
                    if let Err(interrupt) = self.emit(Ok(event)).await {
                        return self.stop(worker_id, interrupt).await;
                    }
                }
                StreamEvent::Done(stats) => {
                    // Tokens whose text never went out (a stop string, held back and then
                    // dropped) are counted only here.
                    let unseen = stats.generated_tokens.saturating_sub(self.relayed.tokens);
                    self.context.job_metrics.tokens(unseen);
                    self.relayed.tokens += unseen;
                    self.end_with(Ok(StreamEvent::Done(stats.clone())));
                    return Attempt::Finished(JobOutcome::Completed(stats));
                }
                StreamEvent::Error {
                    message,
                    error_type,
                } => {
                    // The worker's own verdict: relayed, not retried.
                    let error = worker_error(worker_id, message, error_type);
                    let outcome = JobOutcome::Failed(error.to_string());
                    self.end_with(Err(error));
                    return Attempt::Finished(outcome);
                }
                StreamEvent::Queued { .. } | StreamEvent::Started { .. } => {
                    tracing::warn!(%worker_id, "ignoring orcd-only `{}` event from a worker", event.name());
                }
            }
        }
    }

    /// A dispatch interrupted: a dead worker counts as a lost connection; anything else ends
    /// the job.
    async fn stop(&mut self, worker_id: &str, interrupt: Interrupt) -> Attempt {
        match interrupt {
            Interrupt::WorkerDead(reason) => self.lost(worker_id, reason).await,
            interrupt => Attempt::Finished(self.interrupted(interrupt).await),
        }
    }

    /// The worker answered `/execute` with an error status.
    async fn refused(&mut self, worker_id: &str, response: reqwest::Response) -> Attempt {
        let status = response.status();
        let body = tokio::time::timeout(REFUSAL_BODY_WAIT, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let detail = match serde_json::from_str::<ErrorBody>(&body) {
            Ok(error) => error.error,
            Err(_) => body.chars().take(200).collect(),
        };
        let message = format!("HTTP {status}: {detail}");
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Attempt::Retry(DispatchFailure::Busy(message))
            }
            status if status.is_client_error() => {
                let error = match serde_json::from_str::<ErrorBody>(&body) {
                    Ok(ErrorBody {
                        error_type: ErrorKind::ContextLength,
                        error,
                    }) => OrcdError::ContextLength {
                        worker_id: worker_id.to_owned(),
                        message: error,
                    },
                    _ => OrcdError::WorkerRejected {
                        worker_id: worker_id.to_owned(),
                        message,
                    },
                };
                let outcome = JobOutcome::Failed(error.to_string());
                self.end_with(Err(error));
                Attempt::Finished(outcome)
            }
            _ => Attempt::Retry(DispatchFailure::Failed(message)),
        }
    }

    /// The worker's connection broke after it took the request. The job fails, before the
    /// first token too, and the worker is presumed gone: a request that crashed one worker
    /// would crash the next.
    async fn lost(&mut self, worker_id: &str, message: String) -> Attempt {
        self.context.scheduler.worker_lost(worker_id);
        let error = OrcdError::WorkerFailed {
            worker_id: worker_id.to_owned(),
            message: format!(
                "connection lost after the worker accepted the job ({} tokens relayed); not \
                 retried on another worker, in case the request is what broke it: {message}",
                self.relayed.tokens
            ),
        };
        let outcome = JobOutcome::Failed(error.to_string());
        self.end_with(Err(error));
        Attempt::Finished(outcome)
    }

    /// Sends an item to the client, giving up if the job is interrupted meanwhile.
    async fn emit(&mut self, item: JobItem) -> Result<(), Interrupt> {
        tokio::select! {
            sent = self.items.send(item) => sent.map_err(|_| Interrupt::ClientGone),
            interrupt = next_interrupt(&mut self.notices, &self.items, &mut self.context.abort) => {
                Err(interrupt)
            }
        }
    }

    /// Keeps the last item of the stream until the job's end has been reported.
    fn end_with(&mut self, item: JobItem) {
        self.final_item = Some(item);
    }

    /// Sends the last item of the stream; a client that does not read it in time loses it.
    async fn send_final(&mut self) {
        if let Some(item) = self.final_item.take() {
            let _ = tokio::time::timeout(FINAL_EVENT_WAIT, self.items.send(item)).await;
        }
    }

    /// Ends the stream the way the interruption calls for and returns the job's outcome.
    async fn interrupted(&mut self, interrupt: Interrupt) -> JobOutcome {
        match interrupt {
            Interrupt::Cancelled => {
                let done = StreamEvent::Done(self.relayed.cancelled_stats());
                self.end_with(Ok(done));
                JobOutcome::Cancelled
            }
            Interrupt::ClientGone => JobOutcome::Cancelled,
            Interrupt::ShuttingDown => {
                let error = OrcdError::ShuttingDown;
                let outcome = JobOutcome::Failed(error.to_string());
                self.end_with(Err(error));
                outcome
            }
            Interrupt::WorkerDead(reason) => {
                // Reached only while no dispatch runs, where `stop` does not apply.
                let error = OrcdError::WorkerFailed {
                    worker_id: self.relayed.worker_id.clone().unwrap_or_default(),
                    message: reason,
                };
                let outcome = JobOutcome::Failed(error.to_string());
                self.end_with(Err(error));
                outcome
            }
            Interrupt::SchedulerGone => {
                let error =
                    OrcdError::Internal("the scheduler stopped while a job was active".into());
                let outcome = JobOutcome::Failed(error.to_string());
                self.end_with(Err(error));
                outcome
            }
        }
    }
}

/// Resolves when a running job must stop: cancelled, its client gone, or orcd shutting down.
/// Other notices cannot concern a running job and are skipped.
async fn next_interrupt(
    notices: &mut mpsc::UnboundedReceiver<JobNotice>,
    items: &mpsc::Sender<JobItem>,
    abort: &mut watch::Receiver<bool>,
) -> Interrupt {
    let cancelled = async {
        loop {
            match notices.recv().await {
                Some(JobNotice::Cancel) => return Interrupt::Cancelled,
                Some(JobNotice::WorkerDead { worker_id, reason }) => {
                    return Interrupt::WorkerDead(format!(
                        "orcd marked worker `{worker_id}` dead: {reason}"
                    ))
                }
                Some(notice) => {
                    tracing::debug!(?notice, "ignoring a stale notice for a running job")
                }
                None => return Interrupt::SchedulerGone,
            }
        }
    };
    tokio::select! {
        interrupt = cancelled => interrupt,
        () = items.closed() => Interrupt::ClientGone,
        () = aborted(abort) => Interrupt::ShuttingDown,
    }
}

/// Resolves once the abort flag is set; never, if nobody can set it any more.
async fn aborted(abort: &mut watch::Receiver<bool>) {
    if abort.wait_for(|aborted| *aborted).await.is_err() {
        pending::<()>().await;
    }
}

/// A worker's `error` event in orcd's vocabulary: its validation errors stay client errors.
fn worker_error(worker_id: &str, message: String, error_type: ErrorKind) -> OrcdError {
    let worker_id = worker_id.to_owned();
    match error_type {
        ErrorKind::Validation => OrcdError::WorkerRejected { worker_id, message },
        ErrorKind::ContextLength => OrcdError::ContextLength { worker_id, message },
        ErrorKind::NoWorker
        | ErrorKind::QueueFull
        | ErrorKind::NotFound
        | ErrorKind::Unauthorized
        | ErrorKind::Worker
        | ErrorKind::ShuttingDown
        | ErrorKind::Internal => OrcdError::WorkerFailed {
            worker_id,
            message: format!("{message} ({error_type:?})"),
        },
    }
}

/// reqwest's top-level message is generic ("error sending request"); the cause is in the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => pending().await,
    }
}
