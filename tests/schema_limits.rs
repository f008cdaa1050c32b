//! Issue 18's worst defect, end to end against the real orcd and two real workers of the
//! default model: one `response_format` schema (6,000 optional properties, 65 KB) aborted a
//! worker with a stack overflow, orcd retried it on the second worker, which died too. Now orcd
//! refuses such a schema with a 400 that names the limit before any worker sees it; a worker
//! refuses it too when sent directly; a schema that passes orcd's limits but that llama.cpp
//! cannot convert fails its job with an error answer; and both workers stay alive throughout.

use std::time::Duration;

use llorch_api::{ErrorBody, StreamEvent, WorkerState};
use llorch_tests::*;
use serde_json::{json, Value};

/// The schema of the report: 6,000 optional properties with empty schemas, 64,922 bytes.
fn schema_of_the_report() -> Value {
    let properties: serde_json::Map<String, Value> =
        (0..6000).map(|i| (format!("p{i}"), json!({}))).collect();
    json!({"type": "object", "properties": properties})
}

fn task_with_schema(schema: Value) -> Value {
    json!({
        "model": default_model_id(), "prompt": "A JSON object:", "max_tokens": 8,
        "temperature": 0, "constraint": {"type": "json_schema", "schema": schema},
    })
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// orcd and two one-slot workers of the default model, both live.
async fn start_two_workers() -> (Daemon, [Daemon; 2]) {
    let orcd = start_orcd("127.0.0.1:0", &[]).unwrap();
    let workers = [
        start_worker(&orcd.url, 1, &[]).unwrap(),
        start_worker(&orcd.url, 1, &[]).unwrap(),
    ];
    wait_for_live_workers(&orcd.url, 2, Duration::from_secs(60))
        .await
        .unwrap();
    (orcd, workers)
}

/// Both workers' processes run and orcd lists both live.
async fn assert_both_workers_alive(orcd_url: &str, workers: &mut [Daemon; 2]) {
    for worker in workers.iter_mut() {
        assert_eq!(worker.exited(), None, "worker {} ended", worker.url);
    }
    let listed = llorch_tests::workers(orcd_url).await.unwrap();
    let live = listed
        .iter()
        .filter(|worker| worker.state == WorkerState::Live)
        .count();
    assert_eq!(live, 2, "{listed:?}");
}

#[test]
fn a_schema_that_killed_every_worker_is_refused_and_both_workers_live() {
    runtime().block_on(async {
        let (orcd, mut workers) = start_two_workers().await;
        let body = task_with_schema(schema_of_the_report());
        assert!(body.to_string().len() < 70_000);

        // orcd, on the native API and on OpenAI's.
        let refused = post(&format!("{}/v2/tasks", orcd.url), &body).await;
        assert_eq!(refused.status(), 400);
        let error: ErrorBody = refused.json().await.unwrap();
        assert!(
            error.error.starts_with("`response_format` schema: at `/properties`")
                && error.error.contains("more than 1000 properties"),
            "{}",
            error.error
        );
        let chat = json!({
            "model": default_model_id(), "max_tokens": 8,
            "messages": [{"role": "user", "content": "A JSON object, please."}],
            "response_format": {"type": "json_schema",
                "json_schema": {"name": "huge", "schema": schema_of_the_report()}},
        });
        let refused = post(&format!("{}/v1/chat/completions", orcd.url), &chat).await;
        assert_eq!(refused.status(), 400);
        let text = refused.text().await.unwrap();
        assert!(text.contains("properties"), "{text}");

        // A worker sent the schema directly refuses it as well.
        let mut execute = body.clone();
        let fields = execute.as_object_mut().unwrap();
        fields.remove("model");
        fields.insert("job_id".into(), json!("direct-1"));
        let refused = post(&format!("{}/execute", workers[0].url), &execute).await;
        assert_eq!(refused.status(), 400);

        assert_both_workers_alive(&orcd.url, &mut workers).await;

        // An invalid `pattern` (issue 18, item 7) is refused by name too.
        let pattern = json!({"type": "object", "properties": {"code": {"type": "string", "pattern": "a{2,1}"}}});
        let refused = post(&format!("{}/v2/tasks", orcd.url), &task_with_schema(pattern)).await;
        assert_eq!(refused.status(), 400);
        let error: ErrorBody = refused.json().await.unwrap();
        assert!(error.error.contains("/properties/code/pattern"), "{}", error.error);

        // The workers still serve.
        let events = submit(&orcd.url, &greedy_task("The capital of France is", 4))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(matches!(events.last(), Some(StreamEvent::Done(_))), "{events:?}");
    });
}

#[test]
fn a_schema_orcd_passes_but_the_worker_cannot_convert_fails_the_job_alone() {
    runtime().block_on(async {
        let (orcd, mut workers) = start_two_workers().await;
        // Within every limit, but llama.cpp's converter finds no `$defs/missing`.
        let schema = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}});
        let task = serde_json::from_value(task_with_schema(schema)).unwrap();
        let events = submit(&orcd.url, &task)
            .await
            .expect("orcd passes the schema on")
            .collect()
            .await
            .unwrap();
        // One error event: the worker's verdict, relayed; no `started` on a second worker.
        let [StreamEvent::Error { message, .. }] = events.as_slice() else {
            panic!("expected one error event, got {events:?}");
        };
        assert!(message.contains("grammar"), "{message}");
        assert_both_workers_alive(&orcd.url, &mut workers).await;
        // And each worker still serves: a next job sent to each runs to its end.
        for (index, worker) in workers.iter().enumerate() {
            let next = json!({
                "job_id": format!("next-{index}"), "prompt": "The capital of France is",
                "max_tokens": 4, "temperature": 0,
            });
            let answer = post(&format!("{}/execute", worker.url), &next).await;
            assert_eq!(answer.status(), 200, "worker {}", worker.url);
            let stream = answer.text().await.unwrap();
            assert!(stream.contains("event: done"), "{stream}");
        }
    });
}
