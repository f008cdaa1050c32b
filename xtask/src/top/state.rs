//! What `top` knows about the fleet: the picture orcd's `/v2/events` stream builds (a snapshot,
//! then changes), and the rows the panes and `--once` show, derived from it in one place so the
//! screen and the snapshot never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use llorch_api::fleet::{FleetEvent, FleetSnapshot, ModelLoad, ThroughputSample};
use llorch_api::pool::HostInfo;
use llorch_api::{JobInfo, JobState, WorkerInfo, WorkerState};
use serde::Serialize;

/// Throughput samples kept per worker for its sparkline (one a second: a minute).
const RATE_HISTORY: usize = 60;
/// Finished jobs kept after they end, newest first; running and queued ones are always kept.
const FINISHED_JOBS_KEPT: usize = 50;

/// The fleet as the event stream has described it so far.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    workers: BTreeMap<String, WorkerInfo>,
    jobs: HashMap<String, JobInfo>,
    models: Vec<ModelLoad>,
    /// Tokens per second of each worker, oldest sample first.
    worker_rates: HashMap<String, VecDeque<f64>>,
    /// The hosts of orcd's pool managers (`GET /v2/hosts`, polled: they are not in the
    /// stream); none until orcd answered with at least one.
    hosts: Vec<HostInfo>,
    /// Loads in progress by model: the hosts named by `model_loading` events, or
    /// [`UNKNOWN_HOST`] for a load `/v1/models` reported (one begun before the stream was).
    loading: BTreeMap<String, BTreeSet<String>>,
}

/// The host of a load known only from `/v1/models`' `loading` status.
const UNKNOWN_HOST: &str = "";

impl FleetView {
    /// The view a new subscriber starts from.
    pub fn from_snapshot(snapshot: FleetSnapshot) -> FleetView {
        let mut view = FleetView::default();
        view.apply(FleetEvent::Snapshot(snapshot));
        view
    }

    /// Folds one event of `/v2/events` into the view.
    pub fn apply(&mut self, event: FleetEvent) {
        match event {
            FleetEvent::Snapshot(snapshot) => {
                // Hosts and loads come from polls, not the stream; the next poll renews them.
                *self = FleetView {
                    hosts: std::mem::take(&mut self.hosts),
                    loading: std::mem::take(&mut self.loading),
                    ..FleetView::default()
                };
                for worker in snapshot.workers {
                    self.workers.insert(worker.worker_id.clone(), worker);
                }
                for job in snapshot.jobs {
                    self.jobs.insert(job.job_id.clone(), job);
                }
                self.models = snapshot.models;
                // The history gives the sparklines their past; the workers' busy slots and
                // heartbeat ages come from the snapshot itself, which is newer than any sample
                // (up to a second newer: a job that ended since is no longer counted busy).
                for sample in snapshot.throughput {
                    self.record_rates(&sample);
                }
            }
            FleetEvent::Worker(worker) => {
                self.workers.insert(worker.worker_id.clone(), worker);
            }
            FleetEvent::WorkerRemoved { worker_id } => {
                self.workers.remove(&worker_id);
                self.worker_rates.remove(&worker_id);
            }
            FleetEvent::Job(job) => {
                self.jobs.insert(job.job_id.clone(), job);
                self.forget_old_jobs();
            }
            FleetEvent::Models { models } => self.models = models,
            FleetEvent::Throughput(sample) => {
                self.record_rates(&sample);
                self.record_slots(sample);
            }
            // A download on demand is the first part of the model's load on that host.
            FleetEvent::ModelDownloading { model, host_id }
            | FleetEvent::ModelLoading { model, host_id } => {
                let hosts = self.loading.entry(model).or_default();
                hosts.remove(UNKNOWN_HOST);
                hosts.insert(host_id);
            }
            FleetEvent::ModelLoaded { model, host_id, .. } => {
                self.load_ended(&model, Some(&host_id))
            }
            FleetEvent::LoadFailed { model, host_id, .. } => {
                self.load_ended(&model, host_id.as_deref())
            }
            // The stopped worker leaves as a `worker_removed` event of its own.
            FleetEvent::ModelUnloaded { .. } | FleetEvent::ModelDownloaded { .. } => {}
        }
    }

