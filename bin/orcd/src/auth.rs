//! Bearer-token authentication. Three kinds of token, each read from its own file: client API
//! tokens (`/v1`, `/v2`, `GET /workers`, `/metrics`), operator tokens (everything a client may
//! do, on every client's jobs) and worker tokens (registration, heartbeats, deregistration, and
//! what orcd presents to workers on `/execute`). `/health` and the web console's static files (`GET /`, `GET /console/*`) stay open. A job belongs to the
//! token that submitted it: other client tokens neither see nor cancel it ([`JobScope`]). Tokens are kept as SHA-256 digests and compared in constant time; logs and the audit
//! log only ever show a short fingerprint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context};
use axum::http::{header, HeaderMap, Method};
pub use llorch_api::secret::fingerprint;
use llorch_api::secret::{bearer_token, read_token_file, TokenSet};

use crate::error::OrcdError;
use crate::keys::{parse_key_line, KeyPolicy};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    Client,
    Worker,
}

/// Which routes need which token. Everything not named here is a client route, so a route
/// added later is protected by default.
pub fn required_access(method: &Method, path: &str) -> Access {
    if path == "/health" || (method == Method::GET && is_console_path(path)) {
        Access::Open
    } else if path == "/workers/register"
        || (path.starts_with("/workers/") && method != Method::GET && !is_forget(path))
        || path.starts_with("/pools/")
    {
        Access::Worker
    } else {
        Access::Client
    }
}

/// The paths of the web console's static files, which need no token: they hold no data.
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// `POST /workers/{id}/forget` is the operator's (a client token), not a worker's.
fn is_forget(path: &str) -> bool {
    path.strip_prefix("/workers/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, tail)| tail == "forget")
}

/// Who presented a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Client,
    /// An operator: a client that sees and cancels every job.
    Operator,
    Worker,
    Unknown,
}

/// Which jobs a client request may see and cancel; handed to handlers as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobScope {
    /// An operator token, or authentication off (whoever reaches orcd may do anything).
    All,
    /// The jobs submitted with the token of this fingerprint.
    Owner(String),
}

impl JobScope {
    /// Whether a job submitted by `owner` (its token's fingerprint) is visible in this scope.
    pub fn allows(&self, owner: Option<&str>) -> bool {
        match self {
            JobScope::All => true,
            JobScope::Owner(fingerprint) => owner == Some(fingerprint.as_str()),
        }
    }

    /// Load, unload and workers' logs are the operator's: clients would otherwise stop each
    /// other's models and read what the others' prompts left in the logs. `action` names
    /// what was refused.
    pub fn require_operator(&self, action: &str) -> Result<(), OrcdError> {
        match self {
            JobScope::All => Ok(()),
            JobScope::Owner(_) => Err(OrcdError::Forbidden(format!(
                "{action} needs an operator token (`orcd --admin-token-file`)"
            ))),
        }
    }
}

/// The tokens orcd accepts and the one it presents to workers. Empty: authentication is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    client: TokenSet,
    /// Each client key's name, models and limits, by its token's fingerprint.
    policies: BTreeMap<String, KeyPolicy>,
    operator: TokenSet,
    worker: TokenSet,
    /// The first worker token: sent as bearer on `POST {worker}/execute`.
    outbound: Option<OutboundToken>,
}

/// The one secret orcd keeps in clear, because it must send it; `Debug` shows its fingerprint.
#[derive(Clone, PartialEq, Eq)]
struct OutboundToken(String);

impl std::fmt::Debug for OutboundToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fingerprint(&self.0))
    }
}

impl AuthConfig {
    /// Authentication off: every route is open.
    pub fn disabled() -> Self {
        AuthConfig::default()
    }

    /// Tokens given directly (tests, embedding); the files are the normal way in. A client
    /// entry is a line of the client token file: a token, then its settings (`keys.rs`).
    pub fn from_tokens(client: &[&str], worker: &[&str]) -> anyhow::Result<Self> {
        let client: Vec<String> = client.iter().map(|t| (*t).to_owned()).collect();
        let worker: Vec<String> = worker.iter().map(|t| (*t).to_owned()).collect();
        Self::build(client, worker)
    }

