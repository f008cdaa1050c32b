//! The limits against raw TCP clients on loopback, with timeouts short enough for a unit test.

use std::time::Instant as StdInstant;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

const SLOW_RESPONSE: Duration = Duration::from_millis(1500);

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(800),
        max_connections: 16,
        max_connections_per_peer: 16,
    }
}

fn router() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(SLOW_RESPONSE).await;
                "done"
            }),
        )
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
}

struct Server {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(limits: ConnectionLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            router(),
            limits,
            async {
                let _ = stopped.await;
            },
            Duration::from_millis(200),
        ));
        Server {
            address,
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A whole `GET` on its own connection: the response text, and how long it took.
async fn get_once(address: SocketAddr, path: &str) -> (String, Duration) {
    let started = StdInstant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    (response, started.elapsed())
}

/// Waits until the server closes `stream` (reads return EOF or an error); `None` if it is
/// still open after `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = StdInstant::now();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected_while_health_stays_fast() {
    let server = Server::start(limits()).await;
    let mut slow = TcpStream::connect(server.address).await.unwrap();
    let started = StdInstant::now();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    // One header line every 100 ms would take 3 s to finish; the timeout is 400 ms.
    let trickle = async {
        for line in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let header = format!("x-slow-{line}: 1\r\n");
            if slow.write_all(header.as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let health = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let (response, took) = get_once(server.address, "/health").await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            slowest = slowest.max(took);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slowest
    };
    let ((), slowest_health) = tokio::join!(trickle, health);
    assert!(
        slowest_health < Duration::from_millis(300),
        "/health took {slowest_health:?} next to a slow client"
    );
    let closed = closed_after(&mut slow, Duration::from_secs(5))
        .await
        .map(|_| started.elapsed())
        .expect("the trickling client was never disconnected");
    assert!(
        closed >= Duration::from_millis(400) && closed < Duration::from_millis(2500),
        "disconnected after {closed:?}, expected about 400 ms"
    );
}

#[tokio::test]
async fn a_new_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    // The idle timeout is long: a silent new connection must not get it.
    let server = Server::start(ConnectionLimits {
        idle_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    let closed = closed_after(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent new connection stayed open");
    assert!(
        closed >= Duration::from_millis(350) && closed < Duration::from_millis(2500),
        "silent connection closed after {closed:?}, expected about 400 ms"
    );
    // One that sends its first byte late gets no longer than one that sends none.
    let mut late = TcpStream::connect(server.address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    late.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let closed = closed_after(&mut late, Duration::from_secs(5))
        .await
        .expect("a connection that started its head late stayed open");
    assert!(closed < Duration::from_millis(2500), "{closed:?}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_a_slow_response_is_not() {
    let server = Server::start(limits()).await;
    // The handler takes longer than both timeouts; its request is in flight all along.
    let (response, took) = get_once(server.address, "/slow").await;
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("done"),
        "{response}"
    );
    assert!(took >= SLOW_RESPONSE, "{took:?}");

    // Kept alive after a response, the connection is idle and closes after the idle timeout.
    let mut kept = TcpStream::connect(server.address).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    let read = kept.read(&mut buffer).await.unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    let closed = closed_after(&mut kept, Duration::from_secs(5))
        .await
        .expect("a kept-alive idle connection stayed open");
    assert!(
        closed >= Duration::from_millis(700) && closed < Duration::from_secs(3),
        "kept-alive connection closed after {closed:?}, expected about 800 ms"
    );
}

/// A connection from `source`, a loopback address other than the server's own peers.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

#[tokio::test]
async fn one_peer_opening_silent_connections_cannot_take_every_slot() {
    // Timeouts far beyond the test: only the per-peer limit can keep slots free.
    let server = Server::start(ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        max_connections: 16,
        max_connections_per_peer: 4,
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(connect_from("127.0.0.2", server.address).await);
    }
    let (response, took) =
        tokio::time::timeout(Duration::from_secs(5), get_once(server.address, "/health"))
            .await
            .expect("/health was not answered next to 20 silent connections of one peer");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(took < Duration::from_secs(2), "/health took {took:?}");
    // The peer's first four stay open; the rest were closed at once.
    let mut closed = 0;
    for stream in &mut silent {
        if closed_after(stream, Duration::from_millis(200))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 16, "connections of the peer closed");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let server = Server::start(ConnectionLimits {
        max_connections: 1,
        ..limits()
    })
    .await;
    let mut first = TcpStream::connect(server.address).await.unwrap();
    // Give the server a moment to accept the first connection, so it holds the only permit.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(get_once(server.address, "/health"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served while the limit is 1"
    );
    closed_after(&mut first, Duration::from_secs(5))
        .await
        .expect("the idle first connection was never closed");
    let (response, _) = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the waiting connection was never served")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn requests_carry_the_peer_address_and_the_listener_closes_on_stop() {
    let mut server = Server::start(limits()).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.ends_with(&local.to_string()), "{response}");

    let _ = server.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("serve did not return after stop")
        .unwrap();
    assert!(TcpStream::connect(server.address).await.is_err());
}
