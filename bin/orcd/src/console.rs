//! The web console at `/`: hand-written HTML, CSS and ES modules compiled into the binary
//! (`bin/orcd/console/`), so it works offline and `cargo build` needs no Node toolchain. The
//! page is open (it holds no data); everything it shows comes from the authenticated API like
//! any client's: `GET /v2/events`, `/v1/chat/completions`, `DELETE /v2/tasks/{id}`.
//!
//! Every asset is sent with a strict Content-Security-Policy: scripts, styles and connections
//! from this origin only, no inline script or style, no frames, no plugins.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::OrcdError;
use crate::extract::PathParam;
use crate::state::AppState;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The console's files: name under `/console/`, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", JAVASCRIPT, include_str!("../console/app.js")),
    ("api.js", JAVASCRIPT, include_str!("../console/api.js")),
    ("fleet.js", JAVASCRIPT, include_str!("../console/fleet.js")),
    ("hosts.js", JAVASCRIPT, include_str!("../console/hosts.js")),
    (
        "throughput.js",
        JAVASCRIPT,
        include_str!("../console/throughput.js"),
    ),
    ("chat.js", JAVASCRIPT, include_str!("../console/chat.js")),
    (
        "markdown.js",
        JAVASCRIPT,
        include_str!("../console/markdown.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../console/icon.svg"),
    ),
];

const INDEX_HTML: &str = include_str!("../console/index.html");
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// `/` and `/console/*`; open routes (see `auth::required_access`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/catalog.json", get(catalog))
        .route("/console/{file}", get(asset))
}

fn page_response(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // A new orcd binary may bring new assets; revalidation is cheap on a LAN.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (StatusCode::OK, headers, body).into_response()
}

async fn index() -> Response {
    page_response("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(PathParam(file): PathParam) -> Result<Response, OrcdError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| page_response(content_type, body))
        .ok_or_else(|| OrcdError::RouteNotFound(format!("GET /console/{file}")))
}

/// Which catalog models have a chat template: the Chat page starts them in chat mode, the
/// others in completion mode.
async fn catalog() -> Response {
    let chat_models: Vec<String> = llorch_catalog::Catalog::builtin()
        .models()
        .iter()
        .filter(|entry| entry.chat_template)
        .map(|entry| entry.id.clone())
        .collect();
    let headers = [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))];
    (
        headers,
        Json(serde_json::json!({ "chat_models": chat_models })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::server::app;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_path(path: &str, settings: &Settings) -> Response {
        let state = AppState::new(settings).unwrap();
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        app(state).oneshot(request).await.unwrap()
    }

    fn with_tokens() -> Settings {
        Settings {
            auth: crate::auth::AuthConfig::from_tokens(
                &["client-token-0123456789abcdef"],
                &["worker-token-0123456789abcdef"],
            )
            .unwrap(),
            ..Settings::default()
        }
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_without_a_token_under_a_strict_csp() {
        let settings = with_tokens();
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/console/app.js", JAVASCRIPT),
            ("/console/style.css", "text/css; charset=utf-8"),
        ] {
            let response = get_path(path, &settings).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert_eq!(headers["content-type"], content_type, "{path}");
            assert_eq!(
                headers["content-security-policy"], CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert_eq!(headers["x-content-type-options"], "nosniff");
        }
        let response = get_path("/console/catalog.json", &settings).await;
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let catalog: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let chat_models = catalog["chat_models"].as_array().unwrap();
        assert!(chat_models.contains(&"qwen2.5-coder-0.5b".into()));
        assert!(!chat_models.contains(&"gemma3-270m".into()));
    }

    #[tokio::test]
    async fn unknown_assets_are_404_and_the_api_still_needs_a_token() {
        let settings = with_tokens();
        let response = get_path("/console/nope.js", &settings).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = get_path("/v2/events", &settings).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    /// The page's safety rests on model output never being parsed as HTML, and the CSP on
    /// there being no inline script or style: both are checked in the files themselves.
    #[test]
    fn the_assets_never_parse_html_and_have_nothing_inline() {
        for (name, _, body) in ASSETS {
            for forbidden in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "DOMParser",
                "createContextualFragment",
                "setAttribute(\"style",
                ".style.",
            ] {
                assert!(!body.contains(forbidden), "{name} uses `{forbidden}`");
            }
        }
        for forbidden in ["<script>", "style=", " on", "javascript:"] {
            let found = INDEX_HTML
                .match_indices(forbidden)
                .filter(|(at, _)| {
                    // ` on` only matters as an event handler attribute (`onclick=`).
                    forbidden != " on"
                        || INDEX_HTML[at + 3..]
                            .split(|c: char| !c.is_ascii_alphabetic())
                            .next()
                            .is_some_and(|rest| INDEX_HTML[at + 3 + rest.len()..].starts_with('='))
                })
                .count();
            assert_eq!(found, 0, "index.html contains `{forbidden}`");
        }
        // Every asset the page links is one this module serves.
        for (name, _, _) in ASSETS {
            let linked = INDEX_HTML.contains(&format!("/console/{name}"))
                || ASSETS
                    .iter()
                    .any(|(_, _, body)| body.contains(&format!("./{name}")));
            assert!(linked, "{name} is served but nothing loads it");
        }
    }
}
