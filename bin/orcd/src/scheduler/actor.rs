//! The scheduler actor: one task owns the [`SchedulerCore`], takes commands over a channel
//! (answering on oneshot channels), ticks for heartbeat expiry, and forwards every effect to the
//! task that runs the job concerned. Each job's `tracing` span travels with its submission, so
//! what the scheduler logs about a job is logged inside that job's span.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use llorch_api::audit::AuditEvent;
use llorch_api::{Heartbeat, JobInfo, JobState, WorkerInfo, WorkerRegistration};
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use super::core::{
    DispatchFailure, Effect, JobOutcome, ModelSummary, NewJob, SchedulerConfig, SchedulerCore,
};
use crate::audit::AuditLog;
use crate::error::OrcdError;
use crate::events::{FleetObserver, Subscription, SAMPLE_INTERVAL};

/// What the task running a job hears from the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub enum JobNotice {
    /// Send the job to this worker now.
    Dispatch { worker_id: String, url: String },
    /// The job waits at this queue position (1 is next).
    Queued { position: u32 },
    /// Stop the job (`DELETE /v2/tasks/{id}`).
    Cancel,
    /// The job failed while it waited; it is already finished.
    Fail(OrcdError),
    /// The worker running the job is dead; end the stream now.
    WorkerDead { worker_id: String, reason: String },
}

#[derive(Debug)]
enum Command {
    /// An event from outside the scheduler (model placement) for the fleet stream.
    Announce {
        event: llorch_api::fleet::FleetEvent,
    },
    Register {
        registration: WorkerRegistration,
        reply: oneshot::Sender<(WorkerInfo, Vec<String>)>,
    },
    Heartbeat {
        worker_id: String,
        heartbeat: Heartbeat,
        reply: oneshot::Sender<Result<Vec<String>, OrcdError>>,
    },
    Deregister {
        worker_id: String,
        reply: oneshot::Sender<Result<(), OrcdError>>,
    },
    Forget {
        worker_id: String,
        reply: oneshot::Sender<Result<WorkerInfo, OrcdError>>,
    },
    /// Each model's median queue wait over the last minute (scale-out).
    QueueWaits {
        reply: oneshot::Sender<std::collections::BTreeMap<String, std::time::Duration>>,
    },
    /// When each worker last got or finished a job (keep_alive, LRU eviction).
    LastUsed {
        reply: oneshot::Sender<std::collections::BTreeMap<String, Instant>>,
    },
    Workers {
        reply: oneshot::Sender<Vec<WorkerInfo>>,
    },
    Models {
        reply: oneshot::Sender<Vec<ModelSummary>>,
    },
    Submit {
        job: NewJob,
        notices: mpsc::UnboundedSender<JobNotice>,
        span: Span,
        reply: oneshot::Sender<Result<(), OrcdError>>,
    },
    DispatchFailed {
        job_id: String,
        worker_id: String,
        failure: DispatchFailure,
    },
    WorkerLost {
        worker_id: String,
    },
    Progress {
        job_id: String,
        generated_tokens: u32,
    },
    Finish {
        job_id: String,
        outcome: JobOutcome,
    },
    Cancel {
        job_id: String,
        reply: oneshot::Sender<Result<JobState, OrcdError>>,
    },
    Jobs {
        reply: oneshot::Sender<Vec<JobInfo>>,
    },
    Job {
        job_id: String,
        reply: oneshot::Sender<Option<JobInfo>>,
    },
    StopAccepting,
    Subscribe {
        reply: oneshot::Sender<Subscription>,
    },
}

impl Command {
    /// Commands after which the fleet may look different (token counts aside: those are
    /// published once per sample interval).
    fn changes_fleet(&self) -> bool {
        !matches!(
            self,
            Command::Workers { .. }
                | Command::QueueWaits { .. }
                | Command::LastUsed { .. }
                | Command::Models { .. }
                | Command::Jobs { .. }
                | Command::Job { .. }
                | Command::Progress { .. }
                | Command::Subscribe { .. }
                | Command::Announce { .. }
        )
    }
}

