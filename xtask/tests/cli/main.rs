//! xtask's end-to-end tests that run the real `cargo xtask` binary, one module per command
//! domain, compiled as one test binary: the support code is compiled and linked once instead of
//! once per file, which a fresh clone's CI otherwise pays for two dozen times. The tests that
//! bring their own harness (the network-namespace fleets: `fleet_netns`, `multihost_netns`,
//! `pool_fleet_netns`) stay binaries of their own.

#[path = "../fixtures/mod.rs"]
mod fixtures;
#[path = "../models_support/mod.rs"]
mod models_support;
#[path = "../support/mod.rs"]
mod support;

mod audit_verify;
mod build_commands;
mod build_test_suites;
mod dev_check;
mod dev_doctor;
mod fleet_catalog;
mod fleet_local;
mod git_pull;
mod git_status;
mod git_submodules;
mod git_sync;
mod models_catalog;
mod models_convert;
mod models_hub;
mod models_pip;
mod models_placement;
mod models_pool_download;
mod pool_remote;
mod pool_worker;
mod remote_errors;
mod remote_exec;
mod remote_forward;
mod remote_hosts;
mod remote_netns;
mod stack_up;
