//! OpenAI features real clients rely on, against the real stack with the chat model: the
//! official `openai` Python client drives structured output (validated with `jsonschema`),
//! log-probabilities, several choices, penalties, logit bias, the context-length error and
//! refused parameters (`python/openai_features.py`); CORS preflights are checked here.

use std::path::Path;

use llorch_tests::*;

const CHAT_MODEL: &str = "qwen2.5-coder-0.5b";
const CLIENT_TOKEN: &str = "client-token-for-the-openai-features-test";
const ALLOWED_ORIGIN: &str = "http://allowed.example:3000";
/// Small, so that the context-length check needs only a short prompt.
const CTX_SIZE: u32 = 512;

#[test]
fn the_openai_client_gets_structured_output_logprobs_choices_and_cors() {
    require_python_modules(&["openai", "jsonschema"]);
    let dir = tempfile::tempdir().unwrap();
    let (orcd, tokens) = start_orcd_with_tokens(
        dir.path(),
        CLIENT_TOKEN,
        "worker-token-for-the-features-test",
        &["--cors-origin", ALLOWED_ORIGIN],
    )
    .unwrap();
    let worker_tokens = tokens.worker;
    let ctx_size = CTX_SIZE.to_string();
    let worker = start_worker_for(
        CHAT_MODEL,
        &orcd.url,
        3,
        &[
            "--worker-token-file",
            &worker_tokens,
            "--ctx-size",
            &ctx_size,
        ],
    )
    .unwrap();
    let runtime = runtime();
    runtime
        .block_on(wait_for_model(&orcd.url, CLIENT_TOKEN, CHAT_MODEL))
        .unwrap();

    runtime.block_on(check_cors(&orcd.url));

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_features.py");
    run_python_checks(
        &script,
        &[
            orcd.url.as_ref(),
            CHAT_MODEL.as_ref(),
            CLIENT_TOKEN.as_ref(),
            ctx_size.as_ref(),
            worker.url.as_ref(),
        ],
    );
}

/// A browser's preflight carries no token: an allowed origin gets the CORS headers, any other
/// origin gets none, and the real request then carries them too.
async fn check_cors(orcd_url: &str) {
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{orcd_url}/v1/chat/completions"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
    };
    let allowed = preflight(ALLOWED_ORIGIN).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], ALLOWED_ORIGIN);
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );

    let refused = preflight("http://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "a refused origin gets no CORS headers: {:?}",
        refused.headers()
    );

    let models = http
        .get(format!("{orcd_url}/v1/models"))
        .bearer_auth(CLIENT_TOKEN)
        .header("origin", ALLOWED_ORIGIN)
        .send()
        .await
        .unwrap();
    assert!(models.status().is_success());
    assert_eq!(
        models.headers()["access-control-allow-origin"],
        ALLOWED_ORIGIN
    );
}
