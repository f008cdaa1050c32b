//! The OpenAI-compatible API against a fake worker: the official `openai` Python client (as
//! people will use it) and raw HTTP for what the client hides (the SSE framing, `[DONE]`, what
//! reaches the worker).

use crate::support;

use std::path::Path;
use std::time::Duration;

use orcd::auth::AuthConfig;
use orcd::Settings;
use serde_json::{json, Value};
use support::{within, Behavior, FakeWorker, Orcd, Script};

const MODEL: &str = "fake-model";
const CLIENT_TOKEN: &str = "client-token-for-openai-tests";
const WORKER_TOKEN: &str = "worker-token-for-openai-tests";

fn settings_with_tokens() -> Settings {
    Settings {
        auth: AuthConfig::from_tokens(&[CLIENT_TOKEN], &[WORKER_TOKEN]).unwrap(),
        drain: Duration::from_millis(200),
        ..Settings::default()
    }
}

/// The official `openai` Python client must be importable; `cargo xtask dev setup` (which
/// `cargo xtask test all` runs first) installs it.
fn require_openai_client() {
    let imports = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .expect("python3 is needed for the OpenAI client test; run `cargo xtask dev setup`");
    assert!(
        imports.status.success(),
        "the `openai` Python package is missing: run `cargo xtask dev setup`\n{}",
        String::from_utf8_lossy(&imports.stderr)
    );
}