    /// A load ended on `host` (on every host when none is named).
    fn load_ended(&mut self, model: &str, host: Option<&str>) {
        let Some(hosts) = self.loading.get_mut(model) else {
            return;
        };
        match host {
            Some(host) => {
                hosts.remove(host);
                hosts.remove(UNKNOWN_HOST);
            }
            None => hosts.clear(),
        }
        if hosts.is_empty() {
            self.loading.remove(model);
        }
    }

    /// What the last poll of `GET /v2/hosts` answered; an error or an orcd without pool
    /// managers leaves the pane out.
    pub fn set_hosts(&mut self, hosts: Vec<HostInfo>) {
        self.hosts = hosts;
    }

    pub fn hosts(&self) -> &[HostInfo] {
        &self.hosts
    }

    /// The host whose pool manager runs `worker_id`, if one lists it.
    pub fn host_running(&self, worker_id: &str) -> Option<&str> {
        self.hosts
            .iter()
            .find(|host| {
                host.facts
                    .workers
                    .iter()
                    .any(|worker| worker.worker_id == worker_id)
            })
            .map(|host| host.host_id.as_str())
    }

    /// The models `/v1/models` lists as `loading`: a load the events have not named a host
    /// for counts once; one it no longer lists stops counting unless an event named its host.
    pub fn set_loading_models(&mut self, models: &[String]) {
        for model in models {
            let hosts = self.loading.entry(model.clone()).or_default();
            if hosts.is_empty() {
                hosts.insert(UNKNOWN_HOST.to_owned());
            }
        }
        self.loading.retain(|model, hosts| {
            if !models.contains(model) {
                hosts.remove(UNKNOWN_HOST);
            }
            !hosts.is_empty()
        });
    }

    /// A sample carries each worker's rate over the last interval.
    fn record_rates(&mut self, sample: &ThroughputSample) {
        for worker in &sample.workers {
            let rates = self
                .worker_rates
                .entry(worker.worker_id.clone())
                .or_default();
            if rates.len() >= RATE_HISTORY {
                rates.pop_front();
            }
            rates.push_back(worker.tokens_per_second);
        }
    }

    /// A live sample also carries each worker's busy slots and heartbeat age as of now.
    fn record_slots(&mut self, sample: ThroughputSample) {
        for worker in sample.workers {
            if let Some(known) = self.workers.get_mut(&worker.worker_id) {
                known.slots_busy = worker.slots_busy;
                known.last_seen_ms_ago = worker.last_seen_ms_ago;
            }
        }
    }

    fn forget_old_jobs(&mut self) {
        let mut finished: Vec<(u64, String)> = self
            .jobs
            .values()
            .filter(|job| job.state.is_finished())
            .map(|job| (job.submitted_at_ms, job.job_id.clone()))
            .collect();
        if finished.len() <= FINISHED_JOBS_KEPT {
            return;
        }
        finished.sort_unstable_by(|a, b| b.cmp(a));
        for (_, job_id) in finished.split_off(FINISHED_JOBS_KEPT) {
            self.jobs.remove(&job_id);
        }
    }

    /// One row per worker, by id.
    pub fn worker_rows(&self) -> Vec<WorkerRow> {
        self.workers
            .values()
            .map(|worker| {
                let rates: Vec<f64> = self
                    .worker_rates
                    .get(&worker.worker_id)
                    .map(|rates| rates.iter().copied().collect())
                    .unwrap_or_default();
                WorkerRow {
                    worker_id: worker.worker_id.clone(),
                    host: host_of(&worker.url),
                    url: worker.url.clone(),
                    model: worker.model.clone(),
                    backend: format!("{:?}", worker.backend).to_lowercase(),
                    state: worker.state,
                    slots_busy: worker.slots_busy,
                    slots_total: worker.slots_total,
                    ctx_size: worker.ctx_size,
                    tokens_per_second: rates.last().copied().unwrap_or(0.0),
                    rate_history: rates,
                    last_seen_ms_ago: worker.last_seen_ms_ago,
                }
            })
            .collect()
    }

