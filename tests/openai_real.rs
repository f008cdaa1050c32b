//! The official `openai` Python client against the real stack with tokens on: orcd and a worker
//! serving the catalog's chat model (the default model has no chat template). Streaming and
//! non-streaming chat and completions, a model nobody serves, and a wrong API key.

use std::path::Path;

use llorch_tests::*;

const CHAT_MODEL: &str = "qwen2.5-coder-0.5b";
const CLIENT_TOKEN: &str = "client-token-for-the-openai-test";

#[test]
fn the_openai_client_chats_with_a_real_worker() {
    require_python_modules(&["openai"]);
    let dir = tempfile::tempdir().unwrap();
    let (orcd, tokens) = start_orcd_with_tokens(
        dir.path(),
        CLIENT_TOKEN,
        "worker-token-for-the-openai-test",
        &[],
    )
    .unwrap();
    let worker_tokens = tokens.worker;
    let _worker = start_worker_for(
        CHAT_MODEL,
        &orcd.url,
        2,
        &["--worker-token-file", &worker_tokens],
    )
    .unwrap();
    // GET /workers needs a client token now, so wait through the OpenAI model list instead.
    runtime()
        .block_on(wait_for_model(&orcd.url, CLIENT_TOKEN, CHAT_MODEL))
        .unwrap();

    // The script the orcd tests run against a fake worker; `--real` checks shapes, not text.
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../bin/orcd/tests/python/openai_client.py");
    run_python_checks(
        &script,
        &[
            orcd.url.as_ref(),
            CHAT_MODEL.as_ref(),
            CLIENT_TOKEN.as_ref(),
            "--real".as_ref(),
        ],
    );
}
