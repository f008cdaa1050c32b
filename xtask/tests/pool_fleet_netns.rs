//! Models on demand across a fleet, end to end on network namespaces: this side (orcd and the
//! operator's xtask) in one namespace, two hosts with their own sshd in two others. The fleet
//! file has no `workers` at all; `fleet up` starts a pool manager on each host (a small
//! `memory_budget`, so room is scarce) and orcd lists both hosts live. The first chat request
//! for qwen2.5-coder-0.5b loads it on one host and streams; gemma3-270m then loads on the other
//! host, the only one with room; a SIGKILLed worker is restarted by its pool manager; a third
//! model id (a second catalog entry for gemma3-270m's file, from `models add`) finds no room and
//! evicts the least recently used idle worker; `keep_alive = "5s"` unloads it; a model whose
//! policy asks for more memory than any host has gets a 503 with the figures; a host whose link
//! goes down is lost and its model loads on the other host on the next request; `fleet down`
//! stops the pool managers and leaves no worker running.
//!
//! Needs root and `ip netns` (without them the test is reported as ignored, never passed), the
//! release `orcd`, `llorch-pool-managerd` and `llorch-worker` builds and both catalog models.
//! Namespaces are named `lo-pf-*`; run under `flock /tmp/llorch-netns.lock`.

mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use libtest_mimic::{Arguments, Trial};
use llorch_api::pool::{HostInfo, HostState, PoolWorker, PoolWorkerState};
use serde_json::Value;
use support::netns::{in_netns, write_private, Namespaces};
use support::Outcome;

const GEMMA: &str = "gemma3-270m";
const QWEN: &str = "qwen2.5-coder-0.5b";
/// A second catalog entry for gemma3-270m's file (`models add --hardlink`): a third model id.
const GEMMA_B: &str = "gemma3-270m-pf-b";
/// A second catalog entry for qwen2.5-coder-0.5b's file whose policy (8 slots of 32768 tokens)
/// needs more memory than any host's 700 MiB budget.
const QWEN_LONG: &str = "qwen2.5-coder-0.5b-pf-long";
const API_TOKEN: &str = "pool-fleet-api-token-0123456789abcdef";
/// orcd's heartbeat timeout (the fleet file's `heartbeat_timeout_secs`): a host whose link is
/// down is lost, and its workers dead, this long after their last heartbeat.
const HEARTBEAT_TIMEOUT_SECS: u64 = 4;
/// Loading a model on two busy shared cores can take a while.
const LOAD_WAIT: Duration = Duration::from_secs(80);

fn main() {
    let args = Arguments::from_args();
    let skip = support::netns::netns_unavailable("pf");
    if let Some(reason) = &skip {
        eprintln!(
            "pool_fleet_netns: skipping: network namespaces are not available here ({reason})"
        );
    }
    let tests = vec![Trial::test(
        "a_fleet_without_workers_loads_models_where_they_fit",
        || {
            a_fleet_without_workers_loads_models_where_they_fit();
            Ok(())
        },
    )
    .with_ignored_flag(skip.is_some())];
    libtest_mimic::run(&args, tests).exit();
}

/// Two hosts without workers, each a pool manager with room for one of the two models by the
/// estimates (about 630 MiB for qwen2.5-coder-0.5b, 370 MiB for gemma3-270m).
fn fleet_toml(orcd: &str, dir: &Path) -> String {
    let host = |name: &str| {
        format!(
            "[hosts.{name}]\nsupervisor = \"detached\"\n[hosts.{name}.pool_manager]\nmemory_budget = \"700MiB\"\nmodels = [\"{GEMMA}\", \"{QWEN}\", \"{GEMMA_B}\", \"{QWEN_LONG}\"]\n"
        )
    };
    format!(
        "[orchestrator]\nurl = \"http://{orcd}:8080\"\nlisten = \"{orcd}:8080\"\n\
         api_token_file = \"{api}\"\nworker_token_file = \"{worker}\"\nmodel_policies = \"{policies}\"\n\
         heartbeat_timeout_secs = {HEARTBEAT_TIMEOUT_SECS}\n\n{hb}\n{hc}",
        api = dir.join("api-token").display(),
        worker = dir.join("worker-token").display(),
        policies = dir.join("policies.toml").display(),
        hb = host("hb"),
        hc = host("hc"),
    )
}

