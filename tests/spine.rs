//! The inference spine end to end: real orcd and worker binaries, the real default model,
//! OS-chosen loopback ports.

use std::time::{Duration, Instant};

use llorch_api::{FinishReason, JobInfo, JobState, StreamEvent, WorkerHealth};
use llorch_tests::*;

#[test]
fn one_job_streams_at_least_16_tokens_through_orcd() {
    runtime().block_on(async {
        let (orcd, _worker) = start_stack(4).await.unwrap();

        let events = submit(&orcd.url, &greedy_task("The capital of France is", 24))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(
            matches!(events.first(), Some(StreamEvent::Started { .. })),
            "{events:?}"
        );
        let tokens = token_count(&events);
        assert!(tokens >= 16, "only {tokens} tokens: {events:?}");
        let Some(StreamEvent::Done(stats)) = events.last() else {
            panic!("no done event: {events:?}")
        };
        // An event carries one piece of whole characters, which can take several tokens: the
        // events never outnumber the tokens, and a greedy run to the limit generates all 24.
        assert!(
            stats.generated_tokens as usize >= tokens,
            "{} tokens counted for {tokens} token events",
            stats.generated_tokens
        );
        match stats.finish_reason {
            FinishReason::Length => assert_eq!(stats.generated_tokens, 24, "{stats:?}"),
            FinishReason::Stop => assert!(stats.generated_tokens <= 24, "{stats:?}"),
            FinishReason::Cancelled => panic!("nobody cancelled the job: {stats:?}"),
        }
        assert!(stats.prompt_tokens > 0);
        // orcd recorded the job as the stream reported it.
        let job_id = events
            .iter()
            .find_map(|event| match event {
                StreamEvent::Started { job_id, .. } => Some(job_id.clone()),
                _ => None,
            })
            .unwrap();
        let job: JobInfo = reqwest::get(format!("{}/v2/tasks/{job_id}", orcd.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert_eq!(job.generated_tokens, stats.generated_tokens, "{job:?}");
        let indexes: Vec<u32> = events
            .iter()
            .filter_map(|event| match event {
                StreamEvent::Token { index, .. } => Some(*index),
                _ => None,
            })
            .collect();
        assert_eq!(
            indexes,
            (0..tokens as u32).collect::<Vec<_>>(),
            "token indexes are 0..n in order"
        );
    });
}

#[test]
fn six_concurrent_jobs_on_a_four_slot_worker_all_finish_two_queued_first() {
    runtime().block_on(async {
        let (orcd, _worker) = start_stack(4).await.unwrap();

        let jobs = (0..6).map(|n| {
            let url = orcd.url.clone();
            tokio::spawn(async move {
                let task = greedy_task(&format!("Job number {n} says:"), 24);
                submit(&url, &task).await?.collect().await
            })
        });
        let results = futures::future::join_all(jobs).await;
        let mut queued_first = 0;
        for result in results {
            let events = result.unwrap().unwrap();
            if matches!(events.first(), Some(StreamEvent::Queued { .. })) {
                queued_first += 1;
            }
            assert!(
                matches!(events.last(), Some(StreamEvent::Done(_))),
                "a job did not finish: {events:?}"
            );
            assert!(token_count(&events) > 0);
        }
        assert_eq!(
            queued_first, 2,
            "four jobs take the four slots, two wait in the queue"
        );
    });
}

async fn worker_slots_busy(worker_url: &str) -> Option<u32> {
    let health: WorkerHealth = reqwest::get(format!("{worker_url}/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(health.slots_busy)
}

#[test]
fn cancel_mid_stream_frees_the_slot() {
    runtime().block_on(async {
        let (orcd, worker) = start_stack(2).await.unwrap();

        // Cancel through the API.
        let mut stream = submit(&orcd.url, &greedy_task("Once upon a time", 500))
            .await
            .unwrap();
        let mut job_id = None;
        let mut tokens = 0;
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                StreamEvent::Started { job_id: id, .. } => job_id = Some(id),
                StreamEvent::Token { .. } => tokens += 1,
                other => panic!("unexpected event before cancel: {other:?}"),
            }
            if tokens == 3 {
                break;
            }
        }
        let job_id = job_id.expect("a started event");
        assert_eq!(worker_slots_busy(&worker.url).await, Some(1));
        let cancelled = reqwest::Client::new()
            .delete(format!("{}/v2/tasks/{job_id}", orcd.url))
            .send()
            .await
            .unwrap();
        assert!(
            cancelled.status().is_success(),
            "cancel answered {}",
            cancelled.status()
        );
        let rest = stream.collect().await.unwrap();
        assert!(rest.len() < 400, "the stream ended soon after the cancel");
        wait_until(
            "the worker's slot to be free after a cancel",
            // One decode step; generous, as a loaded machine makes a step take seconds.
            Duration::from_secs(10),
            || async { worker_slots_busy(&worker.url).await == Some(0) },
        )
        .await
        .unwrap();
        let job: JobInfo = reqwest::get(format!("{}/v2/tasks/{job_id}", orcd.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Cancelled);

        // Cancel by disconnecting.
        let mut stream = submit(&orcd.url, &greedy_task("Far away, a dragon", 500))
            .await
            .unwrap();
        for _ in 0..4 {
            stream.next().await.unwrap().unwrap();
        }
        assert_eq!(worker_slots_busy(&worker.url).await, Some(1));
        drop(stream);
        wait_until(
            "the worker's slot to be free after a disconnect",
            Duration::from_secs(10),
            || async { worker_slots_busy(&worker.url).await == Some(0) },
        )
        .await
        .unwrap();
    });
}

#[test]
fn killing_the_worker_mid_stream_gives_an_error_event_and_orcd_keeps_serving() {
    runtime().block_on(async {
        let orcd = start_orcd("127.0.0.1:0", &[]).unwrap();
        let mut first = start_worker(&orcd.url, 1, &["--worker-id", "first"]).unwrap();
        wait_for_live_workers(&orcd.url, 1, Duration::from_secs(60)).await.unwrap();
        let mut second = start_worker(&orcd.url, 1, &["--worker-id", "second"]).unwrap();
        wait_for_live_workers(&orcd.url, 2, Duration::from_secs(60)).await.unwrap();

        // One slot each: the blocker occupies one worker, so the victim lands on the other.
        let blocker = submit(&orcd.url, &greedy_task("Filler text:", 40)).await.unwrap();
        let mut victim = submit(&orcd.url, &greedy_task("The history of", 500)).await.unwrap();
        let (mut victim_worker, mut victim_job) = (None, None);
        let mut tokens = 0;
        while tokens < 2 {
            match victim.next().await.unwrap().unwrap() {
                StreamEvent::Started { worker_id, job_id } => {
                    victim_worker = Some(worker_id);
                    victim_job = Some(job_id);
                }
                StreamEvent::Token { .. } => tokens += 1,
                StreamEvent::Queued { .. } => {}
                other => panic!("unexpected event: {other:?}"),
            }
        }
        let victim_worker = victim_worker.unwrap();
        let blocker_events = blocker.collect().await.unwrap();
        let blocker_worker = blocker_events.iter().find_map(|event| match event {
            StreamEvent::Started { worker_id, .. } => Some(worker_id.clone()),
            _ => None,
        });
        assert_ne!(blocker_worker.as_deref(), Some(victim_worker.as_str()), "one job per one-slot worker");
        let survivor = if victim_worker == "first" { "second" } else { "first" };

        if victim_worker == "first" { first.kill_hard() } else { second.kill_hard() }
        let killed_at = Instant::now();
        // The timeout only stops a hung stream; the promise is checked on the measured time.
        let rest = tokio::time::timeout(Duration::from_secs(30), victim.collect())
            .await
            .expect("the stream of the dead worker's job ended")
            .unwrap();
        let heard_after = killed_at.elapsed();
        assert!(
            heard_after < Duration::from_secs(2),
            "the client heard of the dead worker after {heard_after:?}, not within 2 s"
        );
        assert!(
            matches!(rest.last(), Some(StreamEvent::Error { .. })),
            "the stream ends with an error event: {rest:?}"
        );
        let job: JobInfo = reqwest::get(format!("{}/v2/tasks/{}", orcd.url, victim_job.unwrap()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Failed, "the job is marked failed: {job:?}");

        let health = reqwest::get(format!("{}/health", orcd.url)).await.unwrap();
        assert!(health.status().is_success());
        let events = submit(&orcd.url, &greedy_task("After the crash,", 16)).await.unwrap().collect().await.unwrap();
        let next_worker = events.iter().find_map(|event| match event {
            StreamEvent::Started { worker_id, .. } => Some(worker_id.clone()),
            _ => None,
        });
        assert_eq!(next_worker.as_deref(), Some(survivor), "the next job goes to the survivor: {events:?}");
        assert!(matches!(events.last(), Some(StreamEvent::Done(stats)) if stats.finish_reason == FinishReason::Length));
    });
}

#[test]
fn a_restarted_orcd_gets_the_worker_back() {
    runtime().block_on(async {
        let mut orcd = start_orcd("127.0.0.1:0", &[]).unwrap();
        let port = orcd.port();
        let _worker = start_worker(&orcd.url, 2, &[]).unwrap();
        wait_for_live_workers(&orcd.url, 1, Duration::from_secs(60))
            .await
            .unwrap();

        orcd.kill_hard();
        let orcd = start_orcd(&format!("127.0.0.1:{port}"), &[]).unwrap();
        assert!(
            workers(&orcd.url).await.unwrap().is_empty(),
            "a new orcd starts with no workers"
        );
        wait_for_live_workers(&orcd.url, 1, Duration::from_secs(30))
            .await
            .unwrap();
        let events = submit(&orcd.url, &greedy_task("Hello again,", 16))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(
            matches!(events.last(), Some(StreamEvent::Done(_))),
            "{events:?}"
        );
    });
}
