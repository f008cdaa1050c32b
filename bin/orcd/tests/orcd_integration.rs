//! orcd's integration tests, one test binary: the real router (and, in `abuse`, the real
//! binary) against fake workers on loopback. One binary instead of one per file: each file
//! compiled as its own crate repeated the optimised build of axum, tokio and reqwest code it
//! uses, which made these tests the slowest part of a fresh CI build.

mod support;

mod abuse;
mod agents_api;
mod auth;
mod deploy;
mod events;
mod on_demand;
mod openai;
mod relay;
mod token_counts;
