//! The audit log writer: an append-only, hash-chained JSON-lines file (format in
//! [`llorch_api::audit`]). One thread owns the file, so events are chained in the order they
//! arrive and the request path only pays for a channel send; with audit off there is no
//! [`AuditLog`] at all, and callers skip even building the event.
//!
//! Records are bounded: long text fields keep a prefix, their length and their hash
//! ([`AuditEvent::bounded`]), and a burst of auth failures from one peer address is written as
//! its first few failures plus one `auth_failures_collapsed` record that counts the rest, so hostile
//! traffic cannot fill the disk (or, in EU mode, the fsync queue).
//!
//! Rotation is daily (UTC): the active file `PATH` is renamed to `PATH.YYYY-MM-DD` when the
//! first event of a new day arrives, and the new `PATH` continues the chain. On start the chain
//! is picked up from the last line of `PATH`, or of the newest rotated file.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use llorch_api::audit::{
    parse_sealed_line, rfc3339_utc, utc_day, Actor, AuditEvent, AuditRecord, GENESIS_HASH,
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

/// A burst: the auth failures from one peer address within this window of the first.
const BURST_WINDOW_MS: u64 = 10_000;
/// Failures of a burst written in full; the rest of the burst is only counted.
const BURST_FULL_RECORDS: u64 = 8;
/// Peers tracked at once; beyond this every open burst is summarised and forgotten.
const MAX_TRACKED_PEERS: usize = 4096;
/// How often the writer wakes to summarise bursts whose window has passed.
const BURST_SWEEP: Duration = Duration::from_secs(1);

/// Where the log goes and how hard each event is pushed to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub path: PathBuf,
    /// EU mode: every event is fsynced before the next one is written.
    pub fsync_each_event: bool,
}

enum Message {
    Event {
        at_ms: u64,
        actor: Option<Actor>,
        event: AuditEvent,
    },
    /// Answered once everything sent before is written and synced.
    Flush(oneshot::Sender<()>),
}

/// A handle to the writer thread; cheap to clone. The thread ends when the last handle is gone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<Message>,
}

impl AuditLog {
    /// Opens (or creates) the log, picks up its chain, records `log_opened` and starts the
    /// writer. `write_failures` counts events that could not be written.
    pub fn open(settings: &AuditSettings, write_failures: Counter) -> anyhow::Result<AuditLog> {
        let writer = Writer::open(settings, write_failures)?;
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(receiver))
            .context("starting the audit log writer thread")?;
        let log = AuditLog { sender };
        log.record(
            None,
            AuditEvent::LogOpened {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                eu_mode: settings.fsync_each_event,
            },
        );
        tracing::info!(path = %settings.path.display(), fsync_each_event = settings.fsync_each_event, "audit log open");
        Ok(log)
    }

    pub fn record(&self, actor: Option<Actor>, event: AuditEvent) {
        self.record_at(unix_millis(), actor, event);
    }

    fn record_at(&self, at_ms: u64, actor: Option<Actor>, event: AuditEvent) {
        if self
            .sender
            .send(Message::Event {
                at_ms,
                actor,
                event,
            })
            .is_err()
        {
            tracing::error!("the audit log writer has stopped; an audit event was lost");
        }
    }

    /// Waits until every event recorded before this call is on disk.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

struct Writer {
    path: PathBuf,
    fsync_each_event: bool,
    file: File,
    /// Bytes in `file` that hold complete lines: a failed write is cut back to this.
    len: u64,
    /// The UTC day the active file belongs to.
    day: String,
    next_seq: u64,
    prev_hash: String,
    write_failures: Counter,
    bursts: AuthBursts,
}

