//! The checks every JSON body gets before it is parsed, on `/execute` and `/embed` alike.

use axum::http::{header, HeaderMap};
use llorch_api::validation::{check_json_depth, is_json_content_type, MAX_JSON_DEPTH};

use crate::{error::WorkerError, validation::ValidationError};

/// The checks every JSON body gets before it is parsed, the same as orcd's: a JSON content
/// type, and nesting no deeper than [`MAX_JSON_DEPTH`].
pub(crate) fn check_json_body(headers: &HeaderMap, body: &[u8]) -> Result<(), WorkerError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    if !is_json_content_type(content_type) {
        return Err(WorkerError::UnsupportedMediaType);
    }
    check_json_depth(body, MAX_JSON_DEPTH).map_err(ValidationError::from)?;
    Ok(())
}
