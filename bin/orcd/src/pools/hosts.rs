//! The registered pool managers, one per host, with the facts of their last heartbeat. A host
//! whose heartbeats stopped for the host timeout is lost: placement skips it, `GET /v2/hosts`
//! shows it as `lost`, and it comes back with its next heartbeat.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llorch_api::pool::{HostFacts, HostInfo, HostState, PoolRegistration, PoolWorker};

#[derive(Debug)]
pub struct HostRegistry {
    timeout: Duration,
    hosts: Mutex<BTreeMap<String, HostRecord>>,
}

#[derive(Debug, Clone)]
pub struct HostRecord {
    pub host_id: String,
    pub url: String,
    pub facts: HostFacts,
    pub last_seen: Instant,
}

impl HostRecord {
    pub fn is_live(&self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.last_seen) < timeout
    }
}

impl HostRegistry {
    pub fn new(timeout: Duration) -> HostRegistry {
        HostRegistry {
            timeout,
            hosts: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HostRecord>> {
        self.hosts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Registers (or re-registers) a host.
    pub fn register(&self, registration: PoolRegistration, now: Instant) {
        self.lock().insert(
            registration.host_id.clone(),
            HostRecord {
                host_id: registration.host_id,
                url: registration.url,
                facts: registration.facts,
                last_seen: now,
            },
        );
    }

    /// Takes a heartbeat; `false` for a host orcd does not know (it registers again).
    pub fn heartbeat(&self, host_id: &str, facts: HostFacts, now: Instant) -> bool {
        match self.lock().get_mut(host_id) {
            Some(record) => {
                record.facts = facts;
                record.last_seen = now;
                true
            }
            None => false,
        }
    }

    /// Counts a worker the host's pool manager has just started in the host's facts until its
    /// next heartbeat reports it, so that a placement meanwhile does not plan that memory twice.
    pub fn note_started(&self, host_id: &str, worker: PoolWorker) {
        if let Some(record) = self.lock().get_mut(host_id) {
            let workers = &mut record.facts.workers;
            if !workers
                .iter()
                .any(|known| known.worker_id == worker.worker_id)
            {
                workers.push(worker);
            }
        }
    }

    pub fn remove(&self, host_id: &str) -> bool {
        self.lock().remove(host_id).is_some()
    }

    pub fn get(&self, host_id: &str) -> Option<HostRecord> {
        self.lock().get(host_id).cloned()
    }

    pub fn records(&self) -> Vec<HostRecord> {
        self.lock().values().cloned().collect()
    }

    /// Every host as `GET /v2/hosts` shows it.
    pub fn infos(&self, now: Instant) -> Vec<HostInfo> {
        self.lock()
            .values()
            .map(|record| HostInfo {
                host_id: record.host_id.clone(),
                url: record.url.clone(),
                state: match record.is_live(now, self.timeout) {
                    true => HostState::Live,
                    false => HostState::Lost,
                },
                last_seen_ms_ago: now.saturating_duration_since(record.last_seen).as_millis()
                    as u64,
                facts: record.facts.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use llorch_api::pool::{PoolWorkerState, WorkerLaunch};

    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            host_name: "a".into(),
            os: "linux".into(),
            cpu_model: "cpu".into(),
            physical_cores: 2,
            ram_total_bytes: 4 << 30,
            ram_available_bytes: 2 << 30,
            load_average: 0.0,
            gpus: Vec::new(),
            disk_free_bytes: 0,
            models: Vec::new(),
            workers: Vec::new(),
            memory_budget_bytes: Some(1 << 30),
            backends: Vec::new(),
        }
    }

    #[test]
    fn a_started_worker_takes_its_room_before_the_next_heartbeat_reports_it() {
        let registry = HostRegistry::new(Duration::from_secs(10));
        let now = Instant::now();
        registry.register(
            PoolRegistration {
                host_id: "a".into(),
                url: "http://a:9100".into(),
                facts: facts(),
            },
            now,
        );
        let worker = PoolWorker {
            worker_id: "a-qwen-1".into(),
            launch: WorkerLaunch::of_model("qwen"),
            port: None,
            pid: Some(7),
            state: PoolWorkerState::Starting,
            rss_bytes: None,
            estimated_bytes: 700 << 20,
            restarts: 0,
            last_log: Vec::new(),
        };
        registry.note_started("a", worker.clone());
        registry.note_started("a", worker);
        registry.note_started("unknown", facts_worker());
        let record = registry.get("a").unwrap();
        assert_eq!(record.facts.workers.len(), 1, "counted once");
        assert_eq!(record.facts.ram_free_for_workers(), 324 << 20);
        // The heartbeat's facts replace the note.
        assert!(registry.heartbeat("a", facts(), now));
        assert!(registry.get("a").unwrap().facts.workers.is_empty());
    }

    fn facts_worker() -> PoolWorker {
        PoolWorker {
            worker_id: "x".into(),
            launch: WorkerLaunch::of_model("x"),
            port: None,
            pid: None,
            state: PoolWorkerState::Starting,
            rss_bytes: None,
            estimated_bytes: 1,
            restarts: 0,
            last_log: Vec::new(),
        }
    }
}