impl Writer {
    fn open(settings: &AuditSettings, write_failures: Counter) -> anyhow::Result<Writer> {
        let path = settings.path.clone();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .with_context(|| format!("creating the audit log directory {}", dir.display()))?;
        }
        let today = utc_day(unix_millis());
        let (next_seq, prev_hash, day) = match last_sealed_line(&path)? {
            Some(last) => (
                last.seq + 1,
                last.hash,
                last.ts.get(..10).unwrap_or(&today).to_owned(),
            ),
            None => match newest_rotated(&path)? {
                Some(last) => (last.seq + 1, last.hash, today),
                None => (0, GENESIS_HASH.to_owned(), today),
            },
        };
        let file = open_append(&path)?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(Writer {
            path,
            fsync_each_event: settings.fsync_each_event,
            file,
            len,
            day,
            next_seq,
            prev_hash,
            write_failures,
            bursts: AuthBursts::default(),
        })
    }

    fn run(mut self, messages: mpsc::Receiver<Message>) {
        loop {
            match messages.recv_timeout(BURST_SWEEP) {
                Ok(Message::Event {
                    at_ms,
                    actor,
                    event,
                }) => self.handle(at_ms, actor, event),
                Ok(Message::Flush(done)) => {
                    // Counted failures are recorded events too: a flush writes their summaries.
                    for (actor, summary) in self.bursts.drain_all() {
                        self.write(unix_millis(), Some(actor), summary);
                    }
                    if let Err(error) = self.file.sync_data() {
                        tracing::error!(path = %self.path.display(), "syncing the audit log failed: {error}");
                    }
                    let _ = done.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = unix_millis();
                    for (actor, summary) in self.bursts.drain_ended(now) {
                        self.write(now, Some(actor), summary);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for (actor, summary) in self.bursts.drain_all() {
            self.write(unix_millis(), Some(actor), summary);
        }
        let _ = self.file.sync_all();
    }

    /// Writes an event, unless it is an auth failure inside a burst, which is only counted.
    fn handle(&mut self, at_ms: u64, actor: Option<Actor>, event: AuditEvent) {
        if matches!(event, AuditEvent::AuthFailure { .. }) {
            match self.bursts.admit(at_ms, actor.as_ref()) {
                BurstDecision::Count => return,
                BurstDecision::Write { ended } => {
                    if let Some((peer, summary)) = ended {
                        self.write(at_ms, Some(peer), summary);
                    }
                }
            }
        }
        self.write(at_ms, actor, event);
    }

    fn write(&mut self, at_ms: u64, actor: Option<Actor>, event: AuditEvent) {
        if let Err(error) = self.append(at_ms, actor, event.bounded()) {
            self.write_failures.inc();
            tracing::error!(path = %self.path.display(), "writing the audit log failed: {error}");
        }
    }

    fn append(&mut self, at_ms: u64, actor: Option<Actor>, event: AuditEvent) -> io::Result<()> {
        let day = utc_day(at_ms);
        // `YYYY-MM-DD` sorts as text; a clock stepping back keeps writing the current file.
        if day > self.day {
            if self.len > 0 {
                self.rotate()?;
            }
            self.day = day;
        }
        let record = AuditRecord {
            seq: self.next_seq,
            ts: rfc3339_utc(at_ms),
            event,
            actor,
            prev_hash: self.prev_hash.clone(),
        };
        let (mut line, hash) = record.seal();
        line.push('\n');
        if let Err(error) = self.file.write_all(line.as_bytes()) {
            // A half-written line would break the chain for good; cut it off.
            let _ = self.file.set_len(self.len);
            return Err(error);
        }
        self.len += line.len() as u64;
        self.next_seq += 1;
        self.prev_hash = hash;
        if self.fsync_each_event {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Closes the day's file as `PATH.YYYY-MM-DD` and starts a new `PATH`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_all()?;
        let rotated = free_rotated_name(&self.path, &self.day);
        fs::rename(&self.path, &rotated)?;
        self.file = open_append(&self.path).map_err(io::Error::other)?;
        self.len = 0;
        if self.fsync_each_event {
            // The rename itself must survive a crash, or the chain's order on disk is lost.
            if let Some(dir) = self.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        tracing::info!(rotated = %rotated.display(), "audit log rotated");
        Ok(())
    }
}

/// What to do with one auth failure.
#[derive(Debug, PartialEq)]
enum BurstDecision {
    /// Write it in full, after the summary of the peer's previous burst if that one ended.
    Write { ended: Option<(Actor, AuditEvent)> },
    /// It falls inside the peer's current burst: only counted.
    Count,
}

/// Auth failures per peer address (the IP, whatever the source port): the first
/// [`BURST_FULL_RECORDS`] of a burst are written, the rest of its [`BURST_WINDOW_MS`] window
/// only counted.
#[derive(Debug, Default)]
struct AuthBursts {
    peers: HashMap<String, Burst>,
}

#[derive(Debug)]
struct Burst {
    opened_ms: u64,
    written: u64,
    counted: u64,
    first_counted_ms: u64,
    last_counted_ms: u64,
}

impl AuthBursts {
    fn admit(&mut self, at_ms: u64, actor: Option<&Actor>) -> BurstDecision {
        let peer = peer_address(actor);
        if let Some(burst) = self.peers.get_mut(&peer) {
            if at_ms.saturating_sub(burst.opened_ms) < BURST_WINDOW_MS {
                if burst.written < BURST_FULL_RECORDS {
                    burst.written += 1;
                    return BurstDecision::Write { ended: None };
                }
                if burst.counted == 0 {
                    burst.first_counted_ms = at_ms;
                }
                burst.counted += 1;
                burst.last_counted_ms = at_ms;
                return BurstDecision::Count;
            }
        }
        let ended = self
            .peers
            .remove(&peer)
            .and_then(|burst| summary(peer.clone(), burst));
        self.peers.insert(
            peer,
            Burst {
                opened_ms: at_ms,
                written: 1,
                counted: 0,
                first_counted_ms: 0,
                last_counted_ms: 0,
            },
        );
        BurstDecision::Write { ended }
    }

    /// Summaries of the bursts whose window has passed; those peers are forgotten. Past
    /// [`MAX_TRACKED_PEERS`] every burst ends: a forgotten peer's next failure is written in
    /// full, and nothing counted is lost.
    fn drain_ended(&mut self, now_ms: u64) -> Vec<(Actor, AuditEvent)> {
        let over_capacity = self.peers.len() > MAX_TRACKED_PEERS;
        let ended: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, burst)| {
                over_capacity || now_ms.saturating_sub(burst.opened_ms) >= BURST_WINDOW_MS
            })
            .map(|(peer, _)| peer.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|peer| {
                let burst = self.peers.remove(&peer)?;
                summary(peer, burst)
            })
            .collect()
    }

    /// Summaries of every open burst; all peers are forgotten.
    fn drain_all(&mut self) -> Vec<(Actor, AuditEvent)> {
        self.peers
            .drain()
            .filter_map(|(peer, burst)| summary(peer, burst))
            .collect()
    }
}

/// The `auth_failures_collapsed` record of a burst, if it counted anything.
fn summary(peer: String, burst: Burst) -> Option<(Actor, AuditEvent)> {
    (burst.counted > 0).then(|| {
        (
            Actor {
                token: None,
                peer: Some(peer),
            },
            AuditEvent::AuthFailuresCollapsed {
                count: burst.counted,
                first_ts: rfc3339_utc(burst.first_counted_ms),
                last_ts: rfc3339_utc(burst.last_counted_ms),
            },
        )
    })
}

/// The IP of an actor's `ip:port` peer: a client opening new connections stays one peer.
fn peer_address(actor: Option<&Actor>) -> String {
    let Some(peer) = actor.and_then(|actor| actor.peer.as_deref()) else {
        return "unknown".to_owned();
    };
    peer.parse::<SocketAddr>()
        .map_or_else(|_| peer.to_owned(), |address| address.ip().to_string())
}

fn open_append(path: &Path) -> anyhow::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Peer addresses and token fingerprints are nobody else's business.
        options.mode(0o600);
    }
    options.open(path).with_context(|| {
        format!(
            "opening the audit log {}\nhint: choose a writable path with `--audit-log`",
            path.display()
        )
    })
}

/// `PATH.DAY`, or `PATH.DAY.N` when that exists (a clock that went back and forth).
fn free_rotated_name(path: &Path, day: &str) -> PathBuf {
    let base = format!("{}.{day}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// The chain fields of a file's last line, checked; `None` for a missing or empty file.
fn last_sealed_line(path: &Path) -> anyhow::Result<Option<llorch_api::audit::SealedLine>> {
    let Some(line) = last_line(path)? else {
        return Ok(None);
    };
    match parse_sealed_line(&line) {
        Ok(sealed) => Ok(Some(sealed)),
        Err(error) => bail!(
            "the last line of the audit log {} is damaged ({error}); orcd will not continue a chain it cannot trust\nhint: check it with `cargo xtask audit verify {}`, then move the file aside to start a new log",
            path.display(),
            path.display()
        ),
    }
}

/// The last line of a file, read from its end; an error when the file does not end in a newline
/// (a write cut short).
fn last_line(path: &Path) -> anyhow::Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("opening the audit log {}", path.display()))
        }
    };
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len == 0 {
        return Ok(None);
    }
    let mut window = 4096u64;
    loop {
        let start = len.saturating_sub(window);
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_to_end(&mut tail))
            .with_context(|| format!("reading {}", path.display()))?;
        if tail.last() != Some(&b'\n') {
            bail!(
                "the audit log {} ends in an incomplete line (orcd stopped mid-write?)\nhint: check it with `cargo xtask audit verify {}`, then remove the partial last line or move the file aside",
                path.display(),
                path.display()
            );
        }
        let body = &tail[..tail.len() - 1];
        match body.iter().rposition(|&byte| byte == b'\n') {
            Some(newline) => {
                return Ok(Some(
                    String::from_utf8_lossy(&body[newline + 1..]).into_owned(),
                ))
            }
            None if start == 0 => return Ok(Some(String::from_utf8_lossy(body).into_owned())),
            None => window *= 4,
        }
    }
}

