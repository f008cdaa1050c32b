//! Wire types between orcd and the pool manager of each host (`llorch-pool-managerd`): what a
//! pool manager tells orcd about its host, and what orcd asks it to do. [`WorkerLaunch`] is the
//! one description of "a worker to start": orcd sends it to pool managers, and xtask's `pool
//! worker spawn`, `up`, the bench and the fleet file fill it too.

use serde::{Deserialize, Serialize};

use crate::Backend;

/// A worker to start: which model, on which compute backend, with how many slots, and which
/// further serving options. It says *what* runs, never where: listen address, port, id and
/// orchestrator are the launcher's (the pool manager's configuration, xtask's spawn spec).
/// [`WorkerLaunch::worker_args`] is the one place these fields become `llorch-worker` flags.
///
/// A setting left `None` is not passed, so the worker's own default applies ([`DEFAULT_SLOTS`],
/// [`DEFAULT_CTX_SIZE`], GPU 0); `None`s are left out of the JSON, so a message reads as it
/// did before these fields were optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerLaunch {
    /// Catalog id of the model (its file must be on the host's disk). xtask also takes a GGUF
    /// path here for a worker on its own machine; [`WorkerLaunch::validate`] refuses one.
    pub model: String,
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// GPU index for the cuda and metal backends; `None`: the worker's default, 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// `None`: [`DEFAULT_SLOTS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Context of each slot in tokens; `None`: [`DEFAULT_CTX_SIZE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_size: Option<u32>,
    /// Decode threads; absent: the worker's own choice (all physical cores, adapted to load).
    #[serde(default)]
    pub threads: Option<u32>,
    /// Also serve embeddings (`--embeddings`); absent from older messages and records.
    #[serde(default, skip_serializing_if = "is_false")]
    pub embeddings: bool,
}

fn default_backend() -> Backend {
    Backend::Cpu
}

fn is_false(value: &bool) -> bool {
    !value
}

/// The worker's own defaults (`llorch-worker --slots`, `--ctx-size`).
pub const DEFAULT_SLOTS: u32 = 4;
pub const DEFAULT_CTX_SIZE: u32 = 2048;

impl WorkerLaunch {
    /// A launch with the worker's defaults for everything but the model.
    pub fn of_model(model: impl Into<String>) -> WorkerLaunch {
        WorkerLaunch {
            model: model.into(),
            backend: Backend::Cpu,
            gpu: None,
            slots: None,
            ctx_size: None,
            threads: None,
            embeddings: false,
        }
    }

    /// The GPU the worker uses: the given one, else the worker's default.
    pub fn gpu_or_default(&self) -> u32 {
        self.gpu.unwrap_or(0)
    }

    /// The slots the worker runs: the given number, else the worker's default.
    pub fn slots_or_default(&self) -> u32 {
        self.slots.unwrap_or(DEFAULT_SLOTS)
    }

    /// Each slot's context in tokens: the given size, else the worker's default.
    pub fn ctx_size_or_default(&self) -> u32 {
        self.ctx_size.unwrap_or(DEFAULT_CTX_SIZE)
    }

    /// What a pool manager accepts over the wire: a catalog id (never a path: the launch
    /// names a file under the host's model directory) and the settings within
    /// [`WorkerLaunch::validate_settings`].
    pub fn validate(&self) -> Result<(), String> {
        crate::validation::validate_model_id("model", &self.model)
            .map_err(|error| error.to_string())?;
        if self.model.contains(['/', ':']) || self.model.starts_with('.') {
            return Err(format!(
                "`model` must be a catalog id (letters, digits, `.`, `-`, `_`), got `{}`",
                crate::log_safe::log_safe(&self.model)
            ));
        }
        self.validate_settings()
    }

