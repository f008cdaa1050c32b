//! Engine tests against the real default model (Gemma 3 270M): greedy determinism, streaming,
//! concurrent sequences, cancellation, stop strings, length and context limits. One model is
//! loaded per test binary; each test runs its own small engine on it.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{body::Body, http::Request};
use llama_cpp_2::model::LlamaModel;
use llorch_api::embeddings::EmbedResponse;
use llorch_api::{
    Backend, ChatMessage, ErrorBody, ErrorKind, ExecuteRequest, FinishReason, GenerationStats,
    OutputConstraint, SamplingParams, StreamEvent,
};
use llorch_catalog::{default_model_base_dir, model_path, Catalog};
use llorch_worker::{
    auth::WorkerAuth,
    embeddings::{EmbeddingSettings, Embeddings, DEFAULT_MAX_REQUEST_TOKENS},
    engine::{load_model, EngineHandle, EngineSettings, ModelSource, Speculation},
    error::WorkerError,
    server::app,
    state::AppState,
    validation::{validate, ValidationError},
};
use tokio::sync::mpsc::UnboundedReceiver;
use tower::ServiceExt;

/// A completion prompt that the base model continues with plain, deterministic English.
const PROMPT: &str = "The capital of France is";
/// Every wait in these tests is bounded; generation on a busy 2-core machine stays well below.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The default model: `LLORCH_TEST_MODEL`, else the catalog's default model under the model
/// base dir. Missing is a failure with the command that fixes it, never a silent pass.
fn test_model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("LLORCH_TEST_MODEL") {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("LLORCH_MODEL_BASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_model_base_dir);
    let catalog = Catalog::builtin();
    let entry = catalog.default_model();
    let path = model_path(&base, entry);
    assert!(
        path.is_file(),
        "the engine tests need the default model at {}\n\
         hint: run `cargo xtask models download {}` (or set LLORCH_TEST_MODEL to a GGUF file)",
        path.display(),
        entry.id
    );
    path
}

fn model() -> &'static LlamaModel {
    static MODEL: OnceLock<&'static LlamaModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = test_model_path();
        load_model(&path, Backend::Cpu, 0)
            .unwrap_or_else(|error| panic!("loading the test model: {error}"))
    })
}

fn settings(slots: u32, ctx_size: u32) -> EngineSettings {
    EngineSettings {
        model_id: "gemma3-270m".into(),
        backend: Backend::Cpu,
        gpu: 0,
        threads: 1,
        threads_batch: 1,
        adapt_threads: false,
        ctx_size,
        slots,
        batch_size: 512,
        queue_size: 8,
        max_burst_wait: Duration::from_millis(5),
        speculation: Speculation::default(),
    }
}

async fn start(settings: EngineSettings) -> EngineHandle {
    let engine = EngineHandle::start(settings, ModelSource::Loaded(model()));
    tokio::time::timeout(TIMEOUT, engine.wait_ready())
        .await
        .expect("engine ready in time")
        .expect("engine starts");
    engine
}

fn request(job_id: &str, prompt: &str, max_tokens: u32) -> ExecuteRequest {
    ExecuteRequest {
        job_id: job_id.into(),
        prompt: Some(prompt.into()),
        messages: None,
        parse_special: false,
        sampling: SamplingParams {
            max_tokens,
            ..SamplingParams::default()
        },
        tools: Default::default(),
        unknown: Default::default(),
    }
}

async fn submit(
    engine: &EngineHandle,
    request: ExecuteRequest,
) -> Result<UnboundedReceiver<StreamEvent>, WorkerError> {
    let valid = validate(request, engine.settings().limits())?;
    engine.submit(valid, Instant::now()).await
}

/// A finished stream: its token texts in order, when they arrived, and how it ended.
struct Outcome {
    tokens: Vec<String>,
    first_token_at: Option<Instant>,
    ended_at: Instant,
    end: Result<GenerationStats, (String, ErrorKind)>,
}

impl Outcome {
    fn text(&self) -> String {
        self.tokens.concat()
    }
    fn stats(&self) -> &GenerationStats {
        match &self.end {
            Ok(stats) => stats,
            Err((message, kind)) => panic!("stream failed ({kind:?}): {message}"),
        }
    }
}

async fn collect(events: UnboundedReceiver<StreamEvent>) -> Outcome {
    collect_after(events, Vec::new()).await
}

