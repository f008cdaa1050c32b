//! `deploy/systemd/llorch-worker.service` sets only variables the worker reads, so a renamed
//! flag cannot silently turn the unit's settings (the token file above all) into no-ops.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use llorch_worker::flags::WorkerArgs;

#[test]
fn the_worker_unit_sets_only_variables_the_worker_reads() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/llorch-worker.service");
    let unit = std::fs::read_to_string(&path).unwrap();
    let known: BTreeSet<String> = WorkerArgs::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect();
    let set: BTreeSet<String> = unit
        .lines()
        // Commented examples (`#   LLORCH_MODEL=...`) count too: they are what people copy.
        .map(|line| line.trim_start_matches(['#', ' ']))
        .filter_map(|line| line.strip_prefix("Environment=").or(Some(line)))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, _)| name.to_owned())
        .filter(|name| name.starts_with("LLORCH_"))
        .collect();
    assert!(
        set.contains("LLORCH_WORKER_TOKEN_FILE") && set.contains("LLORCH_ORCHESTRATOR_URL"),
        "{set:?}"
    );
    let unknown: Vec<&String> = set.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "llorch-worker.service names variables the worker ignores: {unknown:?}"
    );
}
