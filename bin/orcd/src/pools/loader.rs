//! Loading and unloading models on the pool managers: [`ensure_loaded`] starts (or joins) the
//! load of a model a request waits for; [`housekeeping`] stops workers idle for their
//! `keep_alive`. Every decision is announced on `/v2/events`, audited and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use llorch_api::audit::AuditEvent;
use llorch_api::fleet::FleetEvent;
use llorch_api::pool::{
    HostFacts, PoolErrorBody, PoolWorker, PoolWorkerState, WorkerEstimate, WorkerLaunch,
    WorkerStarted,
};
use llorch_api::{Backend, WorkerState};
use tokio::sync::watch;

use super::placement::{
    idle_unloads, needs_launch_estimate, place, scale_outs, use_launch_estimates, Avoided, GpuView,
    HostView, ModelPolicy, Placement, Purpose, Unload, WorkerView,
};
use super::{lock, LoadStatus, Pools, AVOID_AFTER_FAILURE};
use crate::error::OrcdError;
use crate::state::AppState;

/// How often a load checks whether its worker registered, and housekeeping runs.
const POLL: Duration = Duration::from_millis(200);
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Each call to a pool manager gives up after this.
const POOL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns once `model` has a live worker: joins a load in progress or starts one where
/// placement finds room. Fails with the reason (no room with the figures, the host's error,
/// the load timeout) after at most `--load-timeout-secs`.
pub async fn ensure_loaded(state: &AppState, model: &str) -> Result<(), OrcdError> {
    ensure_loaded_on(state, model, None).await
}

/// [`ensure_loaded`], on `host` only when one is named (an operator's `load --host`).
pub async fn ensure_loaded_on(
    state: &AppState,
    model: &str,
    host: Option<&str>,
) -> Result<(), OrcdError> {
    wait_loaded(state, model, start_or_join(state, model, host)).await
}

/// The status of `model`'s load in progress, or of a new one started now (on `host` when
/// named); every request for the model shares one load.
pub fn start_or_join(
    state: &AppState,
    model: &str,
    host: Option<&str>,
) -> watch::Receiver<LoadStatus> {
    let mut loads = lock(&state.pools().inner.loads);
    if let Some(status) = loads.get(model) {
        return status.clone();
    }
    let (sender, receiver) = watch::channel(LoadStatus::Loading { host_id: None });
    loads.insert(model.to_owned(), receiver.clone());
    tokio::spawn(run_load(
        state.clone(),
        model.to_owned(),
        host.map(str::to_owned),
        Purpose::FirstWorker,
        sender,
    ));
    receiver
}

/// Starts another worker of `model` on a host that has none of it (its queue waits too long);
/// nothing when a load of it is under way already.
fn start_scale_out(state: &AppState, model: &str) {
    let mut loads = lock(&state.pools().inner.loads);
    if loads.contains_key(model) {
        return;
    }
    let (sender, receiver) = watch::channel(LoadStatus::Loading { host_id: None });
    loads.insert(model.to_owned(), receiver);
    tokio::spawn(run_load(
        state.clone(),
        model.to_owned(),
        None,
        Purpose::ScaleOut,
        sender,
    ));
}

/// Waits until the load behind `status` ends: `Ok` once `model` has a live worker, else the
/// reason, or the load timeout (`--load-timeout-secs`).
pub async fn wait_loaded(
    state: &AppState,
    model: &str,
    mut status: watch::Receiver<LoadStatus>,
) -> Result<(), OrcdError> {
    let timeout = state.pools().settings().load_timeout;
    let finished = tokio::time::timeout(
        timeout,
        status.wait_for(|status| !matches!(status, LoadStatus::Loading { .. })),
    )
    .await;
    let failed = |reason: String| OrcdError::ModelLoadFailed {
        model: model.to_owned(),
        reason,
    };
    match finished {
        Ok(Ok(status)) => match &*status {
            LoadStatus::Loaded { .. } => Ok(()),
            LoadStatus::Failed { reason } => Err(failed(reason.clone())),
            LoadStatus::Loading { .. } => unreachable!("waited until it was not"),
        },
        Ok(Err(_)) => Err(failed("the load was abandoned".to_owned())),
        Err(_) => Err(failed(format!(
            "it did not finish loading within {} s (`--load-timeout-secs`)",
            timeout.as_secs()
        ))),
    }
}

