//! The scheduler's decisions as plain synchronous code: the worker registry, slot accounting,
//! per-model FIFO queues, retries and cancellation. Every method takes `now` so tests drive it
//! with a fake clock; no sockets, no tokio. The actor (`actor.rs`) owns one of these and turns
//! its [`Effect`]s into messages to the tasks that run jobs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use llorch_api::{
    FinishReason, GenerationStats, Heartbeat, JobInfo, JobState, WorkerInfo, WorkerRegistration,
    WorkerState,
};

use super::affinity::PrefixMemory;
use super::queue_wait::QueueWaits;
use crate::error::OrcdError;

#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// A worker not heard from for this long is marked dead.
    pub heartbeat_timeout: Duration,
    /// Jobs that may wait per model before new ones are refused with 429.
    pub queue_limit: usize,
    /// Finished jobs kept for `GET /v2/tasks`.
    pub recent_jobs: usize,
    /// Dispatches tried per job before it fails (the first one included).
    pub dispatch_attempts: u32,
    /// A dead worker with no running jobs is forgotten after this long (`orcd
    /// --dead-worker-retention-secs`); each one forgotten so is an [`Effect::WorkerExpired`].
    pub dead_worker_retention: Duration,
    pub routing: Routing,
}

/// How long orcd keeps a dead worker's record by default: long enough to see it in `GET
/// /workers` and restart it, short enough that a fleet's list does not fill with the dead.
pub const DEFAULT_DEAD_WORKER_RETENTION: Duration = Duration::from_secs(600);

/// A running job this many tokens short of its `max_tokens` is about to free its slot: a
/// job is sent to wait for that slot in the worker's own queue (`Worker::finishing`).
pub const FINISHING_LEAD_TOKENS: u32 = 2;

/// How a job chooses among the workers with a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The worker with the fewest busy slots (ties by id).
    LeastLoaded,
    /// The worker that was sent the longest prefix of the job's prompt (its KV cache most
    /// likely still holds it), unless it has more than `slack` busy slots beyond the least
    /// loaded one: then the least loaded.
    PrefixAffinity { slack: u32 },
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_timeout: Duration::from_secs(10),
            queue_limit: 32,
            recent_jobs: 256,
            dispatch_attempts: 3,
            dead_worker_retention: DEFAULT_DEAD_WORKER_RETENTION,
            routing: Routing::PrefixAffinity { slack: 2 },
        }
    }
}

/// A job handed to a worker: the job's task should now `POST {url}/execute`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub job_id: String,
    pub worker_id: String,
    pub url: String,
}

/// What the scheduler wants the task running a job to learn.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Dispatch(Assignment),
    /// The job waits; `position` 1 is next. Sent when it enters the queue and when it moves.
    QueuePosition {
        job_id: String,
        position: u32,
    },
    /// Stop the job: a queued job is already removed, a running one must drop its worker request.
    Cancel {
        job_id: String,
    },
    /// The job failed while waiting (no worker left, retries exhausted); it is already finished.
    Fail {
        job_id: String,
        error: OrcdError,
    },
    /// The worker running the job was marked dead (silent past the heartbeat timeout, or
    /// forgotten): the job's task must end the client's stream now instead of waiting for
    /// the connection to time out.
    WorkerDead {
        job_id: String,
        worker_id: String,
        reason: String,
    },
    /// A worker stayed dead past the retention and its record was dropped; not about a job:
    /// the actor writes it to the audit log.
    WorkerExpired {
        worker_id: String,
        url: String,
        dead_for: Duration,
    },
}

/// Why a dispatch failed before the first token.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchFailure {
    /// No connection, or it dropped before any token: the worker is probably gone.
    Unreachable(String),
    /// The worker answered 429/503: full or not ready. Worth retrying, on it too.
    Busy(String),
    /// Any other failure of this worker; the job will not be sent to it again.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Completed(GenerationStats),
    Failed(String),
    Cancelled,
}

/// One model as the scheduler sees it: for `GET /v1/models`, the metrics and `/v1` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    pub model: String,
    pub live_workers: u32,
    pub dead_workers: u32,
    /// Slots of the live workers.
    pub slots_total: u32,
    pub slots_busy: u32,
    /// Jobs waiting for a slot.
    pub queued: u32,
    pub running: u32,
    /// The smallest per-slot context among live workers (0 without one): the most a job can
    /// generate wherever it lands.
    pub min_ctx_size: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job_id: String,
    pub model: String,
    /// Wall-clock time of acceptance, for display only; durations use `now`.
    pub submitted_at_ms: u64,
    /// Fingerprint of the token that submitted the job; `None` without authentication.
    pub owner: Option<String>,
    /// Hashes of the prompt's growing prefixes (`affinity.rs`), for cache-aware routing.
    pub prefixes: Vec<u64>,
    /// The most tokens it generates: near it the job's slot is about to free.
    pub max_tokens: u32,
}

