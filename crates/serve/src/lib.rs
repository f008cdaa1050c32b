//! Serves an axum [`Router`] on a TCP listener with the limits a daemon open to untrusted
//! clients needs; orcd and the worker both serve through here.
//!
//! - A new connection must have sent its first request head within `header_read_timeout` of
//!   being accepted, so sockets that send nothing cannot hold the connection slots for long; on
//!   a kept-alive connection the head must be complete within `header_read_timeout` of its
//!   first byte: a client that sends one header line every few seconds is disconnected.
//! - A kept-alive connection with no request in flight is closed after `idle_timeout` without
//!   a new one.
//! - At most `max_connections` connections are open; further ones wait in the listen backlog
//!   until one closes. One peer (IP address) may hold at most `max_connections_per_peer` of
//!   them; its further connections are closed at once, so the others stay free for everyone
//!   else (and `/health`).
//! - [`host`]: without tokens, a daemon answers only requests whose `Host` is its own (DNS
//!   rebinding); [`delivery`]: how far the peer has acknowledged what a connection sent.
//! - The listener stays open until the caller's `stop` resolves, so a daemon can keep
//!   answering `/health` (with `draining`) while it drains; then open connections get
//!   `close_grace` to finish their responses.
//!
//! A request in flight, its response body included (a long SSE stream, a slow non-streaming
//! answer), is never cut by these timeouts. Every request carries the peer address as axum's
//! `ConnectInfo<SocketAddr>`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

pub mod delivery;
pub mod host;
mod peers;

pub use delivery::Delivery;
pub use host::{AllowedHosts, HostArgs};
use peers::{PeerCounts, PeerSlot};

/// How long clients may take and how many may be connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From a new connection's acceptance, or a kept-alive one's first byte of a request
    /// head, to the head's end.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections one IP address may have open at once.
    pub max_connections_per_peer: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_peer: default_per_peer(1024),
        }
    }
}

/// A quarter of the connection limit: one peer can never take them all.
fn default_per_peer(max_connections: usize) -> usize {
    (max_connections / 4).max(1)
}

/// The connection flags both daemons share (`#[command(flatten)]` them).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ConnectionArgs {
    /// Seconds a client may take to send a request's headers, counted from the connection's
    /// opening (from their first byte on a kept-alive connection); slower clients are
    /// disconnected
    #[arg(
        long,
        env = "LLORCH_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECS"
    )]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may stay open without a request in flight before it is closed
    /// (streams and other running requests are never cut)
    #[arg(
        long,
        env = "LLORCH_IDLE_TIMEOUT_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECS"
    )]
    pub idle_timeout_secs: u64,
    /// Connections open at once; more wait until one closes
    #[arg(
        long,
        env = "LLORCH_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "N"
    )]
    pub max_connections: u32,
    /// Connections one client IP address may have open at once; more are closed at once
    /// [default: a quarter of --max-connections]
    #[arg(
        long,
        env = "LLORCH_MAX_CONNECTIONS_PER_PEER",
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "N"
    )]
    pub max_connections_per_peer: Option<u32>,
}

impl ConnectionArgs {
    pub fn limits(&self) -> ConnectionLimits {
        let max_connections = self.max_connections as usize;
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_connections,
            max_connections_per_peer: self
                .max_connections_per_peer
                .map_or_else(|| default_per_peer(max_connections), |n| n as usize),
        }
    }
}

/// Serves `router` until `stop` resolves, then closes the listener, lets open connections
/// finish for up to `close_grace` and drops the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
    close_grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let peers = PeerCounts::new(limits.max_connections_per_peer);
    let (closing, closing_receiver) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer, permit) = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener, &permits) => accepted,
        };
        // Over its limit, the peer's connection is dropped (closed) here, with its permit.
        let Some(peer_slot) = peers.admit(peer.ip()) else {
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            limits,
            closing_receiver.clone(),
            (permit, peer_slot),
        ));
    }
    drop(listener);
    closing.send_replace(true);
    let closed = tokio::time::timeout(close_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if closed.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open {close_grace:?} after the stop; closing them"
        );
        connections.abort_all();
    }
}

/// Waits for a free connection permit, then for a connection.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .expect("the connection semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => return (stream, peer, permit),
            // The peer gave up before we got to it; nothing is wrong with the listener.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            // Out of file descriptors, most likely: retrying at once would spin.
            Err(error) => {
                tracing::error!("accepting a connection: {error}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
    _slots: (OwnedSemaphorePermit, PeerSlot),
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let delivery = Delivery::of(&stream);
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: activity.clone(),
        delivery: delivery.clone(),
    });
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = InFlight::begin(service_activity.clone());
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(delivery.clone());
        let router = router.clone();
        async move {
            let response = router
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {});
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(TrackedBody {
                    body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing_started = false;
    loop {
        let deadline = activity.deadline(&limits);
        let changed = activity.changed.notified();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, "connection ended: {error}");
                }
                return;
            }
            () = sleep_until(deadline) => {
                if let Some(reason) = activity.expired(&limits) {
                    // Dropping the connection closes the socket; nothing is in flight.
                    tracing::debug!(%peer, "closing the connection: {reason}");
                    return;
                }
            }
            () = changed => {}
            _ = closing.wait_for(|closing| *closing), if !closing_started => {
                closing_started = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What one connection is doing, as far as its timeouts care.
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the connection's supervisor when the deadline may have moved.
    changed: Notify,
}

struct ActivityState {
    /// Requests whose responses are not finished yet.
    in_flight: usize,
    /// When the connection opened or its last response finished.
    idle_since: Instant,
    /// When the connection opened (until its first request), or when the first byte of the
    /// next request head arrived.
    head_started: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            // A new connection's first head is due a header-read timeout after it opened, not
            // after its first byte: one that sends nothing holds a connection slot no longer.
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: Some(Instant::now()),
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, ActivityState> {
        // The state is a few plain fields, valid whatever a panicking holder left.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the connection must be closed if nothing changes; `None` while a request runs.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let state = self.state();
        if state.in_flight > 0 {
            return None;
        }
        Some(match state.head_started {
            Some(started) => started + limits.header_read_timeout,
            None => state.idle_since + limits.idle_timeout,
        })
    }

    /// Why the connection must close now, if it must.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let deadline = self.deadline(limits)?;
        if Instant::now() < deadline {
            return None;
        }
        Some(match self.state().head_started {
            Some(_) => "the request head did not arrive within the header-read timeout",
            None => "idle for longer than the idle timeout",
        })
    }

    fn bytes_read(&self) {
        let mut state = self.state();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }
}

/// Counts a request from its head until its response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        {
            let mut state = activity.state();
            state.in_flight += 1;
            state.head_started = None;
        }
        activity.changed.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut state = self.0.state();
            state.in_flight = state.in_flight.saturating_sub(1);
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
                state.head_started = None;
            }
        }
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when the bytes of a new request head start to arrive and how many bytes
/// were written to it.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    delivery: Delivery,
}

impl Drop for WatchedIo {
    fn drop(&mut self) {
        // Before `inner` closes the socket, so its descriptor is never read once reused.
        self.delivery.socket_closed();
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.delivery.note_written(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.delivery.note_written(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
