//! The continuous-batching loop on the engine thread. Each step puts one token of every
//! generating sequence plus as many prompt tokens as fit into one batch, decodes it once, and
//! samples each sequence from its own logits row. New jobs join between steps, each in the
//! free slot whose KV cache already holds the longest prefix of its prompt
//! (`prefix_cache.rs`); finished and abandoned ones leave their KV cells for the next request
//! that starts the same way, failed ones clear them. Woken from idle, the loop waits a moment
//! for requests sent together so that they share their first step (`burst.rs`).

use std::{
    collections::VecDeque,
    sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError},
    time::Instant,
};

use llama_cpp_2::{
    context::{session::LlamaStateSeqFlags, LlamaContext},
    llama_batch::LlamaBatch,
    model::LlamaModel,
    token::LlamaToken,
};
use llorch_api::FinishReason;

use super::{
    burst::PrefillCost,
    cpu_load::CpuSampler,
    prefix_cache::{common_prefix, reusable_prefix, worth_waiting_for, PrefixCache},
    sampling::logprobs_of,
    slot::{Job, Phase, Sequence},
    speculative::{lookup_draft, verify, Speculation},
    threads::{ThreadChange, ThreadController},
    Command, EngineLoad, EngineSettings, Shared,
};
use crate::error::WorkerError;

pub(super) struct Batcher<'a> {
    model: &'static LlamaModel,
    context: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    shared: &'a Shared,
    /// Index = slot = sequence id in the KV cache.
    slots: Vec<Option<Sequence>>,
    /// What each slot's KV cells hold, running or not.
    cache: PrefixCache,
    /// The model's sliding attention window in tokens, 0 if it has none or it is unknown.
    sliding_window: u32,
    /// Steps the thread count with CPU contention; `None` when the count was fixed by flags.
    threads: Option<ThreadController>,
    /// Other processes' CPU time during decode steps, for the controller; `None` where it
    /// cannot be measured or the count is fixed.
    cpu: Option<CpuSampler>,
    /// For how long to wait for more requests when the engine wakes from idle (`burst.rs`).
    prefill_cost: PrefillCost,
    waiting: VecDeque<Job>,
}

