//! Building HTTP clients: one proxy rule and one set of timeouts for every request the project
//! makes to its own daemons (orcd, workers, pool managers).
//!
//! The proxy rule: a daemon on this machine's loopback is always reached directly (a proxy
//! cannot reach our loopback, so a proxied request there only fails or, worse, reaches the
//! proxy's own loopback); any other address follows the environment (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `NO_PROXY`), as curl does. Before this module, two of ten clients bypassed
//! proxies and eight did not, so commands behaved differently behind one.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};

/// How long a connection may take to open: a daemon that does not accept in this long is down
/// or unreachable, and the caller's error says so instead of hanging.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `url` names this machine's loopback (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// The bearer header for `token`, marked sensitive so it never shows in debug output.
pub fn bearer_headers(token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
    }
    headers
}

/// An async client for requests to `base_url`: the proxy rule, [`CONNECT_TIMEOUT`], the
/// bearer token when there is one. No overall timeout: streams last as long as a job does;
/// callers set one per request where an answer is expected soon.
pub fn client_for(base_url: &str, token: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .default_headers(bearer_headers(token))
        .connect_timeout(CONNECT_TIMEOUT);
    if is_loopback(base_url) {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .expect("a client with static settings always builds")
}

/// A blocking client for short requests to `base_url` (health probes, status calls): the
/// proxy rule and a whole-request `timeout`. Not for use inside an async runtime.
pub fn blocking_client_for(base_url: &str, timeout: Duration) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout);
    if is_loopback(base_url) {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .expect("a client with static settings always builds")
}

/// `base_url` without its trailing slashes, so paths can be appended.
pub fn trim_base(base_url: &str) -> String {
    base_url.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_addresses_are_recognised() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3/",
            "http://localhost:1",
            "http://LOCALHOST",
            "http://api.localhost:9",
            "http://[::1]:7070/health",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:8080",
            "http://example.internal",
            "http://localhost.example:1",
            "http://[fe80::1]:1",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn the_bearer_header_is_sensitive_and_absent_without_a_token() {
        let headers = bearer_headers(Some("secret"));
        let value = &headers[AUTHORIZATION];
        assert_eq!(value, "Bearer secret");
        assert!(value.is_sensitive());
        assert!(bearer_headers(None).is_empty());
        // A token that cannot be a header value is left out rather than sent mangled.
        assert!(bearer_headers(Some("line\nbreak")).is_empty());
    }

    #[test]
    fn a_base_url_loses_its_trailing_slashes() {
        assert_eq!(trim_base("http://h:1//"), "http://h:1");
    }
}
