//! Desired against actual, as a pure function: what the fleet file asks of one host and what
//! runs there become one action per worker. `fleet plan` prints it, `fleet host apply` carries
//! it out; the rules are tested here without any process or host.

use serde::{Deserialize, Serialize};

use super::file::WorkerSpec;

/// A fleet worker found on a host: how it was started (its unit or its record) and whether it
/// runs and answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActualWorker {
    pub name: String,
    /// What it was started with; `None` when its record is unreadable.
    pub spec: Option<WorkerSpec>,
    pub supervisor: Running,
    /// The process (or unit) is running.
    pub running: bool,
    /// Its `/health` answered; `ready`, `loading` or `draining`.
    pub health: Option<String>,
    pub slots_busy: Option<u32>,
    /// Mean generation speed from its /metrics.
    pub tokens_per_second: Option<f64>,
    /// `Some(true)` when its model was re-hashed and matched (`fleet host state --verify-models`).
    pub model_verified: Option<bool>,
    /// Started by `pool worker spawn` (same run directory, same ids): the fleet takes it over
    /// when the fleet file has a worker of that id, and otherwise leaves it alone.
    #[serde(default)]
    pub started_by_pool: bool,
}

/// What keeps a worker running on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Running {
    /// A systemd user unit (survives logout and reboots).
    Systemd,
    /// xtask's detached supervisor (the run directory of `pool worker`).
    Detached,
}

/// One field of a worker that differs between the fleet file and the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    pub actual: String,
    pub desired: String,
}

/// What to do about one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    Start {
        reason: String,
    },
    Restart {
        reason: String,
        changes: Vec<Change>,
    },
    Stop {
        reason: String,
    },
    Nothing,
}

impl Action {
    pub fn is_nothing(&self) -> bool {
        *self == Action::Nothing
    }

