//! The audit log's format: the events orcd records and the hash chain that makes tampering
//! visible. orcd writes it (`orcd --audit-log`), `cargo xtask audit verify` checks it; both use
//! this module so the two can never disagree about how a line is hashed.
//!
//! A log is JSON lines. Each line is one [`AuditRecord`] followed by a `hash` field:
//!
//! ```text
//! {"seq":7,"ts":"2025-05-01T12:00:00.000Z","event":"task_submitted",...,"prev_hash":"<hex>","hash":"<hex>"}
//! ```
//!
//! `hash` is the SHA-256 of the line as it was before `hash` was appended (the same text with
//! `}` instead of `,"hash":"…"}`), so changing any byte of a line changes its hash; `prev_hash`
//! is the previous line's `hash` (the first line of a log carries [`GENESIS_HASH`]), so removing,
//! inserting or reordering lines breaks the chain. A rotated log continues the chain: the first
//! line of the new file carries the last hash of the old one, and `seq` keeps counting.
//!
//! Without a secret, whoever can write the file can also recompute every hash after the line
//! they changed; keeping a copy of a recent `hash` elsewhere is what pins the history.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Backend, FinishReason};

/// The `prev_hash` of the very first line: SHA-256 of `llama-orch audit log v1`.
pub const GENESIS_HASH: &str = "587bf4e098561859aca47435b1998393e7697c6cfcbb85a434199185dcba618d";

/// Longest text a record keeps whole, in bytes; longer text is kept as a prefix, its length
/// and its SHA-256 ([`bounded_text`]), so a client cannot make one record large.
pub const MAX_FIELD_BYTES: usize = 256;
/// How much of an over-long field is kept, in bytes (less at a character boundary).
const KEPT_PREFIX_BYTES: usize = 64;

/// Length of the `,"hash":"<64 hex>"}` suffix that sealing appends.
const SEAL_SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;

/// Who caused an event, as far as orcd can tell without keeping secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Short SHA-256 fingerprint of the bearer token used, never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The TCP peer address of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// What happened. Prompts never appear: a task records its size and SHA-256 only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// orcd opened the log (a start or a restart).
    LogOpened {
        version: String,
        eu_mode: bool,
    },
    TaskSubmitted {
        job_id: String,
        model: String,
        /// The alias the client named (`[aliases]` of orcd's `--config`), resolved to `model`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested_model: Option<String>,
        /// `v2` (`/v2/tasks`), `chat` or `completions` (the OpenAI-compatible API),
        /// `responses` (OpenAI's Responses API) or `messages` (Anthropic's Messages API).
        api: String,
        prompt_bytes: u64,
        /// SHA-256 of the prompt, or of the messages as compact JSON.
        prompt_sha256: String,
        max_tokens: u32,
        stream: bool,
    },
    TaskFinished {
        job_id: String,
        model: String,
        worker_id: Option<String>,
        finish_reason: FinishReason,
        prompt_tokens: u32,
        generated_tokens: u32,
        duration_ms: f64,
    },
    /// A client asked to cancel a job (`DELETE /v2/tasks/{id}`); the actor says who.
    CancelRequested {
        job_id: String,
        previous_state: crate::JobState,
    },
    TaskCancelled {
        job_id: String,
        model: String,
        worker_id: Option<String>,
        generated_tokens: u32,
        duration_ms: f64,
    },
    TaskFailed {
        job_id: String,
        model: String,
        worker_id: Option<String>,
        error: String,
        generated_tokens: u32,
        duration_ms: f64,
    },
    WorkerRegistered {
        worker_id: String,
        url: String,
        model: String,
        backend: Backend,
        slots: u32,
    },
    WorkerRemoved {
        worker_id: String,
        reason: String,
    },
    /// A placement decision of orcd: `action` is `model_downloading`, `model_downloaded`,
    /// `model_loading`, `model_loaded`, `model_unloaded` or `load_failed` (the `/v2/events`
    /// event of the same name).
    ModelPlacement {
        action: String,
        model: String,
        host_id: Option<String>,
        worker_id: Option<String>,
        /// The unload reason (`idle`, `evicted`, `scaled_in`) or why a load failed.
        reason: Option<String>,
    },
    /// A request without valid credentials, or with credentials of the wrong kind.
    AuthFailure {
        method: String,
        path: String,
        status: u16,
        reason: String,
    },
    /// `count` more auth failures from the actor's peer address, between `first_ts` and
    /// `last_ts`, that were counted instead of written one by one (the first failure of a
    /// burst is written in full just before).
    AuthFailuresCollapsed {
        count: u64,
        first_ts: String,
        last_ts: String,
    },
}

