//! `cargo xtask fleet` end to end across network namespaces: this side (orcd and the operator's
//! xtask) in one namespace, two "hosts" with their own sshd in two others, all joined by a
//! bridge. One `fleet up` starts orcd and three real workers (gemma3-270m, 1 slot, small
//! context) on the two hosts; then `plan` has nothing to do, a changed slot count restarts
//! exactly one worker, killed workers are restored and nothing else is touched, a host whose
//! sshd is stopped is named in the summary while the other comes up, and `down` leaves no
//! worker, marker or unit behind.
//!
//! The hosts share this machine's filesystem (checkout, target dir, model directory), so the
//! checkout, build and model steps must be recognised as already done ("unchanged").
//!
//! Needs root and `ip netns` (without them the test is reported as ignored, never passed), the
//! release `llorch-worker` and `orcd` builds and gemma3-270m. Namespaces are named `lo-fl-*`.

mod support;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use libtest_mimic::{Arguments, Trial};
use serde_json::Value;
use support::netns::{in_netns, write_private, KillOnDrop, Namespaces};
use support::{Outcome, Sshd};

fn main() {
    let args = Arguments::from_args();
    let skip = support::netns::netns_unavailable("fl");
    if let Some(reason) = &skip {
        eprintln!("fleet_netns: skipping: network namespaces are not available here ({reason})");
    }
    let tests = vec![
        Trial::test("a_fleet_comes_up_from_one_file_and_keeps_to_it", || {
            a_fleet_comes_up_from_one_file_and_keeps_to_it();
            Ok(())
        })
        .with_ignored_flag(skip.is_some()),
    ];
    libtest_mimic::run(&args, tests).exit();
}

/// Stops the sshd of a host (SIGTERM to the pid in its PidFile).
fn stop_sshd(sshd: &Sshd) {
    let pid: libc::pid_t = std::fs::read_to_string(sshd.dir.path().join("sshd.pid"))
        .expect("sshd writes its PidFile")
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while support::pid_alive(pid as u32) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the host's sshd again with its own config, in its namespace.
fn restart_sshd(sshd: &Sshd, netns: &str) -> KillOnDrop {
    let log = sshd.dir.path().join("sshd-again.log");
    let child = Command::new("ip")
        .args(["netns", "exec", netns, "/usr/sbin/sshd", "-D", "-e", "-f"])
        .arg(sshd.dir.path().join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(sshd.dir.path().join("sshd-again.err")).unwrap())
        .spawn()
        .expect("starting sshd again");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let text =
            std::fs::read_to_string(sshd.dir.path().join("sshd-again.err")).unwrap_or_default();
        if text.contains("Server listening on") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    KillOnDrop(child)
}

fn fleet_toml(orcd: &str, dir: &Path, b2_slots: u32) -> String {
    let worker = |name: &str, slots: u32| {
        format!("name = \"{name}\"\nmodel = \"gemma3-270m\"\nslots = {slots}\nctx_size = 512\n")
    };
    format!(
        "[orchestrator]\nurl = \"http://{orcd}:8080\"\nlisten = \"{orcd}:8080\"\n\
         api_token_file = \"{api}\"\nworker_token_file = \"{worker}\"\n\n\
         [hosts.hb]\nsupervisor = \"detached\"\n[[hosts.hb.workers]]\n{b1}\n[[hosts.hb.workers]]\n{b2}\n\
         [hosts.hc]\n[[hosts.hc.workers]]\n{c1}",
        api = dir.join("api-token").display(),
        worker = dir.join("worker-token").display(),
        b1 = worker("fl-b1", 1),
        b2 = worker("fl-b2", b2_slots),
        c1 = worker("fl-c1", 1),
    )
}

/// The `hosts[]` entry of a `fleet up`/`down` document for `host`.
fn host<'a>(document: &'a Value, host: &str) -> &'a Value {
    document["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["host"] == host)
        .unwrap_or_else(|| panic!("no host {host} in {document:#}"))
}

