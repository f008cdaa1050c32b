//! Scheduling: which worker runs which job, and who waits. `core` decides (pure, testable with
//! a fake clock); `actor` owns the core in one task and talks to the rest of orcd over channels.

mod actor;
pub mod affinity;
mod core;
mod queue_wait;

pub use actor::{JobNotice, SchedulerHandle};
pub use core::{
    Assignment, DispatchFailure, Effect, JobOutcome, ModelSummary, NewJob, Routing,
    SchedulerConfig, SchedulerCore, DEFAULT_DEAD_WORKER_RETENTION, FINISHING_LEAD_TOKENS,
};
