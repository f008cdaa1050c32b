//! The worker's shared state, below every handler: the engine's handle, the token settings,
//! registration progress and the embedding thread. Handlers that need one part take just that
//! part (`State<Embeddings>`), through the [`FromRef`] impls here.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::{
    auth::WorkerAuth, embeddings::Embeddings, engine::EngineHandle,
    registration::RegistrationReport,
};

#[derive(Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    pub auth: Arc<WorkerAuth>,
    /// How registering with orcd goes, for `/health`.
    pub registration: RegistrationReport,
    /// `POST /embed`; disabled without `--embeddings`.
    pub embeddings: Embeddings,
}

impl FromRef<AppState> for Arc<WorkerAuth> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.auth)
    }
}

impl FromRef<AppState> for Embeddings {
    fn from_ref(state: &AppState) -> Self {
        state.embeddings.clone()
    }
}

impl FromRef<AppState> for EngineHandle {
    fn from_ref(state: &AppState) -> Self {
        state.engine.clone()
    }
}
