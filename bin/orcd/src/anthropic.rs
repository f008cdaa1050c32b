//! Anthropic's Messages API, which Claude Code and Anthropic's SDKs speak: `POST /v1/messages`
//! (whole or streamed as Anthropic's events) and `POST /v1/messages/count_tokens`. A request
//! becomes the same chat task `/v1/chat/completions` makes (`request.rs`) and runs as one job
//! through the OpenAI layer's [`start_choices`]; its text becomes content blocks
//! (`output.rs`). Errors have Anthropic's shape, `{"type": "error", "error": {type,
//! message}}`, the message naming the offending field. The token comes as `x-api-key` or as a
//! bearer header (`auth.rs`); `anthropic-version` and `anthropic-beta` are accepted whatever
//! they say.

mod output;
mod request;

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use futures::{stream, StreamExt};
use llorch_api::audit::Actor;
use llorch_api::StreamEvent as JobEvent;
use serde::Serialize;

use self::output::{MessageBuilder, StreamEvent};
use self::request::{messages_task, MessagesRequest};
use crate::anthropic_error::{error_detail, AnthropicError};
use crate::dispatch::JobItem;
use crate::error::OrcdError;
use crate::extract::JsonFields;
use crate::openai::request::offered_tools;
use crate::openai::tool_calls::ToolCallStream;
use crate::openai::wire::to_json;
use crate::openai::{collect_choice, start_choices, until_end, with_job_id, ChoiceJob};
use crate::sse::X_ACCEL_BUFFERING;
use crate::state::AppState;
use crate::tasks::TaskApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(create_message))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

async fn create_message(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<JsonFields<MessagesRequest>, OrcdError>,
) -> Result<Response, AnthropicError> {
    let JsonFields(request) = body?;
    let task = messages_task(&request, request.max_tokens)?;
    let stream = task.stream;
    let tools = offered_tools(&task.tools).map(|tools| match stream {
        true => ToolCallStream::streaming(tools),
        false => ToolCallStream::new(tools),
    });
    let job = start_one(&state, &actor, task).await?;
    let job_id = job.job_id.clone();
    let builder = MessageBuilder::new(
        format!("msg_{}", job_id.replace('-', "")),
        // An alias answers as the model it stands for.
        state.aliases().resolve(&request.model).to_owned(),
        tools,
    );
    let response = if stream {
        stream_message(builder, job)
    } else {
        let mut builder = builder;
        let result = collect_choice(job).await?;
        builder.push(&result.text);
        builder.finish(&result.stats);
        Json(builder.message()).into_response()
    };
    Ok(with_job_id(response, &job_id))
}

async fn start_one(
    state: &AppState,
    actor: &Actor,
    task: llorch_api::TaskRequest,
) -> Result<ChoiceJob, OrcdError> {
    let jobs = start_choices(state, actor, task, 1, TaskApi::Messages).await?;
    Ok(jobs.into_iter().next().expect("one choice was started"))
}

/// `message_start`, `ping`, the blocks' events as the text arrives, `message_delta` and
/// `message_stop`; an `error` event when the job fails. Dropping the response cancels the job.
fn stream_message(builder: MessageBuilder, job: ChoiceJob) -> Response {
    let opening = vec![
        StreamEvent::MessageStart {
            message: builder.message().clone(),
        },
        StreamEvent::Ping,
    ];
    let events = until_end(job.into_items(), builder, events_for);
    let sse = stream::iter(opening).chain(events).map(|event| {
        Ok::<_, Infallible>(Event::default().event(event.name()).data(to_json(&event)))
    });
    (
        [(X_ACCEL_BUFFERING, "no")],
        Sse::new(sse).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

/// The events one item of the job becomes, and whether the stream ends after them.
fn events_for(builder: &mut MessageBuilder, item: JobItem) -> (Vec<StreamEvent>, bool) {
    match item {
        Ok(JobEvent::Queued { .. } | JobEvent::Started { .. }) => (Vec::new(), false),
        Ok(JobEvent::Token { text, .. }) => (builder.push(&text), false),
        Ok(JobEvent::Done(stats)) => (builder.finish(&stats), true),
        Err(error) => {
            error.log();
            let error = error_detail(&error);
            (vec![StreamEvent::Error { error }], true)
        }
        // Errors travel as `Err` items; a relayed `error` event would be a bug.
        Ok(JobEvent::Error { message, .. }) => {
            let error = OrcdError::Internal(format!("unexpected error event: {message}"));
            error.log();
            let error = error_detail(&error);
            (vec![StreamEvent::Error { error }], true)
        }
    }
}

#[derive(Debug, Serialize)]
struct TokenCount {
    input_tokens: u32,
}

/// Counts the prompt's tokens as the model sees it (system, messages and tools through the
/// chat template): the workers have no tokenizer endpoint, so this runs the request for one
/// token and reports the prompt tokens the worker counted, the `input_tokens` a
/// `/v1/messages` call with the same body reports.
async fn count_tokens(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    body: Result<JsonFields<MessagesRequest>, OrcdError>,
) -> Result<Json<TokenCount>, AnthropicError> {
    let JsonFields(request) = body?;
    let mut task = messages_task(&request, Some(1))?;
    task.stream = false;
    let job = start_one(&state, &actor, task).await?;
    let result = collect_choice(job).await?;
    Ok(Json(TokenCount {
        input_tokens: result.stats.prompt_tokens,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anthropic_error::{anthropic_status_type, is_messages_path};
    use crate::validation::ValidationError;
    use axum::http::StatusCode;

    #[test]
    fn errors_have_anthropics_types_and_statuses() {
        let cases = [
            (
                OrcdError::Validation(ValidationError::ChoiceCount { value: 9 }),
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
            ),
            (
                OrcdError::NoWorker { model: "x".into() },
                StatusCode::NOT_FOUND,
                "not_found_error",
            ),
            (
                OrcdError::QueueFull {
                    model: "x".into(),
                    limit: 1,
                    retry_after_secs: 2,
                },
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
            ),
            (
                OrcdError::Unauthorized("no".into()),
                StatusCode::UNAUTHORIZED,
                "authentication_error",
            ),
            (
                OrcdError::Forbidden("no".into()),
                StatusCode::FORBIDDEN,
                "permission_error",
            ),
            (
                OrcdError::BodyTooLarge { limit: 1 },
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
            ),
            (
                OrcdError::Internal("secret detail".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
            ),
        ];
        for (error, status, kind) in cases {
            assert_eq!(anthropic_status_type(&error), (status, kind), "{error}");
        }
        let internal = error_detail(&OrcdError::Internal("secret detail".into()));
        assert!(!internal.message.contains("secret"), "{}", internal.message);
    }

    #[test]
    fn only_the_messages_paths_are_anthropics() {
        assert!(is_messages_path("/v1/messages"));
        assert!(is_messages_path("/v1/messages/count_tokens"));
        assert!(!is_messages_path("/v1/messagesx"));
        assert!(!is_messages_path("/v1/chat/completions"));
    }
}
