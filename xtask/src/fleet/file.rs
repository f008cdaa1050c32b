//! The fleet file (`fleet.toml`): the orchestrator and, per host, its workers. Read once into a
//! [`Fleet`] whose every worker is a complete [`WorkerSpec`]; mistakes are reported with the
//! file, line and column and the field's dotted path.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use llorch_api::{pool::WorkerLaunch, Backend};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::Settings;

/// The host name that means "this machine, without SSH".
pub const LOCAL_HOST: &str = "local";
/// Environment variable naming the fleet file.
pub const FLEET_ENV: &str = "LLORCH_FLEET";
/// First port given to a worker without `port`; the next ones count up per host.
const FIRST_DEFAULT_PORT: u16 = 9001;
use llorch_api::pool::{DEFAULT_CTX_SIZE, DEFAULT_SLOTS};
/// The pool manager's port unless the fleet file gives one (`llorch-pool-managerd`'s default).
pub const DEFAULT_POOL_MANAGER_PORT: u16 = 9100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    orchestrator: RawOrchestrator,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<RawHost>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrchestrator {
    url: Spanned<String>,
    listen: Option<Spanned<String>>,
    api_token_file: Option<PathBuf>,
    worker_token_file: Option<PathBuf>,
    model_policies: Option<PathBuf>,
    heartbeat_timeout_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    advertise: Option<Spanned<String>>,
    bind: Option<Spanned<String>>,
    #[serde(default)]
    supervisor: Supervisor,
    #[serde(default)]
    workers: Vec<RawWorker>,
    #[serde(default)]
    pool_manager: RawPoolManager,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoolManager {
    enabled: Option<bool>,
    port: Option<Spanned<u16>>,
    memory_budget: Option<Spanned<String>>,
    backends: Option<Vec<Backend>>,
    #[serde(default)]
    models: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: Option<Spanned<String>>,
    model: Spanned<String>,
    #[serde(default)]
    backend: Option<Backend>,
    gpu: Option<u32>,
    slots: Option<Spanned<u32>>,
    ctx_size: Option<Spanned<u32>>,
    port: Option<Spanned<u16>>,
    #[serde(default)]
    embeddings: bool,
}

/// How a host keeps its workers running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Supervisor {
    /// systemd user units where systemd runs, the detached supervisor elsewhere.
    #[default]
    Auto,
    Systemd,
    Detached,
}

/// A validated fleet file.
#[derive(Debug, Clone, Serialize)]
pub struct Fleet {
    pub path: PathBuf,
    pub orchestrator: Orchestrator,
    pub hosts: Vec<FleetHost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Orchestrator {
    /// Where workers register and where this machine asks orcd what it lists.
    pub url: String,
    /// Start orcd on this machine, listening here, when nothing answers at `url`.
    pub listen: Option<String>,
    /// Client token file (for `/workers`); also orcd's `--api-token-file` when started here.
    pub api_token_file: Option<PathBuf>,
    /// Worker token file: copied to every host (mode 0600) and given to orcd when started here.
    pub worker_token_file: Option<PathBuf>,
    /// orcd's `--model-policies` file when started here (keep_alive, replicas, hosts per model).
    pub model_policies: Option<PathBuf>,
    /// orcd's `--heartbeat-timeout-secs` when started here: how long a silent worker stays live
    /// and a silent pool manager's host stays usable for placement.
    pub heartbeat_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetHost {
    /// A `[remote.hosts]` profile, an ssh host, or `local`.
    pub name: String,
    pub supervisor: Supervisor,
    pub workers: Vec<WorkerSpec>,
    /// The host's pool manager, unless the fleet file turns it off.
    pub pool_manager: Option<PoolManagerSpec>,
}

/// Everything the host's `llorch-pool-managerd` is started with; two equal specs mean nothing
/// to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolManagerSpec {
    /// Its host id in orcd: the fleet's name for the host.
    pub host_id: String,
    pub port: u16,
    pub bind: IpAddr,
    pub advertise_url: String,
    pub orchestrator_url: String,
    /// `--memory-budget` as written in the fleet file (`2GiB`), checked when read.
    pub memory_budget: Option<String>,
    pub backends: Vec<Backend>,
    /// Catalog models the host keeps on disk for orcd to load there (downloaded or copied by
    /// `fleet up`).
    pub models: Vec<String>,
}

/// Everything a worker is started with; two equal specs mean nothing to change. What it runs
/// is its [`WorkerLaunch`] (with `slots` and `ctx_size` always given); the spec adds where.
/// The launch is flattened, so the records of older versions (one flat object with `model`,
/// `backend`, `gpu`, `slots`, `ctx_size`, `embeddings` beside `name` and `port`) read the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The worker id in orcd and the daemon or unit name on the host.
    pub name: String,
    #[serde(flatten)]
    pub launch: WorkerLaunch,
    pub port: u16,
    pub bind: IpAddr,
    pub advertise_url: String,
    pub orchestrator_url: String,
}

