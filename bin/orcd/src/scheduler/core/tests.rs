//! Scheduling decisions driven by a fake clock: no sockets, no runtime.

use super::*;
use llorch_api::Backend;

/// A fake clock: every test starts at `t0` and moves by explicit offsets.
struct Clock(Instant);

impl Clock {
    fn at(&self, millis: u64) -> Instant {
        self.0 + Duration::from_millis(millis)
    }
}

fn setup(config: SchedulerConfig) -> (SchedulerCore, Clock) {
    (SchedulerCore::new(config), Clock(Instant::now()))
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_timeout: Duration::from_secs(10),
        queue_limit: 2,
        recent_jobs: 3,
        dispatch_attempts: 3,
        dead_worker_retention: Duration::from_secs(60),
        routing: Routing::PrefixAffinity { slack: 2 },
    }
}

fn worker(id: &str, model: &str, slots: u32) -> WorkerRegistration {
    WorkerRegistration {
        worker_id: id.into(),
        url: format!("http://{id}:9000"),
        model: model.into(),
        backend: Backend::Cpu,
        slots,
        ctx_size: 2048,
        embeddings: false,
    }
}

/// Every test job's `max_tokens`.
const MAX_TOKENS: u32 = 16;

fn job(id: &str, model: &str) -> NewJob {
    NewJob {
        job_id: id.into(),
        model: model.into(),
        submitted_at_ms: 0,
        owner: None,
        prefixes: Vec::new(),
        max_tokens: MAX_TOKENS,
    }
}

fn job_with_prefixes(id: &str, prefixes: &[u64]) -> NewJob {
    NewJob {
        prefixes: prefixes.to_vec(),
        ..job(id, "m")
    }
}

fn dispatch(job_id: &str, worker_id: &str) -> Effect {
    Effect::Dispatch(Assignment {
        job_id: job_id.into(),
        worker_id: worker_id.into(),
        url: format!("http://{worker_id}:9000"),
    })
}

fn position(job_id: &str, position: u32) -> Effect {
    Effect::QueuePosition {
        job_id: job_id.into(),
        position,
    }
}

fn stats(tokens: u32) -> GenerationStats {
    GenerationStats {
        finish_reason: FinishReason::Length,
        prompt_tokens: 3,
        generated_tokens: tokens,
        time_to_first_token_ms: 1.0,
        tokens_per_second: 10.0,
        prompt_tokens_per_second: 100.0,
        cached_prompt_tokens: 0,
        draft_tokens: 0,
        draft_tokens_accepted: 0,
    }
}

fn busy(core: &SchedulerCore, worker_id: &str, now: Instant) -> u32 {
    core.workers(now)
        .into_iter()
        .find(|info| info.worker_id == worker_id)
        .expect("worker is registered")
        .slots_busy
}

/// keep_alive and LRU eviction read this: a job that came and went between two housekeeping
/// passes still makes its worker recently used, from its dispatch and again from its end.
#[test]
fn last_used_records_each_dispatch_and_each_end() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.register(worker("idle", "m", 1), clock.at(0));
    assert!(core.last_used().is_empty(), "no job yet");
    core.submit(job("j1", "m"), clock.at(10)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j1", "a")]);
    assert_eq!(core.last_used().get("a"), Some(&clock.at(10)));
    core.finish("j1", JobOutcome::Completed(stats(4)), clock.at(250));
    let used = core.last_used();
    assert_eq!(used.get("a"), Some(&clock.at(250)));
    assert_eq!(
        used.get("idle"),
        None,
        "a worker without jobs was never used"
    );
}

#[test]
fn picks_the_least_loaded_live_worker_with_ties_by_id() {
    let (mut core, clock) = setup(config());
    core.register(worker("b", "m", 2), clock.at(0));
    core.register(worker("a", "m", 2), clock.at(0));
    core.register(worker("c", "other", 8), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(2)).unwrap();
    core.submit(job("j3", "m"), clock.at(3)).unwrap();
    assert_eq!(
        core.take_effects(),
        vec![
            dispatch("j1", "a"),
            dispatch("j2", "b"),
            dispatch("j3", "a")
        ]
    );
    assert_eq!(busy(&core, "a", clock.at(3)), 2);
    assert_eq!(busy(&core, "c", clock.at(3)), 0);
}

