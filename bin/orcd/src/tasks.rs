//! The native task API: `POST /v2/tasks` (SSE or one JSON result), `GET /v2/tasks`,
//! `GET /v2/tasks/{id}` and `DELETE /v2/tasks/{id}`; and [`start_job`], the one way a job is
//! admitted, audited and handed to dispatch, which the OpenAI handlers use too.

use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use llorch_api::audit::{sha256_hex, Actor, AuditEvent};
use llorch_api::{CancelResult, JobInfo, StreamEvent, TaskRequest, TaskResult};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::auth::JobScope;
use crate::dispatch::{spawn_job, JobContext, JobItem};
use crate::error::OrcdError;
use crate::extract::{JsonBody, PathParam};
use crate::keys::{count_usage, KeyAccount};
use crate::scheduler::NewJob;
use crate::sse::{sse_response, JOB_ID_HEADER};
use crate::state::{unix_millis, AppState};
use crate::validation::{validate_job_id, validate_task, PromptInput, ValidTask};

/// `/v2/tasks` and `/v2/tasks/{job_id}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/tasks", post(create_task).get(list_tasks))
        .route("/v2/tasks/{job_id}", get(get_task).delete(cancel_task))
}

/// Which API a task came in through; recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskApi {
    V2,
    Chat,
    Completions,
    /// OpenAI's `/v1/responses`.
    Responses,
    /// Anthropic's `/v1/messages`.
    Messages,
}

impl TaskApi {
    fn as_str(self) -> &'static str {
        match self {
            TaskApi::V2 => "v2",
            TaskApi::Chat => "chat",
            TaskApi::Completions => "completions",
            TaskApi::Responses => "responses",
            TaskApi::Messages => "messages",
        }
    }
}

/// An admitted job: its id and the client's side of its stream.
#[derive(Debug)]
pub struct StartedJob {
    pub job_id: String,
    pub items: mpsc::Receiver<JobItem>,
}

/// Admits a validated task (503 without a worker, 429 when the queue is full) and starts the
/// task that runs it. Every API (`/v2/tasks`, `/v1/...`) goes through here.
///
/// Admission runs in a task of its own: a client that hangs up while its job is admitted
/// drops this future, not the admission, so the job still gets the task that ends it (which
/// then finds nobody listening and ends it as cancelled, audited like any other).
pub async fn start_job(
    state: &AppState,
    mut task: ValidTask,
    actor: &Actor,
    api: TaskApi,
) -> Result<StartedJob, OrcdError> {
    // An alias is resolved here, before scheduling, for every API; the audit keeps both names.
    let model = state.aliases().resolve(&task.model).to_owned();
    let requested_model = (model != task.model).then(|| std::mem::replace(&mut task.model, model));
    let account = key_account(
        state,
        actor,
        requested_model.as_deref().unwrap_or(&task.model),
        &task.model,
    )?;
    let job_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("job", %job_id);
    let admission = admit(
        state.clone(),
        job_id,
        task,
        Submission {
            actor: actor.clone(),
            api,
            requested_model,
            account,
        },
        span.clone(),
    );
    tokio::spawn(admission.instrument(span))
        .await
        .map_err(|error| OrcdError::Internal(format!("admitting a job: {error}")))?
}

/// Who submitted a job, through which API, under which name for the model.
struct Submission {
    actor: Actor,
    api: TaskApi,
    /// The alias the client named, when it named one.
    requested_model: Option<String>,
    /// The client key the job's usage is counted for.
    account: KeyAccount,
}

/// Checks that the submitting client key may use `model` (asked for as `requested`) and is
/// within its limits (403 and 429 otherwise); says whom the job's usage is counted for.
fn key_account(
    state: &AppState,
    actor: &Actor,
    requested: &str,
    model: &str,
) -> Result<KeyAccount, OrcdError> {
    let Some(policy) = state.auth().key_policy(actor.token.as_deref()) else {
        let key = actor
            .token
            .clone()
            .unwrap_or_else(|| "anonymous".to_owned());
        return Ok(KeyAccount { key, permit: None });
    };
    if !policy.allows_model(requested, model) {
        let allowed = policy.models.as_deref().unwrap_or_default().join("`, `");
        return Err(OrcdError::Forbidden(format!(
            "key `{}` may not use model `{requested}`; it may use `{allowed}`",
            policy.name
        )));
    }
    let permit =
        (state.keys().admit(policy, Instant::now())).map_err(|hit| OrcdError::KeyLimit {
            key: policy.name.clone(),
            limit: hit.limit,
            value: hit.value,
            retry_after_secs: hit.retry_after_secs,
        })?;
    Ok(KeyAccount {
        key: policy.name.clone(),
        permit: Some(permit),
    })
}

