//! `cargo xtask fleet` on this machine only (no sshd, no network namespace): what it says about
//! orcd and does to it, how a restart runs the new settings beside the old worker first and
//! how one that orcd refuses ends, and how `status` reports a host that does not answer.

use crate::support;

use std::{
    collections::BTreeSet,
    net::TcpListener,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use support::{http_status, Orcd, Xtask};

/// A private config, run directory and state directory for the xtask under test.
struct LocalFleet {
    dir: tempfile::TempDir,
}

impl LocalFleet {
    fn new() -> LocalFleet {
        let dir = tempfile::Builder::new()
            .prefix("llorch-fleet-")
            .tempdir()
            .unwrap();
        LocalFleet { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `fleet host apply` of one worker, as `fleet up` sends it (nothing prepared, detached).
    fn apply(&self, bin_dir: &Path, spec: serde_json::Value) -> support::Outcome {
        let request = serde_json::json!({
            "workers": [spec],
            "prepare": false,
            "supervisor": "detached",
        });
        self.xtask(bin_dir)
            .stdin(request.to_string().as_bytes())
            .run(["--json", "fleet", "host", "apply", "--timeout", "60"])
    }

    fn write_fleet(&self, text: &str) {
        std::fs::write(self.path("fleet.toml"), text).unwrap();
    }

    fn xtask(&self, bin_dir: &Path) -> Xtask {
        let mut xtask = support::xtask();
        xtask
            .env("LLORCH_CONFIG_PATH", self.path("config.toml"))
            .env("LLORCH_FLEET", self.path("fleet.toml"))
            .env("LLORCH_RUN_DIR", self.path("run"))
            .env("LLORCH_STATE_DIR", self.path("state"))
            .env("LLORCH_MODEL_BASE_DIR", self.path("models"))
            .env("LLORCH_BIN_DIR", bin_dir)
            .env("XDG_CONFIG_HOME", self.path("xdg-config"));
        xtask
    }
}

impl Drop for LocalFleet {
    fn drop(&mut self) {
        support::kill_recorded_daemons(&self.path("run"));
    }
}

#[test]
fn plan_says_it_starts_orcd_up_starts_it_and_down_stops_it() {
    let orcd_dir = support::orcd_binary().parent().unwrap().to_path_buf();
    let fleet = LocalFleet::new();
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    fleet.write_fleet(&format!(
        "[orchestrator]\nurl = \"{url}\"\nlisten = \"127.0.0.1:{port}\"\n\n[hosts.local]\npool_manager = {{ enabled = false }}\n"
    ));

    let plan = fleet.xtask(&orcd_dir).run(["fleet", "plan"]).success();
    assert!(
        plan.stdout.contains(&format!(
            "orcd: nothing answers at {url}; `fleet up` starts orcd here on 127.0.0.1:{port}"
        )),
        "{plan}"
    );
    assert!(plan.stderr.contains("1 change(s)"), "{plan}");

    let up = fleet.xtask(&orcd_dir).run(["fleet", "up"]).success();
    assert!(
        up.stdout.contains(&format!("orcd: started at {url}")),
        "{up}"
    );
    assert_eq!(http_status(&format!("{url}/health")), Some(200), "{up}");

    let plan = fleet.xtask(&orcd_dir).run(["fleet", "plan"]).success();
    assert!(
        plan.stdout
            .contains(&format!("orcd: answers at {url}; nothing to do")),
        "{plan}"
    );

    let down = fleet.xtask(&orcd_dir).run(["fleet", "down"]).success();
    assert!(
        down.stdout.contains(&format!("orcd: stopped at {url}")),
        "{down}"
    );
    assert_eq!(http_status(&format!("{url}/health")), None, "{down}");
}

/// A worker spec as `fleet up` sends it to `fleet host apply`.
fn worker_spec(orcd: &Orcd, port: u16, advertise_url: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "restarted",
        "model": "tiny",
        "backend": "cpu",
        "gpu": null,
        "slots": 1,
        "ctx_size": 512,
        "port": port,
        "bind": "127.0.0.1",
        "advertise_url": advertise_url,
        "orchestrator_url": orcd.url,
        "embeddings": false,
    })
}

#[test]
fn a_restart_orcd_refuses_gives_the_place_back_to_the_worker_that_ran() {
    let orcd = Orcd::start(&[]);
    let fleet = LocalFleet::new();
    let bin_dir = fleet.path("bin");
    support::install_fake_worker(&bin_dir);
    let port = support::free_port();
    let good_url = format!("http://127.0.0.1:{port}");
    let apply = |spec: serde_json::Value| fleet.apply(&bin_dir, spec);

    let first = apply(worker_spec(&orcd, port, &good_url)).success().json();
    assert_eq!(first["workers"][0]["action"], "start", "{first}");
    assert_eq!(orcd.worker("restarted").unwrap()["state"], "live");

    // orcd refuses a worker URL with a path: the new settings never become live, and they are
    // tried beside the running worker, which is never stopped.
    let pid_file = fleet.path("run").join("restarted.pid");
    let pid_before = std::fs::read_to_string(&pid_file).unwrap();
    let refused = apply(worker_spec(&orcd, port, &format!("{good_url}/refused")));
    assert_eq!(refused.code(), 1, "{refused}");
    let report = refused.json();
    let outcome = &report["workers"][0];
    assert_eq!(outcome["action"], "restart", "{report}");
    assert_eq!(outcome["ok"], false, "{report}");
    let error = outcome["error"].as_str().unwrap();
    assert!(error.contains("refused"), "{error}");
    assert!(
        error.contains("never became live beside the running worker")
            && error.contains("runs on with its previous settings, untouched"),
        "{error}"
    );
    let worker = orcd.worker("restarted").expect("orcd still lists it");
    assert_eq!(worker["state"], "live", "{worker}");
    assert_eq!(worker["url"], good_url, "{worker}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        pid_before,
        "the running worker was never stopped"
    );
    assert_eq!(http_status(&format!("{good_url}/health")), Some(200));
    assert!(
        orcd.worker("restarted-next").is_none(),
        "the stand-in is gone"
    );
}

#[test]
fn a_restart_starts_the_new_settings_beside_the_old_worker_so_the_model_is_never_unserved() {
    let orcd = Orcd::start(&[]);
    let fleet = LocalFleet::new();
    let bin_dir = fleet.path("bin");
    support::install_fake_worker(&bin_dir);
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let apply = |spec: serde_json::Value| fleet.apply(&bin_dir, spec);
    apply(worker_spec(&orcd, port, &url)).success();
    assert_eq!(orcd.worker("restarted").unwrap()["state"], "live");

    // Sample orcd's live workers of the model while the restart runs.
    let finished = AtomicBool::new(false);
    let (report, samples, unserved, seen) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let (mut samples, mut unserved) = (0, 0);
            let mut seen = BTreeSet::new();
            while !finished.load(Ordering::SeqCst) {
                let live: Vec<String> = orcd
                    .workers()
                    .into_iter()
                    .filter(|worker| worker["state"] == "live" && worker["model"] == "tiny")
                    .map(|worker| worker["worker_id"].as_str().unwrap().to_owned())
                    .collect();
                samples += 1;
                unserved += usize::from(live.is_empty());
                seen.extend(live);
                // The sampling period, not a wait for anything.
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, unserved, seen)
        });
        let mut changed = worker_spec(&orcd, port, &url);
        changed["slots"] = 2.into();
        let report = apply(changed);
        finished.store(true, Ordering::SeqCst);
        let (samples, unserved, seen) = watcher.join().unwrap();
        (report, samples, unserved, seen)
    });
    let report = report.success().json();
    assert_eq!(report["workers"][0]["action"], "restart", "{report}");
    assert_eq!(report["workers"][0]["ok"], true, "{report}");
    assert!(samples > 10, "the watcher sampled orcd {samples} times");
    assert!(
        seen.contains("restarted-next"),
        "the new settings ran as a stand-in beside the old worker: {seen:?}"
    );
    assert_eq!(
        unserved, 0,
        "{unserved} of {samples} samples found no live worker of the model during the restart"
    );
    let worker = orcd.worker("restarted").expect("orcd lists the worker");
    assert_eq!(worker["state"], "live", "{worker}");
    assert_eq!(worker["url"], url, "{worker}");
    assert!(
        orcd.worker("restarted-next").is_none(),
        "the stand-in stopped and deregistered"
    );
}