#[test]
fn model_without_live_worker_is_refused() {
    let (mut core, clock) = setup(config());
    assert_eq!(
        core.submit(job("j1", "m"), clock.at(0)),
        Err(OrcdError::NoWorker { model: "m".into() })
    );
    core.register(worker("a", "other", 1), clock.at(0));
    assert!(matches!(
        core.submit(job("j1", "m"), clock.at(0)),
        Err(OrcdError::NoWorker { .. })
    ));
    assert!(core.take_effects().is_empty());
    assert!(core.jobs(clock.at(0)).is_empty());
}

#[test]
fn missed_heartbeats_mark_a_worker_dead_until_it_beats_again() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.register(worker("b", "m", 1), clock.at(0));
    core.heartbeat(
        "b",
        Heartbeat {
            slots_busy: 0,
            slots_total: 1,
            jobs_waiting: 0,
        },
        clock.at(9_000),
    )
    .unwrap();
    core.tick(clock.at(10_000));
    assert!(core
        .workers(clock.at(10_000))
        .iter()
        .all(|w| w.state == WorkerState::Live));
    core.tick(clock.at(10_001));
    let states: Vec<_> = core
        .workers(clock.at(10_001))
        .into_iter()
        .map(|w| (w.worker_id, w.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("a".into(), WorkerState::Dead),
            ("b".into(), WorkerState::Live)
        ]
    );
    core.submit(job("j1", "m"), clock.at(10_002)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j1", "b")]);

    core.heartbeat(
        "a",
        Heartbeat {
            slots_busy: 0,
            slots_total: 1,
            jobs_waiting: 0,
        },
        clock.at(11_000),
    )
    .unwrap();
    core.submit(job("j2", "m"), clock.at(11_001)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j2", "a")]);
}

#[test]
fn heartbeat_for_an_unknown_worker_is_not_found() {
    let (mut core, clock) = setup(config());
    assert_eq!(
        core.heartbeat(
            "ghost",
            Heartbeat {
                slots_busy: 0,
                slots_total: 1,
                jobs_waiting: 0,
            },
            clock.at(0)
        ),
        Err(OrcdError::WorkerNotFound("ghost".into()))
    );
}

#[test]
fn full_workers_queue_jobs_fifo_with_positions() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(2)).unwrap();
    core.submit(job("j3", "m"), clock.at(3)).unwrap();
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j1", "a"), position("j2", 1), position("j3", 2)]
    );
    core.finish("j1", JobOutcome::Completed(stats(4)), clock.at(100));
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j2", "a"), position("j3", 1)]
    );
    let states: Vec<_> = core
        .jobs(clock.at(100))
        .into_iter()
        .map(|j| (j.job_id, j.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("j3".into(), JobState::Queued),
            ("j2".into(), JobState::Running),
            ("j1".into(), JobState::Completed),
        ]
    );
}

#[test]
fn a_full_queue_refuses_with_a_retry_estimate() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j0", "m"), clock.at(0)).unwrap();
    core.finish("j0", JobOutcome::Completed(stats(4)), clock.at(4_500));
    core.submit(job("j1", "m"), clock.at(5_000)).unwrap();
    core.submit(job("j2", "m"), clock.at(5_000)).unwrap();
    core.submit(job("j3", "m"), clock.at(5_000)).unwrap();
    assert_eq!(
        core.submit(job("j4", "m"), clock.at(5_000)),
        Err(OrcdError::QueueFull {
            model: "m".into(),
            limit: 2,
            // One 4.5 s job on one slot: a slot frees in about 5 s.
            retry_after_secs: 5,
        })
    );
    assert!(core.job("j4", clock.at(5_000)).is_none());
}