    /// One row per model orcd reports load for or loads, by model id; `now_ms` ages the
    /// waiting jobs.
    pub fn queue_rows(&self, now_ms: u64) -> Vec<QueueRow> {
        let loading_only = self
            .loading
            .keys()
            .filter(|model| self.models.iter().all(|load| &load.model != *model))
            .map(|model| ModelLoad {
                model: model.clone(),
                live_workers: 0,
                dead_workers: 0,
                slots_total: 0,
                slots_busy: 0,
                queued: 0,
                running: 0,
            })
            .collect::<Vec<_>>();
        let mut rows: Vec<QueueRow> = self
            .models
            .iter()
            .chain(&loading_only)
            .map(|load| {
                let mut waits: Vec<u64> = self
                    .jobs
                    .values()
                    .filter(|job| job.model == load.model && job.state == JobState::Queued)
                    .map(|job| now_ms.saturating_sub(job.submitted_at_ms))
                    .collect();
                waits.sort_unstable();
                QueueRow {
                    model: load.model.clone(),
                    queued: load.queued,
                    running: load.running,
                    loading: self
                        .loading
                        .get(&load.model)
                        .map_or(0, |hosts| hosts.len() as u32),
                    slots_busy: load.slots_busy,
                    slots_total: load.slots_total,
                    live_workers: load.live_workers,
                    dead_workers: load.dead_workers,
                    median_wait_ms: waits.get(waits.len() / 2).copied(),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.model.cmp(&b.model));
        rows
    }

    /// Queued and running jobs first, then finished ones; newest first within each, so the
    /// order is stable between redraws.
    pub fn job_rows(&self, now_ms: u64) -> Vec<JobRow> {
        let mut jobs: Vec<&JobInfo> = self.jobs.values().collect();
        jobs.sort_by(|a, b| {
            (
                a.state.is_finished(),
                std::cmp::Reverse(a.submitted_at_ms),
                &a.job_id,
            )
                .cmp(&(
                    b.state.is_finished(),
                    std::cmp::Reverse(b.submitted_at_ms),
                    &b.job_id,
                ))
        });
        jobs.into_iter()
            .map(|job| JobRow {
                job_id: job.job_id.clone(),
                model: job.model.clone(),
                worker_id: job.worker_id.clone(),
                state: job.state,
                prompt_tokens: job.prompt_tokens,
                generated_tokens: job.generated_tokens,
                time_to_first_token_ms: job.time_to_first_token_ms.map(|ms| ms.round() as u64),
                // A finished job's own duration; an active one's age so far.
                duration_ms: match job.duration_ms {
                    Some(ms) => ms.round() as u64,
                    None => now_ms.saturating_sub(job.submitted_at_ms),
                },
                finish_reason: job
                    .finish_reason
                    .map(|reason| format!("{reason:?}").to_lowercase()),
                error: job.error.clone(),
            })
            .collect()
    }

    /// Counts for the title line.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for worker in self.workers.values() {
            match worker.state {
                WorkerState::Live => totals.live_workers += 1,
                _ => totals.dead_workers += 1,
            }
        }
        for job in self.jobs.values() {
            match job.state {
                JobState::Running => totals.running_jobs += 1,
                JobState::Queued => totals.queued_jobs += 1,
                _ => {}
            }
        }
        totals
    }
}

