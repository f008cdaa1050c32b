//! Smoke test: the path a user takes — orcd and a worker on the default model, and the
//! `cargo xtask jobs` client streaming a completion through them.

use llorch_api::{JobInfo, JobState};
use llorch_tests::*;

#[test]
fn jobs_submit_streams_a_completion_through_orcd_and_a_worker() {
    let (orcd, _worker) = runtime().block_on(start_stack(4)).unwrap();

    let output = xtask().run([
        "--no-color",
        "jobs",
        "submit",
        "--orchestrator-url",
        &orcd.url,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "24",
    ]);
    let stdout = output.stdout.as_str();
    let stderr = output.stderr.as_str();
    assert!(
        output.status.success(),
        "jobs submit failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.trim().len() > 10,
        "the completion is printed on stdout: {stdout:?}"
    );
    assert!(
        stderr.contains("24 tokens"),
        "statistics go to stderr: {stderr}"
    );

    let output = xtask().run(["--json", "jobs", "list", "--orchestrator-url", &orcd.url]);
    assert!(output.status.success(), "{}", output.stderr.as_str());
    let jobs: Vec<JobInfo> = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Completed);
    assert_eq!(jobs[0].generated_tokens, 24);
}
