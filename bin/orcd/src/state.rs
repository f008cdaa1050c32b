//! orcd's shared state, the floor every handler stands on: the scheduler's handle, the HTTP
//! client that reaches workers, limits, tokens, the audit log and metrics. It knows no handler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::http::{header, HeaderValue};
use llorch_api::RegistrationAccepted;
use llorch_serve::{AllowedHosts, ConnectionLimits};
use tokio::sync::watch;

use crate::aliases::ModelAliases;
use crate::audit::AuditLog;
use crate::auth::AuthConfig;
use crate::config::Settings;
use crate::keys::KeyLedger;
use crate::metrics::Metrics;
use crate::scheduler::SchedulerHandle;
use crate::validation::RequestLimits;

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    scheduler: SchedulerHandle,
    http: reqwest::Client,
    limits: RequestLimits,
    auth: Arc<AuthConfig>,
    /// `None` when the audit log is off: then nothing about it costs anything.
    audit: Option<AuditLog>,
    metrics: Arc<Metrics>,
    started_at_secs: u64,
    /// Set to `true` to end every in-flight job with a `shutting_down` error.
    abort: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    /// Origins browsers may call from (`--cors-origin`).
    cors_origins: Arc<Vec<HeaderValue>>,
    /// The listener's timeouts and connection limit, used by [`serve`].
    connections: ConnectionLimits,
    /// The `Host` rule, applied when there are no tokens.
    allowed_hosts: AllowedHosts,
    /// Told to each worker at registration: heartbeats this far apart stay well inside
    /// `--heartbeat-timeout-secs`.
    heartbeat_interval: Duration,
    /// The pool managers and the models loaded on them.
    pools: crate::pools::Pools,
    /// Other names for served models, resolved before scheduling.
    aliases: Arc<ModelAliases>,
    /// Client keys' recent use (for their limits) and usage by key, model and day.
    keys: KeyLedger,
}

impl AppState {
    /// Starts the scheduler actor (and the audit writer when configured); call from inside a
    /// tokio runtime.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(settings.worker_connect_timeout)
            // A worker that accepted a job and then stalls (hung process, frozen host) would
            // otherwise hold the job and its slot forever; its keep-alives reset this timer.
            .read_timeout(settings.worker_silence)
            // Workers are reached directly; an HTTP_PROXY meant for the internet must not
            // capture loopback and LAN traffic.
            .no_proxy()
            // Below the workers' default idle timeout (60 s), so orcd drops a pooled
            // connection before a worker closes it under a new request.
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(token) = settings.auth.outbound_token() {
            // Workers that have the worker token configured refuse `/execute` without it.
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the worker token is not a valid HTTP header value")?;
            value.set_sensitive(true);
            let headers = [(header::AUTHORIZATION, value)].into_iter().collect();
            http = http.default_headers(headers);
        }
        let http = http
            .build()
            .context("building the HTTP client that talks to workers")?;
        let metrics = Arc::new(Metrics::new());
        let audit = match &settings.audit {
            Some(audit) => Some(AuditLog::open(audit, metrics.audit_write_failures())?),
            None => None,
        };
        Ok(AppState {
            scheduler: SchedulerHandle::spawn_audited(settings.scheduler.clone(), audit.clone()),
            http,
            limits: settings.limits,
            auth: Arc::new(settings.auth.clone()),
            audit,
            metrics,
            started_at_secs: unix_millis() / 1000,
            abort: watch::Sender::new(false),
            draining: Arc::new(AtomicBool::new(false)),
            cors_origins: Arc::new(settings.cors_origins.clone()),
            connections: settings.connections,
            allowed_hosts: settings.allowed_hosts.clone(),
            heartbeat_interval: RegistrationAccepted::heartbeat_interval_for(
                settings.scheduler.heartbeat_timeout,
            ),
            pools: crate::pools::Pools::new(settings.pools.clone()),
            aliases: Arc::new(settings.aliases.clone()),
            keys: KeyLedger::default(),
        })
    }

    /// Refuses new jobs from now on; jobs already admitted carry on.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.scheduler.stop_accepting();
    }

    /// Ends every in-flight job's stream with a `shutting_down` error.
    pub fn abort_jobs(&self) {
        self.abort.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn scheduler(&self) -> &SchedulerHandle {
        &self.scheduler
    }

    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// The client orcd reaches workers with (it carries the worker token).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn auth(&self) -> &AuthConfig {
        &self.auth
    }

    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The pool managers and the models loaded on them.
    pub fn pools(&self) -> &crate::pools::Pools {
        &self.pools
    }

    /// Other names for served models.
    pub fn aliases(&self) -> &ModelAliases {
        &self.aliases
    }

    /// Client keys' use: their limits and usage by key, model and day.
    pub fn keys(&self) -> &KeyLedger {
        &self.keys
    }

    /// Unix time orcd started, the `created` of the models it lists.
    pub fn started_at_secs(&self) -> u64 {
        self.started_at_secs
    }

    /// The metrics, for a job's task that outlives the request.
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The origins browsers may call from (`--cors-origin`).
    pub fn cors_origins(&self) -> &[HeaderValue] {
        &self.cors_origins
    }

    /// The listener's timeouts and connection limit.
    pub fn connections(&self) -> ConnectionLimits {
        self.connections
    }

    /// The `Host` rule, applied when there are no tokens.
    pub fn allowed_hosts(&self) -> &AllowedHosts {
        &self.allowed_hosts
    }

    /// How often workers are told to heartbeat.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Flips to `true` when in-flight jobs must end now (shutdown's drain is over).
    pub fn abort_signal(&self) -> watch::Receiver<bool> {
        self.abort.subscribe()
    }
}

/// Milliseconds since the Unix epoch, 0 before it.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
