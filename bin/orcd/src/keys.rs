//! Named client keys with limits, and usage by key. A line of the client token file
//! (`--api-token-file`) may follow its token with settings:
//!
//! ```text
//! 3f9c...e1  name=alice models=qwen2.5-coder-0.5b,gpt-4o-mini rpm=60 tpm=20000 jobs=2
//! ```
//!
//! `name` is what metrics, `GET /v2/usage` and logs show (never the token; without a name the
//! token's fingerprint); `models` the models (or aliases) the key may use, any without it;
//! `rpm` jobs started per minute, `tpm` tokens (prompt and completion) per minute, `jobs`
//! jobs at once. Past a limit a request gets 429 with `Retry-After`, naming the limit; a model
//! not allowed is a 403. Tokens are counted when a job ends, so the job that crosses `tpm`
//! finishes and the next one waits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use llorch_api::usage::{UsageRow, UsageTotals};
use llorch_api::StreamEvent;
use tokio::sync::mpsc;

use crate::dispatch::JobItem;
use crate::metrics::Metrics;

/// The window of `rpm` and `tpm`.
const MINUTE: Duration = Duration::from_secs(60);
/// Longest key name.
const MAX_NAME_LEN: usize = 64;

/// What one client key may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicy {
    pub name: String,
    /// `None`: every model.
    pub models: Option<Vec<String>>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub concurrent_jobs: Option<u32>,
}

/// One line of the client token file: the token and its policy (named after the token's
/// fingerprint unless it says `name=`).
pub fn parse_key_line(line: &str) -> anyhow::Result<(String, KeyPolicy)> {
    let mut fields = line.split_whitespace();
    let token = fields
        .next()
        .context("an empty line holds no token")?
        .to_owned();
    let fingerprint = llorch_api::secret::fingerprint(&token);
    let mut policy = KeyPolicy {
        name: fingerprint.clone(),
        ..KeyPolicy::default()
    };
    for field in fields {
        let (setting, value) = field.split_once('=').with_context(|| {
            format!("key {fingerprint}: `{field}` is not `setting=value` (settings: name, models, rpm, tpm, jobs)")
        })?;
        let number = || -> anyhow::Result<Option<u32>> {
            match value.parse::<u32>() {
                Ok(0) | Err(_) => bail!(
                    "key {fingerprint}: `{setting}` must be a whole number of at least 1, got `{value}`"
                ),
                Ok(number) => Ok(Some(number)),
            }
        };
        match setting {
            "name" => {
                let valid = !value.is_empty()
                    && value.len() <= MAX_NAME_LEN
                    && (value.chars()).all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
                if !valid {
                    bail!("key {fingerprint}: `name` must be 1 to {MAX_NAME_LEN} letters, digits, `.`, `_` or `-`, got `{value}`");
                }
                policy.name = value.to_owned();
            }
            "models" => {
                let models: Vec<String> = (value.split(','))
                    .filter(|model| !model.is_empty())
                    .map(str::to_owned)
                    .collect();
                if models.is_empty() {
                    bail!("key {fingerprint}: `models` lists no model");
                }
                policy.models = Some(models);
            }
            "rpm" => policy.requests_per_minute = number()?,
            "tpm" => policy.tokens_per_minute = number()?,
            "jobs" => policy.concurrent_jobs = number()?,
            _ => bail!(
                "key {fingerprint}: unknown setting `{setting}` (settings: name, models, rpm, tpm, jobs)"
            ),
        }
    }
    Ok((token, policy))
}

impl KeyPolicy {
    /// Whether the key may use `model`, asked for as `requested` (an alias or the model).
    pub fn allows_model(&self, requested: &str, model: &str) -> bool {
        match &self.models {
            None => true,
            Some(models) => models
                .iter()
                .any(|allowed| allowed == requested || allowed == model),
        }
    }
}

/// Which limit a request hit, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHit {
    /// `requests per minute`, `tokens per minute` or `concurrent jobs`.
    pub limit: &'static str,
    pub value: u32,
    pub retry_after_secs: u64,
}

/// The recent use of one key.
#[derive(Debug, Default)]
struct KeyUse {
    /// When each job of the last minute started.
    starts: VecDeque<Instant>,
    /// Tokens of each job that ended in the last minute.
    tokens: VecDeque<(Instant, u32)>,
    running: u32,
}

impl KeyUse {
    fn forget_before(&mut self, now: Instant) {
        while self
            .starts
            .front()
            .is_some_and(|&at| now.duration_since(at) >= MINUTE)
        {
            self.starts.pop_front();
        }
        while (self.tokens.front()).is_some_and(|&(at, _)| now.duration_since(at) >= MINUTE) {
            self.tokens.pop_front();
        }
    }
}

