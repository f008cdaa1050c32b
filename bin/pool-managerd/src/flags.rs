//! Command-line flags of `llorch-pool-managerd`; every flag can also be set through an
//! `LLORCH_*` environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use llorch_api::pool::parse_bytes;

/// Report this host to orcd and start, supervise and stop its workers when orcd asks.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "llorch-pool-managerd",
    version,
    after_help = "Examples:\n  \
        llorch-pool-managerd --orchestrator-url http://10.0.0.1:8080 --worker-token-file ~/.config/llorch/worker-token\n  \
        llorch-pool-managerd --port 0 --memory-budget 2GiB --orchestrator-url http://127.0.0.1:8080\n  \
        llorch-pool-managerd --host 0.0.0.0 --advertise-url http://gpu-box:9100 --orchestrator-url http://10.0.0.1:8080"
)]
pub struct PoolArgs {
    /// Address to listen on
    #[arg(long, env = "LLORCH_POOL_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on; 0 picks a free one and prints it
    #[arg(long, env = "LLORCH_POOL_PORT", default_value_t = 9100)]
    pub port: u16,

    /// URL orcd should use to reach this pool manager [default: http://HOST:PORT]
    #[arg(long, env = "LLORCH_POOL_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,

    /// The host's id in orcd [default: the host name]
    #[arg(long, env = "LLORCH_HOST_ID", value_name = "ID", value_parser = parse_host_id)]
    pub host_id: Option<String>,

    /// orcd to register with; without it the pool manager only serves its own API
    #[arg(long, env = "LLORCH_ORCHESTRATOR_URL", value_name = "URL")]
    pub orchestrator_url: Option<String>,

    /// orcd's worker token file (mode 600): presented to orcd, required on this daemon's API
    /// and handed to the workers it starts
    #[arg(long, env = "LLORCH_WORKER_TOKEN_FILE", value_name = "FILE")]
    pub worker_token_file: Option<PathBuf>,

    /// The llorch-worker executable [default: llorch-worker beside this binary]
    #[arg(long, env = "LLORCH_WORKER_BIN", value_name = "FILE")]
    pub worker_bin: Option<PathBuf>,

    /// Directory of downloaded catalog models [default: ~/.local/share/llorch/models]
    #[arg(long, env = "LLORCH_MODEL_BASE_DIR", value_name = "DIR")]
    pub model_base_dir: Option<PathBuf>,

    /// Catalog file, instead of the built-in one (also handed to the workers)
    #[arg(long, env = "LLORCH_CATALOG", value_name = "FILE")]
    pub catalog: Option<PathBuf>,

    /// Your own catalog entries [default: ~/.config/llorch/catalog.d]
    #[arg(long, env = "LLORCH_CATALOG_DIR", value_name = "DIR")]
    pub catalog_dir: Option<PathBuf>,

    /// Where workers' logs go, one file per worker [default: a `pool-logs` folder beside the models]
    #[arg(long, env = "LLORCH_POOL_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// The most memory the workers may take together by their estimates (`512MiB`, `2GiB`,
    /// `4000000000`); a start beyond it is refused [default: no limit but available RAM]
    #[arg(long, env = "LLORCH_MEMORY_BUDGET", value_name = "BYTES", value_parser = parse_bytes)]
    pub memory_budget: Option<u64>,

    /// Milliseconds between heartbeats to orcd; orcd may ask for less
    #[arg(long, env = "LLORCH_HEARTBEAT_INTERVAL_MS", value_name = "MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub heartbeat_interval_ms: u64,

    /// Seconds a stopping worker may take to drain its jobs before it is killed
    #[arg(
        long,
        env = "LLORCH_DRAIN_TIMEOUT_SECS",
        value_name = "SECS",
        default_value_t = 15
    )]
    pub drain_timeout_secs: u64,

    /// Crashes in a row, each within a minute of its start, after which a worker is marked
    /// failed instead of restarted
    #[arg(long, env = "LLORCH_CRASH_LOOP_LIMIT", value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub crash_loop_limit: u32,

    /// Backends this host's llorch-worker was built with, offered to orcd (`cpu`, and `cuda`
    /// or `metal` for a binary built with that feature)
    #[arg(
        long,
        env = "LLORCH_BACKENDS",
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "cpu"
    )]
    pub backends: Vec<llorch_api::Backend>,

    #[command(flatten)]
    pub connections: llorch_serve::ConnectionArgs,
}

impl PoolArgs {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    pub fn model_base_dir(&self) -> PathBuf {
        self.model_base_dir
            .clone()
            .unwrap_or_else(llorch_catalog::default_model_base_dir)
    }

    pub fn catalog_dir(&self) -> PathBuf {
        self.catalog_dir
            .clone()
            .unwrap_or_else(llorch_catalog::default_catalog_dir)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.log_dir
            .clone()
            .unwrap_or_else(|| self.model_base_dir().with_file_name("pool-logs"))
    }

    /// `--worker-bin`, else `llorch-worker` in this executable's directory (both binaries are
    /// built and installed together).
    pub fn worker_bin(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.worker_bin {
            return Ok(path.clone());
        }
        let exe = std::env::current_exe()
            .map_err(|error| anyhow::anyhow!("finding this executable's directory: {error}"))?;
        Ok(exe.with_file_name("llorch-worker"))
    }
}

/// Host ids appear in orcd's URL paths (`/pools/{id}/heartbeat`).
fn parse_host_id(id: &str) -> Result<String, String> {
    llorch_api::validation::validate_worker_id(id)
        .map(|()| id.to_owned())
        .map_err(|error| error.to_string().replace("worker_id", "host id"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn flags_are_consistent() {
        PoolArgs::command().debug_assert();
    }

    #[test]
    fn host_ids_are_path_safe() {
        assert!(parse_host_id("gpu-box.lan").is_ok());
        assert!(parse_host_id("a/b").unwrap_err().contains("host id"));
    }
}
