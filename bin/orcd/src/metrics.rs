//! orcd's Prometheus metrics (`GET /metrics`, OpenMetrics text). Counters and histograms are
//! updated where things happen (admission, each relayed token, a job's end); gauges that
//! describe the scheduler's state (queue depth, workers, slots) are read from it at scrape
//! time, so they can never drift from what the scheduler believes.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::scheduler::{JobOutcome, ModelSummary};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelStateLabels {
    model: String,
    state: &'static str,
}

type HistogramFamily = Family<ModelLabels, Histogram, fn() -> Histogram>;

/// 5 ms to about 80 s: a first token on a warm GPU up to a long queue on a busy CPU.
fn time_to_first_token_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// 50 ms to about 14 min.
fn job_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    jobs: Family<StateLabels, Counter>,
    tokens: Family<ModelLabels, Counter>,
    time_to_first_token: HistogramFamily,
    job_duration: HistogramFamily,
    queue_depth: Family<ModelLabels, Gauge>,
    jobs_running: Family<ModelLabels, Gauge>,
    slots: Family<ModelStateLabels, Gauge>,
    workers: Family<StateLabels, Gauge>,
    auth_failures: Counter,
    audit_write_failures: Counter,
    /// Scrapes reset and refill the state gauges; two at once would interleave.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The per-model metrics one job updates, looked up once when it is admitted.
#[derive(Debug, Clone)]
pub struct JobMetrics {
    tokens: Counter,
    time_to_first_token: Histogram,
    job_duration: Histogram,
}

impl JobMetrics {
    pub fn token(&self) {
        self.tokens.inc();
    }

