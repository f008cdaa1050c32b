//! Where a model's next worker goes and which workers stop: pure functions over a snapshot of
//! the hosts and a clock, so every decision is tested without sockets or a runtime (as the
//! scheduler core is).
//!
//! - A host qualifies when it is live, the model's policy allows it, the model's file is on its
//!   disk, and no failed start made orcd avoid it for this model lately.
//! - Among hosts with room by the estimate, a GPU before the CPU, then the host with the fewest
//!   workers (then the host id, so the choice is stable).
//! - Without room anywhere: stop least recently used idle workers (never busy, never pinned,
//!   never below their model's `min_replicas`) on the host where the fewest stops free enough.
//! - Otherwise no room: the memory needed and the most any qualifying host has free.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use llorch_api::Backend;

/// The default `keep_alive`: an idle worker is stopped after five minutes (as Ollama does).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);
/// The default `scale_out_after`: a median queue wait above this gets the model another worker.
pub const DEFAULT_SCALE_OUT_AFTER: Duration = Duration::from_secs(10);

/// How orcd places one model (`[models.ID]` of the policy file; the defaults otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPolicy {
    /// Hosts it may load on; `None`: any host whose pool manager has its file.
    pub hosts: Option<Vec<String>>,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Idle time after which a worker is stopped; `None`: never.
    pub keep_alive: Option<Duration>,
    pub scale_out_after: Duration,
    pub slots: u32,
    pub ctx_size: u32,
    /// `None`: a GPU where one has room, else the CPU.
    pub backend: Option<Backend>,
    /// Its workers are never stopped by orcd (neither idle nor evicted).
    pub pin: bool,
    /// `false`: orcd never starts a worker for it.
    pub on_demand: bool,
}

impl Default for ModelPolicy {
    fn default() -> Self {
        ModelPolicy {
            hosts: None,
            min_replicas: 0,
            max_replicas: 1,
            keep_alive: Some(DEFAULT_KEEP_ALIVE),
            scale_out_after: DEFAULT_SCALE_OUT_AFTER,
            slots: llorch_api::pool::DEFAULT_SLOTS,
            ctx_size: llorch_api::pool::DEFAULT_CTX_SIZE,
            backend: None,
            pin: false,
            on_demand: true,
        }
    }
}

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    pub host_id: String,
    pub live: bool,
    /// RAM a new CPU worker may take (the pool manager's budget applied).
    pub ram_free: u64,
    /// Free memory of each GPU, when the host's worker binary has a GPU backend.
    pub gpus: Vec<GpuView>,
    pub gpu_backend: Option<Backend>,
    /// Catalog ids on its disk, with the memory a worker of each needs by its estimate.
    pub models: BTreeMap<String, u64>,
    pub workers: Vec<WorkerView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuView {
    pub index: u32,
    pub free: u64,
}

/// A worker placement may stop.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub worker_id: String,
    pub model: String,
    pub backend: Backend,
    pub gpu: u32,
    pub estimated_bytes: u64,
    /// Runs or waits for jobs now.
    pub busy: bool,
    /// Static (fleet file), or its model's policy pins it.
    pub pinned: bool,
    /// The last time it had a job (or started).
    pub last_used: Instant,
}

/// A worker to stop, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unload {
    pub host_id: String,
    pub worker_id: String,
    pub model: String,
    pub reason: UnloadReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadReason {
    /// It had no job for its model's `keep_alive` and was the model's last worker.
    Idle,
    /// Stopped to make room for another model.
    Evicted,
    /// An idle extra replica of a model that keeps other workers.
    ScaledIn,
    /// An operator asked (`POST /v2/models/{model}/unload`).
    Operator,
}

impl UnloadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnloadReason::Idle => "idle",
            UnloadReason::Evicted => "evicted",
            UnloadReason::ScaledIn => "scaled_in",
            UnloadReason::Operator => "operator",
        }
    }
}

