//! Anthropic's error shape, `{"type": "error", "error": {"type", "message"}}`, for every error
//! orcd answers under `/v1/messages` — the Messages handlers' own and those of the layers below
//! them (authentication, unknown routes).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_api::ErrorKind;
use serde::Serialize;

use crate::error::OrcdError;

/// Whether a path is the Messages API's, whose errors take Anthropic's shape.
pub fn is_messages_path(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}

/// An [`OrcdError`] answered in Anthropic's shape.
#[derive(Debug)]
pub struct AnthropicError(pub OrcdError);

impl From<OrcdError> for AnthropicError {
    fn from(error: OrcdError) -> Self {
        AnthropicError(error)
    }
}

impl From<crate::validation::ValidationError> for AnthropicError {
    fn from(error: crate::validation::ValidationError) -> Self {
        AnthropicError(OrcdError::Validation(error))
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        error_response(self.0)
    }
}

/// `{"type": "error", "error": {"type": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
}

/// The HTTP status and Anthropic's error `type` of an error. A model nobody serves is a 404
/// `not_found_error`, as Anthropic answers an unknown model; a worker's refusal of an invalid
/// request is a 400 like every invalid request.
pub fn anthropic_status_type(error: &OrcdError) -> (StatusCode, &'static str) {
    let (status, kind) = error.status_and_kind();
    match kind {
        ErrorKind::Validation if status == StatusCode::PAYLOAD_TOO_LARGE => {
            (status, "request_too_large")
        }
        ErrorKind::Validation if matches!(error, OrcdError::WorkerRejected { .. }) => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        ErrorKind::Validation => (status, "invalid_request_error"),
        ErrorKind::ContextLength => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        // The model exists (a pool manager could load it) but found no room or failed to
        // start: Anthropic's answer for a service that cannot take the request now, with the
        // reason, not "no such model" (the OpenAI routes answer the same 503).
        ErrorKind::NoWorker if matches!(error, OrcdError::ModelLoadFailed { .. }) => {
            (status, "overloaded_error")
        }
        ErrorKind::NoWorker => (StatusCode::NOT_FOUND, "not_found_error"),
        ErrorKind::NotFound => (status, "not_found_error"),
        ErrorKind::QueueFull => (status, "rate_limit_error"),
        ErrorKind::Unauthorized if status == StatusCode::FORBIDDEN => (status, "permission_error"),
        ErrorKind::Unauthorized => (status, "authentication_error"),
        ErrorKind::ShuttingDown => (status, "overloaded_error"),
        ErrorKind::Worker | ErrorKind::Internal => (status, "api_error"),
    }
}

pub fn error_detail(error: &OrcdError) -> ErrorDetail {
    ErrorDetail {
        kind: anthropic_status_type(error).1,
        message: error.public_message(),
    }
}

pub fn error_response(error: OrcdError) -> Response {
    error.log();
    let (status, _) = anthropic_status_type(&error);
    let body = ErrorBody {
        kind: "error",
        error: error_detail(&error),
    };
    let mut response = (status, Json(body)).into_response();
    error.add_headers(&mut response);
    response
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
            anthropic_status_type(&failed),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded_error")
        );
        let unknown = OrcdError::NoWorker { model: "m".into() };
        assert_eq!(
            anthropic_status_type(&unknown),
            (StatusCode::NOT_FOUND, "not_found_error")
        );
    }
}
