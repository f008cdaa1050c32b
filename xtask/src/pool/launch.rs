//! The one description of a worker to start in xtask — [`SpawnSpec`]: *what* runs is a
//! [`WorkerLaunch`] (the wire type orcd sends pool managers), and the spec adds only where and
//! how (port, bind, advertised address, id, orchestrator, token, binary, timeout). `pool worker
//! spawn`'s flags, `up`, the bench and the fleet file all fill it; on this machine it resolves
//! to a [`LocalStart`], whose [`LocalStart::args`] are what llorch-worker receives.

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use llorch_api::{pool::WorkerLaunch, Backend, WorkerInfo};

/// One worker to start: what `pool worker spawn` takes, in a form other commands can fill.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// What the worker runs. Its model may also be a GGUF path (on this machine); only a
    /// pool manager insists on a catalog id.
    pub launch: WorkerLaunch,
    /// `None` or 0: a free port chosen on the worker's machine.
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
    /// Where llorch-worker is (on the worker's machine); `None`: the release build there.
    pub bin_dir: Option<PathBuf>,
    /// How long the worker may take to load and register.
    pub timeout: Duration,
    /// Further llorch-worker arguments, passed last.
    pub worker_args: Vec<String>,
}

impl SpawnSpec {
    /// A spec with every setting but the launch left to its default.
    pub fn new(launch: WorkerLaunch) -> SpawnSpec {
        SpawnSpec {
            launch,
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

    /// The spec with its llorch-worker at `program` (a build's `llorch-worker`).
    pub fn with_program(mut self, program: &Path) -> SpawnSpec {
        debug_assert_eq!(
            program.file_name(),
            Some(std::ffi::OsStr::new(crate::build::WORKER_BINARY))
        );
        self.bin_dir = program.parent().map(Path::to_path_buf);
        self
    }

    /// The worker's id on a machine called `host_label`: the spec's, else the stable one.
    pub fn worker_id(&self, host_label: &str) -> String {
        self.id.clone().unwrap_or_else(|| {
            stable_worker_id(host_label, &self.launch, self.port, self.name.as_deref())
        })
    }
}

/// A [`SpawnSpec`] with every choice made on this machine: the port, the address, the id, the
/// binary and the orchestrator. What it runs follows from it alone ([`LocalStart::args`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalStart {
    pub launch: WorkerLaunch,
    /// The llorch-worker executable.
    pub program: PathBuf,
    pub bind: IpAddr,
    pub port: u16,
    pub advertise_url: Option<String>,
    pub id: String,
    pub orchestrator_url: String,
    /// Absolute: the worker, and a later `restart`, run elsewhere.
    pub worker_token_file: Option<PathBuf>,
    pub worker_args: Vec<String>,
}

/// What a [`LocalStart`] needs of this machine besides the spec.
pub struct Machine<'a> {
    pub host_label: &'a str,
    pub orchestrator_url: &'a str,
    /// A free port on the given address, for a spec without one.
    pub free_port: &'a dyn Fn(IpAddr) -> anyhow::Result<u16>,
}