    /// The bounds `llorch-worker` itself enforces, checked before anything is spawned so the
    /// caller gets an error naming the field rather than a worker that exits at once.
    pub fn validate_settings(&self) -> Result<(), String> {
        if let Some(slots) = self.slots.filter(|slots| !(1..=64).contains(slots)) {
            return Err(format!("`slots` must be 1..=64, got {slots}"));
        }
        if let Some(ctx_size) = self
            .ctx_size
            .filter(|ctx_size| !(16..=1_048_576).contains(ctx_size))
        {
            return Err(format!("`ctx_size` must be 16..=1048576, got {ctx_size}"));
        }
        if let Some(threads) = self.threads.filter(|threads| !(1..=256).contains(threads)) {
            return Err(format!("`threads` must be 1..=256, got {threads}"));
        }
        Ok(())
    }

    /// The `llorch-worker` flags for this launch: `--model` and [`WorkerLaunch::args_after_model`].
    /// The caller adds where to listen and register.
    pub fn worker_args(&self) -> Vec<String> {
        let mut args = vec!["--model".to_owned(), self.model.clone()];
        args.extend(self.args_after_model());
        args
    }

    /// The flags for everything but the model, for a launcher that names the model its own
    /// way (xtask passes a user catalog entry's file with `--model-id`): `--backend`, then
    /// [`WorkerLaunch::setting_args`].
    pub fn args_after_model(&self) -> Vec<String> {
        let mut args = vec!["--backend".to_owned(), self.backend.as_str().to_owned()];
        args.extend(self.setting_args());
        args
    }

    /// The flags of the settings that are given: `--gpu`, `--slots`, `--ctx-size`, `--threads`,
    /// `--embeddings`. `cargo xtask pool worker spawn` takes them under the same names.
    pub fn setting_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let numbers = [
            ("--gpu", self.gpu),
            ("--slots", self.slots),
            ("--ctx-size", self.ctx_size),
            ("--threads", self.threads),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value.to_string()]);
            }
        }
        if self.embeddings {
            args.push("--embeddings".to_owned());
        }
        args
    }
}

/// How `DELETE /workers/{id}` on a pool manager stops a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// SIGTERM: the worker finishes its running jobs (up to its drain timeout), then exits.
    #[default]
    Drain,
    /// SIGKILL at once.
    Now,
}

/// A worker's state as its pool manager supervises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolWorkerState {
    /// Spawned; loading its model (not yet answering `/health` as ready).
    Starting,
    Running,
    /// Exited unexpectedly; restarting after a backoff.
    Restarting,
    /// Crashed too often in a row: not restarted again; `last_log` says why.
    Failed,
    /// Asked to stop; waiting for it to exit.
    Stopping,
}

/// One worker of a pool manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolWorker {
    /// The id the worker registers with orcd under.
    pub worker_id: String,
    pub launch: WorkerLaunch,
    /// Port it listens on; absent until it has printed it.
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub state: PoolWorkerState,
    /// Resident memory in bytes, read from the kernel at the last heartbeat.
    pub rss_bytes: Option<u64>,
    /// The memory the pool manager estimated for it before starting it.
    pub estimated_bytes: u64,
    /// Restarts after crashes since it was started.
    pub restarts: u32,
    /// The last lines of its log when it failed (crash loop), so orcd can show why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_log: Vec<String>,
}

/// A GPU of the host (CUDA: from `nvidia-smi`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuFacts {
    pub index: u32,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub utilization_percent: Option<f64>,
}

/// A model file on the host's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskModel {
    /// Catalog id.
    pub model: String,
    pub file: String,
    pub bytes: u64,
    /// The download's manifest records a checksum match.
    pub verified: bool,
    /// Memory a worker of it needs with the default slots and context, by the pool manager's
    /// estimate (file, KV cache, compute margin); 0 where the file's metadata cannot be read.
    #[serde(default)]
    pub estimated_bytes: u64,
}

/// Everything a pool manager reports about its host at registration and in each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub host_name: String,
    pub os: String,
    pub cpu_model: String,
    pub physical_cores: u32,
    pub ram_total_bytes: u64,
    pub ram_available_bytes: u64,
    /// One-minute load average.
    pub load_average: f64,
    #[serde(default)]
    pub gpus: Vec<GpuFacts>,
    /// Free bytes on the file system of the model directory.
    pub disk_free_bytes: u64,
    #[serde(default)]
    pub models: Vec<DiskModel>,
    #[serde(default)]
    pub workers: Vec<PoolWorker>,
    /// The most memory the pool manager lets its workers take together (`--memory-budget`),
    /// when set; placement never plans beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_bytes: Option<u64>,
    /// The backends the host's `llorch-worker` was built with.
    #[serde(default)]
    pub backends: Vec<Backend>,
}