/// One load from decision to outcome; tells the waiting requests through `status` and then
/// forgets itself, so the next request after a failure tries again.
async fn run_load(
    state: AppState,
    model: String,
    host: Option<String>,
    purpose: Purpose,
    status: watch::Sender<LoadStatus>,
) {
    let started = Instant::now();
    let target = Target {
        model: &model,
        only_host: host.as_deref(),
        purpose,
    };
    let outcome = load(&state, &target, &status, started).await;
    let pools = state.pools();
    match &outcome {
        Ok((host_id, worker_id)) => {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(%model, %host_id, %worker_id, seconds, "model loaded");
            state
                .metrics()
                .placement()
                .load(&model, host_id, "loaded", Some(seconds));
            announce(
                &state,
                FleetEvent::ModelLoaded {
                    model: model.clone(),
                    host_id: host_id.clone(),
                    worker_id: worker_id.clone(),
                    load_ms: started.elapsed().as_millis() as u64,
                },
                Some(worker_id.clone()),
                None,
            );
            lock(&pools.inner.last_used).insert(worker_id.clone(), Instant::now());
            let _ = status.send(LoadStatus::Loaded {
                worker_id: worker_id.clone(),
            });
        }
        Err(failure) => {
            tracing::warn!(%model, host_id = ?failure.host_id, "loading the model failed: {}", failure.reason);
            let host = failure.host_id.clone().unwrap_or_default();
            state
                .metrics()
                .placement()
                .load(&model, &host, failure.outcome, None);
            if let (Some(host_id), true) = (&failure.host_id, failure.avoid) {
                lock(&pools.inner.avoided).push(Avoided {
                    host_id: host_id.clone(),
                    model: model.clone(),
                    until: Instant::now() + AVOID_AFTER_FAILURE,
                });
            }
            announce(
                &state,
                FleetEvent::LoadFailed {
                    model: model.clone(),
                    host_id: failure.host_id.clone(),
                    reason: failure.reason.clone(),
                },
                None,
                Some(failure.reason.clone()),
            );
            let _ = status.send(LoadStatus::Failed {
                reason: failure.reason.clone(),
            });
        }
    }
    lock(&pools.inner.loads).remove(&model);
}

struct LoadFailure {
    host_id: Option<String>,
    reason: String,
    /// The metric's outcome label.
    outcome: &'static str,
    /// Avoid the host for this model for a while (its start failed).
    avoid: bool,
}

impl LoadFailure {
    /// A download on `host_id` failed or did not finish in time: the host is not avoided (its
    /// start did not fail), and a later request may find the model there.
    fn download(host_id: &str, reason: String) -> LoadFailure {
        LoadFailure {
            host_id: Some(host_id.to_owned()),
            reason,
            outcome: "download_failed",
            avoid: false,
        }
    }

    fn on(host_id: &str, reason: String) -> LoadFailure {
        LoadFailure {
            host_id: Some(host_id.to_owned()),
            reason,
            outcome: "failed",
            avoid: true,
        }
    }
}

/// What one load is for: the model, the host an operator named, first worker or scale-out.
#[derive(Clone, Copy)]
struct Target<'a> {
    model: &'a str,
    only_host: Option<&'a str>,
    purpose: Purpose,
}

