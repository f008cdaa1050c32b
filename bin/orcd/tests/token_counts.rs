//! orcd counts tokens, not `token` events: a worker whose every event completes three tokens
//! (as multibyte characters do) must show up as three tokens per event in the job's stats, the
//! `llorch_tokens_generated` metric and the audit log, for finished and cancelled jobs alike.

use crate::support;

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use llorch_api::audit::{AuditEvent, AuditRecord};
use llorch_api::{
    Backend, ExecuteRequest, FinishReason, GenerationStats, JobInfo, JobState, StreamEvent,
    WorkerRegistration,
};
use orcd::audit::AuditSettings;
use orcd::Settings;
use serde_json::json;
use support::{all_events, events, eventually, next_event, within, Orcd};
use tokio::net::TcpListener;

const MODEL: &str = "multibyte-model";
const EVENTS: u32 = 4;
const TOKENS_PER_EVENT: u32 = 3;
/// The worker's `done` count: one more than its events carry, as when a stop string's tokens
/// are generated but never streamed.
const DONE_TOKENS: u32 = EVENTS * TOKENS_PER_EVENT + 1;

fn sse(event: &StreamEvent) -> Result<Event, Infallible> {
    Ok(Event::default().event(event.name()).data(event.data_json()))
}

/// Streams `EVENTS` token events of `TOKENS_PER_EVENT` tokens each, then `done`; with the
/// prompt `stall` it stops after the tokens and waits to be cancelled.
async fn execute(Json(request): Json<ExecuteRequest>) -> Response {
    let stall = request.prompt.as_deref() == Some("stall");
    let mut items: Vec<Result<Event, Infallible>> = (0..EVENTS)
        .map(|index| {
            sse(&StreamEvent::Token {
                text: "日".into(),
                index,
                logprobs: Vec::new(),
                tokens: TOKENS_PER_EVENT,
            })
        })
        .collect();
    if !stall {
        items.push(sse(&StreamEvent::Done(GenerationStats {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 2,
            cached_prompt_tokens: 0,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
            generated_tokens: DONE_TOKENS,
            time_to_first_token_ms: 1.0,
            tokens_per_second: 10.0,
            prompt_tokens_per_second: 10.0,
        })));
    }
    let stream = futures::stream::iter(items);
    if stall {
        use futures::StreamExt;
        let forever = futures::stream::pending();
        return Sse::new(stream.chain(forever)).into_response();
    }
    Sse::new(stream).into_response()
}

async fn start_worker() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/execute", post(execute)))
            .await
            .unwrap();
    });
    url
}

async fn start() -> (Orcd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let orcd = Orcd::start(Settings {
        audit: Some(AuditSettings {
            path: dir.path().join("audit.jsonl"),
            fsync_each_event: false,
        }),
        ..Settings::default()
    })
    .await;
    orcd.register(&WorkerRegistration {
        worker_id: "w1".into(),
        url: start_worker().await,
        model: MODEL.into(),
        backend: Backend::Cpu,
        slots: 2,
        ctx_size: 2048,
        embeddings: false,
    })
    .await;
    (orcd, dir)
}

async fn tokens_metric(orcd: &Orcd) -> u64 {
    let text = orcd
        .client
        .get(format!("{}/metrics", orcd.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("llorch_tokens_generated_total{{model=\"{MODEL}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// The `generated_tokens` of the audit record that ended `job_id`, once it is written.
async fn audited_tokens(dir: &tempfile::TempDir, job_id: &str) -> u32 {
    let path = dir.path().join("audit.jsonl");
    let mut found = None;
    eventually("the job's end in the audit log", async || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        found = text
            .lines()
            .filter_map(|line| serde_json::from_str::<AuditRecord>(line).ok())
            .find_map(|record| match record.event {
                AuditEvent::TaskFinished {
                    job_id: id,
                    generated_tokens,
                    ..
                }
                | AuditEvent::TaskCancelled {
                    job_id: id,
                    generated_tokens,
                    ..
                } if id == job_id => Some(generated_tokens),
                _ => None,
            });
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn a_finished_job_counts_the_tokens_its_worker_counted() {
    let (orcd, dir) = start().await;
    let all = all_events(events(
        orcd.submit(json!({"model": MODEL, "prompt": "go"})).await,
    ))
    .await;
    let Some(StreamEvent::Started { job_id, .. }) = all.first().cloned() else {
        panic!("{all:?}")
    };
    let token_events = all
        .iter()
        .filter(|event| matches!(event, StreamEvent::Token { .. }))
        .count();
    assert_eq!(token_events, EVENTS as usize, "{all:?}");
    assert!(
        matches!(all.last(), Some(StreamEvent::Done(stats)) if stats.generated_tokens == DONE_TOKENS),
        "{all:?}"
    );
    let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{job_id}")).await;
    assert_eq!(
        (info.state, info.generated_tokens),
        (JobState::Completed, DONE_TOKENS)
    );
    assert_eq!(tokens_metric(&orcd).await, u64::from(DONE_TOKENS));
    assert_eq!(audited_tokens(&dir, &job_id).await, DONE_TOKENS);
}

#[tokio::test]
async fn a_cancelled_job_counts_the_tokens_relayed_before_the_cancel() {
    let (orcd, dir) = start().await;
    let mut stream = events(
        orcd.submit(json!({"model": MODEL, "prompt": "stall"}))
            .await,
    );
    let StreamEvent::Started { job_id, .. } = next_event(&mut stream).await else {
        panic!("no `started` first")
    };
    for _ in 0..EVENTS {
        assert!(matches!(
            next_event(&mut stream).await,
            StreamEvent::Token { .. }
        ));
    }
    let relayed = EVENTS * TOKENS_PER_EVENT;
    eventually("the running job to count its tokens", async || {
        let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{job_id}")).await;
        info.generated_tokens == relayed
    })
    .await;

    let cancelled = within(
        "the cancel",
        orcd.client
            .delete(format!("{}/v2/tasks/{job_id}", orcd.url))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(cancelled.status(), 200);
    match next_event(&mut stream).await {
        StreamEvent::Done(stats) => {
            assert_eq!(stats.finish_reason, FinishReason::Cancelled);
            assert_eq!(stats.generated_tokens, relayed);
        }
        other => panic!("expected a cancelled `done`, got {other:?}"),
    }
    eventually("the job to end", async || {
        let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{job_id}")).await;
        info.state == JobState::Cancelled
    })
    .await;
    let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{job_id}")).await;
    assert_eq!(info.generated_tokens, relayed);
    assert_eq!(tokens_metric(&orcd).await, u64::from(relayed));
    assert_eq!(audited_tokens(&dir, &job_id).await, relayed);
}
