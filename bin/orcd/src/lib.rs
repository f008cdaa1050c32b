//! orcd, the llama-orch orchestrator: workers register and heartbeat, clients submit tasks, the
//! scheduler queues them per model and sends each to a live worker with a free slot, and the
//! worker's token stream is relayed back over SSE.
//!
//! A request's path: `auth` (token check) → `server` or `openai` (route, `extract` and
//! `validation`) → `scheduler` (admit, queue, pick a worker) → `dispatch` (`POST /execute` on
//! the worker, relay its events) → `sse` or `openai` (framing to the client). Along the way
//! `metrics` counts and `audit` records, when it is on; `events` publishes every change of the
//! fleet to the subscribers of `GET /v2/events` (the web console in `console`).

pub mod aliases;
pub mod anthropic;
pub mod anthropic_error;
pub mod audit;
pub mod auth;
pub mod authenticate;
pub mod config;
pub mod console;
pub mod cors;
pub mod dispatch;
pub mod error;
pub mod event_stream;
pub mod events;
pub mod extract;
pub mod keys;
pub mod metrics;
pub mod openai;
pub mod openai_error;
pub mod pools;
pub mod scheduler;
pub mod server;
pub mod sse;
pub mod state;
pub mod tasks;
pub mod validation;

use std::io::Write;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::{Args, Settings};
pub use server::{app, serve};
pub use state::AppState;

/// Binds, prints `orcd listening on http://ADDR` on stdout (scripts and tests read it) and
/// serves until ctrl-c or SIGTERM.
pub async fn run(args: &Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    auth::check_exposure(args.listen, &settings.auth, args.insecure_no_auth)?;
    if settings.auth.is_enabled() {
        // Fingerprints only: enough to tell which token file is loaded, useless to an attacker.
        let (client, worker) = settings.auth.fingerprints();
        tracing::info!(?client, ?worker, "authentication on");
    }
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "binding {}: is another orcd running there? choose another address with `--listen`",
            args.listen
        )
    })?;
    let address = listener.local_addr().context("reading the bound address")?;
    let state = AppState::new(&settings)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "orcd listening on http://{address}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    drop(stdout);
    tracing::info!(%address, "orcd listening");
    serve(listener, state, shutdown_signal(), settings.drain).await?;
    tracing::info!("orcd stopped");
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for ctrl-c: {error}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
