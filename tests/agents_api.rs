//! The APIs coding agents speak, through the real stack with the chat model: OpenAI's
//! Responses API with the official `openai` client (`python/openai_responses.py`) and
//! Anthropic's Messages API with the official `anthropic` client
//! (`python/anthropic_messages.py`).

use std::path::Path;

use llorch_tests::*;

const CHAT_MODEL: &str = "qwen2.5-coder-0.5b";

/// orcd with client and worker tokens and one worker of the chat model, then `script`'s checks.
fn run_client_script(script: &str, client_token: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (orcd, tokens) = start_orcd_with_tokens(
        dir.path(),
        client_token,
        &format!("worker-{client_token}"),
        &[],
    )
    .unwrap();
    let _worker = start_worker_for(
        CHAT_MODEL,
        &orcd.url,
        2,
        &["--worker-token-file", &tokens.worker, "--ctx-size", "2048"],
    )
    .unwrap();
    runtime()
        .block_on(wait_for_model(&orcd.url, client_token, CHAT_MODEL))
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(script);
    run_python_checks(
        &script,
        &[
            orcd.url.as_ref(),
            CHAT_MODEL.as_ref(),
            client_token.as_ref(),
        ],
    );
}

#[test]
fn the_openai_client_creates_streams_structures_and_chains_responses() {
    require_python_modules(&["openai", "jsonschema"]);
    run_client_script("openai_responses.py", "client-token-for-the-responses-test");
}

#[test]
fn the_anthropic_client_creates_streams_counts_and_calls_tools() {
    require_python_modules(&["anthropic", "jsonschema"]);
    run_client_script("anthropic_messages.py", "client-token-for-the-messages-test");
}
