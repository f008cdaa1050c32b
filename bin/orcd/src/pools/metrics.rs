//! The placement metrics on orcd's `/metrics`: loads by model, host and outcome, load seconds,
//! unloads by reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LoadLabels {
    model: String,
    host: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UnloadLabels {
    model: String,
    host: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

/// 100 ms to about 14 min: a small model from the page cache up to a large one from disk.
fn load_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 14))
}

#[derive(Debug, Clone)]
pub struct PlacementMetrics {
    loads: Family<LoadLabels, Counter>,
    load_seconds: Family<ModelLabels, Histogram, fn() -> Histogram>,
    unloads: Family<UnloadLabels, Counter>,
}

impl PlacementMetrics {
    pub fn register(registry: &mut Registry) -> PlacementMetrics {
        let loads = Family::<LoadLabels, Counter>::default();
        registry.register(
            "model_loads",
            "Workers orcd started for models on demand, by host and outcome (loaded, failed, no_room)",
            loads.clone(),
        );
        let load_seconds: Family<ModelLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(load_histogram);
        registry.register_with_unit(
            "model_load",
            "From orcd deciding to load a model to its worker registering",
            Unit::Seconds,
            load_seconds.clone(),
        );
        let unloads = Family::<UnloadLabels, Counter>::default();
        registry.register(
            "model_unloads",
            "Workers orcd stopped, by reason (idle, evicted, scaled_in)",
            unloads.clone(),
        );
        PlacementMetrics {
            loads,
            load_seconds,
            unloads,
        }
    }

    /// A load ended; `seconds` only for one that succeeded.
    pub fn load(&self, model: &str, host: &str, outcome: &'static str, seconds: Option<f64>) {
        self.loads
            .get_or_create(&LoadLabels {
                model: model.to_owned(),
                host: host.to_owned(),
                outcome,
            })
            .inc();
        if let Some(seconds) = seconds {
            self.load_seconds
                .get_or_create(&ModelLabels {
                    model: model.to_owned(),
                })
                .observe(seconds);
        }
    }

    pub fn unload(&self, model: &str, host: &str, reason: &'static str) {
        self.unloads
            .get_or_create(&UnloadLabels {
                model: model.to_owned(),
                host: host.to_owned(),
                reason,
            })
            .inc();
    }
}
