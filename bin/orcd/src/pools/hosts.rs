//! The registered pool managers, one per host, with the facts of their last heartbeat. A host
//! whose heartbeats stopped for the host timeout is lost: placement skips it, `GET /v2/hosts`
//! shows it as `lost`, and it comes back with its next heartbeat.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use llorch_api::pool::{HostFacts, HostInfo, HostState, PoolRegistration};

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
