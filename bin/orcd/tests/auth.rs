//! Authentication and the audit log on a real socket: missing, wrong and wrong-kind tokens are
//! refused with 401/403 and leave an audit line; accepted work is audited without its prompt;
//! the `orcd` binary refuses to start exposed without tokens or with readable token files;
//! without tokens only local and allowed `Host` names are answered (DNS rebinding).

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use llorch_api::audit::{sha256_hex, ChainVerifier};
use llorch_api::JobInfo;
use orcd::audit::AuditSettings;
use orcd::auth::{fingerprint, AuthConfig};
use orcd::Settings;
use serde_json::{json, Value};
use support::{all_events, events, eventually, FakeWorker, Orcd, Script};

const CLIENT_TOKEN: &str = "client-token-0123456789abcdef";
const WORKER_TOKEN: &str = "worker-token-0123456789abcdef";
const MODEL: &str = "fake-model";
const PROMPT: &str = "The secret plans are";

fn settings(audit_log: &Path) -> Settings {
    Settings {
        auth: AuthConfig::from_tokens(&[CLIENT_TOKEN], &[WORKER_TOKEN]).unwrap(),
        audit: Some(AuditSettings {
            path: audit_log.to_path_buf(),
            fsync_each_event: true,
        }),
        drain: Duration::from_millis(200),
        ..Settings::default()
    }
}

