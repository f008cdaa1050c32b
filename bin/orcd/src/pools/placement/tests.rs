//! Placement decisions with fake hosts and a fake clock: no sockets, no runtime.

use super::*;

const MIB: u64 = 1 << 20;

/// A fake clock: every test starts at `t0` and moves by explicit offsets.
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn at(&self, secs: u64) -> Instant {
        self.0 + Duration::from_secs(secs)
    }
}

fn host(id: &str, ram_free_mib: u64, models: &[(&str, u64)]) -> HostView {
    HostView {
        host_id: id.into(),
        live: true,
        ram_free: ram_free_mib * MIB,
        gpus: Vec::new(),
        gpu_backend: None,
        models: models
            .iter()
            .map(|(model, mib)| ((*model).to_owned(), mib * MIB))
            .collect(),
        workers: Vec::new(),
    }
}

fn worker(id: &str, model: &str, mib: u64, last_used: Instant) -> WorkerView {
    WorkerView {
        worker_id: id.into(),
        model: model.into(),
        backend: Backend::Cpu,
        gpu: 0,
        estimated_bytes: mib * MIB,
        busy: false,
        pinned: false,
        last_used,
    }
}

fn defaults(_: &str) -> ModelPolicy {
    ModelPolicy::default()
}

fn start_host(placement: &Placement) -> (&str, Backend, Vec<&str>) {
    match placement {
        Placement::Start {
            host_id,
            backend,
            evict,
            ..
        } => (
            host_id.as_str(),
            *backend,
            evict.iter().map(|e| e.worker_id.as_str()).collect(),
        ),
        other => panic!("expected a start, got {other:?}"),
    }
}

#[test]
fn a_model_goes_where_it_fits_and_its_file_is() {
    let clock = Clock::new();
    let hosts = [
        host("small", 100, &[("qwen", 400)]),
        host("big", 1000, &[("qwen", 400)]),
        host("nofile", 8000, &[]),
    ];
    let placement = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &hosts,
        &[],
        clock.at(0),
    );
    assert_eq!(start_host(&placement), ("big", Backend::Cpu, vec![]));
    if let Placement::Start { needed_bytes, .. } = placement {
        assert_eq!(needed_bytes, 400 * MIB);
    }
}

#[test]
fn a_model_that_fits_nowhere_is_no_room_with_the_figures() {
    let clock = Clock::new();
    let hosts = [
        host("a", 300, &[("qwen", 400)]),
        host("b", 350, &[("qwen", 400)]),
        // Has room but not the file: not a candidate, and not counted as free.
        host("c", 9000, &[]),
    ];
    assert_eq!(
        place(
            "qwen",
            Purpose::FirstWorker,
            &defaults,
            &hosts,
            &[],
            clock.at(0)
        ),
        Placement::NoRoom {
            needed_bytes: 400 * MIB,
            most_free_bytes: 350 * MIB
        }
    );
}

#[test]
fn no_file_anywhere_and_lost_hosts_are_refused_naming_the_fix() {
    let clock = Clock::new();
    let mut lost = host("lost", 9000, &[("qwen", 400)]);
    lost.live = false;
    let placement = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &[lost],
        &[],
        clock.at(0),
    );
    let Placement::Refused { reason } = placement else {
        panic!("{placement:?}")
    };
    assert!(
        reason.contains("cargo xtask models download qwen"),
        "{reason}"
    );
}

