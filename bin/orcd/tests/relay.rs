//! orcd served on a real socket against fake workers: relaying, queueing, refusals, retries,
//! worker crashes, cancellation, non-streaming answers and shutdown.

use crate::support;

use std::time::Duration;

use llorch_api::{
    CancelResult, ErrorBody, ErrorKind, FinishReason, HeartbeatAccepted, JobInfo, JobState,
    StreamEvent, TaskResult, WorkerInfo, WorkerState,
};
use orcd::Settings;
use serde_json::json;
use support::{
    all_events, events, eventually, next_event, within, Behavior, FakeWorker, Orcd, Script,
};

const MODEL: &str = "fake-model";
const FAST: Duration = Duration::from_millis(2);
const SLOW: Duration = Duration::from_millis(25);

fn task(max_tokens: u32) -> serde_json::Value {
    json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": max_tokens})
}

fn settings() -> Settings {
    Settings {
        drain: Duration::from_millis(200),
        ..Settings::default()
    }
}

fn token_count(events: &[StreamEvent]) -> usize {
    events
        .iter()
        .filter(|event| matches!(event, StreamEvent::Token { .. }))
        .count()
}

async fn started_on(
    events: &mut (impl futures::Stream<Item = StreamEvent> + Unpin),
) -> (String, String) {
    match next_event(events).await {
        StreamEvent::Started { job_id, worker_id } => (job_id, worker_id),
        other => panic!("expected `started`, got {other:?}"),
    }
}

#[tokio::test]
async fn relays_a_worker_stream_in_order() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(16, FAST)).await;
    orcd.register(&worker.registration("w1", MODEL, 2)).await;

    let response = orcd.submit(task(16)).await;
    let header_job_id = response.headers()["x-llorch-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let all = all_events(events(response)).await;

    let StreamEvent::Started { job_id, worker_id } = &all[0] else {
        panic!("first event should be `started`: {all:?}");
    };
    assert_eq!(
        (job_id.as_str(), worker_id.as_str()),
        (header_job_id.as_str(), "w1")
    );
    let indices: Vec<u32> = all[1..17]
        .iter()
        .map(|event| match event {
            StreamEvent::Token { index, .. } => *index,
            other => panic!("expected a token, got {other:?}"),
        })
        .collect();
    assert_eq!(indices, (0..16).collect::<Vec<_>>());
    assert!(matches!(&all[17], StreamEvent::Done(stats) if stats.generated_tokens == 16));
    assert_eq!(all.len(), 18);

    let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{job_id}")).await;
    assert_eq!(info.state, JobState::Completed);
    assert_eq!(info.worker_id.as_deref(), Some("w1"));
    assert_eq!((info.prompt_tokens, info.generated_tokens), (5, 16));
    assert!(info.time_to_first_token_ms.is_some() && info.duration_ms.is_some());
    let workers: Vec<WorkerInfo> = orcd.get_json("/workers").await;
    assert_eq!(workers[0].slots_busy, 0);
}

#[tokio::test]
async fn a_job_waits_in_the_queue_with_its_position_while_slots_are_busy() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(6, SLOW)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut first = events(orcd.submit(task(6)).await);
    started_on(&mut first).await;
    let mut second = events(orcd.submit(task(6)).await);
    match next_event(&mut second).await {
        StreamEvent::Queued { position, .. } => assert_eq!(position, 1),
        other => panic!("expected `queued`, got {other:?}"),
    }
    let jobs: Vec<JobInfo> = orcd.get_json("/v2/tasks").await;
    let states: Vec<JobState> = jobs.iter().map(|job| job.state).collect();
    assert_eq!(states, vec![JobState::Queued, JobState::Running]);

    let first = all_events(first).await;
    assert!(matches!(first.last(), Some(StreamEvent::Done(_))));
    assert_eq!(started_on(&mut second).await.1, "w1");
    let rest = all_events(second).await;
    assert_eq!(token_count(&rest), 6);
    assert!(matches!(rest.last(), Some(StreamEvent::Done(_))));
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let orcd = Orcd::start(Settings {
        scheduler: orcd::scheduler::SchedulerConfig {
            queue_limit: 1,
            ..Default::default()
        },
        ..settings()
    })
    .await;
    let worker = FakeWorker::start(Script::complete(50, SLOW)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut running = events(orcd.submit(task(50)).await);
    started_on(&mut running).await;
    let mut waiting = events(orcd.submit(task(50)).await);
    assert!(matches!(
        next_event(&mut waiting).await,
        StreamEvent::Queued { position: 1, .. }
    ));

    let refused = orcd.submit(task(50)).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: ErrorBody = refused.json().await.unwrap();
    assert_eq!(body.error_type, ErrorKind::QueueFull);
    assert!(body.error.contains(MODEL), "{}", body.error);
}