impl HostFacts {
    /// RAM a new CPU worker may still take: what the kernel reports available, and, under a
    /// budget, what the budget leaves after the estimates of the running workers.
    pub fn ram_free_for_workers(&self) -> u64 {
        let committed: u64 = self
            .workers
            .iter()
            .filter(|worker| worker.state != PoolWorkerState::Failed)
            .map(|worker| worker.estimated_bytes)
            .sum();
        match self.memory_budget_bytes {
            Some(budget) => budget
                .saturating_sub(committed)
                .min(self.ram_available_bytes),
            None => self.ram_available_bytes,
        }
    }
}

/// `POST /pools/register` on orcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRegistration {
    /// The host's id in orcd (`GET /v2/hosts`); by default its host name.
    pub host_id: String,
    /// Base URL orcd uses to reach the pool manager.
    pub url: String,
    pub facts: HostFacts,
}

/// orcd's answer to a registration: how often it wants heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAccepted {
    pub host_id: String,
    pub heartbeat_interval_ms: u64,
}

/// A host as orcd sees it (`GET /v2/hosts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub host_id: String,
    pub url: String,
    /// `live` while heartbeats arrive, `lost` after they stopped.
    pub state: HostState,
    pub last_seen_ms_ago: u64,
    pub facts: HostFacts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Live,
    Lost,
}

/// `POST /workers` on a pool manager: the worker it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStarted {
    pub worker: PoolWorker,
}

/// A catalog model's download on a pool manager's host (`POST /models/{model}/download`
/// starts one, `GET /downloads` lists them): what orcd and operators read its progress from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDownload {
    pub model: String,
    pub state: DownloadState,
    /// Bytes received so far.
    pub bytes_done: u64,
    /// The file's size by the catalog.
    pub bytes_total: u64,
    /// Why it failed, with what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    /// Bytes are arriving in the model's `.partial/` directory.
    Downloading,
    /// Checked against the catalog's size and SHA-256 and renamed into place: on disk.
    Done,
    /// Given up; nothing of it was left in the model directory.
    Failed,
}

/// `POST /estimate` on a pool manager: the memory a worker of a launch would need by the
/// host's estimate (its model file's GGUF metadata), without starting one. orcd asks before it
/// places a model whose policy's `slots`/`ctx_size` differ from the default launch, whose
/// estimate the facts carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerEstimate {
    pub model: String,
    pub needed_bytes: u64,
}

/// The JSON body of every non-2xx answer of a pool manager: orcd's [`crate::ErrorBody`] plus,
/// when a worker does not fit, the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolErrorBody {
    pub error: String,
    pub error_type: crate::ErrorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_room: Option<NoRoom>,
}

/// Why a pool manager will not start a worker (`409`), with the figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoRoom {
    pub model: String,
    pub needed_bytes: u64,
    pub free_bytes: u64,
}

/// `GET /workers/{id}/log` on a pool manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTail {
    pub worker_id: String,
    pub lines: Vec<String>,
}