/// The rest of a stream whose first `tokens` were already read.
async fn collect_after(
    mut events: UnboundedReceiver<StreamEvent>,
    mut tokens: Vec<String>,
) -> Outcome {
    let mut first_token_at = None;
    let read = async {
        while let Some(event) = events.recv().await {
            match event {
                StreamEvent::Token { text, index, .. } => {
                    assert_eq!(
                        index as usize,
                        tokens.len(),
                        "token indexes are consecutive"
                    );
                    first_token_at.get_or_insert_with(Instant::now);
                    tokens.push(text);
                }
                StreamEvent::Done(stats) => return Ok(stats),
                StreamEvent::Error {
                    message,
                    error_type,
                } => return Err((message, error_type)),
                other => panic!("unexpected event from a worker: {other:?}"),
            }
        }
        panic!("stream ended without `done` or `error`");
    };
    let end = tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("stream ends in time");
    Outcome {
        tokens,
        first_token_at,
        ended_at: Instant::now(),
        end,
    }
}

async fn generate(engine: &EngineHandle, request: ExecuteRequest) -> Outcome {
    collect(submit(engine, request).await.expect("job accepted")).await
}

/// Waits until every admitted job is gone (admission permits returned, slots freed).
async fn wait_idle(engine: &EngineHandle, within: Duration) {
    tokio::time::timeout(within, engine.wait_idle())
        .await
        .expect("slots freed in time");
    assert_eq!(engine.load().busy, 0);
}

async fn wait_busy(engine: &EngineHandle, busy: u32) {
    let mut load = engine.subscribe_load();
    tokio::time::timeout(TIMEOUT, load.wait_for(|load| load.busy == busy))
        .await
        .unwrap_or_else(|_| panic!("{busy} slots busy at once"))
        .expect("engine alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_streams_max_tokens_deterministically() {
    let engine = start(settings(1, 512)).await;
    let first = generate(&engine, request("a", PROMPT, 24)).await;
    let second = generate(&engine, request("b", PROMPT, 24)).await;

    let stats = first.stats();
    assert_eq!(stats.finish_reason, FinishReason::Length);
    assert_eq!(stats.generated_tokens, 24);
    assert!(stats.prompt_tokens >= 5, "{stats:?}");
    assert!(
        first.tokens.len() >= 16,
        "only {} token events",
        first.tokens.len()
    );
    assert!(
        stats.tokens_per_second > 0.0 && stats.time_to_first_token_ms > 0.0,
        "{stats:?}"
    );
    assert!(first.text().contains("France"), "{:?}", first.text());
    assert_eq!(
        first.text(),
        second.text(),
        "greedy decoding is deterministic"
    );

    let one = generate(&engine, request("c", PROMPT, 1)).await;
    assert_eq!(one.stats().generated_tokens, 1);
    assert_eq!(one.stats().finish_reason, FinishReason::Length);
    assert!(first.text().starts_with(&one.text()));
    engine.shutdown().await;
}

/// A conversation resends its whole history every turn. The slot that ran turn 1 still holds
/// it, so turn 2 reports those tokens as cached, and greedy decoding from the cache gives the
/// text a cold engine gives. A request that shares nothing goes to the empty slot and leaves
/// the conversation's cache alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_turn_of_a_conversation_starts_from_the_cache() {
    let engine = start(settings(2, 512)).await;
    let turn1 = generate(&engine, request("t1", PROMPT, 16)).await;
    assert_eq!(turn1.stats().cached_prompt_tokens, 0);
    let turn1_tokens = turn1.stats().prompt_tokens + turn1.stats().generated_tokens;

    let history = format!("{PROMPT}{} The capital of Germany is", turn1.text());
    let turn2 = generate(&engine, request("t2", &history, 16)).await;
    let stats = turn2.stats().clone();
    // Turn 1's prompt and answer, but for the last answer token (sampled, never decoded) and
    // any token that tokenizes differently once the answer is text.
    assert!(
        stats.cached_prompt_tokens >= turn1.stats().prompt_tokens
            && stats.cached_prompt_tokens < turn1_tokens
            && stats.cached_prompt_tokens + 4 >= turn1_tokens - 1,
        "turn 1 held {turn1_tokens} tokens, turn 2 reports {stats:?}"
    );

    let unrelated = generate(&engine, request("u", "Once upon a time", 8)).await;
    assert_eq!(unrelated.stats().cached_prompt_tokens, 0);
    let turn3 = generate(
        &engine,
        request("t3", &format!("{history}{} and", turn2.text()), 4),
    )
    .await;
    assert!(
        turn3.stats().cached_prompt_tokens > stats.cached_prompt_tokens,
        "{:?}",
        turn3.stats()
    );
    let metrics = engine.metrics_text();
    let cached_total = stats.cached_prompt_tokens + turn3.stats().cached_prompt_tokens;
    assert!(
        metrics.contains(&format!(
            "llorch_worker_prompt_tokens_cached_total {cached_total}"
        )),
        "{metrics}"
    );
    engine.shutdown().await;

    let cold_engine = start(settings(1, 512)).await;
    let cold = generate(&cold_engine, request("cold", &history, 16)).await;
    assert_eq!(cold.stats().cached_prompt_tokens, 0);
    assert_eq!(cold.stats().prompt_tokens, stats.prompt_tokens);
    assert_eq!(turn2.text(), cold.text(), "the cache changes no token");
    cold_engine.shutdown().await;
}