impl LocalStart {
    /// Resolves `spec` for this machine with the llorch-worker at `program`.
    pub fn resolve(
        spec: &SpawnSpec,
        program: PathBuf,
        machine: &Machine<'_>,
    ) -> anyhow::Result<LocalStart> {
        let advertised = spec.advertise_host.is_some() || spec.advertise_url.is_some();
        let bind = spec.bind.unwrap_or(match advertised {
            true => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            false => IpAddr::V4(Ipv4Addr::LOCALHOST),
        });
        let port = match spec.port {
            Some(port) if port != 0 => port,
            _ => (machine.free_port)(bind)?,
        };
        let advertise_url = match (&spec.advertise_url, &spec.advertise_host) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(host)) if host.contains(':') && !host.starts_with('[') => {
                Some(format!("http://[{host}]:{port}"))
            }
            (None, Some(host)) => Some(format!("http://{host}:{port}")),
            (None, None) => None,
        };
        let id = spec.worker_id(machine.host_label);
        crate::daemon::validate_name(&id)?;
        let worker_token_file = match &spec.worker_token_file {
            Some(file) => Some(
                std::path::absolute(file)
                    .with_context(|| format!("resolving --worker-token-file {}", file.display()))?,
            ),
            None => None,
        };
        Ok(LocalStart {
            launch: spec.launch.clone(),
            program,
            bind,
            port,
            advertise_url,
            id,
            orchestrator_url: spec
                .orchestrator_url
                .clone()
                .unwrap_or_else(|| machine.orchestrator_url.to_owned()),
            worker_token_file,
            worker_args: spec.worker_args.clone(),
        })
    }

    /// llorch-worker's arguments: the model as `model_args` name it (a user catalog entry's
    /// file with `--model-id`), the launch's own flags, where to listen and register, then the
    /// token and the further arguments. `catalog`: a catalog the worker must be told of.
    pub fn args(
        &self,
        model_args: Vec<OsString>,
        model_base_dir: &Path,
        catalog: Option<&Path>,
    ) -> Vec<OsString> {
        let mut args = model_args;
        args.extend(
            self.launch
                .args_after_model()
                .into_iter()
                .map(OsString::from),
        );
        args.extend::<[OsString; 10]>([
            "--host".into(),
            self.bind.to_string().into(),
            "--port".into(),
            self.port.to_string().into(),
            "--worker-id".into(),
            self.id.clone().into(),
            "--orchestrator-url".into(),
            self.orchestrator_url.clone().into(),
            "--model-base-dir".into(),
            model_base_dir.into(),
        ]);
        if let Some(advertise_url) = &self.advertise_url {
            args.extend(["--advertise-url".into(), advertise_url.into()]);
        }
        if let Some(catalog) = catalog {
            args.extend(["--catalog".into(), catalog.into()]);
        }
        if let Some(file) = &self.worker_token_file {
            args.extend(["--worker-token-file".into(), file.into()]);
        }
        args.extend(self.worker_args.iter().map(OsString::from));
        args
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
    launch: &WorkerLaunch,
    port: Option<u16>,
    name: Option<&str>,
) -> String {
    let model = launch.model.as_str();
    let model_label = Path::new(model)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .filter(|_| model.ends_with(".gguf"))
        .unwrap_or(model);
    let name = match (name, port) {
        (Some(name), _) => Some(name.to_owned()),
        (None, Some(port)) if port != 0 => Some(port.to_string()),
        (None, _) => match (launch.backend, launch.gpu) {
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

/// The argv `spec` gives llorch-worker on a machine called `box` whose orchestrator setting is
/// http://127.0.0.1:8080, with the model named by its id, models under `/models` and the
/// default catalog: what the argv tests of `pool worker spawn` and the fleet pin.
#[cfg(test)]
pub fn argv_on_test_machine(spec: &SpawnSpec) -> Vec<String> {
    let machine = Machine {
        host_label: "box",
        orchestrator_url: "http://127.0.0.1:8080",
        free_port: &|_| anyhow::bail!("the argv tests give every worker a port"),
    };
    let program = PathBuf::from("/opt/llorch/llorch-worker");
    let start = LocalStart::resolve(spec, program, &machine).unwrap();
    let model_args = vec!["--model".into(), spec.launch.model.clone().into()];
    start
        .args(model_args, Path::new("/models"), None)
        .into_iter()
        .map(|arg| arg.into_string().unwrap())
        .collect()
}

/// `argv` as its flags, each with its value where it has one, in order of the flag: two
/// argvs with the same flags and values in another order give the same pairs.
#[cfg(test)]
pub fn flag_pairs(argv: &[&str]) -> Vec<(String, Option<String>)> {
    let mut pairs = Vec::new();
    let mut words = argv.iter().peekable();
    while let Some(flag) = words.next() {
        let value = words.next_if(|word| !word.starts_with("--"));
        pairs.push((flag.to_string(), value.map(|value| value.to_string())));
    }
    pairs.sort();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_host_model_and_name() {
        let id = |model: &str, gpu, port, name| {
            let launch = WorkerLaunch {
                backend: Backend::Cuda,
                gpu,
                ..WorkerLaunch::of_model(model)
            };
            stable_worker_id("gpu-box", &launch, port, name)
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
            stable_worker_id("box-a", &WorkerLaunch::of_model("gemma3-270m"), None, None),
            "box-a-gemma3-270m"
        );
    }
}
