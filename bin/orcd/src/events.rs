//! The fleet event stream, `GET /v2/events`. The scheduler actor owns a [`FleetObserver`]:
//! after every command that changes state, and once per sample interval, it compares the
//! scheduler with what it last published and broadcasts the differences on a
//! `tokio::sync::broadcast` bus. A subscriber's snapshot is taken inside the actor in the same
//! step as its subscription, so it misses no change and sees none twice.
//!
//! Every client token sees the whole fleet and every job: this is the operator's view.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use llorch_api::fleet::{
    FleetEvent, FleetSnapshot, ModelLoad, ModelThroughput, ThroughputSample, WorkerThroughput,
};
use llorch_api::{JobInfo, WorkerInfo};
use tokio::sync::broadcast;

use crate::scheduler::{ModelSummary, SchedulerCore};

/// How often a throughput sample is taken and running jobs' progress is published.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept for a new subscriber's charts: five minutes.
const HISTORY_SAMPLES: usize = 300;
/// Jobs in a snapshot: every queued and running one first, then recent finished ones up to this.
const SNAPSHOT_JOBS: usize = 50;
/// Events a slow subscriber may fall behind by before it is sent a fresh snapshot instead.
const BUS_CAPACITY: usize = 1024;

/// A subscription: the picture now and every change after it.
pub type Subscription = (FleetSnapshot, broadcast::Receiver<FleetEvent>);

/// What the fleet looked like when last published, and the tokens counted since the last sample.
#[derive(Debug)]
pub struct FleetObserver {
    /// `None` once orcd shuts down: open streams end, new ones get their snapshot and end.
    bus: Option<broadcast::Sender<FleetEvent>>,
    /// As published, with `last_seen_ms_ago` zeroed so that time passing is not a change.
    workers: BTreeMap<String, WorkerInfo>,
    /// Queued and running jobs, as published.
    jobs: HashMap<String, JobInfo>,
    models: Vec<ModelLoad>,
    /// Generated tokens of each active job already counted into a sample.
    tokens_counted: HashMap<String, u32>,
    tokens_by_model: HashMap<String, u64>,
    tokens_by_worker: HashMap<String, u64>,
    history: VecDeque<ThroughputSample>,
    last_sample: Instant,
}

impl FleetObserver {
    pub fn new(now: Instant) -> Self {
        FleetObserver {
            bus: Some(broadcast::channel(BUS_CAPACITY).0),
            workers: BTreeMap::new(),
            jobs: HashMap::new(),
            models: Vec::new(),
            tokens_counted: HashMap::new(),
            tokens_by_model: HashMap::new(),
            tokens_by_worker: HashMap::new(),
            history: VecDeque::new(),
            last_sample: now,
        }
    }

    fn publish(&self, event: FleetEvent) {
        if let Some(bus) = &self.bus {
            // Fails only without subscribers, and then nobody is waiting for it.
            let _ = bus.send(event);
        }
    }

    /// Publishes an event that does not come from the scheduler's state (model placement).
    pub fn announce(&self, event: FleetEvent) {
        self.publish(event);
    }

    /// Publishes every difference between `core` and what was last published.
    pub fn observe(&mut self, core: &SchedulerCore, now: Instant) {
        let mut present = HashSet::new();
        for worker in core.workers(now) {
            present.insert(worker.worker_id.clone());
            let comparable = WorkerInfo {
                last_seen_ms_ago: 0,
                ..worker.clone()
            };
            if self.workers.get(&worker.worker_id) != Some(&comparable) {
                self.workers.insert(worker.worker_id.clone(), comparable);
                self.publish(FleetEvent::Worker(worker));
            }
        }
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|id| !present.contains(*id))
            .cloned()
            .collect();
        for worker_id in gone {
            self.workers.remove(&worker_id);
            self.publish(FleetEvent::WorkerRemoved { worker_id });
        }

        let mut active = HashSet::new();
        for job in core.active_jobs(now) {
            active.insert(job.job_id.clone());
            self.count_tokens(&job);
            if self.jobs.get(&job.job_id) != Some(&job) {
                self.jobs.insert(job.job_id.clone(), job.clone());
                self.publish(FleetEvent::Job(job));
            }
        }
        let ended: Vec<String> = self
            .jobs
            .keys()
            .filter(|id| !active.contains(*id))
            .cloned()
            .collect();
        for job_id in ended {
            self.jobs.remove(&job_id);
            if let Some(last) = core.job(&job_id, now) {
                self.count_tokens(&last);
                self.publish(FleetEvent::Job(last));
            }
            self.tokens_counted.remove(&job_id);
        }

