//! `GET /v2/events`: the fleet event stream over SSE — a snapshot, then every change that the
//! scheduler's [`FleetObserver`](crate::events::FleetObserver) publishes, filtered to what the
//! caller's token may see. The web console and `cargo xtask top` read it.

use std::convert::Infallible;

use axum::extract::{Extension, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use llorch_api::fleet::FleetEvent;
use tokio::sync::broadcast;

use crate::auth::JobScope;
use crate::error::OrcdError;
use crate::events::Subscription;
use crate::scheduler::SchedulerHandle;
use crate::sse::X_ACCEL_BUFFERING;
use crate::state::AppState;

/// `GET /v2/events`: the snapshot, then every change, as server-sent events named by
/// [`FleetEvent::name`]. A subscriber that falls behind gets a fresh snapshot.
/// Jobs follow the ownership rule of `/v2/tasks`: a client token sees only the jobs it
/// submitted, an operator token (or orcd without tokens) sees every job.
pub async fn fleet_events(
    State(state): State<AppState>,
    Extension(scope): Extension<JobScope>,
) -> Result<Response, OrcdError> {
    let scheduler = state.scheduler().clone();
    let subscription = scheduler.subscribe().await?;
    let events = futures::stream::unfold(
        Subscriber::Starting(scheduler, subscription),
        Subscriber::next,
    )
    .filter_map(move |event| std::future::ready(visible_to(&scope, event)))
    .map(|event| Ok::<_, Infallible>(Event::default().event(event.name()).data(event.data_json())));
    Ok((
        [(X_ACCEL_BUFFERING, "no")],
        Sse::new(events).keep_alive(KeepAlive::default()),
    )
        .into_response())
}

/// The event as `scope` may see it: other owners' jobs are left out of snapshots and their
/// job events are not sent.
fn visible_to(scope: &JobScope, event: FleetEvent) -> Option<FleetEvent> {
    match event {
        FleetEvent::Job(job) if !scope.allows(job.owner.as_deref()) => None,
        FleetEvent::Snapshot(mut snapshot) => {
            snapshot
                .jobs
                .retain(|job| scope.allows(job.owner.as_deref()));
            Some(FleetEvent::Snapshot(snapshot))
        }
        event => Some(event),
    }
}

/// The state of one subscriber's stream.
enum Subscriber {
    Starting(SchedulerHandle, Subscription),
    Following(SchedulerHandle, broadcast::Receiver<FleetEvent>),
}

impl Subscriber {
    async fn next(self) -> Option<(FleetEvent, Subscriber)> {
        match self {
            Subscriber::Starting(scheduler, (snapshot, receiver)) => Some((
                FleetEvent::Snapshot(snapshot),
                Subscriber::Following(scheduler, receiver),
            )),
            Subscriber::Following(scheduler, mut receiver) => match receiver.recv().await {
                Ok(event) => Some((event, Subscriber::Following(scheduler, receiver))),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        "fleet event subscriber fell behind; resending a snapshot"
                    );
                    let (snapshot, receiver) = scheduler.subscribe().await.ok()?;
                    Some((
                        FleetEvent::Snapshot(snapshot),
                        Subscriber::Following(scheduler, receiver),
                    ))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            },
        }
    }
}