#[tokio::test]
async fn a_refused_dispatch_is_retried_on_another_worker() {
    // 503 means busy (the worker stays eligible), 500 means broken (excluded for this job).
    for status in [503, 500] {
        let orcd = Orcd::start(settings()).await;
        let refusing = FakeWorker::start(Script {
            behavior: Behavior::Refuse(status),
            ..Script::complete(4, FAST)
        })
        .await;
        let healthy = FakeWorker::start(Script::complete(4, FAST)).await;
        // Ids sort `a` before `b`, so the refusing worker is picked first.
        orcd.register(&refusing.registration("a", MODEL, 1)).await;
        orcd.register(&healthy.registration("b", MODEL, 1)).await;

        let mut stream = events(orcd.submit(task(4)).await);
        assert_eq!(started_on(&mut stream).await.1, "b", "HTTP {status}");
        let rest = all_events(stream).await;
        assert_eq!(token_count(&rest), 4);
        assert_eq!(
            (refusing.executions(), healthy.executions()),
            (1, 1),
            "HTTP {status}"
        );
    }
}

#[tokio::test]
async fn a_worker_rejecting_the_request_as_invalid_is_not_retried() {
    let orcd = Orcd::start(settings()).await;
    let rejecting = FakeWorker::start(Script {
        behavior: Behavior::Refuse(400),
        ..Script::complete(4, FAST)
    })
    .await;
    let healthy = FakeWorker::start(Script::complete(4, FAST)).await;
    orcd.register(&rejecting.registration("a", MODEL, 1)).await;
    orcd.register(&healthy.registration("b", MODEL, 1)).await;

    let all = all_events(events(orcd.submit(task(4)).await)).await;
    assert!(
        matches!(
            all.as_slice(),
            [StreamEvent::Error {
                error_type: ErrorKind::Validation,
                ..
            }]
        ),
        "{all:?}"
    );
    assert_eq!(healthy.executions(), 0);
}

#[tokio::test]
async fn a_job_whose_worker_crashed_after_accepting_it_is_not_retried_on_another() {
    // Issue 18: a schema that aborted one worker was sent to the next, which died too.
    for behavior in [Behavior::CrashBeforeAnswer, Behavior::DieAfter(0)] {
        let orcd = Orcd::start(settings()).await;
        let crashing = FakeWorker::start(Script {
            behavior,
            ..Script::complete(4, FAST)
        })
        .await;
        let healthy = FakeWorker::start(Script::complete(4, FAST)).await;
        orcd.register(&crashing.registration("a", MODEL, 1)).await;
        orcd.register(&healthy.registration("b", MODEL, 1)).await;

        let all = all_events(events(orcd.submit(task(4)).await)).await;
        match all.last() {
            Some(StreamEvent::Error {
                error_type,
                message,
            }) => {
                assert_eq!(*error_type, ErrorKind::Worker, "{behavior:?}");
                assert!(message.contains("`a`"), "{message}");
                assert!(message.contains("not retried"), "{message}");
            }
            other => panic!("{behavior:?}: expected an error event, got {other:?}"),
        }
        assert_eq!(
            (crashing.executions(), healthy.executions()),
            (1, 0),
            "{behavior:?}"
        );
        // The healthy worker still serves the next job.
        let next = all_events(events(orcd.submit(task(2)).await)).await;
        assert_eq!(token_count(&next), 2, "{behavior:?}");
    }
}

