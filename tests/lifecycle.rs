//! Daemon lifecycles end to end with the real orcd and worker binaries: clients that hang up
//! right after sending a task, the drain after SIGTERM, slow and idle connections; and token
//! counts that stay true when a character takes several tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use llorch_api::audit::{AuditEvent, AuditRecord};
use llorch_api::{
    Backend, CancelResult, ErrorBody, ErrorKind, JobInfo, JobState, StreamEvent, WorkerHealth,
    WorkerRegistration,
};
use llorch_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn jobs(orcd_url: &str) -> Vec<JobInfo> {
    reqwest::get(format!("{orcd_url}/v2/tasks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn worker_health(worker_url: &str) -> WorkerHealth {
    reqwest::get(format!("{worker_url}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The loopback `host:port` of a daemon, for raw TCP clients.
fn address(daemon: &Daemon) -> String {
    format!("127.0.0.1:{}", daemon.port())
}

/// Per job id in the audit log: (submitted, ended).
fn audited_jobs(path: &Path) -> BTreeMap<String, (bool, bool)> {
    let mut jobs: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let record: AuditRecord = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("unreadable audit line ({error}): {line}"));
        match record.event {
            AuditEvent::TaskSubmitted { job_id, .. } => jobs.entry(job_id).or_default().0 = true,
            AuditEvent::TaskFinished { job_id, .. }
            | AuditEvent::TaskCancelled { job_id, .. }
            | AuditEvent::TaskFailed { job_id, .. } => jobs.entry(job_id).or_default().1 = true,
            _ => {}
        }
    }
    jobs
}

/// Reads a stream until its first `token` event, returning the job id from `started`.
async fn running_job(stream: &mut TaskStream) -> String {
    let mut job_id = None;
    loop {
        match stream.next().await {
            Some(Ok(StreamEvent::Started { job_id: id, .. })) => job_id = Some(id),
            Some(Ok(StreamEvent::Token { .. })) if job_id.is_some() => return job_id.unwrap(),
            Some(Ok(StreamEvent::Queued { .. } | StreamEvent::Token { .. })) => {}
            other => panic!("expected a running job, got {other:?}"),
        }
    }
}

/// Reads from `stream` until `marker` has arrived, the peer closes, or `within` passes; a test
/// that must hang up only after orcd answered something waits here.
async fn read_until(stream: &mut TcpStream, marker: &[u8], within: Duration) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !seen.windows(marker.len()).any(|window| window == marker) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => seen.extend_from_slice(&buffer[..read]),
            _ => panic!(
                "no `{}` within {within:?}; the answer so far: {}",
                String::from_utf8_lossy(marker),
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

/// Rounds of hang-ups at most, for at least one to be admitted.
const ROUNDS: usize = 5;

#[test]
fn thirty_clients_hanging_up_right_after_their_request_leave_no_job_behind() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join("audit.jsonl");
        let orcd = start_orcd(
            "127.0.0.1:0",
            &["--audit-log", audit_path.to_str().unwrap()],
        )
        .unwrap();
        let worker = start_worker(&orcd.url, 4, &[]).unwrap();
        wait_for_live_workers(&orcd.url, 1, Duration::from_secs(60))
            .await
            .unwrap();

        // Four long generations hold the worker's four slots.
        let mut busy = Vec::new();
        for n in 0..4 {
            let task = greedy_task(&format!("Chapter {n}. Once upon a time"), 1500);
            let mut stream = submit(&orcd.url, &task).await.unwrap();
            let job_id = running_job(&mut stream).await;
            busy.push((job_id, stream));
        }
        let busy_ids: BTreeSet<String> = busy.iter().map(|(id, _)| id.clone()).collect();

        // Rounds of thirty clients send a whole task and hang up, half with a reset. Whether
        // orcd admits a job before it notices a hang-up right after the request is a race (on a
        // loaded machine a round can lose all of them), so every third client first waits for
        // its `queued` event: its job is admitted for certain, and must not outlive it either.
        let body = serde_json::to_string(&greedy_task("Hello", 8)).unwrap();
        let request = format!(
            "POST /v2/tasks HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut listed = Vec::new();
        for round in 1..=ROUNDS {
            let hang_ups = (0..30).map(|n| {
                let address = address(&orcd);
                let request = request.clone();
                async move {
                    let mut stream = TcpStream::connect(&address).await.unwrap();
                    stream.write_all(request.as_bytes()).await.unwrap();
                    if n % 3 == 0 {
                        read_until(&mut stream, b"event: queued", Duration::from_secs(30))
                            .await;
                    }
                    if n % 2 == 0 {
                        stream.set_zero_linger().unwrap();
                    }
                }
            });
            futures::future::join_all(hang_ups).await;

            wait_until(
                "the jobs of the clients that hung up to end",
                Duration::from_secs(20),
                || async {
                    jobs(&orcd.url)
                        .await
                        .iter()
                        .all(|job| job.state.is_finished() || busy_ids.contains(&job.job_id))
                },
            )
            .await
            .unwrap();
            listed = jobs(&orcd.url).await;
            let orphans = listed.len() - busy_ids.len();
            eprintln!(
                "round {round}: {orphans} of {} hung-up requests were admitted before the client was gone",
                30 * round
            );
            if orphans > 0 {
                break;
            }
        }
        assert!(
            listed.len() > busy_ids.len(),
            "no hung-up request was admitted in {ROUNDS} rounds; the test proves nothing"
        );
        let queued = listed
            .iter()
            .filter(|job| job.state == JobState::Queued)
            .count();
        assert_eq!(queued, 0, "the queue is not empty: {listed:?}");
        let running: BTreeSet<String> = listed
            .iter()
            .filter(|job| job.state == JobState::Running)
            .map(|job| job.job_id.clone())
            .collect();
        assert_eq!(running, busy_ids);
        assert_eq!(
            worker_health(&worker.url).await.slots_busy as usize,
            running.len(),
            "orcd runs a job the worker has no sequence for"
        );

        // A cancel ends a running job, always.
        for (job_id, _) in &busy {
            let cancelled: CancelResult = reqwest::Client::new()
                .delete(format!("{}/v2/tasks/{job_id}", orcd.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(cancelled.previous_state, JobState::Running);
        }
        for (_, stream) in busy {
            let events = stream.collect().await.unwrap();
            assert!(
                matches!(events.last(), Some(StreamEvent::Done(stats)) if stats.finish_reason == llorch_api::FinishReason::Cancelled),
                "{:?}",
                events.last()
            );
        }
        wait_until(
            "every job to end and the worker's slots to free",
            Duration::from_secs(20),
            || async {
                jobs(&orcd.url).await.iter().all(|job| job.state.is_finished())
                    && worker_health(&worker.url).await.slots_busy == 0
            },
        )
        .await
        .unwrap();

        let ids: BTreeSet<String> = jobs(&orcd.url)
            .await
            .into_iter()
            .map(|job| job.job_id)
            .collect();
        let complete = || {
            let audited = audited_jobs(&audit_path);
            ids.iter().all(|id| audited.get(id) == Some(&(true, true)))
                && audited.keys().all(|id| ids.contains(id))
        };
        wait_until(
            "every job's submission and end in the audit log",
            Duration::from_secs(10),
            || std::future::ready(complete()),
        )
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error}: jobs {ids:?}, audit log {:?}",
                audited_jobs(&audit_path)
            )
        });
    });
}