async fn load(
    state: &AppState,
    target: &Target<'_>,
    status: &watch::Sender<LoadStatus>,
    started: Instant,
) -> Result<(String, String), LoadFailure> {
    let Target {
        model,
        only_host,
        purpose,
    } = *target;
    let pools = state.pools();
    let policy = pools.policy(model);
    // A catalog model no live host has on its disk is downloaded first, where disk allows.
    if let Some(size) = super::fetch::catalog_size(model) {
        let allowed = match only_host {
            Some(host) => Some(vec![host.to_owned()]),
            None => policy.hosts.clone(),
        };
        let disks = super::fetch::disk_views(state, model, allowed.as_deref());
        match super::fetch::plan(&disks, size) {
            super::fetch::DownloadPlan::NotNeeded => {}
            super::fetch::DownloadPlan::On(host_id) => {
                let _ = status.send(LoadStatus::Loading {
                    host_id: Some(host_id.clone()),
                });
                let deadline = started + pools.settings().load_timeout;
                let downloading = Instant::now();
                announce(
                    state,
                    FleetEvent::ModelDownloading {
                        model: model.to_owned(),
                        host_id: host_id.clone(),
                    },
                    None,
                    None,
                );
                super::fetch::download(state, &host_id, model, deadline)
                    .await
                    .map_err(|reason| LoadFailure::download(&host_id, reason))?;
                announce(
                    state,
                    FleetEvent::ModelDownloaded {
                        model: model.to_owned(),
                        host_id: host_id.clone(),
                        download_ms: downloading.elapsed().as_millis() as u64,
                    },
                    None,
                    None,
                );
            }
            super::fetch::DownloadPlan::NoDisk { size, most_free } => {
                return Err(LoadFailure {
                    host_id: None,
                    reason: format!(
                        "no live host has it on its disk, and none has room to download it: it takes {} MiB, the most free disk of a host is {} MiB\nhint: free disk space in a host's model directory",
                        size >> 20,
                        most_free >> 20
                    ),
                    outcome: "no_disk",
                    avoid: false,
                })
            }
        }
    }
    let mut views = host_views(state).await;
    if needs_launch_estimate(&policy) {
        let estimates = launch_estimates(state, model, &policy).await;
        use_launch_estimates(&mut views, model, &estimates);
    }
    let avoided = lock(&pools.inner.avoided).clone();
    let policy_of = |name: &str| {
        let mut policy = pools.policy(name);
        if let (Some(host), true) = (only_host, name == model) {
            policy.hosts = Some(vec![host.to_owned()]);
        }
        policy
    };
    let placement = place(model, purpose, &policy_of, &views, &avoided, Instant::now());
    let (host_id, backend, gpu, evict) = match placement {
        Placement::Start {
            host_id,
            backend,
            gpu,
            evict,
            ..
        } => (host_id, backend, gpu, evict),
        Placement::NoRoom {
            needed_bytes,
            most_free_bytes,
        } => {
            return Err(LoadFailure {
                host_id: None,
                reason: format!(
                    "no host has room: it needs about {} MiB, the most any host with its file has free is {} MiB\nhint: stop a worker, raise a host's `--memory-budget`, or lower the model's `slots`/`ctx_size` policy",
                    needed_bytes >> 20,
                    most_free_bytes >> 20
                ),
                outcome: "no_room",
                avoid: false,
            })
        }
        Placement::Refused { reason } => {
            return Err(LoadFailure {
                host_id: None,
                reason,
                outcome: "refused",
                avoid: false,
            })
        }
    };
    let _ = status.send(LoadStatus::Loading {
        host_id: Some(host_id.clone()),
    });
    announce(
        state,
        FleetEvent::ModelLoading {
            model: model.to_owned(),
            host_id: host_id.clone(),
        },
        None,
        None,
    );
    let Some(host) = pools.hosts().get(&host_id) else {
        return Err(LoadFailure::on(
            &host_id,
            "the host deregistered".to_owned(),
        ));
    };
    for unload in &evict {
        stop_worker(state, &host.url, unload).await;
    }
    wait_until_stopped(state, &host.url, &evict, started).await;

    let launch = WorkerLaunch {
        backend,
        gpu: Some(gpu),
        ..policy_launch(model, &policy)
    };
    let worker = start_worker(state, &host.url, &launch)
        .await
        .map_err(|reason| LoadFailure::on(&host_id, reason))?;
    pools.hosts().note_started(&host_id, worker.clone());
    wait_until_live(state, &host_id, &host.url, &worker.worker_id).await?;
    Ok((host_id, worker.worker_id))
}

/// The worker `policy` asks for, on the CPU until placement picks the backend and GPU.
fn policy_launch(model: &str, policy: &ModelPolicy) -> WorkerLaunch {
    WorkerLaunch {
        model: model.to_owned(),
        backend: policy.backend.unwrap_or(Backend::Cpu),
        gpu: Some(0),
        slots: Some(policy.slots),
        ctx_size: Some(policy.ctx_size),
        threads: None,
        embeddings: false,
    }
}

