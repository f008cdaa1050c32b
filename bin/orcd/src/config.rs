//! orcd's command line: every flag has an `LLORCH_*` environment equivalent. `Args` is parsed
//! once in `main` and turned into the [`Settings`] the library runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Parser;
use llorch_serve::{AllowedHosts, ConnectionArgs, ConnectionLimits, HostArgs};

use crate::aliases::ModelAliases;
use crate::audit::AuditSettings;
use crate::auth::AuthConfig;
use crate::scheduler::{Routing, SchedulerConfig};
use crate::validation::RequestLimits;

const AFTER_HELP: &str = "\
Examples:
  orcd                                   # listen on 127.0.0.1:8080
  orcd --listen 127.0.0.1:8080 --queue-limit 64
  LLORCH_ORCD_LISTEN=127.0.0.1:0 orcd    # OS-chosen port, printed on stdout
  orcd --listen 0.0.0.0:8080 --api-token-file /etc/llorch/api.token \\
       --worker-token-file /etc/llorch/worker.token --audit-log /var/log/llorch/audit.jsonl
  orcd --cors-origin https://chat.example.com   # a browser chat UI on that origin may call /v1
  orcd --model-policies /etc/llorch/models.toml --load-timeout-secs 60   # models on demand
  orcd --config /etc/llorch/orcd.toml   # [aliases]: other names for served models

Workers register with `POST /workers/register`; clients submit with `POST /v2/tasks` or the
OpenAI-compatible `/v1/chat/completions` and `/v1/completions`. Running across hosts with
tokens: deploy/README.md.";