/// The last line of the newest rotated file (`PATH.YYYY-MM-DD[.N]`), by sequence number.
fn newest_rotated(path: &Path) -> anyhow::Result<Option<llorch_api::audit::SealedLine>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return Ok(None);
    };
    let prefix = format!("{name}.");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
    };
    let mut newest: Option<llorch_api::audit::SealedLine> = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let file_name = entry.file_name();
        let Some(suffix) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if !is_rotation_suffix(suffix) {
            continue;
        }
        if let Some(last) = last_sealed_line(&entry.path())? {
            if newest.as_ref().is_none_or(|newest| last.seq > newest.seq) {
                newest = Some(last);
            }
        }
    }
    Ok(newest)
}

/// `YYYY-MM-DD` or `YYYY-MM-DD.N`: only files orcd rotated, not ones a person moved aside.
fn is_rotation_suffix(suffix: &str) -> bool {
    let (day, counter) = match suffix.split_once('.') {
        Some((day, counter)) => (day, Some(counter)),
        None => (suffix, None),
    };
    let day_ok = day.len() == 10
        && day.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    day_ok
        && counter.is_none_or(|counter| {
            !counter.is_empty() && counter.bytes().all(|b| b.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::audit::ChainVerifier;

    const DAY: u64 = 86_400_000;

    fn settings(dir: &Path) -> AuditSettings {
        AuditSettings {
            path: dir.join("audit.jsonl"),
            fsync_each_event: true,
        }
    }

    fn removed(id: &str) -> AuditEvent {
        AuditEvent::WorkerRemoved {
            worker_id: id.into(),
            reason: "deregistered".into(),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Verifies files in the given order as one chain from genesis; returns the line count.
    fn verify(paths: &[PathBuf]) -> usize {
        let mut verifier = ChainVerifier::from_genesis();
        let mut count = 0;
        for path in paths {
            for (index, line) in lines(path).iter().enumerate() {
                verifier
                    .check(line)
                    .unwrap_or_else(|error| panic!("{}:{}: {error}", path.display(), index + 1));
                count += 1;
            }
        }
        count
    }

    #[tokio::test]
    async fn events_are_chained_and_a_restart_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let log = AuditLog::open(&settings, Counter::default()).unwrap();
        log.record(
            Some(Actor {
                token: None,
                peer: Some("127.0.0.1:1".into()),
            }),
            removed("a"),
        );
        log.flush().await;
        drop(log);

        let log = AuditLog::open(&settings, Counter::default()).unwrap();
        log.record(None, removed("b"));
        log.flush().await;
        assert_eq!(verify(std::slice::from_ref(&settings.path)), 4);
        let events: Vec<String> = lines(&settings.path)
            .iter()
            .map(|line| parse_sealed_line(line).unwrap().event)
            .collect();
        assert_eq!(
            events,
            [
                "log_opened",
                "worker_removed",
                "log_opened",
                "worker_removed"
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&settings.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn daily_rotation_keeps_the_chain_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let log = AuditLog::open(&settings, Counter::default()).unwrap();
        // `log_opened` was stamped today; these come "later", on two following days.
        let far = unix_millis() / DAY * DAY + 10 * DAY;
        log.record_at(far, None, removed("a"));
        log.record_at(far + 1, None, removed("b"));
        log.record_at(far + DAY, None, removed("c"));
        log.flush().await;
        drop(log);

        let today = settings
            .path
            .with_file_name(format!("audit.jsonl.{}", utc_day(unix_millis())));
        let first_far = settings
            .path
            .with_file_name(format!("audit.jsonl.{}", utc_day(far)));
        assert_eq!(lines(&today).len(), 1);
        assert_eq!(lines(&first_far).len(), 2);
        assert_eq!(lines(&settings.path).len(), 1);
        assert_eq!(
            verify(&[today, first_far.clone(), settings.path.clone()]),
            4
        );

        // With the active file gone, a restart continues from the newest rotated file.
        fs::remove_file(&settings.path).unwrap();
        let log = AuditLog::open(&settings, Counter::default()).unwrap();
        log.flush().await;
        let restarted = parse_sealed_line(&lines(&settings.path)[0]).unwrap();
        let last_rotated = parse_sealed_line(&lines(&first_far)[1]).unwrap();
        assert_eq!(
            (restarted.seq, restarted.prev_hash),
            (last_rotated.seq + 1, last_rotated.hash)
        );
    }

    fn auth_failure(path: &str) -> AuditEvent {
        AuditEvent::AuthFailure {
            method: "GET".into(),
            path: path.into(),
            status: 401,
            reason: "missing token".into(),
        }
    }

    fn peer(address: &str) -> Actor {
        Actor {
            token: None,
            peer: Some(address.into()),
        }
    }

    #[tokio::test]
    async fn a_burst_of_long_auth_failures_is_one_bounded_record_and_one_count() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        let log = AuditLog::open(&settings, Counter::default()).unwrap();
        let long_path = format!("/{}", "a".repeat(65_536));
        for port in 0..200 {
            log.record(
                Some(peer(&format!("10.0.0.7:{}", 40_000 + port))),
                auth_failure(&long_path),
            );
        }
        log.record(Some(peer("10.0.0.8:1")), auth_failure("/v2/tasks"));
        log.flush().await;
        let full = BURST_FULL_RECORDS as usize;
        assert_eq!(verify(std::slice::from_ref(&settings.path)), full + 3);
        let size = fs::metadata(&settings.path).unwrap().len();
        assert!(size < 8192, "the log grew by {size} bytes");
        let records: Vec<serde_json::Value> = lines(&settings.path)
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let events: Vec<&str> = records
            .iter()
            .map(|record| record["event"].as_str().unwrap())
            .collect();
        let mut expected = vec!["log_opened"];
        expected.extend(["auth_failure"; BURST_FULL_RECORDS as usize + 1]);
        expected.push("auth_failures_collapsed");
        assert_eq!(events, expected);
        for record in &records[1..=full] {
            let kept = record["path"].as_str().unwrap();
            assert!(kept.contains("65537 bytes, sha256 "), "{kept}");
        }
        assert_eq!(records[full + 1]["path"], "/v2/tasks");
        assert_eq!(records[full + 2]["count"], 200 - full as u64);
        assert_eq!(records[full + 2]["actor"]["peer"], "10.0.0.7");
    }

    #[test]
    fn a_burst_ends_with_its_window() {
        let mut bursts = AuthBursts::default();
        let client = peer("192.0.2.1:5000");
        let other_port = peer("192.0.2.1:5001");
        for at in 1_000..1_000 + BURST_FULL_RECORDS {
            assert_eq!(
                bursts.admit(at, Some(&client)),
                BurstDecision::Write { ended: None }
            );
        }
        assert_eq!(
            bursts.admit(1_005 + BURST_FULL_RECORDS, Some(&other_port)),
            BurstDecision::Count
        );
        assert_eq!(
            bursts.admit(1_009 + BURST_FULL_RECORDS, Some(&client)),
            BurstDecision::Count
        );
        assert!(bursts.drain_ended(1_000 + BURST_WINDOW_MS - 1).is_empty());
        // The next failure after the window is written, after the summary of the last burst.
        let BurstDecision::Write {
            ended: Some((actor, summary)),
        } = bursts.admit(1_000 + BURST_WINDOW_MS, Some(&client))
        else {
            panic!("the burst should have ended");
        };
        assert_eq!(actor.peer.as_deref(), Some("192.0.2.1"));
        assert_eq!(
            summary,
            AuditEvent::AuthFailuresCollapsed {
                count: 2,
                first_ts: rfc3339_utc(1_005 + BURST_FULL_RECORDS),
                last_ts: rfc3339_utc(1_009 + BURST_FULL_RECORDS),
            }
        );
        // A burst that counted nothing leaves no summary; the sweep forgets it all the same.
        assert!(bursts.drain_ended(1_000 + 2 * BURST_WINDOW_MS).is_empty());
        assert!(bursts.peers.is_empty());
    }

    #[test]
    fn a_damaged_last_line_stops_orcd_from_starting() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path());
        fs::write(&settings.path, "{\"seq\":0,\"half a line").unwrap();
        let error = Writer::open(&settings, Counter::default())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("incomplete line"), "{error}");
        fs::write(&settings.path, "{\"seq\":0}\n").unwrap();
        let error = Writer::open(&settings, Counter::default())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("damaged"), "{error}");
    }

    #[test]
    fn the_last_line_is_found_past_the_first_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        let long_line = "x".repeat(10_000);
        fs::write(&path, format!("first\n{long_line}\n")).unwrap();
        assert_eq!(last_line(&path).unwrap(), Some(long_line));
        fs::write(&path, "only\n").unwrap();
        assert_eq!(last_line(&path).unwrap(), Some("only".to_owned()));
    }

    #[test]
    fn only_orcd_rotation_names_count_as_rotated_files() {
        assert!(is_rotation_suffix("2025-01-31"));
        assert!(is_rotation_suffix("2025-01-31.2"));
        for other in ["broken", "2025-01-31.bak", "2025-1-31", "2025-01-31."] {
            assert!(!is_rotation_suffix(other), "{other}");
        }
    }
}
