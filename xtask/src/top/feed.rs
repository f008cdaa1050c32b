//! The connection to orcd: a thread follows `/v2/events` and hands each event to the view's
//! loop over a channel; when orcd is unreachable or refuses the token it reports why and tries
//! again, for as long as the view runs.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use llorch_api::fleet::FleetEvent;

use llorch_client::blocking::OrcdClient;

/// The stream every operator view reads: a snapshot, then each change.
pub const EVENTS_PATH: &str = "/v2/events";
/// How long the view waits before it asks an unreachable orcd again.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);

/// What the follower thread tells the view.
#[derive(Debug)]
pub enum FeedMessage {
    Event(FleetEvent),
    /// The stream could not be opened or broke; the text says why and what to fix.
    Lost(String),
}

/// Rebuilds one event of the stream; an event this client does not know is an error that
/// names it (an orcd newer than this xtask).
pub fn decode_event(name: &str, data: &str) -> anyhow::Result<FleetEvent> {
    FleetEvent::from_sse(name, data).with_context(|| {
        format!("orcd sent a fleet event this client does not understand: `{name}` {data}")
    })
}

/// Follows orcd's event stream on its own thread until the receiving side is dropped.
pub fn follow(client: OrcdClient, sender: mpsc::Sender<FeedMessage>) {
    std::thread::spawn(move || loop {
        let followed = client.follow_events(EVENTS_PATH, |name, data| {
            let event = decode_event(name, data)?;
            Ok(sender.send(FeedMessage::Event(event)).is_ok())
        });
        let reason = match followed {
            // The view stopped listening.
            Ok(()) => return,
            Err(error) => why_lost(&error),
        };
        if sender.send(FeedMessage::Lost(reason)).is_err() {
            return;
        }
        std::thread::sleep(RETRY_EVERY);
    });
}

/// What the view shows when the stream is lost: the attempt that failed (its first line, which
/// names the URL or orcd's answer), then each hint on a line of its own (the token setting to
/// fix after a 401, how to start orcd when it is unreachable).
pub fn why_lost(error: &anyhow::Error) -> String {
    let attempt = error.to_string();
    let mut lines = vec![attempt.lines().next().unwrap_or_default().to_owned()];
    lines.extend(
        crate::output::render_error(error)
            .lines()
            .filter(|line| line.starts_with("hint: "))
            .map(str::to_owned),
    );
    lines.join("\n")
}

/// The first event of the stream: the whole fleet now, for `--once`.
pub fn snapshot(client: &OrcdClient) -> anyhow::Result<llorch_api::fleet::FleetSnapshot> {
    let mut first = None;
    client.follow_events(EVENTS_PATH, |name, data| {
        first = Some(decode_event(name, data)?);
        Ok(false)
    })?;
    match first {
        Some(FleetEvent::Snapshot(snapshot)) => Ok(snapshot),
        other => anyhow::bail!(
            "orcd at {} began {EVENTS_PATH} with {} instead of a snapshot",
            client.base_url(),
            other.map_or("nothing", |event| event.name())
        ),
    }
}