/// The model base directory the hosts share; on drop, the directories of the catalog ids this
/// test added to it are removed (hard links: the original files stay).
struct AddedModels(std::path::PathBuf);

impl Drop for AddedModels {
    fn drop(&mut self) {
        for id in [GEMMA_B, QWEN_LONG] {
            let _ = std::fs::remove_dir_all(llorch_catalog::model_dir(&self.0, id));
        }
    }
}

/// Fleet events (`GET /v2/events`) as `(name, data)`, read on a thread of its own until orcd
/// closes the stream (`fleet down` stops it) or the test ends.
fn fleet_events(netns: String, url: String) -> std::sync::mpsc::Receiver<(String, Value)> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        in_netns(&netns, || {
            use std::io::BufRead;
            let Ok(response) = reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .unwrap()
                .get(&url)
                .bearer_auth(API_TOKEN)
                .send()
            else {
                return;
            };
            let mut name = String::new();
            for line in std::io::BufReader::new(response).lines() {
                let Ok(line) = line else { return };
                if let Some(event) = line.strip_prefix("event:") {
                    name = event.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                    if sender.send((name.clone(), data)).is_err() {
                        return;
                    }
                }
            }
        })
    });
    receiver
}

/// The `hosts[]` entry of a `fleet up`/`down`/`plan` document for `host`.
fn host<'a>(document: &'a Value, host: &str) -> &'a Value {
    document["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["host"] == host)
        .unwrap_or_else(|| panic!("no host {host} in {document:#}"))
}

/// Every worker of every host orcd lists, with its host.
fn pool_workers(hosts: &[HostInfo]) -> Vec<(String, PoolWorker)> {
    hosts
        .iter()
        .flat_map(|host| {
            host.facts
                .workers
                .iter()
                .map(|worker| (host.host_id.clone(), worker.clone()))
        })
        .collect()
}

fn worker_of(hosts: &[HostInfo], model: &str) -> Option<(String, PoolWorker)> {
    pool_workers(hosts)
        .into_iter()
        .find(|(_, worker)| worker.launch.model == model)
}

