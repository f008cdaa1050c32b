//! [`OrcdClient`] for plain blocking code (xtask's commands): the async client driven by a
//! private single-threaded runtime, so commands stay scripted Rust without `async`.

use std::time::Duration;

use llorch_api::{StreamEvent, TaskRequest, WorkerInfo};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    orcd,
    wait::{NotLive, TimedOut},
    JobOutcome,
};

/// A blocking client of one orcd. Not for use inside an async runtime.
pub struct OrcdClient {
    inner: orcd::OrcdClient,
    runtime: tokio::runtime::Runtime,
}

impl OrcdClient {
    pub fn new(inner: orcd::OrcdClient) -> OrcdClient {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime always builds");
        OrcdClient { inner, runtime }
    }

    /// The async client underneath (for a thread of its own, say).
    pub fn inner(&self) -> &orcd::OrcdClient {
        &self.inner
    }

    pub fn base_url(&self) -> &str {
        self.inner.base_url()
    }

    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.runtime.block_on(self.inner.get_json(path))
    }

    pub fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.runtime.block_on(self.inner.delete_json(path))
    }

    /// A POST without a body (an action named by its path).
    pub fn post_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.runtime.block_on(self.inner.post_json(path))
    }

    /// A POST of `body` as JSON.
    pub fn post_body<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.runtime.block_on(self.inner.post_body(path, body))
    }

    pub fn workers(&self) -> anyhow::Result<Vec<WorkerInfo>> {
        self.runtime.block_on(self.inner.workers())
    }

    /// See [`orcd::OrcdClient::wait_for`].
    pub fn wait_for<T: DeserializeOwned + Default>(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        ready: impl FnMut(&T) -> bool,
    ) -> Result<T, TimedOut<T>> {
        self.runtime
            .block_on(self.inner.wait_for(path, what, timeout, ready))
    }

    /// See [`orcd::OrcdClient::wait_until_live`].
    pub fn wait_until_live(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut(&[WorkerInfo]) -> bool,
    ) -> Result<Vec<WorkerInfo>, NotLive> {
        self.runtime
            .block_on(self.inner.wait_until_live(what, timeout, ready))
    }

    /// See [`orcd::OrcdClient::follow_events`].
    pub fn follow_events(
        &self,
        path: &str,
        on_event: impl FnMut(&str, &str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        self.runtime
            .block_on(self.inner.follow_events(path, on_event))
    }

    /// See [`orcd::OrcdClient::submit`].
    pub fn submit(
        &self,
        request: &TaskRequest,
        on_event: impl FnMut(&StreamEvent) -> anyhow::Result<()>,
    ) -> anyhow::Result<JobOutcome> {
        self.runtime.block_on(self.inner.submit(request, on_event))
    }
}