impl<'a> Batcher<'a> {
    pub fn new(
        model: &'static LlamaModel,
        context: LlamaContext<'static>,
        shared: &'a Shared,
    ) -> Batcher<'a> {
        let settings = &shared.settings;
        let cpu = settings.adapt_threads.then(CpuSampler::new).flatten();
        let threads = settings.adapt_threads.then(|| match &cpu {
            Some(sampler) => ThreadController::with_load(settings.threads, sampler.cpus()),
            None => ThreadController::new(settings.threads),
        });
        shared.metrics.threads_set(settings.threads);
        Batcher {
            model,
            context,
            // One sequence id per token: no token is shared between sequences.
            batch: LlamaBatch::new(settings.batch_size as usize, 1),
            shared,
            slots: (0..settings.slots).map(|_| None).collect(),
            cache: PrefixCache::new(settings.slots as usize),
            sliding_window: sliding_window(model),
            threads,
            cpu,
            prefill_cost: PrefillCost::default(),
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
                if !self.handle(command) || !self.gather_burst(&commands) {
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

    /// Woken from idle: takes the requests that arrive within a small share of the prefill
    /// about to start, so requests sent together share their first step (`burst.rs`).
    /// `false` ends the loop.
    fn gather_burst(&mut self, commands: &Receiver<Command>) -> bool {
        let uncached: usize = self
            .waiting
            .iter()
            .map(|job| job.prompt.len() - self.cache.longest_held_prefix(&job.prompt))
            .sum();
        let max = self.shared.settings.max_burst_wait;
        let Some(wait) = self.prefill_cost.burst_wait(uncached, max) else {
            return true;
        };
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match commands.recv_timeout(left) {
                Ok(command) => {
                    if !self.handle(command) {
                        return false;
                    }
                }
                // A closed channel is noticed (and handled) by the caller's next receive.
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return true,
            }
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
            Command::SetThreads(threads) => {
                self.threads = None;
                self.cpu = None;
                self.set_threads(threads);
                true
            }
            Command::CancelAll => {
                self.cancel_all();
                true
            }
            Command::CancelGivenUp(job_ids) => {
                self.cancel_given_up(&job_ids);
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

    /// Takes a sequence out of its slot. Its KV cells stay for a later prompt that starts
    /// the same way, unless `keep_cache` is false (their contents are in doubt).
    fn release(&mut self, slot: usize, keep_cache: bool) -> Sequence {
        let sequence = self.slots[slot].take().expect("released slot is occupied");
        if !keep_cache {
            self.forget(slot);
        }
        sequence
    }

    /// Frees a slot's KV cells.
    fn forget(&mut self, slot: usize) {
        // Only fails for ids or positions beyond i32, which a slot index never is.
        let _ = self
            .context
            .clear_kv_cache_seq(Some(slot as u32), None, None);
        self.cache.clear(slot);
    }

    /// Cuts `slot`'s KV cells back to the longest prefix of `prompt` they can serve and
    /// returns its length: the prompt tokens that need no decoding.
    fn reuse_cache(&mut self, slot: usize, prompt: &[LlamaToken]) -> usize {
        let held = self.cache.tokens(slot).len();
        let reuse = reusable_prefix(
            self.cache.common_prefix(slot, prompt),
            prompt.len(),
            held,
            self.context.kv_cache_seq_pos_min(slot as i32),
            self.sliding_window,
        );
        if reuse == 0 {
            self.forget(slot);
            return 0;
        }
        if reuse < held {
            let removed = self
                .context
                .kv_cache_seq_rm(slot as i32, Some(reuse as u32), None);
            if removed.is_err() {
                self.forget(slot);
                return 0;
            }
            self.cache.truncate(slot, reuse);
        }
        reuse
    }

    fn cancel_all(&mut self) {
        let error = WorkerError::ShuttingDown;
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                let sequence = self.release(slot, true);
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

    /// Ends the jobs orcd gave up, running or waiting: nobody reads their streams any more,
    /// though the connection to orcd may still look open (a cut link).
    fn cancel_given_up(&mut self, job_ids: &[String]) {
        let error = WorkerError::Generation("orcd gave this job up; cancelled".into());
        for slot in 0..self.slots.len() {
            let given_up = self.slots[slot]
                .as_ref()
                .is_some_and(|sequence| job_ids.contains(&sequence.job.job_id));
            if given_up {
                let sequence = self.release(slot, true);
                tracing::warn!(job_id = %sequence.job.job_id, generated = sequence.generated, "orcd gave the job up; cancelled");
                sequence.fail(&error);
                self.shared.metrics.job_given_up();
            }
        }
        let metrics = &self.shared.metrics;
        self.waiting.retain(|job| {
            if !job_ids.contains(&job.job_id) {
                return true;
            }
            tracing::warn!(job_id = %job.job_id, "orcd gave the waiting job up; cancelled");
            let _ = job.events.send(error.to_stream_event());
            metrics.job_given_up();
            false
        });
        self.publish_load();
    }

    /// Frees the slots of clients that went away, before any more work is spent on them.
    fn drop_abandoned(&mut self) {
        for slot in 0..self.slots.len() {
            if self.slots[slot]
                .as_ref()
                .is_some_and(Sequence::is_abandoned)
            {
                let sequence = self.release(slot, true);
                self.shared.metrics.job_abandoned();
                tracing::info!(job_id = %sequence.job.job_id, generated = sequence.generated, "client gone; slot freed");
            }
        }
        self.waiting.retain(|job| !job.events.is_closed());
    }

    /// Starts waiting jobs, first come first served, each in the free slot that holds the
    /// longest prefix of its prompt, or with a copy of a busy slot's cells that hold a much
    /// longer one. A job whose prefix another slot is still decoding waits for that prefill
    /// instead of decoding the same tokens beside it; the jobs behind it go first meanwhile.
    fn admit_waiting(&mut self) {
        let mut index = 0;
        while index < self.waiting.len() {
            let free: Vec<usize> = (0..self.slots.len())
                .filter(|&slot| self.slots[slot].is_none())
                .collect();
            let prompt = &self.waiting[index].prompt;
            let Some(slot) = self.cache.choose_slot(free, prompt) else {
                return;
            };
            if self.waits_for_a_prefill(prompt) {
                index += 1;
                continue;
            }
            let job = self.waiting.remove(index).expect("the job exists");
            self.copy_from_donor(slot, &job.prompt);
            let cached = self.reuse_cache(slot, &job.prompt);
            self.cache.touch(slot);
            tracing::debug!(job_id = %job.job_id, slot, cached_tokens = cached, "job started");
            let speculate = self.shared.settings.speculation != Speculation::Off;
            self.slots[slot] = Some(Sequence::new(job, cached, speculate));
        }
    }

    /// Whether a slot is still decoding a prefix of `prompt` worth copying once it is done.
    fn waits_for_a_prefill(&self, prompt: &[LlamaToken]) -> bool {
        let pending = self
            .slots
            .iter()
            .flatten()
            .filter(|sequence| matches!(sequence.phase, Phase::Prefill { .. }))
            .map(|sequence| common_prefix(&sequence.job.prompt, prompt))
            .max()
            .unwrap_or(0);
        worth_waiting_for(pending, self.cache.longest_held_prefix(prompt))
    }

    /// Replaces `slot`'s KV cells with a copy of the slot's that holds a much longer prefix
    /// of `prompt`, if one does; `reuse_cache` then cuts the copy back to that prefix.
    fn copy_from_donor(&mut self, slot: usize, prompt: &[LlamaToken]) {
        let Some(donor) = self.cache.donor_for(slot, 0..self.slots.len(), prompt) else {
            return;
        };
        // llama.cpp copies another slot's buffers whole (`None`, `None`) before the next
        // decode; the copy's cell bookkeeping is in place at once.
        match self
            .context
            .copy_kv_cache_seq(donor as i32, slot as i32, None, None)
        {
            Ok(()) => {
                self.cache.copy(donor, slot);
                tracing::debug!(
                    slot,
                    donor,
                    tokens = self.cache.tokens(slot).len(),
                    "KV cells copied"
                );
            }
            Err(error) => tracing::warn!(slot, donor, %error, "could not copy KV cells"),
        }
    }

    /// One decode step over every sequence that has work.
    fn step(&mut self) {
        let batch_size = self.shared.settings.batch_size as usize;
        self.batch.clear();
        let mut in_batch = Vec::with_capacity(self.slots.len());
        let mut generating = 0;
        let mut drafted = 0;
        let mut generating_left = (self.slots.iter().flatten())
            .filter(|sequence| matches!(sequence.phase, Phase::Generate { .. }))
            .count();
        // Generating sequences first: one token each keeps every stream moving while prompts
        // are fed in chunks behind them. A sequence that drafts adds its draft behind its next
        // token, leaving room for one token of every generating sequence after it.
        for (slot, sequence) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = sequence else { continue };
            sequence.logits_row = None;
            sequence.draft.clear();
            let Phase::Generate { next } = sequence.phase else {
                continue;
            };
            generating_left -= 1;
            let room =
                batch_size.saturating_sub(self.batch.n_tokens() as usize + 1 + generating_left);
            let mut draft = plan_draft(
                sequence,
                self.cache.tokens(slot),
                next,
                room,
                self.shared.settings.ctx_size,
                self.model,
            );
            if !add(&mut self.batch, next, sequence.n_past, slot, true) {
                continue;
            }
            sequence.logits_row = Some(self.batch.n_tokens() - 1);
            let fed = (draft.iter().zip(sequence.n_past + 1..))
                .take_while(|&(&token, position)| add(&mut self.batch, token, position, slot, true))
                .count();
            draft.truncate(fed);
            self.cache.extend(slot, &[next]);
            self.cache.extend(slot, &draft);
            sequence.n_past += 1 + fed as u32;
            drafted += fed;
            sequence.draft = draft;
            in_batch.push(slot);
            generating += 1;
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
            self.cache.extend(slot, &prompt[fed..end]);
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
                let sequence = self.release(slot, false);
                sequence.fail(&error);
                self.shared.metrics.job_failed();
            }
            return;
        }

        let decoded_at = Instant::now();
        let step_time = decoded_at.duration_since(decode_started);
        self.shared.metrics.decode_step(step_time.as_secs_f64());
        if generating == 0 {
            self.prefill_cost
                .record(self.batch.n_tokens() as usize, step_time);
        }
        // Sampled after every step, so that each sample covers one step: skipping the steps
        // with drafts or prompt tokens made the next interval span several steps, which the
        // sampler rejects as possibly idle, and with speculation drafting every few steps the
        // controller almost never learnt the load.
        let foreign = self
            .cpu
            .as_mut()
            .and_then(|sampler| sampler.after_step(step_time));
        // Only steps of generated tokens are compared: a prompt chunk's cost depends on its
        // size, and so does a step with drafts.
        let thread_change = match &mut self.threads {
            Some(controller) if generating == in_batch.len() && drafted == 0 => {
                controller.observe(generating as u32, step_time, foreign)
            }
            _ => ThreadChange::Keep,
        };
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
            let draft = std::mem::take(&mut sequence.draft);
            let sampler = &mut sequence.job.sampler;
            let context = &self.context;
            // `sample` also accepts each token into the sampler chain; never accept it again.
            let emitted = verify(&draft, |index| sampler.sample(context, row + index as i32));
            if !draft.is_empty() && !self.roll_back_rejected(slot, draft.len(), emitted.len() - 1) {
                continue;
            }
            for (index, token) in emitted.into_iter().enumerate() {
                let Some(sequence) = self.slots[slot].as_mut() else {
                    break; // finished (or its client left) at an earlier token of this step
                };
                if let Some(top) = sequence.job.logprobs {
                    if !self.model.vocab().is_eog(token) {
                        let logits = self.context.get_logits_ith(row + index as i32);
                        let logprob = logprobs_of(self.model, logits, token, top);
                        sequence.pending_logprobs.push(logprob);
                    }
                }
                self.after_sample(slot, token);
            }
        }
        if let ThreadChange::Switch(threads) = thread_change {
            self.set_threads(threads);
        }
    }

    /// Counts a verified draft of `drafted` tokens of which the first `accepted` were kept, and
    /// removes the KV cells (and cache entries) of the rest. `false` if the sequence failed
    /// because llama.cpp could not remove them.
    fn roll_back_rejected(&mut self, slot: usize, drafted: usize, accepted: usize) -> bool {
        self.shared.metrics.draft_verified(drafted, accepted);
        let sequence = self.slots[slot]
            .as_mut()
            .expect("verified slot is occupied");
        if let Some(policy) = sequence.drafting.as_mut() {
            policy.record(drafted, accepted);
        }
        let rejected = (drafted - accepted) as u32;
        if rejected == 0 {
            return true;
        }
        let keep = sequence.n_past - rejected;
        if let Err(error) = self.context.kv_cache_seq_rm(slot as i32, Some(keep), None) {
            let sequence = self.release(slot, false);
            sequence.fail(&WorkerError::Generation(format!(
                "removing the KV cells of rejected draft tokens: {error}"
            )));
            self.shared.metrics.job_failed();
            return false;
        }
        sequence.n_past = keep;
        self.cache.truncate(slot, keep as usize);
        true
    }

    /// llama.cpp fixes a context's thread count when it is created (this llama-cpp-2 has no
    /// setter), so a new count means a new context; every slot's KV cells move over to it.
    fn set_threads(&mut self, threads: u32) {
        let started = Instant::now();
        let mut states = Vec::new();
        for slot in 0..self.slots.len() {
            if self.cache.tokens(slot).is_empty() {
                continue;
            }
            match self
                .context
                .state_seq_get(slot as i32, LlamaStateSeqFlags::empty())
            {
                Ok(state) => states.push((slot, state)),
                Err(error) => {
                    tracing::warn!(slot, %error, "could not save a slot's KV cells");
                    self.drop_slot_state(slot);
                }
            }
        }
        let settings = EngineSettings {
            threads,
            threads_batch: threads,
            ..self.shared.settings.clone()
        };
        let context = match super::new_context(self.model, &settings) {
            Ok(context) => context,
            Err(error) => {
                tracing::warn!(threads, %error, "keeping the thread count: a new context failed");
                return;
            }
        };
        self.context = context;
        let mut moved_tokens = 0;
        for (slot, state) in states {
            match self.context.state_seq_set(&state, slot as i32) {
                Ok(()) => moved_tokens += self.cache.tokens(slot).len(),
                Err(error) => {
                    tracing::warn!(slot, %error, "could not restore a slot's KV cells");
                    self.drop_slot_state(slot);
                }
            }
        }
        self.shared.metrics.threads_changed(threads);
        tracing::info!(
            threads,
            moved_tokens,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "thread count changed"
        );
    }

    /// A slot whose KV cells were lost: its cache is forgotten and a job running there fails.
    fn drop_slot_state(&mut self, slot: usize) {
        self.cache.clear(slot);
        if self.slots[slot].is_some() {
            let sequence = self.release(slot, false);
            sequence.fail(&WorkerError::Generation(
                "its KV cache was lost while changing the thread count".into(),
            ));
            self.shared.metrics.job_failed();
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
            let sequence = self.release(slot, true);
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
        let sequence = self.release(slot, true);
        let job_id = sequence.job.job_id.clone();
        let stats = sequence.finish(reason, &self.shared.metrics);
        tracing::info!(
            %job_id,
            finish_reason = ?stats.finish_reason,
            prompt_tokens = stats.prompt_tokens,
            cached_prompt_tokens = stats.cached_prompt_tokens,
            generated_tokens = stats.generated_tokens,
            time_to_first_token_ms = stats.time_to_first_token_ms as u64,
            tokens_per_second = format_args!("{:.1}", stats.tokens_per_second),
            "job finished"
        );
    }
}

/// The tokens `sequence` drafts behind `next` this step (`speculative.rs`): looked up in what
/// its slot holds plus `next`, at most `room` of them, never past its slot's context or its
/// `max_tokens`, and never an end-of-generation token. Empty without speculation or while
/// its drafting pauses.
fn plan_draft(
    sequence: &mut Sequence,
    held: &[LlamaToken],
    next: LlamaToken,
    room: usize,
    ctx_size: u32,
    model: &LlamaModel,
) -> Vec<LlamaToken> {
    let Some(policy) = sequence.drafting.as_mut() else {
        return Vec::new();
    };
    // `next` takes position n_past, the draft the ones after; `after_sample` keeps one cell of
    // the slot spare, and the step emits up to one token more than it drafts.
    let context_room = (ctx_size as usize).saturating_sub(sequence.n_past as usize + 2);
    let length_room = (sequence.job.max_tokens - sequence.generated).saturating_sub(1) as usize;
    let limit = room.min(context_room).min(length_room);
    if limit == 0 {
        return Vec::new();
    }
    let budget = policy.budget().min(limit);
    if budget == 0 {
        return Vec::new();
    }
    let mut history = Vec::with_capacity(held.len() + 1);
    history.extend_from_slice(held);
    history.push(next);
    let draft = lookup_draft(&history, budget);
    let vocab = model.vocab();
    let end = (draft.iter())
        .position(|&token| vocab.is_eog(token))
        .unwrap_or(draft.len());
    draft[..end].to_vec()
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

/// The model's sliding attention window from its GGUF metadata (`<arch>.attention.sliding_window`),
/// 0 if it declares none.
fn sliding_window(model: &LlamaModel) -> u32 {
    model
        .meta_val_str("general.architecture")
        .ok()
        .and_then(|arch| {
            model
                .meta_val_str(&format!("{arch}.attention.sliding_window"))
                .ok()
        })
        .and_then(|window| window.trim().parse().ok())
        .unwrap_or(0)
}