impl AuditEvent {
    /// The event with every text field bounded by [`bounded_text`]. Walks the serialized form,
    /// so a field added later is bounded without anyone remembering to.
    pub fn bounded(self) -> AuditEvent {
        fn bound(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::String(text) if text.len() > MAX_FIELD_BYTES => {
                    *text = bounded_text(text);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(bound),
                serde_json::Value::Object(fields) => fields.values_mut().for_each(bound),
                _ => {}
            }
        }
        let mut value = serde_json::to_value(&self).expect("audit events always serialize");
        bound(&mut value);
        // Only long free text changes, which every variant holds as `String`; should a field
        // ever refuse the shortened text, the event is kept as it was.
        serde_json::from_value(value).unwrap_or(self)
    }
}

/// `text` as an audit record keeps it: whole up to [`MAX_FIELD_BYTES`], otherwise its first
/// bytes, its length and its SHA-256, e.g. `/aaaa… [65536 bytes, sha256 0f3a…]`.
pub fn bounded_text(text: &str) -> String {
    if text.len() <= MAX_FIELD_BYTES {
        return text.to_owned();
    }
    let mut cut = KEPT_PREFIX_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… [{} bytes, sha256 {}]",
        &text[..cut],
        text.len(),
        sha256_hex(text.as_bytes())
    )
}

/// One line of the log before it is sealed with its own hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 0 at the genesis line; continues across rotated files.
    pub seq: u64,
    /// RFC 3339 UTC time of the event, in milliseconds.
    pub ts: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    pub prev_hash: String,
}

impl AuditRecord {
    /// The line to append (without the newline) and its hash, which the next record carries.
    pub fn seal(&self) -> (String, String) {
        let unsealed = serde_json::to_string(self).expect("audit records always serialize");
        seal_json_object(&unsealed)
    }
}

/// Appends `"hash"` to a compact JSON object: its value is the SHA-256 of the object as given.
pub fn seal_json_object(unsealed: &str) -> (String, String) {
    debug_assert!(unsealed.ends_with('}'), "not a JSON object: {unsealed}");
    let hash = sha256_hex(unsealed.as_bytes());
    let mut line = String::with_capacity(unsealed.len() + SEAL_SUFFIX_LEN);
    line.push_str(&unsealed[..unsealed.len() - 1]);
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The chain fields of one sealed line whose own hash is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedLine {
    pub seq: u64,
    pub ts: String,
    pub event: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Why a line does not belong in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Not a sealed JSON line at all (cut short, hand-edited, not a log).
    Malformed(String),
    /// The line's content does not match its own `hash`: it was changed after it was written.
    Altered { recorded: String, actual: String },
    /// `prev_hash` is not the hash of the line before: lines were removed, inserted or reordered.
    Unlinked { expected: String, found: String },
    /// `seq` does not follow the previous line's.
    Sequence { expected: u64, found: u64 },
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainBreak::Malformed(why) => write!(f, "not a sealed audit line: {why}"),
            ChainBreak::Altered { recorded, actual } => write!(
                f,
                "the line was changed after it was written: its content hashes to {actual}, its `hash` says {recorded}"
            ),
            ChainBreak::Unlinked { expected, found } => write!(
                f,
                "`prev_hash` is {found} but the previous line's hash is {expected}: lines were removed, inserted or reordered before it"
            ),
            ChainBreak::Sequence { expected, found } => write!(
                f,
                "`seq` is {found}, expected {expected}: lines are missing or repeated before it"
            ),
        }
    }
}