/// The fleet file in use: `--fleet`, `LLORCH_FLEET`, `[fleet] file`, or fleet.toml beside the
/// config file.
pub fn fleet_path(flag: Option<PathBuf>, settings: &Settings) -> PathBuf {
    flag.or_else(|| crate::config::process_env(FLEET_ENV).map(PathBuf::from))
        .or_else(|| settings.file.fleet.file.clone())
        .unwrap_or_else(|| {
            settings
                .config_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("fleet.toml")
        })
}

/// Reads and validates the fleet file at `path`.
pub fn load(path: &Path, settings: &Settings) -> anyhow::Result<Fleet> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the fleet file {}\nhint: write one (deploy/fleet.example.toml shows every key) or name it with --fleet FILE or LLORCH_FLEET",
            path.display()
        )
    })?;
    let known_host = |name: &str| settings.file.remote.hosts.get(name).map(|p| p.host.clone());
    parse(&text, path, &known_host)
}

/// Parses a fleet file's text; `profile_host` returns the address of a `[remote.hosts]` profile.
pub fn parse(
    text: &str,
    path: &Path,
    profile_host: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Fleet> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| {
        anyhow::anyhow!(
            "reading the fleet file {}: {}\nhint: deploy/fleet.example.toml shows every key",
            path.display(),
            error.to_string().trim_end()
        )
    })?;
    let raw: RawFleet = serde_path_to_error::deserialize(deserializer)
        .map_err(|error| refused_value(text, path, &error))?;
    let mut problems = Problems {
        text,
        path,
        list: Vec::new(),
    };

    let url = raw
        .orchestrator
        .url
        .get_ref()
        .trim_end_matches('/')
        .to_owned();
    let orchestrator_host = match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {
            parsed.host_str().map(str::to_owned)
        }
        _ => {
            problems.at(
                raw.orchestrator.url.span(),
                "orchestrator.url",
                "must be an http:// or https:// URL such as http://10.0.0.1:8080",
            );
            None
        }
    };
    if let Some(timeout) = &raw.orchestrator.heartbeat_timeout_secs {
        if *timeout.get_ref() == 0 {
            problems.at(
                timeout.span(),
                "orchestrator.heartbeat_timeout_secs",
                "must be at least 1 (seconds without a heartbeat before a worker is dead and a pool manager's host lost; orcd's default is 10)",
            );
        }
    }
    if let Some(listen) = &raw.orchestrator.listen {
        if listen.get_ref().parse::<std::net::SocketAddr>().is_err() {
            problems.at(
                listen.span(),
                "orchestrator.listen",
                "must be ADDRESS:PORT such as 0.0.0.0:8080",
            );
        }
    }
    let orchestrator_is_loopback = orchestrator_host.as_deref().is_some_and(is_loopback_name);

    let mut hosts = Vec::new();
    let mut names = BTreeSet::new();
    for (name, spanned_host) in &raw.hosts {
        let host = spanned_host.get_ref();
        let host_span = spanned_host.span();
        let key = format!("hosts.{name}");
        let profile = profile_host(name);
        if name != LOCAL_HOST && profile.is_none() {
            problems.at(
                host_span,
                &key,
                &format!(
                    "`{name}` is not a host profile\nhint: add it with `cargo xtask remote hosts add {} USER@HOST[:PORT] --repo-path PATH`, or use `local` for this machine",
                    crate::remote::ssh::shell_word(name)
                ),
            );
            continue;
        }
        let advertise = match (&host.advertise, &profile) {
            (Some(advertise), _) if !is_address(advertise.get_ref()) => {
                problems.at(
                    advertise.span(),
                    &format!("{key}.advertise"),
                    &format!(
                        "`{}` is not an address: give an IP address or a host name such as gpu-box.lan",
                        advertise.get_ref().escape_debug()
                    ),
                );
                continue;
            }
            (Some(advertise), _) => advertise.get_ref().clone(),
            (None, Some(profile_host)) => profile_host.clone(),
            (None, None) if orchestrator_is_loopback => "127.0.0.1".to_owned(),
            (None, None) => {
                problems.at(
                    host_span.clone(),
                    &key,
                    "needs `advertise`: the address orcd reaches this machine's workers at (orchestrator.url is not loopback)",
                );
                continue;
            }
        };
        let bind = match &host.bind {
            Some(bind) => match bind.get_ref().parse::<IpAddr>() {
                Ok(bind) => bind,
                Err(_) => {
                    problems.at(
                        bind.span(),
                        &format!("{key}.bind"),
                        "must be an IP address such as 0.0.0.0",
                    );
                    continue;
                }
            },
            // A worker listening only on the advertised address is reachable there and nowhere
            // else; a host name needs every interface.
            None => advertise
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        };
        let advertise_host = match advertise.parse::<IpAddr>() {
            Ok(IpAddr::V6(address)) => format!("[{address}]"),
            _ => advertise.clone(),
        };
        let mut ports = BTreeSet::new();
        let mut workers = Vec::new();
        let mut next_port = FIRST_DEFAULT_PORT;
        for (index, worker) in host.workers.iter().enumerate() {
            let field = |name: &str| format!("{key}.workers[{index}].{name}");
            let port = match &worker.port {
                Some(port) => *port.get_ref(),
                None => {
                    while host.workers.iter().any(|other| {
                        other
                            .port
                            .as_ref()
                            .is_some_and(|p| *p.get_ref() == next_port)
                    }) || ports.contains(&next_port)
                    {
                        next_port += 1;
                    }
                    next_port
                }
            };
            if !ports.insert(port) {
                let span = worker
                    .port
                    .as_ref()
                    .map_or(host_span.clone(), Spanned::span);
                problems.at(
                    span,
                    &field("port"),
                    &format!("port {port} is used by another worker of `{name}`"),
                );
            }
            if port == 0 {
                let span = worker
                    .port
                    .as_ref()
                    .map_or(host_span.clone(), Spanned::span);
                problems.at(span, &field("port"), "must be a port from 1 to 65535");
            }
            let model = worker.model.get_ref().clone();
            if !llorch_catalog::valid_id(&model) {
                // The id names a directory and a worker argument on the host: checked here,
                // before any host is touched.
                problems.at(
                    worker.model.span(),
                    &field("model"),
                    &format!(
                        "`{}` is not a catalog id: lowercase letters, digits, `-`, `.` and `_`, starting with a letter or digit\nhint: `cargo xtask models list` shows the ids",
                        model.escape_debug()
                    ),
                );
            }
            let launch = WorkerLaunch {
                backend: worker.backend.unwrap_or(Backend::Cpu),
                gpu: worker.gpu,
                slots: Some(
                    worker
                        .slots
                        .as_ref()
                        .map_or(DEFAULT_SLOTS, |s| *s.get_ref()),
                ),
                ctx_size: Some(
                    worker
                        .ctx_size
                        .as_ref()
                        .map_or(DEFAULT_CTX_SIZE, |c| *c.get_ref()),
                ),
                embeddings: worker.embeddings,
                ..WorkerLaunch::of_model(model.clone())
            };
            let shares_model = host
                .workers
                .iter()
                .filter(|w| w.model.get_ref() == &model)
                .count()
                > 1;
            // The ids `pool worker spawn` gives: a worker started either way is found by both.
            let worker_name = match &worker.name {
                Some(given) => given.get_ref().clone(),
                None => crate::pool::launch::stable_worker_id(
                    name,
                    &launch,
                    shares_model.then_some(port),
                    None,
                ),
            };
            let name_span = worker
                .name
                .as_ref()
                .map_or(worker.model.span(), Spanned::span);
            if crate::daemon::validate_name(&worker_name).is_err() {
                problems.at(
                    name_span.clone(),
                    &field("name"),
                    &format!("`{worker_name}` is not a valid worker name: use letters, digits, `-`, `_` and `.`"),
                );
            }
            if !names.insert(worker_name.clone()) {
                problems.at(
                    name_span,
                    &field("name"),
                    &format!("`{worker_name}` names two workers; worker names are ids in orcd and must be unique in the fleet"),
                );
            }
            if launch.slots == Some(0) {
                problems.at(
                    worker
                        .slots
                        .as_ref()
                        .expect("0 is never the default")
                        .span(),
                    &field("slots"),
                    "must be at least 1",
                );
            }
            if launch.ctx_size.is_some_and(|ctx_size| ctx_size < 64) {
                problems.at(
                    worker
                        .ctx_size
                        .as_ref()
                        .expect("the default is larger")
                        .span(),
                    &field("ctx_size"),
                    "must be at least 64 tokens",
                );
            }
            workers.push(WorkerSpec {
                name: worker_name,
                launch,
                port,
                bind,
                advertise_url: format!("http://{advertise_host}:{port}"),
                orchestrator_url: url.clone(),
            });
        }
        let pool_manager = pool_manager_spec(
            &mut problems,
            &key,
            name,
            &host.pool_manager,
            PoolAddress {
                bind,
                advertise_host: &advertise_host,
                orchestrator_url: &url,
                host_span: host_span.clone(),
            },
            &ports,
        );
        hosts.push(FleetHost {
            name: name.clone(),
            supervisor: host.supervisor,
            workers,
            pool_manager,
        });
    }
    if raw.hosts.is_empty() {
        problems.list.push(format!(
            "{}: the fleet has no hosts\nhint: add a [hosts.NAME] table (its pool manager loads models on demand) and, for pinned workers, [[hosts.NAME.workers]]",
            path.display()
        ));
    }
    if !problems.list.is_empty() {
        bail!(
            "the fleet file {} is not valid:\n{}",
            path.display(),
            problems.list.join("\n")
        );
    }
    Ok(Fleet {
        path: path.to_path_buf(),
        orchestrator: Orchestrator {
            url,
            listen: raw.orchestrator.listen.map(Spanned::into_inner),
            api_token_file: raw.orchestrator.api_token_file,
            worker_token_file: raw.orchestrator.worker_token_file,
            model_policies: raw.orchestrator.model_policies,
            heartbeat_timeout_secs: raw
                .orchestrator
                .heartbeat_timeout_secs
                .map(Spanned::into_inner),
        },
        hosts,
    })
}

