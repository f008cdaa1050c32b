//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/chat/completions` and
//! `POST /v1/completions`, streaming or not. A request is translated into the [`TaskRequest`]
//! `/v2/tasks` takes, checked by the same validation and run as the same kind of job; only the
//! wire format differs. Errors have OpenAI's shape, `{"error": {message, type, param, code}}`,
//! so the official clients raise their usual exceptions.
//!
//! `finish_reason` maps `stop` → `"stop"` and `length` → `"length"`. A job cancelled through
//! `DELETE /v2/tasks/{id}` also reports `"stop"`: OpenAI has no value for it, strict clients
//! reject unknown ones, and the text so far is a valid (if short) answer; whoever cancelled
//! knows why it stopped.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::{stream, StreamExt};
use llorch_api::audit::Actor;
use llorch_api::{ChatMessage, ErrorKind, FinishReason, SamplingParams, StreamEvent, TaskRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::dispatch::JobItem;
use crate::error::OrcdError;
use crate::extract::{JsonBody, PathParam};
use crate::server::{collect_result, start_job, AppState, StartedJob, TaskApi, JOB_ID_HEADER};
use crate::sse::X_ACCEL_BUFFERING;
use crate::validation::{validate_task, ValidationError};

/// OpenAI's documented default for `/v1/completions`.
const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;
/// OpenAI's range for `temperature`.
const MAX_TEMPERATURE: f32 = 2.0;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        // Model ids may contain `/` (`org/name`).
        .route("/v1/models/{*model}", get(get_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
}

/// An [`OrcdError`] answered in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError(pub OrcdError);

impl From<OrcdError> for OpenAiError {
    fn from(error: OrcdError) -> Self {
        OpenAiError(error)
    }
}

impl From<ValidationError> for OpenAiError {
    fn from(error: ValidationError) -> Self {
        OpenAiError(OrcdError::Validation(error))
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        error_response(self.0)
    }
}

/// The HTTP status, and OpenAI's `type` and `code`, of an error. A model nobody serves is
/// OpenAI's 404 `model_not_found`: `/v1/models` lists only served models, so to an OpenAI
/// client it does not exist.
fn openai_status_type_code(error: &OrcdError) -> (StatusCode, &'static str, Option<&'static str>) {
    let (status, kind) = error.status_and_kind();
    match kind {
        ErrorKind::Validation => (status, "invalid_request_error", None),
        ErrorKind::NoWorker => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        ErrorKind::QueueFull => (status, "rate_limit_error", Some("rate_limit_exceeded")),
        ErrorKind::NotFound => (status, "invalid_request_error", Some("not_found")),
        ErrorKind::Unauthorized if status == StatusCode::FORBIDDEN => {
            (status, "permission_error", Some("permission_denied"))
        }
        ErrorKind::Unauthorized => (status, "authentication_error", Some("invalid_api_key")),
        ErrorKind::Worker => (status, "server_error", Some("worker_failed")),
        ErrorKind::ShuttingDown => (status, "server_error", Some("shutting_down")),
        ErrorKind::Internal => (status, "server_error", None),
    }
}

fn error_body(error: &OrcdError) -> Value {
    let (_, error_type, code) = openai_status_type_code(error);
    json!({"error": {
        "message": error.public_message(),
        "type": error_type,
        "param": null,
        "code": code,
    }})
}

pub fn error_response(error: OrcdError) -> Response {
    error.log();
    let (status, _, _) = openai_status_type_code(&error);
    let mut response = (status, Json(error_body(&error))).into_response();
    error.add_headers(&mut response);
    response
}

/// Errors under `/v1` in OpenAI's shape, everywhere else in orcd's.
pub fn error_response_for_path(path: &str, error: OrcdError) -> Response {
    if path == "/v1" || path.starts_with("/v1/") {
        error_response(error)
    } else {
        error.into_response()
    }
}

/// Fields both endpoints share, as OpenAI spells them.
#[derive(Debug, Default, Deserialize)]
struct CommonParams {
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Value>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    logprobs: Option<Value>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    model: String,
    messages: Vec<OpenAiMessage>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    tools: Option<Value>,
    #[serde(flatten)]
    common: CommonParams,
}

#[derive(Debug, Deserialize)]
struct OpenAiMessage {
    role: String,
    /// A string, a list of content parts, or null (an assistant turn that only called tools).
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: String,
    prompt: Value,
    max_tokens: Option<u32>,
    echo: Option<bool>,
    suffix: Option<Value>,
    #[serde(flatten)]
    common: CommonParams,
}

/// What the translation keeps beside the task: how to shape the answer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    include_usage: bool,
}

/// `POST /v1/chat/completions` as a task. `default_max_tokens` applies when the request names
/// no limit (OpenAI then means "as long as the context allows").
fn chat_task(
    request: ChatCompletionRequest,
    default_max_tokens: u32,
) -> Result<(TaskRequest, Shape), ValidationError> {
    if request
        .tools
        .as_ref()
        .is_some_and(|tools| !is_empty_value(tools))
    {
        return Err(ValidationError::Unsupported {
            field: "tools".into(),
            detail: ": the worker generates plain text",
        });
    }
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            Ok(ChatMessage {
                // OpenAI's newer name for the system role.
                role: match message.role.as_str() {
                    "developer" => "system".to_owned(),
                    _ => message.role,
                },
                content: message_text(index, message.content)?,
            })
        })
        .collect::<Result<Vec<_>, ValidationError>>()?;
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(default_max_tokens);
    let (sampling, stream, shape) = common_params(request.common, max_tokens)?;
    Ok((
        TaskRequest {
            model: request.model,
            prompt: None,
            messages: Some(messages),
            sampling,
            stream,
        },
        shape,
    ))
}

