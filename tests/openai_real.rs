//! The official `openai` Python client against the real stack with tokens on: orcd and a worker
//! serving the catalog's chat model (the default model has no chat template). Streaming and
//! non-streaming chat and completions, a model nobody serves, and a wrong API key.

use std::{path::Path, process::Command};

use llorch_tests::*;

const CHAT_MODEL: &str = "qwen2.5-coder-0.5b";
const CLIENT_TOKEN: &str = "client-token-for-the-openai-test";

#[test]
fn the_openai_client_chats_with_a_real_worker() {
    let imports = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .unwrap();
    assert!(
        imports.status.success(),
        "the `openai` Python package is missing: run `cargo xtask dev setup`"
    );
    let dir = tempfile::tempdir().unwrap();
    let client_tokens = token_file(dir.path(), "client", CLIENT_TOKEN);
    let worker_tokens = token_file(dir.path(), "worker", "worker-token-for-the-openai-test");
    let orcd = start_orcd(
        "127.0.0.1:0",
        &[
            "--api-token-file",
            &client_tokens,
            "--worker-token-file",
            &worker_tokens,
        ],
    )
    .unwrap();
    let _worker = start_worker_for(
        CHAT_MODEL,
        &orcd.url,
        2,
        &["--worker-token-file", &worker_tokens],
    )
    .unwrap();
    // GET /workers needs a client token now, so wait through the OpenAI model list instead.
    runtime()
        .block_on(wait_until(
            "the chat model to be served",
            std::time::Duration::from_secs(120),
            || async {
                let models = reqwest::Client::new()
                    .get(format!("{}/v1/models", orcd.url))
                    .bearer_auth(CLIENT_TOKEN)
                    .send()
                    .await;
                match models {
                    Ok(response) => response
                        .text()
                        .await
                        .unwrap_or_default()
                        .contains(CHAT_MODEL),
                    Err(_) => false,
                }
            },
        ))
        .unwrap();

    // The script the orcd tests run against a fake worker; `--real` checks shapes, not text.
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../bin/orcd/tests/python/openai_client.py");
    let output = Command::new("python3")
        .arg(&script)
        .args([&orcd.url, CHAT_MODEL, CLIENT_TOKEN, "--real"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "openai client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok:"), "{stdout}");
}
