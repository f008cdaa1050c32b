//! Work nobody takes is stopped, against the real worker (and orcd for embeddings): a job whose
//! caller stops acknowledging its stream is cancelled within the stall limit (a cut link, a
//! stopped orcd), an embedding request whose client hangs up is given up between inputs, a
//! one-input request is answered while a large one is still embedding, a request over the
//! worker's token limit is refused naming it, and a job orcd gave up while the link to the worker
//! was cut is cancelled once the worker reaches orcd again (orcd lists it in the heartbeat's
//! answer).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use llorch_api::StreamEvent;
use llorch_tests::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// `--max-embedding-tokens` of the embedding worker.
const MAX_EMBEDDING_TOKENS: usize = 1024;
/// One input: about 30 tokens, under the 128-token context of the embedding worker, and a
/// few seconds of a loaded machine's CPU (a 270M-parameter model embeds some tens of tokens a
/// second on one busy core).
fn input() -> String {
    "The quick brown fox jumps over the lazy dog. ".repeat(3)
}
/// Inputs of the large request given up by its client: enough that the worker notices the
/// hang-up before it has embedded them all.
const LARGE_INPUTS: usize = 8;
/// Inputs of the large request that must be answered: a few times one input, so that on a
/// loaded machine it still ends within orcd's wait for a worker's answer.
const FAIR_INPUTS: usize = 4;

