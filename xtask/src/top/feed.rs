//! The connection to orcd: a thread follows `/v2/events` and hands each event to the view's
//! loop over a channel; when orcd is unreachable or refuses the token it reports why and tries
//! again, for as long as the view runs. A second thread polls what the stream does not carry:
//! the pool managers' hosts, which models are loading, and the log of a worker on another
//! machine. The view's loop itself never waits for orcd.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use llorch_api::fleet::FleetEvent;
use llorch_api::pool::{HostInfo, LogTail};

use llorch_client::{blocking::OrcdClient, url_segment};

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
    /// A poll of what the stream does not carry.
    Polled(Polled),
}

/// The stream is the view's health; polls that fail are left out rather than reported, except
/// a remote log, whose pane says why it is empty.
#[derive(Debug, Default)]
pub struct Polled {
    /// `GET /v2/hosts`; none when it failed (the last answer stays on screen).
    pub hosts: Option<Vec<HostInfo>>,
    /// The models `/v1/models` lists as `loading`; none when it failed.
    pub loading_models: Option<Vec<String>>,
    /// `GET /v2/workers/{id}/log` of the worker the log pane follows, when it is remote.
    pub remote_log: Option<(String, Result<Vec<String>, String>)>,
}

/// How often the poller asks.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Lines of a worker's log kept for the log pane.
pub const LOG_LINES: usize = 200;

/// The worker whose log the poller fetches from orcd: set by the view while its log pane
/// follows a worker that has no log on this machine.
pub type RemoteLogWanted = Arc<Mutex<Option<String>>>;

/// `/v1/models`, reduced to what `top` reads from it.
#[derive(Debug, serde::Deserialize)]
struct ModelList {
    data: Vec<ModelStatus>,
}

#[derive(Debug, serde::Deserialize)]
struct ModelStatus {
    id: String,
    #[serde(default)]
    status: Option<String>,
}

/// The pool managers' hosts as orcd reports them; none when orcd does not answer.
pub fn hosts(client: &OrcdClient) -> Option<Vec<HostInfo>> {
    client.get_json("/v2/hosts").ok()
}

/// The models orcd is loading now, by `/v1/models`' `status`.
pub fn loading_models(client: &OrcdClient) -> Option<Vec<String>> {
    let models: ModelList = client.get_json("/v1/models").ok()?;
    Some(
        models
            .data
            .into_iter()
            .filter(|model| model.status.as_deref() == Some("loading"))
            .map(|model| model.id)
            .collect(),
    )
}

/// The tail of a pool-managed worker's log, relayed by orcd (operator token); the error is
/// the line the log pane shows instead.
pub fn remote_log(client: &OrcdClient, worker_id: &str) -> Result<Vec<String>, String> {
    let path = format!(
        "/v2/workers/{}/log?lines={LOG_LINES}",
        url_segment(worker_id)
    );
    client
        .get_json::<LogTail>(&path)
        .map(|tail| tail.lines)
        .map_err(|error| one_line(&error))
}

/// An error with its hints on one line, for the status bar or a pane.
pub fn one_line(error: &anyhow::Error) -> String {
    crate::output::render_error(error).replace('\n', " · ")
}

/// Polls on its own thread until the receiving side is dropped.
pub fn poll(client: OrcdClient, wanted: RemoteLogWanted, sender: mpsc::Sender<FeedMessage>) {
    std::thread::spawn(move || loop {
        let followed = wanted
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let polled = Polled {
            hosts: hosts(&client),
            loading_models: loading_models(&client),
            remote_log: followed.map(|worker_id| {
                let log = remote_log(&client, &worker_id);
                (worker_id, log)
            }),
        };
        if sender.send(FeedMessage::Polled(polled)).is_err() {
            return;
        }
        std::thread::sleep(POLL_EVERY);
    });
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