/// `POST /v1/completions` as a task.
fn completion_task(request: CompletionRequest) -> Result<(TaskRequest, Shape), ValidationError> {
    if request.echo == Some(true) {
        return Err(ValidationError::Unsupported {
            field: "echo".into(),
            detail: "",
        });
    }
    if request
        .suffix
        .as_ref()
        .is_some_and(|suffix| !is_empty_value(suffix))
    {
        return Err(ValidationError::Unsupported {
            field: "suffix".into(),
            detail: "",
        });
    }
    let prompt = match request.prompt {
        Value::String(prompt) => prompt,
        Value::Array(prompts) => {
            let count = prompts.len();
            match <[Value; 1]>::try_from(prompts) {
                Ok([Value::String(prompt)]) => prompt,
                Ok(_) => {
                    return Err(ValidationError::WrongType {
                        field: "prompt[0]".into(),
                        expected: "a string (token arrays are not supported)",
                    })
                }
                Err(_) => return Err(ValidationError::PromptCount { count }),
            }
        }
        _ => {
            return Err(ValidationError::WrongType {
                field: "prompt".into(),
                expected: "a string",
            })
        }
    };
    let max_tokens = request.max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS);
    let (sampling, stream, shape) = common_params(request.common, max_tokens)?;
    Ok((
        TaskRequest {
            model: request.model,
            prompt: Some(prompt),
            messages: None,
            sampling,
            stream,
        },
        shape,
    ))
}

fn common_params(
    common: CommonParams,
    max_tokens: u32,
) -> Result<(SamplingParams, bool, Shape), ValidationError> {
    if let Some(n) = common.n.filter(|&n| n != 1) {
        return Err(ValidationError::ChoiceCount { value: n });
    }
    if common
        .logprobs
        .as_ref()
        .is_some_and(|logprobs| !matches!(logprobs, Value::Null | Value::Bool(false)))
    {
        return Err(ValidationError::Unsupported {
            field: "logprobs".into(),
            detail: "",
        });
    }
    // OpenAI's defaults: temperature 1 and top_p 1, no top-k.
    let temperature = common.temperature.unwrap_or(1.0);
    if temperature > MAX_TEMPERATURE {
        return Err(ValidationError::AboveMaximum {
            field: "temperature",
            value: temperature,
            limit: MAX_TEMPERATURE,
        });
    }
    let seed = match common.seed {
        None => None,
        Some(seed) => Some(u32::try_from(seed).map_err(|_| ValidationError::Seed { value: seed })?),
    };
    let stop = match common.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(stop)) => vec![stop],
        Some(Value::Array(stops)) => stops
            .into_iter()
            .enumerate()
            .map(|(index, stop)| match stop {
                Value::String(stop) => Ok(stop),
                _ => Err(ValidationError::WrongType {
                    field: format!("stop[{index}]"),
                    expected: "a string",
                }),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ValidationError::WrongType {
                field: "stop".into(),
                expected: "a string or a list of strings",
            })
        }
    };
    let sampling = SamplingParams {
        max_tokens,
        temperature,
        top_k: 0,
        top_p: common.top_p.unwrap_or(1.0),
        seed,
        stop,
    };
    let shape = Shape {
        include_usage: common
            .stream_options
            .is_some_and(|options| options.include_usage),
    };
    Ok((sampling, common.stream.unwrap_or(false), shape))
}

