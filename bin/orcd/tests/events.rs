//! `GET /v2/events` on a real socket against a fake worker: the snapshot, worker and job changes
//! as they happen, throughput samples, the token it needs, and the stream ending at shutdown.

use crate::support;

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use llorch_api::fleet::FleetEvent;
use llorch_api::JobState;
use orcd::Settings;
use serde_json::json;
use support::{all_events, events, within, FakeWorker, Orcd, Script};

const MODEL: &str = "fake-model";

fn settings() -> Settings {
    Settings {
        drain: Duration::from_millis(200),
        ..Settings::default()
    }
}

async fn subscribe(orcd: &Orcd) -> impl Stream<Item = FleetEvent> + Unpin {
    let response = orcd
        .client
        .get(format!("{}/v2/events", orcd.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    Box::pin(response.bytes_stream().eventsource().map(|event| {
        let event = event.expect("the event stream broke");
        FleetEvent::from_sse(&event.event, &event.data).unwrap_or_else(|error| {
            panic!("undecodable `{}` ({error}): {}", event.event, event.data)
        })
    }))
}

/// Reads events until `wanted` matches one, which it returns.
async fn next_matching(
    stream: &mut (impl Stream<Item = FleetEvent> + Unpin),
    what: &str,
    mut wanted: impl FnMut(&FleetEvent) -> bool,
) -> FleetEvent {
    within(what, async {
        loop {
            let event = stream.next().await.expect("the event stream ended");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
}

#[tokio::test]
async fn the_event_stream_shows_workers_jobs_and_throughput_as_they_change() {
    let orcd = Orcd::start(settings()).await;
    let mut stream = subscribe(&orcd).await;
    let FleetEvent::Snapshot(snapshot) = within("the snapshot", stream.next()).await.unwrap()
    else {
        panic!("the stream must open with a snapshot");
    };
    assert!(snapshot.workers.is_empty() && snapshot.jobs.is_empty());
    assert_eq!(snapshot.sample_interval_ms, 1000);

    let worker = FakeWorker::start(Script::complete(40, Duration::from_millis(40))).await;
    orcd.register(&worker.registration("w1", MODEL, 2)).await;
    let FleetEvent::Worker(info) = next_matching(&mut stream, "the worker", |event| {
        matches!(event, FleetEvent::Worker(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(
        (
            info.worker_id.as_str(),
            info.model.as_str(),
            info.slots_total,
            info.slots_busy
        ),
        ("w1", MODEL, 2, 0)
    );

    let response = orcd
        .submit(json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 40}))
        .await;
    let job_id = response.headers()["x-llorch-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let job_stream = tokio::spawn(all_events(events(response)));
    let is_job = |state: JobState| {
        let job_id = job_id.clone();
        move |event: &FleetEvent| matches!(event, FleetEvent::Job(job) if job.job_id == job_id && job.state == state)
    };
    next_matching(&mut stream, "the job to start", is_job(JobState::Running)).await;
    let FleetEvent::Job(progress) = next_matching(&mut stream, "the job's progress", |event| {
        matches!(event, FleetEvent::Job(job) if job.job_id == job_id && job.generated_tokens > 0)
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(progress.state, JobState::Running, "progress before the end");
    assert!(progress.time_to_first_token_ms.is_some());
    let FleetEvent::Throughput(sample) = next_matching(&mut stream, "a busy sample", |event| {
        matches!(event, FleetEvent::Throughput(sample)
            if sample.models.iter().any(|model| model.tokens_per_second > 0.0))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(sample.models[0].running, 1);
    assert_eq!(sample.workers[0].worker_id, "w1");
    assert!(sample.workers[0].tokens_per_second > 0.0);
    assert_eq!(sample.workers[0].slots_busy, 1);

    let FleetEvent::Job(ended) =
        next_matching(&mut stream, "the job to end", is_job(JobState::Completed)).await
    else {
        unreachable!()
    };
    assert_eq!(ended.generated_tokens, 40);
    assert!(ended.duration_ms.is_some());
    within("the job's own stream", job_stream).await.unwrap();

    // A new subscriber's snapshot has the finished job and the samples so far.
    let mut late = subscribe(&orcd).await;
    let FleetEvent::Snapshot(snapshot) = within("the snapshot", late.next()).await.unwrap() else {
        panic!("the stream must open with a snapshot");
    };
    assert_eq!(snapshot.jobs[0].job_id, job_id);
    assert!(!snapshot.throughput.is_empty());
    assert_eq!(snapshot.models[0].model, MODEL);

    // Shutdown ends the streams, so none holds orcd open.
    orcd.shut_down().await.unwrap();
    within("the event stream to end at shutdown", async {
        while stream.next().await.is_some() {}
    })
    .await;
}

#[tokio::test]
async fn the_event_stream_needs_a_client_token() {
    let settings = Settings {
        auth: orcd::auth::AuthConfig::from_tokens(
            &["client-token-0123456789abcdef"],
            &["worker-token-0123456789abcdef"],
        )
        .unwrap(),
        ..settings()
    };
    let orcd = Orcd::start(settings).await;
    let url = format!("{}/v2/events", orcd.url);
    let refused = orcd.client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let refused = orcd
        .client
        .get(&url)
        .bearer_auth("worker-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let accepted = orcd
        .client
        .get(&url)
        .bearer_auth("client-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
}