/// Where a host's pool manager listens and is reached, from the host's table.
struct PoolAddress<'a> {
    bind: IpAddr,
    advertise_host: &'a str,
    orchestrator_url: &'a str,
    host_span: std::ops::Range<usize>,
}

/// The host's pool manager from `[hosts.NAME.pool_manager]` (every key optional; `enabled =
/// false` turns it off); its port must not be a worker's.
fn pool_manager_spec(
    problems: &mut Problems<'_>,
    key: &str,
    host_name: &str,
    raw: &RawPoolManager,
    address: PoolAddress,
    worker_ports: &BTreeSet<u16>,
) -> Option<PoolManagerSpec> {
    if raw.enabled == Some(false) {
        return None;
    }
    let key = format!("{key}.pool_manager");
    let port = raw
        .port
        .as_ref()
        .map_or(DEFAULT_POOL_MANAGER_PORT, |port| *port.get_ref());
    let port_span = raw
        .port
        .as_ref()
        .map_or(address.host_span.clone(), Spanned::span);
    if port == 0 {
        problems.at(
            port_span,
            &format!("{key}.port"),
            "must be a port from 1 to 65535",
        );
    } else if worker_ports.contains(&port) {
        problems.at(
            port_span,
            &format!("{key}.port"),
            &format!("port {port} is used by a worker of `{host_name}`: give the pool manager another `port`"),
        );
    }
    if let Some(budget) = &raw.memory_budget {
        if let Err(error) = llorch_api::pool::parse_bytes(budget.get_ref()) {
            problems.at(budget.span(), &format!("{key}.memory_budget"), &error);
        }
    }
    for (index, model) in raw.models.iter().enumerate() {
        if !llorch_catalog::valid_id(model.get_ref()) {
            problems.at(
                model.span(),
                &format!("{key}.models[{index}]"),
                &format!(
                    "`{}` is not a catalog id\nhint: `cargo xtask models list` shows the ids",
                    model.get_ref().escape_debug()
                ),
            );
        }
    }
    Some(PoolManagerSpec {
        host_id: host_name.to_owned(),
        port,
        bind: address.bind,
        advertise_url: format!("http://{}:{port}", address.advertise_host),
        orchestrator_url: address.orchestrator_url.to_owned(),
        memory_budget: raw
            .memory_budget
            .as_ref()
            .map(|budget| budget.get_ref().trim().to_owned()),
        backends: raw.backends.clone().unwrap_or_else(|| vec![Backend::Cpu]),
        models: raw
            .models
            .iter()
            .map(|model| model.get_ref().clone())
            .collect(),
    })
}