/// A byte count with an optional binary or decimal unit: `512MiB`, `2GiB`, `1.5G`, `4000`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: use e.g. `512MiB`, `2GiB` or bytes"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("unknown size unit `{other}` in `{text}`: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")),
    };
    Ok((number * scale as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_bytes("4000"), Ok(4000));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1.5G"), Ok(1_500_000_000));
        assert!(parse_bytes("lots").unwrap_err().contains("not a size"));
        assert!(parse_bytes("3 parsecs")
            .unwrap_err()
            .contains("unknown size unit"));
    }

    #[test]
    fn a_launch_needs_only_a_model_and_refuses_unknown_fields() {
        let launch: WorkerLaunch = serde_json::from_str(r#"{"model":"gemma3-270m"}"#).unwrap();
        assert_eq!(launch, WorkerLaunch::of_model("gemma3-270m"));
        assert_eq!(
            (
                launch.gpu_or_default(),
                launch.slots_or_default(),
                launch.ctx_size_or_default()
            ),
            (0, DEFAULT_SLOTS, DEFAULT_CTX_SIZE)
        );
        assert!(serde_json::from_str::<WorkerLaunch>(r#"{"model":"m","slot":2}"#).is_err());
    }

    #[test]
    fn the_wire_shape_is_the_one_orcd_and_pool_managers_exchanged_before() {
        // What orcd sent before `gpu`, `slots` and `ctx_size` became optional: it still
        // parses, and a launch with every setting given serializes to exactly it.
        let before = r#"{"model":"gemma3-270m","backend":"cuda","gpu":1,"slots":2,"ctx_size":4096,"threads":null}"#;
        let launch: WorkerLaunch = serde_json::from_str(before).unwrap();
        assert_eq!(
            launch,
            WorkerLaunch {
                backend: Backend::Cuda,
                gpu: Some(1),
                slots: Some(2),
                ctx_size: Some(4096),
                ..WorkerLaunch::of_model("gemma3-270m")
            }
        );
        assert_eq!(serde_json::to_string(&launch).unwrap(), before);
        let embeddings = WorkerLaunch {
            embeddings: true,
            ..launch
        };
        assert!(serde_json::to_string(&embeddings)
            .unwrap()
            .ends_with(r#","threads":null,"embeddings":true}"#));
    }

    #[test]
    fn launch_bounds_name_the_field() {
        let mut launch = WorkerLaunch::of_model("gemma3-270m");
        assert!(launch.validate().is_ok());
        launch.slots = Some(0);
        assert!(launch.validate().unwrap_err().contains("`slots`"));
        launch.slots = Some(2);
        launch.ctx_size = Some(8);
        assert!(launch.validate().unwrap_err().contains("`ctx_size`"));
        launch.ctx_size = Some(512);
        launch.threads = Some(0);
        assert!(launch.validate().unwrap_err().contains("`threads`"));
        launch.threads = None;
        launch.model = "../etc/passwd".into();
        assert!(launch.validate().unwrap_err().contains("`model`"));
        // A path is refused on the wire only: the settings alone are fine.
        assert!(launch.validate_settings().is_ok());
    }

    #[test]
    fn worker_args_carry_every_field_that_is_set() {
        let mut launch = WorkerLaunch::of_model("qwen2.5-coder-0.5b");
        assert_eq!(
            launch.worker_args().join(" "),
            "--model qwen2.5-coder-0.5b --backend cpu"
        );
        launch.gpu = Some(0);
        launch.threads = Some(2);
        launch.slots = Some(2);
        launch.ctx_size = Some(2048);
        launch.embeddings = true;
        assert_eq!(
            launch.worker_args().join(" "),
            "--model qwen2.5-coder-0.5b --backend cpu --gpu 0 --slots 2 --ctx-size 2048 --threads 2 --embeddings"
        );
    }

    #[test]
    fn ram_free_for_workers_respects_the_budget() {
        let mut facts = HostFacts {
            host_name: "h".into(),
            os: "linux".into(),
            cpu_model: "cpu".into(),
            physical_cores: 2,
            ram_total_bytes: 8 << 30,
            ram_available_bytes: 4 << 30,
            load_average: 0.0,
            gpus: vec![],
            disk_free_bytes: 0,
            models: vec![],
            workers: vec![PoolWorker {
                worker_id: "w".into(),
                launch: WorkerLaunch::of_model("m"),
                port: None,
                pid: None,
                state: PoolWorkerState::Running,
                rss_bytes: None,
                estimated_bytes: 1 << 30,
                restarts: 0,
                last_log: vec![],
            }],
            memory_budget_bytes: None,
            backends: vec![Backend::Cpu],
        };
        assert_eq!(facts.ram_free_for_workers(), 4 << 30);
        facts.memory_budget_bytes = Some(3 << 30);
        assert_eq!(facts.ram_free_for_workers(), 2 << 30);
        facts.memory_budget_bytes = Some(1 << 29);
        assert_eq!(facts.ram_free_for_workers(), 0);
    }
}
