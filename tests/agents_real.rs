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
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
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
    run_client_script(
        "anthropic_messages.py",
        "client-token-for-the-messages-test",
    );
}

const ALICE: &str = "client-token-of-alice-0123456789";
const BOB: &str = "client-token-of-bob-0123456789ab";
const CAROL: &str = "client-token-of-carol-0123456789";
const OPERATOR: &str = "operator-token-0123456789abcdef";

/// A chat completion with a client token: the status, `Retry-After` and the body.
async fn chat(url: &str, token: &str, model: &str) -> (u16, Option<String>, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "model": model, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}],
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after =
        (response.headers().get("retry-after")).map(|value| value.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

#[test]
fn aliases_key_limits_and_usage_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let client_keys = token_file(
        dir.path(),
        "client",
        &format!(
            "{ALICE} name=alice\n{BOB} name=bob models=gemma3-270m\n{CAROL} name=carol rpm=1\n"
        ),
    );
    let worker_tokens = token_file(dir.path(), "worker", "worker-token-of-the-keys-test-01");
    let admin = token_file(dir.path(), "admin", OPERATOR);
    let config = dir.path().join("orcd.toml");
    std::fs::write(
        &config,
        format!("[aliases]\n\"gpt-4o-mini\" = \"{CHAT_MODEL}\"\n"),
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let orcd = start_orcd(
        "127.0.0.1:0",
        &[
            "--api-token-file",
            &client_keys,
            "--worker-token-file",
            &worker_tokens,
            "--admin-token-file",
            &admin,
            "--config",
            &config.display().to_string(),
            "--audit-log",
            &audit.display().to_string(),
        ],
    )
    .unwrap();
    let _worker = start_worker_for(
        CHAT_MODEL,
        &orcd.url,
        1,
        &["--worker-token-file", &worker_tokens, "--ctx-size", "1024"],
    )
    .unwrap();
    let runtime = runtime();
    runtime
        .block_on(wait_for_model(&orcd.url, ALICE, CHAT_MODEL))
        .unwrap();

    runtime.block_on(async {
        // The alias is listed beside its model and answers as it.
        let models: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/v1/models", orcd.url))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let alias = (models["data"].as_array().unwrap().iter())
            .find(|model| model["id"] == "gpt-4o-mini")
            .unwrap_or_else(|| panic!("the alias is listed: {models}"));
        assert_eq!(alias["alias_for"], CHAT_MODEL);
        let (status, _, answer) = chat(&orcd.url, ALICE, "gpt-4o-mini").await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["model"], CHAT_MODEL);

        // Bob may use another model only.
        let (status, _, answer) = chat(&orcd.url, BOB, CHAT_MODEL).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"]["type"], "permission_error");

        // Carol may start one job a minute.
        let (status, _, answer) = chat(&orcd.url, CAROL, CHAT_MODEL).await;
        assert_eq!(status, 200, "{answer}");
        let (status, retry_after, answer) = chat(&orcd.url, CAROL, CHAT_MODEL).await;
        assert_eq!(status, 429, "{answer}");
        let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("requests per minute"), "{message}");
    });

    // The audit record names both the alias and the model.
    runtime
        .block_on(wait_until(
            "the audit log to record the alias",
            std::time::Duration::from_secs(20),
            || async {
                let text = std::fs::read_to_string(&audit).unwrap_or_default();
                text.lines().any(|line| {
                    line.contains(r#""requested_model":"gpt-4o-mini""#)
                        && line.contains(&format!(r#""model":"{CHAT_MODEL}""#))
                })
            },
        ))
        .unwrap();

    // `jobs usage` (with the operator's token) shows each key's tokens.
    let jobs_usage = |token_file: &str, json: bool| {
        let mut xtask = xtask();
        xtask
            .env("LLORCH_API_TOKEN_FILE", token_file)
            .env("LLORCH_CONFIG_PATH", dir.path().join("no-config.toml"));
        let json = json.then_some("--json");
        xtask.run(
            json.into_iter()
                .chain(["jobs", "usage", "--orchestrator-url", &orcd.url]),
        )
    };
    let output = jobs_usage(&admin, true);
    assert!(output.status.success(), "{}", output.stderr.as_str());
    let report: llorch_api::usage::UsageReport = serde_json::from_str(&output.stdout).unwrap();
    for key in ["alice", "carol"] {
        let row = (report.rows.iter())
            .find(|row| row.key == key && row.model == CHAT_MODEL)
            .unwrap_or_else(|| panic!("{key} in {report:?}"));
        assert_eq!(row.totals.requests, 1, "{row:?}");
        assert!(
            row.totals.prompt_tokens > 0 && row.totals.completion_tokens > 0,
            "{row:?}"
        );
    }
    assert!(
        !report.rows.iter().any(|row| row.key == "bob"),
        "{report:?}"
    );
    let output = jobs_usage(&admin, false);
    let table = output.stdout.as_str();
    assert!(
        table.contains("alice") && table.contains("carol"),
        "{table}"
    );
    assert!(!table.contains(ALICE), "{table}");
    // A client key may not read everyone's usage.
    let output = jobs_usage(&client_keys, false);
    assert!(!output.status.success());
    assert!(output.stderr.as_str().contains("403"));
}