impl Fleet {
    /// The hosts named in `selection` (all when it is empty); an unknown name is an error.
    pub fn select(&self, selection: &[String]) -> anyhow::Result<Vec<FleetHost>> {
        if selection.is_empty() {
            return Ok(self.hosts.clone());
        }
        selection
            .iter()
            .map(|name| {
                self.hosts
                    .iter()
                    .find(|host| &host.name == name)
                    .cloned()
                    .with_context(|| {
                        format!(
                            "`{name}` is not a host of the fleet file {}\nhint: its hosts are {}",
                            self.path.display(),
                            self.hosts
                                .iter()
                                .map(|host| host.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// What the types of the fleet file refused (an unknown key, a port over 65535, a string for a
/// number), with its line, column and dotted field path.
fn refused_value(
    text: &str,
    path: &Path,
    error: &serde_path_to_error::Error<toml::de::Error>,
) -> anyhow::Error {
    let inner = error.inner();
    let message = inner.message().trim_end();
    let field = field_path(error.path());
    let (line, column) = line_column(text, inner.span().map_or(0, |span| span.start));
    anyhow::anyhow!(
        "the fleet file {} is not valid:\n{}:{line}:{column}: `{field}` {message}\nhint: deploy/fleet.example.toml shows every key",
        path.display(),
        path.display()
    )
}

/// `hosts.box-a.workers[0].port`: the path as the fleet file spells it, without the segments
/// `toml::Spanned` adds.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut text = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => text.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            Segment::Unknown => text.push_str(".?"),
        }
    }
    text
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |newline| newline + 1) + 1;
    (line, column)
}

/// An IP address (IPv6 with or without brackets) or a DNS host name: what may stand between
/// `http://` and `:PORT` in the URL orcd reaches a worker at.
fn is_address(text: &str) -> bool {
    let bare = text
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(text);
    if bare.parse::<IpAddr>().is_ok() {
        return true;
    }
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Validation problems, each with the file, line and column of the offending value.
struct Problems<'a> {
    text: &'a str,
    path: &'a Path,
    list: Vec<String>,
}

impl Problems<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, field: &str, message: &str) {
        let (line, column) = line_column(self.text, span.start);
        self.list.push(format!(
            "{}:{line}:{column}: `{field}` {message}",
            self.path.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(name: &str) -> Option<String> {
        match name {
            "box-a" => Some("10.0.0.2".to_owned()),
            "box-b" => Some("box-b.lan".to_owned()),
            _ => None,
        }
    }

    fn parse_text(text: &str) -> anyhow::Result<Fleet> {
        parse(text, Path::new("fleet.toml"), &profiles)
    }

    const TWO_HOSTS: &str = r#"
[orchestrator]
url = "http://10.0.0.1:8080/"

[hosts.box-a]
[[hosts.box-a.workers]]
model = "gemma3-270m"
slots = 2

[[hosts.box-a.workers]]
name = "coder"
model = "qwen2.5-coder-0.5b"
backend = "cuda"
gpu = 1
ctx_size = 4096
port = 9500

[hosts.box-b]
[[hosts.box-b.workers]]
model = "gemma3-270m"
"#;

    #[test]
    fn workers_get_names_ports_and_addresses_by_default() {
        let fleet = parse_text(TWO_HOSTS).unwrap();
        assert_eq!(fleet.orchestrator.url, "http://10.0.0.1:8080");
        let a = &fleet.hosts[0];
        assert_eq!(a.name, "box-a");
        assert_eq!(
            a.workers[0],
            WorkerSpec {
                name: "box-a-gemma3-270m".into(),
                launch: WorkerLaunch {
                    slots: Some(2),
                    ctx_size: Some(DEFAULT_CTX_SIZE),
                    ..WorkerLaunch::of_model("gemma3-270m")
                },
                port: 9001,
                bind: "10.0.0.2".parse().unwrap(),
                advertise_url: "http://10.0.0.2:9001".into(),
                orchestrator_url: "http://10.0.0.1:8080".into(),
            }
        );
        assert_eq!(a.workers[1].name, "coder");
        assert_eq!(a.workers[1].port, 9500);
        assert_eq!(a.workers[1].launch.gpu, Some(1));
        let b = &fleet.hosts[1].workers[0];
        assert_eq!(b.advertise_url, "http://box-b.lan:9001");
        assert_eq!(
            b.bind,
            "0.0.0.0".parse::<IpAddr>().unwrap(),
            "a host name binds everywhere"
        );
    }

    #[test]
    fn embeddings_are_off_unless_a_worker_asks_for_them() {
        let text = TWO_HOSTS.replace("slots = 2", "slots = 2\nembeddings = true");
        let fleet = parse_text(&text).unwrap();
        let a = &fleet.hosts[0];
        assert!(a.workers[0].launch.embeddings);
        assert!(!a.workers[1].launch.embeddings);
        assert!(!fleet.hosts[1].workers[0].launch.embeddings);
    }

    #[test]
    fn unknown_fields_are_reported_with_their_line() {
        let text = TWO_HOSTS.replace("slots = 2", "slot = 2");
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(error.contains("fleet.toml"), "{error}");
        assert!(error.contains("fleet.toml:8:1:"), "{error}");
        assert!(error.contains("unknown field `slot`"), "{error}");
    }

    #[test]
    fn semantic_errors_name_file_line_column_and_field() {
        let text = TWO_HOSTS
            .replace("slots = 2", "slots = 0")
            .replace("[hosts.box-b]", "[hosts.nowhere]")
            .replace("[[hosts.box-b.workers]]", "[[hosts.nowhere.workers]]");
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(
            error.contains("fleet.toml:8:9: `hosts.box-a.workers[0].slots` must be at least 1"),
            "{error}"
        );
        assert!(
            error.contains("fleet.toml:18:1: `hosts.nowhere` `nowhere` is not a host profile"),
            "{error}"
        );
        assert!(
            error.contains("cargo xtask remote hosts add nowhere"),
            "{error}"
        );
    }

    #[test]
    fn a_named_worker_still_gets_its_model_checked() {
        for model in ["gemma3-270m; touch /tmp/pwned", "../../../../tmp/pwned"] {
            let text = TWO_HOSTS.replace("qwen2.5-coder-0.5b", model);
            let error = format!("{:#}", parse_text(&text).unwrap_err());
            assert!(
                error.contains("fleet.toml:12:9: `hosts.box-a.workers[1].model`"),
                "{error}"
            );
            assert!(error.contains("is not a catalog id"), "{error}");
        }
    }

    #[test]
    fn advertise_must_be_an_address() {
        let text = TWO_HOSTS.replace(
            "[hosts.box-b]\n",
            "[hosts.box-b]\nadvertise = \"127.0.0.1; touch /tmp/pwned\"\n",
        );
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(
            error.contains("fleet.toml:19:13: `hosts.box-b.advertise`"),
            "{error}"
        );
        assert!(error.contains("is not an address"), "{error}");
        for good in ["10.0.0.9", "[fd00::1]", "fd00::1", "gpu-box.lan"] {
            let text = TWO_HOSTS.replace(
                "[hosts.box-b]\n",
                &format!("[hosts.box-b]\nadvertise = \"{good}\"\n"),
            );
            parse_text(&text).unwrap_or_else(|error| panic!("{good}: {error:#}"));
        }
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let text = TWO_HOSTS.replace("port = 9500", "port = 70000");
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(
            error.contains("fleet.toml:16:8: `hosts.box-a.workers[1].port`"),
            "{error}"
        );
        let text = TWO_HOSTS.replace("slots = 2", "slot = 2");
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(
            error.contains("fleet.toml:8:1: `hosts.box-a.workers[0].slot` unknown field `slot`"),
            "{error}"
        );
    }

    #[test]
    fn hints_quote_a_hostile_host_name() {
        let text = TWO_HOSTS
            .replace("[hosts.box-b]", "[hosts.\"x; touch /tmp/pwned\"]")
            .replace(
                "[[hosts.box-b.workers]]",
                "[[hosts.\"x; touch /tmp/pwned\".workers]]",
            );
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(
            error.contains("remote hosts add 'x; touch /tmp/pwned' USER@HOST"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_names_and_ports_are_refused() {
        let text = TWO_HOSTS.replace("slots = 2", "slots = 2\nport = 9500");
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(
            error.contains("`hosts.box-a.workers[1].port` port 9500 is used by another worker"),
            "{error}"
        );
        let text = TWO_HOSTS.replace("name = \"coder\"", "name = \"box-b-gemma3-270m\"");
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(error.contains("names two workers"), "{error}");
    }

    #[test]
    fn local_needs_advertise_unless_orcd_is_on_loopback() {
        let local = "[orchestrator]\nurl = \"http://127.0.0.1:8080\"\n[hosts.local]\n[[hosts.local.workers]]\nmodel = \"gemma3-270m\"\n";
        let fleet = parse_text(local).unwrap();
        assert_eq!(
            fleet.hosts[0].workers[0].advertise_url,
            "http://127.0.0.1:9001"
        );
        assert_eq!(fleet.hosts[0].name, LOCAL_HOST);
        let remote_orcd = local.replace("127.0.0.1", "10.0.0.1");
        let error = format!("{:#}", parse_text(&remote_orcd).unwrap_err());
        assert!(error.contains("needs `advertise`"), "{error}");
    }

    #[test]
    fn the_example_fleet_file_is_valid() {
        let path = crate::config::built_repo_root().join("deploy/fleet.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let fleet = parse(&text, &path, &|name: &str| {
            matches!(name, "gpu-box" | "mac-mini").then(|| format!("{name}.lan"))
        })
        .unwrap();
        assert!(fleet.hosts.len() >= 2, "{fleet:?}");
        assert!(fleet.hosts.iter().all(|host| !host.workers.is_empty()));
    }

    #[test]
    fn a_fleet_without_workers_is_valid_and_gets_a_pool_manager_per_host() {
        let text = "[orchestrator]\nurl = \"http://10.0.0.1:8080\"\nmodel_policies = \"/etc/llorch/policies.toml\"\nheartbeat_timeout_secs = 4\n\n[hosts.box-a]\n\n[hosts.box-b]\n[hosts.box-b.pool_manager]\nport = 9200\nmemory_budget = \"2GiB\"\nmodels = [\"gemma3-270m\"]\n";
        let fleet = parse_text(text).unwrap();
        assert_eq!(
            fleet.orchestrator.model_policies.as_deref(),
            Some(Path::new("/etc/llorch/policies.toml"))
        );
        assert_eq!(fleet.orchestrator.heartbeat_timeout_secs, Some(4));
        let zero = format!("{:#}", parse_text(&text.replace("= 4", "= 0")).unwrap_err());
        assert!(
            zero.contains("`orchestrator.heartbeat_timeout_secs` must be at least 1"),
            "{zero}"
        );
        let a = &fleet.hosts[0];
        assert!(a.workers.is_empty());
        assert_eq!(
            a.pool_manager,
            Some(PoolManagerSpec {
                host_id: "box-a".into(),
                port: DEFAULT_POOL_MANAGER_PORT,
                bind: "10.0.0.2".parse().unwrap(),
                advertise_url: "http://10.0.0.2:9100".into(),
                orchestrator_url: "http://10.0.0.1:8080".into(),
                memory_budget: None,
                backends: vec![Backend::Cpu],
                models: Vec::new(),
            })
        );
        let b = fleet.hosts[1].pool_manager.as_ref().unwrap();
        assert_eq!(b.advertise_url, "http://box-b.lan:9200");
        assert_eq!(b.memory_budget.as_deref(), Some("2GiB"));
        assert_eq!(b.models, ["gemma3-270m"]);
    }

    #[test]
    fn a_pool_manager_can_be_turned_off() {
        let text = TWO_HOSTS.replace(
            "[hosts.box-b]\n",
            "[hosts.box-b]\npool_manager = { enabled = false }\n",
        );
        let fleet = parse_text(&text).unwrap();
        assert!(fleet.hosts[0].pool_manager.is_some());
        assert_eq!(fleet.hosts[1].pool_manager, None);
    }

    #[test]
    fn pool_manager_mistakes_name_their_field() {
        let text = TWO_HOSTS.replace(
            "[hosts.box-b]\n",
            "[hosts.box-b]\npool_manager = { port = 9001, memory_budget = \"lots\", models = [\"../x\"] }\n",
        );
        let error = format!("{:#}", parse_text(&text).unwrap_err());
        assert!(
            error.contains(
                "`hosts.box-b.pool_manager.port` port 9001 is used by a worker of `box-b`"
            ),
            "{error}"
        );
        assert!(
            error.contains("`hosts.box-b.pool_manager.memory_budget` `lots` is not a size"),
            "{error}"
        );
        assert!(
            error.contains("`hosts.box-b.pool_manager.models[0]` `../x` is not a catalog id"),
            "{error}"
        );
    }

    #[test]
    fn selection_names_unknown_hosts() {
        let fleet = parse_text(TWO_HOSTS).unwrap();
        assert_eq!(fleet.select(&[]).unwrap().len(), 2);
        assert_eq!(fleet.select(&["box-b".into()]).unwrap()[0].name, "box-b");
        let error = fleet.select(&["box-c".into()]).unwrap_err().to_string();
        assert!(error.contains("box-a, box-b"), "{error}");
    }
}

#[cfg(test)]
mod parsing_tests;