#[derive(Debug)]
struct Worker {
    registration: WorkerRegistration,
    last_seen: Instant,
    dead_since: Option<Instant>,
    /// Jobs orcd itself has dispatched here and not yet seen finish.
    running: BTreeSet<String>,
    /// The worker's own counts from its last heartbeat, lowered as orcd's jobs finish.
    reported_busy: u32,
    reported_waiting: u32,
    /// Prompt prefixes orcd sent here, which its KV cache may still hold.
    prefixes: PrefixMemory,
    /// When orcd last sent this worker a job or saw one of its jobs end: what keep_alive and
    /// LRU eviction measure idleness from. A job shorter than the pool housekeeping's period
    /// is never seen busy there, so it must be recorded here.
    last_used: Option<Instant>,
    /// Running jobs within [`FINISHING_LEAD_TOKENS`] of their `max_tokens`. Each lets one
    /// more job be sent here than its slots take, to wait in the worker's own queue: the worker
    /// starts it at the step the slot frees. Sent only once the slot is free, it would start
    /// after orcd heard of that and sent it, a round trip in which the slot idles and after
    /// which the job has usually missed the step its neighbours start in.
    finishing: BTreeSet<String>,
    /// Jobs sent here that orcd ended while it could not reach the worker (see
    /// [`SchedulerCore::take_given_up`]); at most [`MAX_GIVEN_UP`].
    given_up: BTreeSet<String>,
}

/// The most given-up job ids kept per worker until it is heard from again: enough for every
/// slot of any real worker many times over, and a bound on a worker that never comes back.
const MAX_GIVEN_UP: usize = 1024;

impl Worker {
    /// Remembers that orcd ended `job_id` without this worker, for it to cancel the job once
    /// it is heard from again.
    fn give_up(&mut self, job_id: &str) {
        if self.given_up.len() < MAX_GIVEN_UP {
            self.given_up.insert(job_id.to_owned());
        }
    }

    /// Jobs running or waiting there: orcd's own count, with the worker's report as a floor,
    /// since the worker may run jobs orcd did not send (a previous orcd, a direct client).
    fn load(&self) -> u32 {
        (self.running.len() as u32).max(self.reported_busy + self.reported_waiting)
    }

    fn busy(&self) -> u32 {
        self.load().min(self.registration.slots)
    }

    fn free(&self) -> u32 {
        self.registration.slots.saturating_sub(self.load())
    }

    /// Whether one more job may be sent to wait for a slot about to free (`finishing`).
    fn has_room_for_a_refill(&self) -> bool {
        self.load() < self.registration.slots + self.finishing.len() as u32
    }

    /// One of orcd's jobs there ended: the last heartbeat most likely counted it, so its
    /// counts must not keep the slot taken. A job waiting there takes the slot first.
    fn job_ended(&mut self) {
        if self.reported_waiting > 0 {
            self.reported_waiting -= 1;
        } else {
            self.reported_busy = self.reported_busy.saturating_sub(1);
        }
    }

    fn is_live(&self) -> bool {
        self.dead_since.is_none()
    }

    fn info(&self, now: Instant) -> WorkerInfo {
        WorkerInfo {
            worker_id: self.registration.worker_id.clone(),
            url: self.registration.url.clone(),
            model: self.registration.model.clone(),
            backend: self.registration.backend,
            slots_total: self.registration.slots,
            slots_busy: self.busy(),
            ctx_size: self.registration.ctx_size,
            last_seen_ms_ago: millis(now.saturating_duration_since(self.last_seen)) as u64,
            state: if self.is_live() {
                WorkerState::Live
            } else {
                WorkerState::Dead
            },
            embeddings: self.registration.embeddings,
        }
    }
}

#[derive(Debug)]
struct Job {
    job_id: String,
    model: String,
    owner: Option<String>,
    state: JobState,
    worker_id: Option<String>,
    /// Workers that failed this job; it is not sent to them again.
    excluded: BTreeSet<String>,
    attempts: u32,
    last_failure: Option<String>,
    submitted_at: Instant,
    submitted_at_ms: u64,
    first_token_at: Option<Instant>,
    generated_tokens: u32,
    cancel_requested: bool,
    reported_position: Option<u32>,
    prefixes: Vec<u64>,
    max_tokens: u32,
}