/// Why a worker is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The model has no live worker and a request waits for one.
    FirstWorker,
    /// The model's queue waits too long: another worker, on a host that has none of it.
    ScaleOut,
}

/// Where to start a worker, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    Start {
        host_id: String,
        backend: Backend,
        gpu: u32,
        needed_bytes: u64,
        /// Workers to stop first (least recently used first).
        evict: Vec<Unload>,
    },
    /// No qualifying host has room, even after stopping every idle worker it may stop.
    NoRoom {
        needed_bytes: u64,
        most_free_bytes: u64,
    },
    /// Nothing to try: the reason names the fix.
    Refused { reason: String },
}

/// A host orcd avoids for a model until `until` (a start there failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avoided {
    pub host_id: String,
    pub model: String,
    pub until: Instant,
}

/// One way to fit the model on a host: the backend, the GPU, the memory free there.
#[derive(Debug, Clone, Copy)]
struct Room {
    backend: Backend,
    gpu: u32,
    free: u64,
}

/// Decides where `model`'s next worker goes. `policy_of` gives the policy of any model (for
/// the `min_replicas` and `pin` of workers that might be evicted).
pub fn place(
    model: &str,
    purpose: Purpose,
    policy_of: &dyn Fn(&str) -> ModelPolicy,
    hosts: &[HostView],
    avoided: &[Avoided],
    now: Instant,
) -> Placement {
    let policy = policy_of(model);
    if !policy.on_demand {
        return refused(format!(
            "model `{model}` is not loaded on demand (`on_demand = false` in orcd's model policies); start a worker for it by hand"
        ));
    }
    let replicas = replicas_of(hosts, model);
    if purpose == Purpose::ScaleOut && replicas >= policy.max_replicas {
        return refused(format!(
            "model `{model}` already has {replicas} workers (`max_replicas = {}`)",
            policy.max_replicas
        ));
    }
    let allowed = |host: &HostView| {
        policy
            .hosts
            .as_ref()
            .is_none_or(|hosts| hosts.iter().any(|id| id == &host.host_id))
    };
    let is_avoided = |host: &HostView| {
        avoided
            .iter()
            .any(|a| a.host_id == host.host_id && a.model == model && a.until > now)
    };
    let runs_model = |host: &HostView| host.workers.iter().any(|w| w.model == model);
    let candidates: Vec<&HostView> = hosts
        .iter()
        .filter(|host| host.live && allowed(host) && host.models.contains_key(model))
        .filter(|host| purpose == Purpose::FirstWorker || !runs_model(host))
        .collect();
    if candidates.is_empty() {
        return refused(format!(
            "no live host {}has model `{model}` on its disk\nhint: download it there with `cargo xtask models download {model}`",
            if policy.hosts.is_some() { "allowed by its `hosts` policy " } else { "" }
        ));
    }
    let candidates: Vec<&HostView> = candidates.into_iter().filter(|h| !is_avoided(h)).collect();
    if candidates.is_empty() {
        return refused(format!(
            "every host with model `{model}` failed to start it lately; orcd tries again after a while"
        ));
    }

    let mut fits = Vec::new();
    for host in &candidates {
        let needed = host.models[model];
        for room in rooms(host, &policy) {
            if room.free >= needed {
                fits.push((
                    gpu_rank(room.backend),
                    host.workers.len(),
                    &host.host_id,
                    room,
                    needed,
                ));
            }
        }
    }
    if let Some((_, _, host_id, room, needed)) = fits
        .into_iter()
        .min_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)))
    {
        return Placement::Start {
            host_id: host_id.clone(),
            backend: room.backend,
            gpu: room.gpu,
            needed_bytes: needed,
            evict: Vec::new(),
        };
    }

    let mut best: Option<(usize, Instant, Placement)> = None;
    for host in &candidates {
        let needed = host.models[model];
        for room in rooms(host, &policy) {
            let Some(evict) = evictions(host, room, needed, model, policy_of, hosts) else {
                continue;
            };
            let oldest = host
                .workers
                .iter()
                .filter(|w| evict.iter().any(|e| e.worker_id == w.worker_id))
                .map(|w| w.last_used)
                .min()
                .unwrap_or(now);
            let rank = (evict.len(), oldest);
            if best
                .as_ref()
                .is_none_or(|(count, at, _)| rank < (*count, *at))
            {
                best = Some((
                    rank.0,
                    rank.1,
                    Placement::Start {
                        host_id: host.host_id.clone(),
                        backend: room.backend,
                        gpu: room.gpu,
                        needed_bytes: needed,
                        evict,
                    },
                ));
            }
        }
    }
    if let Some((_, _, placement)) = best {
        return placement;
    }
    let needed_bytes = candidates
        .iter()
        .map(|h| h.models[model])
        .min()
        .unwrap_or(0);
    let most_free_bytes = candidates
        .iter()
        .flat_map(|host| rooms(host, &policy))
        .map(|room| room.free)
        .max()
        .unwrap_or(0);
    Placement::NoRoom {
        needed_bytes,
        most_free_bytes,
    }
}

