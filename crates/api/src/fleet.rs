//! The fleet event stream, `GET /v2/events` on orcd: one server-sent event stream that starts
//! with a snapshot of the whole fleet and then carries every change (workers, jobs, queue depth)
//! and a throughput sample each interval. The web console draws from it; any client may.

use serde::{Deserialize, Serialize};

use crate::{JobInfo, WorkerInfo};

/// One event of `GET /v2/events`. The SSE `event:` field is [`FleetEvent::name`]; the `data:`
/// field is the variant's JSON without the tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FleetEvent {
    /// The first event of every stream, and again whenever the subscriber fell too far behind
    /// to be sent every change: replaces everything the client knew.
    Snapshot(FleetSnapshot),
    /// A worker registered, changed (slots, busy count) or was lost (`state: dead`) or came
    /// back. Its `last_seen_ms_ago` is as of this event; throughput samples refresh it.
    Worker(WorkerInfo),
    /// A worker deregistered, or orcd forgot it after it stayed dead.
    WorkerRemoved { worker_id: String },
    /// A job was queued, started, generated tokens (at most once per sample interval) or
    /// ended; `state` says which.
    Job(JobInfo),
    /// The load of some model changed (queue depth, running jobs, live slots).
    Models { models: Vec<ModelLoad> },
    /// Sent every `sample_interval_ms`: generation speed per model and per worker.
    Throughput(ThroughputSample),
    /// No live host had the catalog model a request waits for on its disk: orcd asked this
    /// host's pool manager to download it (then loads it there).
    ModelDownloading { model: String, host_id: String },
    /// The download finished and the host reports the model on its disk.
    ModelDownloaded {
        model: String,
        host_id: String,
        download_ms: u64,
    },
    /// orcd asked a host's pool manager to start a worker for a model a request waits for.
    ModelLoading { model: String, host_id: String },
    /// The worker registered: the model is served. `load_ms` from the decision to its
    /// registration.
    ModelLoaded {
        model: String,
        host_id: String,
        worker_id: String,
        load_ms: u64,
    },
    /// orcd stopped a worker: `reason` is `idle`, `evicted` or `scaled_in`.
    ModelUnloaded {
        model: String,
        host_id: String,
        worker_id: String,
        reason: String,
    },
    /// A load did not succeed; the requests that waited for it got `reason`.
    LoadFailed {
        model: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_id: Option<String>,
        reason: String,
    },
}

/// Everything a new subscriber needs to draw the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSnapshot {
    pub workers: Vec<WorkerInfo>,
    /// Queued and running jobs, newest first, then the most recent finished ones.
    pub jobs: Vec<JobInfo>,
    pub models: Vec<ModelLoad>,
    /// The samples of the last few minutes, oldest first.
    pub throughput: Vec<ThroughputSample>,
    pub sample_interval_ms: u64,
}

/// The load of one model: every model that has a worker (live or dead) or waiting jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLoad {
    pub model: String,
    pub live_workers: u32,
    pub dead_workers: u32,
    /// Slots of the live workers.
    pub slots_total: u32,
    pub slots_busy: u32,
    /// Jobs waiting for a slot: the model's queue depth.
    pub queued: u32,
    pub running: u32,
}

/// Generation speed over one sample interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputSample {
    /// Unix time in milliseconds at the end of the interval.
    pub at_ms: u64,
    pub models: Vec<ModelThroughput>,
    pub workers: Vec<WorkerThroughput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelThroughput {
    pub model: String,
    /// Tokens generated for this model per second over the interval, all workers together.
    pub tokens_per_second: f64,
    pub queued: u32,
    pub running: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerThroughput {
    pub worker_id: String,
    pub tokens_per_second: f64,
    pub slots_busy: u32,
    /// Milliseconds since the worker's last registration or heartbeat.
    pub last_seen_ms_ago: u64,
}

impl FleetEvent {
    /// The SSE `event:` name of this event.
    pub fn name(&self) -> &'static str {
        match self {
            FleetEvent::Snapshot(_) => "snapshot",
            FleetEvent::Worker(_) => "worker",
            FleetEvent::WorkerRemoved { .. } => "worker_removed",
            FleetEvent::Job(_) => "job",
            FleetEvent::Models { .. } => "models",
            FleetEvent::Throughput(_) => "throughput",
            FleetEvent::ModelDownloading { .. } => "model_downloading",
            FleetEvent::ModelDownloaded { .. } => "model_downloaded",
            FleetEvent::ModelLoading { .. } => "model_loading",
            FleetEvent::ModelLoaded { .. } => "model_loaded",
            FleetEvent::ModelUnloaded { .. } => "model_unloaded",
            FleetEvent::LoadFailed { .. } => "load_failed",
        }
    }

    /// The SSE `data:` payload (compact JSON without the `event` tag).
    pub fn data_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("fleet events always serialize");
        if let Some(object) = value.as_object_mut() {
            object.remove("event");
        }
        value.to_string()
    }

    /// Rebuilds an event from an SSE `event:` name and `data:` payload.
    pub fn from_sse(event: &str, data: &str) -> Result<FleetEvent, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_str(data)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("event".into(), serde_json::Value::String(event.to_owned()));
        }
        serde_json::from_value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, JobState, WorkerState};

    #[test]
    fn fleet_events_round_trip_through_sse_fields() {
        let worker = WorkerInfo {
            worker_id: "w".into(),
            url: "http://127.0.0.1:1".into(),
            model: "m".into(),
            backend: Backend::Cpu,
            slots_total: 2,
            slots_busy: 1,
            ctx_size: 512,
            last_seen_ms_ago: 3,
            state: WorkerState::Live,
            embeddings: false,
        };
        let job = JobInfo {
            job_id: "j".into(),
            owner: None,
            model: "m".into(),
            worker_id: Some("w".into()),
            state: JobState::Running,
            prompt_tokens: 0,
            generated_tokens: 4,
            submitted_at_ms: 1,
            time_to_first_token_ms: Some(2.5),
            duration_ms: None,
            finish_reason: None,
            error: None,
        };
        let load = ModelLoad {
            model: "m".into(),
            live_workers: 1,
            dead_workers: 0,
            slots_total: 2,
            slots_busy: 1,
            queued: 3,
            running: 1,
        };
        let sample = ThroughputSample {
            at_ms: 9,
            models: vec![ModelThroughput {
                model: "m".into(),
                tokens_per_second: 12.5,
                queued: 3,
                running: 1,
            }],
            workers: vec![WorkerThroughput {
                worker_id: "w".into(),
                tokens_per_second: 12.5,
                slots_busy: 1,
                last_seen_ms_ago: 3,
            }],
        };
        let events = [
            FleetEvent::Snapshot(FleetSnapshot {
                workers: vec![worker.clone()],
                jobs: vec![job.clone()],
                models: vec![load.clone()],
                throughput: vec![sample.clone()],
                sample_interval_ms: 1000,
            }),
            FleetEvent::Worker(worker),
            FleetEvent::WorkerRemoved {
                worker_id: "w".into(),
            },
            FleetEvent::Job(job),
            FleetEvent::Models { models: vec![load] },
            FleetEvent::Throughput(sample),
        ];
        for event in events {
            let data = event.data_json();
            assert!(!data.contains("\"event\""), "tag leaked into data: {data}");
            assert_eq!(FleetEvent::from_sse(event.name(), &data).unwrap(), event);
        }
    }
}