#[test]
fn heartbeat_busy_count_is_a_floor_for_slot_accounting() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 2), clock.at(0));
    core.register(worker("b", "m", 2), clock.at(0));
    // `a` runs two jobs orcd did not send.
    core.heartbeat(
        "a",
        Heartbeat {
            slots_busy: 2,
            slots_total: 2,
            jobs_waiting: 0,
        },
        clock.at(1),
    )
    .unwrap();
    core.submit(job("j1", "m"), clock.at(2)).unwrap();
    core.submit(job("j2", "m"), clock.at(2)).unwrap();
    core.submit(job("j3", "m"), clock.at(2)).unwrap();
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j1", "b"), dispatch("j2", "b"), position("j3", 1)]
    );
    core.heartbeat(
        "a",
        Heartbeat {
            slots_busy: 1,
            slots_total: 2,
            jobs_waiting: 0,
        },
        clock.at(3),
    )
    .unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j3", "a")]);
    assert_eq!(busy(&core, "a", clock.at(3)), 1);
    // orcd's own count wins when it is higher than the report.
    core.heartbeat(
        "b",
        Heartbeat {
            slots_busy: 0,
            slots_total: 2,
            jobs_waiting: 0,
        },
        clock.at(4),
    )
    .unwrap();
    assert_eq!(busy(&core, "b", clock.at(4)), 2);
}

#[test]
fn unreachable_worker_is_marked_dead_and_the_job_retried_elsewhere() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.register(worker("b", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j1", "a")]);
    core.dispatch_failed(
        "j1",
        "a",
        DispatchFailure::Unreachable("connection refused".into()),
        clock.at(2),
    );
    assert_eq!(core.take_effects(), vec![dispatch("j1", "b")]);
    let a = &core.workers(clock.at(2))[0];
    assert_eq!((a.state, a.slots_busy), (WorkerState::Dead, 0));
    // A late report about the old assignment changes nothing.
    core.dispatch_failed(
        "j1",
        "a",
        DispatchFailure::Failed("late".into()),
        clock.at(3),
    );
    assert!(core.take_effects().is_empty());
    assert_eq!(
        core.job("j1", clock.at(3)).unwrap().worker_id.as_deref(),
        Some("b")
    );
}

#[test]
fn failed_worker_is_excluded_for_that_job_only() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.take_effects();
    core.dispatch_failed(
        "j1",
        "a",
        DispatchFailure::Failed("HTTP 500".into()),
        clock.at(2),
    );
    let effects = core.take_effects();
    let [Effect::Fail { job_id, error }] = effects.as_slice() else {
        panic!("expected one failure, got {effects:?}");
    };
    assert_eq!(job_id, "j1");
    assert_eq!(
        error.to_string(),
        "job `j1` could not be dispatched: no other live worker serves model `m`; worker `a`: HTTP 500"
    );
    assert_eq!(core.job("j1", clock.at(2)).unwrap().state, JobState::Failed);
    // The worker is still live and takes other jobs.
    core.submit(job("j2", "m"), clock.at(3)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j2", "a")]);
}

#[test]
fn busy_refusal_requeues_at_the_head_and_goes_to_a_free_worker() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.register(worker("b", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(1)).unwrap();
    core.submit(job("j3", "m"), clock.at(1)).unwrap();
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j1", "a"), dispatch("j2", "b"), position("j3", 1)]
    );
    core.dispatch_failed(
        "j1",
        "a",
        DispatchFailure::Busy("HTTP 503".into()),
        clock.at(2),
    );
    assert_eq!(
        core.take_effects(),
        vec![position("j1", 1), position("j3", 2)]
    );
    core.finish("j2", JobOutcome::Completed(stats(1)), clock.at(3));
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j1", "b"), position("j3", 1)]
    );
    // `a` said it was full; its next heartbeat says otherwise.
    core.heartbeat(
        "a",
        Heartbeat {
            slots_busy: 0,
            slots_total: 1,
            jobs_waiting: 0,
        },
        clock.at(4),
    )
    .unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j3", "a")]);
}