/// Replaces the default-launch estimate of `model` (what the hosts' facts carry) with the one
/// each host gave for the launch its policy asks for (`estimates` by host id). A host that
/// gave none keeps the default's; its pool manager's own memory check still guards the start.
pub fn use_launch_estimates(
    hosts: &mut [HostView],
    model: &str,
    estimates: &BTreeMap<String, u64>,
) {
    for host in hosts {
        if let (Some(needed), Some(estimate)) =
            (host.models.get_mut(model), estimates.get(&host.host_id))
        {
            *needed = *estimate;
        }
    }
}

/// Whether a worker of the model needs other memory than the default launch the hosts' facts
/// estimate: its policy changes the slots or the context size.
pub fn needs_launch_estimate(policy: &ModelPolicy) -> bool {
    policy.slots != llorch_api::pool::DEFAULT_SLOTS
        || policy.ctx_size != llorch_api::pool::DEFAULT_CTX_SIZE
}

fn refused(reason: String) -> Placement {
    Placement::Refused { reason }
}

/// GPUs rank before the CPU.
fn gpu_rank(backend: Backend) -> u8 {
    match backend {
        Backend::Cuda | Backend::Metal => 0,
        Backend::Cpu => 1,
    }
}

/// The memory pools of a host the policy lets the model use.
fn rooms(host: &HostView, policy: &ModelPolicy) -> Vec<Room> {
    let mut rooms = Vec::new();
    if let Some(gpu_backend) = host.gpu_backend {
        if policy.backend.is_none_or(|wanted| wanted == gpu_backend) {
            rooms.extend(host.gpus.iter().map(|gpu| Room {
                backend: gpu_backend,
                gpu: gpu.index,
                free: gpu.free,
            }));
        }
    }
    if policy.backend.is_none_or(|wanted| wanted == Backend::Cpu) {
        rooms.push(Room {
            backend: Backend::Cpu,
            gpu: 0,
            free: host.ram_free,
        });
    }
    rooms
}

fn replicas_of(hosts: &[HostView], model: &str) -> u32 {
    hosts
        .iter()
        .filter(|host| host.live)
        .flat_map(|host| &host.workers)
        .filter(|worker| worker.model == model)
        .count() as u32
}