/// A cheap, cloneable handle to the scheduler actor. The actor stops when the last handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    // Unbounded so that fire-and-forget reports (tokens, finish) can be sent from `Drop` and
    // never block a stream; every command is small and the actor does no I/O.
    commands: mpsc::UnboundedSender<Command>,
}

impl SchedulerHandle {
    /// Starts the actor on the current tokio runtime.
    pub fn spawn(config: SchedulerConfig) -> Self {
        Self::spawn_audited(config, None)
    }

    /// Like [`SchedulerHandle::spawn`], writing what the scheduler decides on its own (a dead
    /// worker's record expiring) to the audit log.
    pub fn spawn_audited(config: SchedulerConfig, audit: Option<AuditLog>) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        // Expiry is checked a few times per timeout so a dead worker is noticed promptly.
        let tick =
            (config.heartbeat_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(run_actor(SchedulerCore::new(config), receiver, tick, audit));
        SchedulerHandle { commands }
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, OrcdError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| scheduler_stopped())?;
        answer.await.map_err(|_| scheduler_stopped())
    }

    fn tell(&self, command: Command) {
        // Only fails once the actor is gone, and then nobody is left to care.
        let _ = self.commands.send(command);
    }

    /// Adds or refreshes a worker; also returns the jobs orcd gave up on it (see
    /// [`SchedulerCore::take_given_up`]), for the worker to cancel.
    pub async fn register(
        &self,
        registration: WorkerRegistration,
    ) -> Result<(WorkerInfo, Vec<String>), OrcdError> {
        self.ask(|reply| Command::Register {
            registration,
            reply,
        })
        .await
    }

    /// Records a heartbeat; returns the jobs orcd gave up on the worker, for it to cancel.
    pub async fn heartbeat(
        &self,
        worker_id: String,
        heartbeat: Heartbeat,
    ) -> Result<Vec<String>, OrcdError> {
        self.ask(|reply| Command::Heartbeat {
            worker_id,
            heartbeat,
            reply,
        })
        .await?
    }

    pub async fn deregister(&self, worker_id: String) -> Result<(), OrcdError> {
        self.ask(|reply| Command::Deregister { worker_id, reply })
            .await?
    }

    /// Removes a dead worker's record (`POST /workers/{id}/forget`).
    pub async fn forget(&self, worker_id: String) -> Result<WorkerInfo, OrcdError> {
        self.ask(|reply| Command::Forget { worker_id, reply })
            .await?
    }

    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, OrcdError> {
        self.ask(|reply| Command::Workers { reply }).await
    }

    pub async fn models(&self) -> Result<Vec<ModelSummary>, OrcdError> {
        self.ask(|reply| Command::Models { reply }).await
    }

    /// Each model's median queue wait over the last minute.
    pub async fn median_queue_waits(
        &self,
    ) -> Result<std::collections::BTreeMap<String, std::time::Duration>, OrcdError> {
        self.ask(|reply| Command::QueueWaits { reply }).await
    }

    /// When each worker last got a job or finished one; workers that never had one are absent.
    pub async fn last_used(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Instant>, OrcdError> {
        self.ask(|reply| Command::LastUsed { reply }).await
    }

    /// Admits a job. The receiver carries the scheduler's decisions about it, starting with
    /// either `Dispatch` or `Queued`. If this future is dropped before the answer arrives, an
    /// admitted job is ended as cancelled at once: nobody would be left to run it.
    pub async fn submit(
        &self,
        job: NewJob,
    ) -> Result<mpsc::UnboundedReceiver<JobNotice>, OrcdError> {
        let (notices, receiver) = mpsc::unbounded_channel();
        let span = Span::current();
        self.ask(|reply| Command::Submit {
            job,
            notices,
            span,
            reply,
        })
        .await??;
        Ok(receiver)
    }

    pub fn dispatch_failed(&self, job_id: &str, worker_id: &str, failure: DispatchFailure) {
        self.tell(Command::DispatchFailed {
            job_id: job_id.to_owned(),
            worker_id: worker_id.to_owned(),
            failure,
        });
    }

    pub fn worker_lost(&self, worker_id: &str) {
        self.tell(Command::WorkerLost {
            worker_id: worker_id.to_owned(),
        });
    }

    /// How many tokens a running job has relayed so far (sent now and then, not per token).
    pub fn progress(&self, job_id: &str, generated_tokens: u32) {
        self.tell(Command::Progress {
            job_id: job_id.to_owned(),
            generated_tokens,
        });
    }

    pub fn finish(&self, job_id: &str, outcome: JobOutcome) {
        self.tell(Command::Finish {
            job_id: job_id.to_owned(),
            outcome,
        });
    }

    pub async fn cancel(&self, job_id: String) -> Result<JobState, OrcdError> {
        self.ask(|reply| Command::Cancel { job_id, reply }).await?
    }

    pub async fn jobs(&self) -> Result<Vec<JobInfo>, OrcdError> {
        self.ask(|reply| Command::Jobs { reply }).await
    }

    pub async fn job(&self, job_id: String) -> Result<JobInfo, OrcdError> {
        let missing = OrcdError::JobNotFound(job_id.clone());
        self.ask(|reply| Command::Job { job_id, reply })
            .await?
            .ok_or(missing)
    }

    pub fn stop_accepting(&self) {
        self.tell(Command::StopAccepting);
    }

    /// Publishes `event` on the fleet stream (`GET /v2/events`) in order with the
    /// scheduler's own events.
    pub fn announce(&self, event: llorch_api::fleet::FleetEvent) {
        self.tell(Command::Announce { event });
    }

    /// The fleet as it is now and a receiver of every change after it (`GET /v2/events`).
    pub async fn subscribe(&self) -> Result<Subscription, OrcdError> {
        self.ask(|reply| Command::Subscribe { reply }).await
    }
}

