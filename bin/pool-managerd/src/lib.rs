//! `llorch-pool-managerd`: one per host. It reports the host (CPU, memory, GPUs, disk, models,
//! workers) to orcd, and starts, supervises and stops `llorch-worker` processes when orcd asks.

pub mod download;
pub mod flags;
pub mod host;
pub mod lifecycle;
pub mod registration;
pub mod server;
pub mod supervisor;