#[test]
fn dispatch_attempts_are_bounded() {
    let (mut core, clock) = setup(SchedulerConfig {
        dispatch_attempts: 2,
        ..config()
    });
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.dispatch_failed(
        "j1",
        "a",
        DispatchFailure::Busy("HTTP 503".into()),
        clock.at(2),
    );
    core.heartbeat(
        "a",
        Heartbeat {
            slots_busy: 0,
            slots_total: 1,
            jobs_waiting: 0,
        },
        clock.at(3),
    )
    .unwrap();
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j1", "a"), position("j1", 1), dispatch("j1", "a")]
    );
    core.dispatch_failed(
        "j1",
        "a",
        DispatchFailure::Busy("HTTP 503".into()),
        clock.at(4),
    );
    let effects = core.take_effects();
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Fail {
                error: OrcdError::DispatchFailed { .. },
                ..
            }]
        ),
        "{effects:?}"
    );
    assert_eq!(busy(&core, "a", clock.at(4)), 1);
}

#[test]
fn cancelling_a_queued_job_removes_it_and_moves_the_others_up() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(1)).unwrap();
    core.submit(job("j3", "m"), clock.at(1)).unwrap();
    core.take_effects();
    assert_eq!(core.cancel("j2", clock.at(2)), Ok(JobState::Queued));
    assert_eq!(
        core.take_effects(),
        vec![
            position("j3", 1),
            Effect::Cancel {
                job_id: "j2".into()
            }
        ]
    );
    let info = core.job("j2", clock.at(2)).unwrap();
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(info.finish_reason, Some(FinishReason::Cancelled));
    assert_eq!(
        core.cancel("j2", clock.at(3)),
        Err(OrcdError::JobFinished {
            job_id: "j2".into(),
            state: JobState::Cancelled
        })
    );
    assert_eq!(
        core.cancel("nope", clock.at(3)),
        Err(OrcdError::JobNotFound("nope".into()))
    );
}

#[test]
fn cancelling_a_running_job_frees_its_slot_when_its_task_finishes_it() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(1)).unwrap();
    core.take_effects();
    // One `token` event of a multibyte character can complete several tokens; the job task
    // reports the running total.
    core.record_progress("j1", 1, clock.at(50));
    core.record_progress("j1", 4, clock.at(55));
    assert_eq!(core.cancel("j1", clock.at(60)), Ok(JobState::Running));
    assert_eq!(
        core.take_effects(),
        vec![Effect::Cancel {
            job_id: "j1".into()
        }]
    );
    assert_eq!(busy(&core, "a", clock.at(60)), 1);
    core.finish("j1", JobOutcome::Cancelled, clock.at(70));
    assert_eq!(core.take_effects(), vec![dispatch("j2", "a")]);
    let info = core.job("j1", clock.at(70)).unwrap();
    assert_eq!(
        (
            info.state,
            info.generated_tokens,
            info.time_to_first_token_ms,
            info.duration_ms
        ),
        (JobState::Cancelled, 4, Some(49.0), Some(69.0))
    );
    // A second outcome for the same job is ignored.
    core.finish("j1", JobOutcome::Failed("late".into()), clock.at(80));
    assert_eq!(
        core.job("j1", clock.at(80)).unwrap().state,
        JobState::Cancelled
    );
}

#[test]
fn a_running_job_cancelled_while_its_dispatch_fails_ends_cancelled() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.register(worker("b", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.cancel("j1", clock.at(2)).unwrap();
    core.dispatch_failed(
        "j1",
        "a",
        DispatchFailure::Unreachable("reset".into()),
        clock.at(3),
    );
    assert_eq!(
        core.take_effects(),
        vec![
            dispatch("j1", "a"),
            Effect::Cancel {
                job_id: "j1".into()
            }
        ]
    );
    assert_eq!(
        core.job("j1", clock.at(3)).unwrap().state,
        JobState::Cancelled
    );
}

#[test]
fn queued_jobs_fail_when_the_last_worker_of_their_model_dies() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(1)).unwrap();
    core.take_effects();
    core.worker_lost("a", clock.at(2));
    assert_eq!(
        core.take_effects(),
        vec![Effect::Fail {
            job_id: "j2".into(),
            error: OrcdError::NoWorker { model: "m".into() }
        }]
    );
    // The running job still holds its slot until its task reports how it ended.
    assert_eq!(
        core.job("j1", clock.at(2)).unwrap().state,
        JobState::Running
    );
    core.finish("j1", JobOutcome::Failed("worker lost".into()), clock.at(3));
    assert_eq!(busy(&core, "a", clock.at(3)), 0);
}