impl Job {
    fn info(&self, now: Instant, outcome: Option<&JobOutcome>) -> JobInfo {
        let (state, finish_reason, error, prompt_tokens, generated_tokens) = match outcome {
            None => (self.state, None, None, 0, self.generated_tokens),
            Some(JobOutcome::Completed(stats)) => (
                JobState::Completed,
                Some(stats.finish_reason),
                None,
                stats.prompt_tokens,
                stats.generated_tokens,
            ),
            Some(JobOutcome::Failed(message)) => (
                JobState::Failed,
                None,
                Some(message.clone()),
                0,
                self.generated_tokens,
            ),
            Some(JobOutcome::Cancelled) => (
                JobState::Cancelled,
                Some(FinishReason::Cancelled),
                None,
                0,
                self.generated_tokens,
            ),
        };
        JobInfo {
            job_id: self.job_id.clone(),
            model: self.model.clone(),
            owner: self.owner.clone(),
            worker_id: self.worker_id.clone(),
            state,
            prompt_tokens,
            generated_tokens,
            submitted_at_ms: self.submitted_at_ms,
            // Measured by orcd from acceptance, queueing included: what the client experienced.
            time_to_first_token_ms: self
                .first_token_at
                .map(|at| millis(at.saturating_duration_since(self.submitted_at))),
            duration_ms: outcome.map(|_| millis(now.saturating_duration_since(self.submitted_at))),
            finish_reason,
            error,
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// All scheduling state. Methods return their direct answer; what other jobs must learn as a
/// consequence accumulates as [`Effect`]s, collected with [`SchedulerCore::take_effects`].
#[derive(Debug)]
pub struct SchedulerCore {
    config: SchedulerConfig,
    /// Ordered by id so that "least loaded, ties by id" is a plain `min_by_key`.
    workers: BTreeMap<String, Worker>,
    /// Queued and running jobs.
    jobs: HashMap<String, Job>,
    queues: HashMap<String, VecDeque<String>>,
    /// Finished jobs, oldest first.
    recent: VecDeque<JobInfo>,
    effects: Vec<Effect>,
    accepting: bool,
    /// Admission-to-dispatch waits over the last minute, for scale-out.
    queue_waits: QueueWaits,
}

impl SchedulerCore {
    pub fn new(config: SchedulerConfig) -> Self {
        SchedulerCore {
            config,
            workers: BTreeMap::new(),
            jobs: HashMap::new(),
            queues: HashMap::new(),
            recent: VecDeque::new(),
            effects: Vec::new(),
            accepting: true,
            queue_waits: QueueWaits::default(),
        }
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Adds a worker, or refreshes one that registers again (after its own restart or orcd's).
    pub fn register(&mut self, registration: WorkerRegistration, now: Instant) -> WorkerInfo {
        let id = registration.worker_id.clone();
        let model = registration.model.clone();
        let previous_model = match self.workers.get_mut(&id) {
            Some(worker) => {
                let previous = std::mem::replace(&mut worker.registration, registration);
                worker.last_seen = now;
                worker.dead_since = None;
                // A fresh registration means a fresh worker process with empty slots.
                worker.reported_busy = 0;
                worker.reported_waiting = 0;
                worker.prefixes.clear();
                Some(previous.model)
            }
            None => {
                self.workers.insert(
                    id.clone(),
                    Worker {
                        registration,
                        last_seen: now,
                        dead_since: None,
                        running: BTreeSet::new(),
                        reported_busy: 0,
                        reported_waiting: 0,
                        prefixes: PrefixMemory::default(),
                        last_used: None,
                        finishing: BTreeSet::new(),
                        given_up: BTreeSet::new(),
                    },
                );
                None
            }
        };
        tracing::info!(worker_id = %id, %model, "worker registered");
        self.drain_queue(&model, now);
        if let Some(previous_model) = previous_model.filter(|previous| *previous != model) {
            self.drain_queue(&previous_model, now);
        }
        self.workers[&id].info(now)
    }

    pub fn heartbeat(
        &mut self,
        worker_id: &str,
        heartbeat: Heartbeat,
        now: Instant,
    ) -> Result<Vec<String>, OrcdError> {
        let worker = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| OrcdError::WorkerNotFound(worker_id.to_owned()))?;
        if !worker.is_live() {
            tracing::info!(%worker_id, "worker is alive again");
        }
        let given_up = std::mem::take(&mut worker.given_up);
        worker.last_seen = now;
        worker.dead_since = None;
        worker.reported_busy = heartbeat.slots_busy;
        worker.reported_waiting = heartbeat.jobs_waiting;
        worker.registration.slots = heartbeat.slots_total;
        let model = worker.registration.model.clone();
        self.drain_queue(&model, now);
        Ok(given_up.into_iter().collect())
    }

    /// The jobs orcd gave up on `worker_id`, once each: sent there, then ended by orcd while
    /// the worker was marked dead (no heartbeat, or the connection broke mid-stream). Nobody
    /// reads their streams any more, but a worker cut off from orcd cannot tell, and would
    /// generate them to the end; told in the answer to its next heartbeat or registration, it
    /// cancels them.
    pub fn take_given_up(&mut self, worker_id: &str) -> Vec<String> {
        self.workers
            .get_mut(worker_id)
            .map(|worker| std::mem::take(&mut worker.given_up).into_iter().collect())
            .unwrap_or_default()
    }

    /// Forgets a dead worker at the operator's request (`pool worker forget`); a live one is
    /// refused, since it would register again with its next heartbeat.
    pub fn forget(&mut self, worker_id: &str, now: Instant) -> Result<WorkerInfo, OrcdError> {
        let worker = self
            .workers
            .get(worker_id)
            .ok_or_else(|| OrcdError::WorkerNotFound(worker_id.to_owned()))?;
        if worker.is_live() {
            return Err(OrcdError::WorkerLive(worker_id.to_owned()));
        }
        let worker = self.workers.remove(worker_id).expect("looked up above");
        let info = worker.info(now);
        tracing::info!(%worker_id, url = %info.url, "dead worker forgotten at the operator's request");
        for job_id in &worker.running {
            self.effects.push(Effect::WorkerDead {
                job_id: job_id.clone(),
                worker_id: worker_id.to_owned(),
                reason: "the operator removed it from orcd".to_owned(),
            });
        }
        self.drain_queue(&worker.registration.model, now);
        Ok(info)
    }

    /// Forgets a worker. Its running jobs keep their connections; their slots simply vanish.
    pub fn deregister(&mut self, worker_id: &str, now: Instant) -> Result<(), OrcdError> {
        let worker = self
            .workers
            .remove(worker_id)
            .ok_or_else(|| OrcdError::WorkerNotFound(worker_id.to_owned()))?;
        tracing::info!(%worker_id, "worker deregistered");
        self.drain_queue(&worker.registration.model, now);
        Ok(())
    }

    pub fn workers(&self, now: Instant) -> Vec<WorkerInfo> {
        self.workers
            .values()
            .map(|worker| worker.info(now))
            .collect()
    }

    /// Each model's median queue wait over the last minute (dispatched jobs and those still
    /// waiting), for scale-out.
    pub fn median_queue_waits(&mut self, now: Instant) -> BTreeMap<String, Duration> {
        let queued = self
            .jobs
            .values()
            .filter(|job| job.state != JobState::Running)
            .map(|job| (job.model.as_str(), job.submitted_at));
        self.queue_waits.medians(queued, now)
    }

    /// When each worker last got a job or finished one; workers that never had a job are
    /// absent.
    pub fn last_used(&self) -> BTreeMap<String, Instant> {
        self.workers
            .iter()
            .filter_map(|(id, worker)| worker.last_used.map(|used| (id.clone(), used)))
            .collect()
    }

    /// Every model that has a worker (live or dead) or waiting jobs, sorted by name.
    pub fn models(&self) -> Vec<ModelSummary> {
        fn entry<'a>(
            models: &'a mut BTreeMap<String, ModelSummary>,
            model: &str,
        ) -> &'a mut ModelSummary {
            models
                .entry(model.to_owned())
                .or_insert_with(|| ModelSummary {
                    model: model.to_owned(),
                    live_workers: 0,
                    dead_workers: 0,
                    slots_total: 0,
                    slots_busy: 0,
                    queued: 0,
                    running: 0,
                    min_ctx_size: 0,
                })
        }
        let mut models = BTreeMap::new();
        for worker in self.workers.values() {
            let summary = entry(&mut models, &worker.registration.model);
            if worker.is_live() {
                summary.live_workers += 1;
                summary.slots_total += worker.registration.slots;
                summary.slots_busy += worker.busy();
                summary.min_ctx_size = match summary.min_ctx_size {
                    0 => worker.registration.ctx_size,
                    smallest => smallest.min(worker.registration.ctx_size),
                };
            } else {
                summary.dead_workers += 1;
            }
        }
        for job in self.jobs.values() {
            let summary = entry(&mut models, &job.model);
            match job.state {
                JobState::Running => summary.running += 1,
                _ => summary.queued += 1,
            }
        }
        models.into_values().collect()
    }

    /// Admits a job: dispatched at once when a slot is free, else queued. Either way the job's
    /// task learns it from an effect; the error is the answer to the client's request.
    pub fn submit(&mut self, job: NewJob, now: Instant) -> Result<(), OrcdError> {
        if !self.accepting {
            return Err(OrcdError::Draining);
        }
        if self.jobs.contains_key(&job.job_id) {
            return Err(OrcdError::Internal(format!(
                "job id `{}` used twice",
                job.job_id
            )));
        }
        let no_exclusions = BTreeSet::new();
        if !self.has_candidate(&job.model, &no_exclusions) {
            return Err(OrcdError::NoWorker { model: job.model });
        }
        let queue_len = self.queues.get(&job.model).map_or(0, VecDeque::len);
        let free_worker = self.pick_worker(&job.model, &no_exclusions, &job.prefixes);
        if queue_len >= self.config.queue_limit && free_worker.is_none() {
            return Err(OrcdError::QueueFull {
                retry_after_secs: self.retry_after_secs(&job.model),
                limit: self.config.queue_limit,
                model: job.model,
            });
        }
        let model = job.model.clone();
        let job_id = job.job_id.clone();
        self.jobs.insert(
            job_id.clone(),
            Job {
                job_id: job.job_id,
                model: job.model,
                owner: job.owner,
                state: JobState::Queued,
                worker_id: None,
                excluded: BTreeSet::new(),
                attempts: 0,
                last_failure: None,
                submitted_at: now,
                submitted_at_ms: job.submitted_at_ms,
                first_token_at: None,
                generated_tokens: 0,
                cancel_requested: false,
                reported_position: None,
                prefixes: job.prefixes,
                max_tokens: job.max_tokens,
            },
        );
        // Through the queue even when a slot is free, so that jobs already waiting go first.
        self.queues
            .entry(model.clone())
            .or_default()
            .push_back(job_id);
        self.drain_queue(&model, now);
        Ok(())
    }

    /// A dispatch failed before the first token: the job goes back to the head of its queue
    /// (or to another worker at once), unless its attempts are spent.
    pub fn dispatch_failed(
        &mut self,
        job_id: &str,
        worker_id: &str,
        failure: DispatchFailure,
        now: Instant,
    ) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        if job.state != JobState::Running || job.worker_id.as_deref() != Some(worker_id) {
            return;
        }
        job.state = JobState::Queued;
        job.worker_id = None;
        let (message, exclude, mark_dead) = match failure {
            DispatchFailure::Unreachable(message) => (message, true, true),
            DispatchFailure::Busy(message) => (message, false, false),
            DispatchFailure::Failed(message) => (message, true, false),
        };
        if exclude {
            job.excluded.insert(worker_id.to_owned());
        }
        let failure_text = format!("worker `{worker_id}`: {message}");
        job.last_failure = Some(failure_text.clone());
        let attempts = job.attempts;
        let cancel_requested = job.cancel_requested;
        let model = job.model.clone();
        tracing::warn!(%job_id, %worker_id, attempts, "dispatch failed: {}", crate::validation::log_safe(&message));

        self.release_slot(worker_id, job_id, now);
        if let Some(worker) = self.workers.get_mut(worker_id) {
            if mark_dead {
                worker.dead_since.get_or_insert(now);
            } else if !exclude {
                // It says it is full, its queue included; believe it until a slot frees or
                // it heartbeats.
                worker.reported_busy = worker.registration.slots;
                worker.reported_waiting = worker.registration.slots;
            }
        }
        if cancel_requested {
            self.finish(job_id, JobOutcome::Cancelled, now);
        } else if attempts >= self.config.dispatch_attempts {
            self.fail_waiting_job(
                job_id,
                OrcdError::DispatchFailed {
                    job_id: job_id.to_owned(),
                    message: format!("{attempts} attempts failed; the last: {failure_text}"),
                },
                now,
            );
            self.drain_queue(&model, now);
        } else {
            self.queues
                .entry(model.clone())
                .or_default()
                .push_front(job_id.to_owned());
            self.drain_queue(&model, now);
        }
    }

    /// The connection to a worker broke mid-stream: stop sending it jobs until it heartbeats.
    pub fn worker_lost(&mut self, worker_id: &str, now: Instant) {
        let Some(worker) = self.workers.get_mut(worker_id) else {
            return;
        };
        if worker.dead_since.is_none() {
            tracing::warn!(%worker_id, "worker lost; marked dead until it heartbeats again");
            worker.dead_since = Some(now);
        }
        let model = worker.registration.model.clone();
        self.drain_queue(&model, now);
    }

    /// A running job's progress: `generated_tokens` so far. Its task reports the first token
    /// at once, the count [`FINISHING_LEAD_TOKENS`] short of `max_tokens` at once, and the rest
    /// now and then, so a token costs the scheduler nothing.
    pub fn record_progress(&mut self, job_id: &str, generated_tokens: u32, now: Instant) {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        job.generated_tokens = job.generated_tokens.max(generated_tokens);
        if generated_tokens > 0 {
            job.first_token_at.get_or_insert(now);
        }
        let finishing = job.generated_tokens + FINISHING_LEAD_TOKENS >= job.max_tokens;
        let Some(worker_id) = job.worker_id.as_deref().filter(|_| finishing) else {
            return;
        };
        let model = job.model.clone();
        if let Some(worker) = self.workers.get_mut(worker_id) {
            if worker.running.contains(job_id) && worker.finishing.insert(job_id.to_owned()) {
                self.drain_queue(&model, now);
            }
        }
    }

    /// Ends a job, frees what it held and lets the next queued job in. The first outcome wins:
    /// finishing a job that is already finished does nothing.
    pub fn finish(&mut self, job_id: &str, outcome: JobOutcome, now: Instant) {
        let Some(job) = self.jobs.remove(job_id) else {
            return;
        };
        match (&job.state, &job.worker_id) {
            (JobState::Running, Some(worker_id)) => {
                self.give_up_if_unreachable(worker_id, job_id, &outcome);
                self.release_slot(worker_id, job_id, now)
            }
            _ => {
                if let Some(queue) = self.queues.get_mut(&job.model) {
                    queue.retain(|queued| queued != job_id);
                }
            }
        }
        self.remember(job.info(now, Some(&outcome)));
        self.drain_queue(&job.model, now);
    }

    /// Cancels a queued job at once, or asks a running job's task to stop (it then finishes
    /// the job). Returns the state the job was in.
    pub fn cancel(&mut self, job_id: &str, now: Instant) -> Result<JobState, OrcdError> {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return Err(
                match self.recent.iter().find(|info| info.job_id == job_id) {
                    Some(info) => OrcdError::JobFinished {
                        job_id: job_id.to_owned(),
                        state: info.state,
                    },
                    None => OrcdError::JobNotFound(job_id.to_owned()),
                },
            );
        };
        let previous = job.state;
        job.cancel_requested = true;
        if previous == JobState::Queued {
            self.finish(job_id, JobOutcome::Cancelled, now);
        }
        self.effects.push(Effect::Cancel {
            job_id: job_id.to_owned(),
        });
        Ok(previous)
    }

