//! One job inside the engine: the request as it arrives ([`Job`]) and, once it holds a slot,
//! its running state ([`Sequence`]): KV position, sampler, text stream and timings.

use std::time::Instant;

use llama_cpp_2::token::LlamaToken;
use llorch_api::{FinishReason, GenerationStats, StreamEvent, TokenLogprob};
use tokio::sync::{mpsc::UnboundedSender, OwnedSemaphorePermit};

use super::{speculative::DraftPolicy, text::TextStream, token_sampler::TokenSampler};
use crate::{error::WorkerError, metrics::WorkerMetrics};

/// A tokenized request on its way to a slot.
pub(super) struct Job {
    pub job_id: String,
    pub prompt: Vec<LlamaToken>,
    pub max_tokens: u32,
    /// Built from the request's sampling settings when it arrived.
    pub sampler: TokenSampler,
    /// Alternatives to report per token; `None` reports no log-probabilities.
    pub logprobs: Option<u32>,
    pub stop: Vec<String>,
    /// The client's stream; closed once the client has gone away.
    pub events: UnboundedSender<StreamEvent>,
    pub received_at: Instant,
    /// Admission: the job counts against the worker's capacity until it is dropped.
    pub _permit: OwnedSemaphorePermit,
}

pub(super) enum Phase {
    /// The prompt is being fed; `fed` tokens are in the KV cache.
    Prefill { fed: usize },
    /// `next` was sampled and goes into the next decode step.
    Generate { next: LlamaToken },
}

/// A job that holds a slot (its sequence id in the KV cache is the slot index).
pub(super) struct Sequence {
    pub job: Job,
    pub text: TextStream,
    /// Log-probabilities of tokens whose text has not been streamed yet (held back).
    pub pending_logprobs: Vec<TokenLogprob>,
    pub phase: Phase,
    /// KV cells this sequence occupies, which is also the position of its next token.
    pub n_past: u32,
    /// The batch row whose logits are sampled after this step, if any.
    pub logits_row: Option<i32>,
    pub generated: u32,
    /// How this sequence drafts tokens ahead; `None` without speculation.
    pub drafting: Option<DraftPolicy>,
    /// The tokens drafted into the current step after `next`, verified once it is decoded.
    pub draft: Vec<LlamaToken>,
    /// Prompt tokens found in the slot's KV cache, not decoded again.
    pub cached_prompt_tokens: usize,
    token_events: u32,
    /// Generated tokens already counted in a `token` event's `tokens`.
    tokens_reported: u32,
    pub prefill_started: Option<Instant>,
    pub prefill_done: Option<Instant>,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
}

impl Sequence {
    /// A sequence whose first `cached` prompt tokens are already in its slot's KV cells.
    pub fn new(mut job: Job, cached: usize, speculate: bool) -> Sequence {
        let stops = std::mem::take(&mut job.stop);
        Sequence {
            job,
            text: TextStream::new(stops),
            pending_logprobs: Vec::new(),
            phase: Phase::Prefill { fed: cached },
            n_past: cached as u32,
            logits_row: None,
            generated: 0,
            drafting: speculate.then(DraftPolicy::default),
            draft: Vec::new(),
            cached_prompt_tokens: cached,
            token_events: 0,
            tokens_reported: 0,
            prefill_started: None,
            prefill_done: None,
            first_token_at: None,
            last_token_at: None,
        }
    }

    /// The client dropped its stream (disconnect or cancel).
    pub fn is_abandoned(&self) -> bool {
        self.job.events.is_closed()
    }

    /// Records one sampled token (end-of-generation tokens included) for the timings.
    pub fn record_sample(&mut self, at: Instant) {
        self.first_token_at.get_or_insert(at);
        self.last_token_at = Some(at);
    }

    /// Streams a piece of text with the log-probabilities of the tokens it came from and the
    /// number of tokens generated since the last piece (the text of a multibyte character or a
    /// possible stop string is held back over several);
    /// `false` when the client is gone.
    pub fn send_text(&mut self, text: String) -> bool {
        if text.is_empty() && self.pending_logprobs.is_empty() {
            return !self.is_abandoned();
        }
        let event = StreamEvent::Token {
            text,
            index: self.token_events,
            logprobs: std::mem::take(&mut self.pending_logprobs),
            tokens: self.generated - self.tokens_reported,
        };
        self.token_events += 1;
        self.tokens_reported = self.generated;
        self.job.events.send(event).is_ok()
    }

    /// Ends the stream with whatever text was held back, then the `done` event. The job is
    /// counted in `metrics` first, so a client that scrapes after `done` sees it.
    pub fn finish(mut self, reason: FinishReason, metrics: &WorkerMetrics) -> GenerationStats {
        let tail = self.text.finish();
        self.send_text(tail);
        let stats = self.stats(reason);
        metrics.job_finished(&stats);
        let _ = self.job.events.send(StreamEvent::Done(stats.clone()));
        stats
    }

    /// Ends the stream with an `error` event.
    pub fn fail(self, error: &WorkerError) {
        let _ = self.job.events.send(error.to_stream_event());
    }

    fn stats(&self, finish_reason: FinishReason) -> GenerationStats {
        let millis = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1e3;
        let time_to_first_token_ms = self
            .first_token_at
            .map_or(0.0, |first| millis(self.job.received_at, first));
        let tokens_per_second = match (self.first_token_at, self.last_token_at) {
            (Some(first), Some(last)) if self.generated > 1 && last > first => {
                f64::from(self.generated - 1) / last.duration_since(first).as_secs_f64()
            }
            _ => 0.0,
        };
        // Over the tokens actually decoded: cached ones cost nothing.
        let decoded = self.job.prompt.len() - self.cached_prompt_tokens;
        let prompt_tokens_per_second = match (self.prefill_started, self.prefill_done) {
            (Some(start), Some(done)) if done > start => {
                decoded as f64 / done.duration_since(start).as_secs_f64()
            }
            _ => 0.0,
        };
        let (draft_tokens, draft_tokens_accepted) = self
            .drafting
            .as_ref()
            .map_or((0, 0), |policy| (policy.drafted, policy.accepted));
        GenerationStats {
            finish_reason,
            prompt_tokens: self.job.prompt.len() as u32,
            cached_prompt_tokens: self.cached_prompt_tokens as u32,
            generated_tokens: self.generated,
            time_to_first_token_ms,
            tokens_per_second,
            prompt_tokens_per_second,
            draft_tokens,
            draft_tokens_accepted,
        }
    }
}