fn scheduler_stopped() -> OrcdError {
    OrcdError::Internal("the scheduler task has stopped".into())
}

async fn run_actor(
    mut core: SchedulerCore,
    mut commands: mpsc::UnboundedReceiver<Command>,
    tick: Duration,
    audit: Option<AuditLog>,
) {
    let mut jobs: HashMap<String, JobChannel> = HashMap::new();
    let mut observer = FleetObserver::new(Instant::now());
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = tokio::time::interval(SAMPLE_INTERVAL);
    sampler.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let changed = tokio::select! {
            command = commands.recv() => match command {
                Some(command) => {
                    let changes_fleet = command.changes_fleet();
                    handle(&mut core, &mut jobs, &mut observer, command);
                    changes_fleet
                }
                None => break,
            },
            _ = ticker.tick() => {
                core.tick(Instant::now());
                true
            }
            _ = sampler.tick() => {
                observer.sample(&core, Instant::now());
                false
            }
        };
        for effect in core.take_effects() {
            if let (
                Some(audit),
                Effect::WorkerExpired {
                    worker_id,
                    dead_for,
                    ..
                },
            ) = (&audit, &effect)
            {
                audit.record(
                    None,
                    AuditEvent::WorkerRemoved {
                        worker_id: worker_id.clone(),
                        reason: format!(
                            "expired: dead for {} s (--dead-worker-retention-secs)",
                            dead_for.as_secs()
                        ),
                    },
                );
            }
            route(&jobs, effect);
        }
        if changed {
            observer.observe(&core, Instant::now());
        }
    }
    tracing::debug!("scheduler stopped");
}

/// The way to the task running an admitted job, and the job's span.
struct JobChannel {
    notices: mpsc::UnboundedSender<JobNotice>,
    span: Span,
}

