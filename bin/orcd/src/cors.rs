//! Cross-origin access for browser clients: with `--cors-origin ORIGIN` (repeatable) orcd
//! answers preflight requests and sets the CORS headers for exactly those origins; without it
//! (the default) browsers on other origins cannot read orcd's answers at all.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::sse::JOB_ID_HEADER;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Checks one `--cors-origin` value: `scheme://host[:port]`, nothing after it, as browsers send
/// it in the `Origin` header (compared byte for byte).
pub fn parse_origin(origin: &str) -> anyhow::Result<HeaderValue> {
    let invalid = || {
        anyhow::anyhow!(
            "`--cors-origin` `{origin}` is not an origin\n\
             hint: give scheme, host and optional port only, e.g. `--cors-origin https://chat.example.com`"
        )
    };
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    let plain_host = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if !matches!(scheme, "http" | "https") || !plain_host {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

/// The layer for the configured origins; `None` when there are none.
pub fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            // What the OpenAI clients send, plus the SDKs' own headers.
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("openai-organization"),
                HeaderName::from_static("openai-project"),
                HeaderName::from_static("x-stainless-arch"),
                HeaderName::from_static("x-stainless-lang"),
                HeaderName::from_static("x-stainless-os"),
                HeaderName::from_static("x-stainless-package-version"),
                HeaderName::from_static("x-stainless-retry-count"),
                HeaderName::from_static("x-stainless-runtime"),
                HeaderName::from_static("x-stainless-runtime-version"),
                HeaderName::from_static("x-stainless-timeout"),
                // Anthropic's SDK in a browser: its token and version headers.
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("anthropic-version"),
                HeaderName::from_static("anthropic-beta"),
                HeaderName::from_static("anthropic-dangerous-direct-browser-access"),
            ])
            .expose_headers([JOB_ID_HEADER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert!(parse_origin("https://chat.example.com").is_ok());
        assert!(parse_origin("http://127.0.0.1:3000").is_ok());
        for bad in [
            "chat.example.com",
            "https://chat.example.com/",
            "https://x/path",
            "ftp://x",
            "*",
            "https://",
        ] {
            let error = parse_origin(bad).unwrap_err().to_string();
            assert!(error.contains("hint:"), "{bad}: {error}");
        }
        assert!(layer(&[]).is_none());
    }
}
