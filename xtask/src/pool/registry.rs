//! What orcd says of a worker that `pool` started: waiting until orcd lists it live, and
//! removing a dead worker's record (`pool worker forget`).

use std::time::Duration;

use llorch_api::{Backend, WorkerInfo, WorkerState};

/// How long orcd may take to list a worker as live once the worker says it registered.
const ORCD_CONFIRM_WAIT: Duration = Duration::from_secs(15);

/// Polls orcd's `GET /workers` until `worker_id` is live. `Ok(None)`: orcd answers but does
/// not list it live in time. An orcd this machine cannot ask is only a warning: the worker
/// itself reported its registration, and orcd may sit behind a network this machine is not on.
pub fn confirm_live(
    cx: &crate::Context,
    orchestrator_url: &str,
    worker_id: &str,
) -> anyhow::Result<Option<WorkerInfo>> {
    let client = crate::orcd::client(cx, orchestrator_url)?;
    if let Err(error) = client.workers() {
        warn_unconfirmed(cx, worker_id, &error)?;
        return Ok(Some(unconfirmed(worker_id)));
    }
    let is_live =
        |worker: &WorkerInfo| worker.worker_id == worker_id && worker.state == WorkerState::Live;
    let what = format!("`{worker_id}` live");
    Ok(client
        .wait_until_live(&what, ORCD_CONFIRM_WAIT, |workers| {
            workers.iter().any(is_live)
        })
        .ok()
        .and_then(|workers| workers.into_iter().find(is_live)))
}

/// Says why orcd could not confirm a worker: quietly where this machine has no client token
/// (a pool host: the operator's side confirms with its own), as a warning otherwise.
fn warn_unconfirmed(
    cx: &crate::Context,
    worker_id: &str,
    error: &anyhow::Error,
) -> anyhow::Result<()> {
    let Some(refusal) = error.downcast_ref::<llorch_client::OrcdRefusal>() else {
        cx.out.warn(format!(
            "could not confirm `{worker_id}` in orcd from this machine ({error:#}); the worker reported its registration"
        ));
        return Ok(());
    };
    let message = format!(
        "could not confirm `{worker_id}` in orcd: GET /workers answered {}",
        refusal.status
    );
    let has_client_token = crate::orcd::api_token(cx)?.is_some();
    match (refusal.status.as_u16(), has_client_token) {
        (401 | 403, false) => cx.out.debug(format!(
            "{message}; no client token on this machine, the worker reported its registration"
        )),
        (401 | 403, true) => cx.out.warn(format!(
            "{message}: orcd refused the client token of LLORCH_API_TOKEN_FILE / `orchestrator.api_token_file`"
        )),
        _ => cx.out.warn(message),
    }
    Ok(())
}

/// Stands in for orcd's record when orcd could not be asked from here.
fn unconfirmed(worker_id: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: worker_id.to_owned(),
        url: String::new(),
        model: String::new(),
        backend: Backend::Cpu,
        slots_total: 0,
        slots_busy: 0,
        ctx_size: 0,
        last_seen_ms_ago: 0,
        state: WorkerState::Live,
        embeddings: false,
    }
}

/// `pool worker forget ID`: orcd removes a dead worker's record.
pub fn forget(cx: &crate::Context, worker_id: &str) -> anyhow::Result<()> {
    crate::daemon::validate_name(worker_id)?;
    let path = format!("/workers/{}/forget", llorch_client::url_segment(worker_id));
    let info: WorkerInfo = crate::orcd::default_client(cx)?
        .post_json(&path)
        .map_err(|error| {
            let unknown = error
                .downcast_ref::<llorch_client::OrcdRefusal>()
                .is_some_and(|refusal| refusal.status == reqwest::StatusCode::NOT_FOUND);
            let error = error.context(format!("forgetting `{worker_id}`"));
            if unknown {
                error.context("hint: `GET /workers` on orcd lists the workers it knows")
            } else {
                error
            }
        })?;
    if cx.out.json() {
        return cx.out.print_json(&info);
    }
    cx.out.println(format!(
        "orcd forgot `{worker_id}` (was {} at {})",
        match info.state {
            WorkerState::Live => "live",
            WorkerState::Dead => "dead",
        },
        info.url
    ));
    Ok(())
}
