//! `cargo xtask jobs` as orcd's client: it sends the token from `LLORCH_API_TOKEN_FILE`, a
//! refused token's error says where the client read it from, and a failed job is named by its id.

use llorch_api::{Backend, JobInfo, JobState, WorkerRegistration};

use llorch_tests::*;

#[test]
fn jobs_sends_the_api_token_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let client = token_file(dir.path(), "client", "client-token-0123456789abcdef");
    let worker = token_file(dir.path(), "worker", "worker-token-0123456789abcdef");
    let orcd = start_orcd(
        "127.0.0.1:0",
        &["--api-token-file", &client, "--worker-token-file", &worker],
    )
    .unwrap();

    let jobs_list = |token_file: Option<&str>| {
        let mut xtask = xtask();
        xtask.env("LLORCH_CONFIG_PATH", dir.path().join("no-config.toml"));
        if let Some(path) = token_file {
            xtask.env("LLORCH_API_TOKEN_FILE", path);
        }
        xtask.run(["--json", "jobs", "list", "--orchestrator-url", &orcd.url])
    };

    let output = jobs_list(Some(client.as_str()));
    assert!(output.status.success(), "{}", output.stderr.as_str());
    let jobs: serde_json::Value = serde_json::from_str(&output.stdout).unwrap();
    assert_eq!(jobs, serde_json::json!([]));

    let output = jobs_list(None);
    assert!(!output.status.success());
    let stderr = output.stderr.as_str();
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        stderr.contains("\nhint: the client sent no token: export LLORCH_API_TOKEN_FILE=FILE"),
        "the hint says how to give one: {stderr}"
    );

    let output = jobs_list(Some(worker.as_str()));
    assert!(
        !output.status.success(),
        "a worker token is not a client token"
    );
    let stderr = output.stderr.as_str();
    assert!(
        stderr.contains(&format!(
            "\nhint: the client read its token from {worker} (LLORCH_API_TOKEN_FILE)"
        )),
        "the hint names the file and the variable that chose it: {stderr}"
    );
}

#[test]
fn a_job_that_fails_before_it_starts_is_named_by_its_id() {
    let orcd = start_orcd("127.0.0.1:0", &[]).unwrap();
    // A worker that registered and then vanished: nothing listens on its port any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let registration = WorkerRegistration {
        worker_id: "gone".into(),
        url: gone_url,
        model: default_model_id(),
        backend: Backend::Cpu,
        slots: 1,
        ctx_size: 2048,
        embeddings: false,
    };
    runtime().block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{}/workers/register", orcd.url))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    });

    let output = xtask().run([
        "--no-color",
        "jobs",
        "submit",
        "--orchestrator-url",
        &orcd.url,
        "--prompt",
        "Hello",
        "--max-tokens",
        "4",
    ]);
    let stderr = output.stderr.as_str();
    assert!(!output.status.success(), "{stderr}");

    let jobs: Vec<JobInfo> = runtime().block_on(async {
        reqwest::get(format!("{}/v2/tasks", orcd.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, JobState::Failed, "{jobs:?}");
    assert!(
        stderr.contains(&format!("job {} failed", jobs[0].job_id)),
        "the error names the job: {stderr}"
    );
}