#[test]
fn health_answers_draining_and_new_tasks_get_503_while_orcd_drains() {
    runtime().block_on(async {
        let drain = Duration::from_secs(4);
        let mut orcd = start_orcd("127.0.0.1:0", &["--drain-secs", "4"]).unwrap();
        // A worker that takes `/execute` and never answers keeps one job in flight.
        let hung = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung_url = format!("http://{}", hung.local_addr().unwrap());
        let _holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = hung.accept().await {
                held.push(stream);
            }
        });
        let registration = WorkerRegistration {
            worker_id: "hung".into(),
            url: hung_url,
            model: default_model_id(),
            backend: Backend::Cpu,
            slots: 1,
            ctx_size: 2048,
            embeddings: false,
        };
        let client = reqwest::Client::new();
        let registered = client
            .post(format!("{}/workers/register", orcd.url))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert_eq!(registered.status(), 200);
        let stream = submit(&orcd.url, &greedy_task("hello", 8)).await.unwrap();
        wait_until("the job to run", Duration::from_secs(10), || async {
            jobs(&orcd.url)
                .await
                .iter()
                .any(|job| job.state == JobState::Running)
        })
        .await
        .unwrap();

        // SAFETY: a signal to our own child.
        unsafe { libc::kill(orcd.pid() as i32, libc::SIGTERM) };
        let signalled = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..4 {
            let health = client
                .get(format!("{}/health", orcd.url))
                .send()
                .await
                .expect("/health refused while orcd drains");
            assert_eq!(health.status(), 503);
            let body: serde_json::Value = health.json().await.unwrap();
            assert_eq!(body["status"], "draining");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let refused = client
            .post(format!("{}/v2/tasks", orcd.url))
            .json(&greedy_task("too late", 8))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 503);
        let error: ErrorBody = refused.json().await.unwrap();
        assert_eq!(error.error_type, ErrorKind::ShuttingDown);
        assert!(
            error.error.contains("accepts no new tasks"),
            "{}",
            error.error
        );
        assert!(
            signalled.elapsed() < drain,
            "the checks ran past the drain; they proved nothing"
        );

        // The job outlives the drain: it ends with `shutting_down` and orcd exits cleanly.
        let events = stream.collect().await.unwrap();
        assert!(
            matches!(
                events.last(),
                Some(StreamEvent::Error {
                    error_type: ErrorKind::ShuttingDown,
                    ..
                })
            ),
            "{events:?}"
        );
        assert!(signalled.elapsed() >= drain, "{:?}", signalled.elapsed());
        let status = orcd.terminate(Duration::from_secs(10)).unwrap();
        assert!(status.success(), "{status:?}");
        assert!(TcpStream::connect(address(&orcd)).await.is_err());
    });
}

