//! The per-peer connection limit: how many connections each client IP address holds, so that
//! one address opening sockets and sending nothing cannot take every connection slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a peer over its limit is logged at most, so a flood does not flood the log too.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Open connections per peer address, shared by the accept loop and every connection.
#[derive(Clone)]
pub(crate) struct PeerCounts(Arc<Shared>);

struct Shared {
    limit: usize,
    state: Mutex<State>,
}

struct State {
    open: HashMap<IpAddr, usize>,
    last_warning: Option<Instant>,
}

/// One admitted connection of a peer; dropping it frees the slot.
pub(crate) struct PeerSlot {
    counts: PeerCounts,
    peer: IpAddr,
}

impl PeerCounts {
    pub(crate) fn new(limit: usize) -> PeerCounts {
        PeerCounts(Arc::new(Shared {
            limit: limit.max(1),
            state: Mutex::new(State {
                open: HashMap::new(),
                last_warning: None,
            }),
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A map of counts, valid whatever a panicking holder left.
        self.0
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for one more connection of `peer`, or `None` when it already holds the limit.
    pub(crate) fn admit(&self, peer: IpAddr) -> Option<PeerSlot> {
        // An IPv4 client of a dual-stack listener is one peer whichever way it is written.
        let peer = peer.to_canonical();
        let mut state = self.state();
        let open = state.open.entry(peer).or_insert(0);
        if *open >= self.0.limit {
            let now = Instant::now();
            if state
                .last_warning
                .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
            {
                state.last_warning = Some(now);
                tracing::warn!(
                    %peer,
                    limit = self.0.limit,
                    "closing a new connection: the peer already holds the most connections one \
                     address may have (`--max-connections-per-peer`)"
                );
            }
            return None;
        }
        *open += 1;
        Some(PeerSlot {
            counts: self.clone(),
            peer,
        })
    }

    #[cfg(test)]
    fn open(&self, peer: IpAddr) -> usize {
        self.state().open.get(&peer).copied().unwrap_or(0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut state = self.counts.state();
        if let Some(open) = state.open.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                // Peers come and go; the map holds only the ones with connections.
                state.open.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_at_most_its_limit_and_a_closed_connection_frees_one() {
        let counts = PeerCounts::new(2);
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let first = counts.admit(one).unwrap();
        let second = counts.admit(one).unwrap();
        assert!(counts.admit(one).is_none());
        // The same address written as IPv4-mapped IPv6 is the same peer.
        assert!(counts.admit("::ffff:192.0.2.1".parse().unwrap()).is_none());
        let _other = counts.admit(other).unwrap();
        drop(first);
        assert_eq!(counts.open(one), 1);
        let third = counts.admit(one).unwrap();
        drop(second);
        drop(third);
        assert_eq!(counts.open(one), 0);
        assert_eq!(counts.state().open.len(), 1, "empty entries are removed");
    }
}