/// Enters the span of `job_id` (if the job is known) for what the scheduler logs about it.
fn job_span(jobs: &HashMap<String, JobChannel>, job_id: &str) -> Span {
    jobs.get(job_id)
        .map_or_else(Span::none, |channel| channel.span.clone())
}

fn handle(
    core: &mut SchedulerCore,
    jobs: &mut HashMap<String, JobChannel>,
    observer: &mut FleetObserver,
    command: Command,
) {
    let now = Instant::now();
    // A dropped reply receiver means the request was abandoned; nothing to do about it.
    match command {
        Command::Register {
            registration,
            reply,
        } => {
            let worker_id = registration.worker_id.clone();
            let info = core.register(registration, now);
            let _ = reply.send((info, core.take_given_up(&worker_id)));
        }
        Command::Heartbeat {
            worker_id,
            heartbeat,
            reply,
        } => {
            let _ = reply.send(core.heartbeat(&worker_id, heartbeat, now));
        }
        Command::Deregister { worker_id, reply } => {
            let _ = reply.send(core.deregister(&worker_id, now));
        }
        Command::Forget { worker_id, reply } => {
            let _ = reply.send(core.forget(&worker_id, now));
        }
        Command::Workers { reply } => {
            let _ = reply.send(core.workers(now));
        }
        Command::Models { reply } => {
            let _ = reply.send(core.models());
        }
        Command::QueueWaits { reply } => {
            let _ = reply.send(core.median_queue_waits(now));
        }
        Command::LastUsed { reply } => {
            let _ = reply.send(core.last_used());
        }
        Command::Submit {
            job,
            notices,
            span,
            reply,
        } => {
            let _entered = span.clone().entered();
            let job_id = job.job_id.clone();
            // Registered first: the job's first effect is produced by `submit` itself.
            jobs.insert(job_id.clone(), JobChannel { notices, span });
            let result = core.submit(job, now);
            let admitted = result.is_ok();
            if !admitted {
                jobs.remove(&job_id);
            }
            if reply.send(result).is_err() && admitted {
                // The submitter is gone (its client hung up) and will never start the job's
                // task; without this the job would hold its place, or a slot, forever.
                tracing::info!("submitter gone before admission was confirmed; job cancelled");
                jobs.remove(&job_id);
                core.finish(&job_id, JobOutcome::Cancelled, now);
            }
        }
        Command::DispatchFailed {
            job_id,
            worker_id,
            failure,
        } => {
            let _entered = job_span(jobs, &job_id).entered();
            core.dispatch_failed(&job_id, &worker_id, failure, now)
        }
        Command::WorkerLost { worker_id } => core.worker_lost(&worker_id, now),
        Command::Progress {
            job_id,
            generated_tokens,
        } => core.record_progress(&job_id, generated_tokens, now),
        Command::Finish { job_id, outcome } => {
            // Every job task reports its end exactly once, so this is where its channel goes.
            let _entered = jobs
                .remove(&job_id)
                .map_or_else(Span::none, |channel| channel.span)
                .entered();
            core.finish(&job_id, outcome, now);
        }
        Command::Cancel { job_id, reply } => {
            let _entered = job_span(jobs, &job_id).entered();
            let result = core.cancel(&job_id, now);
            let _ = reply.send(result);
        }
        Command::Jobs { reply } => {
            let _ = reply.send(core.jobs(now));
        }
        Command::Job { job_id, reply } => {
            let _ = reply.send(core.job(&job_id, now));
        }
        Command::StopAccepting => {
            core.stop_accepting();
            observer.close();
        }
        Command::Subscribe { reply } => {
            let _ = reply.send(observer.subscribe(core, now));
        }
        Command::Announce { event } => observer.announce(event),
    }
}

