//! Command-line flags of `llorch-worker`; every flag can also be set through an `LLORCH_*`
//! environment variable.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use llorch_api::Backend;

use crate::engine::Speculation;

/// Serve one GGUF model over HTTP with continuous batching, and register with orcd.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llorch-worker",
    version,
    after_help = "Examples:\n  \
        llorch-worker --model gemma3-270m --port 0\n  \
        llorch-worker --model ./model.gguf --slots 8 --ctx-size 4096\n  \
        llorch-worker --model gemma3-270m --embeddings\n  \
        llorch-worker --model qwen2.5-coder-0.5b --speculative off\n  \
        llorch-worker --model gemma3-270m --orchestrator-url http://127.0.0.1:8080"
)]
pub struct WorkerArgs {
    /// Model to serve: a GGUF file, or a catalog id downloaded under the model base dir
    #[arg(long, env = "LLORCH_MODEL", value_name = "PATH|CATALOG_ID")]
    pub model: String,

    /// Directory of downloaded catalog models [default: ~/.local/share/llorch/models]
    #[arg(long, env = "LLORCH_MODEL_BASE_DIR", value_name = "DIR")]
    pub model_base_dir: Option<PathBuf>,

    /// Catalog file to resolve model ids with, instead of the built-in one
    #[arg(long, env = "LLORCH_CATALOG", value_name = "FILE")]
    pub catalog: Option<PathBuf>,

    /// Your own catalog entries (`*.toml`, as `cargo xtask models add` writes them), merged
    /// with the catalog [default: ~/.config/llorch/catalog.d]
    #[arg(long, env = "LLORCH_CATALOG_DIR", value_name = "DIR")]
    pub catalog_dir: Option<PathBuf>,

    /// Model id to register under [default: the catalog id, else the file stem]
    #[arg(long, env = "LLORCH_MODEL_ID", value_name = "ID")]
    pub model_id: Option<String>,

    /// Compute backend; cuda and metal need a binary built with that cargo feature
    #[arg(long, env = "LLORCH_BACKEND", value_name = "cpu|cuda|metal", default_value_t = default_backend())]
    pub backend: Backend,

    /// GPU index for the cuda and metal backends
    #[arg(long, env = "LLORCH_GPU", value_name = "N", default_value_t = 0)]
    pub gpu: u32,

    /// Address to listen on
    #[arg(long, env = "LLORCH_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 picks a free one and prints it
    #[arg(long, env = "LLORCH_PORT", default_value_t = 0)]
    pub port: u16,

    /// Id to register under [default: derived from host and port]
    #[arg(long, env = "LLORCH_WORKER_ID", value_name = "ID", value_parser = parse_worker_id)]
    pub worker_id: Option<String>,

    /// orcd to register with; without it the worker runs standalone
    #[arg(long, env = "LLORCH_ORCHESTRATOR_URL", value_name = "URL")]
    pub orchestrator_url: Option<String>,

    /// orcd's worker token file (mode 600): sent to orcd, and required on `POST /execute`
    #[arg(long, env = "LLORCH_WORKER_TOKEN_FILE", value_name = "FILE")]
    pub worker_token_file: Option<PathBuf>,

    /// URL orcd should use to reach this worker [default: http://HOST:PORT]
    #[arg(long, env = "LLORCH_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,

    /// Threads for single-token decode steps [default: all physical cores, fewer while other processes need the CPU]
    #[arg(long, env = "LLORCH_THREADS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: Option<u32>,

    /// Threads for steps of several tokens: prompts, several busy slots [default: --threads]
    #[arg(long, env = "LLORCH_THREADS_BATCH", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads_batch: Option<u32>,

    /// Context of each slot in tokens (prompt plus generated text)
    #[arg(long, env = "LLORCH_CTX_SIZE", value_name = "TOKENS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub ctx_size: u32,

    /// Sequences generated concurrently (one KV cache, one sequence per slot)
    #[arg(long, env = "LLORCH_SLOTS", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub slots: u32,

    /// Tokens per decode step; longer prompts are fed in chunks of this size
    #[arg(long, env = "LLORCH_BATCH_SIZE", value_name = "TOKENS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub batch_size: u32,

