//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions` and
//! `POST /v1/completions`, streaming or not, and `POST /v1/embeddings` (`embeddings`). A request is translated into the [`TaskRequest`]
//! `/v2/tasks` takes (`request`), checked by the same validation and run as one job per choice
//! (`n`); only the wire format differs (`answer`). Errors have OpenAI's shape,
//! `{"error": {message, type, param, code}}`, with `param` naming the offending field, so the
//! official clients raise their usual exceptions.
//!
//! A stream's HTTP status is decided before its first byte: orcd waits until every choice's
//! job has been accepted by a worker, so a prompt that does not fit is a 400
//! `context_length_exceeded`, not a 200 followed by an error chunk. A request still queued
//! when orcd shuts down therefore gets a 503 `shutting_down` instead of a stream.

pub(crate) mod answer;
mod embeddings;
pub(crate) mod item_writer;
pub(crate) mod request;
mod responses;
pub(crate) mod tool_calls;
pub(crate) mod wire;

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::stream::{self, SelectAll};
use futures::StreamExt;
use llorch_api::audit::Actor;
use llorch_api::{GenerationStats, StreamEvent, TaskRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use self::answer::{Answer, ChoiceResult, Endpoint};
use self::request::{chat_task, completion_task, Shape};
pub use self::request::{ChatCompletionRequest, CompletionRequest};
use self::tool_calls::{StreamPiece, ToolCallStream};
use self::wire::{to_json, ModelList, ModelObject, StreamItem};
use crate::dispatch::JobItem;
use crate::error::OrcdError;
use crate::extract::{JsonBody, PathParam};
use crate::openai_error::{error_body, OpenAiError};
use crate::sse::JOB_ID_HEADER;
use crate::sse::X_ACCEL_BUFFERING;
use crate::state::AppState;
use crate::tasks::{start_job, StartedJob, TaskApi};
use crate::validation::validate_task;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        // Model ids may contain `/` (`org/name`).
        .route("/v1/models/{*model}", get(get_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .merge(responses::routes())
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn model_object(summary: &crate::scheduler::ModelSummary, created: u64) -> ModelObject {
    ModelObject {
        id: summary.model.clone(),
        object: "model",
        created,
        owned_by: "llama-orch",
        status: "loaded",
        workers: summary.live_workers,
        slots_total: summary.slots_total,
        slots_busy: summary.slots_busy,
        queue_depth: summary.queued,
        alias_for: None,
    }
}

/// Served models (at least one live worker), each followed by its aliases.
async fn served_models(state: &AppState) -> Result<Vec<ModelObject>, OrcdError> {
    let created = state.started_at_secs();
    let mut served = Vec::new();
    for summary in state.scheduler().models().await? {
        if summary.live_workers == 0 {
            continue;
        }
        let model = model_object(&summary, created);
        let aliases = (state.aliases().iter())
            .filter(|(_, target)| *target == summary.model)
            .map(|(alias, _)| ModelObject {
                id: alias.to_owned(),
                alias_for: Some(summary.model.clone()),
                ..model.clone()
            })
            .collect::<Vec<_>>();
        served.push(model);
        served.extend(aliases);
    }
    Ok(served)
}

/// Served models and their aliases (`status: loaded`), then those a pool manager could load on
/// demand (`loading`, `unloaded`).
async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, OpenAiError> {
    let mut data = served_models(&state).await?;
    let loaded = data.iter().map(|model| model.id.clone()).collect();
    let created = state.started_at_secs();
    for (model, status) in state.pools().models_not_loaded(&loaded) {
        data.push(ModelObject {
            id: model,
            object: "model",
            created,
            owned_by: "llama-orch",
            status,
            workers: 0,
            slots_total: 0,
            slots_busy: 0,
            queue_depth: 0,
            alias_for: None,
        });
    }
    Ok(Json(ModelList {
        object: "list",
        data,
    }))
}

async fn get_model(
    State(state): State<AppState>,
    model: Result<PathParam, OrcdError>,
) -> Result<Json<ModelObject>, OpenAiError> {
    let PathParam(model) = model?;
    let served = served_models(&state).await?;
    match served.into_iter().find(|object| object.id == model) {
        Some(object) => Ok(Json(object)),
        None => Err(OrcdError::NoWorker { model }.into()),
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<JsonBody<ChatCompletionRequest>, OrcdError>,
) -> Result<Response, OpenAiError> {
    let JsonBody(request) = body?;
    let default_max_tokens =
        if request.max_tokens.is_none() && request.max_completion_tokens.is_none() {
            default_chat_max_tokens(&state, &request.model).await?
        } else {
            0
        };
    let (task, shape) = chat_task(request, default_max_tokens)?;
    run(state, actor, task, shape, Endpoint::Chat).await
}

async fn completions(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<JsonBody<CompletionRequest>, OrcdError>,
) -> Result<Response, OpenAiError> {
    let JsonBody(request) = body?;
    let (task, shape) = completion_task(request)?;
    run(state, actor, task, shape, Endpoint::Completions).await
}

/// As many tokens as one slot of the smallest worker serving `model` holds, within orcd's own
/// limit: a longer request would be refused by that worker.
pub(crate) async fn default_chat_max_tokens(
    state: &AppState,
    model: &str,
) -> Result<u32, OrcdError> {
    let limit = state.limits().max_tokens;
    let model = state.aliases().resolve(model);
    let models = state.scheduler().models().await?;
    let slot = models
        .iter()
        .find(|summary| summary.model == model)
        .map_or(0, |summary| summary.min_ctx_size);
    Ok(match slot {
        0 => limit,
        slot => slot.min(limit),
    })
}

/// One choice's job: its stream, and the events read while waiting for it to start.
pub(crate) struct ChoiceJob {
    index: u32,
    pub(crate) job_id: String,
    read: Vec<StreamEvent>,
    items: mpsc::Receiver<JobItem>,
}

impl ChoiceJob {
    /// Every item of the job from the first event read while waiting for its start. Dropping
    /// the stream drops the receiver, which cancels the job.
    pub(crate) fn into_items(self) -> impl futures::Stream<Item = JobItem> + Send + 'static {
        stream::iter(self.read.into_iter().map(Ok)).chain(ReceiverStream::new(self.items))
    }
}

/// Validates one task per choice (each with its own seed, so that seeded choices still
/// differ), admits them all and waits until a worker accepted each: every API whose answers
/// are built from jobs (`/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
/// `/v1/messages`) starts its jobs here. All are validated before the first is admitted.
pub(crate) async fn start_choices(
    state: &AppState,
    actor: &Actor,
    task: TaskRequest,
    choices: u32,
    api: TaskApi,
) -> Result<Vec<ChoiceJob>, OrcdError> {
    let choice_tasks = (0..choices)
        .map(|index| {
            let mut choice = task.clone();
            choice.sampling.seed = task.sampling.seed.map(|seed| seed.wrapping_add(index));
            validate_task(choice, state.limits())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut jobs = Vec::with_capacity(choice_tasks.len());
    for (index, choice_task) in (0..).zip(choice_tasks) {
        let StartedJob { job_id, items } = start_job(state, choice_task, actor, api).await?;
        jobs.push(ChoiceJob {
            index,
            job_id,
            read: Vec::new(),
            items,
        });
    }
    // Refusals (a prompt too long for the context, a bad grammar) come before a worker
    // accepts the job; waiting for that lets them be an HTTP error instead of an error chunk.
    for job in &mut jobs {
        wait_until_started(job).await?;
    }
    Ok(jobs)
}

/// Names the first job of an answer in the `x-llorch-job-id` header.
pub(crate) fn with_job_id(mut response: Response, job_id: &str) -> Response {
    let header = HeaderValue::from_str(job_id).expect("a uuid is a valid header value");
    response.headers_mut().insert(JOB_ID_HEADER, header);
    response
}

async fn run(
    state: AppState,
    actor: Actor,
    task: TaskRequest,
    shape: Shape,
    endpoint: Endpoint,
) -> Result<Response, OpenAiError> {
    let stream = task.stream;
    // An alias answers as the model it stands for.
    let model = state.aliases().resolve(&task.model).to_owned();
    let api = match endpoint {
        Endpoint::Chat => TaskApi::Chat,
        Endpoint::Completions => TaskApi::Completions,
    };
    let jobs = start_choices(&state, &actor, task, shape.choices, api).await?;
    let first_job_id = jobs[0].job_id.clone();
    let answer = Answer {
        endpoint,
        id: match endpoint {
            Endpoint::Chat => format!("chatcmpl-{first_job_id}"),
            Endpoint::Completions => format!("cmpl-{first_job_id}"),
        },
        model,
        created: unix_secs(),
        shape,
    };
    let response = if stream {
        stream_answer(answer, jobs)
    } else {
        let results = futures::future::try_join_all(jobs.into_iter().map(collect_choice)).await?;
        Json(answer.whole(&results)).into_response()
    };
    Ok(with_job_id(response, &first_job_id))
}

/// Reads a job's stream until a worker has accepted it (`started`) or it failed.
async fn wait_until_started(job: &mut ChoiceJob) -> Result<(), OrcdError> {
    loop {
        match job.items.recv().await {
            Some(Ok(StreamEvent::Queued { .. })) => {}
            Some(Ok(event @ StreamEvent::Started { .. })) => {
                job.read.push(event);
                return Ok(());
            }
            Some(Ok(event)) => {
                job.read.push(event);
                return Ok(());
            }
            Some(Err(error)) => return Err(error),
            None => {
                return Err(OrcdError::Internal(format!(
                    "job `{}` ended before it started",
                    job.job_id
                )))
            }
        }
    }
}

/// Everything one choice's job produces, for a non-streaming answer.
pub(crate) async fn collect_choice(mut job: ChoiceJob) -> Result<ChoiceResult, OrcdError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    let mut pending = std::mem::take(&mut job.read).into_iter();
    loop {
        let event = match pending.next() {
            Some(event) => event,
            None => match job.items.recv().await {
                Some(item) => item?,
                None => {
                    return Err(OrcdError::Internal(format!(
                        "job `{}` ended without a result",
                        job.job_id
                    )))
                }
            },
        };
        match event {
            StreamEvent::Queued { .. } | StreamEvent::Started { .. } => {}
            StreamEvent::Token {
                text: piece,
                logprobs: piece_logprobs,
                ..
            } => {
                text.push_str(&piece);
                logprobs.extend(piece_logprobs);
            }
            StreamEvent::Done(stats) => {
                return Ok(ChoiceResult {
                    text,
                    logprobs,
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
}

/// Chunks of what one choice's events become, with that choice's progress.
#[derive(Debug)]
struct StreamProgress {
    answer: Answer,
    /// Characters streamed so far per choice (the legacy `text_offset`).
    offsets: Vec<usize>,
    /// Final statistics per choice, once done.
    finished: Vec<Option<GenerationStats>>,
    /// Per choice, when tools were offered: the text read for calls.
    tool_streams: Vec<ToolCallStream>,
    /// Per choice, log-probabilities of text the tool reader still holds back.
    held_logprobs: Vec<Vec<llorch_api::TokenLogprob>>,
    /// Per choice, tool calls opened so far (the next one's `index`).
    opened_calls: Vec<usize>,
}

impl StreamProgress {
    fn new(answer: Answer) -> StreamProgress {
        let choices = answer.shape.choices as usize;
        let tool_streams = match &answer.shape.tools {
            Some(tools) => (0..choices)
                .map(|_| ToolCallStream::streaming(tools.clone()))
                .collect(),
            None => Vec::new(),
        };
        StreamProgress {
            answer,
            offsets: vec![0; choices],
            finished: vec![None; choices],
            tool_streams,
            held_logprobs: vec![Vec::new(); choices],
            opened_calls: vec![0; choices],
        }
    }

    /// The chunks of what a choice's tool reader let through.
    fn tool_piece_chunks(&mut self, index: u32, pieces: Vec<StreamPiece>) -> Vec<StreamItem> {
        let choice = index as usize;
        let mut chunks = Vec::new();
        for piece in pieces {
            let logprobs = std::mem::take(&mut self.held_logprobs[choice]);
            match piece {
                StreamPiece::Content(text) => {
                    chunks.push(self.answer.text_chunk(index, &text, &logprobs, 0).into());
                }
                StreamPiece::Call(call) => {
                    let call_index = self.opened_calls[choice];
                    self.opened_calls[choice] += 1;
                    chunks.push(
                        (self.answer)
                            .tool_call_opening_chunk(index, call_index, &call.name, &logprobs)
                            .into(),
                    );
                    chunks.push(
                        (self.answer)
                            .tool_call_arguments_chunk(index, call_index, &call.arguments, &[])
                            .into(),
                    );
                }
                StreamPiece::CallStart { name } => {
                    let call_index = self.opened_calls[choice];
                    self.opened_calls[choice] += 1;
                    chunks.push(
                        (self.answer)
                            .tool_call_opening_chunk(index, call_index, &name, &logprobs)
                            .into(),
                    );
                }
                StreamPiece::Arguments(fragment) => {
                    let call_index = self.opened_calls[choice].saturating_sub(1);
                    chunks.push(
                        (self.answer)
                            .tool_call_arguments_chunk(index, call_index, &fragment, &logprobs)
                            .into(),
                    );
                }
            }
        }
        chunks
    }

    /// The chunks one item becomes, and whether the stream ends after them.
    fn chunks_for(&mut self, index: u32, item: JobItem) -> (Vec<StreamItem>, bool) {
        let choice = index as usize;
        match item {
            Ok(StreamEvent::Queued { .. } | StreamEvent::Started { .. }) => (Vec::new(), false),
            Ok(StreamEvent::Token { text, logprobs, .. }) if !self.tool_streams.is_empty() => {
                self.held_logprobs[choice].extend(logprobs);
                let pieces = self.tool_streams[choice].push(&text);
                (self.tool_piece_chunks(index, pieces), false)
            }
            Ok(StreamEvent::Token { text, logprobs, .. }) => {
                let chunk = self
                    .answer
                    .text_chunk(index, &text, &logprobs, self.offsets[choice]);
                self.offsets[choice] += text.chars().count();
                (vec![chunk.into()], false)
            }
            Ok(StreamEvent::Done(stats)) => {
                let (mut chunks, called_tools) = match self.tool_streams.get_mut(choice) {
                    Some(stream) => {
                        let pieces = stream.finish();
                        let called = stream.calls() > 0;
                        (self.tool_piece_chunks(index, pieces), called)
                    }
                    None => (Vec::new(), false),
                };
                chunks.push(
                    (self.answer)
                        .finish_chunk(index, stats.finish_reason, called_tools)
                        .into(),
                );
                self.finished[choice] = Some(stats);
                let all_done = self.finished.iter().all(Option::is_some);
                if all_done && self.answer.shape.include_usage {
                    let stats: Vec<GenerationStats> =
                        self.finished.iter().flatten().cloned().collect();
                    chunks.push(self.answer.usage_chunk(&stats).into());
                }
                (chunks, all_done)
            }
            Err(error) => {
                error.log();
                (vec![error_body(&error).into()], true)
            }
            // Errors travel as `Err` items; a relayed `error` event would be a bug.
            Ok(StreamEvent::Error { message, .. }) => (
                vec![error_body(&OrcdError::Internal(format!(
                    "unexpected error event: {message}"
                )))
                .into()],
                true,
            ),
        }
    }
}

/// What a stream's items become through `step`, which also says whether the stream ends after
/// them: nothing is read past the end (dropping the rest cancels what produces it).
pub(crate) fn until_end<I, S, E>(
    items: impl futures::Stream<Item = I> + Send + 'static,
    state: S,
    mut step: impl FnMut(&mut S, I) -> (Vec<E>, bool) + Send + 'static,
) -> impl futures::Stream<Item = E> + Send + 'static
where
    I: Send + 'static,
    S: Send + 'static,
    E: Send + 'static,
{
    items
        .scan((state, false), move |(state, ended), item| {
            if *ended {
                return futures::future::ready(None);
            }
            let (events, end) = step(state, item);
            *ended = end;
            futures::future::ready(Some(stream::iter(events)))
        })
        .flatten()
}

/// `data: {chunk}` events of every choice, interleaved as they come, ended by `data: [DONE]`
/// after the last choice's end (or a failure, so clients that wait for `[DONE]` are not left
/// hanging). Dropping the response drops every job's receiver, which cancels the jobs.
fn stream_answer(answer: Answer, jobs: Vec<ChoiceJob>) -> Response {
    let opening: Vec<StreamItem> = answer.opening().into_iter().map(Into::into).collect();
    let mut merged: SelectAll<_> = SelectAll::new();
    for job in jobs {
        let index = job.index;
        merged.push(job.into_items().map(move |item| (index, item)).boxed());
    }
    let chunks = until_end(
        merged,
        StreamProgress::new(answer),
        |progress, (index, item)| progress.chunks_for(index, item),
    );
    let events = stream::iter(opening)
        .chain(chunks)
        .map(|chunk| Event::default().data(to_json(&chunk)))
        .chain(stream::once(async { Event::default().data("[DONE]") }))
        .map(Ok::<_, Infallible>);
    (
        [(X_ACCEL_BUFFERING, "no")],
        Sse::new(events).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai_error::openai_status_type_code;
    use crate::validation::ValidationError;
    use axum::http::StatusCode;
    use llorch_api::FinishReason;
    use serde_json::{json, Value};

    /// The items' JSON, as a stream sends them.
    fn values(items: Vec<StreamItem>) -> Vec<Value> {
        items
            .into_iter()
            .map(|item| serde_json::to_value(item).unwrap())
            .collect()
    }

    fn stats(generated_tokens: u32) -> GenerationStats {
        GenerationStats {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 5,
            generated_tokens,
            time_to_first_token_ms: 1.0,
            tokens_per_second: 1.0,
            prompt_tokens_per_second: 1.0,
            cached_prompt_tokens: 2,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
        }
    }

    fn token(text: &str) -> JobItem {
        Ok(StreamEvent::Token {
            text: text.into(),
            index: 0,
            tokens: 1,
            logprobs: Vec::new(),
        })
    }

    #[test]
    fn a_stream_of_two_choices_ends_after_both_with_one_usage_chunk() {
        let mut progress = StreamProgress::new(Answer {
            endpoint: Endpoint::Chat,
            id: "chatcmpl-j".into(),
            model: "m".into(),
            created: 1,
            shape: Shape {
                include_usage: true,
                choices: 2,
                logprobs: false,
                tools: None,
            },
        });
        let (chunks, end) = progress.chunks_for(1, token("b"));
        let chunks = values(chunks);
        assert_eq!(chunks[0]["choices"][0]["index"], 1);
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "b");
        assert!(!end);
        let (chunks, end) = progress.chunks_for(0, Ok(StreamEvent::Done(stats(1))));
        assert_eq!(chunks.len(), 1, "no usage before every choice is done");
        assert!(!end);
        let (chunks, end) = progress.chunks_for(1, Ok(StreamEvent::Done(stats(2))));
        let chunks = values(chunks);
        assert!(end);
        assert_eq!(chunks[0]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[1]["usage"]["completion_tokens"], 3);
        assert_eq!(chunks[1]["usage"]["prompt_tokens"], 5);
    }

    #[test]
    fn a_streamed_tool_call_becomes_openai_tool_call_chunks() {
        let mut progress = StreamProgress::new(Answer {
            endpoint: Endpoint::Chat,
            id: "chatcmpl-j".into(),
            model: "m".into(),
            created: 1,
            shape: Shape {
                include_usage: false,
                choices: 1,
                logprobs: false,
                tools: Some(tool_calls::OfferedTools {
                    names: vec!["get_weather".into()],
                    parallel: true,
                }),
            },
        });
        let mut chunks = Vec::new();
        for piece in [
            "<tool",
            "_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        ] {
            let (more, end) = progress.chunks_for(0, token(piece));
            assert!(!end);
            chunks.extend(values(more));
        }
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        let opening = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(opening["index"], 0);
        assert!(opening["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(opening["type"], "function");
        assert_eq!(opening["function"]["name"], "get_weather");
        assert_eq!(opening["function"]["arguments"], "");
        let arguments = chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        let arguments: Value = serde_json::from_str(arguments).unwrap();
        assert_eq!(arguments, json!({"city": "Paris"}));
        let (end, done) = progress.chunks_for(0, Ok(StreamEvent::Done(stats(9))));
        let end = values(end);
        assert!(done);
        assert_eq!(end[0]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn a_failure_ends_the_stream_with_an_openai_error() {
        let mut progress = StreamProgress::new(Answer {
            endpoint: Endpoint::Completions,
            id: "cmpl-j".into(),
            model: "m".into(),
            created: 1,
            shape: Shape {
                include_usage: false,
                choices: 1,
                logprobs: false,
                tools: None,
            },
        });
        let (chunks, end) = progress.chunks_for(0, Err(OrcdError::ShuttingDown));
        let chunks = values(chunks);
        assert!(end);
        assert_eq!(chunks[0]["error"]["code"], "shutting_down");
    }

    #[test]
    fn errors_have_openai_shape_param_and_code() {
        let (status, error_type, code) =
            openai_status_type_code(&OrcdError::NoWorker { model: "x".into() });
        assert_eq!(
            (status, error_type, code),
            (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found")
            )
        );
        let body = serde_json::to_value(error_body(&OrcdError::Validation(
            ValidationError::ChoiceCount { value: 9 },
        )))
        .unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "n");
        assert!(body["error"]["message"].as_str().unwrap().contains("`n`"));
        let too_long = OrcdError::ContextLength {
            worker_id: "w".into(),
            message: "`prompt` is 600 tokens but one slot holds 512".into(),
        };
        assert_eq!(
            openai_status_type_code(&too_long),
            (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded")
            )
        );
        let rejected = OrcdError::WorkerRejected {
            worker_id: "w".into(),
            message: "HTTP 400: bad".into(),
        };
        assert_eq!(
            openai_status_type_code(&rejected).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(error_body(&rejected).error.param, None);
        assert_eq!(
            openai_status_type_code(&OrcdError::Forbidden("no".into())).0,
            StatusCode::FORBIDDEN
        );
    }
}
