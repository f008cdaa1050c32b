//! Catalog model downloads on a pool manager's host, asked for by an operator through orcd:
//! `POST /v2/hosts/{host_id}/downloads/{model}` (operator token) asks the host's pool manager to
//! download the model into its model directory, `GET /v2/hosts/{host_id}/downloads` relays its
//! downloads with their progress. orcd holds the worker token the pool managers require, so an
//! operator's `cargo xtask models download ID --host H` needs neither that token nor a route to
//! the host. The pool manager's answer (202 started, 200 already there, 404 unknown id, 400 a
//! model it cannot fetch itself, 409 one running) is relayed with its status.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use llorch_api::pool::{ModelDownload, PoolErrorBody};
use llorch_api::ErrorBody;

use crate::auth::JobScope;
use crate::error::OrcdError;
use crate::extract::PathParam;
use crate::pools::hosts::HostRecord;
use crate::state::AppState;
use crate::validation::validate_worker_id;

/// Starting a download or listing them is quick; a pool manager slower than this is in trouble.
const POOL_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/hosts/{host_id}/downloads", get(list_downloads))
        .route(
            "/v2/hosts/{host_id}/downloads/{model}",
            post(start_download),
        )
}

#[derive(Debug, serde::Deserialize)]
struct DownloadPath {
    host_id: String,
    model: String,
}

fn host(state: &AppState, host_id: &str) -> Result<HostRecord, OrcdError> {
    validate_worker_id(host_id).map_err(|error| {
        OrcdError::MalformedBody(error.to_string().replace("worker_id", "host_id"))
    })?;
    state
        .pools()
        .hosts()
        .get(host_id)
        .ok_or_else(|| OrcdError::HostNotFound(host_id.to_owned()))
}

async fn start_download(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
    axum::extract::Path(path): axum::extract::Path<DownloadPath>,
) -> Result<Response, OrcdError> {
    scope.require_operator("downloading models onto a host")?;
    llorch_api::validation::validate_model_id("model", &path.model)?;
    let host = host(&state, &path.host_id)?;
    tracing::info!(host_id = %host.host_id, model = %path.model, "asking a pool manager to download a model");
    let request = state
        .http()
        .post(format!("{}/models/{}/download", host.url, path.model));
    relay::<ModelDownload>(&host, send(&host, request).await?).await
}

async fn list_downloads(
    State(state): State<AppState>,
    PathParam(host_id): PathParam,
) -> Result<Response, OrcdError> {
    let host = host(&state, &host_id)?;
    let request = state.http().get(format!("{}/downloads", host.url));
    relay::<Vec<ModelDownload>>(&host, send(&host, request).await?).await
}

/// Sends `request` to `host`'s pool manager; no answer is an error naming the host.
async fn send(
    host: &HostRecord,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, OrcdError> {
    request
        .timeout(POOL_DOWNLOAD_TIMEOUT)
        .send()
        .await
        .map_err(|error| OrcdError::PoolManager {
            host_id: host.host_id.clone(),
            message: format!("at {} did not answer: {error}", host.url),
        })
}

/// The pool manager's answer with its status: a `T` when it succeeded, its error (404, 400,
/// 409) in orcd's error shape otherwise, naming the host.
async fn relay<T: serde::de::DeserializeOwned + serde::Serialize>(
    host: &HostRecord,
    response: reqwest::Response,
) -> Result<Response, OrcdError> {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        let answer: T = serde_json::from_str(&body).map_err(|error| OrcdError::PoolManager {
            host_id: host.host_id.clone(),
            message: format!("sent an answer orcd did not understand: {error}"),
        })?;
        return Ok((status, Json(answer)).into_response());
    }
    match serde_json::from_str::<PoolErrorBody>(&body) {
        Ok(error) if status.is_client_error() => Ok((
            status,
            Json(ErrorBody {
                error: format!("host `{}`: {}", host.host_id, error.error),
                error_type: error.error_type,
            }),
        )
            .into_response()),
        Ok(error) => Err(OrcdError::PoolManager {
            host_id: host.host_id.clone(),
            message: format!("refused ({status}): {}", error.error),
        }),
        Err(_) => Err(OrcdError::PoolManager {
            host_id: host.host_id.clone(),
            message: format!("refused ({status}): {body}"),
        }),
    }
}
