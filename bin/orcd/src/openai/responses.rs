//! OpenAI's Responses API, which the Codex CLI and the Agents SDK speak: `POST /v1/responses`
//! (whole or streamed as Responses events), `GET` and `DELETE /v1/responses/{id}`. A request
//! becomes the same task a chat completion does (`request.rs`) and runs as one job through
//! [`start_choices`]; its text becomes output items (`output.rs`). Finished responses are kept
//! for `previous_response_id` (`store.rs`) unless the request says `store: false`.

mod objects;
mod output;
mod request;
mod store;

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::{stream, StreamExt};
use llorch_api::audit::Actor;
use llorch_api::{ChatMessage, StreamEvent as JobEvent};

use self::objects::{
    Deleted, EventBody, Reasoning, ResponseObject, Status, StreamEvent, TextConfig,
};
use self::output::OutputBuilder;
use self::request::{responses_task, ResponsesRequest, Translated};
use self::store::{ResponseStore, StoredResponse};
use super::request::offered_tools;
use super::tool_calls::ToolCallStream;
use super::wire::{to_json, Null};
use super::{
    collect_choice, default_chat_max_tokens, start_choices, unix_secs, until_end, with_job_id,
    ChoiceJob, OpenAiError,
};
use crate::aliases::ModelAliases;
use crate::auth::JobScope;
use crate::dispatch::JobItem;
use crate::error::OrcdError;
use crate::extract::{JsonFields, PathParam};
use crate::openai_error::openai_status_type_code;
use crate::sse::X_ACCEL_BUFFERING;
use crate::state::AppState;
use crate::tasks::TaskApi;
use crate::validation::ValidationError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/responses", post(create_response))
        .route(
            "/v1/responses/{id}",
            get(get_response).delete(delete_response),
        )
        .layer(Extension(ResponseStore::default()))
}

async fn create_response(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(scope): Extension<JobScope>,
    Extension(store): Extension<ResponseStore>,
    body: Result<JsonFields<ResponsesRequest>, OrcdError>,
) -> Result<Response, OpenAiError> {
    let JsonFields(request) = body?;
    let previous = match &request.previous_response_id {
        None => Vec::new(),
        Some(id) => {
            let stored = store
                .get(id, &scope)
                .ok_or_else(|| ValidationError::Field {
                    field: "previous_response_id".into(),
                    problem: format!(
                        "no response `{id}` is kept for this client: responses are kept for an \
                     hour unless made with `store: false`"
                    ),
                })?;
            stored.conversation
        }
    };
    let default_max_tokens = match request.max_output_tokens {
        Some(_) => 0,
        None => default_chat_max_tokens(&state, &request.model).await?,
    };
    let translated = responses_task(&request, previous, default_max_tokens)?;
    let tools = offered_tools(&translated.task.tools);
    let stream = translated.task.stream;
    let jobs = start_choices(
        &state,
        &actor,
        translated.task.clone(),
        1,
        TaskApi::Responses,
    )
    .await?;
    let job = jobs.into_iter().next().expect("one choice was started");
    let job_id = job.job_id.clone();
    let answer = Answer {
        builder: OutputBuilder::new(
            in_progress(&request, &translated, &job_id, state.aliases()),
            tools.map(|tools| match stream {
                true => ToolCallStream::streaming(tools),
                false => ToolCallStream::new(tools),
            }),
        ),
        keep: (request.store != Some(false)).then(|| Keep {
            store,
            owner: actor.token.clone(),
            conversation: translated.conversation,
        }),
    };
    let response = if stream {
        stream_response(answer, job)
    } else {
        whole_response(answer, job).await?
    };
    Ok(with_job_id(response, &job_id))
}

/// The response before any output: what `response.created` carries.
fn in_progress(
    request: &ResponsesRequest,
    translated: &Translated,
    job_id: &str,
    aliases: &ModelAliases,
) -> ResponseObject {
    let sampling = &translated.task.sampling;
    ResponseObject {
        id: format!("resp_{}", job_id.replace('-', "")),
        object: "response",
        created_at: unix_secs(),
        status: Status::InProgress,
        error: None,
        incomplete_details: None,
        instructions: request.instructions.clone(),
        max_output_tokens: request.max_output_tokens,
        // An alias answers as the model it stands for.
        model: aliases.resolve(&request.model).to_owned(),
        output: Vec::new(),
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        previous_response_id: request.previous_response_id.clone(),
        reasoning: Reasoning {
            effort: Null,
            summary: Null,
        },
        store: request.store != Some(false),
        temperature: sampling.temperature,
        text: TextConfig {
            format: translated.format.clone(),
        },
        tool_choice: (request.tool_choice.clone())
            .unwrap_or_else(|| serde_json::Value::from("auto")),
        tools: request.tools.clone().unwrap_or_default(),
        top_p: sampling.top_p,
        truncation: "disabled",
        usage: None,
        user: request.user.clone(),
        metadata: request.metadata.clone().unwrap_or_default(),
    }
}