    /// Marks silent workers dead and forgets long-dead ones.
    pub fn tick(&mut self, now: Instant) {
        let timeout = self.config.heartbeat_timeout;
        let mut affected = BTreeSet::new();
        for (worker_id, worker) in &mut self.workers {
            if worker.is_live() && now.saturating_duration_since(worker.last_seen) > timeout {
                tracing::warn!(%worker_id, running = worker.running.len(), "no heartbeat for {timeout:?}; worker marked dead");
                worker.dead_since = Some(now);
                affected.insert(worker.registration.model.clone());
                // Each fails now (`Effect::WorkerDead`), whatever the worker does next.
                let running = worker.running.clone();
                for job_id in &running {
                    worker.give_up(job_id);
                }
                for job_id in &running {
                    self.effects.push(Effect::WorkerDead {
                        job_id: job_id.clone(),
                        worker_id: worker_id.clone(),
                        reason: format!("no heartbeat for {} s", timeout.as_secs_f64()),
                    });
                }
            }
        }
        let retention = self.config.dead_worker_retention;
        let expired: Vec<(String, Duration)> = self
            .workers
            .iter()
            .filter(|(_, worker)| worker.running.is_empty())
            .filter_map(|(worker_id, worker)| {
                let dead_for = now.saturating_duration_since(worker.dead_since?);
                (dead_for > retention).then(|| (worker_id.clone(), dead_for))
            })
            .collect();
        for (worker_id, dead_for) in expired {
            if let Some(worker) = self.workers.remove(&worker_id) {
                tracing::info!(%worker_id, dead_secs = dead_for.as_secs(), "dead worker's record expired");
                self.effects.push(Effect::WorkerExpired {
                    worker_id,
                    url: worker.registration.url,
                    dead_for,
                });
            }
        }
        for model in affected {
            self.drain_queue(&model, now);
        }
    }

