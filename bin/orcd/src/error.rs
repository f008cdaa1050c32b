//! orcd's one error vocabulary: every failure a client can see, mapped exhaustively to an HTTP
//! status with an [`ErrorBody`], and to the SSE `error` event that ends a task stream.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llorch_api::{ErrorBody, ErrorKind, JobState, StreamEvent};

use crate::validation::{log_safe, RequestError, ValidationError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrcdError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The body was not the JSON the endpoint expects (axum's rejection text names the problem).
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    #[error("invalid request path: {0}")]
    InvalidPath(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body must be JSON: send `content-type: application/json`")]
    UnsupportedMediaType,
    /// No credentials, or credentials orcd does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials of the wrong kind (a worker token on a client route or the reverse).
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "no live worker serves model `{model}`; start one with \
         `cargo xtask pool worker spawn cpu --model {model}`"
    )]
    NoWorker { model: String },
    #[error(
        "the queue for model `{model}` is full ({limit} jobs waiting); retry in {retry_after_secs} s"
    )]
    QueueFull {
        model: String,
        limit: usize,
        retry_after_secs: u64,
    },
    /// A client key past one of its limits (`rpm=`, `tpm=`, `jobs=` in the client token file).
    #[error("key `{key}` is at its limit of {value} {limit}; retry in {retry_after_secs} s")]
    KeyLimit {
        key: String,
        limit: &'static str,
        value: u32,
        retry_after_secs: u64,
    },
    #[error("no job `{0}`; list jobs with `GET /v2/tasks`")]
    JobNotFound(String),
    /// `/v1/responses/{id}` or `previous_response_id`: never stored, expired, deleted, or
    /// another client's.
    #[error("no response `{0}`: responses are kept in memory for a while after they are made (not with `store: false`), for the client that made them")]
    ResponseNotFound(String),
    #[error("no worker `{0}` is registered; a worker registers with `POST /workers/register`")]
    WorkerNotFound(String),
    #[error(
        "no pool manager `{0}` is registered; a pool manager registers with `POST /pools/register`"
    )]
    HostNotFound(String),
    /// orcd tried to start a worker for the model on a host and could not (no room, a failed
    /// start, the load timeout): the reason names the figures or the host's error.
    #[error("model `{model}` could not be loaded: {reason}")]
    ModelLoadFailed { model: String, reason: String },
    #[error("no pool manager runs a worker of model `{0}`; `GET /v2/hosts` lists their workers")]
    NothingToUnload(String),
    /// `GET /v2/workers/{id}/log` for a worker no pool manager lists.
    #[error("no pool manager runs worker `{0}`: orcd relays the logs of pool-managed workers only (a worker started by hand logs where it was started); `GET /v2/hosts` lists each host's workers")]
    NoWorkerLog(String),
    /// A pool manager did not answer, or refused what orcd relayed to it.
    #[error("the pool manager of host `{host_id}` {message}")]
    PoolManager { host_id: String, message: String },
    #[error("worker `{0}` is live: orcd forgets only dead workers\nhint: stop it first (`cargo xtask pool worker stop {0}`); a live worker would register again with its next heartbeat")]
    WorkerLive(String),
    #[error("no route for `{0}`; orcd serves /health, /metrics, /workers, /v2/tasks and /v1")]
    RouteNotFound(String),
    #[error("job `{job_id}` already finished ({state:?})")]
    JobFinished { job_id: String, state: JobState },
    /// The worker refused the request as invalid (for example a prompt longer than its context).
    #[error("worker `{worker_id}` rejected the job: {message}")]
    WorkerRejected { worker_id: String, message: String },
    /// The prompt does not fit one slot of the worker's context.
    #[error("worker `{worker_id}` cannot take the prompt: {message}")]
    ContextLength { worker_id: String, message: String },
    /// The worker failed or vanished after generation had started.
    #[error("worker `{worker_id}` failed: {message}")]
    WorkerFailed { worker_id: String, message: String },
    /// Every dispatch attempt failed before the first token.
    #[error("job `{job_id}` could not be dispatched: {message}")]
    DispatchFailed { job_id: String, message: String },
    #[error("orcd is shutting down; the job was not finished")]
    ShuttingDown,
    /// A new task while orcd drains after SIGTERM: jobs already admitted finish, none start.
    #[error("orcd is shutting down and accepts no new tasks; submit again once it is back, or to another orcd")]
    Draining,
    /// A bug; the detail is logged, the client only learns that something broke inside.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RequestError> for OrcdError {
    fn from(error: RequestError) -> Self {
        OrcdError::Validation(ValidationError::Request(error))
    }
}