/// A prompt long enough that copying its KV cells beats decoding it again.
fn long_prompt() -> String {
    format!(
        "{} {PROMPT}",
        "The quick brown fox jumps over the lazy dog. ".repeat(4)
    )
}

/// The `n` choices of one request reach the worker as jobs with one prompt. One slot decodes
/// it; the others wait for that prefill and start from a copy of its KV cells, so they report
/// all but the prompt's last token as cached, and greedy decoding from a copy gives the text
/// a cold engine gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_with_one_prompt_decode_it_once() {
    let prompt = long_prompt();
    let engine = start(settings(4, 512)).await;
    let mut streams = Vec::new();
    for choice in 0..3 {
        streams.push(
            submit(&engine, request(&format!("c{choice}"), &prompt, 12))
                .await
                .unwrap(),
        );
    }
    let outcomes = futures::future::join_all(streams.into_iter().map(collect)).await;
    let prompt_tokens = outcomes[0].stats().prompt_tokens;
    assert!(prompt_tokens > 40, "{prompt_tokens} prompt tokens");
    let mut cached: Vec<u32> = outcomes
        .iter()
        .map(|outcome| outcome.stats().cached_prompt_tokens)
        .collect();
    cached.sort_unstable();
    assert_eq!(cached, [0, prompt_tokens - 1, prompt_tokens - 1]);
    let metrics = engine.metrics_text();
    assert!(
        metrics.contains(&format!(
            "llorch_worker_prompt_tokens_cached_total {}",
            2 * (prompt_tokens - 1)
        )),
        "{metrics}"
    );
    engine.shutdown().await;

    let cold_engine = start(settings(1, 512)).await;
    let cold = generate(&cold_engine, request("cold", &prompt, 12)).await;
    for outcome in &outcomes {
        assert_eq!(
            outcome.text(),
            cold.text(),
            "a copied cache changes no token"
        );
    }
    cold_engine.shutdown().await;
}

/// Decode steps the engine has run so far, from its metrics.
fn decode_steps(engine: &EngineHandle) -> u64 {
    let text = engine.metrics_text();
    text.lines()
        .find_map(|line| {
            line.strip_prefix("llorch_worker_decode_step_seconds_count ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no decode step count in:\n{text}"))
}

/// Two requests sent 2 ms apart to an idle engine, each answered with 6 tokens: the steps it
/// takes for both, after a warm-up that teaches it what a prompt token costs.
/// How the second of two requests reaches the engine.
#[derive(Clone, Copy)]
enum SecondRequest {
    /// Submitted right behind the first, while the engine waits for a burst.
    RightBehind,
    /// Submitted once the first has its first token: its prefill step is over.
    AfterFirstToken,
}

async fn steps_for_two_requests(max_burst_wait: Duration, second_sent: SecondRequest) -> u64 {
    // Step counts are the point here: no drafts, one token per step.
    let engine = start(EngineSettings {
        max_burst_wait,
        speculation: Speculation::Off,
        ..settings(2, 512)
    })
    .await;
    let prompt = long_prompt().repeat(3);
    generate(&engine, request("warm-up", &prompt, 2)).await;
    wait_idle(&engine, TIMEOUT).await;
    let before = decode_steps(&engine);
    // Different first words: neither can reuse the other's (or the warm-up's) cache.
    let mut first = submit(&engine, request("first", &format!("One. {prompt}"), 6))
        .await
        .unwrap();
    let mut first_tokens = Vec::new();
    if let SecondRequest::AfterFirstToken = second_sent {
        match first.recv().await.expect("the first job streams") {
            StreamEvent::Token { text, .. } => first_tokens.push(text),
            other => panic!("expected a token, got {other:?}"),
        }
    }
    let second = submit(&engine, request("second", &format!("Two. {prompt}"), 6))
        .await
        .unwrap();
    let outcomes = futures::future::join_all([
        collect_after(first, first_tokens),
        collect_after(second, Vec::new()),
    ])
    .await;
    for outcome in &outcomes {
        assert_eq!(outcome.stats().generated_tokens, 6);
    }
    let steps = decode_steps(&engine) - before;
    engine.shutdown().await;
    steps
}

/// Woken from idle, the engine waits a share of the prefill it is about to run (1%: several
/// ms for these ~600-token prompts) for more requests, so two sent together share their
/// prefill step: one step for both prompts, then one per further token — 6 steps for 6 tokens
/// each. A second request that comes once the first's prefill step is over cannot share it and
/// takes at least one step more. (How long the wait is, is unit-tested in `engine/burst.rs`;
/// without the wait, whether a request sent a moment later makes the first step depends on the
/// scheduler, so no test here counts on either outcome.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_together_share_their_first_step() {
    assert_eq!(
        steps_for_two_requests(Duration::from_secs(1), SecondRequest::RightBehind).await,
        6
    );
    let apart = steps_for_two_requests(Duration::ZERO, SecondRequest::AfterFirstToken).await;
    assert!(
        apart >= 7,
        "a request after the first's prefill step shared it: {apart} steps"
    );
}