/// One value of the worker's `/metrics` (0 when the series has no sample yet).
async fn metric(worker_url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{worker_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// A worker of the default model without orcd, ready.
async fn standalone_worker(extra: &[&str]) -> Daemon {
    let model_dir = model_base_dir().display().to_string();
    let mut args: Vec<String> = [
        "--model",
        &default_model_id(),
        "--model-base-dir",
        &model_dir,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let worker = Daemon::start("llorch-worker", &binary("llorch-worker"), &args, &[]).unwrap();
    let health = format!("{}/health", worker.url);
    wait_until("the worker to load", Duration::from_secs(120), || async {
        matches!(reqwest::get(&health).await, Ok(response) if response.status() == 200)
    })
    .await
    .unwrap();
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_caller_stops_acknowledging_its_stream_is_cancelled_within_the_stall_limit() {
    const MAX_TOKENS: u32 = 4000;
    let worker = standalone_worker(&["--slots", "1", "--ctx-size", "4096"]).await;
    // A stand-in for orcd whose receive window is small: once it stops reading, its TCP stack
    // acknowledges nothing more after a few kilobytes, as a stopped orcd's or a cut link's.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = worker.url.strip_prefix("http://").unwrap().parse().unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let body = json!({
        "job_id": "stalled-1",
        "prompt": "Chapter 1. Once upon a time",
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        // Twenty alternatives per token make each event about a kilobyte: the stand-in's
        // window fills within a few tokens however slowly a loaded machine generates.
        "logprobs": 20,
        // The end-of-generation tokens of the default model, banned: the job runs on.
        "logit_bias": [{"token": 1, "bias": -100.0}, {"token": 106, "bias": -100.0}],
    })
    .to_string();
    let request = format!(
        "POST /execute HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains("event: token") {
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buffer))
            .await
            .expect("no token within 60 s")
            .unwrap();
        assert!(read > 0, "{}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
    assert!(received.starts_with(b"HTTP/1.1 200"));
    // From here on the stand-in reads nothing, and keeps the connection open.
    let stopped_reading = Instant::now();
    wait_until(
        "the worker to cancel the job nobody acknowledges",
        Duration::from_secs(60),
        || async { metric(&worker.url, "llorch_worker_streams_stalled_total").await >= 1.0 },
    )
    .await
    .unwrap();
    let took = stopped_reading.elapsed();
    let generated = metric(&worker.url, "llorch_worker_tokens_generated_total").await;
    println!("cancelled {took:?} after the caller stopped reading, {generated} tokens generated");
    // 10 s of the stall limit, plus filling a 4 KiB window and a loaded machine's slack.
    assert!(
        took < Duration::from_secs(45),
        "cancelled only after {took:?}"
    );
    assert!(generated < f64::from(MAX_TOKENS), "{generated} tokens");
    // The engine frees the slot at its next step.
    let health = format!("{}/health", worker.url);
    wait_until(
        "the cancelled job's slot to free",
        Duration::from_secs(10),
        || async {
            let health: Value = reqwest::get(&health).await.unwrap().json().await.unwrap();
            health["slots_busy"] == 0
        },
    )
    .await
    .unwrap();
    drop(stream);
}

/// orcd and one embedding worker registered with it; the tokens of one [`input`].
async fn embedding_stack() -> (Daemon, Daemon, usize) {
    // orcd waits up to 60 s for a worker's answer by default; on a loaded machine (the tests
    // run beside others) the large request may take longer.
    let orcd = start_orcd("127.0.0.1:0", &["--worker-silence-secs", "85"]).unwrap();
    let limit = MAX_EMBEDDING_TOKENS.to_string();
    let worker = start_worker(
        &orcd.url,
        1,
        &[
            "--embeddings",
            "--ctx-size",
            "128",
            "--max-embedding-tokens",
            &limit,
        ],
    )
    .unwrap();
    wait_for_model_embeddings(&orcd.url).await;
    let (status, answer) = embed(&orcd.url, &[input()]).await;
    assert_eq!(status, 200, "{answer}");
    let tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert!(
        tokens <= 128 && tokens * LARGE_INPUTS < MAX_EMBEDDING_TOKENS,
        "{tokens} tokens per input"
    );
    (orcd, worker, tokens)
}

async fn wait_for_model_embeddings(orcd_url: &str) {
    wait_until(
        "the embedding worker to be live",
        Duration::from_secs(120),
        || async {
            workers(orcd_url)
                .await
                .is_ok_and(|workers| workers.iter().any(|worker| worker.embeddings))
        },
    )
    .await
    .unwrap();
}

/// `POST /v1/embeddings` through orcd: the status and the JSON answer.
async fn embed(orcd_url: &str, input: &[String]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{orcd_url}/v1/embeddings"))
        .json(&json!({"model": default_model_id(), "input": input}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A request of `inputs` inputs.
fn large_request(inputs: usize) -> Vec<String> {
    vec![input(); inputs]
}

/// Starts a large request and waits until the worker has embedded some of it.
async fn start_large_request(
    orcd: &Daemon,
    worker: &Daemon,
    input: Vec<String>,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let before = metric(&worker.url, "llorch_worker_embedding_tokens_total").await;
    let url = orcd.url.clone();
    let large = tokio::spawn(async move { embed(&url, &input).await });
    wait_until(
        "the large request to start embedding",
        Duration::from_secs(60),
        || async { metric(&worker.url, "llorch_worker_embedding_tokens_total").await > before },
    )
    .await
    .unwrap();
    large
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_request_whose_client_hangs_up_is_given_up_between_inputs() {
    let (orcd, worker, tokens) = embedding_stack().await;
    let large = large_request(LARGE_INPUTS);
    let large_tokens = large.len() * tokens;
    let before = metric(&worker.url, "llorch_worker_embedding_tokens_total").await;
    let client = start_large_request(&orcd, &worker, large).await;
    // The client hangs up: orcd drops its request to the worker.
    client.abort();
    let _ = client.await;
    wait_until(
        "the worker to give up the request nobody waits for",
        Duration::from_secs(30),
        || async {
            metric(
                &worker.url,
                "llorch_worker_embedding_requests_abandoned_total",
            )
            .await
                >= 1.0
        },
    )
    .await
    .unwrap();
    let embedded = metric(&worker.url, "llorch_worker_embedding_tokens_total").await - before;
    println!("{embedded} of {large_tokens} tokens embedded before the request was given up");
    assert!(
        embedded < large_tokens as f64,
        "the worker embedded all {large_tokens} tokens of a request nobody waited for"
    );
    // The embedding thread is free for the next request.
    let (status, answer) = embed(&orcd.url, &["one more".to_owned()]).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_input_request_is_answered_while_a_large_one_is_still_embedding() {
    let (orcd, worker, _) = embedding_stack().await;
    let large = start_large_request(&orcd, &worker, large_request(FAIR_INPUTS)).await;
    let (status, answer) = embed(&orcd.url, &["a short one".to_owned()]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        !large.is_finished(),
        "the one-input request waited until the large one was done"
    );
    let (status, answer) = large.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"].as_array().unwrap().len(), FAIR_INPUTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_token_limit_is_refused_naming_the_limit() {
    let (orcd, _worker, tokens) = embedding_stack().await;
    let too_many = vec![input(); MAX_EMBEDDING_TOKENS / tokens + 1];
    let (status, answer) = embed(&orcd.url, &too_many).await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-embedding-tokens"), "{message}");
}

/// A TCP relay standing in for a network link that can be cut. Cut, it forwards nothing more:
/// with `freeze`, its connections stay open and unread for good (a dead link's connections
/// never recover, and nothing closes them); without, they are dropped and new ones refused
/// until it is restored (the far side unreachable).
struct Link {
    url: String,
    cut: watch::Sender<bool>,
    upstream: watch::Sender<Option<SocketAddr>>,
}

impl Link {
    async fn start(freeze: bool) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (cut, cut_seen) = watch::channel(false);
        let (upstream, upstream_seen) = watch::channel(None);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let to = *upstream_seen.borrow();
                if let (Some(to), false) = (to, *cut_seen.borrow()) {
                    tokio::spawn(relay(client, to, cut_seen.clone(), freeze));
                }
            }
        });
        Link { url, cut, upstream }
    }

    fn to(&self, url: &str) {
        let address = url.strip_prefix("http://").unwrap().parse().unwrap();
        self.upstream.send_replace(Some(address));
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut cut: watch::Receiver<bool>,
    freeze: bool,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let forward = async {
        tokio::select! {
            _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
            _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
        }
    };
    tokio::select! {
        () = forward => {}
        () = async { drop(cut.wait_for(|cut| *cut).await) } => {
            if freeze {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_orcd_gave_up_while_cut_off_is_cancelled_once_the_worker_reaches_orcd_again() {
    // The worker reaches orcd through `to_orcd`, orcd reaches the worker through `to_worker`.
    let orcd = start_orcd("127.0.0.1:0", &["--heartbeat-timeout-secs", "1"]).unwrap();
    let to_orcd = Link::start(false).await;
    to_orcd.to(&orcd.url);
    let to_worker = Link::start(true).await;
    let worker = start_worker(
        &to_orcd.url,
        1,
        &["--advertise-url", &to_worker.url, "--ctx-size", "4096"],
    )
    .unwrap();
    to_worker.to(&worker.url);
    wait_for_live_workers(&orcd.url, 1, Duration::from_secs(120))
        .await
        .unwrap();
    let task = serde_json::from_value(json!({
        "model": default_model_id(), "prompt": "Chapter 1. Once upon a time",
        "max_tokens": 4000, "temperature": 0,
        "logit_bias": [{"token": 1, "bias": -100.0}, {"token": 106, "bias": -100.0}],
    }))
    .unwrap();
    let mut stream = submit(&orcd.url, &task).await.unwrap();
    let started = stream.next().await.unwrap().unwrap();
    assert!(
        matches!(started, StreamEvent::Started { .. }),
        "{started:?}"
    );
    let first = stream.next().await.unwrap().unwrap();
    assert!(matches!(first, StreamEvent::Token { .. }), "{first:?}");

    // The link dies: orcd hears no heartbeat, marks the worker dead and fails the job; the
    // job's connection stays open at the worker, as over a cut cable.
    to_orcd.cut.send_replace(true);
    to_worker.cut.send_replace(true);
    let events = tokio::time::timeout(Duration::from_secs(30), stream.collect())
        .await
        .expect("orcd ends the job of a worker it marks dead")
        .unwrap();
    assert!(
        matches!(events.last(), Some(StreamEvent::Error { .. })),
        "{events:?}"
    );
    assert_eq!(
        metric(
            &worker.url,
            "llorch_worker_jobs_total{outcome=\"given_up\"}"
        )
        .await,
        0.0
    );

    // orcd is reachable again; the job's old connection is not. The worker's next heartbeat
    // learns that orcd gave the job up, well before the stall rule could notice anything.
    to_orcd.cut.send_replace(false);
    wait_until(
        "the worker to cancel the job orcd gave up",
        Duration::from_secs(10),
        || async {
            metric(
                &worker.url,
                "llorch_worker_jobs_total{outcome=\"given_up\"}",
            )
            .await
                >= 1.0
        },
    )
    .await
    .unwrap();
    assert_eq!(
        metric(&worker.url, "llorch_worker_streams_stalled_total").await,
        0.0
    );
    let health = format!("{}/health", worker.url);
    wait_until("the slot to free", Duration::from_secs(10), || async {
        let health: Value = reqwest::get(&health).await.unwrap().json().await.unwrap();
        health["slots_busy"] == 0
    })
    .await
    .unwrap();
}
