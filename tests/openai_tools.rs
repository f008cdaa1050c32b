//! Tool calling through the real stack with the chat model: the official `openai` Python client
//! offers tools, reads calls (whole and streamed), sends results back as `role: tool` messages,
//! and forces calls with `tool_choice` (`python/openai_tools.py`).

use std::path::Path;

use llorch_tests::*;

const CHAT_MODEL: &str = "qwen2.5-coder-0.5b";
const CLIENT_TOKEN: &str = "client-token-for-the-openai-tools-test";

#[test]
fn the_openai_client_calls_tools_and_gets_their_results_answered() {
    require_python_modules(&["openai", "jsonschema"]);
    let dir = tempfile::tempdir().unwrap();
    let (orcd, tokens) = start_orcd_with_tokens(
        dir.path(),
        CLIENT_TOKEN,
        "worker-token-for-the-tools-test",
        &[],
    )
    .unwrap();
    let worker_tokens = tokens.worker;
    let _worker = start_worker_for(
        CHAT_MODEL,
        &orcd.url,
        2,
        &["--worker-token-file", &worker_tokens, "--ctx-size", "1024"],
    )
    .unwrap();
    runtime()
        .block_on(wait_for_model(&orcd.url, CLIENT_TOKEN, CHAT_MODEL))
        .unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_tools.py");
    run_python_checks(
        &script,
        &[
            orcd.url.as_ref(),
            CHAT_MODEL.as_ref(),
            CLIENT_TOKEN.as_ref(),
        ],
    );
}