/// A request that starts like one still generating copies that slot's cells, generated
/// tokens and all, and cuts the copy back to the shared prefix: the generating job goes on
/// undisturbed and the new one answers as a cold engine does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_starting_like_a_running_job_copies_its_cells() {
    let first_prompt = long_prompt();
    let second_prompt = format!("{first_prompt} Paris. The capital of Spain is");
    let engine = start(settings(2, 512)).await;
    let mut first = submit(&engine, request("running", &first_prompt, 48))
        .await
        .unwrap();
    let mut first_tokens = Vec::new();
    while first_tokens.len() < 4 {
        match first.recv().await.expect("the first job streams") {
            StreamEvent::Token { text, .. } => first_tokens.push(text),
            other => panic!("expected tokens, got {other:?}"),
        }
    }
    let second = generate(&engine, request("copied", &second_prompt, 12)).await;
    let first = collect_after(first, first_tokens).await;
    let first_prompt_tokens = first.stats().prompt_tokens;
    assert_eq!(first.stats().generated_tokens, 48);
    // At least the first prompt (less a token that may tokenize differently at the seam), and
    // more where the running job had already generated what the second prompt goes on with.
    assert!(
        second.stats().cached_prompt_tokens + 2 >= first_prompt_tokens
            && second.stats().cached_prompt_tokens < second.stats().prompt_tokens,
        "the first prompt had {first_prompt_tokens} tokens; the second reports {:?}",
        second.stats()
    );
    engine.shutdown().await;

    let cold_engine = start(settings(1, 512)).await;
    let cold_second = generate(&cold_engine, request("cold2", &second_prompt, 12)).await;
    let cold_first = generate(&cold_engine, request("cold1", &first_prompt, 48)).await;
    cold_engine.shutdown().await;
    assert_eq!(
        second.text(),
        cold_second.text(),
        "a copied cache changes no token"
    );
    assert_eq!(
        first.text(),
        cold_first.text(),
        "copying from a running job leaves it alone"
    );
}

