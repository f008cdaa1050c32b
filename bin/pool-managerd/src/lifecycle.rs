//! The pool manager's life: read its settings, listen, register with orcd, serve; on SIGTERM
//! or SIGINT refuse new workers, drain every worker, deregister and exit 0.

use std::time::Duration;

use anyhow::Context;
use llorch_api::secret::{read_token_file, TokenSet};
use llorch_catalog::Catalog;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::flags::PoolArgs;
use crate::registration::{self, OrcdSettings};
use crate::server::{app, AppState, StateParts};
use crate::supervisor::{Supervisor, WorkerDefaults};

/// After the workers drained, how long open connections may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: PoolArgs) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let tokens = match &args.worker_token_file {
        Some(path) => {
            read_token_file(path, "worker token").context("reading `--worker-token-file`")?
        }
        None => Vec::new(),
    };
    let catalog = load_catalog(&args)?;
    let host_id = args.host_id.clone().unwrap_or_else(crate::host::host_name);
    let host_id = sanitize_host_id(&host_id);
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
    println!("llorch-pool-managerd listening on http://{address}");
    let advertise_url = args
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", reachable(address)));
    let supervisor = Supervisor::new(WorkerDefaults {
        program: args.worker_bin()?,
        bind: args.host.clone(),
        advertise_host: advertise_host(&advertise_url),
        orchestrator_url: args.orchestrator_url.clone(),
        worker_token_file: args.worker_token_file.clone(),
        model_base_dir: args.model_base_dir(),
        catalog: args.catalog.clone(),
        catalog_dir: args.catalog_dir(),
        log_dir: args.log_dir(),
        host_id: host_id.clone(),
        drain_timeout: args.drain_timeout(),
        crash_loop_limit: args.crash_loop_limit,
    });
    let state = AppState::new(StateParts {
        host_id: host_id.clone(),
        supervisor: supervisor.clone(),
        tokens: TokenSet::new(&tokens).context("reading `--worker-token-file`")?,
        catalog,
        model_base_dir: args.model_base_dir(),
        memory_budget: args.memory_budget,
        backends: args.backends.clone(),
        pip_index_url: None,
    });
    tracing::info!(%address, %host_id, %advertise_url, "pool manager listening");

    let (stop_sender, stop) = watch::channel(false);
    let registration = args.orchestrator_url.clone().map(|orchestrator_url| {
        tokio::spawn(registration::run(
            OrcdSettings {
                orchestrator_url,
                advertise_url,
                heartbeat_interval: args.heartbeat_interval(),
                token: tokens.first().cloned(),
            },
            state.clone(),
            stop.clone(),
        ))
    });
    let mut serve_stop = stop.clone();
    let server = tokio::spawn(llorch_serve::serve(
        listener,
        app(state.clone()),
        args.connections.limits(),
        async move {
            let _ = serve_stop.wait_for(|stop| *stop).await;
        },
        CLOSE_GRACE,
    ));
    let signal = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal, "draining the workers, then exiting");
    state.begin_shutdown();
    supervisor.stop_all().await;
    let _ = stop_sender.send(true);
    if let Some(registration) = registration {
        let _ = registration.await;
    }
    let _ = server.await;
    tracing::info!("pool manager stopped");
    Ok(())
}

fn load_catalog(args: &PoolArgs) -> anyhow::Result<Catalog> {
    let catalog = match &args.catalog {
        Some(file) => Catalog::load(file).context("reading `--catalog`")?,
        None => Catalog::builtin(),
    };
    let catalog_dir = args.catalog_dir();
    catalog
        .with_user_dir(&catalog_dir)
        .with_context(|| format!("reading the user catalog {}", catalog_dir.display()))
}

/// Host names may carry characters worker ids do not allow.
fn sanitize_host_id(name: &str) -> String {
    name.chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                true => c,
                false => '-',
            },
        )
        .collect()
}

/// A wildcard bind is reached on loopback.
fn reachable(address: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    address
}

/// The host part of the advertised URL: workers are advertised on the same host.
fn advertise_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_host_is_the_urls_host() {
        assert_eq!(
            advertise_host("http://gpu-box:9100").as_deref(),
            Some("gpu-box")
        );
        assert_eq!(
            advertise_host("http://10.0.0.2:9100/").as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(
            advertise_host("http://[::1]:9100").as_deref(),
            Some("[::1]")
        );
        assert_eq!(advertise_host("http://host").as_deref(), Some("host"));
    }

    #[test]
    fn host_ids_lose_characters_paths_cannot_carry() {
        assert_eq!(sanitize_host_id("my box/1"), "my-box-1");
    }
}
