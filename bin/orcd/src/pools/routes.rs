//! The HTTP routes of the pool managers (`/pools/...`, worker token) and of the operators who
//! look at them (`GET /v2/hosts`, client token).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use llorch_api::audit::Actor;
use llorch_api::pool::{HostFacts, HostInfo, PoolAccepted, PoolRegistration};

use crate::auth::JobScope;
use crate::error::OrcdError;
use crate::extract::{JsonBody, PathParam};
use crate::state::AppState;
use crate::validation::{check_advertised_url, validate_worker_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/pools/register", post(register_pool))
        .route("/pools/{host_id}", delete(deregister_pool))
        .route("/pools/{host_id}/heartbeat", post(pool_heartbeat))
        .route("/v2/hosts", get(list_hosts))
        .route("/v2/models/{model}/load", post(load_model))
        .route("/v2/models/{model}/unload", post(unload_model))
        .merge(super::worker_log::routes())
        .merge(super::downloads::routes())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HostQuery {
    host: Option<String>,
}

/// What `POST /v2/models/{model}/load|unload` answers.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ModelAction {
    pub model: String,
    /// `loaded`, or `unloading` with the workers asked to stop.
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
}

/// The checks both operator actions make; returns the host asked for, if any.
fn operator_action(
    scope: &JobScope,
    model: &str,
    query: Result<Query<HostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Option<String>, OrcdError> {
    scope.require_operator("loading and unloading models")?;
    llorch_api::validation::validate_model_id("model", model)?;
    let Query(query) = query.map_err(|rejection| {
        OrcdError::InvalidPath(format!(
            "{}: the only parameter is `host`",
            rejection.body_text()
        ))
    })?;
    if let Some(host) = &query.host {
        validate_host_id(host)?;
    }
    Ok(query.host)
}

async fn load_model(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
    PathParam(model): PathParam,
    query: Result<Query<HostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ModelAction>, OrcdError> {
    let host = operator_action(&scope, &model, query)?;
    let live = state
        .scheduler()
        .models()
        .await?
        .iter()
        .any(|summary| summary.model == model && summary.live_workers > 0);
    if !live || host.is_some() {
        crate::pools::ensure_loaded_on(&state, &model, host.as_deref()).await?;
    }
    Ok(Json(ModelAction {
        model,
        status: "loaded".into(),
        workers: Vec::new(),
    }))
}

async fn unload_model(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
    PathParam(model): PathParam,
    query: Result<Query<HostQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ModelAction>, OrcdError> {
    let host = operator_action(&scope, &model, query)?;
    let workers = crate::pools::unload_model(&state, &model, host.as_deref()).await;
    if workers.is_empty() {
        return Err(OrcdError::NothingToUnload(model));
    }
    Ok(Json(ModelAction {
        model,
        status: "unloading".into(),
        workers,
    }))
}

/// Host ids appear in paths, as worker ids do, and follow their rule.
fn validate_host_id(host_id: &str) -> Result<(), OrcdError> {
    validate_worker_id(host_id).map_err(|error| {
        OrcdError::MalformedBody(error.to_string().replace("worker_id", "host_id"))
    })
}

async fn register_pool(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(registration): JsonBody<PoolRegistration>,
) -> Result<Json<PoolAccepted>, OrcdError> {
    validate_host_id(&registration.host_id)?;
    let peer = actor
        .peer
        .as_deref()
        .and_then(|peer| peer.parse::<SocketAddr>().ok());
    check_advertised_url(&registration.url, peer.map(|peer| peer.ip()))?;
    let host_id = registration.host_id.clone();
    tracing::info!(%host_id, url = %registration.url, "pool manager registered");
    state.pools().hosts().register(registration, Instant::now());
    Ok(Json(PoolAccepted {
        host_id,
        heartbeat_interval_ms: state.heartbeat_interval().as_millis() as u64,
    }))
}

async fn pool_heartbeat(
    State(state): State<AppState>,
    PathParam(host_id): PathParam,
    JsonBody(facts): JsonBody<HostFacts>,
) -> Result<StatusCode, OrcdError> {
    validate_host_id(&host_id)?;
    match state
        .pools()
        .hosts()
        .heartbeat(&host_id, facts, Instant::now())
    {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(OrcdError::HostNotFound(host_id)),
    }
}

async fn deregister_pool(
    State(state): State<AppState>,
    PathParam(host_id): PathParam,
) -> Result<StatusCode, OrcdError> {
    validate_host_id(&host_id)?;
    match state.pools().hosts().remove(&host_id) {
        true => {
            tracing::info!(%host_id, "pool manager deregistered");
            Ok(StatusCode::NO_CONTENT)
        }
        false => Err(OrcdError::HostNotFound(host_id)),
    }
}

async fn list_hosts(State(state): State<AppState>) -> Json<Vec<HostInfo>> {
    Json(state.pools().hosts().infos(Instant::now()))
}