    /// Refuses new jobs from now on; jobs already admitted carry on.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Active jobs, then finished ones, newest first within each.
    pub fn jobs(&self, now: Instant) -> Vec<JobInfo> {
        let mut active: Vec<&Job> = self.jobs.values().collect();
        active.sort_by(|a, b| {
            b.submitted_at
                .cmp(&a.submitted_at)
                .then(a.job_id.cmp(&b.job_id))
        });
        active
            .into_iter()
            .map(|job| job.info(now, None))
            .chain(self.recent.iter().rev().cloned())
            .collect()
    }

    /// Queued and running jobs only, in no particular order: what the fleet event stream diffs.
    pub fn active_jobs(&self, now: Instant) -> Vec<JobInfo> {
        self.jobs.values().map(|job| job.info(now, None)).collect()
    }

    pub fn job(&self, job_id: &str, now: Instant) -> Option<JobInfo> {
        match self.jobs.get(job_id) {
            Some(job) => Some(job.info(now, None)),
            None => self
                .recent
                .iter()
                .find(|info| info.job_id == job_id)
                .cloned(),
        }
    }

    fn remember(&mut self, info: JobInfo) {
        if self.config.recent_jobs == 0 {
            return;
        }
        while self.recent.len() >= self.config.recent_jobs {
            self.recent.pop_front();
        }
        self.recent.push_back(info);
    }