    /// Reads both token files. Either both are given or neither: client tokens without a worker
    /// token would let anyone register a worker and receive the clients' prompts.
    pub fn from_files(
        api_token_file: Option<&Path>,
        worker_token_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        match (api_token_file, worker_token_file) {
            (None, None) => Ok(AuthConfig::disabled()),
            (Some(api), Some(worker)) => Self::build(
                read_token_file(api, "API token")?,
                read_token_file(worker, "worker token")?,
            )
            .with_context(|| format!("in the API token file {}", api.display())),
            (Some(_), None) => bail!(
                "`--api-token-file` needs `--worker-token-file` too: without it anyone could register a worker and receive the clients' prompts\nhint: create a second file with `openssl rand -hex 32 > worker.token && chmod 600 worker.token`"
            ),
            (None, Some(_)) => bail!(
                "`--worker-token-file` needs `--api-token-file` too: without it every client route would stay open\nhint: create a client token file with `openssl rand -hex 32 > api.token && chmod 600 api.token`"
            ),
        }
    }

    /// Adds operator tokens, read from `--admin-token-file`; they need the other two kinds,
    /// since without them every client would see every job anyway.
    pub fn with_operator_file(self, admin_token_file: Option<&Path>) -> anyhow::Result<Self> {
        match admin_token_file {
            None => Ok(self),
            Some(_) if !self.is_enabled() => bail!(
                "`--admin-token-file` needs `--api-token-file` and `--worker-token-file`: without client tokens every client already sees every job\nhint: see deploy/README.md for the three token files"
            ),
            Some(path) => self.with_operator_tokens(read_token_file(path, "admin token")?),
        }
    }

    /// Adds operator tokens given directly (tests, embedding).
    pub fn with_operator_tokens(mut self, operator: Vec<String>) -> anyhow::Result<Self> {
        for token in &operator {
            if self.client.contains(token) || self.worker.contains(token) {
                bail!(
                    "token {} is both an admin token and a client or worker token; an admin token must be its own",
                    fingerprint(token)
                );
            }
        }
        self.operator = TokenSet::new(&operator)?;
        Ok(self)
    }

    /// `client` holds lines of the client token file: each a token and its key's settings.
    fn build(client_lines: Vec<String>, worker: Vec<String>) -> anyhow::Result<Self> {
        let mut client = Vec::with_capacity(client_lines.len());
        let mut policies = BTreeMap::new();
        for line in &client_lines {
            let (token, policy) = parse_key_line(line)?;
            if policies
                .values()
                .any(|known: &KeyPolicy| known.name == policy.name)
            {
                bail!(
                    "two client keys are named `{}`; each name must be its own",
                    policy.name
                );
            }
            policies.insert(fingerprint(&token), policy);
            client.push(token);
        }
        if let Some(shared) = client.iter().find(|token| worker.contains(token)) {
            bail!(
                "token {} is both a client token and a worker token; the two kinds must differ so a client cannot act as a worker",
                fingerprint(shared)
            );
        }
        Ok(AuthConfig {
            client: TokenSet::new(&client)?,
            policies,
            operator: TokenSet::default(),
            outbound: worker.first().cloned().map(OutboundToken),
            worker: TokenSet::new(&worker)?,
        })
    }

    pub fn is_enabled(&self) -> bool {
        !self.client.is_empty() || !self.worker.is_empty()
    }

    /// The name, models and limits of the client key whose token has `fingerprint`; `None`
    /// for an operator token, or without authentication.
    pub fn key_policy(&self, fingerprint: Option<&str>) -> Option<&KeyPolicy> {
        self.policies.get(fingerprint?)
    }

    /// The token orcd presents to workers, if any.
    pub fn outbound_token(&self) -> Option<&str> {
        self.outbound.as_ref().map(|token| token.0.as_str())
    }

