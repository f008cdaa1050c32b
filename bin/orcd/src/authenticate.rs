//! The middleware on every route: checks the token the route needs ([`required_access`]),
//! records failures in the audit log and metrics, and hands the caller's [`Actor`] and
//! [`JobScope`](crate::auth::JobScope) to the handler as request extensions.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use llorch_api::audit::{Actor, AuditEvent};

use crate::auth::required_access;
use crate::openai_error::error_response_for_path;
use crate::state::AppState;

/// Middleware on every route: checks the token the route needs, records failures in the audit
/// log, and hands the caller's [`Actor`] to the handler as a request extension.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.to_string());
    let access = required_access(request.method(), request.uri().path());
    match state.auth().check(access, request.headers()) {
        Ok(token) => {
            let scope = state.auth().job_scope(request.headers());
            request.extensions_mut().insert(Actor { token, peer });
            request.extensions_mut().insert(scope);
            next.run(request).await
        }
        Err((error, token)) => {
            state.metrics().auth_failure();
            if let Some(audit) = state.audit() {
                audit.record(
                    Some(Actor { token, peer }),
                    AuditEvent::AuthFailure {
                        method: request.method().to_string(),
                        path: request.uri().path().to_owned(),
                        status: error.status_and_kind().0.as_u16(),
                        reason: error.to_string(),
                    },
                );
            }
            error_response_for_path(request.uri().path(), error)
        }
    }
}
