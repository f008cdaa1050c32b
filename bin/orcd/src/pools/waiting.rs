//! While a native stream's model loads, the client hears about it: once placement has chosen
//! a host (a load that cannot be placed is still a plain 503), a `queued` event with `state:
//! "loading"`, the host and the time since the wait began, at once and every
//! [`PROGRESS_INTERVAL`].

use std::time::{Duration, Instant};

use llorch_api::StreamEvent;
use tokio::sync::mpsc;

use tokio::sync::watch;

use super::loader::{start_or_join, wait_loaded};
use super::LoadStatus;
use crate::dispatch::JobItem;
use crate::error::OrcdError;
use crate::state::AppState;

/// How often a waiting stream is told that its model still loads.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// How a wait for a load ended.
#[derive(Debug)]
pub enum LoadWait {
    Loaded,
    Failed(OrcdError),
    /// The client closed its stream; the load goes on for the next request.
    ClientGone,
}

/// Starts or joins `model`'s load and returns its status once placement has chosen a host or
/// the load has ended (at most `--load-timeout-secs`).
pub async fn until_placed(state: &AppState, model: &str) -> watch::Receiver<LoadStatus> {
    let mut status = start_or_join(state, model, None);
    let placed = |status: &LoadStatus| !matches!(status, LoadStatus::Loading { host_id: None });
    let _ = tokio::time::timeout(
        state.pools().settings().load_timeout,
        status.wait_for(placed),
    )
    .await;
    status
}

/// The load is still going on.
pub fn still_loading(status: &watch::Receiver<LoadStatus>) -> bool {
    matches!(&*status.borrow(), LoadStatus::Loading { .. })
}

/// Reports the load behind `status` on `items` as job `job_id`'s `queued` events until it
/// ends.
pub async fn load_reporting(
    state: &AppState,
    model: &str,
    status: watch::Receiver<LoadStatus>,
    job_id: &str,
    items: &mpsc::Sender<JobItem>,
) -> LoadWait {
    let mut changes = status.clone();
    let wait = wait_loaded(state, model, status);
    tokio::pin!(wait);
    // Counted from the placement: the moments before it are not worth a figure.
    let began = Instant::now();
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    let mut watching = true;
    loop {
        tokio::select! {
            // The tick first: its first one is immediate, so every wait is announced.
            biased;
            _ = tick.tick() => {}
            changed = changes.changed(), if watching => {
                watching = changed.is_ok();
            }
            outcome = &mut wait => {
                return match outcome {
                    Ok(()) => LoadWait::Loaded,
                    Err(error) => LoadWait::Failed(error),
                };
            }
        }
        let host_id = match &*changes.borrow_and_update() {
            LoadStatus::Loading { host_id } => host_id.clone(),
            // Over: the wait future says how, on the next turn.
            _ => continue,
        };
        let event = StreamEvent::loading(job_id, host_id, began.elapsed().as_millis() as u64);
        if items.send(Ok(event)).await.is_err() {
            return LoadWait::ClientGone;
        }
    }
}