#[test]
fn gpu_comes_before_cpu_then_fewest_workers() {
    let clock = Clock::new();
    let mut busy_cpu = host("cpu-a", 4000, &[("qwen", 400)]);
    busy_cpu.workers = vec![worker("w1", "gemma", 200, clock.at(0))];
    let idle_cpu = host("cpu-b", 4000, &[("qwen", 400)]);
    let mut gpu = host("gpu", 4000, &[("qwen", 400)]);
    gpu.gpu_backend = Some(Backend::Cuda);
    gpu.gpus = vec![
        GpuView {
            index: 0,
            free: 100 * MIB,
        },
        GpuView {
            index: 1,
            free: 8000 * MIB,
        },
    ];
    gpu.workers = vec![
        worker("w2", "gemma", 200, clock.at(0)),
        worker("w3", "gemma", 200, clock.at(0)),
    ];
    let hosts = [busy_cpu.clone(), idle_cpu.clone(), gpu.clone()];
    let placement = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &hosts,
        &[],
        clock.at(0),
    );
    assert_eq!(start_host(&placement), ("gpu", Backend::Cuda, vec![]));
    let Placement::Start { gpu: index, .. } = placement else {
        unreachable!()
    };
    assert_eq!(index, 1, "the GPU with room");

    // Without the GPU: the CPU host with fewer workers.
    let placement = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &[busy_cpu, idle_cpu],
        &[],
        clock.at(0),
    );
    assert_eq!(start_host(&placement).0, "cpu-b");

    // A policy that asks for the CPU keeps it off the GPU.
    let cpu_only = |_: &str| ModelPolicy {
        backend: Some(Backend::Cpu),
        ..ModelPolicy::default()
    };
    let placement = place(
        "qwen",
        Purpose::FirstWorker,
        &cpu_only,
        &[gpu],
        &[],
        clock.at(0),
    );
    assert_eq!(start_host(&placement).1, Backend::Cpu);
}

#[test]
fn a_policy_launch_larger_than_every_host_is_no_room_by_its_own_estimate_and_evicts_nothing() {
    let clock = Clock::new();
    let long = |model: &str| ModelPolicy {
        ctx_size: if model == "qwen" { 32_768 } else { 2048 },
        ..ModelPolicy::default()
    };
    assert!(needs_launch_estimate(&long("qwen")));
    assert!(!needs_launch_estimate(&long("gemma")));
    let mut a = host("a", 69, &[("qwen", 631)]);
    a.workers = vec![worker("a-gemma", "gemma", 631, clock.at(0))];
    let mut hosts = [a, host("b", 700, &[("qwen", 631)]), host("c", 9000, &[])];
    // By the default launch's estimate it fits on `b` at once.
    assert_eq!(
        start_host(&place(
            "qwen",
            Purpose::FirstWorker,
            &long,
            &hosts,
            &[],
            clock.at(9)
        ))
        .0,
        "b"
    );
    // By the estimates of the policy's launch it fits nowhere, not even after evicting
    // `a-gemma` (69 + 631 < 1800): no room, with that figure and the most any host has free.
    let estimates = BTreeMap::from([("a".to_owned(), 1800 * MIB), ("b".to_owned(), 1800 * MIB)]);
    use_launch_estimates(&mut hosts, "qwen", &estimates);
    assert_eq!(
        hosts[2].models.get("qwen"),
        None,
        "no file, no estimate added"
    );
    assert_eq!(
        place(
            "qwen",
            Purpose::FirstWorker,
            &long,
            &hosts,
            &[],
            clock.at(9)
        ),
        Placement::NoRoom {
            needed_bytes: 1800 * MIB,
            most_free_bytes: 700 * MIB
        }
    );
    // A host that gave no estimate keeps the default's.
    let mut hosts = [host("b", 700, &[("qwen", 631)])];
    use_launch_estimates(&mut hosts, "qwen", &BTreeMap::new());
    assert_eq!(hosts[0].models["qwen"], 631 * MIB);
}

#[test]
fn without_room_the_least_recently_used_idle_worker_is_evicted() {
    let clock = Clock::new();
    let mut full = host("h", 100, &[("qwen", 400)]);
    full.workers = vec![
        worker("recent", "gemma", 400, clock.at(50)),
        worker("old", "tiny", 400, clock.at(10)),
        worker("older-but-small", "mini", 100, clock.at(5)),
    ];
    let placement = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &[full],
        &[],
        clock.at(60),
    );
    // LRU order: older-but-small (100 + 100 free = 200, not enough), then old (600): enough.
    assert_eq!(
        start_host(&placement),
        ("h", Backend::Cpu, vec!["older-but-small", "old"])
    );
    let Placement::Start { evict, .. } = placement else {
        unreachable!()
    };
    assert!(evict
        .iter()
        .all(|unload| unload.reason == UnloadReason::Evicted));
}

