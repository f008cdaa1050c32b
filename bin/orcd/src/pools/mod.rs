//! The pool managers of the fleet (one `llorch-pool-managerd` per host) and the models orcd
//! loads on them: hosts register and heartbeat their facts (`/pools/...`, worker token),
//! `GET /v2/hosts` lists them, a request for a model without a live worker starts one where
//! [`placement`] finds room, and idle workers are stopped after their `keep_alive`.

pub mod downloads;
pub mod fetch;
pub mod hosts;
pub mod loader;
pub mod metrics;
pub mod placement;
pub mod policy;
pub mod routes;
pub mod waiting;
pub mod worker_log;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

pub use hosts::HostRegistry;
pub use loader::{ensure_loaded, ensure_loaded_on, housekeeping, unload_model, wait_loaded};
pub use policy::Policies;
pub use routes::routes;
pub use waiting::{load_reporting, still_loading, until_placed, LoadWait};

/// A failed start makes orcd avoid that host for that model this long.
pub const AVOID_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// How orcd places models.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub policies: Policies,
    /// How long a request waits for its model to load (`--load-timeout-secs`).
    pub load_timeout: Duration,
    /// A host without a heartbeat for this long is lost.
    pub host_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            policies: Policies::default(),
            load_timeout: Duration::from_secs(120),
            host_timeout: Duration::from_secs(10),
        }
    }
}

/// The state of one load, shared by every request that waits for it.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadStatus {
    Loading { host_id: Option<String> },
    Loaded { worker_id: String },
    Failed { reason: String },
}

/// Shared by the handlers, the loads and the housekeeping loop; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pools {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: PoolSettings,
    hosts: HostRegistry,
    /// Loads in progress, by model.
    loads: Mutex<BTreeMap<String, watch::Receiver<LoadStatus>>>,
    /// Hosts avoided per model after a failed start.
    avoided: Mutex<Vec<placement::Avoided>>,
    /// When each pool-managed worker last had a job (or was first seen).
    last_used: Mutex<BTreeMap<String, std::time::Instant>>,
    /// Workers orcd asked to stop and their hosts still list.
    stopping: Mutex<BTreeMap<String, std::time::Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Pools {
    pub fn new(settings: PoolSettings) -> Pools {
        Pools {
            inner: Arc::new(Inner {
                hosts: HostRegistry::new(settings.host_timeout),
                settings,
                loads: Mutex::default(),
                avoided: Mutex::default(),
                last_used: Mutex::default(),
                stopping: Mutex::default(),
            }),
        }
    }

    pub fn hosts(&self) -> &HostRegistry {
        &self.inner.hosts
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    pub fn policy(&self, model: &str) -> placement::ModelPolicy {
        self.inner.settings.policies.of(model)
    }

    /// Whether orcd may try to load `model`: some pool manager is registered and the model's
    /// policy allows loading on demand. Without pool managers orcd answers as it always did.
    pub fn may_load(&self, model: &str) -> bool {
        !self.inner.hosts.is_empty() && self.policy(model).on_demand
    }

    /// The models orcd could serve but has no live worker of, with their `/v1/models` status:
    /// `loading` while a load runs, else `unloaded` (on a live host's disk, or named in the
    /// policies, and loadable on demand).
    pub fn models_not_loaded(&self, loaded: &BTreeSet<String>) -> Vec<(String, &'static str)> {
        let now = std::time::Instant::now();
        let mut models: BTreeMap<String, &'static str> = BTreeMap::new();
        for record in self.inner.hosts.records() {
            if !record.is_live(now, self.inner.hosts.timeout()) {
                continue;
            }
            for model in &record.facts.models {
                models.insert(model.model.clone(), "unloaded");
            }
        }
        if !self.inner.hosts.is_empty() {
            for model in self.inner.settings.policies.named_models() {
                models.insert(model.to_owned(), "unloaded");
            }
        }
        for model in lock(&self.inner.loads).keys() {
            models.insert(model.clone(), "loading");
        }
        models
            .into_iter()
            .filter(|(model, status)| {
                !loaded.contains(model) && (*status == "loading" || self.policy(model).on_demand)
            })
            .collect()
    }

    /// The status of `model`'s load in progress, if any.
    pub fn loading(&self, model: &str) -> Option<LoadStatus> {
        lock(&self.inner.loads)
            .get(model)
            .map(|status| status.borrow().clone())
    }
}