    /// A job that ends other than completed while its worker is marked dead was ended by orcd
    /// alone (a broken connection: [`SchedulerCore::worker_lost`]); the worker may still run it.
    fn give_up_if_unreachable(&mut self, worker_id: &str, job_id: &str, outcome: &JobOutcome) {
        if let Some(worker) = self.workers.get_mut(worker_id) {
            if !worker.is_live() && !matches!(outcome, JobOutcome::Completed(_)) {
                worker.give_up(job_id);
            }
        }
    }

    fn release_slot(&mut self, worker_id: &str, job_id: &str, now: Instant) {
        if let Some(worker) = self.workers.get_mut(worker_id) {
            worker.finishing.remove(job_id);
            if worker.running.remove(job_id) {
                worker.job_ended();
                worker.last_used = Some(now);
            }
        }
    }

    fn has_candidate(&self, model: &str, excluded: &BTreeSet<String>) -> bool {
        self.workers
            .values()
            .any(|worker| Self::serves(worker, model, excluded))
    }

    fn serves(worker: &Worker, model: &str, excluded: &BTreeSet<String>) -> bool {
        worker.is_live()
            && worker.registration.model == model
            && !excluded.contains(&worker.registration.worker_id)
    }

    /// A live worker serving `model` with a free slot, or else one with a slot about to free
    /// (`Worker::finishing`).
    fn pick_worker(
        &self,
        model: &str,
        excluded: &BTreeSet<String>,
        prefixes: &[u64],
    ) -> Option<String> {
        self.pick_among(model, excluded, prefixes, |worker| worker.free() > 0)
            .or_else(|| self.pick_among(model, excluded, prefixes, Worker::has_room_for_a_refill))
    }