#[test]
fn deregistered_workers_take_no_jobs() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.deregister("a", clock.at(1)).unwrap();
    assert!(core.workers(clock.at(1)).is_empty());
    assert!(matches!(
        core.submit(job("j1", "m"), clock.at(2)),
        Err(OrcdError::NoWorker { .. })
    ));
    assert_eq!(
        core.deregister("a", clock.at(3)),
        Err(OrcdError::WorkerNotFound("a".into()))
    );
}

#[test]
fn long_dead_idle_workers_are_forgotten() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.register(worker("b", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(0)).unwrap();
    core.tick(clock.at(10_001));
    core.tick(clock.at(70_002));
    let left: Vec<_> = core
        .workers(clock.at(70_002))
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    // `b` is idle and long dead; `a` still has a job orcd waits on.
    assert_eq!(left, vec!["a".to_owned()]);
}

#[test]
fn an_expired_dead_worker_is_reported_for_the_audit_log() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.tick(clock.at(10_001));
    core.take_effects();
    // Dead since 10.001 s; the retention is 60 s.
    core.tick(clock.at(70_001));
    assert!(core.take_effects().is_empty());
    assert_eq!(core.workers(clock.at(70_001)).len(), 1);
    core.tick(clock.at(70_002));
    assert_eq!(
        core.take_effects(),
        vec![Effect::WorkerExpired {
            worker_id: "a".into(),
            url: "http://a:9000".into(),
            dead_for: Duration::from_millis(60_001),
        }]
    );
    assert!(core.workers(clock.at(70_002)).is_empty());
}

#[test]
fn dead_records_are_kept_ten_minutes_by_default() {
    assert_eq!(
        SchedulerConfig::default().dead_worker_retention,
        Duration::from_secs(600)
    );
}

#[test]
fn finished_jobs_keep_their_stats_in_a_bounded_ring() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 4), clock.at(0));
    for index in 0..5 {
        let id = format!("j{index}");
        core.submit(job(&id, "m"), clock.at(index)).unwrap();
        core.record_progress(&id, 1, clock.at(index + 10));
        core.finish(&id, JobOutcome::Completed(stats(7)), clock.at(index + 20));
    }
    let jobs = core.jobs(clock.at(100));
    let ids: Vec<_> = jobs.iter().map(|info| info.job_id.as_str()).collect();
    assert_eq!(ids, vec!["j4", "j3", "j2"]);
    let info = &jobs[0];
    assert_eq!(info.worker_id.as_deref(), Some("a"));
    assert_eq!((info.prompt_tokens, info.generated_tokens), (3, 7));
    assert_eq!(info.finish_reason, Some(FinishReason::Length));
    assert_eq!(
        (info.time_to_first_token_ms, info.duration_ms),
        (Some(10.0), Some(20.0))
    );
    assert!(core.job("j0", clock.at(100)).is_none());
}

#[test]
fn no_new_jobs_after_shutdown_begins() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.stop_accepting();
    assert_eq!(
        core.submit(job("j1", "m"), clock.at(1)),
        Err(OrcdError::Draining)
    );
}