/// orcd: the llama-orch orchestrator. Workers register here; tasks are queued, sent to a worker
/// with a free slot and streamed back over SSE.
#[derive(Debug, Clone, Parser)]
#[command(name = "orcd", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Address to listen on; port 0 lets the OS pick one (the bound address is printed on stdout)
    #[arg(
        long,
        env = "LLORCH_ORCD_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,
    /// Seconds without a heartbeat after which a worker is marked dead and gets no jobs
    #[arg(
        long,
        env = "LLORCH_HEARTBEAT_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECS"
    )]
    pub heartbeat_timeout_secs: u64,
    /// Seconds a dead worker's record stays in `GET /workers` (for a look or a restart) before
    /// orcd drops it, with an audit record
    #[arg(
        long,
        env = "LLORCH_DEAD_WORKER_RETENTION_SECS",
        default_value_t = crate::scheduler::DEFAULT_DEAD_WORKER_RETENTION.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECS"
    )]
    pub dead_worker_retention_secs: u64,
    /// Jobs that may wait per model; beyond this new tasks get 429 with Retry-After
    #[arg(
        long,
        env = "LLORCH_QUEUE_LIMIT",
        default_value_t = 32,
        value_name = "JOBS"
    )]
    pub queue_limit: usize,
    /// Finished jobs remembered for `GET /v2/tasks`
    #[arg(
        long,
        env = "LLORCH_RECENT_JOBS",
        default_value_t = 256,
        value_name = "JOBS"
    )]
    pub recent_jobs: usize,
    /// Dispatch attempts per job when workers fail before the first token
    #[arg(
        long,
        env = "LLORCH_DISPATCH_ATTEMPTS",
        default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(1..=10),
        value_name = "N"
    )]
    pub dispatch_attempts: u32,
    /// How a job picks among workers with a free slot: `prefix` (the one it sent the longest
    /// prefix of this prompt before, whose KV cache likely still holds it, unless that one is
    /// loaded unevenly) or `least-loaded`
    #[arg(long, env = "LLORCH_ROUTING", default_value = "prefix", value_name = "POLICY",
          value_parser = ["prefix", "least-loaded"])]
    pub routing: String,
    /// Largest `max_tokens` a task may ask for
    #[arg(
        long,
        env = "LLORCH_MAX_TOKENS_LIMIT",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..),
        value_name = "TOKENS"
    )]
    pub max_tokens_limit: u32,
    /// Largest prompt, or sum of message contents, in bytes
    #[arg(long, env = "LLORCH_MAX_PROMPT_BYTES", default_value_t = 256 * 1024, value_name = "BYTES")]
    pub max_prompt_bytes: usize,
    /// Seconds in-flight jobs get to finish after SIGTERM or ctrl-c before they are ended
    #[arg(
        long,
        env = "LLORCH_DRAIN_SECS",
        default_value_t = 5,
        value_name = "SECS"
    )]
    pub drain_secs: u64,
    /// Seconds a worker may send nothing mid-stream (its SSE keep-alive comes every 15 s) before
    /// orcd treats it as hung: retried elsewhere before the first token, an `error` event after
    #[arg(
        long,
        env = "LLORCH_WORKER_SILENCE_SECS",
        value_name = "SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub worker_silence_secs: u64,
    /// Log filter such as `info` or `orcd=debug` (default: RUST_LOG, else `info`)
    #[arg(long, env = "LLORCH_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// File of client API tokens, one per line (mode 600); clients send one as `Authorization: Bearer`
    #[arg(long, env = "LLORCH_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// File of worker tokens, one per line (mode 600): workers register with one, orcd sends the first to workers
    #[arg(long, env = "LLORCH_WORKER_TOKEN_FILE", value_name = "FILE")]
    pub worker_token_file: Option<PathBuf>,
    /// File of operator (admin) tokens, one per line (mode 600): like a client token, but it sees
    /// and cancels every client's jobs (`cargo xtask jobs` with LLORCH_API_TOKEN_FILE pointing here)
    #[arg(long, env = "LLORCH_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Allow listening on a non-loopback address without tokens (anyone who reaches it can use it)
    #[arg(long, env = "LLORCH_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Append a hash-chained audit log (JSON lines, rotated daily) to this file
    #[arg(long, env = "LLORCH_AUDIT_LOG", value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// EU mode: turn the audit log on (default path $STATE_DIRECTORY/audit.jsonl, else
    /// ~/.local/share/llorch/audit.jsonl) and fsync every event
    #[arg(long, env = "LLORCH_EU_AUDIT")]
    pub eu_audit: bool,
    /// Let browser pages from this origin call orcd (CORS; repeatable, e.g.
    /// `https://chat.example.com`); none by default
    #[arg(
        long = "cors-origin",
        env = "LLORCH_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_origins: Vec<String>,
    /// Per-model placement policies for models loaded on demand by pool managers (TOML:
    /// `[models."ID"]` with hosts, min_replicas, max_replicas, keep_alive, slots, ctx_size,
    /// backend, pin, on_demand; see docs/pool-manager.md)
    #[arg(long, env = "LLORCH_MODEL_POLICIES", value_name = "FILE")]
    pub model_policies: Option<PathBuf>,
    /// Seconds a request waits for its model to load on a pool manager's host before it gets
    /// 503 with the reason
    #[arg(
        long,
        env = "LLORCH_LOAD_TIMEOUT_SECS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECS"
    )]
    pub load_timeout_secs: u64,
    /// orcd's configuration file (TOML): an `[aliases]` table of `"alias" = "model"` lines,
    /// other names clients may use for served models
    #[arg(long, env = "LLORCH_ORCD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    #[command(flatten)]
    pub hosts: HostArgs,
}