        let models: Vec<ModelLoad> = core.models().into_iter().map(model_load).collect();
        if models != self.models {
            self.models = models.clone();
            self.publish(FleetEvent::Models { models });
        }
    }

    /// Credits a job's tokens since it was last counted to its model and worker.
    fn count_tokens(&mut self, job: &JobInfo) {
        let Some(worker_id) = &job.worker_id else {
            return;
        };
        let counted = self.tokens_counted.entry(job.job_id.clone()).or_insert(0);
        let new = job.generated_tokens.saturating_sub(*counted);
        if new == 0 {
            return;
        }
        *counted = job.generated_tokens;
        *self.tokens_by_model.entry(job.model.clone()).or_insert(0) += u64::from(new);
        *self.tokens_by_worker.entry(worker_id.clone()).or_insert(0) += u64::from(new);
    }

    /// Publishes running jobs' progress and one throughput sample covering the time since the
    /// previous one.
    pub fn sample(&mut self, core: &SchedulerCore, now: Instant) {
        self.observe(core, now);
        let seconds = now
            .saturating_duration_since(self.last_sample)
            .as_secs_f64()
            .max(0.001);
        self.last_sample = now;
        let rate = |tokens: Option<u64>| tokens.unwrap_or(0) as f64 / seconds;
        let models = core
            .models()
            .into_iter()
            .map(|summary| ModelThroughput {
                tokens_per_second: rate(self.tokens_by_model.get(&summary.model).copied()),
                model: summary.model,
                queued: summary.queued,
                running: summary.running,
            })
            .collect();
        let workers = core
            .workers(now)
            .into_iter()
            .map(|worker| WorkerThroughput {
                tokens_per_second: rate(self.tokens_by_worker.get(&worker.worker_id).copied()),
                worker_id: worker.worker_id,
                slots_busy: worker.slots_busy,
                last_seen_ms_ago: worker.last_seen_ms_ago,
            })
            .collect();
        self.tokens_by_model.clear();
        self.tokens_by_worker.clear();
        let sample = ThroughputSample {
            at_ms: unix_millis(),
            models,
            workers,
        };
        if self.history.len() >= HISTORY_SAMPLES {
            self.history.pop_front();
        }
        self.history.push_back(sample.clone());
        self.publish(FleetEvent::Throughput(sample));
    }

    /// A new subscriber: pending changes go out to the existing ones first, then the snapshot
    /// is taken and the receiver created in the same step.
    pub fn subscribe(&mut self, core: &SchedulerCore, now: Instant) -> Subscription {
        self.observe(core, now);
        let receiver = match &self.bus {
            Some(bus) => bus.subscribe(),
            // A closed receiver: the stream sends its snapshot and ends.
            None => broadcast::channel(1).1,
        };
        let snapshot = FleetSnapshot {
            workers: core.workers(now),
            jobs: core.jobs(now).into_iter().take(SNAPSHOT_JOBS).collect(),
            models: self.models.clone(),
            throughput: self.history.iter().cloned().collect(),
            sample_interval_ms: SAMPLE_INTERVAL.as_millis() as u64,
        };
        (snapshot, receiver)
    }

    /// orcd is shutting down: end every stream so that none holds the server open.
    pub fn close(&mut self) {
        self.bus = None;
    }
}