    /// Among the live workers serving `model` that `has_room`: the least loaded, ties by id;
    /// with prefix affinity the one that holds the longest prefix of the job's prompt, unless
    /// that one is loaded unevenly.
    fn pick_among(
        &self,
        model: &str,
        excluded: &BTreeSet<String>,
        prefixes: &[u64],
        has_room: impl Fn(&Worker) -> bool,
    ) -> Option<String> {
        let candidates = || {
            self.workers
                .values()
                .filter(|worker| Self::serves(worker, model, excluded) && has_room(worker))
        };
        let least_loaded = candidates().min_by_key(|worker| worker.load())?;
        let mut chosen = least_loaded;
        if let Routing::PrefixAffinity { slack } = self.config.routing {
            let holder = candidates()
                .map(|worker| (worker.prefixes.matched(prefixes), worker))
                .filter(|(matched, _)| *matched > 0)
                // Longest prefix, then fewest busy slots, then lowest id.
                .min_by_key(|(matched, worker)| (std::cmp::Reverse(*matched), worker.load()));
            if let Some((_, holder)) = holder {
                if holder.load() <= least_loaded.load() + slack {
                    chosen = holder;
                }
            }
        }
        Some(chosen.registration.worker_id.clone())
    }

    /// Places every queued job of `model` that can run now, in FIFO order; fails the ones no
    /// live worker can ever take; reports the new positions of the rest.
    fn drain_queue(&mut self, model: &str, now: Instant) {
        let Some(queue) = self.queues.remove(model) else {
            return;
        };
        let mut waiting = VecDeque::with_capacity(queue.len());
        for job_id in queue {
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            if !self.has_candidate(model, &job.excluded) {
                let error = match job.last_failure.clone() {
                    Some(failure) => OrcdError::DispatchFailed {
                        job_id: job_id.clone(),
                        message: format!("no other live worker serves model `{model}`; {failure}"),
                    },
                    None => OrcdError::NoWorker {
                        model: model.to_owned(),
                    },
                };
                self.fail_waiting_job(&job_id, error, now);
                continue;
            }
            match self.pick_worker(model, &job.excluded, &job.prefixes) {
                Some(worker_id) => {
                    let wait = now.saturating_duration_since(job.submitted_at);
                    self.queue_waits.record(model, wait, now);
                    self.assign(&job_id, &worker_id, now)
                }
                None => waiting.push_back(job_id),
            }
        }
        for (index, job_id) in waiting.iter().enumerate() {
            let position = index as u32 + 1;
            if let Some(job) = self.jobs.get_mut(job_id) {
                if job.reported_position != Some(position) {
                    job.reported_position = Some(position);
                    self.effects.push(Effect::QueuePosition {
                        job_id: job_id.clone(),
                        position,
                    });
                }
            }
        }
        if !waiting.is_empty() {
            self.queues.insert(model.to_owned(), waiting);
        }
    }