/// The audit log's lines, after checking the whole chain.
async fn audit_lines(orcd: &Orcd, path: &Path) -> Vec<Value> {
    orcd.state.audit().expect("audit is on").flush().await;
    let text = std::fs::read_to_string(path).unwrap();
    let mut verifier = ChainVerifier::from_genesis();
    text.lines()
        .map(|line| {
            verifier
                .check(line)
                .unwrap_or_else(|error| panic!("{error}: {line}"));
            serde_json::from_str(line).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn missing_wrong_and_wrong_kind_tokens_are_refused_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let orcd = Orcd::start(settings(&log)).await;
    let request = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let builder = orcd.client.request(method, format!("{}{path}", orcd.url));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    };
    let worker = FakeWorker::start(Script::complete(2, Duration::from_millis(1))).await;
    let registration = serde_json::to_value(worker.registration("w1", MODEL, 1)).unwrap();

    let cases: [(reqwest::Method, &str, Option<&str>, u16); 7] = [
        (reqwest::Method::GET, "/v2/tasks", None, 401),
        (
            reqwest::Method::GET,
            "/v2/tasks",
            Some("not-a-token-0123456789"),
            401,
        ),
        (reqwest::Method::GET, "/metrics", None, 401),
        (reqwest::Method::GET, "/v2/tasks", Some(WORKER_TOKEN), 403),
        (
            reqwest::Method::POST,
            "/workers/register",
            Some(CLIENT_TOKEN),
            403,
        ),
        (reqwest::Method::POST, "/workers/register", None, 401),
        (reqwest::Method::GET, "/health", None, 200),
    ];
    for (method, path, token, status) in cases.clone() {
        let mut builder = request(method.clone(), path, token);
        if method == reqwest::Method::POST {
            builder = builder.json(&registration);
        }
        let response = builder.send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path} with {token:?}");
        if status == 401 {
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: llorch_api::ErrorBody = response.json().await.unwrap();
            assert_eq!(body.error_type, llorch_api::ErrorKind::Unauthorized);
        }
    }
    // Nothing was registered by the refused attempt.
    let workers = request(reqwest::Method::GET, "/workers", Some(CLIENT_TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(workers.status(), 200);
    assert_eq!(
        workers.json::<Vec<Value>>().await.unwrap(),
        Vec::<Value>::new()
    );

    let lines = audit_lines(&orcd, &log).await;
    let failures: Vec<&Value> = lines
        .iter()
        .filter(|line| line["event"] == "auth_failure")
        .collect();
    assert_eq!(failures.len(), 6, "{lines:#?}");
    let statuses: Vec<u64> = failures
        .iter()
        .map(|f| f["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [401, 401, 401, 403, 403, 401]);
    for failure in &failures {
        let peer = failure["actor"]["peer"].as_str().unwrap();
        assert!(peer.starts_with("127.0.0.1:"), "{failure}");
    }
    assert_eq!(
        failures[3]["actor"]["token"],
        fingerprint(WORKER_TOKEN).as_str()
    );
    assert_eq!(failures[3]["path"], "/v2/tasks");
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [CLIENT_TOKEN, WORKER_TOKEN, "not-a-token-0123456789"] {
        assert!(!text.contains(secret), "the audit log holds a token");
    }
}

#[tokio::test]
async fn a_burst_of_refused_requests_with_huge_paths_stays_small_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let orcd = Orcd::start(settings(&log)).await;
    // Near the longest URI the `http` crate takes (64 KiB - 2).
    let path = format!("/v2/tasks/{}", "a".repeat(60_000));
    for _ in 0..200 {
        let response = orcd
            .client
            .get(format!("{}{path}", orcd.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let lines = audit_lines(&orcd, &log).await;
    let size = std::fs::metadata(&log).unwrap().len();
    // Unbounded, this was 200 lines of more than 60 KB each.
    assert!(size < 16 * 1024, "200 refusals took {size} bytes");
    let failures: Vec<&Value> = lines
        .iter()
        .filter(|line| line["event"] == "auth_failure")
        .collect();
    assert!(
        !failures.is_empty() && failures.len() < 20,
        "{} auth_failure lines",
        failures.len()
    );
    let expected = format!(
        "{} bytes, sha256 {}]",
        path.len(),
        sha256_hex(path.as_bytes())
    );
    for failure in &failures {
        let kept = failure["path"].as_str().unwrap();
        assert!(kept.ends_with(&expected), "{kept}");
    }
    let counted: u64 = lines
        .iter()
        .filter(|line| line["event"] == "auth_failures_collapsed")
        .map(|line| {
            assert_eq!(line["actor"]["peer"], "127.0.0.1", "{line}");
            line["count"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(failures.len() as u64 + counted, 200, "{lines:#?}");
}

#[tokio::test]
async fn jobs_belong_to_their_token_and_an_operator_sees_and_cancels_them_all() {
    const OTHER_CLIENT_TOKEN: &str = "other-client-token-0123456789";
    const OPERATOR_TOKEN: &str = "operator-token-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let settings = Settings {
        auth: AuthConfig::from_tokens(&[CLIENT_TOKEN, OTHER_CLIENT_TOKEN], &[WORKER_TOKEN])
            .unwrap()
            .with_operator_tokens(vec![OPERATOR_TOKEN.into()])
            .unwrap(),
        ..settings(&log)
    };
    let orcd = Orcd::start(settings).await;
    // A job that keeps running until it is cancelled.
    let worker = FakeWorker::start(Script::complete(100_000, Duration::from_millis(10))).await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 1), WORKER_TOKEN)
        .await;
    let response = orcd
        .client
        .post(format!("{}/v2/tasks", orcd.url))
        .bearer_auth(CLIENT_TOKEN)
        .json(&json!({"model": MODEL, "prompt": PROMPT, "max_tokens": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let job_id = response.headers()["x-llorch-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let stream = events(response);
    let job_path = format!("/v2/tasks/{job_id}");
    let send = |method: reqwest::Method, path: &str, token: &str| {
        orcd.client
            .request(method, format!("{}{path}", orcd.url))
            .bearer_auth(token)
            .send()
    };
    let listed = |token: &'static str| {
        let request = send(reqwest::Method::GET, "/v2/tasks", token);
        async move {
            let jobs: Vec<JobInfo> = request.await.unwrap().json().await.unwrap();
            jobs.into_iter().map(|job| job.job_id).collect::<Vec<_>>()
        }
    };

    // Another client's token: the job does not exist for it.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let response = send(method.clone(), &job_path, OTHER_CLIENT_TOKEN)
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method}");
    }
    assert!(!listed(OTHER_CLIENT_TOKEN).await.contains(&job_id));
    // Its owner sees it, with its owner's fingerprint.
    let owned: JobInfo = send(reqwest::Method::GET, &job_path, CLIENT_TOKEN)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(owned.owner, Some(fingerprint(CLIENT_TOKEN)));
    assert!(listed(CLIENT_TOKEN).await.contains(&job_id));
    // The operator sees it and cancels it.
    assert!(listed(OPERATOR_TOKEN).await.contains(&job_id));
    let cancelled = send(reqwest::Method::DELETE, &job_path, OPERATOR_TOKEN)
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let last = all_events(stream).await.pop();
    assert!(
        matches!(
            last,
            Some(llorch_api::StreamEvent::Done(ref stats))
                if stats.finish_reason == llorch_api::FinishReason::Cancelled
        ),
        "{last:?}"
    );

    // The job's end is recorded when its task finishes, just after the stream closed.
    let mut lines = Vec::new();
    eventually("the job's end in the audit log", async || {
        lines = audit_lines(&orcd, &log).await;
        lines
            .iter()
            .any(|line| line["event"] == "task_cancelled" && line["job_id"] == job_id.as_str())
    })
    .await;
    let actor_of = |event: &str| {
        lines
            .iter()
            .find(|line| line["event"] == event && line["job_id"] == job_id.as_str())
            .unwrap_or_else(|| panic!("no {event} for the job in {lines:#?}"))["actor"]["token"]
            .clone()
    };
    assert_eq!(
        actor_of("task_submitted"),
        fingerprint(CLIENT_TOKEN).as_str()
    );
    assert_eq!(
        actor_of("cancel_requested"),
        fingerprint(OPERATOR_TOKEN).as_str()
    );
    // The end of the job is its owner's: they submitted it.
    assert_eq!(
        actor_of("task_cancelled"),
        fingerprint(CLIENT_TOKEN).as_str()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [CLIENT_TOKEN, OTHER_CLIENT_TOKEN, OPERATOR_TOKEN] {
        assert!(!text.contains(secret), "the audit log holds a token");
    }
}

#[tokio::test]
async fn accepted_work_is_audited_with_the_prompt_hash_never_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let orcd = Orcd::start(settings(&log)).await;
    let worker = FakeWorker::start(Script::complete(3, Duration::from_millis(1))).await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 1), WORKER_TOKEN)
        .await;
    let response = orcd
        .client
        .post(format!("{}/v2/tasks", orcd.url))
        .bearer_auth(CLIENT_TOKEN)
        .json(&json!({"model": MODEL, "prompt": PROMPT, "max_tokens": 3}))
        .send()
        .await
        .unwrap();
    let job_id = response.headers()["x-llorch-job-id"]
        .to_str()
        .unwrap()
        .to_owned();
    all_events(events(response)).await;
    // orcd presented the worker token on `/execute`.
    let (_, authorization) = worker.last_request().unwrap();
    assert_eq!(authorization, Some(format!("Bearer {WORKER_TOKEN}")));
    let deleted = orcd
        .client
        .delete(format!("{}/workers/w1", orcd.url))
        .bearer_auth(WORKER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    // The job's end is recorded by its task, just after the stream's last event.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = audit_lines(&orcd, &log).await;
        if lines.iter().any(|line| line["event"] == "task_finished") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events: Vec<&str> = lines
        .iter()
        .map(|line| line["event"].as_str().unwrap())
        .collect();
    for expected in [
        "log_opened",
        "worker_registered",
        "task_submitted",
        "task_finished",
        "worker_removed",
    ] {
        assert!(
            events.contains(&expected),
            "{expected} missing from {events:?}"
        );
    }
    let submitted = lines
        .iter()
        .find(|line| line["event"] == "task_submitted")
        .unwrap();
    assert_eq!(submitted["job_id"], job_id.as_str());
    assert_eq!(submitted["prompt_bytes"], PROMPT.len());
    assert_eq!(
        submitted["prompt_sha256"],
        sha256_hex(PROMPT.as_bytes()).as_str()
    );
    assert_eq!(
        submitted["actor"]["token"],
        fingerprint(CLIENT_TOKEN).as_str()
    );
    let finished = lines
        .iter()
        .find(|line| line["event"] == "task_finished")
        .unwrap();
    assert_eq!(
        (
            finished["generated_tokens"].as_u64(),
            finished["worker_id"].as_str()
        ),
        (Some(3), Some("w1"))
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(PROMPT), "the audit log holds the prompt");
}

#[tokio::test]
async fn without_tokens_a_foreign_host_gets_421_naming_the_flag() {
    let allowed = llorch_serve::AllowedHosts::new(&["orcd.lan".into()]).unwrap();
    let plain = Orcd::start(Settings {
        allowed_hosts: allowed.clone(),
        ..Settings::default()
    })
    .await;
    let port = plain.url.rsplit(':').next().unwrap().to_owned();
    let send = |orcd: &Orcd, method: reqwest::Method, path: &str, host: &str| {
        orcd.client
            .request(method, format!("{}{path}", orcd.url))
            .header("host", host)
            .json(&json!({"model": MODEL, "prompt": "hi", "max_tokens": 1}))
            .send()
    };
    // What a page that rebound its domain to 127.0.0.1 sends: its own domain.
    for (method, path) in [
        (reqwest::Method::POST, "/v2/tasks"),
        (reqwest::Method::POST, "/workers/register"),
        (reqwest::Method::GET, "/health"),
        (reqwest::Method::POST, "/v1/completions"),
    ] {
        let response = send(&plain, method, path, &format!("rebind.example:{port}"))
            .await
            .unwrap();
        assert_eq!(response.status(), 421, "{path}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("--allowed-host"), "{message}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".to_owned(),
        format!("orcd.lan:{port}"),
    ] {
        let response = send(&plain, reqwest::Method::GET, "/health", &host)
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
    // With tokens the rule is off: a rebinding page has no token, and gets 401.
    let dir = tempfile::tempdir().unwrap();
    let protected = Orcd::start(settings(&dir.path().join("audit.jsonl"))).await;
    let host = "rebind.example";
    let health = send(&protected, reqwest::Method::GET, "/health", host);
    assert_eq!(health.await.unwrap().status(), 200);
    let task = send(&protected, reqwest::Method::POST, "/v2/tasks", host);
    assert_eq!(task.await.unwrap().status(), 401);
}

fn orcd_binary(args: &[&str]) -> std::process::Output {
    Command::new(crate::support::orcd_binary())
        .args(args)
        .env_remove("LLORCH_API_TOKEN_FILE")
        .env_remove("LLORCH_WORKER_TOKEN_FILE")
        .env_remove("LLORCH_INSECURE_NO_AUTH")
        .output()
        .unwrap()
}

#[test]
fn orcd_refuses_to_listen_exposed_without_tokens() {
    let output = orcd_binary(&["--listen", "0.0.0.0:0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("without authentication") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}

#[test]
fn orcd_refuses_token_files_others_can_read_and_never_prints_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, token: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let api = write("api.token", CLIENT_TOKEN, 0o644);
    let worker = write("worker.token", WORKER_TOKEN, 0o600);
    let output = orcd_binary(&[
        "--listen",
        "127.0.0.1:0",
        "--api-token-file",
        api.to_str().unwrap(),
        "--worker-token-file",
        worker.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(CLIENT_TOKEN), "{stderr}");
}

#[tokio::test]
async fn jobs_ended_by_a_shutdown_are_in_the_audit_log_when_serve_returns() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let orcd = Orcd::start(settings(&log)).await;
    let worker = FakeWorker::start(Script::complete(400, Duration::from_millis(25))).await;
    orcd.register_with_token(&worker.registration("w1", MODEL, 1), WORKER_TOKEN)
        .await;
    let response = orcd
        .client
        .post(format!("{}/v2/tasks", orcd.url))
        .bearer_auth(CLIENT_TOKEN)
        .json(&json!({"model": MODEL, "prompt": PROMPT, "max_tokens": 400}))
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(all_events(events(response)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    orcd.shut_down().await.unwrap();
    reader.await.unwrap();

    // No flush from the test: `serve` made the log complete before it returned.
    let text = std::fs::read_to_string(&log).unwrap();
    let failed: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["event"] == "task_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{}",
        failed[0]
    );
}