    pub fn first_token_after(&self, seconds: f64) {
        self.time_to_first_token.observe(seconds);
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llorch");
        let jobs = Family::<StateLabels, Counter>::default();
        registry.register(
            "jobs",
            "Jobs by how they ended (completed, failed, cancelled) or were refused at admission (rejected)",
            jobs.clone(),
        );
        let tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "tokens_generated",
            "Tokens relayed from workers to clients",
            tokens.clone(),
        );
        let time_to_first_token: HistogramFamily =
            Family::new_with_constructor(time_to_first_token_histogram);
        registry.register_with_unit(
            "time_to_first_token",
            "From orcd accepting a job to its first token, queueing included",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        let job_duration: HistogramFamily = Family::new_with_constructor(job_duration_histogram);
        registry.register_with_unit(
            "job_duration",
            "From orcd accepting a job to its end, for completed jobs",
            Unit::Seconds,
            job_duration.clone(),
        );
        let queue_depth = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Jobs waiting for a slot",
            queue_depth.clone(),
        );
        let jobs_running = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "jobs_running",
            "Jobs running on a worker",
            jobs_running.clone(),
        );
        let slots = Family::<ModelStateLabels, Gauge>::default();
        registry.register(
            "slots",
            "Slots of live workers, busy or free",
            slots.clone(),
        );
        let workers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "workers",
            "Registered workers by state (live, dead)",
            workers.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests refused with 401 or 403",
            auth_failures.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit events that could not be written",
            audit_write_failures.clone(),
        );
        Metrics {
            registry,
            jobs,
            tokens,
            time_to_first_token,
            job_duration,
            queue_depth,
            jobs_running,
            slots,
            workers,
            auth_failures,
            audit_write_failures,
            scrape: Mutex::new(()),
        }
    }

    pub fn for_job(&self, model: &str) -> JobMetrics {
        let labels = ModelLabels {
            model: model.to_owned(),
        };
        JobMetrics {
            tokens: self.tokens.get_or_create_owned(&labels),
            time_to_first_token: self.time_to_first_token.get_or_create_owned(&labels),
            job_duration: self.job_duration.get_or_create_owned(&labels),
        }
    }

    /// A task refused at admission (no worker, queue full, shutting down).
    pub fn job_rejected(&self) {
        self.jobs
            .get_or_create(&StateLabels { state: "rejected" })
            .inc();
    }

    pub fn job_finished(&self, job: &JobMetrics, outcome: &JobOutcome, seconds: f64) {
        let state = match outcome {
            JobOutcome::Completed(_) => {
                job.job_duration.observe(seconds);
                "completed"
            }
            JobOutcome::Failed(_) => "failed",
            JobOutcome::Cancelled => "cancelled",
        };
        self.jobs.get_or_create(&StateLabels { state }).inc();
    }

    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Handed to the audit writer, which counts what it could not write.
    pub fn audit_write_failures(&self) -> Counter {
        self.audit_write_failures.clone()
    }

    /// The exposition, with the state gauges set from `models` (the scheduler's summary).
    pub fn render(&self, models: &[ModelSummary]) -> String {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Cleared first so that a model whose last worker is gone disappears from the output.
        self.queue_depth.clear();
        self.jobs_running.clear();
        self.slots.clear();
        let (mut live, mut dead) = (0, 0);
        for summary in models {
            let model = ModelLabels {
                model: summary.model.clone(),
            };
            self.queue_depth
                .get_or_create(&model)
                .set(summary.queued.into());
            self.jobs_running
                .get_or_create(&model)
                .set(summary.running.into());
            if summary.live_workers > 0 {
                let slots = |state| ModelStateLabels {
                    model: summary.model.clone(),
                    state,
                };
                self.slots
                    .get_or_create(&slots("busy"))
                    .set(summary.slots_busy.into());
                let free = summary.slots_total.saturating_sub(summary.slots_busy);
                self.slots.get_or_create(&slots("free")).set(free.into());
            }
            live += i64::from(summary.live_workers);
            dead += i64::from(summary.dead_workers);
        }
        self.workers
            .get_or_create(&StateLabels { state: "live" })
            .set(live);
        self.workers
            .get_or_create(&StateLabels { state: "dead" })
            .set(dead);
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::{FinishReason, GenerationStats};

    fn summary(model: &str, queued: u32) -> ModelSummary {
        ModelSummary {
            model: model.into(),
            live_workers: 1,
            dead_workers: 1,
            slots_total: 4,
            slots_busy: 3,
            queued,
            running: 3,
            min_ctx_size: 2048,
        }
    }

    #[test]
    fn the_exposition_names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        let job = metrics.for_job("gemma3-270m");
        job.first_token_after(0.02);
        job.token();
        job.token();
        let stats = GenerationStats {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 1,
            generated_tokens: 2,
            time_to_first_token_ms: 20.0,
            tokens_per_second: 100.0,
            prompt_tokens_per_second: 0.0,
            cached_prompt_tokens: 0,
        };
        metrics.job_finished(&job, &JobOutcome::Completed(stats), 0.5);
        metrics.job_finished(&job, &JobOutcome::Cancelled, 0.1);
        metrics.job_rejected();
        metrics.auth_failure();
        let text = metrics.render(&[summary("gemma3-270m", 2)]);
        for expected in [
            "llorch_jobs_total{state=\"completed\"} 1",
            "llorch_jobs_total{state=\"cancelled\"} 1",
            "llorch_jobs_total{state=\"rejected\"} 1",
            "llorch_tokens_generated_total{model=\"gemma3-270m\"} 2",
            "llorch_time_to_first_token_seconds_count{model=\"gemma3-270m\"} 1",
            "llorch_job_duration_seconds_count{model=\"gemma3-270m\"} 1",
            "llorch_job_duration_seconds_sum{model=\"gemma3-270m\"} 0.5",
            "llorch_queue_depth{model=\"gemma3-270m\"} 2",
            "llorch_jobs_running{model=\"gemma3-270m\"} 3",
            "llorch_slots{model=\"gemma3-270m\",state=\"busy\"} 3",
            "llorch_slots{model=\"gemma3-270m\",state=\"free\"} 1",
            "llorch_workers{state=\"live\"} 1",
            "llorch_workers{state=\"dead\"} 1",
            "llorch_auth_failures_total 1",
            "# TYPE llorch_time_to_first_token_seconds histogram",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    #[test]
    fn gauges_of_a_vanished_model_disappear() {
        let metrics = Metrics::new();
        assert!(metrics
            .render(&[summary("old", 1)])
            .contains("model=\"old\""));
        let text = metrics.render(&[summary("new", 0)]);
        assert!(!text.contains("model=\"old\""), "{text}");
        assert!(
            text.contains("llorch_queue_depth{model=\"new\"} 0"),
            "{text}"
        );
    }
}