    fn assign(&mut self, job_id: &str, worker_id: &str, now: Instant) {
        let (Some(job), Some(worker)) =
            (self.jobs.get_mut(job_id), self.workers.get_mut(worker_id))
        else {
            return;
        };
        job.state = JobState::Running;
        job.worker_id = Some(worker_id.to_owned());
        job.attempts += 1;
        job.reported_position = None;
        worker.running.insert(job_id.to_owned());
        worker.last_used = Some(now);
        worker.prefixes.record(&job.prefixes);
        self.effects.push(Effect::Dispatch(Assignment {
            job_id: job_id.to_owned(),
            worker_id: worker_id.to_owned(),
            url: worker.registration.url.clone(),
        }));
    }

    /// Fails a job that is not running (it holds no slot) and tells its task.
    fn fail_waiting_job(&mut self, job_id: &str, error: OrcdError, now: Instant) {
        let Some(job) = self.jobs.remove(job_id) else {
            return;
        };
        if let Some(queue) = self.queues.get_mut(&job.model) {
            queue.retain(|queued| queued != job_id);
        }
        self.remember(job.info(now, Some(&JobOutcome::Failed(error.to_string()))));
        self.effects.push(Effect::Fail {
            job_id: job_id.to_owned(),
            error,
        });
    }

    /// How long a client refused with 429 should wait: about the time until one slot of the
    /// model frees, from the durations of its recent jobs, between 1 and 60 seconds.
    fn retry_after_secs(&self, model: &str) -> u64 {
        let durations: Vec<f64> = self
            .recent
            .iter()
            .filter(|info| info.model == model && info.state == JobState::Completed)
            .filter_map(|info| info.duration_ms)
            .collect();
        let slots: u32 = self
            .workers
            .values()
            .filter(|worker| Self::serves(worker, model, &BTreeSet::new()))
            .map(|worker| worker.registration.slots)
            .sum();
        if durations.is_empty() || slots == 0 {
            return 1;
        }
        let mean_ms = durations.iter().sum::<f64>() / durations.len() as f64;
        ((mean_ms / 1000.0 / slots as f64).ceil() as u64).clamp(1, 60)
    }
}

#[cfg(test)]
mod tests;
