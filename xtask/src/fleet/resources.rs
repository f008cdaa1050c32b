//! `fleet status`'s host resources: each fleet host's pool manager as orcd sees it
//! (`GET /v2/hosts`): cores and load, RAM used of total (and the memory budget), VRAM per GPU,
//! free disk, models on disk and the workers it runs.

use llorch_api::pool::{HostInfo, HostState, PoolWorkerState};
use serde::Serialize;

use super::file::FleetHost;
use crate::output::human_bytes;

/// One fleet host's resources, or why there are none.
#[derive(Debug, Serialize)]
pub struct HostResources {
    pub host: String,
    /// The fleet file gives the host a pool manager.
    pub pool_manager: bool,
    /// orcd lists it and its heartbeats arrive.
    pub live: bool,
    pub problem: Option<String>,
    /// What orcd knows of it (its facts, as the pool manager last reported them).
    pub orcd: Option<HostInfo>,
}

/// The fleet's hosts against what orcd lists; `orcd_error` when orcd could not be asked.
pub fn rows(
    hosts: &[FleetHost],
    listed: &[HostInfo],
    orcd_error: Option<&str>,
) -> Vec<HostResources> {
    hosts
        .iter()
        .map(|host| {
            let found = listed.iter().find(|info| info.host_id == host.name);
            let live = found.is_some_and(|info| info.state == HostState::Live);
            let problem = match (host.pool_manager.is_some(), found, orcd_error) {
                (false, _, _) => None,
                (true, _, Some(error)) => Some(format!(
                    "orcd: {}",
                    error.lines().next().unwrap_or_default()
                )),
                (true, None, None) => Some("pool manager not registered with orcd".to_owned()),
                (true, Some(info), None) if !live => Some(format!(
                    "pool manager lost (last heartbeat {} s ago)",
                    info.last_seen_ms_ago / 1000
                )),
                _ => None,
            };
            HostResources {
                host: host.name.clone(),
                pool_manager: host.pool_manager.is_some(),
                live,
                problem,
                orcd: found.cloned(),
            }
        })
        .collect()
}

/// `used / total` with the budget when there is one: `3.1 GB / 16.0 GB (budget 700.0 MB)`.
fn ram(info: &HostInfo) -> String {
    let facts = &info.facts;
    let used = facts
        .ram_total_bytes
        .saturating_sub(facts.ram_available_bytes);
    let mut text = format!(
        "{} / {}",
        human_bytes(used),
        human_bytes(facts.ram_total_bytes)
    );
    if let Some(budget) = facts.memory_budget_bytes {
        text.push_str(&format!(" (budget {})", human_bytes(budget)));
    }
    text
}

fn vram(info: &HostInfo) -> String {
    if info.facts.gpus.is_empty() {
        return "-".to_owned();
    }
    info.facts
        .gpus
        .iter()
        .map(|gpu| {
            format!(
                "{}: {} / {}",
                gpu.index,
                human_bytes(gpu.memory_used_bytes),
                human_bytes(gpu.memory_total_bytes)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `qwen2.5-coder-0.5b running, gemma3-270m starting`, or `-`.
fn workers(info: &HostInfo) -> String {
    if info.facts.workers.is_empty() {
        return "-".to_owned();
    }
    info.facts
        .workers
        .iter()
        .map(|worker| {
            let state = match worker.state {
                PoolWorkerState::Starting => "starting",
                PoolWorkerState::Running => "running",
                PoolWorkerState::Restarting => "restarting",
                PoolWorkerState::Stopping => "stopping",
                PoolWorkerState::Failed => "FAILED",
            };
            format!("{} {state}", worker.launch.model)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines `fleet status` prints for the hosts' resources.
pub fn describe(rows: &[HostResources]) -> Vec<String> {
    rows.iter()
        .filter(|row| row.pool_manager)
        .map(|row| match (&row.orcd, &row.problem) {
            (Some(info), None) => format!(
                "{}: {} cores, load {:.2}; RAM {}; VRAM {}; disk free {}; {} model(s) on disk; workers: {}",
                row.host,
                info.facts.physical_cores,
                info.facts.load_average,
                ram(info),
                vram(info),
                human_bytes(info.facts.disk_free_bytes),
                info.facts.models.len(),
                workers(info)
            ),
            (_, Some(problem)) => format!("{}: {problem}", row.host),
            (None, None) => format!("{}: not reported", row.host),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use llorch_api::pool::{HostFacts, PoolWorker, WorkerLaunch};

    use super::*;

    fn fleet_host(name: &str, pool_manager: bool) -> FleetHost {
        let text = format!(
            "[orchestrator]\nurl = \"http://127.0.0.1:8080\"\n[hosts.local]\n{}",
            if pool_manager {
                ""
            } else {
                "pool_manager = { enabled = false }\n"
            }
        );
        let mut host = super::super::file::parse(&text, std::path::Path::new("f.toml"), &|_| None)
            .unwrap()
            .hosts
            .remove(0);
        host.name = name.to_owned();
        host
    }

    fn info(name: &str, state: HostState) -> HostInfo {
        HostInfo {
            host_id: name.to_owned(),
            url: "http://10.0.0.2:9100".into(),
            state,
            last_seen_ms_ago: 12_000,
            facts: HostFacts {
                host_name: name.to_owned(),
                os: "linux".into(),
                cpu_model: "cpu".into(),
                physical_cores: 8,
                ram_total_bytes: 16_000_000_000,
                ram_available_bytes: 12_000_000_000,
                load_average: 0.5,
                gpus: Vec::new(),
                disk_free_bytes: 100_000_000_000,
                models: Vec::new(),
                workers: vec![PoolWorker {
                    worker_id: "a-1".into(),
                    launch: WorkerLaunch::of_model("gemma3-270m"),
                    port: Some(9001),
                    pid: Some(1),
                    state: PoolWorkerState::Running,
                    rss_bytes: None,
                    estimated_bytes: 1,
                    restarts: 0,
                    last_log: Vec::new(),
                }],
                memory_budget_bytes: Some(700_000_000),
                backends: Vec::new(),
            },
        }
    }

    #[test]
    fn live_hosts_show_their_resources_and_missing_or_lost_ones_a_problem() {
        let hosts = [
            fleet_host("a", true),
            fleet_host("b", true),
            fleet_host("c", true),
            fleet_host("d", false),
        ];
        let listed = [info("a", HostState::Live), info("b", HostState::Lost)];
        let rows = rows(&hosts, &listed, None);
        assert!(rows[0].live && rows[0].problem.is_none());
        assert_eq!(
            rows[1].problem.as_deref(),
            Some("pool manager lost (last heartbeat 12 s ago)")
        );
        assert_eq!(
            rows[2].problem.as_deref(),
            Some("pool manager not registered with orcd")
        );
        assert!(
            rows[3].problem.is_none(),
            "no pool manager, nothing to miss"
        );
        let lines = describe(&rows);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("a: 8 cores, load 0.50; RAM 4.0 GB / 16.0 GB (budget 700.0 MB)"),
            "{lines:?}"
        );
        assert!(
            lines[0].ends_with("workers: gemma3-270m running"),
            "{lines:?}"
        );
    }

    #[test]
    fn an_unreachable_orcd_is_every_pool_host_s_problem() {
        let rows = rows(
            &[fleet_host("a", true)],
            &[],
            Some("connection refused\nmore"),
        );
        assert_eq!(rows[0].problem.as_deref(), Some("orcd: connection refused"));
    }
}
