//! The worker's Prometheus metrics (`GET /metrics`, OpenMetrics text). The engine thread
//! records what only it sees (each decode step's duration, each token, how each job ended with
//! its speed and time to first token); slot use is read from the engine at scrape time.

use std::sync::Mutex;

use llorch_api::{FinishReason, GenerationStats};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`WorkerMetrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

pub struct WorkerMetrics {
    registry: Registry,
    slots: Family<StateLabels, Gauge>,
    waiting: Gauge,
    jobs: Family<OutcomeLabels, Counter>,
    tokens: Counter,
    prompt_tokens: Counter,
    prompt_tokens_cached: Counter,
    tokens_per_second: Histogram,
    time_to_first_token: Histogram,
    decode_step: Histogram,
    embedding_requests: Counter,
    embedding_tokens: Counter,
    embeddings_abandoned: Counter,
    streams_stalled: Counter,
    threads: Gauge,
    thread_changes: Counter,
    draft_tokens: Counter,
    draft_tokens_accepted: Counter,
    /// Scrapes set the slot gauges before encoding; two at once would interleave.
    scrape: Mutex<()>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llorch_worker");
        let slots = Family::<StateLabels, Gauge>::default();
        registry.register("slots", "Slots running a job (busy) or free", slots.clone());
        let waiting = Gauge::default();
        registry.register(
            "jobs_waiting",
            "Admitted jobs waiting for a free slot",
            waiting.clone(),
        );
        let jobs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "jobs",
            "Jobs by outcome: stop, length, failed, abandoned (the caller went away) or given_up \
             (orcd ended the job while it could not reach this worker)",
            jobs.clone(),
        );
        let tokens = Counter::default();
        registry.register(
            "tokens_generated",
            "Tokens generated and streamed",
            tokens.clone(),
        );
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished jobs, cached ones included",
            prompt_tokens.clone(),
        );
        let prompt_tokens_cached = Counter::default();
        registry.register(
            "prompt_tokens_cached",
            "Prompt tokens of finished jobs found in a slot's KV cache and not processed again",
            prompt_tokens_cached.clone(),
        );
        // 1 to 2048 tokens per second: a big model on a small CPU up to a small one on a GPU.
        let tokens_per_second = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "generation_tokens_per_second",
            "Generation speed of each finished job, after its first token",
            tokens_per_second.clone(),
        );
        let time_to_first_token = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "time_to_first_token",
            "From a job's arrival at the worker to its first token",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        // 0.5 ms to 4 s: one token of one sequence up to a full batch of prompt on a CPU.
        let decode_step = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register_with_unit(
            "decode_step",
            "Duration of one llama.cpp decode step (all sequences of the batch together)",
            Unit::Seconds,
            decode_step.clone(),
        );
        let embedding_requests = Counter::default();
        registry.register(
            "embedding_requests",
            "Embedding requests answered (`--embeddings`)",
            embedding_requests.clone(),
        );
        let embedding_tokens = Counter::default();
        registry.register(
            "embedding_tokens",
            "Tokens of every input embedded",
            embedding_tokens.clone(),
        );
        let embeddings_abandoned = Counter::default();
        registry.register(
            "embedding_requests_abandoned",
            "Embedding requests given up between inputs because the caller went away",
            embeddings_abandoned.clone(),
        );
        let streams_stalled = Counter::default();
        registry.register(
            "streams_stalled",
            "Jobs cancelled because their caller took none of the stream for 10 s (a cut link, \
             a stopped or overloaded orcd)",
            streams_stalled.clone(),
        );
        let threads = Gauge::default();
        registry.register(
            "threads",
            "Threads llama.cpp decodes with now (the engine adapts it to CPU contention unless --threads is given)",
            threads.clone(),
        );
        let thread_changes = Counter::default();
        registry.register(
            "thread_changes",
            "Times the engine changed its thread count (each one a new llama.cpp context)",
            thread_changes.clone(),
        );
        let draft_tokens = Counter::default();
        registry.register(
            "draft_tokens",
            "Tokens drafted by speculative decoding (`--speculative`) and verified",
            draft_tokens.clone(),
        );
        let draft_tokens_accepted = Counter::default();
        registry.register(
            "draft_tokens_accepted",
            "Drafted tokens the model agreed with, emitted without a decode step of their own",
            draft_tokens_accepted.clone(),
        );
        WorkerMetrics {
            registry,
            draft_tokens,
            draft_tokens_accepted,
            threads,
            thread_changes,
            slots,
            waiting,
            jobs,
            tokens,
            prompt_tokens,
            prompt_tokens_cached,
            tokens_per_second,
            time_to_first_token,
            decode_step,
            embedding_requests,
            embedding_tokens,
            embeddings_abandoned,
            streams_stalled,
            scrape: Mutex::new(()),
        }
    }

    pub fn decode_step(&self, seconds: f64) {
        self.decode_step.observe(seconds);
    }

    /// The thread count the engine starts with.
    pub fn threads_set(&self, threads: u32) {
        self.threads.set(threads.into());
    }

    /// The engine now decodes with `threads` threads.
    pub fn threads_changed(&self, threads: u32) {
        self.threads.set(threads.into());
        self.thread_changes.inc();
    }

    pub fn token(&self) {
        self.tokens.inc();
    }

    /// One speculative draft verified: `drafted` tokens, the first `accepted` of them kept.
    pub fn draft_verified(&self, drafted: usize, accepted: usize) {
        self.draft_tokens.inc_by(drafted as u64);
        self.draft_tokens_accepted.inc_by(accepted as u64);
    }

    pub fn job_finished(&self, stats: &GenerationStats) {
        let outcome = match stats.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "abandoned",
        };
        self.jobs.get_or_create(&OutcomeLabels { outcome }).inc();
        self.prompt_tokens.inc_by(stats.prompt_tokens.into());
        self.prompt_tokens_cached
            .inc_by(stats.cached_prompt_tokens.into());
        if stats.generated_tokens > 0 {
            self.time_to_first_token
                .observe(stats.time_to_first_token_ms / 1000.0);
        }
        // A speed needs two tokens; `0.0` means it could not be measured.
        if stats.tokens_per_second > 0.0 {
            self.tokens_per_second.observe(stats.tokens_per_second);
        }
    }

    pub fn job_failed(&self) {
        self.jobs
            .get_or_create(&OutcomeLabels { outcome: "failed" })
            .inc();
    }

    /// A job cancelled because orcd said it gave the job up (see [`crate::registration`]).
    pub fn job_given_up(&self) {
        self.jobs
            .get_or_create(&OutcomeLabels {
                outcome: "given_up",
            })
            .inc();
    }

    pub fn job_abandoned(&self) {
        self.jobs
            .get_or_create(&OutcomeLabels {
                outcome: "abandoned",
            })
            .inc();
    }

    /// One input of an embedding request embedded, `tokens` long.
    pub fn embedded_input(&self, tokens: u32) {
        self.embedding_tokens.inc_by(tokens.into());
    }

    /// One embedding request answered.
    pub fn embedding_answered(&self) {
        self.embedding_requests.inc();
    }

    /// One embedding request given up because its caller went away.
    pub fn embedding_abandoned(&self) {
        self.embeddings_abandoned.inc();
    }

    /// One job cancelled because its caller stopped taking its stream.
    pub fn stream_stalled(&self) {
        self.streams_stalled.inc();
    }

    /// The exposition, with the slot gauges set from the engine's current load: `slots_busy`
    /// running a job, `jobs_waiting` inside the engine for a slot. Plain counts rather than the
    /// engine's own type: the engine records into these metrics, so they know nothing of it.
    pub fn render(&self, slots_busy: u32, jobs_waiting: u32, slots_total: u32) -> String {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let busy = slots_busy.min(slots_total);
        self.slots
            .get_or_create(&StateLabels { state: "busy" })
            .set(busy.into());
        self.slots
            .get_or_create(&StateLabels { state: "free" })
            .set((slots_total - busy).into());
        self.waiting.set(jobs_waiting.into());
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_slots_speed_and_decode_time() {
        let metrics = WorkerMetrics::new();
        metrics.decode_step(0.004);
        metrics.token();
        metrics.token();
        metrics.job_finished(&GenerationStats {
            finish_reason: FinishReason::Length,
            prompt_tokens: 4,
            generated_tokens: 2,
            time_to_first_token_ms: 30.0,
            tokens_per_second: 50.0,
            prompt_tokens_per_second: 400.0,
            cached_prompt_tokens: 3,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
        });
        metrics.job_failed();
        metrics.embedded_input(3);
        metrics.embedded_input(4);
        metrics.embedding_answered();
        metrics.embedding_abandoned();
        metrics.stream_stalled();
        metrics.threads_set(2);
        metrics.threads_changed(1);
        metrics.draft_verified(8, 5);
        let text = metrics.render(3, 2, 4);
        for expected in [
            "llorch_worker_slots{state=\"busy\"} 3",
            "llorch_worker_slots{state=\"free\"} 1",
            "llorch_worker_jobs_waiting 2",
            "llorch_worker_draft_tokens_total 8",
            "llorch_worker_draft_tokens_accepted_total 5",
            "llorch_worker_jobs_total{outcome=\"length\"} 1",
            "llorch_worker_jobs_total{outcome=\"failed\"} 1",
            "llorch_worker_tokens_generated_total 2",
            "llorch_worker_prompt_tokens_total 4",
            "llorch_worker_prompt_tokens_cached_total 3",
            "llorch_worker_generation_tokens_per_second_sum 50.0",
            "llorch_worker_time_to_first_token_seconds_sum 0.03",
            "llorch_worker_decode_step_seconds_count 1",
            "llorch_worker_embedding_requests_total 1",
            "llorch_worker_embedding_tokens_total 7",
            "llorch_worker_embedding_requests_abandoned_total 1",
            "llorch_worker_streams_stalled_total 1",
            "llorch_worker_threads 1",
            "llorch_worker_thread_changes_total 1",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }
}
