//! OpenAI's error shape, `{"error": {message, type, param, code}}`, for every error orcd
//! answers under `/v1` — the OpenAI handlers' own and those of the layers below them
//! (authentication, unknown routes) — with `param` naming the offending field, so the official
//! clients raise their usual exceptions. Anthropic's shape, under `/v1/messages`, is in
//! `anthropic_error`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_api::ErrorKind;
use serde::Serialize;

use crate::error::OrcdError;
use crate::validation::{RequestError, ValidationError};

/// OpenAI's error shape: `{"error": {message, type, param, code}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
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

impl From<RequestError> for OpenAiError {
    fn from(error: RequestError) -> Self {
        OpenAiError(error.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        error_response(self.0)
    }
}

/// The HTTP status, and OpenAI's `type` and `code`, of an error. A model nobody serves is
/// OpenAI's 404 `model_not_found`: `/v1/models` lists only served models, so to an OpenAI
/// client it does not exist. A request a worker refused as invalid is a 400, as OpenAI
/// answers every invalid request.
pub fn openai_status_type_code(
    error: &OrcdError,
) -> (StatusCode, &'static str, Option<&'static str>) {
    let (status, kind) = error.status_and_kind();
    match kind {
        ErrorKind::Validation if matches!(error, OrcdError::WorkerRejected { .. }) => {
            (StatusCode::BAD_REQUEST, "invalid_request_error", None)
        }
        ErrorKind::Validation => (status, "invalid_request_error", None),
        ErrorKind::ContextLength => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        // The model exists (a pool manager could load it) but found no room or failed to
        // start: the 503 with the reason, not "no such model".
        ErrorKind::NoWorker if matches!(error, OrcdError::ModelLoadFailed { .. }) => {
            (status, "server_error", Some("model_load_failed"))
        }
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

/// OpenAI's `param`: the request field an error is about. Every validation message names its
/// field first, in backticks (`` `top_p` must be ... ``), so that is where it is read from.
fn param(error: &OrcdError) -> Option<String> {
    match error {
        OrcdError::Validation(validation) => {
            let message = validation.to_string();
            let field = message.split('`').nth(1)?;
            Some(field.to_owned())
        }
        OrcdError::ContextLength { .. } => Some("messages".to_owned()),
        _ => None,
    }
}

pub fn error_body(error: &OrcdError) -> ErrorBody {
    let (_, error_type, code) = openai_status_type_code(error);
    ErrorBody {
        error: ErrorDetail {
            message: error.public_message(),
            kind: error_type,
            param: param(error),
            code,
        },
    }
}

pub fn error_response(error: OrcdError) -> Response {
    error.log();
    let (status, _, _) = openai_status_type_code(&error);
    let mut response = (status, Json(error_body(&error))).into_response();
    error.add_headers(&mut response);
    response
}

/// Errors under `/v1` in OpenAI's shape (Anthropic's under `/v1/messages`), everywhere else
/// in orcd's.
pub fn error_response_for_path(path: &str, error: OrcdError) -> Response {
    if crate::anthropic_error::is_messages_path(path) {
        crate::anthropic_error::error_response(error)
    } else if path == "/v1" || path.starts_with("/v1/") {
        error_response(error)
    } else {
        error.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_that_could_not_be_loaded_is_a_503_not_an_unknown_model() {
        let failed = OrcdError::ModelLoadFailed {
            model: "m".into(),
            reason: "no host has room".into(),
        };
        assert_eq!(
            openai_status_type_code(&failed),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("model_load_failed")
            )
        );
        let unknown = OrcdError::NoWorker { model: "m".into() };
        assert_eq!(openai_status_type_code(&unknown).0, StatusCode::NOT_FOUND);
    }
}