/// `worker name -> action` of one host's entry.
fn actions(entry: &Value) -> Vec<(String, String)> {
    entry["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|worker| {
            (
                worker["name"].as_str().unwrap().to_owned(),
                worker["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(name, action)| ((*name).to_owned(), (*action).to_owned()))
        .collect()
}

fn pid_of(run_dir: &Path, worker: &str) -> Option<u32> {
    std::fs::read_to_string(run_dir.join(format!("{worker}.pid")))
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

fn a_fleet_comes_up_from_one_file_and_keeps_to_it() {
    let namespaces = Namespaces::create("fl").expect("creating the network namespaces");
    let (sshd_b, sshd_c) = support::netns::two_fleet_hosts(&namespaces, &["gemma3-270m"]);
    let secrets = tempfile::tempdir().unwrap();
    write_private(
        &secrets.path().join("api-token"),
        "fleet-api-token-0123456789abcdef\n",
    );
    write_private(
        &secrets.path().join("worker-token"),
        "fleet-worker-token-0123456789abcdef\n",
    );
    let fleet_file = secrets.path().join("fleet.toml");
    let orcd_address = namespaces.address(1);
    std::fs::write(&fleet_file, fleet_toml(&orcd_address, secrets.path(), 1)).unwrap();

    let fleet = |args: &[&str]| -> Outcome {
        let mut xtask = sshd_b.xtask_in_netns(Some(&namespaces.operator));
        xtask
            .env("LLORCH_FLEET", &fleet_file)
            .timeout(Duration::from_secs(600));
        let mut all = vec!["--json", "fleet"];
        all.extend(args);
        xtask.run(all)
    };
    let orcd_workers = || -> Vec<llorch_api::WorkerInfo> {
        let url = format!("http://{orcd_address}:8080");
        in_netns(&namespaces.operator, || {
            support::orcd_client(&url, Some("fleet-api-token-0123456789abcdef"))
                .workers()
                .unwrap_or_default()
        })
    };
    let live = |workers: &[llorch_api::WorkerInfo]| -> Vec<String> {
        let mut names: Vec<String> = workers
            .iter()
            .filter(|worker| worker.state == llorch_api::WorkerState::Live)
            .map(|worker| worker.worker_id.clone())
            .collect();
        names.sort();
        names
    };
    let run_b = sshd_b.remote.run_dir.clone();
    let run_c = sshd_c.remote.run_dir.clone();

    // 1. One command: orcd and three workers on two hosts.
    let started = std::time::Instant::now();
    let first = fleet(&["up"]).success().json();
    eprintln!("first up took {:.1?}", started.elapsed());
    assert_eq!(first["orchestrator"]["started"], true, "{first:#}");
    assert_eq!(
        actions(host(&first, "hb")),
        pairs(&[("fl-b1", "start"), ("fl-b2", "start")]),
        "{first:#}"
    );
    assert_eq!(actions(host(&first, "hc")), pairs(&[("fl-c1", "start")]));
    // The hosts share this machine's checkout and models: found in place, not redone. The
    // build may still compile the first time (the test harness built with other cargo
    // variables); the second `up` below must then find it done.
    for name in ["hb", "hc"] {
        for step in host(&first, name)["steps"].as_array().unwrap() {
            // Shown in the suite's output (.config/nextest.toml): what a first `up` in a
            // fresh clone spends its time on.
            eprintln!(
                "first up, {name}: {}: {} ({})",
                step["step"], step["outcome"], step["detail"]
            );
            if step["step"] != "token" && step["step"] != "build" {
                assert_eq!(step["outcome"], "unchanged", "{name}: {step:#}");
            }
        }
    }
    assert_eq!(live(&orcd_workers()), ["fl-b1", "fl-b2", "fl-c1"]);
    let worker_b1 = orcd_workers()
        .into_iter()
        .find(|w| w.worker_id == "fl-b1")
        .unwrap();
    assert_eq!(
        worker_b1.url,
        format!("http://{}:9001", namespaces.address(2))
    );
    let pids = |run_dir: &Path, name: &str| {
        pid_of(run_dir, name).unwrap_or_else(|| panic!("no pid for {name}"))
    };
    let (b1, b2, c1) = (
        pids(&run_b, "fl-b1"),
        pids(&run_b, "fl-b2"),
        pids(&run_c, "fl-c1"),
    );

    // 2. Nothing to do, and a second `up` changes nothing.
    let plan = fleet(&["plan"]).success().json();
    assert_eq!(plan["changes"], 0, "{plan:#}");
    let again = fleet(&["up"]).success().json();
    assert_eq!(again["changed"], false, "{again:#}");
    assert_eq!(
        (
            pids(&run_b, "fl-b1"),
            pids(&run_b, "fl-b2"),
            pids(&run_c, "fl-c1")
        ),
        (b1, b2, c1)
    );
    let status = fleet(&["status"]).success().json();
    assert_eq!(status["ok"], true, "{status:#}");
    assert!(
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["model_verified"] == true),
        "{status:#}"
    );

    // 3. A changed slot count restarts exactly that worker.
    std::fs::write(&fleet_file, fleet_toml(&orcd_address, secrets.path(), 2)).unwrap();
    let plan = fleet(&["plan"]).success().json();
    assert_eq!(plan["changes"], 1, "{plan:#}");
    let planned = &host(&plan, "hb")["workers"][1];
    assert_eq!(planned["action"], "restart", "{plan:#}");
    assert_eq!(planned["changes"][0]["field"], "slots");
    let changed = fleet(&["up"]).success().json();
    assert_eq!(
        actions(host(&changed, "hb")),
        pairs(&[("fl-b1", "nothing"), ("fl-b2", "restart")])
    );
    assert_eq!(
        actions(host(&changed, "hc")),
        pairs(&[("fl-c1", "nothing")])
    );
    assert_eq!(pids(&run_b, "fl-b1"), b1);
    assert_eq!(pids(&run_c, "fl-c1"), c1);
    assert_ne!(pids(&run_b, "fl-b2"), b2);
    let b2_slots = orcd_workers()
        .into_iter()
        .find(|w| w.worker_id == "fl-b2")
        .map(|w| w.slots_total);
    assert_eq!(b2_slots, Some(2));

    // 4. After one host's processes are killed, `up` restores exactly what is missing.
    support::kill_recorded_daemons(&run_c);
    let restored = fleet(&["up"]).success().json();
    assert_eq!(
        actions(host(&restored, "hc")),
        pairs(&[("fl-c1", "start")]),
        "{restored:#}"
    );
    assert!(actions(host(&restored, "hb"))
        .iter()
        .all(|(_, action)| action == "nothing"));
    assert_eq!(pids(&run_b, "fl-b1"), b1);
    assert_eq!(live(&orcd_workers()), ["fl-b1", "fl-b2", "fl-c1"]);

    // 5. A host whose sshd is stopped is named while the other comes up.
    support::kill_recorded_daemons(&run_b);
    stop_sshd(&sshd_c);
    let partial = fleet(&["up"]);
    assert_eq!(partial.code(), 1, "{partial}");
    let partial = partial.json();
    assert_eq!(host(&partial, "hb")["ok"], true, "{partial:#}");
    assert_eq!(
        actions(host(&partial, "hb")),
        pairs(&[("fl-b1", "start"), ("fl-b2", "start")])
    );
    let failed = host(&partial, "hc");
    assert_eq!(failed["ok"], false);
    let reason = failed["error"].as_str().unwrap();
    assert!(reason.contains("connection refused"), "{reason}");
    let human = {
        let mut xtask = sshd_b.xtask_in_netns(Some(&namespaces.operator));
        xtask.env("LLORCH_FLEET", &fleet_file);
        xtask.run(["fleet", "plan"])
    };
    assert_eq!(human.code(), 1, "{human}");
    assert!(
        human.stdout.contains("hc") && human.stdout.contains("connection refused"),
        "{human}"
    );
    let _sshd_c_again = restart_sshd(&sshd_c, &namespaces.c);

    // 6. `down` leaves no worker, no record and no unit.
    let running = [
        pids(&run_b, "fl-b1"),
        pids(&run_b, "fl-b2"),
        pids(&run_c, "fl-c1"),
    ];
    let down = fleet(&["down"]).success().json();
    assert!(
        actions(host(&down, "hb"))
            .iter()
            .all(|(_, action)| action == "stop"),
        "{down:#}"
    );
    assert_eq!(actions(host(&down, "hc")), pairs(&[("fl-c1", "stop")]));
    for run_dir in [&run_b, &run_c] {
        let left: Vec<String> = std::fs::read_dir(run_dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".pid") || name.ends_with(".json"))
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", run_dir.display());
        let markers = std::fs::read_dir(run_dir.join("fleet"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(markers, 0, "fleet markers left in {}", run_dir.display());
    }
    for pid in running {
        assert!(!support::pid_alive(pid), "worker pid {pid} still runs");
    }
    let units: Vec<_> = [&sshd_b, &sshd_c]
        .iter()
        .filter_map(|sshd| std::fs::read_dir(sshd.remote.config_home.join("systemd/user")).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("llorch-fleet-")
        })
        .collect();
    assert!(units.is_empty(), "units left: {units:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !live(&orcd_workers()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(live(&orcd_workers()), Vec::<String>::new());
}
