//! End to end across a real network boundary, where `ip netns` works: orcd runs in one network
//! namespace and a private sshd in another, joined by a veth pair. `cargo xtask pool worker
//! spawn --host` in the first namespace starts the real llorch-worker in the second over SSH;
//! the worker registers with orcd across the link, and a task sent to orcd is answered by it.
//!
//! Needs the release `orcd` and `llorch-worker` (`cargo xtask build all`) and the default model
//! (`cargo xtask models download`). Without network namespaces (no root, no `ip`) the test
//! reports itself skipped with the reason, and `cargo xtask test` counts it so.

use crate::support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use support::netns::{in_netns, ip, KillOnDrop};
use support::{Sshd, SshdOptions};

/// Two network namespaces joined by a veth pair: `a` at `a_ip`, `b` at `b_ip`. Deleted on drop,
/// which also removes the link.
struct NetnsPair {
    a: String,
    b: String,
    a_ip: String,
    b_ip: String,
}

impl NetnsPair {
    /// Err(reason) when this machine cannot make network namespaces.
    fn create() -> Result<NetnsPair, String> {
        let id = std::process::id();
        let subnet = format!("10.213.{}", id % 200 + 20);
        let pair = NetnsPair {
            a: format!("llorch-a-{id}"),
            b: format!("llorch-b-{id}"),
            a_ip: format!("{subnet}.1"),
            b_ip: format!("{subnet}.2"),
        };
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        let (link_a, link_b) = (format!("llA{id}"), format!("llB{id}"));
        ip(&[
            "link", "add", &link_a, "netns", &pair.a, "type", "veth", "peer", "name", &link_b,
            "netns", &pair.b,
        ])?;
        for (netns, link, address) in [
            (&pair.a, &link_a, &pair.a_ip),
            (&pair.b, &link_b, &pair.b_ip),
        ] {
            ip(&[
                "-n",
                netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                link,
            ])?;
            ip(&["-n", netns, "link", "set", link, "up"])?;
            ip(&["-n", netns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// The test's worker as orcd lists it live.
fn is_live(worker: &llorch_api::WorkerInfo) -> bool {
    worker.worker_id == "netns-worker" && worker.state == llorch_api::WorkerState::Live
}

fn release_binary(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo xtask build all` (or point LLORCH_BIN_DIR at the release binaries)",
        path.display()
    );
    path
}

#[test]
fn a_worker_in_another_network_namespace_registers_with_orcd_and_serves_a_task() {
    let pair = match NetnsPair::create() {
        Ok(pair) => pair,
        Err(reason) => {
            support::report_skipped(
                "remote_netns::a_worker_in_another_network_namespace_registers_with_orcd_and_serves_a_task",
                &format!("network namespaces are not available here: {reason}"),
            );
            return;
        }
    };

    let bin_dir = std::env::var_os("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target/release"));
    let orcd_binary = release_binary(&bin_dir, "orcd");
    release_binary(&bin_dir, "llorch-worker");
    let model_base_dir = std::env::var_os("LLORCH_MODEL_BASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(llorch_catalog::default_model_base_dir);
    let catalog = llorch_catalog::Catalog::builtin();
    let model = catalog.default_model();
    let model_path = llorch_catalog::model_path(&model_base_dir, model);
    assert!(
        model_path.is_file(),
        "the default model is not at {}: run `cargo xtask models download {}`",
        model_path.display(),
        model.id
    );

    let logs = tempfile::tempdir().unwrap();
    let orcd_log = logs.path().join("orcd.log");
    let orcd_url = format!("http://{}:8080", pair.a_ip);
    let _orcd = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &pair.a])
            .arg(&orcd_binary)
            .args([
                "--listen",
                &format!("{}:8080", pair.a_ip),
                "--heartbeat-timeout-secs",
                "3",
                // A private namespace pair that nothing else can reach; tokens are tested
                // in orcd's own auth tests.
                "--insecure-no-auth",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&orcd_log).unwrap())
            .stderr(std::fs::File::create(logs.path().join("orcd.err")).unwrap())
            .spawn()
            .expect("starting orcd"),
    );
    let orcd_health = format!("{orcd_url}/health");
    let orcd_up = in_netns(&pair.a, || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if support::http_status(&orcd_health) == Some(200) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    });
    assert!(
        orcd_up,
        "orcd did not come up: {}",
        std::fs::read_to_string(logs.path().join("orcd.err")).unwrap_or_default()
    );

    let sshd = Sshd::start_with(SshdOptions {
        netns: Some(pair.b.clone()),
        listen: pair.b_ip.parse().unwrap(),
        remote_bin_dir: Some(bin_dir.clone()),
        remote_model_base_dir: Some(model_base_dir.clone()),
    });
    sshd.write_local_config("far", 10);
    let spawned = sshd
        .xtask_in_netns(Some(&pair.a))
        .run([
            "--json",
            "pool",
            "worker",
            "spawn",
            "cpu",
            "--model",
            &model.id,
            "--host",
            "far",
            "--bind",
            &pair.b_ip,
            "--id",
            "netns-worker",
            "--orchestrator-url",
            &orcd_url,
            "--timeout",
            "240",
            "--",
            "--slots",
            "1",
            "--ctx-size",
            "512",
        ])
        .success()
        .json();
    let worker_url = spawned["url"].as_str().unwrap().to_owned();
    assert!(
        worker_url.starts_with(&format!("http://{}:", pair.b_ip)),
        "{spawned}"
    );

    let (workers, result) = in_netns(&pair.a, || {
        let client = support::orcd_client(&orcd_url, None);
        let workers = client
            .wait_until_live("netns-worker live", Duration::from_secs(60), |workers| {
                workers.iter().any(is_live)
            })
            .unwrap_or_else(|not_live| not_live.last);
        let result = client.post_body::<_, llorch_api::TaskResult>(
            "/v2/tasks",
            &serde_json::json!({
                "model": model.id,
                "prompt": "The capital of France is",
                "max_tokens": 8,
                "stream": false,
            }),
        );
        (workers, result)
    });
    let registered = workers
        .iter()
        .find(|worker| worker.worker_id == "netns-worker")
        .unwrap_or_else(|| panic!("the worker never registered with orcd: {workers:?}"));
    assert_eq!(
        registered.url, worker_url,
        "orcd reaches the worker at its address in the other namespace"
    );
    let result = result.expect("orcd ran a task on the worker across the namespace boundary");
    assert_eq!(result.worker_id, "netns-worker");
    assert!(result.stats.generated_tokens > 0, "{result:?}");

    sshd.xtask_in_netns(Some(&pair.a))
        .run(["pool", "worker", "stop", "netns-worker", "--host", "far"])
        .success();
    let gone = in_netns(&pair.a, || {
        support::orcd_client(&orcd_url, None)
            .wait_until_live(
                "netns-worker no longer live",
                Duration::from_secs(20),
                |workers| !workers.iter().any(is_live),
            )
            .is_ok()
    });
    assert!(gone, "orcd still counts the stopped worker as live");
}