/// Checks one line's own hash and reads its chain fields; does not look at its neighbours.
pub fn parse_sealed_line(line: &str) -> Result<SealedLine, ChainBreak> {
    #[derive(Deserialize)]
    struct Fields {
        seq: u64,
        ts: String,
        event: String,
        prev_hash: String,
        hash: String,
    }
    let fields: Fields =
        serde_json::from_str(line).map_err(|error| ChainBreak::Malformed(error.to_string()))?;
    let body_len = line
        .len()
        .checked_sub(SEAL_SUFFIX_LEN)
        .ok_or_else(|| ChainBreak::Malformed("too short to carry a `hash` field".to_owned()))?;
    let suffix = &line[body_len..];
    if !suffix.starts_with(",\"hash\":\"") || !suffix.ends_with("\"}") {
        return Err(ChainBreak::Malformed(
            "`hash` must be the last field, written as `,\"hash\":\"<64 hex digits>\"}`".to_owned(),
        ));
    }
    let mut unsealed = String::with_capacity(body_len + 1);
    unsealed.push_str(&line[..body_len]);
    unsealed.push('}');
    let actual = sha256_hex(unsealed.as_bytes());
    if actual != fields.hash {
        return Err(ChainBreak::Altered {
            recorded: fields.hash,
            actual,
        });
    }
    Ok(SealedLine {
        seq: fields.seq,
        ts: fields.ts,
        event: fields.event,
        prev_hash: fields.prev_hash,
        hash: fields.hash,
    })
}

/// Walks a chain line by line, across files, and says where it first breaks.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    /// `(seq, hash)` of the last good line; `None` before the first.
    last: Option<(u64, String)>,
    /// Accept a first line that does not start at genesis (a log whose older files are gone).
    partial: bool,
}

impl ChainVerifier {
    /// A verifier that expects the chain to start at genesis (`seq` 0, [`GENESIS_HASH`]).
    pub fn from_genesis() -> Self {
        ChainVerifier {
            last: None,
            partial: false,
        }
    }

    /// A verifier that takes the first line's `seq` and `prev_hash` on trust.
    pub fn from_anywhere() -> Self {
        ChainVerifier {
            last: None,
            partial: true,
        }
    }

    /// Checks the next line of the chain.
    pub fn check(&mut self, line: &str) -> Result<SealedLine, ChainBreak> {
        let sealed = parse_sealed_line(line)?;
        let (expected_seq, expected_prev) = match &self.last {
            Some((seq, hash)) => (seq + 1, hash.as_str()),
            None if self.partial => (sealed.seq, sealed.prev_hash.as_str()),
            None => (0, GENESIS_HASH),
        };
        if sealed.prev_hash != expected_prev {
            return Err(ChainBreak::Unlinked {
                expected: expected_prev.to_owned(),
                found: sealed.prev_hash,
            });
        }
        if sealed.seq != expected_seq {
            return Err(ChainBreak::Sequence {
                expected: expected_seq,
                found: sealed.seq,
            });
        }
        self.last = Some((sealed.seq, sealed.hash.clone()));
        Ok(sealed)
    }