/// A message's `content` as plain text: a string, or the `text` parts of a list joined.
fn message_text(index: usize, content: Value) -> Result<String, ValidationError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text),
        Value::Array(parts) => {
            let mut text = String::new();
            for (part_index, part) in parts.into_iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(piece))) => text.push_str(piece),
                    (Some("text"), _) => {
                        return Err(ValidationError::WrongType {
                            field: format!("messages[{index}].content[{part_index}].text"),
                            expected: "a string",
                        })
                    }
                    _ => {
                        return Err(ValidationError::Unsupported {
                            field: format!("messages[{index}].content[{part_index}]"),
                            detail: ": only `text` parts are accepted",
                        })
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ValidationError::WrongType {
            field: format!("messages[{index}].content"),
            expected: "a string or a list of content parts",
        }),
    }
}

fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn model_object(summary: &crate::scheduler::ModelSummary, created: u64) -> Value {
    json!({
        "id": summary.model,
        "object": "model",
        "created": created,
        "owned_by": "llama-orch",
        // Beyond OpenAI's fields: what a client choosing a model wants to know.
        "workers": summary.live_workers,
        "slots_total": summary.slots_total,
        "slots_busy": summary.slots_busy,
        "queue_depth": summary.queued,
    })
}

/// Models with at least one live worker.
async fn list_models(State(state): State<AppState>) -> Result<Json<Value>, OpenAiError> {
    let created = state.started_at_secs();
    let data: Vec<Value> = state
        .scheduler()
        .models()
        .await?
        .iter()
        .filter(|summary| summary.live_workers > 0)
        .map(|summary| model_object(summary, created))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn get_model(
    State(state): State<AppState>,
    model: Result<PathParam, OrcdError>,
) -> Result<Json<Value>, OpenAiError> {
    let PathParam(model) = model?;
    let models = state.scheduler().models().await?;
    match models
        .iter()
        .find(|summary| summary.model == model && summary.live_workers > 0)
    {
        Some(summary) => Ok(Json(model_object(summary, state.started_at_secs()))),
        None => Err(OrcdError::NoWorker { model }.into()),
    }
}

/// Which OpenAI object a job's answer becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Chat,
    Completions,
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
async fn default_chat_max_tokens(state: &AppState, model: &str) -> Result<u32, OrcdError> {
    let limit = state.limits().max_tokens;
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

async fn run(
    state: AppState,
    actor: Actor,
    task: TaskRequest,
    shape: Shape,
    endpoint: Endpoint,
) -> Result<Response, OpenAiError> {
    let task = validate_task(task, state.limits())?;
    let stream = task.stream;
    let model = task.model.clone();
    let api = match endpoint {
        Endpoint::Chat => TaskApi::Chat,
        Endpoint::Completions => TaskApi::Completions,
    };
    let StartedJob { job_id, items } = start_job(&state, task, &actor, api).await?;
    let answer = Answer {
        endpoint,
        id: match endpoint {
            Endpoint::Chat => format!("chatcmpl-{job_id}"),
            Endpoint::Completions => format!("cmpl-{job_id}"),
        },
        model: model.clone(),
        created: unix_secs(),
    };
    let mut response = if stream {
        answer.stream(items, shape)
    } else {
        let result = collect_result(&job_id, model, items).await?;
        Json(answer.whole(&result.text, &result.stats)).into_response()
    };
    let header = HeaderValue::from_str(&job_id).expect("a uuid is a valid header value");
    response.headers_mut().insert(JOB_ID_HEADER, header);
    Ok(response)
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        // See the module comment.
        FinishReason::Cancelled => "stop",
    }
}

fn usage(stats: &llorch_api::GenerationStats) -> Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
    })
}

/// The fixed parts of one job's OpenAI answer.
#[derive(Debug, Clone)]
struct Answer {
    endpoint: Endpoint,
    id: String,
    model: String,
    created: u64,
}