/// Where a finished response is kept, unless `store: false`.
struct Keep {
    store: ResponseStore,
    owner: Option<String>,
    /// The conversation up to the response's output.
    conversation: Vec<ChatMessage>,
}

/// A response being written and where it goes when done.
struct Answer {
    builder: OutputBuilder,
    keep: Option<Keep>,
}

impl Answer {
    /// Stores the finished response with the conversation a continuation starts from.
    fn keep(&mut self) {
        if let Some(keep) = self.keep.take() {
            let mut conversation = keep.conversation;
            conversation.extend(self.builder.as_messages());
            keep.store.insert(StoredResponse {
                owner: keep.owner,
                response: self.builder.response().clone(),
                conversation,
            });
        }
    }
}

async fn whole_response(mut answer: Answer, job: ChoiceJob) -> Result<Response, OrcdError> {
    let result = collect_choice(job).await?;
    answer.builder.push(&result.text);
    answer.builder.finish(&result.stats);
    answer.keep();
    Ok(Json(answer.builder.response()).into_response())
}

/// The Responses event sequence: `response.created`, `response.in_progress`, the items'
/// events as the text arrives, then `response.completed` (or `response.incomplete`, or
/// `response.failed` when the job fails). Dropping the response cancels the job.
fn stream_response(answer: Answer, job: ChoiceJob) -> Response {
    let opening = {
        let response = Box::new(answer.builder.response().clone());
        vec![
            EventBody::Created {
                response: response.clone(),
            },
            EventBody::InProgress { response },
        ]
    };
    let events = until_end(job.into_items(), answer, events_for);
    let numbered = stream::iter(opening)
        .chain(events)
        .zip(stream::iter(0u64..))
        .map(|(event, sequence_number)| {
            let name = event.name();
            let data = to_json(&StreamEvent {
                event,
                sequence_number,
            });
            Ok::<_, Infallible>(Event::default().event(name).data(data))
        });
    (
        [(X_ACCEL_BUFFERING, "no")],
        Sse::new(numbered).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

/// The events one item of the job becomes, and whether the stream ends after them.
fn events_for(answer: &mut Answer, item: JobItem) -> (Vec<EventBody>, bool) {
    match item {
        Ok(JobEvent::Queued { .. } | JobEvent::Started { .. }) => (Vec::new(), false),
        Ok(JobEvent::Token { text, .. }) => (answer.builder.push(&text), false),
        Ok(JobEvent::Done(stats)) => {
            let events = answer.builder.finish(&stats);
            answer.keep();
            (events, true)
        }
        Err(error) => {
            error.log();
            let (_, _, code) = openai_status_type_code(&error);
            let failed = answer
                .builder
                .fail(code.unwrap_or("server_error"), error.public_message());
            (vec![failed], true)
        }
        // Errors travel as `Err` items; a relayed `error` event would be a bug.
        Ok(JobEvent::Error { message, .. }) => {
            let error = OrcdError::Internal(format!("unexpected error event: {message}"));
            error.log();
            let failed = answer.builder.fail("server_error", error.public_message());
            (vec![failed], true)
        }
    }
}

async fn get_response(
    Extension(scope): Extension<JobScope>,
    Extension(store): Extension<ResponseStore>,
    id: Result<PathParam, OrcdError>,
) -> Result<Json<ResponseObject>, OpenAiError> {
    let PathParam(id) = id?;
    match store.get(&id, &scope) {
        Some(stored) => Ok(Json(stored.response)),
        None => Err(OrcdError::ResponseNotFound(id).into()),
    }
}

async fn delete_response(
    Extension(scope): Extension<JobScope>,
    Extension(store): Extension<ResponseStore>,
    id: Result<PathParam, OrcdError>,
) -> Result<Json<Deleted>, OpenAiError> {
    let PathParam(id) = id?;
    if store.remove(&id, &scope) {
        Ok(Json(Deleted {
            id,
            object: "response",
            deleted: true,
        }))
    } else {
        Err(OrcdError::ResponseNotFound(id).into())
    }
}