#[test]
fn model_summaries_count_workers_slots_and_jobs() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    let mut small = worker("b", "m", 2);
    small.ctx_size = 512;
    core.register(small, clock.at(0));
    core.register(worker("c", "other", 1), clock.at(0));
    for id in ["j1", "j2", "j3", "j4"] {
        core.submit(job(id, "m"), clock.at(1)).unwrap();
    }
    // `c` misses its heartbeats; `a` and `b` keep beating.
    for beat in [5_000, 10_000] {
        for id in ["a", "b"] {
            let heartbeat = Heartbeat {
                slots_busy: 0,
                slots_total: if id == "a" { 1 } else { 2 },
                jobs_waiting: 0,
            };
            core.heartbeat(id, heartbeat, clock.at(beat)).unwrap();
        }
    }
    core.tick(clock.at(10_001));
    let models = core.models();
    assert_eq!(
        models,
        vec![
            ModelSummary {
                model: "m".into(),
                live_workers: 2,
                dead_workers: 0,
                slots_total: 3,
                slots_busy: 3,
                queued: 1,
                running: 3,
                min_ctx_size: 512,
            },
            ModelSummary {
                model: "other".into(),
                live_workers: 0,
                dead_workers: 1,
                slots_total: 0,
                slots_busy: 0,
                queued: 0,
                running: 0,
                min_ctx_size: 0,
            },
        ]
    );
}

#[test]
fn a_worker_marked_dead_ends_its_running_jobs_at_once() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 2), clock.at(0));
    core.submit(job("j1", "m"), clock.at(0)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j1", "a")]);
    core.tick(clock.at(10_001));
    assert_eq!(
        core.take_effects(),
        vec![Effect::WorkerDead {
            job_id: "j1".into(),
            worker_id: "a".into(),
            reason: "no heartbeat for 10 s".into(),
        }]
    );
    // Once dead, later ticks say nothing more about it.
    core.tick(clock.at(11_000));
    assert!(core.take_effects().is_empty());
}

#[test]
fn only_dead_workers_can_be_forgotten() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    assert_eq!(
        core.forget("a", clock.at(1)),
        Err(OrcdError::WorkerLive("a".into()))
    );
    assert_eq!(
        core.forget("ghost", clock.at(1)),
        Err(OrcdError::WorkerNotFound("ghost".into()))
    );
    core.tick(clock.at(10_001));
    let forgotten = core.forget("a", clock.at(10_002)).unwrap();
    assert_eq!(forgotten.state, WorkerState::Dead);
    assert!(core.workers(clock.at(10_002)).is_empty());
}

#[test]
fn a_job_goes_to_the_worker_that_was_sent_its_prefix() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 4), clock.at(0));
    core.register(worker("b", "m", 4), clock.at(0));
    // Two conversations start: least loaded, ties by id.
    core.submit(job_with_prefixes("x1", &[1, 2]), clock.at(1))
        .unwrap();
    core.submit(job_with_prefixes("y1", &[7, 8]), clock.at(1))
        .unwrap();
    assert_eq!(
        core.take_effects(),
        vec![dispatch("x1", "a"), dispatch("y1", "b")]
    );
    core.finish("x1", JobOutcome::Completed(stats(1)), clock.at(2));
    core.finish("y1", JobOutcome::Completed(stats(1)), clock.at(2));
    // Their next turns: both workers idle, so least-loaded routing would send both to `a`.
    core.submit(job_with_prefixes("y2", &[7, 8, 9]), clock.at(3))
        .unwrap();
    core.submit(job_with_prefixes("x2", &[1, 2, 3]), clock.at(3))
        .unwrap();
    assert_eq!(
        core.take_effects(),
        vec![dispatch("y2", "b"), dispatch("x2", "a")]
    );
}

#[test]
fn uneven_load_sends_a_job_to_the_least_loaded_worker_instead() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 8), clock.at(0));
    core.register(worker("b", "m", 8), clock.at(0));
    core.submit(job_with_prefixes("x1", &[1]), clock.at(1))
        .unwrap();
    // Same prefix: `a` holds it and is within the slack of 2 busy slots beyond `b`.
    for turn in 2..=3 {
        core.submit(
            job_with_prefixes(&format!("x{turn}"), &[1, turn]),
            clock.at(1),
        )
        .unwrap();
    }
    assert_eq!(
        core.take_effects(),
        vec![
            dispatch("x1", "a"),
            dispatch("x2", "a"),
            dispatch("x3", "a")
        ]
    );
    // `a` has 3 busy slots, `b` none: beyond the slack, so the least loaded takes it.
    core.submit(job_with_prefixes("x4", &[1, 4]), clock.at(2))
        .unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("x4", "b")]);
    // A restarted worker (registering again) holds nothing any more.
    core.register(worker("a", "m", 8), clock.at(3));
    core.submit(job_with_prefixes("x5", &[1, 2]), clock.at(4))
        .unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("x5", "b")]);
}