#[tokio::test]
async fn an_unreachable_worker_is_marked_dead_and_the_job_goes_to_a_survivor() {
    let orcd = Orcd::start(settings()).await;
    let gone = FakeWorker::start(Script::complete(1, FAST)).await;
    let registration = gone.registration("a", MODEL, 1);
    drop(gone);
    let healthy = FakeWorker::start(Script::complete(3, FAST)).await;
    orcd.register(&registration).await;
    orcd.register(&healthy.registration("b", MODEL, 1)).await;

    let mut stream = events(orcd.submit(task(3)).await);
    assert_eq!(started_on(&mut stream).await.1, "b");
    assert!(matches!(
        all_events(stream).await.last(),
        Some(StreamEvent::Done(_))
    ));
    let workers: Vec<WorkerInfo> = orcd.get_json("/workers").await;
    let states: Vec<(&str, WorkerState)> = workers
        .iter()
        .map(|w| (w.worker_id.as_str(), w.state))
        .collect();
    assert_eq!(
        states,
        vec![("a", WorkerState::Dead), ("b", WorkerState::Live)]
    );
}

#[tokio::test]
async fn a_worker_dying_mid_stream_gives_an_error_event_and_orcd_keeps_serving() {
    let orcd = Orcd::start(settings()).await;
    let dying = FakeWorker::start(Script {
        behavior: Behavior::DieAfter(3),
        ..Script::complete(16, FAST)
    })
    .await;
    let healthy = FakeWorker::start(Script::complete(16, FAST)).await;
    orcd.register(&dying.registration("a", MODEL, 1)).await;
    orcd.register(&healthy.registration("b", MODEL, 1)).await;

    let response = orcd.submit(task(16)).await;
    let job_id = response.headers()["x-llorch-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let all = all_events(events(response)).await;
    assert_eq!(token_count(&all), 3);
    match all.last() {
        Some(StreamEvent::Error {
            error_type,
            message,
        }) => {
            assert_eq!(*error_type, ErrorKind::Worker);
            assert!(message.contains("`a`"), "{message}");
        }
        other => panic!("expected an error event, got {other:?}"),
    }
    let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{job_id}")).await;
    assert_eq!((info.state, info.generated_tokens), (JobState::Failed, 3));

    // The crashed worker gets no more jobs; the survivor serves the next one.
    let mut next = events(orcd.submit(task(16)).await);
    assert_eq!(started_on(&mut next).await.1, "b");
    assert_eq!(token_count(&all_events(next).await), 16);
    assert_eq!(dying.executions(), 1);
}

#[tokio::test]
async fn cancelling_a_running_job_stops_the_worker_and_frees_the_slot() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(400, SLOW)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut stream = events(orcd.submit(task(400)).await);
    let (job_id, _) = started_on(&mut stream).await;
    assert!(matches!(
        next_event(&mut stream).await,
        StreamEvent::Token { .. }
    ));
    let mut queued = events(orcd.submit(task(400)).await);
    assert!(matches!(
        next_event(&mut queued).await,
        StreamEvent::Queued { position: 1, .. }
    ));

    let cancel = orcd
        .client
        .delete(format!("{}/v2/tasks/{job_id}", orcd.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let cancel: CancelResult = cancel.json().await.unwrap();
    assert_eq!(cancel.previous_state, JobState::Running);

    // The stream ends with orcd's own `done`, marked cancelled.
    let rest = all_events(stream).await;
    match rest.last() {
        Some(StreamEvent::Done(stats)) => {
            assert_eq!(stats.finish_reason, FinishReason::Cancelled);
            assert!(stats.generated_tokens >= 1);
        }
        other => panic!("expected `done`, got {other:?}"),
    }
    worker.wait_abandoned(1).await;
    // The freed slot goes to the queued job.
    started_on(&mut queued).await;
    let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{job_id}")).await;
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(info.finish_reason, Some(FinishReason::Cancelled));
}

#[tokio::test]
async fn cancelling_a_queued_job_ends_its_stream_as_cancelled() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(400, SLOW)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut running = events(orcd.submit(task(400)).await);
    started_on(&mut running).await;
    let mut queued = events(orcd.submit(task(400)).await);
    let StreamEvent::Queued { job_id, .. } = next_event(&mut queued).await else {
        panic!("expected `queued`");
    };
    let cancel: CancelResult = orcd
        .client
        .delete(format!("{}/v2/tasks/{job_id}", orcd.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancel.previous_state, JobState::Queued);
    let rest = all_events(queued).await;
    assert!(
        matches!(rest.as_slice(), [StreamEvent::Done(stats)] if stats.finish_reason == FinishReason::Cancelled),
        "{rest:?}"
    );
    let again = orcd
        .client
        .delete(format!("{}/v2/tasks/{job_id}", orcd.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(worker.executions(), 1);
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_job_on_the_worker() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(400, SLOW)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut stream = events(orcd.submit(task(400)).await);
    let (job_id, _) = started_on(&mut stream).await;
    assert!(matches!(
        next_event(&mut stream).await,
        StreamEvent::Token { .. }
    ));
    drop(stream);

    worker.wait_abandoned(1).await;
    let path = format!("/v2/tasks/{job_id}");
    eventually("the job to be marked cancelled", async || {
        orcd.get_json::<JobInfo>(&path).await.state == JobState::Cancelled
    })
    .await;
    let workers: Vec<WorkerInfo> = orcd.get_json("/workers").await;
    assert_eq!(workers[0].slots_busy, 0);
}

#[tokio::test]
async fn a_non_streaming_task_answers_one_json_result() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(3, FAST)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut request = task(3);
    request["stream"] = json!(false);
    let response = orcd.submit(request).await;
    assert_eq!(response.status(), 200);
    let result: TaskResult = response.json().await.unwrap();
    assert_eq!(result.text, "t0 t1 t2 ");
    assert_eq!(result.worker_id, "w1");
    assert_eq!(result.model, MODEL);
    assert_eq!(result.stats.generated_tokens, 3);
    assert_eq!(result.stats.finish_reason, FinishReason::Length);
}

#[tokio::test]
async fn a_worker_that_stalls_mid_stream_is_treated_as_lost() {
    let orcd = Orcd::start(Settings {
        worker_silence: Duration::from_millis(300),
        ..settings()
    })
    .await;
    let worker = FakeWorker::start(Script {
        behavior: Behavior::StallAfter(3),
        ..Script::complete(16, FAST)
    })
    .await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let all = all_events(events(orcd.submit(task(16)).await)).await;
    assert_eq!(token_count(&all), 3);
    assert!(
        matches!(
            all.last(),
            Some(StreamEvent::Error {
                error_type: ErrorKind::Worker,
                ..
            })
        ),
        "a silent worker ends the stream with an error event: {all:?}"
    );
}

#[tokio::test]
async fn a_non_streaming_task_whose_worker_dies_answers_502() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script {
        behavior: Behavior::DieAfter(1),
        ..Script::complete(3, FAST)
    })
    .await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut request = task(3);
    request["stream"] = json!(false);
    let response = orcd.submit(request).await;
    assert_eq!(response.status(), 502);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error_type, ErrorKind::Worker);
}