/// The least recently used idle workers of `room` on `host` whose stop frees `needed`, or
/// `None` when stopping every one it may stop would not.
fn evictions(
    host: &HostView,
    room: Room,
    needed: u64,
    model: &str,
    policy_of: &dyn Fn(&str) -> ModelPolicy,
    hosts: &[HostView],
) -> Option<Vec<Unload>> {
    let same_memory = |worker: &&WorkerView| match room.backend {
        Backend::Cpu => worker.backend == Backend::Cpu,
        _ => worker.backend == room.backend && worker.gpu == room.gpu,
    };
    let mut candidates: Vec<&WorkerView> = host
        .workers
        .iter()
        .filter(same_memory)
        .filter(|worker| !worker.busy && !worker.pinned && worker.model != model)
        .filter(|worker| !policy_of(&worker.model).pin)
        .collect();
    candidates.sort_by(|a, b| (a.last_used, &a.worker_id).cmp(&(b.last_used, &b.worker_id)));
    let mut remaining: BTreeMap<&str, u32> = BTreeMap::new();
    let mut free = room.free;
    let mut evict = Vec::new();
    for worker in candidates {
        if free >= needed {
            break;
        }
        let left = remaining
            .entry(worker.model.as_str())
            .or_insert_with(|| replicas_of(hosts, &worker.model));
        if *left <= policy_of(&worker.model).min_replicas {
            continue;
        }
        *left -= 1;
        free += worker.estimated_bytes;
        evict.push(Unload {
            host_id: host.host_id.clone(),
            worker_id: worker.worker_id.clone(),
            model: worker.model.clone(),
            reason: UnloadReason::Evicted,
        });
    }
    (free >= needed).then_some(evict)
}

/// The workers to stop because they were idle for their model's `keep_alive`, keeping each
/// model's `min_replicas` (the most recently used ones). An idle worker whose model keeps
/// another worker is `ScaledIn`; a model's last one is `Idle`.
pub fn idle_unloads(
    hosts: &[HostView],
    policy_of: &dyn Fn(&str) -> ModelPolicy,
    now: Instant,
) -> Vec<Unload> {
    let mut by_model: BTreeMap<&str, Vec<(&HostView, &WorkerView)>> = BTreeMap::new();
    for host in hosts.iter().filter(|host| host.live) {
        for worker in &host.workers {
            by_model
                .entry(&worker.model)
                .or_default()
                .push((host, worker));
        }
    }
    let mut unloads = Vec::new();
    for (model, mut workers) in by_model {
        let policy = policy_of(model);
        let Some(keep_alive) = policy.keep_alive else {
            continue;
        };
        if policy.pin {
            continue;
        }
        // Oldest use first: those go before the recently used ones.
        workers
            .sort_by(|a, b| (a.1.last_used, &a.1.worker_id).cmp(&(b.1.last_used, &b.1.worker_id)));
        let mut left = workers.len() as u32;
        for (host, worker) in workers {
            if left <= policy.min_replicas {
                break;
            }
            let idle_for = now.saturating_duration_since(worker.last_used);
            if worker.busy || worker.pinned || idle_for < keep_alive {
                continue;
            }
            left -= 1;
            unloads.push(Unload {
                host_id: host.host_id.clone(),
                worker_id: worker.worker_id.clone(),
                model: model.to_owned(),
                reason: if left > 0 {
                    UnloadReason::ScaledIn
                } else {
                    UnloadReason::Idle
                },
            });
        }
    }
    unloads
}

/// Whether `model` should get another worker: its median queue wait over the last minute is
/// above its `scale_out_after` and it has fewer than `max_replicas`.
pub fn wants_scale_out(policy: &ModelPolicy, median_wait: Duration, replicas: u32) -> bool {
    policy.on_demand && replicas < policy.max_replicas && median_wait > policy.scale_out_after
}

/// The models that get another worker now: their median queue wait (`median_waits`, over the
/// last minute) is above `scale_out_after`, they have at least one worker (a request loads the
/// first) and fewer than `max_replicas`, and no load of theirs is under way.
pub fn scale_outs(
    hosts: &[HostView],
    median_waits: &BTreeMap<String, Duration>,
    policy_of: &dyn Fn(&str) -> ModelPolicy,
    loading: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    median_waits
        .iter()
        .filter(|(model, wait)| {
            let replicas = replicas_of(hosts, model);
            replicas > 0
                && !loading.contains(*model)
                && wants_scale_out(&policy_of(model), **wait, replicas)
        })
        .map(|(model, _)| model.clone())
        .collect()
}

#[cfg(test)]
mod tests;