fn model_load(summary: ModelSummary) -> ModelLoad {
    ModelLoad {
        model: summary.model,
        live_workers: summary.live_workers,
        dead_workers: summary.dead_workers,
        slots_total: summary.slots_total,
        slots_busy: summary.slots_busy,
        queued: summary.queued,
        running: summary.running,
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{JobOutcome, NewJob, SchedulerConfig};
    use llorch_api::{Backend, FinishReason, GenerationStats, JobState, WorkerRegistration};

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

    fn drain(receiver: &mut broadcast::Receiver<FleetEvent>) -> Vec<FleetEvent> {
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    fn names(events: &[FleetEvent]) -> Vec<&'static str> {
        events.iter().map(FleetEvent::name).collect()
    }

    fn job_states(events: &[FleetEvent]) -> Vec<(String, JobState, u32)> {
        events
            .iter()
            .filter_map(|event| match event {
                FleetEvent::Job(job) => Some((job.job_id.clone(), job.state, job.generated_tokens)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_subscriber_gets_the_snapshot_then_each_change_once() {
        let start = Instant::now();
        let mut core = SchedulerCore::new(SchedulerConfig::default());
        let mut observer = FleetObserver::new(start);
        core.register(registration("w", 1), start);
        let (snapshot, mut events) = observer.subscribe(&core, start);
        assert_eq!(snapshot.workers.len(), 1);
        assert_eq!(snapshot.models[0].slots_total, 1);
        assert!(drain(&mut events).is_empty(), "the snapshot already had it");

        core.submit(job("j1"), start).unwrap();
        core.submit(job("j2"), start).unwrap();
        observer.observe(&core, start);
        let changes = drain(&mut events);
        let mut started = job_states(&changes);
        started.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            started,
            vec![
                ("j1".into(), JobState::Running, 0),
                ("j2".into(), JobState::Queued, 0)
            ]
        );
        assert!(names(&changes).contains(&"worker"), "slots_busy changed");
        let FleetEvent::Models { models } = changes.last().unwrap() else {
            panic!("no models event in {changes:?}");
        };
        assert_eq!((models[0].queued, models[0].running), (1, 1));

        // Nothing changed: nothing is sent.
        observer.observe(&core, start);
        assert!(drain(&mut events).is_empty());

        for generated in 1..=5 {
            core.record_progress("j1", generated, start);
        }
        core.finish(
            "j1",
            JobOutcome::Completed(GenerationStats {
                finish_reason: FinishReason::Stop,
                prompt_tokens: 3,
                cached_prompt_tokens: 0,
                draft_tokens: 0,
                draft_tokens_accepted: 0,
                generated_tokens: 5,
                time_to_first_token_ms: 1.0,
                tokens_per_second: 10.0,
                prompt_tokens_per_second: 10.0,
            }),
            start,
        );
        observer.observe(&core, start);
        let ended = job_states(&drain(&mut events));
        assert!(
            ended.contains(&("j1".into(), JobState::Completed, 5)),
            "{ended:?}"
        );
        assert!(
            ended.contains(&("j2".into(), JobState::Running, 0)),
            "{ended:?}"
        );

        core.deregister("w", start).unwrap();
        observer.observe(&core, start);
        assert!(drain(&mut events).contains(&FleetEvent::WorkerRemoved {
            worker_id: "w".into()
        }));
    }

    #[test]
    fn samples_measure_tokens_per_second_per_model_and_worker() {
        let start = Instant::now();
        let mut core = SchedulerCore::new(SchedulerConfig::default());
        let mut observer = FleetObserver::new(start);
        core.register(registration("w", 2), start);
        core.submit(job("j1"), start).unwrap();
        observer.observe(&core, start);
        let (_, mut events) = observer.subscribe(&core, start);
        for generated in 1..=20 {
            core.record_progress("j1", generated, start);
        }
        observer.sample(&core, start + Duration::from_secs(2));
        let changes = drain(&mut events);
        assert_eq!(
            job_states(&changes),
            vec![("j1".into(), JobState::Running, 20)]
        );
        let Some(FleetEvent::Throughput(sample)) = changes.last() else {
            panic!("no sample in {changes:?}");
        };
        assert_eq!(sample.models[0].tokens_per_second, 10.0);
        assert_eq!(sample.models[0].running, 1);
        assert_eq!(sample.workers[0].tokens_per_second, 10.0);
        assert_eq!(sample.workers[0].slots_busy, 1);

        // Tokens are counted once: the next interval without tokens measures zero.
        observer.sample(&core, start + Duration::from_secs(3));
        let Some(FleetEvent::Throughput(sample)) = drain(&mut events).pop() else {
            panic!("no second sample");
        };
        assert_eq!(sample.models[0].tokens_per_second, 0.0);
        let (snapshot, _) = observer.subscribe(&core, start + Duration::from_secs(3));
        assert_eq!(snapshot.throughput.len(), 2);
    }

    #[test]
    fn closing_ends_every_stream() {
        let start = Instant::now();
        let core = SchedulerCore::new(SchedulerConfig::default());
        let mut observer = FleetObserver::new(start);
        let (_, mut open) = observer.subscribe(&core, start);
        observer.close();
        assert_eq!(open.try_recv(), Err(broadcast::error::TryRecvError::Closed));
        let (_, mut late) = observer.subscribe(&core, start);
        assert_eq!(late.try_recv(), Err(broadcast::error::TryRecvError::Closed));
    }
}