/// What a worker of `model` with its policy's launch needs on each live host with its file, by
/// each host's own estimate (`POST /estimate`). A host that does not answer is left out (its
/// facts' default-launch estimate stands, and its start's memory check still guards it).
async fn launch_estimates(
    state: &AppState,
    model: &str,
    policy: &ModelPolicy,
) -> BTreeMap<String, u64> {
    let launch = policy_launch(model, policy);
    let hosts = state.pools().hosts();
    let now = Instant::now();
    let mut estimates = BTreeMap::new();
    for record in hosts.records() {
        let has_file = record.facts.models.iter().any(|disk| disk.model == model);
        if !has_file || !record.is_live(now, hosts.timeout()) {
            continue;
        }
        let answer = async {
            let response = state
                .http()
                .post(format!("{}/estimate", record.url))
                .timeout(POOL_REQUEST_TIMEOUT)
                .json(&launch)
                .send()
                .await?
                .error_for_status()?;
            response.json::<WorkerEstimate>().await
        }
        .await;
        match answer {
            Ok(estimate) => {
                estimates.insert(record.host_id, estimate.needed_bytes);
            }
            Err(error) => tracing::warn!(
                %model, host_id = %record.host_id,
                "the pool manager gave no estimate for the policy's launch; placing by the default launch's: {error}"
            ),
        }
    }
    estimates
}

/// Asks the host's pool manager to start a worker; the error is the host's own message.
async fn start_worker(
    state: &AppState,
    url: &str,
    launch: &WorkerLaunch,
) -> Result<PoolWorker, String> {
    let response = state
        .http()
        .post(format!("{url}/workers"))
        .timeout(POOL_REQUEST_TIMEOUT)
        .json(launch)
        .send()
        .await
        .map_err(|error| format!("the pool manager at {url} did not answer: {error}"))?;
    let code = response.status();
    if code.is_success() {
        return response
            .json::<WorkerStarted>()
            .await
            .map(|started| started.worker)
            .map_err(|error| format!("the pool manager's answer was not understood: {error}"));
    }
    let body = response.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<PoolErrorBody>(&body) {
        Ok(error) => format!("the pool manager refused ({code}): {}", error.error),
        Err(_) => format!("the pool manager refused ({code})"),
    })
}