/// Seconds until `at` is a minute old, at least 1.
fn until_a_minute_after(at: Instant, now: Instant) -> u64 {
    let left = MINUTE.saturating_sub(now.duration_since(at));
    left.as_secs_f64().ceil().max(1.0) as u64
}

/// Limits in force and usage so far, shared by every request; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct KeyLedger {
    inner: Arc<Mutex<Ledger>>,
}

#[derive(Debug, Default)]
struct Ledger {
    recent: HashMap<String, KeyUse>,
    /// (day, key, model) → totals since orcd started.
    usage: BTreeMap<(String, String, String), UsageTotals>,
}

/// A job counted against its key's concurrency; released when dropped.
#[derive(Debug)]
pub struct JobPermit {
    ledger: KeyLedger,
    key: String,
}

impl Drop for JobPermit {
    fn drop(&mut self) {
        let mut ledger = self.ledger.lock();
        if let Some(recent) = ledger.recent.get_mut(&self.key) {
            recent.running = recent.running.saturating_sub(1);
        }
    }
}

impl KeyLedger {
    /// Admits a job of `policy`'s key at `now`, or says which limit it hit.
    pub fn admit(&self, policy: &KeyPolicy, now: Instant) -> Result<JobPermit, LimitHit> {
        let mut ledger = self.lock();
        let recent = ledger.recent.entry(policy.name.clone()).or_default();
        recent.forget_before(now);
        if let Some(limit) = policy
            .concurrent_jobs
            .filter(|&limit| recent.running >= limit)
        {
            return Err(LimitHit {
                limit: "concurrent jobs",
                value: limit,
                retry_after_secs: 1,
            });
        }
        if let Some(limit) =
            (policy.requests_per_minute).filter(|&limit| recent.starts.len() >= limit as usize)
        {
            let oldest = recent.starts[recent.starts.len() - limit as usize];
            return Err(LimitHit {
                limit: "requests per minute",
                value: limit,
                retry_after_secs: until_a_minute_after(oldest, now),
            });
        }
        if let Some(limit) = policy.tokens_per_minute {
            let used: u64 = recent
                .tokens
                .iter()
                .map(|&(_, tokens)| u64::from(tokens))
                .sum();
            if used >= u64::from(limit) {
                // Wait until enough of the minute's tokens have aged out.
                let mut left = used;
                let mut until = now;
                for &(at, tokens) in &recent.tokens {
                    left -= u64::from(tokens);
                    until = at;
                    if left < u64::from(limit) {
                        break;
                    }
                }
                return Err(LimitHit {
                    limit: "tokens per minute",
                    value: limit,
                    retry_after_secs: until_a_minute_after(until, now),
                });
            }
        }
        recent.starts.push_back(now);
        recent.running += 1;
        drop(ledger);
        Ok(JobPermit {
            ledger: self.clone(),
            key: policy.name.clone(),
        })
    }

    /// Counts a finished job's tokens for `key`'s `tpm` and usage on `day`.
    pub fn record(&self, key: &str, model: &str, day: String, prompt: u32, completion: u32) {
        let mut ledger = self.lock();
        (ledger.recent.entry(key.to_owned()).or_default().tokens)
            .push_back((Instant::now(), prompt.saturating_add(completion)));
        let totals = (ledger.usage)
            .entry((day, key.to_owned(), model.to_owned()))
            .or_default();
        totals.requests += 1;
        totals.prompt_tokens += u64::from(prompt);
        totals.completion_tokens += u64::from(completion);
    }