#[test]
fn status_gives_up_on_a_silent_host_quickly_and_says_unknown() {
    support::require_tool("ssh", &["/usr/bin/ssh"]);
    // Accepts connections (the kernel does) and never says a word: ssh waits for a banner.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let ssh_port = silent.local_addr().unwrap().port();
    let fleet = LocalFleet::new();
    std::fs::write(
        fleet.path("config.toml"),
        format!(
            "version = 1\n\n[remote]\nssh_timeout = 30\n\n[remote.hosts.far]\nhost = \"127.0.0.1\"\nport = {ssh_port}\nrepo_path = \"/nonexistent\"\n"
        ),
    )
    .unwrap();
    fleet.write_fleet(&format!(
        "[orchestrator]\nurl = \"http://127.0.0.1:{}\"\n\n[hosts.far]\n[[hosts.far.workers]]\nmodel = \"gemma3-270m\"\n",
        support::free_port()
    ));
    let status = fleet
        .xtask(Path::new("/nonexistent"))
        .run(["fleet", "status"]);
    assert_eq!(status.code(), 1, "{status}");
    let row = status
        .stdout
        .lines()
        .find(|line| line.starts_with("far "))
        .unwrap_or_else(|| panic!("no row for the host: {status}"));
    assert!(row.contains(" unknown "), "{row}\n{status}");
    assert!(row.contains("timed out after 4 s"), "{row}\n{status}");
}