/// Everything the library needs to run, independent of how it was configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub scheduler: SchedulerConfig,
    pub limits: RequestLimits,
    /// How long connecting to a worker may take before the dispatch counts as failed.
    pub worker_connect_timeout: Duration,
    /// How long a worker's stream may stay silent before the worker counts as hung.
    pub worker_silence: Duration,
    /// How long in-flight jobs may run on after a shutdown signal.
    pub drain: Duration,
    /// Tokens clients and workers must present; disabled by default.
    pub auth: AuthConfig,
    /// The audit log; `None` (the default) turns it off.
    pub audit: Option<AuditSettings>,
    /// Origins browsers may call orcd from (CORS); none by default.
    pub cors_origins: Vec<HeaderValue>,
    /// Header-read and idle timeouts and the connection limits of the listener.
    pub connections: ConnectionLimits,
    /// Models loaded on demand by pool managers: policies and timeouts.
    pub pools: crate::pools::PoolSettings,
    /// Other names for served models (`[aliases]` of `--config`); none by default.
    pub aliases: ModelAliases,
    /// Host names answered besides localhost and IP addresses while there are no tokens.
    pub allowed_hosts: AllowedHosts,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            scheduler: SchedulerConfig::default(),
            limits: RequestLimits::default(),
            worker_connect_timeout: Duration::from_secs(2),
            worker_silence: Duration::from_secs(60),
            drain: Duration::from_secs(5),
            auth: AuthConfig::disabled(),
            audit: None,
            cors_origins: Vec::new(),
            connections: ConnectionLimits::default(),
            pools: crate::pools::PoolSettings::default(),
            aliases: ModelAliases::default(),
            allowed_hosts: AllowedHosts::default(),
        }
    }
}

impl Args {
    /// Resolves the flags, reading the token files.
    // Every scheduler field has a flag today; `..defaults` keeps a new field's default.
    #[allow(clippy::needless_update)]
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let defaults = Settings::default();
        let auth = AuthConfig::from_files(
            self.api_token_file.as_deref(),
            self.worker_token_file.as_deref(),
        )?
        .with_operator_file(self.admin_token_file.as_deref())?;
        Ok(Settings {
            auth,
            audit: self.audit_settings(),
            scheduler: SchedulerConfig {
                heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout_secs),
                dead_worker_retention: Duration::from_secs(self.dead_worker_retention_secs),
                queue_limit: self.queue_limit,
                recent_jobs: self.recent_jobs,
                dispatch_attempts: self.dispatch_attempts,
                routing: match self.routing.as_str() {
                    "least-loaded" => Routing::LeastLoaded,
                    _ => defaults.scheduler.routing,
                },
                ..defaults.scheduler
            },
            limits: RequestLimits {
                max_tokens: self.max_tokens_limit,
                max_prompt_bytes: self.max_prompt_bytes,
            },
            drain: Duration::from_secs(self.drain_secs),
            worker_silence: Duration::from_secs(self.worker_silence_secs),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|origin| crate::cors::parse_origin(origin))
                .collect::<anyhow::Result<_>>()?,
            connections: self.connections.limits(),
            pools: crate::pools::PoolSettings {
                policies: match &self.model_policies {
                    Some(path) => crate::pools::Policies::load(path)?,
                    None => crate::pools::Policies::default(),
                },
                load_timeout: Duration::from_secs(self.load_timeout_secs),
                // Pool managers heartbeat as often as workers and are lost as late.
                host_timeout: Duration::from_secs(self.heartbeat_timeout_secs),
            },
            aliases: match &self.config {
                Some(path) => ModelAliases::from_config_file(path)?,
                None => ModelAliases::default(),
            },
            allowed_hosts: self.hosts.allowed().map_err(anyhow::Error::msg)?,
            ..defaults
        })
    }

    fn audit_settings(&self) -> Option<AuditSettings> {
        let path = match (&self.audit_log, self.eu_audit) {
            (Some(path), _) => path.clone(),
            (None, true) => default_audit_path(),
            (None, false) => return None,
        };
        Some(AuditSettings {
            path,
            fsync_each_event: self.eu_audit,
        })
    }
}

/// systemd's `StateDirectory=` when orcd runs as a service, else the XDG data directory.
fn default_audit_path() -> PathBuf {
    audit_path_in(std::env::var_os("STATE_DIRECTORY"))
}

