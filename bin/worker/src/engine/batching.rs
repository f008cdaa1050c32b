//! The continuous-batching loop on the engine thread. Each step puts one token of every
//! generating sequence plus as many prompt tokens as fit into one batch, decodes it once, and
//! samples each sequence from its own logits row. New jobs join between steps; finished,
//! failed and abandoned ones leave and their KV cells are cleared.

use std::{
    collections::VecDeque,
    sync::mpsc::{Receiver, TryRecvError},
    time::Instant,
};

use llama_cpp_2::{
    context::LlamaContext, llama_batch::LlamaBatch, model::LlamaModel, token::LlamaToken,
};
use llorch_api::FinishReason;

use super::{
    sampling::logprobs_of,
    slot::{Job, Phase, Sequence},
    Command, EngineLoad, Shared,
};
use crate::error::WorkerError;

pub(super) struct Batcher<'a> {
    model: &'static LlamaModel,
    context: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    shared: &'a Shared,
    /// Index = slot = sequence id in the KV cache.
    slots: Vec<Option<Sequence>>,
    waiting: VecDeque<Job>,
}

impl<'a> Batcher<'a> {
    pub fn new(
        model: &'static LlamaModel,
        context: LlamaContext<'static>,
        shared: &'a Shared,
    ) -> Batcher<'a> {
        let settings = &shared.settings;
        Batcher {
            model,
            context,
            // One sequence id per token: no token is shared between sequences.
            batch: LlamaBatch::new(settings.batch_size as usize, 1),
            shared,
            slots: (0..settings.slots).map(|_| None).collect(),
            waiting: VecDeque::new(),
        }
    }

    /// Runs until a shutdown command arrives or every handle is gone.
    pub fn run(mut self, commands: Receiver<Command>) {
        loop {
            if self.is_idle() {
                self.publish_load();
                // Blocks without using the CPU until there is work.
                let Ok(command) = commands.recv() else {
                    return;
                };
                if !self.handle(command) {
                    return;
                }
            }
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        if !self.handle(command) {
                            return;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.cancel_all();
                        return;
                    }
                }
            }
            self.drop_abandoned();
            self.admit_waiting();
            self.publish_load();
            self.step();
        }
    }

    /// Applies one command; `false` ends the loop.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Run(job) => {
                tracing::debug!(job_id = %job.job_id, prompt_tokens = job.prompt.len(), "job queued");
                self.waiting.push_back(job);
                true
            }
            Command::CancelAll => {
                self.cancel_all();
                true
            }
            Command::Shutdown => {
                self.cancel_all();
                false
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(Option::is_none)
    }

    fn publish_load(&self) {
        let load = EngineLoad {
            busy: self.slots.iter().filter(|slot| slot.is_some()).count() as u32,
            waiting: self.waiting.len() as u32,
        };
        self.shared.load.send_if_modified(|current| {
            let changed = *current != load;
            *current = load;
            changed
        });
    }

    /// Takes a sequence out of its slot and frees its KV cells.
    fn release(&mut self, slot: usize) -> Sequence {
        let sequence = self.slots[slot].take().expect("released slot is occupied");
        // Only fails for ids or positions beyond i32, which a slot index never is.
        let _ = self
            .context
            .clear_kv_cache_seq(Some(slot as u32), None, None);
        sequence
    }

    fn cancel_all(&mut self) {
        let error = WorkerError::ShuttingDown;
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                let sequence = self.release(slot);
                tracing::info!(job_id = %sequence.job.job_id, generated = sequence.generated, "job cancelled by shutdown");
                sequence.fail(&error);
                self.shared.metrics.job_failed();
            }
        }
        for job in self.waiting.drain(..) {
            let _ = job.events.send(error.to_stream_event());
        }
        self.publish_load();
    }

    /// Frees the slots of clients that went away, before any more work is spent on them.
    fn drop_abandoned(&mut self) {
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .as_ref()
                .is_some_and(Sequence::is_abandoned)
            {
                let sequence = self.release(slot);
                self.shared.metrics.job_abandoned();
                tracing::info!(job_id = %sequence.job.job_id, generated = sequence.generated, "client gone; slot freed");
            }
        }
        self.waiting.retain(|job| !job.events.is_closed());
    }

    fn admit_waiting(&mut self) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                continue;
            }
            let Some(job) = self.waiting.pop_front() else {
                return;
            };
            // The cells are empty already; clearing again costs nothing and guards against a
            // sequence that left without going through `release`.
            let _ = self
                .context
                .clear_kv_cache_seq(Some(slot as u32), None, None);
            tracing::debug!(job_id = %job.job_id, slot, "job started");
            self.slots[slot] = Some(Sequence::new(job));
        }
    }

    /// One decode step over every sequence that has work.
    fn step(&mut self) {
        let batch_size = self.shared.settings.batch_size as usize;
        self.batch.clear();
        let mut in_batch = Vec::with_capacity(self.slots.len());
        // Generating sequences first: one token each keeps every stream moving while prompts
        // are fed in chunks behind them.
        for (slot, sequence) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else { continue };
            sequence.logits_row = None;
            if let Phase::Generate { next } = sequence.phase {
                if add(&mut self.batch, next, sequence.n_past, slot, true) {
                    sequence.logits_row = Some(self.batch.n_tokens() - 1);
                    sequence.n_past += 1;
                    in_batch.push(slot);
                }
            }
        }
        let now = Instant::now();
        for (slot, sequence) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else { continue };
            let Phase::Prefill { fed } = sequence.phase else {
                continue;
            };
            let room = batch_size.saturating_sub(self.batch.n_tokens() as usize);
            if room == 0 {
                break;
            }
            let prompt = &sequence.job.prompt;
            let end = prompt.len().min(fed + room);
            for position in fed..end {
                // Logits only on the prompt's last token: the output projection over the whole
                // vocabulary is most of a step's cost.
                let last = position + 1 == prompt.len();
                add(
                    &mut self.batch,
                    prompt[position],
                    position as u32,
                    slot,
                    last,
                );
            }
            if end == prompt.len() {
                sequence.logits_row = Some(self.batch.n_tokens() - 1);
            }
            sequence.phase = Phase::Prefill { fed: end };
            sequence.n_past = end as u32;
            sequence.prefill_started.get_or_insert(now);
            in_batch.push(slot);
        }
        if in_batch.is_empty() {
            return;
        }

        let decode_started = Instant::now();
        if let Err(error) = self.context.decode(&mut self.batch) {
            // The step failed for every sequence in it; their KV cells are in an unknown
            // state, so each of them ends with an error instead of silently stalling.
            let error = WorkerError::Generation(error.to_string());
            tracing::error!(%error, sequences = in_batch.len(), "decode failed");
            for slot in in_batch {
                let sequence = self.release(slot);
                sequence.fail(&error);
                self.shared.metrics.job_failed();
            }
            return;
        }

        let decoded_at = Instant::now();
        self.shared
            .metrics
            .decode_step(decoded_at.duration_since(decode_started).as_secs_f64());
        for slot in in_batch {
            let Some(sequence) = self.slots[slot].as_mut() else {
                continue;
            };
            let Some(row) = sequence.logits_row else {
                continue; // a prompt chunk that is not the last one
            };
            if matches!(sequence.phase, Phase::Prefill { .. }) {
                sequence.prefill_done = Some(decoded_at);
            }
            // `sample` also accepts the token into the sampler chain; never accept it again.
            let token = sequence.job.sampler.sample(&self.context, row);
            if let Some(top) = sequence.job.logprobs {
                if !self.model.vocab().is_eog(token) {
                    let logits = self.context.get_logits_ith(row);
                    let logprob = logprobs_of(self.model, logits, token, top);
                    sequence.pending_logprobs.push(logprob);
                }
            }
            self.after_sample(slot, token);
        }
    }

    /// Streams a sampled token and decides whether its sequence goes on.
    fn after_sample(&mut self, slot: usize, token: LlamaToken) {
        let ctx_size = self.shared.settings.ctx_size;
        let vocab = self.model.vocab();
        let sequence = self.slots[slot].as_mut().expect("sampled slot is occupied");
        sequence.record_sample(Instant::now());
        if vocab.is_eog(token) {
            self.finish(slot, FinishReason::Stop);
            return;
        }
        sequence.generated += 1;
        self.shared.metrics.token();
        // `special = false`: control tokens such as `<end_of_turn>` are never rendered.
        let piece = vocab.token_to_piece(token, false, None);
        let released = sequence.text.push(&piece);
        if !sequence.send_text(released.text) {
            let sequence = self.release(slot);
            self.shared.metrics.job_abandoned();
            tracing::info!(job_id = %sequence.job.job_id, generated = sequence.generated, "client gone; slot freed");
            return;
        }
        if released.stopped {
            self.finish(slot, FinishReason::Stop);
        } else if sequence.generated >= sequence.job.max_tokens {
            self.finish(slot, FinishReason::Length);
        } else if sequence.n_past + 1 >= ctx_size {
            // Prompt plus generated text fill the slot. Feeding one more token would need a KV
            // cell beyond the slot's share, and that makes decode fail for the whole batch,
            // not just for this sequence.
            self.finish(slot, FinishReason::Length);
        } else {
            sequence.phase = Phase::Generate { next: token };
        }
    }

    fn finish(&mut self, slot: usize, reason: FinishReason) {
        let sequence = self.release(slot);
        let job_id = sequence.job.job_id.clone();
        let stats = sequence.finish(reason, &self.shared.metrics);
        tracing::info!(
            %job_id,
            finish_reason = ?stats.finish_reason,
            prompt_tokens = stats.prompt_tokens,
            generated_tokens = stats.generated_tokens,
            time_to_first_token_ms = stats.time_to_first_token_ms as u64,
            tokens_per_second = format_args!("{:.1}", stats.tokens_per_second),
            "job finished"
        );
    }
}

/// Adds one token of `slot`'s sequence to the batch. The batch holds `batch_size` tokens and
/// `slots <= batch_size` is checked at startup, so there is always room for what a step puts
/// in; `false` only if that invariant is broken.
fn add(
    batch: &mut LlamaBatch,
    token: LlamaToken,
    position: u32,
    slot: usize,
    logits: bool,
) -> bool {
    match batch.add(token, position as i32, &[slot as i32], logits) {
        Ok(()) => true,
        Err(error) => {
            debug_assert!(false, "batch overflow: {error}");
            tracing::error!(%error, "batch overflow");
            false
        }
    }
}
