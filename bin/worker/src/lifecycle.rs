//! The worker's life from start to exit: resolve the model, listen, load, register with orcd,
//! and on SIGTERM or SIGINT drain running jobs, deregister and exit 0.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use llorch_api::WorkerRegistration;
use tokio::{
    net::TcpListener,
    signal::unix::{signal, Signal, SignalKind},
    sync::watch,
};

use crate::{
    auth::WorkerAuth,
    embeddings::{EmbeddingSettings, Embeddings},
    engine::{EngineHandle, EngineSettings, ModelSource},
    flags::{default_worker_id, WorkerArgs},
    model_source::resolve_model,
    registration::{self, RegistrationReport, RegistrationSettings},
    server::app_with_host_rule,
    state::AppState,
};

/// After the drain, how long closing connections and deregistering may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    args.check_backend()?;
    let mut signals = ShutdownSignals::install()?;
    let auth = WorkerAuth::from_file(args.worker_token_file.as_deref())
        .context("reading `--worker-token-file`")?;
    let allowed_hosts = args.allowed_hosts()?;
    let base_dir = args
        .model_base_dir
        .clone()
        .unwrap_or_else(llorch_catalog::default_model_base_dir);
    let catalog_dir = args
        .catalog_dir
        .clone()
        .unwrap_or_else(llorch_catalog::default_catalog_dir);
    let model = resolve_model(
        &args.model,
        &base_dir,
        args.catalog.as_deref(),
        &catalog_dir,
    )
    .with_context(|| format!("resolving `--model {}`", args.model))?;
    let settings = EngineSettings {
        model_id: args.model_id.clone().unwrap_or(model.id),
        backend: args.backend,
        gpu: args.gpu,
        threads: args.threads(),
        threads_batch: args.threads_batch(),
        adapt_threads: args.adapt_threads(),
        ctx_size: args.ctx_size,
        slots: args.slots,
        batch_size: args.batch_size,
        queue_size: args.queue_size,
        max_burst_wait: Duration::from_millis(args.max_burst_wait_ms),
        speculation: args.speculative,
    };

    // Listen before loading: the port is known at once and `/health` says `loading` meanwhile.
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| {
            format!(
                "listening on {}:{}\nhint: pick another `--port`, or `--port 0` for any free one",
                args.host, args.port
            )
        })?;
    let address = listener.local_addr().context("reading the bound address")?;
    // One machine-readable line on stdout: scripts and tests started with `--port 0` read it.
    println!("llorch-worker listening on http://{address}");
    tracing::info!(
        %address,
        model = %model.path.display(),
        model_id = %settings.model_id,
        authentication = if auth.is_enabled() { "worker token" } else { "off" },
        "listening"
    );

    let engine = EngineHandle::start(settings.clone(), ModelSource::File(model.path));
    let embeddings = if args.embeddings {
        Embeddings::enabled()
    } else {
        Embeddings::disabled()
    };
    let registration_report = RegistrationReport::default();
    let (stop_tx, stop) = watch::channel(false);
    // The listener stays open through the drain, so `/health` keeps answering `draining`.
    let router = app_with_host_rule(
        AppState {
            engine: engine.clone(),
            auth: Arc::new(auth.clone()),
            registration: registration_report.clone(),
            embeddings: embeddings.clone(),
        },
        allowed_hosts,
    );
    let server = tokio::spawn(llorch_serve::serve(
        listener,
        router,
        args.connections.limits(),
        wait_for(stop.clone()),
        CLOSE_TIMEOUT,
    ));

    tokio::select! {
        ready = engine.wait_ready() => {
            if let Err(message) = ready {
                let _ = stop_tx.send(true);
                anyhow::bail!("{message}");
            }
        }
        signal = signals.recv() => {
            // Nothing runs yet; the loading thread ends with the process.
            tracing::info!(signal, "stopping before the model finished loading");
            let _ = stop_tx.send(true);
            return Ok(());
        }
    }

    // Before registering: orcd routes `/v1/embeddings` here as soon as it knows.
    if embeddings.is_enabled() {
        let embedding_settings =
            EmbeddingSettings::for_engine(&settings, args.max_embedding_tokens);
        if let Err(message) = embeddings.start(&engine, embedding_settings).await {
            let _ = stop_tx.send(true);
            anyhow::bail!("starting embeddings (`--embeddings`): {message}");
        }
    }

    let registration = args.orchestrator_url.as_ref().map(|url| {
        let worker_url = args
            .advertise_url
            .clone()
            .unwrap_or_else(|| default_advertise_url(address));
        let settings = RegistrationSettings {
            orchestrator_url: url.clone(),
            registration: WorkerRegistration {
                worker_id: args
                    .worker_id
                    .clone()
                    .unwrap_or_else(|| default_worker_id(&args.host, address.port())),
                url: worker_url,
                model: settings.model_id.clone(),
                backend: settings.backend,
                slots: settings.slots,
                ctx_size: settings.ctx_size,
                embeddings: args.embeddings,
            },
            heartbeat_interval: args.heartbeat_interval(),
            token: auth.outbound().map(str::to_owned),
        };
        let given_up = engine.clone();
        tokio::spawn(registration::run(
            settings,
            engine.subscribe_load(),
            stop.clone(),
            registration_report.clone(),
            move |job_ids| given_up.cancel_given_up(job_ids),
        ))
    });

    let result = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "draining: running jobs may finish, new ones are refused");
            drain(&engine, args.drain_timeout(), &mut signals).await;
            Ok(())
        }
        failure = engine.wait_stopped() => Err(anyhow::anyhow!("the engine stopped: {failure}")),
    };

    let _ = stop_tx.send(true);
    if tokio::time::timeout(CLOSE_TIMEOUT, server).await.is_err() {
        tracing::warn!("connections still open after the drain; closing them");
    }
    if let Some(registration) = registration {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, registration).await;
    }
    engine.shutdown().await;
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// Where orcd reaches the worker when `--advertise-url` is not given. A wildcard bind is
/// reached on loopback: right when orcd runs on the same machine, and a remote orcd needs
/// `--advertise-url` anyway since only the operator knows the routable name.
fn default_advertise_url(address: SocketAddr) -> String {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, address.port()))
}

/// Stops taking jobs and lets running ones finish for up to `timeout` (a second signal cuts it
/// short); what is still running then ends with a `shutting_down` error event.
async fn drain(engine: &EngineHandle, timeout: Duration, signals: &mut ShutdownSignals) {
    engine.begin_drain();
    let cancel_reason = tokio::select! {
        _ = engine.wait_idle() => return,
        _ = tokio::time::sleep(timeout) => "drain timeout",
        _ = signals.recv() => "second signal",
    };
    tracing::warn!(
        reason = cancel_reason,
        jobs = engine.load().busy + engine.load().waiting,
        "cancelling the jobs still running"
    );
    engine.cancel_all();
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, engine.wait_idle()).await;
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// SIGTERM and SIGINT, installed once at startup so that no signal falls between two waits.
struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_advertised_on_loopback() {
        let url = |address: &str| default_advertise_url(address.parse().unwrap());
        assert_eq!(url("0.0.0.0:9001"), "http://127.0.0.1:9001");
        assert_eq!(url("[::]:9001"), "http://[::1]:9001");
        assert_eq!(url("10.1.2.3:9001"), "http://10.1.2.3:9001");
    }
}