    /// `(seq, hash)` of the last line that passed.
    pub fn last(&self) -> Option<(u64, &str)> {
        self.last.as_ref().map(|(seq, hash)| (*seq, hash.as_str()))
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2025-05-01T12:00:00.000Z`.
pub fn rfc3339_utc(unix_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// The UTC calendar day, e.g. `2025-05-01`: what daily rotation names files after.
pub fn utc_day(unix_ms: u64) -> String {
    rfc3339_utc(unix_ms)[..10].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, prev_hash: &str) -> AuditRecord {
        AuditRecord {
            seq,
            ts: rfc3339_utc(1_700_000_000_000 + seq),
            event: AuditEvent::WorkerRemoved {
                worker_id: format!("w{seq}"),
                reason: "deregistered".into(),
            },
            actor: Some(Actor {
                token: Some("sha256:0123456789ab".into()),
                peer: Some("127.0.0.1:5000".into()),
            }),
            prev_hash: prev_hash.to_owned(),
        }
    }

    fn chain(len: u64) -> Vec<String> {
        let mut prev = GENESIS_HASH.to_owned();
        (0..len)
            .map(|seq| {
                let (line, hash) = record(seq, &prev).seal();
                prev = hash;
                line
            })
            .collect()
    }

    fn verify(lines: &[String]) -> Result<(), (usize, ChainBreak)> {
        let mut verifier = ChainVerifier::from_genesis();
        for (index, line) in lines.iter().enumerate() {
            verifier.check(line).map_err(|error| (index, error))?;
        }
        Ok(())
    }

    #[test]
    fn genesis_is_the_hash_of_the_documented_phrase() {
        assert_eq!(GENESIS_HASH, sha256_hex(b"llama-orch audit log v1"));
    }

    #[test]
    fn a_sealed_line_is_json_with_the_hash_last_and_round_trips() {
        let (line, hash) = record(0, GENESIS_HASH).seal();
        assert!(line.ends_with(&format!(",\"hash\":\"{hash}\"}}")), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "worker_removed");
        assert_eq!(value["hash"], hash.as_str());
        let parsed: AuditRecord = serde_json::from_value(value).unwrap();
        assert_eq!(parsed, record(0, GENESIS_HASH));
        let sealed = parse_sealed_line(&line).unwrap();
        assert_eq!((sealed.seq, sealed.hash), (0, hash));
    }

    #[test]
    fn an_intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(()));
    }

    #[test]
    fn changing_a_line_names_that_line() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("\"w2\"", "\"w9\"");
        let (index, error) = verify(&lines).unwrap_err();
        assert_eq!(index, 2);
        assert!(matches!(error, ChainBreak::Altered { .. }), "{error}");
    }

    #[test]
    fn changing_the_last_line_is_caught_too() {
        let mut lines = chain(3);
        lines[2] = lines[2].replace("deregistered", "expired");
        assert_eq!(verify(&lines).unwrap_err().0, 2);
    }

    #[test]
    fn removing_or_reordering_lines_breaks_the_link() {
        let mut removed = chain(5);
        removed.remove(2);
        let (index, error) = verify(&removed).unwrap_err();
        assert_eq!(index, 2);
        assert!(matches!(error, ChainBreak::Unlinked { .. }), "{error}");

        let mut swapped = chain(5);
        swapped.swap(1, 3);
        assert_eq!(verify(&swapped).unwrap_err().0, 1);
    }

    #[test]
    fn a_cut_line_is_malformed() {
        let mut lines = chain(2);
        let half = lines[1].len() / 2;
        lines[1].truncate(half);
        assert!(matches!(
            verify(&lines).unwrap_err(),
            (1, ChainBreak::Malformed(_))
        ));
    }

    #[test]
    fn a_chain_without_its_start_needs_a_partial_verifier() {
        let lines = chain(4);
        assert!(matches!(
            verify(&lines[2..]).unwrap_err(),
            (0, ChainBreak::Unlinked { .. })
        ));
        let mut verifier = ChainVerifier::from_anywhere();
        for line in &lines[2..] {
            verifier.check(line).unwrap();
        }
        assert_eq!(verifier.last().unwrap().0, 3);
    }

    #[test]
    fn long_fields_keep_a_prefix_their_length_and_hash() {
        let path = format!("/v2/{}", "é".repeat(40_000));
        let event = AuditEvent::AuthFailure {
            method: "GET".into(),
            path: path.clone(),
            status: 401,
            reason: "missing token".into(),
        }
        .bounded();
        let AuditEvent::AuthFailure {
            method,
            path: kept,
            reason,
            ..
        } = &event
        else {
            panic!("variant changed: {event:?}");
        };
        assert_eq!((method.as_str(), reason.as_str()), ("GET", "missing token"));
        assert!(kept.len() < MAX_FIELD_BYTES, "{} bytes kept", kept.len());
        assert!(kept.starts_with("/v2/é"), "{kept}");
        assert!(
            kept.ends_with(&format!(
                "… [{} bytes, sha256 {}]",
                path.len(),
                sha256_hex(path.as_bytes())
            )),
            "{kept}"
        );
        let record = AuditRecord {
            seq: 0,
            ts: rfc3339_utc(0),
            event,
            actor: None,
            prev_hash: GENESIS_HASH.into(),
        };
        assert!(record.seal().0.len() < 1024);
        // Short text stays exactly as it was.
        assert_eq!(bounded_text("/v2/tasks"), "/v2/tasks");
        assert_eq!(
            bounded_text(&"x".repeat(MAX_FIELD_BYTES)).len(),
            MAX_FIELD_BYTES
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_utc(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(utc_day(1_735_689_600_000), "2025-01-01");
    }
}
