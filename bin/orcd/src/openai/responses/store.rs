//! The responses orcd remembers for `previous_response_id` and `GET /v1/responses/{id}`: in
//! memory, at most [`CAPACITY`] of them (the oldest goes first), each for [`TIME_TO_LIVE`].
//! A response belongs to the token that made it; another client's id is as unknown as one
//! never stored. `store: false` responses never enter.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llorch_api::ChatMessage;

use super::objects::ResponseObject;
use crate::auth::JobScope;

/// Most responses kept; a long agent session chains one per turn.
pub const CAPACITY: usize = 1024;
/// How long a response stays retrievable and continuable.
pub const TIME_TO_LIVE: Duration = Duration::from_secs(60 * 60);

/// One stored response: the object, and the conversation a continuation starts from.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// Fingerprint of the token that made it; `None` without authentication.
    pub owner: Option<String>,
    pub response: ResponseObject,
    pub conversation: Vec<ChatMessage>,
}

#[derive(Debug)]
struct Entry {
    stored: StoredResponse,
    at: Instant,
}

/// Cheap to clone; every clone is the same store.
#[derive(Debug, Clone)]
pub struct ResponseStore {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
    time_to_live: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ids oldest first; may name entries already deleted.
    order: VecDeque<String>,
}

impl Default for ResponseStore {
    fn default() -> Self {
        ResponseStore::new(CAPACITY, TIME_TO_LIVE)
    }
}

impl ResponseStore {
    pub fn new(capacity: usize, time_to_live: Duration) -> ResponseStore {
        ResponseStore {
            inner: Arc::default(),
            capacity,
            time_to_live,
        }
    }

    pub fn insert(&self, stored: StoredResponse) {
        self.insert_at(stored, Instant::now());
    }

    fn insert_at(&self, stored: StoredResponse, now: Instant) {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        let id = stored.response.id.clone();
        inner.order.push_back(id.clone());
        inner.entries.insert(id, Entry { stored, at: now });
        while inner.entries.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
    }

    /// The response `id` if it is kept and `scope` may see it.
    pub fn get(&self, id: &str, scope: &JobScope) -> Option<StoredResponse> {
        self.get_at(id, scope, Instant::now())
    }

    fn get_at(&self, id: &str, scope: &JobScope, now: Instant) -> Option<StoredResponse> {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        let entry = inner.entries.get(id)?;
        scope
            .allows(entry.stored.owner.as_deref())
            .then(|| entry.stored.clone())
    }

    /// Forgets `id`; whether it was there for `scope`.
    pub fn remove(&self, id: &str, scope: &JobScope) -> bool {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        let visible = inner
            .entries
            .get(id)
            .is_some_and(|entry| scope.allows(entry.stored.owner.as_deref()));
        if visible {
            inner.entries.remove(id);
        }
        visible
    }

    /// Drops entries older than the time to live (they are at the front of `order`).
    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(oldest) = inner.order.front() {
            match inner.entries.get(oldest) {
                Some(entry) if now.duration_since(entry.at) < self.time_to_live => break,
                Some(_) => {
                    let oldest = inner.order.pop_front().expect("front exists");
                    inner.entries.remove(&oldest);
                }
                None => {
                    inner.order.pop_front();
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every step is one call).
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::responses::objects::Status;

    fn stored(id: &str, owner: Option<&str>) -> StoredResponse {
        StoredResponse {
            owner: owner.map(str::to_owned),
            response: ResponseObject::sample(id, Status::Completed),
            conversation: vec![ChatMessage::new("user", "hi")],
        }
    }

    #[test]
    fn the_oldest_goes_first_when_full() {
        let store = ResponseStore::new(2, TIME_TO_LIVE);
        for id in ["a", "b", "c"] {
            store.insert(stored(id, None));
        }
        assert!(store.get("a", &JobScope::All).is_none());
        assert!(store.get("b", &JobScope::All).is_some());
        assert!(store.get("c", &JobScope::All).is_some());
    }

    #[test]
    fn responses_expire_after_their_time_to_live() {
        let store = ResponseStore::new(8, Duration::from_secs(10));
        let start = Instant::now();
        store.insert_at(stored("a", None), start);
        store.insert_at(stored("b", None), start + Duration::from_secs(5));
        let later = start + Duration::from_secs(12);
        assert!(store.get_at("a", &JobScope::All, later).is_none());
        assert!(store.get_at("b", &JobScope::All, later).is_some());
    }

    #[test]
    fn another_clients_response_is_invisible_and_cannot_be_deleted() {
        let store = ResponseStore::default();
        store.insert(stored("a", Some("fp-alice")));
        let bob = JobScope::Owner("fp-bob".into());
        assert!(store.get("a", &bob).is_none());
        assert!(!store.remove("a", &bob));
        let alice = JobScope::Owner("fp-alice".into());
        assert!(store.get("a", &alice).is_some());
        assert!(
            store.get("a", &JobScope::All).is_some(),
            "the operator sees it"
        );
        assert!(store.remove("a", &alice));
        assert!(store.get("a", &alice).is_none());
    }
}