    /// Fingerprints of the accepted tokens, for the startup log.
    pub fn fingerprints(&self) -> (Vec<&str>, Vec<&str>) {
        (self.client.fingerprints(), self.worker.fingerprints())
    }

    /// Which kind of token `presented` is. Every set is searched whatever the first says, so
    /// timing says nothing about the kind either.
    pub fn identify(&self, presented: &str) -> Caller {
        let is_client = self.client.contains(presented);
        let is_operator = self.operator.contains(presented);
        let is_worker = self.worker.contains(presented);
        match (is_client, is_operator, is_worker) {
            (true, _, _) => Caller::Client,
            (false, true, _) => Caller::Operator,
            (false, false, true) => Caller::Worker,
            (false, false, false) => Caller::Unknown,
        }
    }

    /// The jobs a request that passed [`AuthConfig::check`] for a client route may act on.
    pub fn job_scope(&self, headers: &HeaderMap) -> JobScope {
        if !self.is_enabled() {
            return JobScope::All;
        }
        let presented = presented_token(headers).unwrap_or_default();
        match self.identify(presented) {
            Caller::Operator => JobScope::All,
            _ => JobScope::Owner(fingerprint(presented)),
        }
    }

    /// Decides a request: `Ok` with the token's fingerprint (if one was needed), or the error
    /// to answer with and the fingerprint of whatever was presented.
    pub fn check(
        &self,
        access: Access,
        headers: &HeaderMap,
    ) -> Result<Option<String>, (OrcdError, Option<String>)> {
        if !self.is_enabled() || access == Access::Open {
            return Ok(None);
        }
        let Some(presented) = presented_token(headers) else {
            return Err((
                OrcdError::Unauthorized(
                    "missing `Authorization: Bearer <token>` (or `x-api-key: <token>`) header; this orcd requires a token"
                        .to_owned(),
                ),
                None,
            ));
        };
        let presented_fingerprint = fingerprint(presented);
        match (self.identify(presented), access) {
            (Caller::Client | Caller::Operator, Access::Client)
            | (Caller::Worker, Access::Worker) => Ok(Some(presented_fingerprint)),
            (Caller::Unknown, _) => Err((
                OrcdError::Unauthorized(format!(
                    "the bearer token ({presented_fingerprint}) is not valid for this orcd"
                )),
                Some(presented_fingerprint),
            )),
            (Caller::Worker, _) => Err((
                OrcdError::Forbidden(
                    "this endpoint needs a client API token; a worker token was presented"
                        .to_owned(),
                ),
                Some(presented_fingerprint),
            )),
            (Caller::Client | Caller::Operator, _) => Err((
                OrcdError::Forbidden(
                    "this endpoint is for workers and needs the worker token; a client API token was presented"
                        .to_owned(),
                ),
                Some(presented_fingerprint),
            )),
        }
    }
}

/// The token a request presents: `Authorization: Bearer <token>`, or Anthropic's
/// `x-api-key: <token>` (what Claude Code and Anthropic's SDKs send), the bearer first.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token);
    bearer.or_else(|| {
        headers
            .get(X_API_KEY)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|token| !token.is_empty())
    })
}

/// Anthropic's token header.
const X_API_KEY: &str = "x-api-key";

