//! Tool calling through the real stack with the chat model: the official `openai` Python client
//! offers tools, reads calls (whole and streamed), sends results back as `role: tool` messages,
//! and forces calls with `tool_choice` (`python/openai_tools.py`).

use std::{path::Path, process::Command, time::Duration};

use llorch_tests::*;

const CHAT_MODEL: &str = "qwen2.5-coder-0.5b";
const CLIENT_TOKEN: &str = "client-token-for-the-openai-tools-test";

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn the_openai_client_calls_tools_and_gets_their_results_answered() {
    for module in ["openai", "jsonschema"] {
        assert!(
            python_has(module),
            "the `{module}` Python package is missing: run `cargo xtask dev setup`"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let client_tokens = token_file(dir.path(), "client", CLIENT_TOKEN);
    let worker_tokens = token_file(dir.path(), "worker", "worker-token-for-the-tools-test");
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
        &["--worker-token-file", &worker_tokens, "--ctx-size", "1024"],
    )
    .unwrap();
    let runtime = runtime();
    runtime
        .block_on(wait_until(
            "the chat model to be served",
            Duration::from_secs(120),
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

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_tools.py");
    let output = Command::new("python3")
        .arg(&script)
        .args([&orcd.url, CHAT_MODEL, CLIENT_TOKEN])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "openai client tool checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok:"), "{stdout}");
}
