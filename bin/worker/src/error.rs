//! The worker's one error vocabulary: every failure maps to an HTTP status plus [`ErrorBody`]
//! before a stream starts, and to an SSE `error` event once it has.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use llorch_api::{ErrorBody, ErrorKind, StreamEvent};

use crate::{engine_error::EngineError, validation::ValidationError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("the request body must be JSON: send `content-type: application/json`")]
    UnsupportedMediaType,
    #[error("the model is still loading; retry once `GET /health` reports `ready`")]
    Loading,
    #[error("the worker is shutting down")]
    ShuttingDown,
    #[error("the worker's admission queue is full ({capacity} requests); retry later")]
    QueueFull { capacity: u32 },
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("the engine thread stopped: {0}")]
    EngineStopped(String),
    #[error("the engine cannot serve: {0}")]
    Engine(EngineError),
    #[error("{0}")]
    Unauthorized(String),
    #[error("this worker serves no embeddings\nhint: start it with `--embeddings`")]
    NoEmbeddings,
}

impl WorkerError {
    pub fn status(&self) -> StatusCode {
        match self {
            WorkerError::Validation(_) => StatusCode::BAD_REQUEST,
            WorkerError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WorkerError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WorkerError::NoEmbeddings => StatusCode::NOT_FOUND,
            WorkerError::Loading | WorkerError::ShuttingDown | WorkerError::QueueFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WorkerError::Generation(_) | WorkerError::EngineStopped(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            WorkerError::Engine(error) => engine_status(error),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            // orcd answers OpenAI clients `context_length_exceeded` for this one.
            WorkerError::Validation(
                ValidationError::PromptTooLong { .. } | ValidationError::EmbeddingTooLong { .. },
            ) => ErrorKind::ContextLength,
            WorkerError::Validation(_) | WorkerError::UnsupportedMediaType => ErrorKind::Validation,
            WorkerError::Unauthorized(_) => ErrorKind::Unauthorized,
            WorkerError::NoEmbeddings => ErrorKind::NotFound,
            // orcd treats a loading worker like a full one: try another or wait.
            WorkerError::Loading | WorkerError::QueueFull { .. } => ErrorKind::QueueFull,
            WorkerError::ShuttingDown => ErrorKind::ShuttingDown,
            WorkerError::Generation(_) => ErrorKind::Worker,
            WorkerError::EngineStopped(_) | WorkerError::Engine(_) => ErrorKind::Internal,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            error_type: self.kind(),
        }
    }

    /// The message as a log line may show it: client text in it cannot forge lines.
    pub fn log_message(&self) -> String {
        llorch_api::log_safe::log_safe(&self.to_string()).into_owned()
    }

    /// The same error as the terminal event of a stream that has already started.
    pub fn to_stream_event(&self) -> StreamEvent {
        StreamEvent::Error {
            message: self.to_string(),
            error_type: self.kind(),
        }
    }
}

/// A worker whose engine could not start (its model, flags or hardware) cannot serve any job:
/// 503 tells orcd to send the job elsewhere. An engine that broke while running is a 500.
fn engine_status(error: &EngineError) -> StatusCode {
    match error {
        EngineError::Backend(_)
        | EngineError::ModelMissing { .. }
        | EngineError::NoGpu { .. }
        | EngineError::GpuOutOfRange { .. }
        | EngineError::ModelLoad { .. }
        | EngineError::BatchSmallerThanSlots { .. }
        | EngineError::ContextBeyondTraining { .. }
        | EngineError::ContextTooLarge { .. }
        | EngineError::Context(_)
        | EngineError::TooFewCells { .. }
        | EngineError::EndedWhileLoading => StatusCode::SERVICE_UNAVAILABLE,
        EngineError::Panicked(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for WorkerError {
    fn into_response(self) -> Response {
        // Refused input and a busy or stopping worker are normal; only the worker's own
        // failures are logged as errors. Messages can quote the request, so they are escaped.
        let error = self.log_message();
        match self {
            WorkerError::Generation(_) | WorkerError::EngineStopped(_) | WorkerError::Engine(_) => {
                tracing::error!(%error, "request failed")
            }
            WorkerError::Unauthorized(_) => tracing::warn!(%error, "request refused"),
            WorkerError::Validation(_)
            | WorkerError::UnsupportedMediaType
            | WorkerError::Loading
            | WorkerError::ShuttingDown
            | WorkerError::QueueFull { .. }
            | WorkerError::NoEmbeddings => tracing::debug!(%error, "request refused"),
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, WorkerError::Unauthorized(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_are_400_and_name_the_field() {
        let error = WorkerError::from(ValidationError::Request(
            llorch_api::validation::RequestError::TopP { value: 2.0 },
        ));
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let body = error.body();
        assert_eq!(body.error_type, ErrorKind::Validation);
        assert_eq!(body.error, "`top_p` must be in (0, 1], got 2");
    }

    #[test]
    fn client_text_in_an_error_is_escaped_for_the_log() {
        let error = WorkerError::from(ValidationError::InvalidBody(
            "unknown variant `x\n2025-01-01 INFO forged`".into(),
        ));
        let logged = error.log_message();
        assert!(!logged.contains('\n'), "{logged}");
        assert!(logged.contains("x\\u{a}2025"), "{logged}");
    }

    #[test]
    fn busy_and_draining_are_503() {
        for error in [
            WorkerError::Loading,
            WorkerError::ShuttingDown,
            WorkerError::QueueFull { capacity: 8 },
        ] {
            assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE, "{error}");
        }
        assert_eq!(WorkerError::ShuttingDown.kind(), ErrorKind::ShuttingDown);
    }

    #[test]
    fn an_engine_that_could_not_start_is_503_and_a_panicked_one_500() {
        let missing = WorkerError::Engine(EngineError::ModelMissing {
            path: "/models/x.gguf".into(),
        });
        assert_eq!(missing.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            missing.body().error,
            "the engine cannot serve: model file `/models/x.gguf` does not exist"
        );
        let panicked = WorkerError::Engine(EngineError::Panicked("index out of bounds".into()));
        assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(panicked.kind(), ErrorKind::Internal);
    }

    #[test]
    fn stream_event_carries_the_same_message_and_kind() {
        let error = WorkerError::Generation("Decode Error 1: NoKvCacheSlot".into());
        assert_eq!(
            error.to_stream_event(),
            StreamEvent::Error {
                message: "generation failed: Decode Error 1: NoKvCacheSlot".into(),
                error_type: ErrorKind::Worker,
            }
        );
    }
}