fn a_fleet_without_workers_loads_models_where_they_fit() {
    let namespaces = Namespaces::create("pf").expect("creating the network namespaces");
    let (sshd_b, sshd_c) = support::netns::two_fleet_hosts(&namespaces, &[GEMMA, QWEN]);
    let secrets = tempfile::tempdir().unwrap();
    write_private(&secrets.path().join("api-token"), &format!("{API_TOKEN}\n"));
    write_private(
        &secrets.path().join("worker-token"),
        "pool-fleet-worker-token-0123456789abcdef\n",
    );
    std::fs::write(
        secrets.path().join("policies.toml"),
        format!(
            "[models.\"{GEMMA_B}\"]\nkeep_alive = \"5s\"\n\n[models.\"{QWEN_LONG}\"]\nslots = 8\nctx_size = 32768\n"
        ),
    )
    .unwrap();
    let fleet_file = secrets.path().join("fleet.toml");
    let orcd_address = namespaces.address(1);
    let orcd_url = format!("http://{orcd_address}:8080");
    std::fs::write(&fleet_file, fleet_toml(&orcd_address, secrets.path())).unwrap();

    // Two more catalog ids for the same files, as an operator makes them: `models add`
    // (hard links, in the hosts' model directory) writes the entries to the operator's
    // catalog.d, and `fleet up` carries them to the hosts.
    let added = AddedModels(sshd_b.remote.model_base_dir.clone());
    let builtin = llorch_catalog::Catalog::builtin();
    for (id, of) in [(GEMMA_B, GEMMA), (QWEN_LONG, QWEN)] {
        let file = llorch_catalog::model_path(&added.0, builtin.get(of).unwrap());
        let file = file.into_os_string();
        sshd_b
            .xtask_in_netns(None)
            .env("LLORCH_MODEL_BASE_DIR", &added.0)
            .run([
                "models".as_ref(),
                "add".as_ref(),
                file.as_os_str(),
                "--id".as_ref(),
                id.as_ref(),
                "--hardlink".as_ref(),
                "--force".as_ref(),
            ] as [&std::ffi::OsStr; 7])
            .success();
    }
    let fleet = |args: &[&str]| -> Outcome {
        let mut xtask = sshd_b.xtask_in_netns(Some(&namespaces.operator));
        xtask
            .env("LLORCH_FLEET", &fleet_file)
            .timeout(Duration::from_secs(600));
        let mut all = vec!["--json", "fleet"];
        all.extend(args);
        xtask.run(all)
    };
    // orcd through the project's one client, from the operator's namespace.
    let orcd_get = |path: &str| -> Value {
        in_netns(&namespaces.operator, || {
            support::orcd_client(&orcd_url, Some(API_TOKEN))
                .get_json(path)
                .unwrap_or_default()
        })
    };
    let hosts =
        || -> Vec<HostInfo> { serde_json::from_value(orcd_get("/v2/hosts")).unwrap_or_default() };
    // The client's own wait (polls against the deadline, says what it waited for).
    let wait_for = |what: &str, done: &(dyn Fn(&[HostInfo]) -> bool + Sync)| -> Vec<HostInfo> {
        in_netns(&namespaces.operator, || {
            support::orcd_client(&orcd_url, Some(API_TOKEN)).wait_for(
                "/v2/hosts",
                what,
                LOAD_WAIT,
                |hosts: &Vec<HostInfo>| done(hosts),
            )
        })
        .unwrap_or_else(|timed_out| {
            panic!(
                "waited {} s for {what}; orcd's hosts: {:#?}",
                LOAD_WAIT.as_secs(),
                timed_out.last
            )
        })
    };
    // A streamed OpenAI request through orcd: a chat for the instruct model, a completion
    // for the base model (it has no chat template); the body of its event stream.
    let request = |model: &str| -> (reqwest::StatusCode, String) {
        let (path, input) = match model {
            QWEN => (
                "chat/completions",
                serde_json::json!({"messages": [{"role": "user", "content": "Say hello."}]}),
            ),
            _ => (
                "completions",
                serde_json::json!({"prompt": "Hello, my name is"}),
            ),
        };
        let url = format!("{orcd_url}/v1/{path}");
        let mut body = serde_json::json!({
            "model": model,
            "max_tokens": 6,
            "temperature": 0,
            "stream": true,
        });
        body.as_object_mut()
            .unwrap()
            .extend(input.as_object().unwrap().clone());
        in_netns(&namespaces.operator, || {
            let response = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(150))
                .build()
                .unwrap()
                .post(&url)
                .bearer_auth(API_TOKEN)
                .json(&body)
                .send()
                .expect("the chat request is answered");
            let status = response.status();
            (status, response.text().unwrap_or_default())
        })
    };
    let chat = |model: &str| -> String {
        let (status, text) = request(model);
        assert!(status.is_success(), "{model}: HTTP {status}: {text}");
        text
    };
    // 1. A fleet file without workers comes up: a live pool manager on each host.
    let up = fleet(&["up"]).success().json();
    for name in ["hb", "hc"] {
        assert_eq!(host(&up, name)["ok"], true, "{up:#}");
        assert_eq!(host(&up, name)["pool_manager"]["action"], "start", "{up:#}");
        assert_eq!(host(&up, name)["workers"], serde_json::json!([]));
    }
    let listed = hosts();
    let mut ids: Vec<&str> = listed.iter().map(|host| host.host_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["hb", "hc"], "{listed:#?}");
    assert!(listed.iter().all(|host| host.state == HostState::Live));
    assert!(
        listed
            .iter()
            .all(|host| host.facts.memory_budget_bytes == Some(700 << 20)),
        "{listed:#?}"
    );
    let plan = fleet(&["plan"]).success().json();
    assert_eq!(plan["changes"], 0, "{plan:#}");
    assert_eq!(host(&plan, "hb")["pool_manager"]["action"], "nothing");

    // 2. The first request for qwen2.5-coder-0.5b loads it on a host and streams.
    let stream = chat(QWEN);
    assert!(
        stream.contains("data: ") && stream.contains("[DONE]"),
        "{stream}"
    );
    // The pool managers' next heartbeats carry the new worker (and the memory it takes).
    let running_worker = |now: &[HostInfo], model: &str| {
        worker_of(now, model)
            .filter(|(_, worker)| worker.state == PoolWorkerState::Running && worker.pid.is_some())
    };
    let now = wait_for("the qwen worker in its host's facts", &|now| {
        running_worker(now, QWEN).is_some()
    });
    let (qwen_host, qwen_worker) = running_worker(&now, QWEN).unwrap();

    // 3. gemma3-270m loads on the other host: the first has no room left under its budget.
    let stream = chat(GEMMA);
    assert!(stream.contains("[DONE]"), "{stream}");
    let now = wait_for("the gemma worker in its host's facts", &|now| {
        running_worker(now, GEMMA).is_some()
    });
    let (gemma_host, _) = running_worker(&now, GEMMA).unwrap();
    assert_ne!(gemma_host, qwen_host, "gemma3-270m must load where it fits");

    // 4. A SIGKILLed worker is restarted by its pool manager, under the same id.
    let qwen_pid = qwen_worker.pid.expect("a running worker has a pid");
    // SAFETY: kill(2) on the worker this test's fleet started.
    unsafe { libc::kill(qwen_pid as libc::pid_t, libc::SIGKILL) };
    wait_for("the killed worker's restart", &|now| {
        worker_of(now, QWEN).is_some_and(|(_, worker)| {
            worker.worker_id == qwen_worker.worker_id
                && worker.restarts >= 1
                && worker.state == PoolWorkerState::Running
                && worker.pid != Some(qwen_pid)
        })
    });
    assert!(chat(QWEN).contains("[DONE]"));

    // 5. A third model id: no host has room (69 MiB and 332 MiB free, about 370 MiB needed),
    //    so the least recently used idle worker goes: gemma3-270m's (qwen's answered since).
    let (_, gemma_worker) = worker_of(&hosts(), GEMMA).unwrap();
    let events = fleet_events(namespaces.operator.clone(), format!("{orcd_url}/v2/events"));
    // The stream's first event is the snapshot: from then on the subscription sees every change.
    let first = events.recv_timeout(Duration::from_secs(10));
    assert!(first.is_ok(), "no snapshot on /v2/events: {first:?}");
    let stream = chat(GEMMA_B);
    assert!(stream.contains("[DONE]"), "{stream}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let eviction = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok((name, data)) if name == "model_unloaded" && data["reason"] == "evicted" => {
                break data
            }
            Ok(event) => seen.push(event),
            Err(_) => panic!("no model_unloaded event with reason `evicted`; saw {seen:#?}"),
        }
    };
    assert_eq!(
        eviction["worker_id"], gemma_worker.worker_id,
        "{eviction:#}"
    );
    assert_eq!(eviction["model"], GEMMA, "{eviction:#}");
    assert_eq!(eviction["host_id"], gemma_host, "{eviction:#}");
    let now = wait_for("the third model's worker where gemma3-270m's was", &|now| {
        running_worker(now, GEMMA_B).is_some() && worker_of(now, GEMMA).is_none()
    });
    assert_eq!(running_worker(&now, GEMMA_B).unwrap().0, gemma_host);
    assert!(
        running_worker(&now, QWEN).is_some(),
        "the recently used qwen worker stays: {now:#?}"
    );

    // 6. keep_alive = "5s": the idle third model's worker is stopped.
    wait_for("the third model's idle unload", &|now| {
        worker_of(now, GEMMA_B).is_none()
    });

    // 7. A model whose policy needs more than any host has: 503 naming the model, the memory
    //    its launch needs and the most any host has free (the emptied host's whole budget).
    let most_free = hosts()
        .iter()
        .map(|host| host.facts.ram_free_for_workers())
        .max()
        .unwrap();
    let (status, body) = request(QWEN_LONG);
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.clone());
    assert!(message.contains(QWEN_LONG), "{message}");
    let needed_mib: u64 = message
        .split("needs about ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|mib| mib.parse().ok())
        .unwrap_or_else(|| panic!("no `needs about N MiB` in {message}"));
    assert!(
        needed_mib > 700,
        "the policy's launch, not the default's: {message}"
    );
    assert!(
        message.contains(&format!("has free is {} MiB", most_free >> 20)),
        "expected the most any host has free ({} MiB): {message}",
        most_free >> 20
    );
    assert!(
        pool_workers(&hosts())
            .iter()
            .all(|(_, worker)| worker.launch.model != QWEN_LONG),
        "nothing was started for it"
    );

    // 8. The qwen host's link goes down: orcd marks the host lost and the worker dead, and the
    //    next request loads qwen on the other host (the one with room).
    let lost_netns = if qwen_host == "hb" {
        &namespaces.b
    } else {
        &namespaces.c
    };
    namespaces.set_link(lost_netns, false).unwrap();
    wait_for("the qwen host lost", &|now| {
        now.iter()
            .any(|host| host.host_id == qwen_host && host.state == HostState::Lost)
    });
    in_netns(&namespaces.operator, || {
        support::orcd_client(&orcd_url, Some(API_TOKEN)).wait_for(
            "/workers",
            "the unreachable qwen worker no longer live",
            LOAD_WAIT,
            |workers: &Vec<Value>| {
                !workers
                    .iter()
                    .any(|worker| worker["model"] == QWEN && worker["state"] == "live")
            },
        )
    })
    .unwrap_or_else(|timed_out| panic!("the unreachable qwen worker stays live: {timed_out:?}"));
    assert!(chat(QWEN).contains("[DONE]"));
    let now = wait_for("qwen on the other host", &|now| {
        pool_workers(now).iter().any(|(host, worker)| {
            *host != qwen_host
                && worker.launch.model == QWEN
                && worker.state == PoolWorkerState::Running
        })
    });
    assert!(
        now.iter()
            .any(|host| host.host_id == qwen_host && host.state == HostState::Lost),
        "{now:#?}"
    );

    // The link comes back: the host is live again with its old worker, so `down` reaches it.
    namespaces.set_link(lost_netns, true).unwrap();
    wait_for("the qwen host live again", &|now| {
        now.iter()
            .filter(|host| host.state == HostState::Live)
            .count()
            == 2
    });

    // 6. `down` stops both pool managers, which drain their workers: nothing is left running.
    let running: Vec<u32> = pool_workers(&hosts())
        .iter()
        .filter_map(|(_, worker)| worker.pid)
        .collect();
    assert!(!running.is_empty());
    let down = fleet(&["down"]).success().json();
    for name in ["hb", "hc"] {
        assert_eq!(
            host(&down, name)["pool_manager"]["action"],
            "stop",
            "{down:#}"
        );
    }
    for sshd in [&sshd_b, &sshd_c] {
        let left: Vec<String> = std::fs::read_dir(&sshd.remote.run_dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                name.ends_with(".pid") || name.ends_with(".json") || name.ends_with(".fleet-spec")
            })
            .collect();
        assert!(
            left.is_empty(),
            "left in {}: {left:?}",
            sshd.remote.run_dir.display()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while running.iter().any(|pid| support::pid_alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in running {
        assert!(!support::pid_alive(pid), "worker pid {pid} still runs");
    }
}
