//! `cargo xtask jobs` against an orcd that requires tokens: the client sends the token from
//! `LLORCH_API_TOKEN_FILE`, and without it the error names the fix.

use std::process::Command;

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
        let mut command = Command::new(xtask_binary());
        command.args(["--json", "jobs", "list", "--orchestrator-url", &orcd.url]);
        command.env_remove("LLORCH_API_TOKEN_FILE");
        if let Some(path) = token_file {
            command.env("LLORCH_API_TOKEN_FILE", path);
        }
        command.output().unwrap()
    };

    let output = jobs_list(Some(client.as_str()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(jobs, serde_json::json!([]));

    let output = jobs_list(None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("token"),
        "{stderr}"
    );

    let output = jobs_list(Some(worker.as_str()));
    assert!(
        !output.status.success(),
        "a worker token is not a client token"
    );
}