/// A new thread count means a new llama.cpp context: the slots' KV cells move into it, so a
/// conversation continues from its cache with the text it would have had anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_thread_count_keeps_the_cache() {
    let engine = start(settings(2, 512)).await;
    let turn1 = generate(&engine, request("t1", PROMPT, 16)).await;
    // The same count as before still builds a new context, and keeps the numbers comparable
    // with a cold engine of one thread.
    engine.set_threads(1);
    let history = format!("{PROMPT}{} The capital of Italy is", turn1.text());
    let turn2 = generate(&engine, request("t2", &history, 16)).await;
    assert!(
        turn2.stats().cached_prompt_tokens >= turn1.stats().prompt_tokens,
        "{:?}",
        turn2.stats()
    );
    engine.shutdown().await;

    let cold_engine = start(settings(1, 512)).await;
    let cold = generate(&cold_engine, request("cold", &history, 16)).await;
    assert_eq!(turn2.text(), cold.text());
    cold_engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_samples_the_same_text() {
    let engine = start(settings(1, 512)).await;
    let sampled = |job: &str| {
        let mut request = request(job, "Once upon a time", 24);
        request.sampling.temperature = 0.9;
        request.sampling.seed = Some(42);
        request
    };
    let first = generate(&engine, sampled("a")).await;
    let second = generate(&engine, sampled("b")).await;
    assert_eq!(first.stats().generated_tokens, 24);
    assert_eq!(first.text(), second.text());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_schema_holds_greedy_and_sampled_text_to_it() {
    // The grammar is checked against the chain's choice first and applied to the whole
    // vocabulary only when that choice breaks it; the base model, asked for English, breaks it
    // at nearly every token, so both paths run here.
    let engine = start(settings(1, 512)).await;
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "shape": {"enum": ["round", "square"]},
        },
        "required": ["colour", "shape"],
        "additionalProperties": false,
    });
    for (temperature, seed) in [(0.0, None), (1.0, Some(7))] {
        let mut constrained = request("schema", PROMPT, 64);
        constrained.sampling.temperature = temperature;
        constrained.sampling.seed = seed;
        constrained.sampling.constraint = Some(OutputConstraint::JsonSchema {
            schema: schema.clone(),
        });
        let outcome = generate(&engine, constrained).await;
        let text = outcome.text();
        let value: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|error| panic!("temperature {temperature}: {text:?}: {error}"));
        assert!(
            ["red", "green", "blue"].contains(&value["colour"].as_str().unwrap_or_default())
                && ["round", "square"].contains(&value["shape"].as_str().unwrap_or_default()),
            "temperature {temperature}: {text}"
        );
        assert_eq!(outcome.stats().finish_reason, FinishReason::Stop, "{text}");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_the_converter_refuses_is_a_validation_error_and_the_engine_goes_on() {
    let engine = start(settings(1, 512)).await;
    let mut unresolved = request("bad-ref", PROMPT, 4);
    unresolved.sampling.constraint = Some(OutputConstraint::JsonSchema {
        schema: serde_json::json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}),
    });
    let error = submit(&engine, unresolved).await.unwrap_err();
    assert!(
        matches!(error, WorkerError::Validation(ValidationError::Grammar(_))),
        "{error:?}"
    );
    assert_eq!(
        generate(&engine, request("next", PROMPT, 4))
            .await
            .stats()
            .generated_tokens,
        4
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sequences_decode_together() {
    let engine = start(settings(2, 512)).await;
    let a = submit(&engine, request("a", PROMPT, 32)).await.unwrap();
    let b = submit(&engine, request("b", "Once upon a time", 32))
        .await
        .unwrap();
    wait_busy(&engine, 2).await;
    let (a, b) = tokio::join!(collect(a), collect(b));
    assert_eq!(a.stats().generated_tokens, 32);
    assert_eq!(b.stats().generated_tokens, 32);
    assert_ne!(a.text(), b.text());
    // Interleaved, not one after the other: each stream started before the other ended.
    assert!(a.first_token_at.unwrap() < b.ended_at);
    assert!(b.first_token_at.unwrap() < a.ended_at);
    wait_idle(&engine, Duration::from_secs(5)).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_jobs_than_slots_wait_and_all_finish() {
    let engine = start(settings(2, 256)).await;
    let mut streams = Vec::new();
    for job in 0..5 {
        streams.push(
            submit(&engine, request(&format!("j{job}"), PROMPT, 8))
                .await
                .unwrap(),
        );
    }
    let outcomes = futures::future::join_all(streams.into_iter().map(collect)).await;
    for outcome in &outcomes {
        assert_eq!(outcome.stats().generated_tokens, 8);
    }
    wait_idle(&engine, Duration::from_secs(5)).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_admission_queue_is_refused() {
    let mut settings = settings(1, 512);
    settings.queue_size = 0;
    let engine = start(settings).await;
    let running = submit(&engine, request("a", PROMPT, 400)).await.unwrap();
    wait_busy(&engine, 1).await;
    let refused = submit(&engine, request("b", PROMPT, 8)).await.unwrap_err();
    assert_eq!(refused, WorkerError::QueueFull { capacity: 1 });
    drop(running);
    wait_idle(&engine, Duration::from_secs(5)).await;
    let accepted = generate(&engine, request("c", PROMPT, 4)).await;
    assert_eq!(accepted.stats().generated_tokens, 4);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_frees_the_slot() {
    let engine = start(settings(1, 512)).await;
    let mut events = submit(&engine, request("a", PROMPT, 480)).await.unwrap();
    for _ in 0..3 {
        let event = tokio::time::timeout(TIMEOUT, events.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(event, StreamEvent::Token { .. }), "{event:?}");
    }
    assert_eq!(engine.load().busy, 1);
    let dropped_at = Instant::now();
    drop(events);
    // 480 tokens would take several seconds; the slot is back after one decode step.
    wait_idle(&engine, Duration::from_secs(2)).await;
    assert!(dropped_at.elapsed() < Duration::from_secs(2));
    let next = generate(&engine, request("b", PROMPT, 4)).await;
    assert_eq!(next.stats().generated_tokens, 4);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_string_ends_generation_before_it() {
    let engine = start(settings(1, 512)).await;
    let full = generate(&engine, request("a", PROMPT, 32)).await.text();
    // A stop string taken from the middle of the greedy text: the output must end right
    // before its first occurrence.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 6, "{full:?}");
    let stop = format!(" {}", words[4]);
    let expected = &full[..full.find(&stop).unwrap()];

    let mut stopped = request("b", PROMPT, 32);
    stopped.sampling.stop = vec![stop.clone(), "never appears 12345".into()];
    let outcome = generate(&engine, stopped).await;
    assert_eq!(outcome.stats().finish_reason, FinishReason::Stop);
    assert_eq!(outcome.text(), expected, "stop {stop:?} in {full:?}");
    assert!(outcome.stats().generated_tokens < 32);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_context_limit_ends_one_sequence_without_failing_the_other() {
    // 256 cells per slot: a long prompt plus `max_tokens` overflows its slot.
    let engine = start(settings(2, 256)).await;
    let long_prompt = "one two three four five six seven eight nine ten ".repeat(20);
    let long = submit(&engine, request("long", &long_prompt, 256))
        .await
        .unwrap();
    let short = submit(&engine, request("short", PROMPT, 64)).await.unwrap();
    let (long, short) = tokio::join!(collect(long), collect(short));
    let stats = long.stats();
    assert_eq!(stats.finish_reason, FinishReason::Length);
    assert!(stats.prompt_tokens > 200, "{stats:?}");
    assert_eq!(
        stats.prompt_tokens + stats.generated_tokens,
        256,
        "{stats:?}"
    );
    assert_eq!(short.stats().generated_tokens, 64);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_longer_than_a_batch_is_fed_in_chunks() {
    let mut chunked = settings(1, 512);
    chunked.batch_size = 16;
    let prompt = format!(
        "{} Paris is a city of museums, cafes and bridges. {PROMPT}",
        "Hello.".repeat(20)
    );
    let chunked = start(chunked).await;
    let outcome = generate(&chunked, request("a", &prompt, 12)).await;
    chunked.shutdown().await;
    let stats = outcome.stats();
    assert!(stats.prompt_tokens > 40, "{stats:?}");
    assert_eq!(stats.generated_tokens, 12);

    let whole = start(settings(1, 512)).await;
    let reference = generate(&whole, request("b", &prompt, 12)).await;
    whole.shutdown().await;
    // Same prompt, same greedy continuation whether the prompt went in as 1 batch or many.
    assert_eq!(outcome.text(), reference.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_that_fills_the_slot_is_refused_before_queueing() {
    let engine = start(settings(1, 256)).await;
    let error = submit(&engine, request("a", &"word ".repeat(400), 8))
        .await
        .unwrap_err();
    match error {
        WorkerError::Validation(ValidationError::PromptTooLong { tokens, limit }) => {
            assert!(tokens >= 256, "{tokens}");
            assert_eq!(limit, 256);
        }
        other => panic!("expected PromptTooLong, got {other:?}"),
    }
    assert_eq!(engine.load().busy, 0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_streams_sse_and_refuses_chat_without_a_template() {
    let engine = start(settings(1, 512)).await;
    let router = app(AppState {
        engine: engine.clone(),
        auth: Arc::new(WorkerAuth::disabled()),
        registration: Default::default(),
        embeddings: Default::default(),
    });

    let body = serde_json::to_string(&request("sse", PROMPT, 16)).unwrap();
    let response = router
        .clone()
        .oneshot(
            Request::post("/execute")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = tokio::time::timeout(TIMEOUT, axum::body::to_bytes(response.into_body(), 1 << 20))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let events: Vec<StreamEvent> = text
        .split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let (event, data) = frame.split_once('\n').expect("event and data lines");
            StreamEvent::from_sse(
                event.strip_prefix("event: ").unwrap(),
                data.strip_prefix("data: ").unwrap(),
            )
            .unwrap()
        })
        .collect();
    let (last, tokens) = events.split_last().unwrap();
    assert!(tokens.len() >= 10 && tokens.iter().all(|event| event.name() == "token"));
    match last {
        StreamEvent::Done(stats) => assert_eq!(stats.generated_tokens, 16),
        other => panic!("expected done, got {other:?}"),
    }

    // The default model is a base model: it has no chat template.
    let chat = ExecuteRequest {
        job_id: "chat".into(),
        prompt: None,
        messages: Some(vec![ChatMessage::new("user", "Hello")]),
        parse_special: false,
        sampling: SamplingParams::default(),
        tools: Default::default(),
        unknown: Default::default(),
    };
    let response = router
        .oneshot(
            Request::post("/execute")
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_string(&chat).unwrap()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.error_type, ErrorKind::Validation);
    assert_eq!(error.error, "model has no chat template; send `prompt`");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_running_jobs_with_an_error_event() {
    let engine = start(settings(1, 512)).await;
    let events = submit(&engine, request("a", PROMPT, 480)).await.unwrap();
    wait_busy(&engine, 1).await;
    engine.begin_drain();
    let refused = submit(&engine, request("b", PROMPT, 4)).await.unwrap_err();
    assert_eq!(refused, WorkerError::ShuttingDown);
    engine.cancel_all();
    let outcome = collect(events).await;
    match outcome.end {
        Err((_, kind)) => assert_eq!(kind, ErrorKind::ShuttingDown),
        Ok(stats) => panic!("expected a shutting_down error, got done: {stats:?}"),
    }
    tokio::time::timeout(Duration::from_secs(5), engine.wait_idle())
        .await
        .expect("idle after cancel");
    engine.shutdown().await;
}

/// Issue 18, item 9: jobs orcd gave up (listed in its heartbeat answer) end here too, running
/// or waiting, while the others carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_orcd_gave_up_are_cancelled_running_or_waiting() {
    let engine = start(settings(1, 512)).await;
    let running = submit(&engine, request("given-up-running", PROMPT, 480))
        .await
        .unwrap();
    wait_busy(&engine, 1).await;
    let waiting = submit(&engine, request("given-up-waiting", PROMPT, 4))
        .await
        .unwrap();
    let kept = submit(&engine, request("kept", PROMPT, 4)).await.unwrap();
    engine.cancel_given_up(vec![
        "given-up-running".into(),
        "given-up-waiting".into(),
        "never-here".into(),
    ]);
    for events in [running, waiting] {
        let outcome = collect(events).await;
        match outcome.end {
            Err((message, _)) => assert!(message.contains("gave this job up"), "{message}"),
            Ok(stats) => panic!("expected the given-up job to fail, got done: {stats:?}"),
        }
    }
    assert_eq!(collect(kept).await.stats().generated_tokens, 4);
    assert_eq!(
        metric(&engine, "llorch_worker_jobs_total{outcome=\"given_up\"}"),
        2.0
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_decode_steps_tokens_and_finished_jobs() {
    let engine = start(EngineSettings {
        speculation: Speculation::Off,
        ..settings(2, 512)
    })
    .await;
    let outcome = generate(&engine, request("metrics", PROMPT, 8)).await;
    assert!(outcome.end.is_ok(), "the job failed: {:?}", outcome.end);
    wait_idle(&engine, TIMEOUT).await;
    let router = app(AppState {
        engine: engine.clone(),
        auth: Arc::new(WorkerAuth::disabled()),
        registration: Default::default(),
        embeddings: Default::default(),
    });
    let response = router
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
    };
    assert_eq!(value("llorch_worker_tokens_generated_total"), 8.0);
    assert_eq!(value("llorch_worker_jobs_total{outcome=\"length\"}"), 1.0);
    // One step for the prompt, then one per generated token after the first.
    assert!(value("llorch_worker_decode_step_seconds_count") >= 8.0);
    assert!(value("llorch_worker_decode_step_seconds_sum") > 0.0);
    assert_eq!(
        value("llorch_worker_generation_tokens_per_second_count"),
        1.0
    );
    assert_eq!(value("llorch_worker_slots{state=\"free\"}"), 2.0);
    engine.shutdown().await;
}

/// A function and the start of its exact copy: the base model continues by copying, the
/// answer an editing request gets.
fn editing_prompt(name: &str) -> String {
    format!(
        "def {name}(items, tax_rate):\n    total = 0\n    for item in items:\n        \
         total += item.price * item.quantity\n    discount = 0.1 if total > 100 else 0\n    \
         total = total * (1 - discount)\n    tax = total * tax_rate\n    return total + tax\n\n\
         # The same function, copied exactly:\ndef {name}(items, tax_rate):\n"
    )
}

fn metric(engine: &EngineHandle, name: &str) -> f64 {
    let text = engine.metrics_text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
}

/// Speculative decoding changes no token of a greedy answer: an editing prompt answered with
/// and without it, alone and with two sequences drafting in the same steps, gives the same
/// text, and with it most of the answer came from accepted drafts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculation_changes_no_greedy_token_and_accepts_drafts_of_an_edit() {
    let names = ["order_total", "invoice_sum"];
    let plain = start(EngineSettings {
        speculation: Speculation::Off,
        ..settings(1, 512)
    })
    .await;
    let mut expected = Vec::new();
    for name in names {
        let outcome = generate(&plain, request(name, &editing_prompt(name), 64)).await;
        assert_eq!(outcome.stats().draft_tokens, 0, "nothing drafted when off");
        expected.push(outcome.text());
    }
    plain.shutdown().await;

    let speculative = start(EngineSettings {
        speculation: Speculation::Ngram,
        ..settings(2, 512)
    })
    .await;
    let alone = generate(
        &speculative,
        request("alone", &editing_prompt(names[0]), 64),
    )
    .await;
    assert_eq!(alone.text(), expected[0], "speculation changed the answer");
    let stats = alone.stats();
    assert_eq!(stats.generated_tokens, 64, "{stats:?}");
    assert!(
        stats.draft_tokens_accepted > 16 && stats.draft_tokens_accepted <= stats.draft_tokens,
        "{stats:?}"
    );
    // Both slots drafting in the same steps.
    let mut streams = Vec::new();
    for name in names {
        streams.push(
            submit(&speculative, request(name, &editing_prompt(name), 64))
                .await
                .unwrap(),
        );
    }
    let together = futures::future::join_all(streams.into_iter().map(collect)).await;
    for (outcome, expected) in together.iter().zip(&expected) {
        assert_eq!(
            &outcome.text(),
            expected,
            "speculation beside another sequence changed the answer"
        );
        assert!(
            outcome.stats().draft_tokens_accepted > 0,
            "{:?}",
            outcome.stats()
        );
    }
    wait_idle(&speculative, TIMEOUT).await;
    let accepted: u32 = [&alone]
        .into_iter()
        .chain(&together)
        .map(|o| o.stats().draft_tokens_accepted)
        .sum();
    assert_eq!(
        metric(&speculative, "llorch_worker_draft_tokens_accepted_total"),
        f64::from(accepted)
    );
    speculative.shutdown().await;
}

async fn post_embed(router: &axum::Router, input: serde_json::Value) -> (u16, String) {
    let response = router
        .clone()
        .oneshot(
            Request::post("/embed")
                .header("content-type", "application/json")
                .body(Body::from(
                    serde_json::json!({ "input": input }).to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(TIMEOUT, axum::body::to_bytes(response.into_body(), 1 << 24))
        .await
        .expect("embeddings in time")
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_pooled_normalised_and_answered_beside_a_running_generation() {
    let engine = start(settings(1, 64)).await;
    let embeddings = Embeddings::enabled();
    let embedding_settings =
        EmbeddingSettings::for_engine(engine.settings(), DEFAULT_MAX_REQUEST_TOKENS);
    assert_eq!(embedding_settings.batch_tokens, 64);
    embeddings
        .start(&engine, embedding_settings)
        .await
        .expect("the embedding context starts");
    let router = app(AppState {
        engine: engine.clone(),
        auth: Arc::new(WorkerAuth::disabled()),
        registration: Default::default(),
        embeddings,
    });
    // A generation holds the one slot while the embeddings are asked for.
    let generation = submit(&engine, request("busy", PROMPT, 48)).await.unwrap();

    let (status, body) =
        post_embed(&router, serde_json::json!(["a cat", "a tax form", "a cat"])).await;
    assert_eq!(status, 200, "{body}");
    let answer: EmbedResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.embeddings.len(), 3);
    for vector in &answer.embeddings {
        assert_eq!(vector.len(), model().n_embd() as usize);
        let norm: f64 = vector
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert_eq!(answer.embeddings[0], answer.embeddings[2]);
    assert_ne!(answer.embeddings[0], answer.embeddings[1]);
    assert!(answer.prompt_tokens >= 6, "{}", answer.prompt_tokens);

    // Longer than one decode: refused as a context-length error naming the item.
    let (status, body) = post_embed(&router, serde_json::json!(["x", "word ".repeat(100)])).await;
    assert_eq!(status, 400, "{body}");
    let error: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(error.error_type, ErrorKind::ContextLength);
    assert!(error.error.contains("`input[1]`"), "{}", error.error);

    // The generation was not disturbed: it ends normally (`stats` panics on a failed stream).
    let outcome = collect(generation).await;
    assert!(outcome.stats().generated_tokens >= 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_embeddings_says_how_to_get_them() {
    let engine = EngineHandle::start(settings(1, 64), ModelSource::Loaded(model()));
    let router = app(AppState {
        engine: engine.clone(),
        auth: Arc::new(WorkerAuth::disabled()),
        registration: Default::default(),
        embeddings: Embeddings::disabled(),
    });
    tokio::time::timeout(TIMEOUT, engine.wait_ready())
        .await
        .unwrap()
        .unwrap();
    let (status, body) = post_embed(&router, serde_json::json!(["a"])).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("--embeddings"), "{body}");
    engine.shutdown().await;
}
