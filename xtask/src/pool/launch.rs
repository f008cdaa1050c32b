//! The one description of a worker to start — [`SpawnSpec`], from `pool worker spawn`'s flags
//! through the record `restart` reads back to the fleet file's workers — with the id it gets
//! and the arguments the worker binary receives.

use std::{
    ffi::OsString,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use llorch_api::{Backend, WorkerInfo};

/// One worker to start: what `pool worker spawn` takes, in a form other commands can fill.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub backend: Backend,
    /// Catalog id (or GGUF path) of the model.
    pub model: String,
    pub gpu: Option<u32>,
    /// `None`: a free port chosen on the worker's machine.
    pub port: Option<u16>,
    /// `None`: 127.0.0.1 here; 0.0.0.0 on a pool host or with an advertised host.
    pub bind: Option<IpAddr>,
    /// Address orcd reaches the worker at; `None` on a pool host: the profile's address.
    pub advertise_host: Option<String>,
    pub advertise_url: Option<String>,
    /// Tells workers of one model on one host apart; part of the id.
    pub name: Option<String>,
    /// Replaces the `HOST-MODEL-NAME` id.
    pub id: Option<String>,
    /// `None`: the orchestrator configured on this machine.
    pub orchestrator_url: Option<String>,
    /// orcd's worker token file on THIS machine; its first token replaces the pool host's when
    /// they differ.
    pub worker_token_file: Option<PathBuf>,
    /// Where llorch-worker is (on the worker's machine).
    pub bin_dir: Option<PathBuf>,
    pub timeout: Duration,
    /// Further llorch-worker arguments.
    pub worker_args: Vec<String>,
}

impl SpawnSpec {
    /// A spec with every optional setting left to its default.
    pub fn new(backend: Backend, model: impl Into<String>) -> SpawnSpec {
        SpawnSpec {
            backend,
            model: model.into(),
            gpu: None,
            port: None,
            bind: None,
            advertise_host: None,
            advertise_url: None,
            name: None,
            id: None,
            orchestrator_url: None,
            worker_token_file: None,
            bin_dir: None,
            timeout: Duration::from_secs(300),
            worker_args: Vec::new(),
        }
    }

    /// The orchestrator the worker registers with: the spec's, else this machine's setting.
    pub fn orchestrator_url(&self, cx: &crate::Context) -> String {
        self.orchestrator_url
            .clone()
            .unwrap_or_else(|| cx.settings.orchestrator_url.clone())
    }
}

/// A worker that orcd lists as live.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpawnedWorker {
    pub worker_id: String,
    /// The pool host, `None` for this machine.
    pub host: Option<String>,
    /// What orcd reports about it.
    pub orcd: WorkerInfo,
}

/// The stable worker id, one scheme for `pool worker spawn` and `fleet`: `HOST-MODEL` for a
/// cpu worker, `HOST-MODEL-NAME` where NAME tells it apart (`--name`, else its port when one
/// is given, else `cuda1`-style backend and GPU). The same spawn gives the same id, so a
/// restarted worker replaces its own record in orcd instead of leaving a dead one behind, and
/// a worker one command started is the one the other finds.
pub fn stable_worker_id(
    host_label: &str,
    model: &str,
    backend: Backend,
    gpu: Option<u32>,
    port: Option<u16>,
    name: Option<&str>,
) -> String {
    let model_label = Path::new(model)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|_| model.ends_with(".gguf"))
        .unwrap_or(model);
    let name = match (name, port) {
        (Some(name), _) => Some(name.to_owned()),
        (None, Some(port)) if port != 0 => Some(port.to_string()),
        (None, _) => match (backend, gpu) {
            (Backend::Cpu, None) => None,
            (backend, Some(gpu)) => Some(format!("{}{gpu}", backend.as_str())),
            (backend, None) => Some(backend.as_str().to_owned()),
        },
    };
    let id: String = match name {
        Some(name) => format!("{host_label}-{model_label}-{name}"),
        None => format!("{host_label}-{model_label}"),
    }
    .chars()
    .map(
        |c| match c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            true => c,
            false => '-',
        },
    )
    .collect();
    id.trim_start_matches(['-', '.']).to_owned()
}

/// The arguments for the local llorch-worker that the spec asks for beyond the launch's own.
/// The token path is made absolute: the worker, and a later `restart`, run elsewhere.
pub fn worker_extra_args(spec: &SpawnSpec) -> anyhow::Result<Vec<OsString>> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(file) = &spec.worker_token_file {
        let file = std::path::absolute(file)
            .with_context(|| format!("resolving --worker-token-file {}", file.display()))?;
        args.extend(["--worker-token-file".into(), file.into()]);
    }
    args.extend(spec.worker_args.iter().map(OsString::from));
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_host_model_and_name() {
        let id = |model, gpu, port, name| {
            stable_worker_id("gpu-box", model, Backend::Cuda, gpu, port, name)
        };
        assert_eq!(
            id("gemma3-270m", None, None, None),
            "gpu-box-gemma3-270m-cuda"
        );
        assert_eq!(
            id("gemma3-270m", Some(1), None, None),
            "gpu-box-gemma3-270m-cuda1"
        );
        assert_eq!(
            id("gemma3-270m", Some(1), Some(9002), None),
            "gpu-box-gemma3-270m-9002"
        );
        assert_eq!(
            id("gemma3-270m", Some(1), Some(9002), Some("big")),
            "gpu-box-gemma3-270m-big"
        );
        assert_eq!(
            id("/models/My Model.gguf", None, None, None),
            "gpu-box-My-Model-cuda"
        );
        assert_eq!(
            id("org/name:tag", None, None, None),
            "gpu-box-org-name-tag-cuda"
        );
        crate::daemon::validate_name(&id("org/name:tag", None, None, None)).unwrap();
        // A cpu worker is HOST-MODEL, as the fleet names it.
        assert_eq!(
            stable_worker_id("box-a", "gemma3-270m", Backend::Cpu, None, None, None),
            "box-a-gemma3-270m"
        );
    }
}