async fn admit(
    state: AppState,
    job_id: String,
    task: ValidTask,
    submission: Submission,
    span: tracing::Span,
) -> Result<StartedJob, OrcdError> {
    let accepted_at = Instant::now();
    let new_job = NewJob {
        job_id: job_id.clone(),
        model: task.model.clone(),
        submitted_at_ms: unix_millis(),
        owner: submission.actor.token.clone(),
        prefixes: crate::scheduler::affinity::task_prefixes(&task.input),
        max_tokens: task.sampling.max_tokens,
    };
    let admission = Admission {
        state: state.clone(),
        job_id,
        task,
        submission,
        span,
        accepted_at,
    };
    let admitted = match state.scheduler().submit(new_job.clone()).await {
        // No live worker: a pool manager may start one; the request waits for it. A native
        // stream starts at once and says so meanwhile.
        Err(OrcdError::NoWorker { model }) if state.pools().may_load(&model) => {
            let status = crate::pools::until_placed(&state, &model).await;
            let native_stream = admission.submission.api == TaskApi::V2 && admission.task.stream;
            if native_stream && crate::pools::still_loading(&status) {
                return Ok(stream_while_loading(admission, new_job, status));
            }
            match crate::pools::wait_loaded(&state, &model, status).await {
                Ok(()) => state.scheduler().submit(new_job).await,
                Err(error) => Err(error),
            }
        }
        other => other,
    };
    admission.finish(admitted)
}

/// A job on its way in: what [`Admission::finish`] needs once the scheduler has answered.
struct Admission {
    state: AppState,
    job_id: String,
    task: ValidTask,
    submission: Submission,
    span: tracing::Span,
    accepted_at: Instant,
}

impl Admission {
    /// Audits an admitted job and starts the task that runs it; counts a refused one.
    fn finish(
        self,
        admitted: Result<mpsc::UnboundedReceiver<crate::scheduler::JobNotice>, OrcdError>,
    ) -> Result<StartedJob, OrcdError> {
        let Admission {
            state,
            job_id,
            task,
            submission,
            span,
            accepted_at,
        } = self;
        let Submission {
            actor,
            api,
            requested_model,
            account,
        } = submission;
        let notices = match admitted {
            Ok(notices) => notices,
            Err(error) => {
                state.metrics().job_rejected();
                return Err(error);
            }
        };
        tracing::info!(model = %task.model, stream = task.stream, api = api.as_str(), "task accepted");
        if let Some(audit) = state.audit() {
            audit.record(
                Some(actor.clone()),
                task_submitted(&job_id, &task, api, requested_model),
            );
        }
        let model = task.model.clone();
        let items = spawn_job(
            JobContext {
                job_id: job_id.clone(),
                job_metrics: state.metrics().for_job(&task.model),
                task,
                scheduler: state.scheduler().clone(),
                http: state.http().clone(),
                abort: state.abort_signal(),
                metrics: state.shared_metrics(),
                audit: state.audit().cloned(),
                submitted_by: actor.clone(),
                accepted_at,
                span,
            },
            notices,
        );
        let items = count_usage(
            items,
            account,
            model,
            state.keys().clone(),
            state.shared_metrics(),
        );
        Ok(StartedJob { job_id, items })
    }
}

/// Items buffered while a native stream waits for its model to load.
const LOADING_BUFFER: usize = 16;

/// A native stream whose model must load first: it starts now with `queued` events in the
/// `loading` state, then carries the job once the model has a worker, or the load's error.
fn stream_while_loading(
    admission: Admission,
    new_job: NewJob,
    status: tokio::sync::watch::Receiver<crate::pools::LoadStatus>,
) -> StartedJob {
    let (sender, receiver) = mpsc::channel(LOADING_BUFFER);
    let job_id = admission.job_id.clone();
    let span = admission.span.clone();
    tokio::spawn(
        async move {
            let state = admission.state.clone();
            let waited = crate::pools::load_reporting(
                &state,
                &new_job.model,
                status,
                &admission.job_id,
                &sender,
            )
            .await;
            let admitted = match waited {
                crate::pools::LoadWait::ClientGone => return,
                crate::pools::LoadWait::Failed(error) => Err(error),
                crate::pools::LoadWait::Loaded => state.scheduler().submit(new_job).await,
            };
            match admission.finish(admitted) {
                // Relayed until the client leaves; dropping `items` then cancels the job.
                Ok(StartedJob { mut items, .. }) => loop {
                    let item = tokio::select! {
                        item = items.recv() => item,
                        () = sender.closed() => None,
                    };
                    let Some(item) = item else { break };
                    if sender.send(item).await.is_err() {
                        break;
                    }
                },
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                }
            }
        }
        .instrument(span),
    );
    StartedJob {
        job_id,
        items: receiver,
    }
}