    /// Requests that may wait for a free slot; beyond that /execute answers 503
    #[arg(
        long,
        env = "LLORCH_QUEUE_SIZE",
        value_name = "N",
        default_value_t = 16
    )]
    pub queue_size: u32,

    /// Woken from idle, wait at most this long (and at most 1% of the prefill about to start) for requests sent together, so they share their first step; 0 turns it off
    #[arg(long, env = "LLORCH_MAX_BURST_WAIT_MS", value_name = "MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub max_burst_wait_ms: u64,

    /// Milliseconds between heartbeats to orcd; orcd may ask for less at registration (a third of its --heartbeat-timeout-secs)
    #[arg(long, env = "LLORCH_HEARTBEAT_INTERVAL_MS", value_name = "MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub heartbeat_interval_ms: u64,

    /// Seconds running jobs may take to finish after SIGTERM before they are cancelled
    #[arg(
        long,
        env = "LLORCH_DRAIN_TIMEOUT_SECS",
        value_name = "SECS",
        default_value_t = 10
    )]
    pub drain_timeout_secs: u64,

    /// Speculative decoding: `ngram` drafts tokens from the sequence's own prompt and output and verifies them in one step (the same answers, faster where the answer repeats its input, such as code edits); `off` decodes one token per step
    #[arg(long, env = "LLORCH_SPECULATIVE", value_name = "off|ngram", value_enum, default_value_t = Speculation::default())]
    pub speculative: Speculation,

    /// Also serve embeddings of the model (`POST /embed`; orcd's `/v1/embeddings`), from a llama.cpp context of their own
    #[arg(long, env = "LLORCH_EMBEDDINGS")]
    pub embeddings: bool,

    /// Most tokens one embedding request may have, all its inputs together; a larger one gets
    /// 400 (it bounds how long one request holds the embedding thread)
    #[arg(long, env = "LLORCH_MAX_EMBEDDING_TOKENS", value_name = "TOKENS",
          default_value_t = crate::embeddings::DEFAULT_MAX_REQUEST_TOKENS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_embedding_tokens: u32,

    #[command(flatten)]
    pub connections: llorch_serve::ConnectionArgs,

    #[command(flatten)]
    pub hosts: llorch_serve::HostArgs,
}

impl WorkerArgs {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn threads(&self) -> u32 {
        self.threads.unwrap_or_else(crate::engine::physical_cores)
    }

    pub fn threads_batch(&self) -> u32 {
        self.threads_batch.unwrap_or_else(|| self.threads())
    }

    /// The engine steps the thread counts with CPU contention only when neither was given.
    pub fn adapt_threads(&self) -> bool {
        self.threads.is_none() && self.threads_batch.is_none()
    }

    /// The `Host` rule's names: `--allowed-host`, and the name in `--advertise-url`, which is
    /// how orcd reaches this worker.
    pub fn allowed_hosts(&self) -> anyhow::Result<llorch_serve::AllowedHosts> {
        let mut names = self.hosts.allowed_hosts.clone();
        let advertised = self.advertise_url.as_deref().and_then(|url| {
            let url = reqwest::Url::parse(url).ok()?;
            // An IPv6 address is written in brackets, and is accepted anyway.
            url.host_str()
                .filter(|host| !host.starts_with('['))
                .map(str::to_owned)
        });
        names.extend(advertised);
        llorch_serve::AllowedHosts::new(&names).map_err(anyhow::Error::msg)
    }

    /// Checks that `--backend` was compiled in.
    pub fn check_backend(&self) -> anyhow::Result<()> {
        let compiled = compiled_backends();
        if compiled.contains(&self.backend) {
            return Ok(());
        }
        let names: Vec<&str> = compiled.iter().map(|backend| backend.as_str()).collect();
        anyhow::bail!(
            "backend `{}` is not built into this binary (it has: {})\n\
             hint: rebuild with `cargo build --release -p llorch-worker --features {}`",
            self.backend,
            names.join(", "),
            self.backend
        )
    }
}

/// The backends this binary was built with; the CPU backend always is.
pub fn compiled_backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Cpu];
    if cfg!(feature = "cuda") {
        backends.push(Backend::Cuda);
    }
    if cfg!(feature = "metal") {
        backends.push(Backend::Metal);
    }
    backends
}

/// A binary built for a GPU uses it unless told otherwise.
fn default_backend() -> Backend {
    *compiled_backends().last().expect("cpu is always compiled")
}