impl Answer {
    /// A non-streaming answer.
    fn whole(&self, text: &str, stats: &llorch_api::GenerationStats) -> Value {
        let reason = finish_reason(stats.finish_reason);
        match self.endpoint {
            Endpoint::Chat => json!({
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": null,
                    "finish_reason": reason,
                }],
                "usage": usage(stats),
            }),
            Endpoint::Completions => json!({
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": reason}],
                "usage": usage(stats),
            }),
        }
    }

    /// One streamed chunk: a piece of text, or the end with its reason.
    fn chunk(&self, text: Option<&str>, reason: Option<&str>, include_usage: bool) -> Value {
        let mut chunk = match self.endpoint {
            Endpoint::Chat => {
                let delta = match text {
                    Some(text) => json!({"content": text}),
                    None => json!({}),
                };
                json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason}],
                })
            }
            Endpoint::Completions => json!({
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": reason}],
            }),
        };
        if include_usage {
            // OpenAI sends `"usage": null` on every chunk but the extra last one.
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The events one item of the job's stream becomes.
    fn events_for(&self, item: JobItem, shape: Shape) -> Vec<Value> {
        match item {
            Ok(StreamEvent::Queued { .. } | StreamEvent::Started { .. }) => Vec::new(),
            Ok(StreamEvent::Token { text, .. }) => {
                vec![self.chunk(Some(&text), None, shape.include_usage)]
            }
            Ok(StreamEvent::Done(stats)) => {
                let last = self.chunk(
                    None,
                    Some(finish_reason(stats.finish_reason)),
                    shape.include_usage,
                );
                let mut events = vec![last];
                if shape.include_usage {
                    let mut usage_chunk = self.chunk(None, None, false);
                    usage_chunk["choices"] = json!([]);
                    usage_chunk["usage"] = usage(&stats);
                    events.push(usage_chunk);
                }
                events
            }
            Err(error) => {
                error.log();
                vec![error_body(&error)]
            }
            // Errors travel as `Err` items; a relayed `error` event would be a bug.
            Ok(StreamEvent::Error { message, .. }) => vec![error_body(&OrcdError::Internal(
                format!("unexpected error event: {message}"),
            ))],
        }
    }

    /// `data: {chunk}` events, ended by `data: [DONE]` after the last item (a failure too, so
    /// clients that wait for `[DONE]` are not left hanging). Dropping the response drops the
    /// job's receiver, which cancels the job.
    fn stream(self, items: mpsc::Receiver<JobItem>, shape: Shape) -> Response {
        let opening = match self.endpoint {
            // OpenAI's first chat chunk announces the role.
            Endpoint::Chat => {
                let mut first = self.chunk(Some(""), None, shape.include_usage);
                first["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
                vec![first]
            }
            Endpoint::Completions => Vec::new(),
        };
        let answer = self.clone();
        let chunks = ReceiverStream::new(items)
            .flat_map(move |item| stream::iter(answer.events_for(item, shape)));
        let events = stream::iter(opening)
            .chain(chunks)
            .map(|chunk| Event::default().data(chunk.to_string()))
            .chain(stream::once(async { Event::default().data("[DONE]") }))
            .map(Ok::<_, Infallible>);
        (
            [(X_ACCEL_BUFFERING, "no")],
            Sse::new(events).keep_alive(KeepAlive::default()),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::GenerationStats;

    fn chat(body: Value) -> Result<(TaskRequest, Shape), ValidationError> {
        chat_task(serde_json::from_value(body).unwrap(), 512)
    }

    fn completion(body: Value) -> Result<(TaskRequest, Shape), ValidationError> {
        completion_task(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn a_chat_request_becomes_a_messages_task_with_openai_defaults() {
        let (task, shape) = chat(json!({
            "model": "qwen2.5-coder-0.5b",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "seed": 7,
            "stop": "\n",
        }))
        .unwrap();
        assert_eq!(task.model, "qwen2.5-coder-0.5b");
        let messages = task.messages.unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
        assert_eq!(messages[1].content, "hi there");
        assert_eq!(
            task.sampling,
            SamplingParams {
                max_tokens: 512,
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: Some(7),
                stop: vec!["\n".into()],
            }
        );
        assert!(task.stream);
        assert!(shape.include_usage);
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let (task, _) = chat(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 10, "max_completion_tokens": 20, "stop": ["a", "b"],
        }))
        .unwrap();
        assert_eq!(task.sampling.max_tokens, 20);
        assert_eq!(task.sampling.stop, ["a", "b"]);
        assert!(!task.stream);
    }

    #[test]
    fn a_completion_request_becomes_a_prompt_task() {
        let (task, _) =
            completion(json!({"model": "m", "prompt": ["Once"], "temperature": 0})).unwrap();
        assert_eq!(task.prompt.as_deref(), Some("Once"));
        assert_eq!(task.sampling.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS);
        assert_eq!(task.sampling.temperature, 0.0);
    }

    #[test]
    fn what_orcd_cannot_do_is_refused_by_name() {
        let user = json!([{"role": "user", "content": "x"}]);
        let refused = |body: Value| chat(body).unwrap_err().to_string();
        assert!(refused(json!({"model": "m", "messages": user, "n": 2})).contains("`n` must be 1"));
        assert!(refused(json!({"model": "m", "messages": user, "seed": -1})).contains("`seed`"));
        assert!(
            refused(json!({"model": "m", "messages": user, "temperature": 2.5}))
                .contains("`temperature` must be at most 2")
        );
        assert!(
            refused(json!({"model": "m", "messages": user, "stop": 5})).contains("`stop` must be")
        );
        assert!(
            refused(json!({"model": "m", "messages": user, "stop": ["a", 1]}))
                .contains("`stop[1]`")
        );
        assert!(
            refused(json!({"model": "m", "messages": user, "logprobs": true}))
                .contains("`logprobs`")
        );
        assert!(
            refused(json!({"model": "m", "messages": user, "tools": [{"type": "function"}]}))
                .contains("`tools`")
        );
        let image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
        assert!(
            refused(json!({"model": "m", "messages": image})).contains("`messages[0].content[0]`")
        );
        let completion_refused = |body: Value| completion(body).unwrap_err().to_string();
        assert!(
            completion_refused(json!({"model": "m", "prompt": ["a", "b"]})).contains("2 prompts")
        );
        assert!(
            completion_refused(json!({"model": "m", "prompt": [[1, 2]]})).contains("`prompt[0]`")
        );
        assert!(
            completion_refused(json!({"model": "m", "prompt": "x", "echo": true}))
                .contains("`echo`")
        );
    }

    fn stats(reason: FinishReason) -> GenerationStats {
        GenerationStats {
            finish_reason: reason,
            prompt_tokens: 5,
            generated_tokens: 3,
            time_to_first_token_ms: 1.0,
            tokens_per_second: 1.0,
            prompt_tokens_per_second: 1.0,
            cached_prompt_tokens: 2,
        }
    }

    fn answer(endpoint: Endpoint) -> Answer {
        Answer {
            endpoint,
            id: "chatcmpl-j".into(),
            model: "m".into(),
            created: 1,
        }
    }

    #[test]
    fn whole_answers_carry_usage_and_the_mapped_finish_reason() {
        let chat = answer(Endpoint::Chat).whole("hi", &stats(FinishReason::Length));
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["choices"][0]["message"]["content"], "hi");
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
        assert_eq!(
            chat["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                   "prompt_tokens_details": {"cached_tokens": 2}})
        );
        let text = answer(Endpoint::Completions).whole("hi", &stats(FinishReason::Cancelled));
        assert_eq!(text["object"], "text_completion");
        assert_eq!(text["choices"][0]["text"], "hi");
        assert_eq!(text["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn the_end_of_a_stream_has_the_reason_then_the_usage_chunk_when_asked() {
        let shape = Shape {
            include_usage: true,
        };
        let events = answer(Endpoint::Chat)
            .events_for(Ok(StreamEvent::Done(stats(FinishReason::Stop))), shape);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[0]["usage"], Value::Null);
        assert_eq!(events[1]["choices"], json!([]));
        assert_eq!(events[1]["usage"]["total_tokens"], 8);
        let plain = answer(Endpoint::Chat).events_for(
            Ok(StreamEvent::Done(stats(FinishReason::Stop))),
            Shape {
                include_usage: false,
            },
        );
        assert_eq!(plain.len(), 1);
        assert!(plain[0].get("usage").is_none());
    }

    #[test]
    fn errors_have_openai_shape_and_a_missing_model_is_404() {
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
        let body = error_body(&OrcdError::Validation(ValidationError::ChoiceCount {
            value: 3,
        }));
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("`n`"));
        assert_eq!(
            openai_status_type_code(&OrcdError::Forbidden("no".into())).0,
            StatusCode::FORBIDDEN
        );
    }
}