    /// Usage by day, key and model, from `since` (a `YYYY-MM-DD` day) on.
    pub fn usage(&self, since: Option<&str>) -> Vec<UsageRow> {
        let ledger = self.lock();
        (ledger.usage.iter())
            .filter(|((day, _, _), _)| since.is_none_or(|since| day.as_str() >= since))
            .map(|((day, key, model), totals)| UsageRow {
                day: day.clone(),
                key: key.clone(),
                model: model.clone(),
                totals: *totals,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // Every change is one step; a panic elsewhere leaves the ledger consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Whom a job's usage is counted for, and its place among the key's concurrent jobs.
#[derive(Debug)]
pub struct KeyAccount {
    /// The key's name, an operator token's fingerprint, or `anonymous` without authentication.
    pub key: String,
    pub permit: Option<JobPermit>,
}

/// The UTC day of now, `YYYY-MM-DD`.
fn utc_day() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now[..10].to_owned()
}

/// Relays a job's items to its client and counts the job's tokens for its key when it ends;
/// the key's concurrency permit is held until then. A client that goes away drops the relay's
/// receiver, and the relay drops the job's, which cancels the job as before.
pub fn count_usage(
    mut items: mpsc::Receiver<JobItem>,
    account: KeyAccount,
    model: String,
    ledger: KeyLedger,
    metrics: Arc<Metrics>,
) -> mpsc::Receiver<JobItem> {
    let (sender, receiver) = mpsc::channel(RELAY_BUFFER);
    tokio::spawn(async move {
        let _permit = account.permit;
        loop {
            let item = tokio::select! {
                item = items.recv() => item,
                () = sender.closed() => None,
            };
            let Some(item) = item else {
                break;
            };
            if let Ok(StreamEvent::Done(stats)) = &item {
                let (prompt, completion) = (stats.prompt_tokens, stats.generated_tokens);
                ledger.record(&account.key, &model, utc_day(), prompt, completion);
                metrics.client_usage(&account.key, &model, prompt, completion);
            }
            if sender.send(item).await.is_err() {
                break;
            }
        }
    });
    receiver
}

/// Items the relay holds for a slow client, beyond what the job's own channel holds.
const RELAY_BUFFER: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(line: &str) -> KeyPolicy {
        parse_key_line(line).unwrap().1
    }

    #[test]
    fn a_key_line_carries_a_name_models_and_limits() {
        let (token, policy) =
            parse_key_line("tok-0123456789abcdef name=alice models=a,b rpm=60 tpm=500 jobs=2")
                .unwrap();
        assert_eq!(token, "tok-0123456789abcdef");
        assert_eq!(
            policy,
            KeyPolicy {
                name: "alice".into(),
                models: Some(vec!["a".into(), "b".into()]),
                requests_per_minute: Some(60),
                tokens_per_minute: Some(500),
                concurrent_jobs: Some(2),
            }
        );
        assert!(policy.allows_model("a", "a"));
        assert!(policy.allows_model("b", "real-model"), "an allowed alias");
        assert!(!policy.allows_model("c", "c"));
        let bare = self::policy("tok-0123456789abcdef");
        assert!(bare.name.starts_with("sha256:"), "{bare:?}");
        assert!(bare.allows_model("anything", "anything"));
    }

    #[test]
    fn bad_settings_are_refused_without_showing_the_token() {
        for line in [
            "tok-0123456789abcdef rpm=0",
            "tok-0123456789abcdef rpm=x",
            "tok-0123456789abcdef colour=red",
            "tok-0123456789abcdef name=a/b",
            "tok-0123456789abcdef models=",
            "tok-0123456789abcdef justaword",
        ] {
            let error = format!("{:#}", parse_key_line(line).unwrap_err());
            assert!(!error.contains("tok-0123456789abcdef"), "{error}");
        }
    }

    #[test]
    fn requests_per_minute_refuse_until_the_oldest_is_a_minute_old() {
        let ledger = KeyLedger::default();
        let policy = policy("tok-0123456789abcdef name=k rpm=2");
        let start = Instant::now();
        drop(ledger.admit(&policy, start).unwrap());
        drop(
            ledger
                .admit(&policy, start + Duration::from_secs(10))
                .unwrap(),
        );
        let hit = ledger
            .admit(&policy, start + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(
            (hit.limit, hit.value, hit.retry_after_secs),
            ("requests per minute", 2, 40)
        );
        assert!(ledger
            .admit(&policy, start + Duration::from_secs(61))
            .is_ok());
    }

    #[test]
    fn concurrent_jobs_are_released_when_their_permit_drops() {
        let ledger = KeyLedger::default();
        let policy = policy("tok-0123456789abcdef name=k jobs=1");
        let now = Instant::now();
        let first = ledger.admit(&policy, now).unwrap();
        assert_eq!(
            ledger.admit(&policy, now).unwrap_err().limit,
            "concurrent jobs"
        );
        drop(first);
        assert!(ledger.admit(&policy, now).is_ok());
    }

    #[test]
    fn tokens_per_minute_count_finished_jobs_and_usage_adds_up_by_day_key_and_model() {
        let ledger = KeyLedger::default();
        let policy = policy("tok-0123456789abcdef name=k tpm=100");
        ledger.record("k", "m", "2026-12-05".into(), 1, 1);
        ledger.record("k", "m", "2026-12-06".into(), 60, 50);
        ledger.record("k", "m", "2026-12-06".into(), 5, 5);
        let hit = ledger.admit(&policy, Instant::now()).unwrap_err();
        assert_eq!(hit.limit, "tokens per minute");
        assert!((1..=60).contains(&hit.retry_after_secs), "{hit:?}");
        let usage = ledger.usage(Some("2026-12-06"));
        assert_eq!(usage.len(), 1);
        assert_eq!(
            usage[0].totals,
            UsageTotals {
                requests: 2,
                prompt_tokens: 65,
                completion_tokens: 55
            }
        );
        assert_eq!(ledger.usage(None).len(), 2);
    }
}