/// Sends a request head one line every 300 ms (all of it would take 6 s) and returns how
/// long after its first byte the server closed the connection.
async fn trickle_headers(address: String) -> Duration {
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let started = Instant::now();
    let _ = stream.write_all(b"GET /health HTTP/1.1\r\n").await;
    for line in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let header = format!("x-slow-{line}: 1\r\n");
        if stream.write_all(header.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    assert!(
        !response.starts_with(b"HTTP/1.1 200"),
        "the slow client was served"
    );
    started.elapsed()
}

/// Connects, sends nothing, and returns how long the server kept the connection open.
async fn stay_idle(address: String) -> Duration {
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let started = Instant::now();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut buffer)).await;
    started.elapsed()
}

async fn slow_and_idle_clients_are_cut_off(daemon: &Daemon) {
    let slow = futures::future::join_all((0..20).map(|_| trickle_headers(address(daemon))));
    let idle = stay_idle(address(daemon));
    let health = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let started = Instant::now();
            // A new client each time: a new connection, as a probe makes.
            reqwest::Client::new()
                .get(format!("{}/health", daemon.url))
                .send()
                .await
                .unwrap_or_else(|error| panic!("{} /health failed: {error}", daemon.name));
            slowest = slowest.max(started.elapsed());
        }
        slowest
    };
    let (slow, idle, slowest_health) = tokio::join!(slow, idle, health);
    let name = daemon.name;
    for closed_after in slow {
        assert!(
            closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
            "{name} closed a slow client after {closed_after:?}; its header-read timeout is 1 s"
        );
    }
    // A connection that never sends a byte is cut by the header-read timeout, counted from
    // accept (issue 18: silent sockets must not hold a place until the idle timeout).
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "{name} closed a silent connection after {idle:?}; its header-read timeout is 1 s, counted from accept"
    );
    assert!(
        slowest_health < Duration::from_millis(500),
        "{name} took {slowest_health:?} to answer /health next to 20 slow clients"
    );
}

#[test]
fn slow_and_idle_clients_are_disconnected_while_health_stays_fast() {
    runtime().block_on(async {
        let limits = [
            "--header-read-timeout-secs",
            "1",
            "--idle-timeout-secs",
            "2",
        ];
        let orcd = start_orcd("127.0.0.1:0", &limits).unwrap();
        let worker = start_worker(&orcd.url, 1, &limits).unwrap();
        slow_and_idle_clients_are_cut_off(&orcd).await;
        slow_and_idle_clients_are_cut_off(&worker).await;
    });
}