/// The host part of a worker's URL (`http://10.0.0.5:9000` → `10.0.0.5`).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_owned(),
        _ => authority.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub live_workers: usize,
    pub dead_workers: usize,
    pub running_jobs: usize,
    pub queued_jobs: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    pub worker_id: String,
    pub host: String,
    pub url: String,
    pub model: String,
    pub backend: String,
    pub state: WorkerState,
    pub slots_busy: u32,
    pub slots_total: u32,
    pub ctx_size: u32,
    /// Over the last sample interval.
    pub tokens_per_second: f64,
    /// Oldest first, one per sample interval.
    #[serde(skip)]
    pub rate_history: Vec<f64>,
    pub last_seen_ms_ago: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueRow {
    pub model: String,
    pub queued: u32,
    pub running: u32,
    /// Workers being started for it (one per host loading it).
    pub loading: u32,
    pub slots_busy: u32,
    pub slots_total: u32,
    pub live_workers: u32,
    pub dead_workers: u32,
    /// The median time the model's waiting jobs have waited so far; none when none waits.
    pub median_wait_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRow {
    pub job_id: String,
    pub model: String,
    pub worker_id: Option<String>,
    pub state: JobState,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub time_to_first_token_ms: Option<u64>,
    /// The whole run for a finished job, the time since submission for an active one.
    pub duration_ms: u64,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
}

/// The columns of each table, as the screen and the plain snapshot print them.
pub const WORKER_COLUMNS: [&str; 8] = [
    "ID", "HOST", "MODEL", "BACKEND", "STATE", "SLOTS", "TOK/S", "SEEN",
];
pub const QUEUE_COLUMNS: [&str; 8] = [
    "MODEL", "QUEUED", "RUNNING", "LOADING", "SLOTS", "LIVE", "DEAD", "WAIT",
];
pub const JOB_COLUMNS: [&str; 7] = ["JOB", "MODEL", "WORKER", "STATE", "TTFT", "TOKENS", "TIME"];

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

impl WorkerRow {
    /// One text per [`WORKER_COLUMNS`].
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.worker_id.clone(),
            self.host.clone(),
            self.model.clone(),
            self.backend.clone(),
            worker_state_name(self.state),
            format!("{}/{}", self.slots_busy, self.slots_total),
            format!("{:.1}", self.tokens_per_second),
            human_millis(self.last_seen_ms_ago),
        ]
    }
}

impl QueueRow {
    /// One text per [`QUEUE_COLUMNS`].
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.model.clone(),
            self.queued.to_string(),
            self.running.to_string(),
            self.loading.to_string(),
            format!("{}/{}", self.slots_busy, self.slots_total),
            self.live_workers.to_string(),
            self.dead_workers.to_string(),
            or_dash(self.median_wait_ms.map(human_millis)),
        ]
    }
}

impl JobRow {
    /// One text per [`JOB_COLUMNS`].
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.job_id.clone(),
            self.model.clone(),
            or_dash(self.worker_id.clone()),
            job_state_name(self.state),
            or_dash(self.time_to_first_token_ms.map(human_millis)),
            self.generated_tokens.to_string(),
            human_millis(self.duration_ms),
        ]
    }
}