/// The audit log in systemd's `state_directory` (the `STATE_DIRECTORY` variable), else in the
/// XDG data directory.
fn audit_path_in(state_directory: Option<std::ffi::OsString>) -> PathBuf {
    use etcetera::BaseStrategy;
    let dir = match state_directory {
        // systemd may list several directories separated by `:`; the first is ours.
        Some(dirs) => PathBuf::from(dirs.to_string_lossy().split(':').next().unwrap_or_default()),
        None => match etcetera::choose_base_strategy() {
            Ok(strategy) => strategy.data_dir().join("llorch"),
            Err(_) => PathBuf::from("."),
        },
    };
    dir.join("audit.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_library_defaults() {
        let args = Args::try_parse_from(["orcd"]).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(args.settings().unwrap(), Settings::default());
    }

    #[test]
    fn flags_reach_the_settings() {
        let args = Args::try_parse_from([
            "orcd",
            "--listen",
            "127.0.0.1:0",
            "--heartbeat-timeout-secs",
            "3",
            "--queue-limit",
            "5",
            "--max-tokens-limit",
            "64",
            "--header-read-timeout-secs",
            "2",
            "--idle-timeout-secs",
            "7",
            "--max-connections",
            "9",
            "--routing",
            "least-loaded",
            "--dead-worker-retention-secs",
            "90",
        ])
        .unwrap();
        let settings = args.settings().unwrap();
        assert_eq!(args.listen.port(), 0);
        assert_eq!(settings.scheduler.heartbeat_timeout, Duration::from_secs(3));
        assert_eq!(settings.scheduler.queue_limit, 5);
        assert_eq!(settings.limits.max_tokens, 64);
        assert_eq!(
            settings.connections,
            ConnectionLimits {
                header_read_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(7),
                max_connections: 9,
                max_connections_per_peer: 2,
            }
        );
        assert_eq!(settings.scheduler.routing, Routing::LeastLoaded);
        assert_eq!(
            settings.scheduler.dead_worker_retention,
            Duration::from_secs(90)
        );
        assert!(Args::try_parse_from(["orcd", "--heartbeat-timeout-secs", "0"]).is_err());
        assert!(Args::try_parse_from(["orcd", "--routing", "random"]).is_err());
    }

    #[test]
    fn cors_origins_repeat_and_are_checked() {
        let args = Args::try_parse_from([
            "orcd",
            "--cors-origin",
            "https://a.example",
            "--cors-origin",
            "http://127.0.0.1:3000",
        ])
        .unwrap();
        assert_eq!(
            args.settings().unwrap().cors_origins,
            ["https://a.example", "http://127.0.0.1:3000"]
        );
        let bad = Args::try_parse_from(["orcd", "--cors-origin", "a.example/x"]).unwrap();
        assert!(bad.settings().is_err());
    }

    #[test]
    fn allowed_hosts_repeat_and_are_checked() {
        let args = Args::try_parse_from([
            "orcd",
            "--allowed-host",
            "orcd.lan",
            "--allowed-host",
            "Box",
        ])
        .unwrap();
        let allowed = args.settings().unwrap().allowed_hosts;
        assert!(allowed.permits(Some("orcd.lan:8080")) && allowed.permits(Some("box")));
        assert!(!allowed.permits(Some("rebind.example")));
        let bad = Args::try_parse_from(["orcd", "--allowed-host", "orcd.lan:8080"]).unwrap();
        let error = bad.settings().unwrap_err().to_string();
        assert!(error.contains("--allowed-host"), "{error}");
    }

    #[test]
    fn audit_is_off_unless_a_path_or_eu_mode_is_given() {
        let parse = |extra: &[&str]| {
            let args = Args::try_parse_from(["orcd"].iter().chain(extra)).unwrap();
            args.audit_settings()
        };
        assert_eq!(parse(&[]), None);
        assert_eq!(
            parse(&["--audit-log", "/tmp/a.jsonl"]),
            Some(AuditSettings {
                path: "/tmp/a.jsonl".into(),
                fsync_each_event: false
            })
        );
        let eu = parse(&["--audit-log", "/tmp/a.jsonl", "--eu-audit"]).unwrap();
        assert!(eu.fsync_each_event);
        let eu_default = parse(&["--eu-audit"]).unwrap();
        assert!(eu_default.path.ends_with("audit.jsonl"), "{eu_default:?}");
    }
}

#[cfg(test)]
mod parsing_tests;