/// Linear B syllables: the default model has no token for them, so each one is generated as
/// four byte tokens and streamed as one `token` event (measured: 6 events for 24 tokens).
const MULTIBYTE_PROMPT: &str =
    "\u{10000}\u{10001}\u{10002}\u{10003}\u{10004}\u{10005}\u{10006}\u{10007}";

fn tokens_in(events: &[StreamEvent]) -> (u32, u32) {
    events
        .iter()
        .fold((0, 0), |(count, tokens), event| match event {
            StreamEvent::Token { tokens: more, .. } => (count + 1, tokens + more),
            _ => (count, tokens),
        })
}

async fn tokens_metric(orcd_url: &str) -> u64 {
    let text = reqwest::get(format!("{orcd_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!(
        "llorch_tokens_generated_total{{model=\"{}\"}} ",
        default_model_id()
    );
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// `generated_tokens` of the audit record that ended `job_id`.
fn audited_tokens(path: &Path, job_id: &str) -> Option<u32> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
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
        })
}

#[test]
fn generated_tokens_count_tokens_not_events_when_characters_span_several_tokens() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let audit_path = dir.path().join("audit.jsonl");
        let orcd = start_orcd(
            "127.0.0.1:0",
            &["--audit-log", audit_path.to_str().unwrap()],
        )
        .unwrap();
        let _worker = start_worker(&orcd.url, 2, &[]).unwrap();
        wait_for_live_workers(&orcd.url, 1, Duration::from_secs(60))
            .await
            .unwrap();

        // A finished job: orcd's every count equals the worker's `done` count.
        let events = submit(&orcd.url, &greedy_task(MULTIBYTE_PROMPT, 24))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let Some(StreamEvent::Started { job_id, .. }) = events.first().cloned() else {
            panic!("{events:?}")
        };
        let Some(StreamEvent::Done(stats)) = events.last().cloned() else {
            panic!("{events:?}")
        };
        let (event_count, event_tokens) = tokens_in(&events);
        assert!(
            event_count < stats.generated_tokens,
            "every character was one token ({event_count} events); the prompt no longer tests this"
        );
        assert_eq!(event_tokens, stats.generated_tokens, "{events:?}");
        let info: JobInfo = reqwest::get(format!("{}/v2/tasks/{job_id}", orcd.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info.generated_tokens, stats.generated_tokens);
        assert_eq!(
            tokens_metric(&orcd.url).await,
            u64::from(stats.generated_tokens)
        );

        // A cancelled job: orcd's made-up `done` counts the tokens of what it relayed.
        let mut stream = submit(&orcd.url, &greedy_task(MULTIBYTE_PROMPT, 400))
            .await
            .unwrap();
        let mut relayed = Vec::new();
        let mut cancelled_id = None;
        while relayed.len() < 3 {
            match stream.next().await {
                Some(Ok(StreamEvent::Started { job_id, .. })) => cancelled_id = Some(job_id),
                Some(Ok(event @ StreamEvent::Token { .. })) => relayed.push(event),
                other => panic!("{other:?}"),
            }
        }
        let cancelled_id = cancelled_id.unwrap();
        reqwest::Client::new()
            .delete(format!("{}/v2/tasks/{cancelled_id}", orcd.url))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        let rest = stream.collect().await.unwrap();
        relayed.extend(rest.iter().cloned());
        let Some(StreamEvent::Done(cancelled)) = rest.last() else {
            panic!("{rest:?}")
        };
        assert_eq!(cancelled.finish_reason, llorch_api::FinishReason::Cancelled);
        let (cancelled_events, cancelled_tokens) = tokens_in(&relayed);
        assert!(cancelled_events < cancelled_tokens, "{relayed:?}");
        assert_eq!(cancelled.generated_tokens, cancelled_tokens);

        wait_until(
            "both jobs in the audit log",
            Duration::from_secs(10),
            || {
                std::future::ready(
                    audited_tokens(&audit_path, &job_id).is_some()
                        && audited_tokens(&audit_path, &cancelled_id).is_some(),
                )
            },
        )
        .await
        .unwrap();
        assert_eq!(
            audited_tokens(&audit_path, &job_id),
            Some(stats.generated_tokens)
        );
        assert_eq!(
            audited_tokens(&audit_path, &cancelled_id),
            Some(cancelled_tokens)
        );
    });
}