fn route(jobs: &HashMap<String, JobChannel>, effect: Effect) {
    let (job_id, notice) = match effect {
        Effect::Dispatch(assignment) => (
            assignment.job_id,
            JobNotice::Dispatch {
                worker_id: assignment.worker_id,
                url: assignment.url,
            },
        ),
        Effect::QueuePosition { job_id, position } => (job_id, JobNotice::Queued { position }),
        Effect::Cancel { job_id } => (job_id, JobNotice::Cancel),
        Effect::Fail { job_id, error } => (job_id, JobNotice::Fail(error)),
        Effect::WorkerDead {
            job_id,
            worker_id,
            reason,
        } => (job_id, JobNotice::WorkerDead { worker_id, reason }),
        // Not about a job; audited by the actor.
        Effect::WorkerExpired { .. } => return,
    };
    match jobs.get(&job_id) {
        // A closed channel means the job's task already ended; its finish report is on the way.
        Some(channel) => {
            let _ = channel.notices.send(notice);
        }
        None => tracing::debug!(%job_id, ?notice, "notice for a job without a task"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::Backend;

    fn registration(id: &str, slots: u32) -> WorkerRegistration {
        WorkerRegistration {
            worker_id: id.into(),
            url: format!("http://{id}:9000"),
            model: "m".into(),
            backend: Backend::Cpu,
            slots,
            ctx_size: 512,
            embeddings: false,
        }
    }

    fn job(id: &str) -> NewJob {
        NewJob {
            job_id: id.into(),
            model: "m".into(),
            submitted_at_ms: 0,
            owner: None,
            prefixes: Vec::new(),
            max_tokens: 16,
        }
    }

    #[tokio::test]
    async fn notices_reach_the_task_of_each_job() {
        let scheduler = SchedulerHandle::spawn(SchedulerConfig::default());
        scheduler.register(registration("w", 1)).await.unwrap();
        let mut first = scheduler.submit(job("j1")).await.unwrap();
        let mut second = scheduler.submit(job("j2")).await.unwrap();
        assert_eq!(
            first.recv().await,
            Some(JobNotice::Dispatch {
                worker_id: "w".into(),
                url: "http://w:9000".into()
            })
        );
        assert_eq!(second.recv().await, Some(JobNotice::Queued { position: 1 }));
        scheduler.finish("j1", JobOutcome::Cancelled);
        assert!(matches!(
            second.recv().await,
            Some(JobNotice::Dispatch { .. })
        ));
        assert_eq!(scheduler.cancel("j2".into()).await, Ok(JobState::Running));
        assert_eq!(second.recv().await, Some(JobNotice::Cancel));
    }

    #[tokio::test]
    async fn a_job_whose_submitter_is_dropped_during_admission_is_cancelled_and_frees_its_slot() {
        use futures::FutureExt;
        let scheduler = SchedulerHandle::spawn(SchedulerConfig::default());
        scheduler.register(registration("w", 1)).await.unwrap();
        // Polled once: the command is sent, then the future is dropped before the answer, as
        // an HTTP handler is when its client hangs up.
        assert!(scheduler.submit(job("j1")).now_or_never().is_none());
        let info = scheduler.job("j1".into()).await.unwrap();
        assert_eq!(info.state, JobState::Cancelled);
        let mut next = scheduler.submit(job("j2")).await.unwrap();
        assert!(
            matches!(next.recv().await, Some(JobNotice::Dispatch { .. })),
            "the orphan still holds the only slot"
        );
    }

    #[tokio::test]
    async fn the_actor_expires_silent_workers_on_its_own() {
        let scheduler = SchedulerHandle::spawn(SchedulerConfig {
            heartbeat_timeout: Duration::from_millis(100),
            ..SchedulerConfig::default()
        });
        scheduler.register(registration("w", 1)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let workers = scheduler.workers().await.unwrap();
            if workers[0].state == llorch_api::WorkerState::Dead {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "worker never expired: {workers:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(
            scheduler.submit(job("j1")).await,
            Err(OrcdError::NoWorker { .. })
        ));
    }
}
