//! orcd's command line: every flag has an `LLORCH_*` environment equivalent. `Args` is parsed
//! once in `main` and turned into the [`Settings`] the library runs with.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::scheduler::SchedulerConfig;
use crate::validation::TaskLimits;

const AFTER_HELP: &str = "\
Examples:
  orcd                                   # listen on 127.0.0.1:8080
  orcd --listen 0.0.0.0:8080 --queue-limit 64
  LLORCH_ORCD_LISTEN=127.0.0.1:0 orcd    # OS-chosen port, printed on stdout

Workers register with `POST /workers/register`; clients submit with `POST /v2/tasks`.";

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
    /// Log filter such as `info` or `orcd=debug` (default: RUST_LOG, else `info`)
    #[arg(long, env = "LLORCH_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// Everything the library needs to run, independent of how it was configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub scheduler: SchedulerConfig,
    pub limits: TaskLimits,
    /// How long connecting to a worker may take before the dispatch counts as failed.
    pub worker_connect_timeout: Duration,
    /// How long in-flight jobs may run on after a shutdown signal.
    pub drain: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            scheduler: SchedulerConfig::default(),
            limits: TaskLimits::default(),
            worker_connect_timeout: Duration::from_secs(2),
            drain: Duration::from_secs(5),
        }
    }
}

impl Args {
    pub fn settings(&self) -> Settings {
        let defaults = Settings::default();
        Settings {
            scheduler: SchedulerConfig {
                heartbeat_timeout: Duration::from_secs(self.heartbeat_timeout_secs),
                queue_limit: self.queue_limit,
                recent_jobs: self.recent_jobs,
                dispatch_attempts: self.dispatch_attempts,
                ..defaults.scheduler
            },
            limits: TaskLimits {
                max_tokens: self.max_tokens_limit,
                max_prompt_bytes: self.max_prompt_bytes,
            },
            drain: Duration::from_secs(self.drain_secs),
            ..defaults
        }
    }
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
        assert_eq!(args.settings(), Settings::default());
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
        ])
        .unwrap();
        let settings = args.settings();
        assert_eq!(args.listen.port(), 0);
        assert_eq!(settings.scheduler.heartbeat_timeout, Duration::from_secs(3));
        assert_eq!(settings.scheduler.queue_limit, 5);
        assert_eq!(settings.limits.max_tokens, 64);
        assert!(Args::try_parse_from(["orcd", "--heartbeat-timeout-secs", "0"]).is_err());
    }
}
