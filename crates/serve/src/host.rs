//! The `Host` rule against DNS rebinding, for a daemon running without tokens.
//!
//! A web page the operator visits can point its own domain at 127.0.0.1 (rebinding its DNS
//! record), and the browser then lets the page's scripts talk to the daemon on loopback as if it
//! were the page's own server: run jobs, register a worker. Such requests carry the page's
//! domain in `Host`. Without tokens a daemon therefore answers only requests whose `Host` is
//! - `localhost` (browsers never resolve it through DNS),
//! - an IP address (IPv4, or IPv6 in brackets): an address is not a DNS name, so it cannot be
//!   rebound, and a page served from another origin cannot read what the daemon answers there,
//! - or a name given with `--allowed-host` (`LLORCH_ALLOWED_HOSTS`, comma-separated),
//!
//! with or without a port. Others get 421 Misdirected Request naming the flag. A request without
//! `Host` (HTTP/1.0; no browser sends one) passes. With tokens the rule is off: a rebinding page
//! has no token.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use llorch_api::{ErrorBody, ErrorKind};

/// Longest `Host` value quoted back in a refusal.
const QUOTED_HOST_LIMIT: usize = 100;

/// The flag both daemons share (`#[command(flatten)]` it).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HostArgs {
    /// A host name clients reach this daemon by when it runs without tokens (repeatable, e.g.
    /// `orcd.lan`); loopback names and IP addresses are always accepted, any other `Host` gets
    /// 421 (a web page rebinding its domain to this address)
    #[arg(
        long = "allowed-host",
        env = "LLORCH_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub allowed_hosts: Vec<String>,
}

impl HostArgs {
    pub fn allowed(&self) -> Result<AllowedHosts, String> {
        AllowedHosts::new(&self.allowed_hosts)
    }
}

/// The host names accepted besides loopback names and IP addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// Lowercase, without a port.
    names: Vec<String>,
}

impl AllowedHosts {
    /// Checks each name: letters, digits, `-` and `.`, as a DNS name is written.
    pub fn new(names: &[String]) -> Result<AllowedHosts, String> {
        let names = names
            .iter()
            .map(|name| {
                let valid = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                if valid {
                    Ok(name.to_ascii_lowercase())
                } else {
                    Err(format!(
                        "`--allowed-host {name:?}` is not a host name: give a name such as \
                         `orcd.lan`, without scheme or port"
                    ))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowedHosts { names })
    }

    /// Whether a request with this `Host` value (`None`: without one) may be answered.
    pub fn permits(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true;
        };
        match split_port(host) {
            Some(Hostname::Address) => true,
            Some(Hostname::Name(name)) => {
                let name = name.to_ascii_lowercase();
                name == "localhost" || self.names.contains(&name)
            }
            None => false,
        }
    }

    /// `router` with every request checked against this rule first.
    pub fn guard(self, router: Router) -> Router {
        router.layer(middleware::from_fn(move |request: Request, next: Next| {
            let allowed = self.clone();
            async move { allowed.check(request, next).await }
        }))
    }

    async fn check(&self, request: Request, next: Next) -> Response {
        let host = match request.headers().get(header::HOST) {
            None => None,
            Some(value) => match value.to_str() {
                Ok(host) => Some(host),
                Err(_) => return refusal("(not text)"),
            },
        };
        // An absolute URI (`GET http://name/ HTTP/1.1`) names its host too.
        let authority = request
            .uri()
            .authority()
            .map(|authority| authority.as_str());
        for host in [host, authority].into_iter().flatten() {
            if !self.permits(Some(host)) {
                return refusal(host);
            }
        }
        next.run(request).await
    }
}

enum Hostname<'a> {
    Address,
    Name(&'a str),
}

/// The host part of a `Host` value, or `None` when it is malformed.
fn split_port(host: &str) -> Option<Hostname<'_>> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        return valid_port(after.strip_prefix(':'), after.is_empty()).then_some(Hostname::Address);
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if !valid_port(port, port.is_none()) || name.is_empty() {
        return None;
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some(Hostname::Address);
    }
    Some(Hostname::Name(name))
}

/// `:PORT` present and numeric, or absent where nothing follows.
fn valid_port(port: Option<&str>, absent_ok: bool) -> bool {
    match port {
        Some(port) => port.parse::<u16>().is_ok(),
        None => absent_ok,
    }
}

fn refusal(host: &str) -> Response {
    let quoted: String = host.chars().take(QUOTED_HOST_LIMIT).collect();
    let body = ErrorBody {
        error: format!(
            "this server does not answer for `Host: {quoted:?}`: without tokens it answers only \
             localhost and IP addresses, so that a web page cannot reach it by rebinding its \
             own domain to this address\nhint: if clients reach it by this name, start it with \
             `--allowed-host NAME` (or LLORCH_ALLOWED_HOSTS), or give it tokens"
        ),
        error_type: ErrorKind::Validation,
    };
    (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn allowed() -> AllowedHosts {
        AllowedHosts::new(&["orcd.lan".into(), "GPU-Box".into()]).unwrap()
    }

    #[test]
    fn loopback_names_addresses_and_allowed_names_pass() {
        let allowed = allowed();
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.0.0.5:1",
            "[::1]",
            "[::1]:8080",
            "10.1.2.3:9000",
            "orcd.lan",
            "orcd.lan:8080",
            "gpu-box:80",
        ] {
            assert!(allowed.permits(Some(host)), "{host}");
        }
        assert!(allowed.permits(None));
    }

    #[test]
    fn other_names_and_malformed_values_are_refused() {
        let allowed = allowed();
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "localhost.",
            "orcd.lan.evil.example",
            "127.0.0.1.nip.io",
            "::1",
            "[::1",
            "[::1]x",
            "[evil]:80",
            "localhost:",
            "localhost:99999",
            ":8080",
            "",
        ] {
            assert!(!allowed.permits(Some(host)), "{host}");
        }
        assert!(!AllowedHosts::default().permits(Some("orcd.lan")));
    }

    #[test]
    fn allowed_names_are_checked() {
        assert!(AllowedHosts::new(&["http://x".into()]).is_err());
        assert!(AllowedHosts::new(&["x:80".into()]).is_err());
        assert!(AllowedHosts::new(&["".into()]).is_err());
    }

    #[tokio::test]
    async fn a_refused_host_gets_421_naming_the_flag() {
        let router = allowed().guard(Router::new().route("/health", get(|| async { "ok" })));
        let request = |host: &str| {
            Request::builder()
                .uri("/health")
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap()
        };
        let ok = router.clone().oneshot(request("127.0.0.1:8080")).await;
        assert_eq!(ok.unwrap().status(), StatusCode::OK);
        let refused = router.oneshot(request("evil.example:8080")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert!(body.error.contains("--allowed-host"), "{}", body.error);
        assert!(body.error.contains("evil.example"), "{}", body.error);
    }
}
