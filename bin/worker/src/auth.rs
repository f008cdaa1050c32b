//! The worker's side of orcd's worker tokens (`--worker-token-file`, the same file orcd reads):
//! the worker presents the first token to orcd when it registers, heartbeats and deregisters,
//! and `POST /execute` accepts only callers that present one of them. `/health` stays open.
//! Without a token file both directions are unauthenticated.

use std::path::Path;
use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};
use llorch_api::secret::{bearer_token, fingerprint, read_token_file, TokenSet};

use crate::error::WorkerError;

#[derive(Clone, Default)]
pub struct WorkerAuth {
    accepted: TokenSet,
    /// Kept in clear because it must be sent; never logged (only its fingerprint).
    outbound: Option<String>,
}

impl std::fmt::Debug for WorkerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerAuth")
            .field("accepted", &self.accepted)
            .field("outbound", &self.outbound.as_deref().map(fingerprint))
            .finish()
    }
}

impl WorkerAuth {
    /// No tokens: nothing is checked and nothing is presented.
    pub fn disabled() -> WorkerAuth {
        WorkerAuth::default()
    }

    pub fn from_tokens(tokens: Vec<String>) -> anyhow::Result<WorkerAuth> {
        Ok(WorkerAuth {
            accepted: TokenSet::new(&tokens)?,
            outbound: tokens.into_iter().next(),
        })
    }

    pub fn from_file(path: Option<&Path>) -> anyhow::Result<WorkerAuth> {
        match path {
            None => Ok(WorkerAuth::disabled()),
            Some(path) => WorkerAuth::from_tokens(read_token_file(path, "worker token")?),
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.accepted.is_empty()
    }

    /// The bearer token sent to orcd.
    pub fn outbound(&self) -> Option<&str> {
        self.outbound.as_deref()
    }

    /// Checks an `Authorization` header value against the accepted tokens.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), WorkerError> {
        if !self.is_enabled() {
            return Ok(());
        }
        let Some(presented) = authorization.and_then(bearer_token) else {
            return Err(WorkerError::Unauthorized(
                "missing `Authorization: Bearer <token>` header; this worker requires orcd's worker token".into(),
            ));
        };
        if !self.accepted.contains(presented) {
            return Err(WorkerError::Unauthorized(format!(
                "the bearer token ({}) is not a worker token of this worker",
                fingerprint(presented)
            )));
        }
        Ok(())
    }
}

/// Route layer for the routes that need orcd's token.
pub async fn require_worker_token(
    State(auth): State<Arc<WorkerAuth>>,
    request: Request,
    next: Next,
) -> Result<Response, WorkerError> {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    auth.check(authorization)?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "worker-token-0123456789";

    #[test]
    fn disabled_auth_accepts_anything_and_sends_nothing() {
        let auth = WorkerAuth::disabled();
        assert!(auth.check(None).is_ok());
        assert_eq!(auth.outbound(), None);
    }

    #[test]
    fn enabled_auth_needs_one_of_the_tokens() {
        let auth =
            WorkerAuth::from_tokens(vec![TOKEN.into(), "second-token-abcdefgh".into()]).unwrap();
        assert_eq!(auth.outbound(), Some(TOKEN));
        assert!(auth.check(Some(&format!("Bearer {TOKEN}"))).is_ok());
        assert!(auth.check(Some("bearer second-token-abcdefgh")).is_ok());
        for refused in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN)] {
            let error = auth.check(refused).unwrap_err();
            assert!(matches!(error, WorkerError::Unauthorized(_)), "{refused:?}");
            assert!(!error.to_string().contains("wrong-token"), "{error}");
        }
    }

    #[test]
    fn short_tokens_are_refused() {
        assert!(WorkerAuth::from_tokens(vec!["short".into()]).is_err());
    }

    #[test]
    fn debug_output_shows_fingerprints_only() {
        let auth = WorkerAuth::from_tokens(vec![TOKEN.into()]).unwrap();
        let debug = format!("{auth:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("sha256:"), "{debug}");
    }
}