/// Waits until the worker registered with orcd (`Ok`), or its pool manager reports it failed
/// (with its last log lines), or the host is lost.
async fn wait_until_live(
    state: &AppState,
    host_id: &str,
    url: &str,
    worker_id: &str,
) -> Result<(), LoadFailure> {
    loop {
        let workers = state.scheduler().workers().await.unwrap_or_default();
        if workers
            .iter()
            .any(|worker| worker.worker_id == worker_id && worker.state == WorkerState::Live)
        {
            return Ok(());
        }
        match pool_worker(state, url, worker_id).await {
            Some(worker) if worker.state == PoolWorkerState::Failed => {
                return Err(LoadFailure::on(
                    host_id,
                    format!(
                        "worker `{worker_id}` failed to start on `{host_id}`; its last log lines:\n{}",
                        worker.last_log.join("\n")
                    ),
                ));
            }
            _ => {}
        }
        let live = state
            .pools()
            .hosts()
            .get(host_id)
            .is_some_and(|host| host.is_live(Instant::now(), state.pools().hosts().timeout()));
        if !live {
            return Err(LoadFailure::on(
                host_id,
                format!("host `{host_id}` was lost while loading"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn pool_worker(state: &AppState, url: &str, worker_id: &str) -> Option<PoolWorker> {
    let response = state
        .http()
        .get(format!("{url}/workers"))
        .timeout(POOL_REQUEST_TIMEOUT)
        .send()
        .await
        .ok()?;
    let workers: Vec<PoolWorker> = response.json().await.ok()?;
    workers
        .into_iter()
        .find(|worker| worker.worker_id == worker_id)
}

/// Stops every pool-managed worker of `model` (on `host` only, when named) for an operator;
/// returns the ids of the workers asked to stop.
pub async fn unload_model(state: &AppState, model: &str, host: Option<&str>) -> Vec<String> {
    let mut stopped = Vec::new();
    for record in state.pools().hosts().records() {
        if host.is_some_and(|host| host != record.host_id) {
            continue;
        }
        for worker in record
            .facts
            .workers
            .iter()
            .filter(|worker| worker.launch.model == model)
        {
            let unload = Unload {
                host_id: record.host_id.clone(),
                worker_id: worker.worker_id.clone(),
                model: model.to_owned(),
                reason: super::placement::UnloadReason::Operator,
            };
            stop_worker(state, &record.url, &unload).await;
            stopped.push(unload.worker_id);
        }
    }
    stopped
}

/// Asks a pool manager to drain and stop a worker, and says so everywhere.
async fn stop_worker(state: &AppState, url: &str, unload: &Unload) {
    let sent = state
        .http()
        .delete(format!("{url}/workers/{}?mode=drain", unload.worker_id))
        .timeout(POOL_REQUEST_TIMEOUT)
        .send()
        .await;
    if let Err(error) = sent {
        tracing::warn!(worker_id = %unload.worker_id, "asking the pool manager to stop the worker failed: {error}");
        return;
    }
    let reason = unload.reason.as_str();
    tracing::info!(worker_id = %unload.worker_id, model = %unload.model, host_id = %unload.host_id, reason, "stopping a worker");
    lock(&state.pools().inner.stopping).insert(unload.worker_id.clone(), Instant::now());
    state
        .metrics()
        .placement()
        .unload(&unload.model, &unload.host_id, reason);
    announce(
        state,
        FleetEvent::ModelUnloaded {
            model: unload.model.clone(),
            host_id: unload.host_id.clone(),
            worker_id: unload.worker_id.clone(),
            reason: reason.to_owned(),
        },
        Some(unload.worker_id.clone()),
        Some(reason.to_owned()),
    );
}

/// Waits until the host no longer lists the evicted workers (their memory is free), within
/// the load timeout.
async fn wait_until_stopped(state: &AppState, url: &str, evicted: &[Unload], started: Instant) {
    if evicted.is_empty() {
        return;
    }
    let deadline = started + state.pools().settings().load_timeout;
    while Instant::now() < deadline {
        let mut any_left = false;
        for unload in evicted {
            any_left |= pool_worker(state, url, &unload.worker_id).await.is_some();
        }
        if !any_left {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The fleet as placement sees it: each host's facts, with the scheduler's view of which of
/// its workers are busy and when each was last used.
async fn host_views(state: &AppState) -> Vec<HostView> {
    let pools = state.pools();
    let now = Instant::now();
    let busy: BTreeSet<String> = busy_workers(state).await;
    // Jobs shorter than housekeeping's period are never seen busy: the scheduler's record of
    // each dispatch and finish is what makes such a worker recently used.
    let dispatched = state.scheduler().last_used().await.unwrap_or_default();
    let stopping = lock(&pools.inner.stopping).clone();
    let mut last_used = lock(&pools.inner.last_used);
    for (worker_id, used) in dispatched {
        if let Some(known) = last_used.get_mut(&worker_id) {
            *known = (*known).max(used);
        }
    }
    pools
        .hosts()
        .records()
        .into_iter()
        .map(|record| {
            let live = record.is_live(now, pools.hosts().timeout());
            view_of(
                &record.host_id,
                live,
                &record.facts,
                &busy,
                &stopping,
                &mut last_used,
                now,
                &|model| pools.policy(model).pin,
            )
        })
        .collect()
}

/// Workers with a job running, or whose model has jobs waiting.
async fn busy_workers(state: &AppState) -> BTreeSet<String> {
    let workers = state.scheduler().workers().await.unwrap_or_default();
    let models = state.scheduler().models().await.unwrap_or_default();
    let waiting: BTreeSet<&str> = models
        .iter()
        .filter(|model| model.queued > 0)
        .map(|model| model.model.as_str())
        .collect();
    workers
        .iter()
        .filter(|worker| worker.slots_busy > 0 || waiting.contains(worker.model.as_str()))
        .map(|worker| worker.worker_id.clone())
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn view_of(
    host_id: &str,
    live: bool,
    facts: &HostFacts,
    busy: &BTreeSet<String>,
    stopping: &std::collections::BTreeMap<String, Instant>,
    last_used: &mut std::collections::BTreeMap<String, Instant>,
    now: Instant,
    pinned_by_policy: &dyn Fn(&str) -> bool,
) -> HostView {
    let workers = facts
        .workers
        .iter()
        .filter(|worker| worker.state != PoolWorkerState::Failed)
        .filter(|worker| !stopping.contains_key(&worker.worker_id))
        .map(|worker| {
            // A worker still starting (or restarting after a crash) is on its way to serve:
            // neither idle nor a candidate for eviction.
            let is_busy =
                busy.contains(&worker.worker_id) || worker.state != PoolWorkerState::Running;
            let used = last_used.entry(worker.worker_id.clone()).or_insert(now);
            if is_busy {
                *used = now;
            }
            WorkerView {
                worker_id: worker.worker_id.clone(),
                model: worker.launch.model.clone(),
                backend: worker.launch.backend,
                gpu: worker.launch.gpu_or_default(),
                estimated_bytes: worker.estimated_bytes,
                busy: is_busy,
                pinned: pinned_by_policy(&worker.launch.model),
                last_used: *used,
            }
        })
        .collect();
    HostView {
        host_id: host_id.to_owned(),
        live,
        ram_free: facts.ram_free_for_workers(),
        gpus: facts
            .gpus
            .iter()
            .map(|gpu| GpuView {
                index: gpu.index,
                free: gpu.memory_total_bytes.saturating_sub(gpu.memory_used_bytes),
            })
            .collect(),
        gpu_backend: facts
            .backends
            .iter()
            .copied()
            .find(|backend| *backend != Backend::Cpu),
        models: facts
            .models
            .iter()
            .filter(|model| model.estimated_bytes > 0)
            .map(|model| (model.model.clone(), model.estimated_bytes))
            .collect(),
        workers,
    }
}

/// Publishes a placement event on `/v2/events` and writes it to the audit log.
fn announce(
    state: &AppState,
    event: FleetEvent,
    worker_id: Option<String>,
    reason: Option<String>,
) {
    if let Some(audit) = state.audit() {
        let (action, model, host_id) = match &event {
            FleetEvent::ModelDownloading { model, host_id } => {
                ("model_downloading", model, Some(host_id))
            }
            FleetEvent::ModelDownloaded { model, host_id, .. } => {
                ("model_downloaded", model, Some(host_id))
            }
            FleetEvent::ModelLoading { model, host_id } => ("model_loading", model, Some(host_id)),
            FleetEvent::ModelLoaded { model, host_id, .. } => {
                ("model_loaded", model, Some(host_id))
            }
            FleetEvent::ModelUnloaded { model, host_id, .. } => {
                ("model_unloaded", model, Some(host_id))
            }
            FleetEvent::LoadFailed { model, host_id, .. } => {
                ("load_failed", model, host_id.as_ref())
            }
            _ => return,
        };
        audit.record(
            None,
            AuditEvent::ModelPlacement {
                action: action.to_owned(),
                model: model.clone(),
                host_id: host_id.cloned(),
                worker_id,
                reason,
            },
        );
    }
    state.scheduler().announce(event);
}

/// Runs for orcd's life: once a second, stops the workers idle for their model's
/// `keep_alive` (down to `min_replicas`) and forgets finished stops.
pub async fn housekeeping(state: AppState) {
    let mut interval = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let pools = state.pools();
        if pools.hosts().is_empty() {
            continue;
        }
        forget_finished_stops(pools);
        let views = host_views(&state).await;
        let loading: BTreeSet<String> = lock(&pools.inner.loads).keys().cloned().collect();
        let policy_of = |model: &str| pools.policy(model);
        for unload in idle_unloads(&views, &policy_of, Instant::now()) {
            // A load of the same model may be about to use this worker.
            if loading.contains(&unload.model) {
                continue;
            }
            if let Some(host) = pools.hosts().get(&unload.host_id) {
                stop_worker(&state, &host.url, &unload).await;
            }
        }
        let waits = state
            .scheduler()
            .median_queue_waits()
            .await
            .unwrap_or_default();
        let avoided = lock(&pools.inner.avoided).clone();
        for model in scale_outs(&views, &waits, &policy_of, &loading) {
            // Only where it fits now: a scale-out that cannot be placed is no failure to report.
            let placement = place(
                &model,
                Purpose::ScaleOut,
                &policy_of,
                &views,
                &avoided,
                Instant::now(),
            );
            if matches!(placement, Placement::Start { .. }) {
                tracing::info!(%model, median_wait_ms = waits[&model].as_millis() as u64, "scaling out");
                start_scale_out(&state, &model);
            }
        }
    }
}

/// A stop is finished once the host's facts no longer list the worker.
fn forget_finished_stops(pools: &Pools) {
    let listed: BTreeSet<String> = pools
        .hosts()
        .records()
        .iter()
        .flat_map(|record| {
            record
                .facts
                .workers
                .iter()
                .map(|worker| worker.worker_id.clone())
        })
        .collect();
    lock(&pools.inner.stopping).retain(|worker_id, _| listed.contains(worker_id));
    lock(&pools.inner.last_used).retain(|worker_id, _| listed.contains(worker_id));
    lock(&pools.inner.avoided).retain(|avoided| avoided.until > Instant::now());
}