/// Without tokens orcd serves anyone who can reach it, so it listens on loopback only unless
/// told `--insecure-no-auth`.
pub fn check_exposure(
    listen: SocketAddr,
    auth: &AuthConfig,
    insecure_no_auth: bool,
) -> anyhow::Result<()> {
    if auth.is_enabled() || listen.ip().is_loopback() {
        return Ok(());
    }
    if insecure_no_auth {
        tracing::warn!(%listen, "listening without authentication (--insecure-no-auth): anyone who can reach this address can run jobs and register workers");
        return Ok(());
    }
    bail!(
        "refusing to listen on {listen} without authentication: anyone who can reach it could run jobs and register workers\nhint: give `--api-token-file` and `--worker-token-file` (see deploy/README.md), listen on 127.0.0.1, or add `--insecure-no-auth` on a network you trust"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const CLIENT: &str = "client-token-0123456789";
    const WORKER: &str = "worker-token-0123456789";

    fn config() -> AuthConfig {
        AuthConfig::from_tokens(&[CLIENT, "second-client-token-xyz"], &[WORKER]).unwrap()
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn routes_need_the_right_kind_of_token() {
        assert_eq!(required_access(&Method::GET, "/health"), Access::Open);
        assert_eq!(
            required_access(&Method::POST, "/workers/register"),
            Access::Worker
        );
        assert_eq!(
            required_access(&Method::POST, "/workers/w1/heartbeat"),
            Access::Worker
        );
        assert_eq!(
            required_access(&Method::DELETE, "/workers/w1"),
            Access::Worker
        );
        assert_eq!(required_access(&Method::GET, "/workers"), Access::Client);
        assert_eq!(
            required_access(&Method::POST, "/workers/w1/forget"),
            Access::Client
        );
        assert_eq!(
            required_access(&Method::DELETE, "/workers/forget"),
            Access::Worker
        );
        assert_eq!(required_access(&Method::GET, "/"), Access::Open);
        assert_eq!(
            required_access(&Method::GET, "/console/app.js"),
            Access::Open
        );
        assert_eq!(required_access(&Method::POST, "/"), Access::Client);
        assert_eq!(required_access(&Method::GET, "/v2/events"), Access::Client);
        for path in [
            "/v2/tasks",
            "/v1/chat/completions",
            "/metrics",
            "/anything-new",
        ] {
            assert_eq!(
                required_access(&Method::POST, path),
                Access::Client,
                "{path}"
            );
        }
    }

    #[test]
    fn anthropics_x_api_key_is_a_token_like_a_bearer() {
        let auth = config();
        let mut with_key = HeaderMap::new();
        with_key.insert(X_API_KEY, HeaderValue::from_static(CLIENT));
        assert_eq!(
            auth.check(Access::Client, &with_key).unwrap(),
            Some(fingerprint(CLIENT))
        );
        assert_eq!(
            auth.job_scope(&with_key),
            JobScope::Owner(fingerprint(CLIENT))
        );
        let mut unknown = HeaderMap::new();
        unknown.insert(X_API_KEY, HeaderValue::from_static("nope-nope-nope-nope"));
        assert!(auth.check(Access::Client, &unknown).is_err());
        let mut blank = HeaderMap::new();
        blank.insert(X_API_KEY, HeaderValue::from_static(" "));
        assert_eq!(presented_token(&blank), None);
    }

    #[test]
    fn tokens_are_told_apart_by_kind() {
        let auth = config();
        assert_eq!(auth.identify(CLIENT), Caller::Client);
        assert_eq!(auth.identify("second-client-token-xyz"), Caller::Client);
        assert_eq!(auth.identify(WORKER), Caller::Worker);
        assert_eq!(auth.identify("client-token-012345678"), Caller::Unknown);
        assert_eq!(auth.outbound_token(), Some(WORKER));
    }

    #[test]
    fn check_answers_401_for_missing_or_unknown_and_403_for_the_wrong_kind() {
        let auth = config();
        let status = |access: Access, authorization: Option<&str>| match auth
            .check(access, &headers(authorization))
        {
            Ok(_) => 200,
            Err((error, _)) => error.status_and_kind().0.as_u16(),
        };
        assert_eq!(status(Access::Client, None), 401);
        assert_eq!(
            status(Access::Client, Some("Bearer nope-nope-nope-nope")),
            401
        );
        assert_eq!(status(Access::Client, Some("Basic Y2xpZW50")), 401);
        assert_eq!(
            status(Access::Client, Some(&format!("Bearer {WORKER}"))),
            403
        );
        assert_eq!(
            status(Access::Worker, Some(&format!("Bearer {CLIENT}"))),
            403
        );
        assert_eq!(
            status(Access::Client, Some(&format!("bearer {CLIENT}"))),
            200
        );
        assert_eq!(
            status(Access::Worker, Some(&format!("Bearer {WORKER}"))),
            200
        );
        assert_eq!(status(Access::Open, None), 200);
        assert_eq!(
            auth.check(Access::Client, &headers(Some(&format!("Bearer {CLIENT}")))),
            Ok(Some(fingerprint(CLIENT)))
        );
        // Without tokens everything is open.
        assert_eq!(
            AuthConfig::disabled().check(Access::Worker, &headers(None)),
            Ok(None)
        );
    }

    const OPERATOR: &str = "operator-token-0123456789";

    #[test]
    fn operator_tokens_act_on_every_job_and_only_on_client_routes() {
        let auth = config()
            .with_operator_tokens(vec![OPERATOR.into()])
            .unwrap();
        assert_eq!(auth.identify(OPERATOR), Caller::Operator);
        let bearer = |token: &str| headers(Some(&format!("Bearer {token}")));
        assert_eq!(
            auth.check(Access::Client, &bearer(OPERATOR)),
            Ok(Some(fingerprint(OPERATOR)))
        );
        let (refused, _) = auth.check(Access::Worker, &bearer(OPERATOR)).unwrap_err();
        assert_eq!(refused.status_and_kind().0.as_u16(), 403);
        assert_eq!(auth.job_scope(&bearer(OPERATOR)), JobScope::All);
        let own = auth.job_scope(&bearer(CLIENT));
        assert_eq!(own, JobScope::Owner(fingerprint(CLIENT)));
        assert!(own.allows(Some(&fingerprint(CLIENT))));
        assert!(!own.allows(Some(&fingerprint("second-client-token-xyz"))));
        assert!(!own.allows(None));
        assert_eq!(
            AuthConfig::disabled().job_scope(&headers(None)),
            JobScope::All
        );
        let shared = config()
            .with_operator_tokens(vec![CLIENT.into()])
            .unwrap_err();
        assert!(shared.to_string().contains("admin token"), "{shared}");
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin");
        std::fs::write(&admin, OPERATOR).unwrap();
        let alone = AuthConfig::disabled()
            .with_operator_file(Some(&admin))
            .unwrap_err();
        assert!(alone.to_string().contains("--api-token-file"), "{alone}");
    }

    #[test]
    fn debug_output_shows_fingerprints_not_tokens() {
        let shown = format!("{:?}", config());
        assert!(
            !shown.contains(CLIENT) && !shown.contains(WORKER),
            "{shown}"
        );
        assert!(shown.contains(&fingerprint(CLIENT)), "{shown}");
        assert_eq!(fingerprint(CLIENT).len(), "sha256:".len() + 12);
    }

    #[test]
    fn weak_shared_or_one_sided_tokens_are_refused() {
        assert!(AuthConfig::from_tokens(&["short"], &[WORKER]).is_err());
        let shared = AuthConfig::from_tokens(&[CLIENT], &[CLIENT]).unwrap_err();
        assert!(
            shared
                .to_string()
                .contains("both a client token and a worker token"),
            "{shared}"
        );
        let dir = tempfile::tempdir().unwrap();
        let api = dir.path().join("api");
        std::fs::write(&api, CLIENT).unwrap();
        let one_sided = AuthConfig::from_files(Some(&api), None).unwrap_err();
        assert!(
            one_sided.to_string().contains("--worker-token-file"),
            "{one_sided}"
        );
    }

    #[test]
    fn without_tokens_only_loopback_is_allowed_unless_insecure() {
        let open = AuthConfig::disabled();
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_exposure(loopback, &open, false).is_ok());
        assert!(check_exposure("[::1]:8080".parse().unwrap(), &open, false).is_ok());
        let refused = check_exposure(any, &open, false).unwrap_err().to_string();
        assert!(refused.contains("--insecure-no-auth"), "{refused}");
        assert!(check_exposure(any, &open, true).is_ok());
        assert!(check_exposure(any, &config(), false).is_ok());
    }
}