    /// `start (not running)`, `restart (slots 1 -> 2)`, `nothing`.
    pub fn describe(&self) -> String {
        match self {
            Action::Start { reason } => format!("start ({reason})"),
            Action::Restart { reason, changes } if changes.is_empty() => {
                format!("restart ({reason})")
            }
            Action::Restart { changes, .. } => format!(
                "restart ({})",
                changes
                    .iter()
                    .map(|change| format!(
                        "{} {} -> {}",
                        change.field, change.actual, change.desired
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Action::Stop { reason } => format!("stop ({reason})"),
            Action::Nothing => "nothing".to_owned(),
        }
    }
}

/// What happened to one worker (or the host's pool manager).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerOutcome {
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    pub ok: bool,
    pub error: Option<String>,
}

/// The action for one worker of one host, with what it is to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
    /// The spec to start it with (`None` for a stop).
    pub desired: Option<WorkerSpec>,
}

/// Why `up` stops a worker that runs on a host: the fleet file no longer has it.
pub const STOP_STRAY: &str = "not in the fleet file";
/// Why `down` stops every fleet worker.
pub const STOP_DOWN: &str = "fleet down";

/// One action per worker: the desired ones in file order, then those to stop, each stop
/// giving `stop_reason` ([`STOP_STRAY`] or [`STOP_DOWN`]).
pub fn plan_host(
    desired: &[WorkerSpec],
    actual: &[ActualWorker],
    stop_reason: &str,
) -> Vec<WorkerPlan> {
    let mut plans: Vec<WorkerPlan> = desired
        .iter()
        .map(|spec| {
            let found = actual.iter().find(|worker| worker.name == spec.name);
            WorkerPlan {
                name: spec.name.clone(),
                action: action_for(spec, found),
                desired: Some(spec.clone()),
            }
        })
        .collect();
    for worker in actual.iter().filter(|worker| !worker.started_by_pool) {
        if !desired.iter().any(|spec| spec.name == worker.name) {
            plans.push(WorkerPlan {
                name: worker.name.clone(),
                action: Action::Stop {
                    reason: stop_reason.to_owned(),
                },
                desired: None,
            });
        }
    }
    plans
}

fn action_for(spec: &WorkerSpec, actual: Option<&ActualWorker>) -> Action {
    let Some(actual) = actual else {
        return Action::Start {
            reason: "new".to_owned(),
        };
    };
    let changes = match &actual.spec {
        Some(running) => differences(running, spec),
        None => Vec::new(),
    };
    if !actual.running {
        // Its old settings do not matter: it is started with the new ones either way.
        return Action::Start {
            reason: "not running".to_owned(),
        };
    }
    if actual.started_by_pool {
        return Action::Restart {
            reason: "started by `pool worker spawn`; the fleet takes it over".to_owned(),
            changes,
        };
    }
    if actual.spec.is_none() {
        return Action::Restart {
            reason: "its record is unreadable".to_owned(),
            changes,
        };
    }
    if !changes.is_empty() {
        return Action::Restart {
            reason: "settings changed".to_owned(),
            changes,
        };
    }
    if actual.health.is_none() {
        return Action::Restart {
            reason: "running but not answering /health".to_owned(),
            changes,
        };
    }
    Action::Nothing
}

/// The fields whose values differ, named as in the fleet file.
pub fn differences(actual: &WorkerSpec, desired: &WorkerSpec) -> Vec<Change> {
    let option = |value: Option<u32>| value.map_or("-".to_owned(), |value| value.to_string());
    let (was, wanted) = (&actual.launch, &desired.launch);
    let fields: [(&str, String, String); 11] = [
        ("model", was.model.clone(), wanted.model.clone()),
        (
            "backend",
            was.backend.to_string(),
            wanted.backend.to_string(),
        ),
        ("gpu", option(was.gpu), option(wanted.gpu)),
        ("slots", option(was.slots), option(wanted.slots)),
        ("ctx_size", option(was.ctx_size), option(wanted.ctx_size)),
        ("threads", option(was.threads), option(wanted.threads)),
        ("port", actual.port.to_string(), desired.port.to_string()),
        ("bind", actual.bind.to_string(), desired.bind.to_string()),
        (
            "advertise_url",
            actual.advertise_url.clone(),
            desired.advertise_url.clone(),
        ),
        (
            "orchestrator_url",
            actual.orchestrator_url.clone(),
            desired.orchestrator_url.clone(),
        ),
        (
            "embeddings",
            was.embeddings.to_string(),
            wanted.embeddings.to_string(),
        ),
    ];
    fields
        .into_iter()
        .filter(|(_, actual, desired)| actual != desired)
        .map(|(field, actual, desired)| Change {
            field: field.to_owned(),
            actual,
            desired,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, slots: u32) -> WorkerSpec {
        WorkerSpec {
            name: name.into(),
            launch: llorch_api::pool::WorkerLaunch {
                slots: Some(slots),
                ctx_size: Some(512),
                ..llorch_api::pool::WorkerLaunch::of_model("gemma3-270m")
            },
            port: 9001,
            bind: "10.0.0.2".parse().unwrap(),
            advertise_url: "http://10.0.0.2:9001".into(),
            orchestrator_url: "http://10.0.0.1:8080".into(),
        }
    }

    fn running(spec: WorkerSpec) -> ActualWorker {
        ActualWorker {
            name: spec.name.clone(),
            spec: Some(spec),
            supervisor: Running::Detached,
            running: true,
            health: Some("ready".into()),
            slots_busy: Some(0),
            tokens_per_second: None,
            model_verified: None,
            started_by_pool: false,
        }
    }

    #[test]
    fn a_pool_worker_of_a_fleet_id_is_taken_over_and_others_are_left_alone() {
        let by_pool = |name: &str| ActualWorker {
            spec: None,
            started_by_pool: true,
            ..running(spec(name, 1))
        };
        let plans = plan_host(&[spec("a", 1)], &[by_pool("a"), by_pool("b")], STOP_STRAY);
        assert_eq!(plans.len(), 1, "{plans:?}");
        assert_eq!(
            plans[0].action.describe(),
            "restart (started by `pool worker spawn`; the fleet takes it over)"
        );
    }

    fn actions(plans: &[WorkerPlan]) -> Vec<(&str, &Action)> {
        plans
            .iter()
            .map(|plan| (plan.name.as_str(), &plan.action))
            .collect()
    }

    #[test]
    fn a_host_that_matches_has_nothing_to_do() {
        let desired = [spec("a", 1), spec("b", 2)];
        let actual = [running(spec("b", 2)), running(spec("a", 1))];
        let plans = plan_host(&desired, &actual, STOP_STRAY);
        assert_eq!(
            actions(&plans),
            vec![("a", &Action::Nothing), ("b", &Action::Nothing)]
        );
    }

    #[test]
    fn a_changed_slot_count_restarts_that_worker_only_and_says_what_differs() {
        let desired = [spec("a", 2), spec("b", 1)];
        let actual = [running(spec("a", 1)), running(spec("b", 1))];
        let plans = plan_host(&desired, &actual, STOP_STRAY);
        assert_eq!(
            plans[0].action,
            Action::Restart {
                reason: "settings changed".into(),
                changes: vec![Change {
                    field: "slots".into(),
                    actual: "1".into(),
                    desired: "2".into()
                }],
            }
        );
        assert_eq!(plans[0].action.describe(), "restart (slots 1 -> 2)");
        assert_eq!(plans[1].action, Action::Nothing);
    }

    #[test]
    fn missing_and_dead_workers_are_started_and_strays_stopped() {
        let desired = [spec("new", 1), spec("dead", 1)];
        let mut dead = running(spec("dead", 3));
        dead.running = false;
        dead.health = None;
        let actual = [dead, running(spec("stray", 1))];
        let plans = plan_host(&desired, &actual, STOP_STRAY);
        assert_eq!(
            actions(&plans),
            vec![
                (
                    "new",
                    &Action::Start {
                        reason: "new".into()
                    }
                ),
                (
                    "dead",
                    &Action::Start {
                        reason: "not running".into()
                    }
                ),
                (
                    "stray",
                    &Action::Stop {
                        reason: "not in the fleet file".into()
                    }
                ),
            ]
        );
        assert_eq!(
            plans[1].desired.as_ref().unwrap().launch.slots,
            Some(1),
            "started as desired"
        );
        assert!(plans[2].desired.is_none());
    }

    #[test]
    fn a_hung_worker_is_restarted() {
        let mut hung = running(spec("a", 1));
        hung.health = None;
        let plans = plan_host(&[spec("a", 1)], &[hung], STOP_STRAY);
        assert!(
            matches!(&plans[0].action, Action::Restart { reason, .. } if reason.contains("/health")),
            "{plans:?}"
        );
    }

    #[test]
    fn an_empty_fleet_stops_everything() {
        let plans = plan_host(
            &[],
            &[running(spec("a", 1)), running(spec("b", 1))],
            STOP_STRAY,
        );
        assert!(plans
            .iter()
            .all(|plan| matches!(plan.action, Action::Stop { .. })));
        assert_eq!(plans.len(), 2);
    }

    #[test]
    fn every_field_is_compared() {
        let mut other = spec("a", 1);
        other.launch.model = "qwen2.5-coder-0.5b".into();
        other.launch.gpu = Some(1);
        other.launch.threads = Some(2);
        other.orchestrator_url = "http://10.0.0.9:8080".into();
        other.launch.embeddings = true;
        let fields: Vec<String> = differences(&spec("a", 1), &other)
            .into_iter()
            .map(|change| change.field)
            .collect();
        assert_eq!(
            fields,
            ["model", "gpu", "threads", "orchestrator_url", "embeddings"]
        );
    }

    #[test]
    fn plans_serialize_with_a_tagged_action() {
        let plans = plan_host(&[spec("a", 2)], &[running(spec("a", 1))], STOP_STRAY);
        let json = serde_json::to_value(&plans[0]).unwrap();
        assert_eq!(json["action"], "restart");
        assert_eq!(json["changes"][0]["field"], "slots");
        assert_eq!(json["name"], "a");
    }

    #[test]
    fn records_of_the_previous_version_match_the_same_fleet_worker() {
        // Flat records as the previous version wrote them (markers, unit comments), one from
        // before `embeddings` existed.
        let with_embeddings = r#"{"name":"w","model":"gemma3-270m","backend":"cpu","gpu":null,"slots":2,"ctx_size":512,"port":9001,"bind":"10.0.0.2","advertise_url":"http://10.0.0.2:9001","orchestrator_url":"http://10.0.0.1:8080","embeddings":false}"#;
        let without = with_embeddings.replace(r#","embeddings":false"#, "");
        for old in [with_embeddings, without.as_str()] {
            let record: WorkerSpec = serde_json::from_str(old).unwrap();
            assert_eq!(record, spec("w", 2));
            assert_eq!(differences(&record, &spec("w", 2)), Vec::new());
        }
        let mut gpu = spec("w", 2);
        gpu.launch.gpu = Some(1);
        let json = serde_json::to_string(&gpu).unwrap();
        assert!(
            json.contains(
                r#""model":"gemma3-270m","backend":"cpu","gpu":1,"slots":2,"ctx_size":512"#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<WorkerSpec>(&json).unwrap(), gpu);
    }
}