#[test]
fn least_loaded_routing_ignores_prefixes() {
    let (mut core, clock) = setup(SchedulerConfig {
        routing: Routing::LeastLoaded,
        ..config()
    });
    core.register(worker("a", "m", 4), clock.at(0));
    core.register(worker("b", "m", 4), clock.at(0));
    core.submit(job_with_prefixes("y0", &[5]), clock.at(1))
        .unwrap();
    core.submit(job_with_prefixes("y1", &[7]), clock.at(1))
        .unwrap();
    core.finish("y0", JobOutcome::Completed(stats(1)), clock.at(2));
    core.finish("y1", JobOutcome::Completed(stats(1)), clock.at(2));
    core.take_effects();
    core.submit(job_with_prefixes("y2", &[7, 8]), clock.at(3))
        .unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("y2", "a")]);
}

#[test]
fn a_job_near_its_max_tokens_lets_the_next_wait_for_its_slot_in_the_worker() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 2), clock.at(0));
    for id in ["j1", "j2", "j3", "j4"] {
        core.submit(job(id, "m"), clock.at(1)).unwrap();
    }
    assert_eq!(
        core.take_effects(),
        vec![
            dispatch("j1", "a"),
            dispatch("j2", "a"),
            position("j3", 1),
            position("j4", 2)
        ]
    );
    // Progress short of the lead changes nothing.
    core.record_progress("j1", MAX_TOKENS - FINISHING_LEAD_TOKENS - 1, clock.at(2));
    assert_eq!(core.take_effects(), vec![]);
    // Within it: the next job goes to wait for j1's slot in the worker's own queue.
    core.record_progress("j1", MAX_TOKENS - FINISHING_LEAD_TOKENS, clock.at(3));
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j3", "a"), position("j4", 1)]
    );
    assert_eq!(
        busy(&core, "a", clock.at(3)),
        2,
        "busy never exceeds the slots"
    );
    // Heard again, it does not count twice.
    core.record_progress("j1", MAX_TOKENS - 1, clock.at(4));
    assert_eq!(core.take_effects(), vec![]);
    // j1 ends: j3 takes its slot, so nothing more is sent.
    core.finish("j1", JobOutcome::Completed(stats(MAX_TOKENS)), clock.at(5));
    assert_eq!(core.take_effects(), vec![]);
    core.finish("j2", JobOutcome::Completed(stats(MAX_TOKENS)), clock.at(6));
    assert_eq!(core.take_effects(), vec![dispatch("j4", "a")]);
}

#[test]
fn a_free_slot_anywhere_comes_before_a_slot_about_to_free() {
    let (mut core, clock) = setup(SchedulerConfig {
        routing: Routing::LeastLoaded,
        ..config()
    });
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.record_progress("j1", MAX_TOKENS - 1, clock.at(2));
    core.register(worker("b", "m", 1), clock.at(3));
    core.submit(job("j2", "m"), clock.at(4)).unwrap();
    core.submit(job("j3", "m"), clock.at(4)).unwrap();
    core.submit(job("j4", "m"), clock.at(4)).unwrap();
    assert_eq!(
        core.take_effects(),
        vec![
            dispatch("j1", "a"),
            dispatch("j2", "b"),
            dispatch("j3", "a"),
            position("j4", 1)
        ]
    );
}

#[test]
fn nothing_is_sent_to_wait_in_a_worker_whose_own_queue_holds_jobs() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    // Another client's job waits there too (a direct client of the worker).
    let beat = |waiting: u32| Heartbeat {
        slots_busy: 1,
        slots_total: 1,
        jobs_waiting: waiting,
    };
    core.heartbeat("a", beat(1), clock.at(2)).unwrap();
    core.submit(job("j2", "m"), clock.at(3)).unwrap();
    core.record_progress("j1", MAX_TOKENS - 1, clock.at(4));
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j1", "a"), position("j2", 1)]
    );
    core.heartbeat("a", beat(0), clock.at(5)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j2", "a")]);
}