#[test]
fn busy_pinned_and_min_replica_workers_are_never_evicted() {
    let clock = Clock::new();
    let mut busy = worker("busy", "a", 1000, clock.at(0));
    busy.busy = true;
    let mut pinned = worker("pinned", "b", 1000, clock.at(0));
    pinned.pinned = true;
    let kept = worker("kept", "c", 1000, clock.at(0));
    let pinned_by_policy = worker("policy-pin", "d", 1000, clock.at(0));
    let mut full = host("h", 0, &[("qwen", 400)]);
    full.workers = vec![busy, pinned, kept, pinned_by_policy];
    let policies = |model: &str| match model {
        "c" => ModelPolicy {
            min_replicas: 1,
            ..ModelPolicy::default()
        },
        "d" => ModelPolicy {
            pin: true,
            ..ModelPolicy::default()
        },
        _ => ModelPolicy::default(),
    };
    assert_eq!(
        place(
            "qwen",
            Purpose::FirstWorker,
            &policies,
            &[full.clone()],
            &[],
            clock.at(60)
        ),
        Placement::NoRoom {
            needed_bytes: 400 * MIB,
            most_free_bytes: 0
        }
    );
    // A second replica of `c` elsewhere lets this one go.
    let mut other = host("other", 0, &[]);
    other.workers = vec![worker("kept-2", "c", 1000, clock.at(0))];
    let placement = place(
        "qwen",
        Purpose::FirstWorker,
        &policies,
        &[full, other],
        &[],
        clock.at(60),
    );
    assert_eq!(start_host(&placement), ("h", Backend::Cpu, vec!["kept"]));
}

#[test]
fn a_host_that_failed_to_start_the_model_is_avoided_for_a_while() {
    let clock = Clock::new();
    let hosts = [
        host("a", 9000, &[("qwen", 400)]),
        host("b", 1000, &[("qwen", 400)]),
    ];
    let avoided = [Avoided {
        host_id: "a".into(),
        model: "qwen".into(),
        until: clock.at(30),
    }];
    let first_choice = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &hosts,
        &[],
        clock.at(0),
    );
    assert_eq!(start_host(&first_choice).0, "a");
    let while_avoided = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &hosts,
        &avoided,
        clock.at(10),
    );
    assert_eq!(start_host(&while_avoided).0, "b");
    let after = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &hosts,
        &avoided,
        clock.at(31),
    );
    assert_eq!(start_host(&after).0, "a");
    let only_a = place(
        "qwen",
        Purpose::FirstWorker,
        &defaults,
        &hosts[..1],
        &avoided,
        clock.at(10),
    );
    assert!(matches!(only_a, Placement::Refused { reason } if reason.contains("failed to start")));
    // Avoiding a host for one model leaves it open to others.
    let other = [host("a", 9000, &[("gemma", 100)])];
    assert_eq!(
        start_host(&place(
            "gemma",
            Purpose::FirstWorker,
            &defaults,
            &other,
            &avoided,
            clock.at(10)
        ))
        .0,
        "a"
    );
}

#[test]
fn policies_limit_hosts_and_turn_loading_off() {
    let clock = Clock::new();
    let hosts = [
        host("a", 9000, &[("qwen", 400)]),
        host("b", 1000, &[("qwen", 400)]),
    ];
    let only_b = |_: &str| ModelPolicy {
        hosts: Some(vec!["b".into()]),
        ..ModelPolicy::default()
    };
    assert_eq!(
        start_host(&place(
            "qwen",
            Purpose::FirstWorker,
            &only_b,
            &hosts,
            &[],
            clock.at(0)
        ))
        .0,
        "b"
    );
    let off = |_: &str| ModelPolicy {
        on_demand: false,
        ..ModelPolicy::default()
    };
    let placement = place("qwen", Purpose::FirstWorker, &off, &hosts, &[], clock.at(0));
    assert!(
        matches!(placement, Placement::Refused { reason } if reason.contains("on_demand = false"))
    );
}

#[test]
fn scale_out_goes_to_another_host_up_to_max_replicas() {
    let clock = Clock::new();
    let mut serving = host("a", 9000, &[("qwen", 400)]);
    serving.workers = vec![worker("q1", "qwen", 400, clock.at(0))];
    let spare = host("b", 1000, &[("qwen", 400)]);
    let two = |_: &str| ModelPolicy {
        max_replicas: 2,
        ..ModelPolicy::default()
    };
    let placement = place(
        "qwen",
        Purpose::ScaleOut,
        &two,
        &[serving.clone(), spare.clone()],
        &[],
        clock.at(0),
    );
    assert_eq!(
        start_host(&placement).0,
        "b",
        "not the host that already runs it"
    );
    let mut second = spare;
    second.workers = vec![worker("q2", "qwen", 400, clock.at(0))];
    let at_max = place(
        "qwen",
        Purpose::ScaleOut,
        &two,
        &[serving, second],
        &[],
        clock.at(0),
    );
    assert!(matches!(at_max, Placement::Refused { reason } if reason.contains("max_replicas = 2")));

    let policy = two("qwen");
    assert!(wants_scale_out(&policy, Duration::from_secs(11), 1));
    assert!(!wants_scale_out(&policy, Duration::from_secs(9), 1));
    assert!(!wants_scale_out(&policy, Duration::from_secs(11), 2));
}