impl OrcdError {
    /// The HTTP status and error category of this error. Exhaustive on purpose: a new variant
    /// must decide both before it compiles.
    pub fn status_and_kind(&self) -> (StatusCode, ErrorKind) {
        match self {
            OrcdError::Validation(_) => (StatusCode::BAD_REQUEST, ErrorKind::Validation),
            OrcdError::MalformedBody(_) => (StatusCode::BAD_REQUEST, ErrorKind::Validation),
            OrcdError::InvalidPath(_) => (StatusCode::BAD_REQUEST, ErrorKind::Validation),
            OrcdError::BodyTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::Validation)
            }
            OrcdError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorKind::Validation)
            }
            OrcdError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized),
            OrcdError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorKind::Unauthorized),
            OrcdError::NoWorker { .. } => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::NoWorker),
            OrcdError::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorKind::QueueFull),
            OrcdError::KeyLimit { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorKind::QueueFull),
            OrcdError::JobNotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            OrcdError::ResponseNotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            OrcdError::WorkerNotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            OrcdError::HostNotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            OrcdError::NothingToUnload(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            OrcdError::NoWorkerLog(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            OrcdError::PoolManager { .. } => (StatusCode::BAD_GATEWAY, ErrorKind::Worker),
            OrcdError::ModelLoadFailed { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::NoWorker)
            }
            OrcdError::WorkerLive(_) => (StatusCode::CONFLICT, ErrorKind::Validation),
            OrcdError::RouteNotFound(_) => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
            OrcdError::JobFinished { .. } => (StatusCode::CONFLICT, ErrorKind::Validation),
            OrcdError::WorkerRejected { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, ErrorKind::Validation)
            }
            OrcdError::ContextLength { .. } => (StatusCode::BAD_REQUEST, ErrorKind::ContextLength),
            OrcdError::WorkerFailed { .. } => (StatusCode::BAD_GATEWAY, ErrorKind::Worker),
            OrcdError::DispatchFailed { .. } => (StatusCode::BAD_GATEWAY, ErrorKind::Worker),
            OrcdError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::ShuttingDown),
            OrcdError::Draining => (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::ShuttingDown),
            OrcdError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
        }
    }

    /// The message a client sees: internals stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            OrcdError::Internal(_) => "internal error in orcd; see its log".to_owned(),
            other => other.to_string(),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.public_message(),
            error_type: self.status_and_kind().1,
        }
    }

    /// The `error` event that ends a task stream with this error.
    pub fn to_stream_event(&self) -> StreamEvent {
        let body = self.body();
        StreamEvent::Error {
            message: body.error,
            error_type: body.error_type,
        }
    }

    /// Logs server-side failures; user-input errors are the client's business, not ours.
    /// Messages can quote the request, so they are escaped first.
    pub fn log(&self) {
        let message = self.to_string();
        let message = log_safe(&message);
        match self.status_and_kind().1 {
            ErrorKind::Internal => tracing::error!("{message}"),
            ErrorKind::Worker => tracing::warn!("{message}"),
            ErrorKind::Validation
            | ErrorKind::ContextLength
            | ErrorKind::NoWorker
            | ErrorKind::QueueFull
            | ErrorKind::NotFound
            | ErrorKind::Unauthorized
            | ErrorKind::ShuttingDown => tracing::debug!("{message}"),
        }
    }
}

impl IntoResponse for OrcdError {
    fn into_response(self) -> Response {
        self.log();
        let (status, _) = self.status_and_kind();
        let mut response = (status, Json(self.body())).into_response();
        self.add_headers(&mut response);
        response
    }
}

impl OrcdError {
    /// The headers some errors call for, whatever shape their body has (orcd's or OpenAI's).
    pub fn add_headers(&self, response: &mut Response) {
        match self {
            OrcdError::QueueFull {
                retry_after_secs, ..
            }
            | OrcdError::KeyLimit {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            OrcdError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_full_answers_429_with_retry_after() {
        let response = OrcdError::QueueFull {
            model: "m".into(),
            limit: 2,
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn a_key_over_its_limit_answers_429_naming_the_limit_with_retry_after() {
        let error = OrcdError::KeyLimit {
            key: "alice".into(),
            limit: "requests per minute",
            value: 60,
            retry_after_secs: 12,
        };
        assert_eq!(
            error.to_string(),
            "key `alice` is at its limit of 60 requests per minute; retry in 12 s"
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "12");
    }

    #[test]
    fn no_worker_names_the_model_and_the_spawn_command() {
        let error = OrcdError::NoWorker {
            model: "gemma3-270m".into(),
        };
        assert_eq!(
            error.to_string(),
            "no live worker serves model `gemma3-270m`; start one with \
             `cargo xtask pool worker spawn cpu --model gemma3-270m`"
        );
        assert_eq!(
            error.status_and_kind(),
            (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::NoWorker)
        );
    }

    #[test]
    fn internal_details_do_not_reach_the_client() {
        let event = OrcdError::Internal("actor panicked at core.rs:10".into()).to_stream_event();
        let StreamEvent::Error {
            message,
            error_type,
        } = event
        else {
            panic!("expected an error event, got {event:?}");
        };
        assert_eq!(error_type, ErrorKind::Internal);
        assert!(!message.contains("core.rs"), "leaked: {message}");
    }
}