/// The audit record of an accepted task: the prompt's size and hash, never its text.
fn task_submitted(
    job_id: &str,
    task: &ValidTask,
    api: TaskApi,
    requested_model: Option<String>,
) -> AuditEvent {
    let (prompt_bytes, prompt_sha256) = match &task.input {
        PromptInput::Text(prompt) => (prompt.len(), sha256_hex(prompt.as_bytes())),
        PromptInput::Chat(messages) => {
            let json = serde_json::to_string(messages).expect("messages always serialize");
            (json.len(), sha256_hex(json.as_bytes()))
        }
    };
    AuditEvent::TaskSubmitted {
        job_id: job_id.to_owned(),
        model: task.model.clone(),
        requested_model,
        api: api.as_str().to_owned(),
        prompt_bytes: prompt_bytes as u64,
        prompt_sha256,
        max_tokens: task.sampling.max_tokens,
        stream: task.stream,
    }
}

/// Validates, admits and answers an SSE stream, or one JSON result for `"stream": false`.
async fn create_task(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(request): JsonBody<TaskRequest>,
) -> Result<Response, OrcdError> {
    let task = validate_task(request, state.limits())?;
    let stream = task.stream;
    let model = task.model.clone();
    let StartedJob { job_id, items } = start_job(&state, task, &actor, TaskApi::V2).await?;
    let mut response = if stream {
        sse_response(items)
    } else {
        Json(collect_result(&job_id, model, items).await?).into_response()
    };
    let header = HeaderValue::from_str(&job_id).expect("a uuid is a valid header value");
    response.headers_mut().insert(JOB_ID_HEADER, header);
    Ok(response)
}

/// Gathers a job's stream into one [`TaskResult`]. A job cancelled before it started has an
/// empty `worker_id`.
pub async fn collect_result(
    job_id: &str,
    model: String,
    mut items: mpsc::Receiver<JobItem>,
) -> Result<TaskResult, OrcdError> {
    let mut text = String::new();
    let mut worker_id = String::new();
    while let Some(item) = items.recv().await {
        match item? {
            StreamEvent::Queued { .. } => {}
            StreamEvent::Started { worker_id: id, .. } => worker_id = id,
            StreamEvent::Token { text: piece, .. } => text.push_str(&piece),
            StreamEvent::Done(stats) => {
                return Ok(TaskResult {
                    job_id: job_id.to_owned(),
                    model,
                    worker_id,
                    text,
                    stats,
                })
            }
            // Errors travel as `Err` items; a relayed `error` event here would be a bug.
            StreamEvent::Error { message, .. } => {
                return Err(OrcdError::Internal(format!(
                    "unexpected error event: {message}"
                )))
            }
        }
    }
    Err(OrcdError::Internal(format!(
        "job `{job_id}` ended without a result"
    )))
}

/// The caller's jobs; every job for an operator token (or without authentication).
async fn list_tasks(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
) -> Result<Json<Vec<JobInfo>>, OrcdError> {
    let mut jobs = state.scheduler().jobs().await?;
    jobs.retain(|job| scope.allows(job.owner.as_deref()));
    Ok(Json(jobs))
}

/// A job the caller may see; another client's job is a 404, as if it did not exist.
async fn visible_job(
    state: &AppState,
    scope: &JobScope,
    job_id: String,
) -> Result<JobInfo, OrcdError> {
    validate_job_id(&job_id)?;
    let job = state.scheduler().job(job_id.clone()).await?;
    if !scope.allows(job.owner.as_deref()) {
        return Err(OrcdError::JobNotFound(job_id));
    }
    Ok(job)
}

async fn get_task(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
    PathParam(job_id): PathParam,
) -> Result<Json<JobInfo>, OrcdError> {
    Ok(Json(visible_job(&state, &scope, job_id).await?))
}

/// Cancels a queued job at once; a running one is stopped by its task, whose stream then ends
/// with a `done` event with `finish_reason: cancelled`. The audit log names who asked.
async fn cancel_task(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
    Extension(actor): Extension<Actor>,
    PathParam(job_id): PathParam,
) -> Result<Json<CancelResult>, OrcdError> {
    let job_id = visible_job(&state, &scope, job_id).await?.job_id;
    let previous_state = state.scheduler().cancel(job_id.clone()).await?;
    tracing::info!(%job_id, ?previous_state, "job cancelled");
    if let Some(audit) = state.audit() {
        audit.record(
            Some(actor),
            AuditEvent::CancelRequested {
                job_id: job_id.clone(),
                previous_state,
            },
        );
    }
    Ok(Json(CancelResult {
        job_id,
        previous_state,
    }))
}
