//! orcd under abuse, bounded in time: a thousand clients at once against a small queue (the
//! real `orcd` binary, so its memory can be measured on its own), a fuzz run of the task and
//! registration endpoints, and a shutdown with streams of both APIs in flight.

use crate::support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use llorch_api::{ErrorBody, ErrorKind, JobInfo, StreamEvent};
use orcd::scheduler::SchedulerConfig;
use orcd::Settings;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use support::{any_json, app_with_fake_worker, eventually, within, FakeWorker, Orcd, Script};
use tower::ServiceExt;

const MODEL: &str = "fake-model";

/// The real `orcd` binary on a loopback port, killed on drop; its stderr is kept for checks.
struct OrcdProcess {
    url: String,
    child: Child,
    stderr: std::thread::JoinHandle<String>,
}

impl OrcdProcess {
    fn start(args: &[&str]) -> OrcdProcess {
        let mut child = Command::new(crate::support::orcd_binary())
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .env_remove("LLORCH_API_TOKEN_FILE")
            .env_remove("LLORCH_WORKER_TOKEN_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("orcd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        OrcdProcess { url, child, stderr }
    }

    /// Resident and peak resident memory, in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Stops orcd with SIGTERM and returns its stderr.
    fn stop(mut self) -> String {
        // SIGTERM, as systemd stops it: orcd drains and exits on its own.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        std::mem::replace(&mut self.stderr, std::thread::spawn(String::new))
            .join()
            .unwrap()
    }
}

impl Drop for OrcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Answer {
    /// A stream that ended with `done`.
    Completed,
    /// 429 with Retry-After and a `queue_full` body.
    QueueFull,
    /// A stream that ended with an `error` event.
    ErrorEvent,
}

async fn one_client(client: reqwest::Client, url: String, index: usize) -> Answer {
    let task = json!({"model": MODEL, "prompt": format!("client {index}"), "max_tokens": 4});
    let response = client
        .post(format!("{url}/v2/tasks"))
        .json(&task)
        .send()
        .await
        .unwrap_or_else(|error| panic!("client {index} got no response: {error}"));
    match response.status().as_u16() {
        200 => {
            let mut events = response.bytes_stream().eventsource();
            let mut last = None;
            while let Some(event) = events.next().await {
                let event = event.unwrap_or_else(|error| panic!("client {index}: {error}"));
                last = Some(StreamEvent::from_sse(&event.event, &event.data).unwrap());
            }
            match last {
                Some(StreamEvent::Done(_)) => Answer::Completed,
                Some(StreamEvent::Error { .. }) => Answer::ErrorEvent,
                other => panic!("client {index}: stream ended without an explicit end: {other:?}"),
            }
        }
        429 => {
            assert!(
                response.headers().contains_key("retry-after"),
                "client {index}"
            );
            let body: ErrorBody = response.json().await.unwrap();
            assert_eq!(body.error_type, ErrorKind::QueueFull);
            Answer::QueueFull
        }
        status => panic!(
            "client {index}: unexpected status {status}: {}",
            response.text().await.unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_clients_all_get_an_answer_and_memory_stays_bounded() {
    const CLIENTS: usize = 1000;
    // A thousand clients of one address: past the per-peer limit's default (256).
    let orcd = OrcdProcess::start(&["--queue-limit", "16", "--max-connections-per-peer", "1024"]);
    let worker = FakeWorker::start(Script::complete(4, Duration::from_millis(2))).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let registered = client
        .post(format!("{}/workers/register", orcd.url))
        .json(&worker.registration("w1", MODEL, 4))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let (rss_before, _) = orcd.memory_kib();

    let mut wave_peaks = Vec::new();
    for wave in 0..2 {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|index| tokio::spawn(one_client(client.clone(), orcd.url.clone(), index)))
            .collect();
        let answers = within(
            "every client to get an answer",
            futures::future::join_all(clients),
        )
        .await;
        let answers: Vec<Answer> = answers.into_iter().map(Result::unwrap).collect();
        let count = |kind| answers.iter().filter(|answer| **answer == kind).count();
        let (completed, refused, failed) = (
            count(Answer::Completed),
            count(Answer::QueueFull),
            count(Answer::ErrorEvent),
        );
        println!(
            "wave {wave}: {completed} completed, {refused} refused with 429, {failed} error events"
        );
        assert_eq!(completed + refused + failed, CLIENTS);
        // 4 slots and 16 queue places are free when a wave starts: at least 20 get through.
        assert!(
            completed >= 20,
            "the worker kept serving: {completed} completed"
        );
        assert!(
            refused > 0,
            "a 16-job queue must refuse some of {CLIENTS} clients"
        );
        assert_eq!(failed, 0, "nothing failed; refusals are 429s");
        wave_peaks.push(orcd.memory_kib());
    }

    let health = client
        .get(format!("{}/health", orcd.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (rss_after, peak) = wave_peaks[1];
    println!(
        "orcd memory: {} MiB before, {} MiB after, {} MiB peak",
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024
    );
    assert!(peak < 256 * 1024, "orcd peaked at {} MiB", peak / 1024);
    // A second wave of the same size must not grow what the first left behind (no leak).
    let after_first = wave_peaks[0].0;
    assert!(
        rss_after < after_first + 32 * 1024,
        "resident memory grew from {} to {} MiB between identical waves",
        after_first / 1024,
        rss_after / 1024
    );
    let stderr = orcd.stop();
    assert!(!stderr.contains("panicked"), "orcd panicked:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_of_one_peer_past_every_limit_leave_health_answerable() {
    // More than `--max-connections` (1024 by default), all from 127.0.0.2, sending nothing.
    const SILENT: usize = 1100;
    let orcd = OrcdProcess::start(&[]);
    let address: std::net::SocketAddr = orcd.url.strip_prefix("http://").unwrap().parse().unwrap();
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        // Connecting completes in the kernel's backlog whether orcd accepts or not.
        match tokio::time::timeout(Duration::from_secs(5), socket.connect(address)).await {
            Ok(Ok(stream)) => silent.push(stream),
            other => panic!("silent connection {} failed: {other:?}", silent.len()),
        }
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = std::time::Instant::now();
    let health = within("/health next to the silent connections", async {
        client
            .get(format!("{}/health", orcd.url))
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    assert_eq!(health, 200);
    println!(
        "/health answered in {:?} next to {SILENT} silent connections",
        started.elapsed()
    );
    drop(silent);
    let stderr = orcd.stop();
    assert!(
        stderr.contains("--max-connections-per-peer"),
        "the refused connections were not logged:\n{stderr}"
    );
}

/// Strings an attacker would try for ids and text.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => ".{0,40}",
        6 => "[a-z0-9./:_-]{1,40}",
        1 => Just("../../etc/passwd".to_owned()),
        1 => Just("w1\nINFO forged log line".to_owned()),
        1 => Just("\u{1b}[31mred\u{202e}".to_owned()),
        1 => Just(String::new()),
        // Past the 256 KiB prompt limit; rarer, because every copy costs.
        1 => Just("x".repeat(300_000)),
        3 => Just(MODEL.to_owned()),
    ]
}

/// A field value: usually the right type, often not.
fn field(right: BoxedStrategy<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => right.prop_map(Some),
        1 => any_json().prop_map(Some),
        1 => Just(None),
    ]
}

fn task_body() -> impl Strategy<Value = Vec<u8>> {
    let object = (
        field(hostile_string().prop_map(Value::String).boxed()),
        field(hostile_string().prop_map(Value::String).boxed()),
        field(
            prop::collection::vec((hostile_string(), hostile_string()), 0..4)
                .prop_map(|messages| {
                    json!(messages
                        .into_iter()
                        .map(|(role, content)| json!({"role": role, "content": content}))
                        .collect::<Vec<_>>())
                })
                .boxed(),
        ),
        field(any::<i64>().prop_map(Value::from).boxed()),
        field(any::<f32>().prop_map(|t| json!(t)).boxed()),
        field(
            prop::collection::vec(hostile_string(), 0..6)
                .prop_map(|s| json!(s))
                .boxed(),
        ),
    )
        .prop_map(|(model, prompt, messages, max_tokens, temperature, stop)| {
            let mut body = serde_json::Map::new();
            for (key, value) in [
                ("model", model),
                ("prompt", prompt),
                ("messages", messages),
                ("max_tokens", max_tokens),
                ("temperature", temperature),
                ("stop", stop),
            ] {
                if let Some(value) = value {
                    body.insert(key.into(), value);
                }
            }
            body.insert("stream".into(), json!(false));
            serde_json::to_vec(&body).unwrap()
        });
    prop_oneof![
        4 => object,
        1 => any_json().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (1usize..200).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
    ]
}

fn registration_body() -> impl Strategy<Value = Vec<u8>> {
    let object = (
        field(hostile_string().prop_map(Value::String).boxed()),
        field(
            prop_oneof![
                hostile_string(),
                "http://[a-z]{1,8}:[0-9]{1,6}",
                Just("http://user:pw@host:1".to_owned()),
                Just("javascript:alert(1)".to_owned()),
            ]
            .prop_map(Value::String)
            .boxed(),
        ),
        field(hostile_string().prop_map(Value::String).boxed()),
        field(
            prop_oneof![Just("cpu"), Just("cuda"), Just("tpu")]
                .prop_map(|b| json!(b))
                .boxed(),
        ),
        field(any::<i64>().prop_map(Value::from).boxed()),
        field(any::<i64>().prop_map(Value::from).boxed()),
    )
        .prop_map(|(worker_id, url, model, backend, slots, ctx_size)| {
            let mut body = serde_json::Map::new();
            for (key, value) in [
                ("worker_id", worker_id),
                ("url", url),
                ("model", model),
                ("backend", backend),
                ("slots", slots),
                ("ctx_size", ctx_size),
            ] {
                if let Some(value) = value {
                    body.insert(key.into(), value);
                }
            }
            serde_json::to_vec(&body).unwrap()
        });
    prop_oneof![
        4 => object,
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Sends one body and checks the answer: never a server error or a panic. 503 is allowed only
/// as `no_worker` (a well-formed task for a model nobody serves).
fn check_answer(
    statuses: &Mutex<BTreeMap<u16, usize>>,
    runtime: &tokio::runtime::Runtime,
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(), TestCaseError> {
    let shown = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, error_type) = runtime.block_on(async {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        // A valid task streams from the fake worker; its body is not needed.
        let error_type = if status >= 400 {
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .map(|body| body.error_type)
        } else {
            None
        };
        (status, error_type)
    });
    *statuses.lock().unwrap().entry(status).or_default() += 1;
    prop_assert!(
        status < 500 || (status == 503 && error_type == Some(ErrorKind::NoWorker)),
        "{method} {path} answered {status} to {shown}"
    );
    if status >= 400 && status != 405 {
        prop_assert!(
            error_type.is_some(),
            "{status} without an error body for {shown}"
        );
    }
    Ok(())
}

#[test]
fn fuzzed_task_and_registration_bodies_only_get_client_errors() {
    const TASK_CASES: u32 = 3000;
    const REGISTRATION_CASES: u32 = 2000;
    const PATH_CASES: u32 = 1000;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, _worker) = runtime.block_on(app_with_fake_worker(
        Script::complete(1, Duration::ZERO),
        MODEL,
    ));
    let tried = Arc::new(AtomicUsize::new(0));
    let statuses = Mutex::new(BTreeMap::new());
    let config = |cases| Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };

    let counter = tried.clone();
    TestRunner::new(config(TASK_CASES))
        .run(&task_body(), |body| {
            counter.fetch_add(1, Ordering::Relaxed);
            check_answer(&statuses, &runtime, &app, "POST", "/v2/tasks", body)
        })
        .unwrap();
    let counter = tried.clone();
    TestRunner::new(config(REGISTRATION_CASES))
        .run(&registration_body(), |body| {
            counter.fetch_add(1, Ordering::Relaxed);
            check_answer(&statuses, &runtime, &app, "POST", "/workers/register", body)
        })
        .unwrap();
    let counter = tried.clone();
    let path_id = prop::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| {
        bytes
            .iter()
            .map(|byte| format!("%{byte:02X}"))
            .collect::<String>()
    });
    TestRunner::new(config(PATH_CASES))
        .run(&path_id, |id| {
            counter.fetch_add(1, Ordering::Relaxed);
            let heartbeat = br#"{"slots_busy": 0, "slots_total": 1}"#.to_vec();
            check_answer(
                &statuses,
                &runtime,
                &app,
                "POST",
                &format!("/workers/{id}/heartbeat"),
                heartbeat,
            )?;
            check_answer(
                &statuses,
                &runtime,
                &app,
                "DELETE",
                &format!("/v2/tasks/{id}"),
                Vec::new(),
            )?;
            check_answer(
                &statuses,
                &runtime,
                &app,
                "DELETE",
                &format!("/workers/{id}"),
                Vec::new(),
            )
        })
        .unwrap();
    let tried = tried.load(Ordering::Relaxed);
    let statuses = statuses.into_inner().unwrap();
    println!("fuzzed {tried} inputs (task bodies, registration bodies, path ids); answers by status: {statuses:?}");
    assert!(tried >= (TASK_CASES + REGISTRATION_CASES + PATH_CASES) as usize);
}

/// 40 streams on an 8-slot worker: 8 generate, 32 wait in the queue. A `/v2` stream answers 200
/// with `queued` at once; an OpenAI stream decides its status when a worker accepts it, so a
/// queued one has no answer yet. On shutdown every one ends explicitly: a running stream with
/// its error event (`/v2`) or error chunk and `[DONE]` (`/v1`), a queued OpenAI request with a
/// 503 `shutting_down`.
#[tokio::test]
async fn shutdown_under_load_ends_every_stream_of_both_apis_explicitly() {
    const STREAMS: usize = 40;
    let orcd = Orcd::start(Settings {
        drain: Duration::from_millis(200),
        scheduler: SchedulerConfig {
            queue_limit: 64,
            ..SchedulerConfig::default()
        },
        ..Settings::default()
    })
    .await;
    let worker = FakeWorker::start(Script::complete(400, Duration::from_millis(25))).await;
    orcd.register(&worker.registration("w1", MODEL, 8)).await;

    let mut clients = Vec::new();
    for index in 0..STREAMS {
        let client = orcd.client.clone();
        let url = orcd.url.clone();
        // Half on `/v2/tasks`, half on `/v1/chat/completions`.
        let openai = index % 2 == 1;
        let (path, body) = if openai {
            let body = json!({"model": MODEL, "stream": true, "max_tokens": 400,
                              "messages": [{"role": "user", "content": "go"}]});
            ("/v1/chat/completions", body)
        } else {
            (
                "/v2/tasks",
                json!({"model": MODEL, "prompt": "go", "max_tokens": 400}),
            )
        };
        clients.push(tokio::spawn(async move {
            let response = client
                .post(format!("{url}{path}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            if status != 200 {
                return (
                    openai,
                    Ending::Refused(status, response.text().await.unwrap()),
                );
            }
            let mut events = response.bytes_stream().eventsource();
            let mut last = Vec::new();
            while let Some(event) = events.next().await {
                let event = event.expect("a well-formed stream");
                last.push((event.event, event.data));
                if last.len() > 2 {
                    last.remove(0);
                }
            }
            (openai, Ending::Streamed(last))
        }));
    }
    eventually("every request to be admitted", async || {
        orcd.get_json::<Vec<JobInfo>>("/v2/tasks").await.len() == STREAMS
    })
    .await;
    within("orcd to shut down", orcd.shut_down()).await.unwrap();

    let mut refused = 0;
    for client in clients {
        match within("a stream to end", client).await.unwrap() {
            (true, Ending::Streamed(last)) => {
                // The error chunk, then `[DONE]`.
                assert_eq!(last[1].1, "[DONE]", "{last:?}");
                let chunk: Value = serde_json::from_str(&last[0].1).unwrap();
                assert_eq!(chunk["error"]["code"], "shutting_down", "{chunk}");
            }
            (true, Ending::Refused(status, body)) => {
                refused += 1;
                assert_eq!(status, 503, "{body}");
                let body: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body["error"]["code"], "shutting_down", "{body}");
            }
            (false, Ending::Streamed(last)) => {
                let (name, data) = &last[1];
                let event = StreamEvent::from_sse(name, data).unwrap();
                assert!(
                    matches!(
                        event,
                        StreamEvent::Error {
                            error_type: ErrorKind::ShuttingDown,
                            ..
                        }
                    ),
                    "{event:?}"
                );
            }
            (false, Ending::Refused(status, body)) => {
                panic!("a /v2 task was refused with {status}: {body}")
            }
        }
    }
    // 8 slots hold 4 OpenAI streams at most (alternating submissions); the rest were queued.
    assert!(
        refused >= STREAMS / 2 - 8,
        "only {refused} queued OpenAI requests were refused"
    );
}

/// How a client's request ended.
enum Ending {
    /// A stream, with its last two events (name, data).
    Streamed(Vec<(String, String)>),
    /// A status other than 200, with the body.
    Refused(u16, String),
}