#[tokio::test]
async fn the_official_openai_client_streams_chats_and_gets_openai_errors() {
    require_openai_client();
    let orcd = Orcd::start(settings_with_tokens()).await;
    let worker = FakeWorker::start(Script::complete(64, Duration::from_millis(1))).await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 4), WORKER_TOKEN)
        .await;

    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../bin/orcd/tests/python/openai_client.py");
    let output = within(
        "the Python client script",
        tokio::process::Command::new("python3")
            .arg(&script)
            .args([&orcd.url, MODEL, CLIENT_TOKEN])
            .env("NO_PROXY", "127.0.0.1,localhost")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("running python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("ok: "), "{stdout}");

    // orcd presented the worker token to the worker, and the script's last request there, its
    // streaming chat, arrived as the client's messages, not flattened into a prompt.
    let (request, authorization) = worker.last_request().unwrap();
    assert_eq!(
        authorization.as_deref(),
        Some(&*format!("Bearer {WORKER_TOKEN}"))
    );
    assert_eq!(request.prompt, None, "{request:?}");
    let messages: Vec<(&str, &str)> = request
        .messages
        .iter()
        .flatten()
        .map(|message| (message.role.as_str(), message.content.as_str()))
        .collect();
    assert_eq!(
        messages,
        [("system", "You are terse."), ("user", "Say hello.")],
        "{request:?}"
    );
    assert_eq!(request.sampling.max_tokens, 5, "{request:?}");
}

/// A POST to `/v1/...` with the client token.
async fn post(orcd: &Orcd, path: &str, body: Value) -> reqwest::Response {
    within(
        "orcd to answer",
        orcd.client
            .post(format!("{}{path}", orcd.url))
            .bearer_auth(CLIENT_TOKEN)
            .json(&body)
            .send(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_chat_stream_is_data_chunks_then_done_and_reaches_the_worker_translated() {
    let orcd = Orcd::start(settings_with_tokens()).await;
    let worker = FakeWorker::start(Script::complete(64, Duration::from_millis(1))).await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 1), WORKER_TOKEN)
        .await;

    let response = post(
        &orcd,
        "/v1/chat/completions",
        json!({
            "model": MODEL,
            "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "seed": 11, "stop": "END",
            "stream": true,
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("x-llorch-job-id"));
    let body = within("the stream to end", response.text()).await.unwrap();
    let data: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|chunk| serde_json::from_str(chunk).unwrap())
        .collect();
    // Role, three tokens, the finish.
    assert_eq!(chunks.len(), 5, "{body}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..4]
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "t0 t1 t2 ");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert!(chunks.iter().all(|chunk| chunk["id"] == chunks[0]["id"]));

    let (request, _) = worker.last_request().unwrap();
    let sampling = &request.sampling;
    assert_eq!(
        (
            sampling.max_tokens,
            sampling.temperature,
            sampling.top_p,
            sampling.top_k,
            sampling.seed
        ),
        (3, 0.5, 0.9, 0, Some(11))
    );
    assert_eq!(sampling.stop, ["END"]);
    let messages = request.messages.unwrap();
    assert_eq!(
        (messages[0].role.as_str(), messages[1].content.as_str()),
        ("system", "hi")
    );
}

#[tokio::test]
async fn a_chat_without_max_tokens_gets_what_one_worker_slot_holds() {
    let orcd = Orcd::start(settings_with_tokens()).await;
    let worker = FakeWorker::start(Script::complete(2, Duration::from_millis(1))).await;
    let mut registration = worker.registration("w1", MODEL, 1);
    registration.ctx_size = 300;
    orcd.register_with_token(&registration, WORKER_TOKEN).await;
    let response = post(
        &orcd,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "t0 t1 ");
    assert_eq!(worker.last_request().unwrap().0.sampling.max_tokens, 300);
}

#[tokio::test]
async fn openai_errors_have_the_openai_shape_and_status() {
    let orcd = Orcd::start(settings_with_tokens()).await;
    let worker = FakeWorker::start(Script::complete(2, Duration::from_millis(1))).await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 1), WORKER_TOKEN)
        .await;
    let cases = [
        (
            json!({"model": "ghost", "messages": [{"role": "user", "content": "x"}]}),
            404,
            Some("model_not_found"),
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}),
            400,
            None,
        ),
        (json!({"model": MODEL, "messages": "hi"}), 400, None),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            400,
            None,
        ),
    ];
    for (body, status, code) in cases {
        let response = post(&orcd, "/v1/chat/completions", body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"]["message"].is_string(), "{error}");
        assert_eq!(error["error"]["code"].as_str(), code, "{error}");
    }
    let unauthenticated = orcd
        .client
        .get(format!("{}/v1/models", orcd.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let error: Value = unauthenticated.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");
}

/// The `data:` payloads of an SSE body, `[DONE]` excluded, and whether `[DONE]` ended it.
fn data_chunks(body: &str) -> (Vec<Value>, bool) {
    let data: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    let done = data.last() == Some(&"[DONE]");
    let chunks = data
        .iter()
        .filter(|chunk| **chunk != "[DONE]")
        .map(|chunk| serde_json::from_str(chunk).unwrap())
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn several_choices_run_as_several_jobs_and_come_back_indexed() {
    let orcd = Orcd::start(settings_with_tokens()).await;
    let worker = FakeWorker::start(Script::complete(64, Duration::from_millis(1))).await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 4), WORKER_TOKEN)
        .await;
    let body = json!({
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2, "n": 3, "seed": 5,
    });
    let reply: Value = post(&orcd, "/v1/chat/completions", body)
        .await
        .json()
        .await
        .unwrap();
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{reply}");
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        assert_eq!(choice["message"]["content"], "t0 t1 ");
    }
    assert_eq!(reply["usage"]["completion_tokens"], 6);
    assert!(reply["system_fingerprint"]
        .as_str()
        .unwrap()
        .contains(MODEL));
    assert_eq!(worker.executions(), 3);
    // The last job got the last seed.
    assert_eq!(worker.last_request().unwrap().0.sampling.seed, Some(7));

    let body = json!({
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2, "n": 2, "stream": true, "stream_options": {"include_usage": true},
    });
    let text = post(&orcd, "/v1/chat/completions", body)
        .await
        .text()
        .await
        .unwrap();
    let (chunks, done) = data_chunks(&text);
    assert!(done, "{text}");
    let finished: Vec<u64> = chunks
        .iter()
        .filter(|chunk| chunk["choices"][0]["finish_reason"].is_string())
        .map(|chunk| chunk["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(finished.len(), 2, "{text}");
    assert!(finished.contains(&0) && finished.contains(&1), "{text}");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 4, "{text}");
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn a_prompt_beyond_the_context_is_a_400_before_any_stream() {
    let orcd = Orcd::start(settings_with_tokens()).await;
    let worker = FakeWorker::start(Script {
        behavior: Behavior::RefuseContextLength,
        ..Script::complete(2, Duration::from_millis(1))
    })
    .await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 1), WORKER_TOKEN)
        .await;
    for stream in [false, true] {
        let body = json!({
            "model": MODEL, "messages": [{"role": "user", "content": "long"}],
            "max_tokens": 2, "stream": stream,
        });
        let response = post(&orcd, "/v1/chat/completions", body).await;
        assert_eq!(response.status(), 400, "stream: {stream}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "context_length_exceeded", "{error}");
        assert_eq!(error["error"]["param"], "messages", "{error}");
    }
}

#[tokio::test]
async fn cors_preflights_are_answered_for_configured_origins_only() {
    let preflight = |orcd: &Orcd, origin: &str| {
        orcd.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/chat/completions", orcd.url),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let orcd = Orcd::start(Settings {
        cors_origins: vec![axum::http::HeaderValue::from_static("http://ok.example")],
        ..settings_with_tokens()
    })
    .await;
    let allowed = preflight(&orcd, "http://ok.example").await.unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://ok.example"
    );
    let refused = preflight(&orcd, "http://evil.example").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let without = Orcd::start(settings_with_tokens()).await;
    let response = preflight(&without, "http://ok.example").await.unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_ne!(response.status(), 200, "no CORS unless configured");
}