#[test]
fn a_worker_that_refuses_a_job_sent_to_wait_gets_none_until_it_has_room() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 1), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(1)).unwrap();
    core.record_progress("j1", MAX_TOKENS - 1, clock.at(2));
    assert_eq!(
        core.take_effects(),
        vec![dispatch("j1", "a"), position("j2", 1), dispatch("j2", "a")]
    );
    // Its queue is full of other clients' jobs: 503.
    core.dispatch_failed(
        "j2",
        "a",
        DispatchFailure::Busy("HTTP 503".into()),
        clock.at(3),
    );
    assert_eq!(core.take_effects(), vec![position("j2", 1)]);
    let full = Heartbeat {
        slots_busy: 1,
        slots_total: 1,
        jobs_waiting: 16,
    };
    core.heartbeat("a", full.clone(), clock.at(4)).unwrap();
    // j1 ends: its slot goes to a job from the worker's own queue, which stays nearly full.
    core.finish("j1", JobOutcome::Completed(stats(MAX_TOKENS)), clock.at(5));
    assert_eq!(core.take_effects(), vec![]);
    let room = Heartbeat {
        slots_busy: 0,
        jobs_waiting: 0,
        ..full
    };
    core.heartbeat("a", room, clock.at(6)).unwrap();
    assert_eq!(core.take_effects(), vec![dispatch("j2", "a")]);
}

fn idle_beat() -> Heartbeat {
    Heartbeat {
        slots_busy: 0,
        slots_total: 2,
        jobs_waiting: 0,
    }
}

#[test]
fn jobs_given_up_on_an_unreachable_worker_are_listed_to_it_once_when_it_is_heard_again() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 2), clock.at(0));
    core.submit(job("silent", "m"), clock.at(1)).unwrap();
    core.submit(job("done", "m"), clock.at(1)).unwrap();
    // The heartbeat timeout passes: both jobs fail at orcd while the worker may still run them.
    core.tick(clock.at(20_000));
    core.finish(
        "silent",
        JobOutcome::Failed("worker dead".into()),
        clock.at(20_001),
    );
    core.finish(
        "done",
        JobOutcome::Failed("worker dead".into()),
        clock.at(20_001),
    );
    assert_eq!(
        core.heartbeat("a", idle_beat(), clock.at(30_000)).unwrap(),
        vec!["done".to_owned(), "silent".to_owned()]
    );
    assert!(core
        .heartbeat("a", idle_beat(), clock.at(31_000))
        .unwrap()
        .is_empty());

    // A connection broken mid-stream: the job orcd fails then is listed on registration too.
    core.submit(job("cut", "m"), clock.at(32_000)).unwrap();
    core.submit(job("finished", "m"), clock.at(32_000)).unwrap();
    core.finish(
        "finished",
        JobOutcome::Completed(stats(4)),
        clock.at(32_500),
    );
    core.worker_lost("a", clock.at(33_000));
    core.finish(
        "cut",
        JobOutcome::Failed("connection lost".into()),
        clock.at(33_000),
    );
    core.register(worker("a", "m", 2), clock.at(34_000));
    assert_eq!(core.take_given_up("a"), vec!["cut".to_owned()]);
    assert!(core.take_given_up("a").is_empty());
}

#[test]
fn a_job_that_ends_normally_is_never_listed_as_given_up() {
    let (mut core, clock) = setup(config());
    core.register(worker("a", "m", 2), clock.at(0));
    core.submit(job("j1", "m"), clock.at(1)).unwrap();
    core.submit(job("j2", "m"), clock.at(1)).unwrap();
    core.finish("j1", JobOutcome::Completed(stats(4)), clock.at(2));
    core.finish(
        "j2",
        JobOutcome::Failed("the worker said so".into()),
        clock.at(2),
    );
    assert!(core
        .heartbeat("a", idle_beat(), clock.at(3))
        .unwrap()
        .is_empty());
}
