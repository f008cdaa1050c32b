//! How far the peer of a connection has taken what was sent to it: the bytes written to the
//! socket, less those still in the kernel's send queue (`SIOCOUTQ`: sent but not acknowledged,
//! or not sent at all because the peer's receive window is closed).
//!
//! Why not just wait for a write to block: the kernel's buffers on both sides take megabytes
//! before a write blocks, which at a few hundred bytes per token is minutes of generation for a
//! peer that is gone (a cut link acknowledges nothing) or stopped reading (its window closes).
//! The acknowledged count stops moving at once in both cases, and a [`StallClock`] tells how
//! long it has stood still while data waited.
//!
//! Every request carries its connection's [`Delivery`] as an extension.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// One connection's delivery progress; cheap to clone.
#[derive(Clone)]
pub struct Delivery(Arc<Mutex<DeliveryState>>);

struct DeliveryState {
    /// The socket while it is open; `None` once closed, so a reused descriptor is never read.
    socket: Option<RawFd>,
    /// Bytes written to the socket so far.
    written: u64,
}

/// One reading of [`Delivery::sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written to the socket so far.
    pub written: u64,
    /// Of those, the bytes the peer has not acknowledged yet.
    pub unacknowledged: u64,
}

impl Progress {
    /// Bytes the peer's TCP stack has acknowledged.
    pub fn acknowledged(&self) -> u64 {
        self.written.saturating_sub(self.unacknowledged)
    }
}

impl Delivery {
    pub(crate) fn of(stream: &TcpStream) -> Delivery {
        Delivery(Arc::new(Mutex::new(DeliveryState {
            socket: Some(stream.as_raw_fd()),
            written: 0,
        })))
    }

    fn state(&self) -> MutexGuard<'_, DeliveryState> {
        // Two plain fields, valid whatever a panicking holder left.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn note_written(&self, result: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(bytes)) = result {
            self.state().written += *bytes as u64;
        }
    }

    pub(crate) fn socket_closed(&self) {
        self.state().socket = None;
    }

    /// The bytes written and not yet acknowledged now; `None` once the connection has closed
    /// or where the platform cannot tell (only Linux can).
    pub fn sample(&self) -> Option<Progress> {
        let state = self.state();
        let socket = state.socket?;
        // Read under the lock: the socket cannot be closed (and its number reused) meanwhile.
        let unacknowledged = unacknowledged_bytes(socket)?;
        Some(Progress {
            written: state.written,
            unacknowledged,
        })
    }
}

#[cfg(target_os = "linux")]
fn unacknowledged_bytes(socket: RawFd) -> Option<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: `socket` is an open TCP socket (checked under the lock by the caller) and
    // SIOCOUTQ (= TIOCOUTQ) writes one int: the bytes between the socket's write sequence and
    // its oldest unacknowledged byte.
    let result = unsafe { libc::ioctl(socket, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
    (result == 0).then_some(queued.max(0) as u64)
}

#[cfg(not(target_os = "linux"))]
fn unacknowledged_bytes(_socket: RawFd) -> Option<u64> {
    None
}

/// How long a peer has acknowledged nothing while data was waiting for it, from samples.
#[derive(Debug, Default)]
pub struct StallClock {
    acknowledged: u64,
    stalled_since: Option<Instant>,
}

impl StallClock {
    /// Takes one sample; returns how long delivery has stood still with data waiting (zero
    /// while it moves, or when nothing waits).
    pub fn observe(&mut self, progress: Progress, now: Instant) -> Duration {
        let acknowledged = progress.acknowledged();
        if acknowledged > self.acknowledged || progress.unacknowledged == 0 {
            self.acknowledged = self.acknowledged.max(acknowledged);
            self.stalled_since = None;
            return Duration::ZERO;
        }
        now.duration_since(*self.stalled_since.get_or_insert(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(written: u64, unacknowledged: u64) -> Progress {
        Progress {
            written,
            unacknowledged,
        }
    }

    #[test]
    fn the_clock_runs_only_while_data_waits_and_nothing_is_acknowledged() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut clock = StallClock::default();
        assert_eq!(clock.observe(progress(100, 0), at(0)), Duration::ZERO);
        // Waiting data, acknowledged count standing still: the clock runs.
        assert_eq!(clock.observe(progress(200, 100), at(1)), Duration::ZERO);
        assert_eq!(
            clock.observe(progress(300, 200), at(4)),
            Duration::from_secs(3)
        );
        // Writing more is no progress; acknowledging is.
        assert_eq!(
            clock.observe(progress(400, 300), at(6)),
            Duration::from_secs(5)
        );
        assert_eq!(clock.observe(progress(400, 50), at(7)), Duration::ZERO);
        assert_eq!(clock.observe(progress(500, 150), at(9)), Duration::ZERO);
        assert_eq!(
            clock.observe(progress(500, 150), at(12)),
            Duration::from_secs(3)
        );
        // Everything acknowledged: nothing waits, nothing stalls.
        assert_eq!(clock.observe(progress(500, 0), at(30)), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_stops_acknowledging() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        // A small window fills after a few kilobytes, as a stopped reader's does.
        client.set_recv_buffer_size(4096).unwrap();
        let mut client = client
            .connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let delivery = Delivery::of(&server);
        let chunk = vec![b'x'; 1024];
        // The peer reads: everything written is acknowledged soon.
        server.write_all(&chunk).await.unwrap();
        delivery.note_written(&Poll::Ready(Ok(chunk.len())));
        let mut buffer = vec![0; 1024];
        client.read_exact(&mut buffer).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while delivery.sample().unwrap().unacknowledged > 0 {
            assert!(Instant::now() < deadline, "{:?}", delivery.sample());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The peer stops reading: once its window is full, what follows waits unacknowledged.
        let mut written = 0;
        while written < 4 << 20 {
            match tokio::time::timeout(Duration::from_millis(200), server.write(&chunk)).await {
                Ok(Ok(bytes)) => {
                    delivery.note_written(&Poll::Ready(Ok(bytes)));
                    written += bytes;
                }
                _ => break,
            }
        }
        let stalled = delivery.sample().unwrap();
        assert!(stalled.unacknowledged > 0, "{stalled:?}");
        assert!(stalled.acknowledged() < 1024 + 64 * 1024, "{stalled:?}");
        delivery.socket_closed();
        assert_eq!(delivery.sample(), None);
    }
}