/// Worker ids appear in orcd's URL paths (`/workers/{id}/heartbeat`), so they are restricted
/// to characters that need no escaping there.
fn parse_worker_id(id: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if id.is_empty() || !id.chars().all(allowed) {
        return Err(format!(
            "`{id}` is not a valid worker id: use letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(id.to_owned())
}

/// The id a worker registers under when `--worker-id` is not given, from the address it
/// listens on: unique per machine and port, and stable across restarts on the same port.
pub fn default_worker_id(host: &str, port: u16) -> String {
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("worker-{}-{port}", host.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn flags_are_consistent() {
        WorkerArgs::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_issue() {
        let args = WorkerArgs::try_parse_from(["llorch-worker", "--model", "m.gguf"]).unwrap();
        assert_eq!(args.host, "127.0.0.1");
        assert_eq!(args.slots, 4);
        assert_eq!(args.backend, default_backend());
        assert!(args.threads() >= 1);
        assert_eq!(args.threads_batch(), args.threads());
        assert_eq!(args.speculative, Speculation::Ngram);
        let off =
            WorkerArgs::try_parse_from(["llorch-worker", "--model", "m", "--speculative", "off"]);
        assert_eq!(off.unwrap().speculative, Speculation::Off);
        // Only what is built is offered: no draft-model speculation.
        let draft =
            WorkerArgs::try_parse_from(["llorch-worker", "--model", "m", "--speculative", "draft"]);
        assert!(draft.is_err());
    }

    #[test]
    fn allowed_hosts_are_the_flag_s_and_the_advertised_name() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["llorch-worker", "--model", "m.gguf"];
            argv.extend_from_slice(extra);
            WorkerArgs::try_parse_from(argv).unwrap().allowed_hosts()
        };
        let allowed = parse(&[
            "--allowed-host",
            "a.lan",
            "--advertise-url",
            "http://gpu-box:9000",
        ])
        .unwrap();
        for host in ["a.lan", "gpu-box:9000", "127.0.0.1:9000"] {
            assert!(allowed.permits(Some(host)), "{host}");
        }
        assert!(!allowed.permits(Some("rebind.example")));
        let by_address = parse(&["--advertise-url", "http://[::1]:9000"]).unwrap();
        assert!(!by_address.permits(Some("gpu-box")));
        assert!(parse(&["--allowed-host", "http://a.lan"]).is_err());
    }

    #[test]
    fn thread_counts_adapt_only_when_not_fixed() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["llorch-worker", "--model", "m.gguf"];
            argv.extend_from_slice(extra);
            WorkerArgs::try_parse_from(argv).unwrap()
        };
        let defaults = parse(&[]);
        assert!(defaults.adapt_threads());
        assert_eq!(defaults.threads(), crate::engine::physical_cores());
        let fixed = parse(&["--threads", "3"]);
        assert!(!fixed.adapt_threads());
        assert_eq!((fixed.threads(), fixed.threads_batch()), (3, 3));
        assert!(!parse(&["--threads-batch", "2"]).adapt_threads());
    }

    #[test]
    fn backend_not_compiled_in_is_a_clear_error() {
        let args =
            WorkerArgs::try_parse_from(["llorch-worker", "--model", "m.gguf", "--backend", "cuda"])
                .unwrap();
        if cfg!(feature = "cuda") {
            assert!(args.check_backend().is_ok());
        } else {
            let error = args.check_backend().unwrap_err().to_string();
            assert!(
                error.contains("backend `cuda` is not built into this binary"),
                "{error}"
            );
            assert!(error.contains("--features cuda"), "{error}");
        }
        let unknown =
            WorkerArgs::try_parse_from(["llorch-worker", "--model", "m", "--backend", "rocm"]);
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown backend `rocm`"));
    }

    #[test]
    fn worker_ids_are_path_safe() {
        assert_eq!(
            default_worker_id("127.0.0.1", 9001),
            "worker-127-0-0-1-9001"
        );
        assert_eq!(default_worker_id("::1", 9001), "worker-1-9001");
        assert!(parse_worker_id("gpu-box_1.a").is_ok());
        assert!(parse_worker_id("a/b").is_err());
        assert!(parse_worker_id("").is_err());
    }
}
