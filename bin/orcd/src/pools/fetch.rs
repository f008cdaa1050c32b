//! Downloads on demand: a request for a catalog model that no live host (allowed by its
//! policy) has on its disk makes orcd ask the pool manager of the live host with the most free
//! disk (enough for the catalog's size) to download it (`POST /models/{model}/download`), follow
//! its progress (`GET /downloads`) and wait for the host's heartbeat to list the model; placement
//! then loads it there, all within the load timeout. A download that outlasts the timeout goes on
//! on the host; the waiting requests get the 503 with the reason, and a later request loads it.

use std::time::{Duration, Instant};

use llorch_api::pool::{DownloadState, ModelDownload, PoolErrorBody};

use crate::state::AppState;

const POLL: Duration = Duration::from_millis(200);
const POOL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One host as a download sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskView {
    pub host_id: String,
    pub live: bool,
    /// Allowed by the model's `hosts` policy.
    pub allowed: bool,
    pub disk_free: u64,
    pub has_model: bool,
}

/// What to do about a model's file before placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadPlan {
    /// A live allowed host has it (or none is live: placement says why).
    NotNeeded,
    /// Download it on this host.
    On(String),
    /// No live allowed host has `size` bytes of disk free; `most_free` is the most one has.
    NoDisk { size: u64, most_free: u64 },
}

/// Pure: the host to download a model of `size` bytes to.
pub fn plan(hosts: &[DiskView], size: u64) -> DownloadPlan {
    let usable: Vec<&DiskView> = hosts
        .iter()
        .filter(|host| host.live && host.allowed)
        .collect();
    if usable.is_empty() || usable.iter().any(|host| host.has_model) {
        return DownloadPlan::NotNeeded;
    }
    let best = usable
        .iter()
        .filter(|host| host.disk_free >= size)
        .max_by(|a, b| {
            a.disk_free
                .cmp(&b.disk_free)
                .then_with(|| b.host_id.cmp(&a.host_id))
        });
    match best {
        Some(host) => DownloadPlan::On(host.host_id.clone()),
        None => DownloadPlan::NoDisk {
            size,
            most_free: usable.iter().map(|host| host.disk_free).max().unwrap_or(0),
        },
    }
}

/// The catalog's size of `model`, when orcd's catalog (the built-in one) has it: only those
/// are downloaded on demand.
pub fn catalog_size(model: &str) -> Option<u64> {
    llorch_catalog::Catalog::builtin()
        .get(model)
        .map(|entry| entry.size)
}

/// The hosts as [`plan`] sees them, with the model's `hosts` policy.
pub fn disk_views(
    state: &AppState,
    model: &str,
    allowed_hosts: Option<&[String]>,
) -> Vec<DiskView> {
    let hosts = state.pools().hosts();
    let now = Instant::now();
    hosts
        .records()
        .into_iter()
        .map(|record| DiskView {
            live: record.is_live(now, hosts.timeout()),
            allowed: allowed_hosts.is_none_or(|allowed| allowed.contains(&record.host_id)),
            disk_free: record.facts.disk_free_bytes,
            has_model: record.facts.models.iter().any(|disk| disk.model == model),
            host_id: record.host_id,
        })
        .collect()
}

/// Has `host_id`'s pool manager download `model` and waits, until `deadline`, for its heartbeat
/// to list the model on its disk; the reason when it failed or did not finish in time. The
/// loader announces it (events, audit).
pub async fn download(
    state: &AppState,
    host_id: &str,
    model: &str,
    deadline: Instant,
) -> Result<(), String> {
    let Some(host) = state.pools().hosts().get(host_id) else {
        return Err("the host deregistered".to_owned());
    };
    let response = state
        .http()
        .post(format!("{}/models/{model}/download", host.url))
        .timeout(POOL_REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|error| format!("the pool manager at {} did not answer: {error}", host.url))?;
    let status = response.status();
    // 409: one is running already (an earlier request's, or the operator's): follow it.
    if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
        let body = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<PoolErrorBody>(&body)
            .map(|error| error.error)
            .unwrap_or(body);
        return Err(format!(
            "the pool manager refused to download it ({status}): {reason}"
        ));
    }
    loop {
        let downloads: Vec<ModelDownload> = match state
            .http()
            .get(format!("{}/downloads", host.url))
            .timeout(POOL_REQUEST_TIMEOUT)
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let on_disk = state
            .pools()
            .hosts()
            .get(host_id)
            .is_some_and(|record| record.facts.models.iter().any(|disk| disk.model == model));
        match downloads.iter().find(|download| download.model == model) {
            Some(download) if download.state == DownloadState::Failed => {
                return Err(format!(
                    "the download failed: {}",
                    download.error.as_deref().unwrap_or("no reason given")
                ))
            }
            // Done, and the heartbeat lists it: placement can use it.
            Some(download) if download.state == DownloadState::Done && on_disk => break,
            None if on_disk => break,
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "its download did not finish within the load timeout; it goes on on the host, and a request after it finished loads the model\nhint: `GET /v2/hosts/{host_id}/downloads` shows its progress"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, live: bool, disk_free: u64, has_model: bool) -> DiskView {
        DiskView {
            host_id: id.into(),
            live,
            allowed: true,
            disk_free,
            has_model,
        }
    }

    #[test]
    fn a_model_is_downloaded_only_where_no_live_host_has_it() {
        assert_eq!(
            plan(&[host("a", true, 10, true), host("b", true, 100, false)], 5),
            DownloadPlan::NotNeeded
        );
        // A lost host's copy does not count.
        assert_eq!(
            plan(
                &[host("a", false, 10, true), host("b", true, 100, false)],
                5
            ),
            DownloadPlan::On("b".into())
        );
        assert_eq!(plan(&[], 5), DownloadPlan::NotNeeded);
    }

    #[test]
    fn the_host_with_the_most_free_disk_that_fits_it_gets_it() {
        let hosts = [
            host("a", true, 50, false),
            host("b", true, 90, false),
            host("c", true, 90, false),
            host("d", false, 900, false),
        ];
        // b and c tie: the first by id.
        assert_eq!(plan(&hosts, 40), DownloadPlan::On("b".into()));
        assert_eq!(
            plan(&hosts, 100),
            DownloadPlan::NoDisk {
                size: 100,
                most_free: 90
            }
        );
        let mut not_allowed = hosts.clone();
        not_allowed[1].allowed = false;
        not_allowed[2].allowed = false;
        assert_eq!(plan(&not_allowed, 40), DownloadPlan::On("a".into()));
    }

    #[test]
    fn only_catalog_models_are_downloaded() {
        assert!(catalog_size("qwen2.5-coder-0.5b").is_some());
        assert_eq!(catalog_size("no-such-model"), None);
    }
}