#[tokio::test]
async fn shutdown_ends_jobs_that_outlive_the_drain_with_an_error_event() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(400, SLOW)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;
    let client = orcd.client.clone();
    let url = orcd.url.clone();

    let mut stream = events(orcd.submit(task(400)).await);
    started_on(&mut stream).await;
    let reader = tokio::spawn(all_events(stream));
    within("orcd to shut down", orcd.shut_down()).await.unwrap();

    let rest = within("the stream to end", reader).await.unwrap();
    assert!(
        matches!(
            rest.last(),
            Some(StreamEvent::Error {
                error_type: ErrorKind::ShuttingDown,
                ..
            })
        ),
        "{:?}",
        rest.last()
    );
    worker.wait_abandoned(1).await;
    assert!(
        client.get(format!("{url}/health")).send().await.is_err(),
        "orcd still listens"
    );
}

#[tokio::test]
async fn a_draining_orcd_refuses_new_tasks() {
    let orcd = Orcd::start(settings()).await;
    let worker = FakeWorker::start(Script::complete(1, FAST)).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;
    orcd.state.begin_shutdown();
    let health = orcd
        .client
        .get(format!("{}/health", orcd.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let refused = orcd.submit(task(1)).await;
    assert_eq!(refused.status(), 503);
    let body: ErrorBody = refused.json().await.unwrap();
    assert_eq!(body.error_type, ErrorKind::ShuttingDown);
    assert_eq!(worker.executions(), 0);
}

/// orcd with a 500 ms heartbeat timeout and worker `w1`, which streams 3 tokens of a job and
/// then stalls; registered once and never heard from again, like a host whose link died
/// mid-stream.
async fn orcd_with_a_worker_that_goes_silent() -> (Orcd, FakeWorker) {
    let orcd = Orcd::start(Settings {
        scheduler: orcd::scheduler::SchedulerConfig {
            heartbeat_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        // Far beyond the tests' patience: only the missed heartbeats can end the stream.
        worker_silence: Duration::from_secs(60),
        ..settings()
    })
    .await;
    let worker = FakeWorker::start(Script {
        behavior: Behavior::StallAfter(3),
        ..Script::complete(16, FAST)
    })
    .await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;
    (orcd, worker)
}

#[tokio::test]
async fn a_worker_marked_dead_ends_its_running_streams_at_once() {
    let (orcd, _worker) = orcd_with_a_worker_that_goes_silent().await;

    let started = std::time::Instant::now();
    let all = all_events(events(orcd.submit(task(16)).await)).await;
    let elapsed = started.elapsed();
    assert_eq!(token_count(&all), 3);
    match all.last() {
        Some(StreamEvent::Error {
            message,
            error_type: ErrorKind::Worker,
        }) => assert!(message.contains("dead"), "{message}"),
        other => panic!("expected an error event naming the dead worker, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(5),
        "the client learned of the dead worker only after {elapsed:?}"
    );
}

/// Issue 18, item 9: a worker cut off from orcd cannot tell that orcd gave its jobs up, so
/// orcd says so when it hears from the worker again: the heartbeat's answer lists the job it
/// failed, once.
#[tokio::test]
async fn a_worker_heard_again_is_told_which_of_its_jobs_orcd_gave_up() {
    let (orcd, _worker) = orcd_with_a_worker_that_goes_silent().await;
    let all = all_events(events(orcd.submit(task(16)).await)).await;
    let Some(StreamEvent::Started { job_id, .. }) = all.first() else {
        panic!("expected `started` first, got {all:?}");
    };
    assert!(
        matches!(all.last(), Some(StreamEvent::Error { .. })),
        "{all:?}"
    );

    let heartbeat = || async {
        let response = orcd
            .client
            .post(format!("{}/workers/w1/heartbeat", orcd.url))
            .json(&json!({"slots_busy": 1, "slots_total": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<HeartbeatAccepted>().await.unwrap()
    };
    assert_eq!(heartbeat().await.given_up_jobs, vec![job_id.clone()]);
    assert!(heartbeat().await.given_up_jobs.is_empty());
}

/// A job two tokens short of its `max_tokens` is about to free its slot: the next job is sent
/// to wait for it in the worker's own queue, so that the worker starts it at the step the slot
/// frees instead of after orcd has heard of that and sent it.
#[tokio::test]
async fn the_next_job_is_sent_before_a_finishing_job_frees_its_slot() {
    const TOKENS: u32 = 7;
    let orcd = Orcd::start(settings()).await;
    // Token 5 comes at 500 ms, the last at 700 ms: ample time for orcd to send the next job.
    // orcd's periodic progress reports (250 ms apart, from the first token at 100 ms) would
    // bring the news only with the last token.
    let worker = FakeWorker::start(Script::complete(TOKENS, Duration::from_millis(100))).await;
    orcd.register(&worker.registration("w1", MODEL, 1)).await;

    let mut first = events(orcd.submit(task(TOKENS)).await);
    let (first_id, _) = started_on(&mut first).await;
    let mut second = events(orcd.submit(task(TOKENS)).await);
    assert!(matches!(
        next_event(&mut second).await,
        StreamEvent::Queued { position: 1, .. }
    ));
    assert_eq!(started_on(&mut second).await.1, "w1");
    let info: JobInfo = orcd.get_json(&format!("/v2/tasks/{first_id}")).await;
    assert_eq!(
        info.state,
        JobState::Running,
        "the second job started only after the first ended"
    );
    assert_eq!(worker.executions(), 2);
    let workers: Vec<WorkerInfo> = orcd.get_json("/workers").await;
    assert_eq!(workers[0].slots_busy, 1, "busy never exceeds the slots");

    assert!(matches!(
        all_events(first).await.last(),
        Some(StreamEvent::Done(_))
    ));
    let rest = all_events(second).await;
    assert_eq!(token_count(&rest), TOKENS as usize);
}
