//! Reading requests with orcd's limits and error vocabulary: for JSON bodies the content type,
//! the size (`DefaultBodyLimit`, answered 413 naming the limit) and the nesting depth are
//! checked before serde sees a byte; path parameters that do not decode are a 400 like any
//! other.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::OrcdError;
use crate::state::AppState;
use crate::validation::{check_json_depth, ValidationError, MAX_JSON_DEPTH};

/// Longest parser message passed back to a client: serde quotes the offending value, which a
/// hostile client controls.
const MAX_PARSE_ERROR_CHARS: usize = 300;

/// A JSON body of type `T` whose errors name the field they are about (`input[2].call_id`),
/// as the OpenAI and Anthropic error shapes want: the same checks as [`JsonBody`], then serde
/// with the path of the value it failed on.
#[derive(Debug)]
pub struct JsonFields<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonFields<T> {
    type Rejection = OrcdError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, OrcdError> {
        let JsonBody(value) = JsonBody::<serde_json::Value>::from_request(request, state).await?;
        from_value_naming_field(value).map(JsonFields)
    }
}

/// Reads `T` from a parsed body; an error names the field by its path (`.` the body itself).
pub fn from_value_naming_field<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, OrcdError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let mut problem = error.into_inner().to_string();
        // A missing field is reported on the object that lacks it; name the field itself.
        let missing = (problem.strip_prefix("missing field `"))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name,
            (".", None) => "body".to_owned(),
            (path, Some(name)) => format!("{path}.{name}"),
            (path, None) => path.to_owned(),
        };
        if let Some((cut, _)) = problem.char_indices().nth(MAX_PARSE_ERROR_CHARS) {
            problem.truncate(cut);
            problem.push_str("...");
        }
        OrcdError::Validation(ValidationError::Field { field, problem })
    })
}

/// A JSON body of type `T`, or an [`OrcdError`] that names what is wrong with it.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = OrcdError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, OrcdError> {
        // Not optional: a cross-site form can POST `text/plain` to a loopback orcd without
        // the browser asking first, but not `application/json`.
        if !is_json(request.headers()) {
            return Err(OrcdError::UnsupportedMediaType);
        }
        let limit = state.limits().max_body_bytes();
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => OrcdError::BodyTooLarge { limit },
                    _ => OrcdError::MalformedBody(rejection.body_text()),
                })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// One path parameter; a segment that is not valid percent-encoded UTF-8 is a 400 with orcd's
/// error body, not axum's plain-text rejection.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = OrcdError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, OrcdError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(rejection) => Err(OrcdError::InvalidPath(rejection.body_text())),
        }
    }
}

/// Parses a body after checking its depth; serde's message (which names the field) is kept.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, OrcdError> {
    check_json_depth(bytes, MAX_JSON_DEPTH)?;
    serde_json::from_slice(bytes).map_err(|error| {
        let mut message = error.to_string();
        if let Some((cut, _)) = message.char_indices().nth(MAX_PARSE_ERROR_CHARS) {
            message.truncate(cut);
            message.push_str("...");
        }
        OrcdError::MalformedBody(message)
    })
}

/// The shared rule ([`llorch_api::validation::is_json_content_type`]), the worker's too.
fn is_json(headers: &HeaderMap) -> bool {
    llorch_api::validation::is_json_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use llorch_api::TaskRequest;

    #[test]
    fn json_content_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/vnd.api+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn parse_errors_name_the_problem_and_stay_short() {
        let missing = parse_json::<TaskRequest>(br#"{"prompt": "x"}"#).unwrap_err();
        assert!(
            missing.to_string().contains("missing field `model`"),
            "{missing}"
        );
        let huge = format!(
            r#"{{"model": "m", "prompt": "x", "stream": "{}"}}"#,
            "y".repeat(10_000)
        );
        let message = parse_json::<TaskRequest>(huge.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(message.len() < 400, "{} bytes", message.len());
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            parse_json::<TaskRequest>(deep.as_bytes()),
            Err(OrcdError::Validation(
                crate::validation::ValidationError::Request(
                    crate::validation::RequestError::JsonTooDeep { .. }
                )
            ))
        ));
        assert!(matches!(
            parse_json::<TaskRequest>(b"{\"model\": \"\xff\xfe\", \"prompt\": \"x\"}"),
            Err(OrcdError::MalformedBody(_))
        ));
    }
}