/// `850ms`, `2.4s`, `3m07s`: short enough for a narrow column.
pub fn human_millis(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Names in the wire vocabulary (`live`, `cancelled`) for the screen and the plain snapshot.
pub fn worker_state_name(state: WorkerState) -> String {
    format!("{state:?}").to_lowercase()
}

pub fn job_state_name(state: JobState) -> String {
    format!("{state:?}").to_lowercase()
}

#[cfg(test)]
pub mod fixtures {
    //! Fleets for the rendering and snapshot tests.

    use super::*;
    use llorch_api::fleet::{ModelThroughput, WorkerThroughput};
    use llorch_api::pool::{DiskModel, GpuFacts, HostFacts, HostState};
    use llorch_api::{Backend, FinishReason};

    pub const NOW_MS: u64 = 1_700_000_100_000;

    pub fn worker(id: &str, url: &str, busy: u32, total: u32, state: WorkerState) -> WorkerInfo {
        WorkerInfo {
            worker_id: id.into(),
            url: url.into(),
            model: "gemma3-270m".into(),
            backend: Backend::Cpu,
            slots_total: total,
            slots_busy: busy,
            ctx_size: 4096,
            last_seen_ms_ago: 800,
            state,
            embeddings: false,
        }
    }

    pub fn job(
        id: &str,
        worker: Option<&str>,
        state: JobState,
        tokens: u32,
        age_ms: u64,
    ) -> JobInfo {
        let finished = state.is_finished();
        JobInfo {
            job_id: id.into(),
            model: "gemma3-270m".into(),
            owner: None,
            worker_id: worker.map(str::to_owned),
            state,
            prompt_tokens: 5,
            generated_tokens: tokens,
            submitted_at_ms: NOW_MS - age_ms,
            time_to_first_token_ms: (tokens > 0).then_some(41.6),
            duration_ms: finished.then_some(2_350.0),
            finish_reason: (state == JobState::Completed).then_some(FinishReason::Length),
            error: None,
        }
    }

    fn load(queued: u32, running: u32, busy: u32, total: u32, live: u32, dead: u32) -> ModelLoad {
        ModelLoad {
            model: "gemma3-270m".into(),
            live_workers: live,
            dead_workers: dead,
            slots_total: total,
            slots_busy: busy,
            queued,
            running,
        }
    }

    fn sample(at_ms: u64, rates: &[(&str, f64, u32)]) -> ThroughputSample {
        ThroughputSample {
            at_ms,
            models: vec![ModelThroughput {
                model: "gemma3-270m".into(),
                tokens_per_second: rates.iter().map(|(_, rate, _)| rate).sum(),
                queued: 0,
                running: 0,
            }],
            workers: rates
                .iter()
                .map(|(id, rate, busy)| WorkerThroughput {
                    worker_id: (*id).into(),
                    tokens_per_second: *rate,
                    slots_busy: *busy,
                    last_seen_ms_ago: 800,
                })
                .collect(),
        }
    }

    pub fn empty() -> FleetView {
        FleetView::default()
    }

    /// Two workers of two slots each, three jobs running, one waiting, one done.
    pub fn busy() -> FleetView {
        let rates = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
        FleetView::from_snapshot(FleetSnapshot {
            workers: vec![
                worker("cpu-a", "http://10.0.0.5:9001", 2, 2, WorkerState::Live),
                worker("cpu-b", "http://10.0.0.6:9002", 1, 2, WorkerState::Live),
            ],
            jobs: vec![
                job("job-1", Some("cpu-a"), JobState::Running, 120, 3_000),
                job("job-2", Some("cpu-a"), JobState::Running, 64, 2_000),
                job("job-3", Some("cpu-b"), JobState::Running, 8, 1_000),
                job("job-4", None, JobState::Queued, 0, 500),
                job("job-0", Some("cpu-b"), JobState::Completed, 32, 9_000),
            ],
            models: vec![load(1, 3, 3, 4, 2, 0)],
            throughput: rates
                .iter()
                .enumerate()
                .map(|(i, rate)| {
                    sample(
                        NOW_MS - 6_000 + i as u64 * 1_000,
                        &[("cpu-a", *rate, 2), ("cpu-b", rate / 2.0, 1)],
                    )
                })
                .collect(),
            sample_interval_ms: 1000,
        })
    }

    fn disk_model(model: &str) -> DiskModel {
        DiskModel {
            model: model.into(),
            file: format!("{model}.gguf"),
            bytes: 300 << 20,
            verified: true,
            estimated_bytes: 400 << 20,
        }
    }

    /// A host with 8 cores at load 2, 32 GiB of RAM (12 used), one 24 GiB GPU (18 used).
    pub fn gpu_host(id: &str, state: HostState, last_seen_ms_ago: u64) -> HostInfo {
        HostInfo {
            host_id: id.into(),
            url: format!("http://{id}:7070"),
            state,
            last_seen_ms_ago,
            facts: HostFacts {
                host_name: id.into(),
                os: "linux".into(),
                cpu_model: "Ryzen 7".into(),
                physical_cores: 8,
                ram_total_bytes: 32 << 30,
                ram_available_bytes: 20 << 30,
                load_average: 2.0,
                gpus: vec![GpuFacts {
                    index: 0,
                    name: "RTX 4090".into(),
                    memory_total_bytes: 24 << 30,
                    memory_used_bytes: 18 << 30,
                    utilization_percent: Some(60.0),
                }],
                disk_free_bytes: 100 << 30,
                models: vec![disk_model("gemma3-270m"), disk_model("qwen2.5-coder-0.5b")],
                workers: vec![],
                memory_budget_bytes: None,
                backends: vec![],
            },
        }
    }

    /// A CPU-only host with 4 cores at load 3.6 and 16 GiB of RAM (14 used).
    pub fn cpu_host(id: &str, state: HostState, last_seen_ms_ago: u64) -> HostInfo {
        let mut host = gpu_host(id, state, last_seen_ms_ago);
        host.facts.physical_cores = 4;
        host.facts.load_average = 3.6;
        host.facts.ram_total_bytes = 16 << 30;
        host.facts.ram_available_bytes = 2 << 30;
        host.facts.gpus.clear();
        host.facts.models.truncate(1);
        host
    }

    /// [`busy`] on two pool-managed hosts, one of which is loading a second model.
    pub fn busy_on_hosts() -> FleetView {
        let mut view = busy();
        view.set_hosts(vec![
            gpu_host("gpu-box", HostState::Live, 400),
            cpu_host("nas", HostState::Live, 900),
        ]);
        view.apply(FleetEvent::ModelLoading {
            model: "qwen2.5-coder-0.5b".into(),
            host_id: "gpu-box".into(),
        });
        view
    }

    /// [`busy`] on two hosts of which one stopped heartbeating 31 s ago.
    pub fn lost_host() -> FleetView {
        let mut view = busy();
        view.set_hosts(vec![
            gpu_host("gpu-box", HostState::Live, 400),
            cpu_host("nas", HostState::Lost, 31_000),
        ]);
        view
    }

    /// One live worker and one that stopped heartbeating with a job queued behind it.
    pub fn dead_worker() -> FleetView {
        let mut lost = worker("cpu-b", "http://10.0.0.6:9002", 0, 2, WorkerState::Dead);
        lost.last_seen_ms_ago = 47_000;
        FleetView::from_snapshot(FleetSnapshot {
            workers: vec![
                worker("cpu-a", "http://10.0.0.5:9001", 0, 2, WorkerState::Live),
                lost,
            ],
            jobs: vec![JobInfo {
                error: Some("worker cpu-b stopped answering".into()),
                ..job("job-7", Some("cpu-b"), JobState::Failed, 12, 60_000)
            }],
            models: vec![load(0, 0, 0, 2, 1, 1)],
            throughput: vec![],
            sample_interval_ms: 1000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn events_after_the_snapshot_update_workers_jobs_and_rates() {
        let mut view = busy();
        assert_eq!(view.worker_rows()[0].rate_history.len(), 6);
        view.apply(FleetEvent::Job(job(
            "job-1",
            Some("cpu-a"),
            JobState::Cancelled,
            130,
            3_000,
        )));
        view.apply(FleetEvent::WorkerRemoved {
            worker_id: "cpu-b".into(),
        });
        let jobs = view.job_rows(NOW_MS);
        let cancelled = jobs.iter().find(|job| job.job_id == "job-1").unwrap();
        assert_eq!(
            (cancelled.state, cancelled.generated_tokens),
            (JobState::Cancelled, 130)
        );
        assert_eq!(view.worker_rows().len(), 1);
        assert_eq!(view.totals().running_jobs, 2);
    }

    #[test]
    fn the_snapshot_not_the_last_sample_says_which_slots_are_busy() {
        // The last sample before the snapshot was taken while a job still ran; the job ended
        // since, and the snapshot (newer) counts the slot free.
        let mut snapshot = FleetSnapshot {
            workers: vec![worker(
                "cpu-a",
                "http://10.0.0.5:9001",
                0,
                1,
                WorkerState::Live,
            )],
            jobs: vec![job("job-0", Some("cpu-a"), JobState::Completed, 4, 2_000)],
            models: vec![],
            throughput: vec![],
            sample_interval_ms: 1000,
        };
        snapshot.throughput.push(ThroughputSample {
            at_ms: NOW_MS - 900,
            models: vec![],
            workers: vec![llorch_api::fleet::WorkerThroughput {
                worker_id: "cpu-a".into(),
                tokens_per_second: 4.0,
                slots_busy: 1,
                last_seen_ms_ago: 2_000,
            }],
        });
        let mut view = FleetView::from_snapshot(snapshot);
        let row = &view.worker_rows()[0];
        assert_eq!((row.slots_busy, row.last_seen_ms_ago), (0, 800));
        assert_eq!(row.rate_history, [4.0]);
        // A live sample is as new as anything: it is believed.
        view.apply(FleetEvent::Throughput(ThroughputSample {
            at_ms: NOW_MS,
            models: vec![],
            workers: vec![llorch_api::fleet::WorkerThroughput {
                worker_id: "cpu-a".into(),
                tokens_per_second: 2.0,
                slots_busy: 1,
                last_seen_ms_ago: 100,
            }],
        }));
        assert_eq!(view.worker_rows()[0].slots_busy, 1);
    }

    #[test]
    fn loads_are_counted_per_host_from_events_and_from_the_models_status() {
        let mut view = busy();
        let loading = |view: &FleetView, model: &str| {
            view.queue_rows(NOW_MS)
                .into_iter()
                .find(|row| row.model == model)
                .map(|row| row.loading)
        };
        assert_eq!(loading(&view, "gemma3-270m"), Some(0));
        // A load begun before the stream: known only from `/v1/models`.
        view.set_loading_models(&["qwen2.5-coder-0.5b".into()]);
        assert_eq!(loading(&view, "qwen2.5-coder-0.5b"), Some(1));
        for host in ["gpu-box", "nas"] {
            view.apply(FleetEvent::ModelLoading {
                model: "gemma3-270m".into(),
                host_id: host.into(),
            });
        }
        view.apply(FleetEvent::ModelLoading {
            model: "qwen2.5-coder-0.5b".into(),
            host_id: "gpu-box".into(),
        });
        assert_eq!(loading(&view, "gemma3-270m"), Some(2));
        assert_eq!(
            loading(&view, "qwen2.5-coder-0.5b"),
            Some(1),
            "one host, named now"
        );
        view.apply(FleetEvent::ModelLoaded {
            model: "gemma3-270m".into(),
            host_id: "nas".into(),
            worker_id: "nas-1".into(),
            load_ms: 900,
        });
        view.apply(FleetEvent::LoadFailed {
            model: "qwen2.5-coder-0.5b".into(),
            host_id: None,
            reason: "no room".into(),
        });
        assert_eq!(loading(&view, "gemma3-270m"), Some(1));
        assert_eq!(loading(&view, "qwen2.5-coder-0.5b"), None, "no row left");
        // A poll that no longer lists a load drops only the loads no event named.
        view.set_loading_models(&[]);
        assert_eq!(loading(&view, "gemma3-270m"), Some(1));
    }

    #[test]
    fn active_jobs_come_first_newest_first() {
        let order: Vec<String> = busy()
            .job_rows(NOW_MS)
            .into_iter()
            .map(|job| job.job_id)
            .collect();
        assert_eq!(order, ["job-4", "job-3", "job-2", "job-1", "job-0"]);
    }

    #[test]
    fn the_median_wait_is_that_of_the_waiting_jobs() {
        let rows = busy().queue_rows(NOW_MS);
        assert_eq!(rows[0].median_wait_ms, Some(500));
        assert_eq!(dead_worker().queue_rows(NOW_MS)[0].median_wait_ms, None);
    }

    #[test]
    fn finished_jobs_beyond_the_limit_are_forgotten_oldest_first() {
        let mut view = empty();
        for i in 0..(FINISHED_JOBS_KEPT as u64 + 5) {
            view.apply(FleetEvent::Job(job(
                &format!("done-{i}"),
                None,
                JobState::Completed,
                1,
                10_000 - i,
            )));
        }
        view.apply(FleetEvent::Job(job(
            "live",
            None,
            JobState::Running,
            1,
            99_999,
        )));
        let rows = view.job_rows(NOW_MS);
        assert_eq!(rows.len(), FINISHED_JOBS_KEPT + 1);
        assert_eq!(rows[0].job_id, "live");
        assert!(rows.iter().all(|row| row.job_id != "done-0"));
    }

    #[test]
    fn the_host_is_the_url_without_scheme_port_and_path() {
        assert_eq!(host_of("http://10.0.0.5:9000"), "10.0.0.5");
        assert_eq!(host_of("http://[::1]:9000/x"), "[::1]");
        assert_eq!(host_of("gpu-box"), "gpu-box");
    }
}