#[test]
fn models_whose_median_wait_is_too_long_scale_out_unless_loading_unloaded_or_at_max() {
    let clock = Clock::new();
    let mut a = host("a", 9000, &[("qwen", 400), ("gemma", 300), ("full", 300)]);
    a.workers = vec![
        worker("q1", "qwen", 400, clock.at(0)),
        worker("g1", "gemma", 300, clock.at(0)),
        worker("f1", "full", 300, clock.at(0)),
    ];
    let policy_of = |model: &str| ModelPolicy {
        max_replicas: if model == "full" { 1 } else { 2 },
        ..ModelPolicy::default()
    };
    let waits: BTreeMap<String, Duration> = [
        ("qwen", 11), // over the default 10 s: scale out
        ("gemma", 9), // under it
        ("full", 30), // at max_replicas
        ("none", 30), // no worker yet: a request loads the first
        ("busy", 30), // no worker either
    ]
    .into_iter()
    .map(|(model, seconds)| (model.to_owned(), Duration::from_secs(seconds)))
    .collect();
    let nothing_loading = std::collections::BTreeSet::new();
    assert_eq!(
        scale_outs(
            std::slice::from_ref(&a),
            &waits,
            &policy_of,
            &nothing_loading
        ),
        ["qwen"]
    );
    let qwen_loading = std::collections::BTreeSet::from(["qwen".to_owned()]);
    assert!(scale_outs(&[a], &waits, &policy_of, &qwen_loading).is_empty());
}

#[test]
fn idle_workers_are_unloaded_after_keep_alive_down_to_min_replicas() {
    let clock = Clock::new();
    let mut a = host("a", 0, &[]);
    a.workers = vec![
        worker("q1", "qwen", 400, clock.at(0)),
        worker("q2", "qwen", 400, clock.at(100)),
        worker("g1", "gemma", 200, clock.at(0)),
    ];
    let mut busy = worker("g2", "gemma", 200, clock.at(0));
    busy.busy = true;
    let mut b = host("b", 0, &[]);
    b.workers = vec![busy, worker("s1", "static", 100, clock.at(0))];
    b.workers[1].pinned = true;
    let policies = |model: &str| ModelPolicy {
        keep_alive: Some(Duration::from_secs(300)),
        min_replicas: u32::from(model == "qwen"),
        ..ModelPolicy::default()
    };
    // Before keep_alive nothing goes.
    assert!(idle_unloads(&[a.clone(), b.clone()], &policies, clock.at(299)).is_empty());
    let unloads = idle_unloads(&[a.clone(), b.clone()], &policies, clock.at(300));
    let summary: Vec<(&str, UnloadReason)> = unloads
        .iter()
        .map(|unload| (unload.worker_id.as_str(), unload.reason))
        .collect();
    // gemma: g1 idle, g2 busy stays (so g1 is scaled in); qwen: q1 idle goes, q2 (used
    // more recently) is the one `min_replicas` keeps; the pinned one stays.
    assert_eq!(
        summary,
        vec![
            ("g1", UnloadReason::ScaledIn),
            ("q1", UnloadReason::ScaledIn)
        ]
    );
    let later = idle_unloads(&[a.clone()], &policies, clock.at(1000));
    let summary: Vec<(&str, UnloadReason)> = later
        .iter()
        .map(|unload| (unload.worker_id.as_str(), unload.reason))
        .collect();
    assert_eq!(
        summary,
        vec![("g1", UnloadReason::Idle), ("q1", UnloadReason::ScaledIn)]
    );

    let forever = |_: &str| ModelPolicy {
        keep_alive: None,
        ..ModelPolicy::default()
    };
    assert!(idle_unloads(&[a], &forever, clock.at(100_000)).is_empty());
}
