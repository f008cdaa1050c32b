//! `cargo xtask models download ID --host H` end to end on loopback: the real orcd (with
//! client, operator and worker tokens) and the real `llorch-pool-managerd` (release builds),
//! the pool manager fetching from a local server that speaks the hub's download protocol
//! (`HF_ENDPOINT`). A download lands in the host's model directory with its manifest and shows
//! in the host's facts as verified; a second request finds it there; a file whose bytes differ
//! from the catalog's SHA-256 is discarded and leaves nothing; an unknown id, a model that
//! needs a conversion and a client without the operator token are refused; the pool manager's
//! own route wants the worker token. (Python-package models: bin/pool-managerd/tests/api.rs
//! and tests/pool_download.rs.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::models_support::{fake_gguf, hub_entry, pseudo_random_bytes, sha256_hex};
use crate::models_support::{FakeHub, Sandbox};
use crate::support::{self, Orcd, API_TOKEN, WORKER_TOKEN};

const REPO: &str = "test-org/tiny-GGUF";
const FILE: &str = "tiny.Q4_K_M.gguf";
const BAD_FILE: &str = "tampered.Q4_K_M.gguf";
const HOST: &str = "dl-host";
const ADMIN_TOKEN: &str = "admin-token-for-the-download-test-0123456789";

/// The release pool manager, stopped on drop.
struct PoolManager {
    url: String,
    child: Child,
    log: PathBuf,
}

impl Drop for PoolManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pool_manager_binary() -> PathBuf {
    let dir = std::env::var_os("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target/release"));
    let path = dir.join("llorch-pool-managerd");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --release --workspace --bins`",
        path.display()
    );
    path
}

fn start_pool_manager(sandbox: &Sandbox, orcd: &Orcd, hub: &FakeHub, dir: &Path) -> PoolManager {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = dir.join("pool-managerd.log");
    let child = Command::new(pool_manager_binary())
        .args(["--port", &port.to_string(), "--host-id", HOST])
        .args(["--orchestrator-url", &orcd.url])
        .arg("--worker-token-file")
        .arg(orcd.worker_token_file.as_ref().unwrap())
        .arg("--model-base-dir")
        .arg(sandbox.base())
        .arg("--catalog")
        .arg(sandbox.dir.path().join("catalog.toml"))
        .arg("--catalog-dir")
        .arg(sandbox.dir.path().join("catalog.d"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .args(["--heartbeat-interval-ms", "200"])
        .env("HF_ENDPOINT", hub.url())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("pool-managerd.err")).unwrap())
        .spawn()
        .expect("starting llorch-pool-managerd");
    PoolManager { url, child, log }
}

/// orcd's hosts once `ready` holds for them, through the client's own wait (it polls against
/// the deadline and says what it saw last).
fn wait_for_hosts(
    orcd: &Orcd,
    what: &str,
    limit: Duration,
    ready: impl FnMut(&Vec<serde_json::Value>) -> bool,
) -> Vec<serde_json::Value> {
    support::orcd_client(&orcd.url, Some(API_TOKEN))
        .wait_for("/v2/hosts", what, limit, ready)
        .unwrap_or_else(|timed_out| {
            panic!(
                "waited {} s for {what}; orcd's hosts: {:#?}",
                limit.as_secs(),
                timed_out.last
            )
        })
}

/// The models `HOST` reports on its disk, in `hosts`.
fn models_of(hosts: &[serde_json::Value]) -> Vec<serde_json::Value> {
    hosts
        .iter()
        .find(|host| host["host_id"] == HOST)
        .and_then(|host| host["facts"]["models"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn an_operator_downloads_a_catalog_model_onto_a_pool_managers_host_through_orcd() {
    let hub = FakeHub::start();
    let bytes = fake_gguf("Tiny", &pseudo_random_bytes(2_000_000, 7));
    let digest = sha256_hex(&bytes);
    hub.add_file(REPO, FILE, bytes.clone());
    // Served with other bytes than the catalog pins.
    let tampered = pseudo_random_bytes(1_000_000, 8);
    hub.add_file(REPO, BAD_FILE, tampered.clone());
    let catalog = [
        hub_entry("tiny", REPO, FILE, bytes.len(), Some(&digest), true),
        hub_entry(
            "tampered",
            REPO,
            BAD_FILE,
            tampered.len(),
            Some(&"0".repeat(64)),
            false,
        ),
        // The one kind the pool manager leaves to xtask: it needs llama.cpp's converter.
        "[[models]]\nid = \"packaged\"\nname = \"Packaged\"\ndescription = \"safetensors\"\nparams = \"1M\"\nfile = \"p.gguf\"\nsize = 4\nverified = true\ndefault = false\nrequires_conversion = true\nconverter = \"convert_hf_to_gguf.py\"\nsource = { kind = \"hf\", repo = \"o/p\", files = [\"config.json\"] }\n\n".to_owned(),
    ]
    .concat();
    let mut sandbox = Sandbox::new(&catalog);

    let scratch = tempfile::tempdir().unwrap();
    let admin = scratch.path().join("admin.token");
    std::fs::write(&admin, format!("{ADMIN_TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let orcd = Orcd::start_with_tokens(&["--admin-token-file", admin.to_str().unwrap()]);
    let pool = start_pool_manager(&sandbox, &orcd, &hub, scratch.path());
    let hosts = wait_for_hosts(
        &orcd,
        "the pool manager to register",
        Duration::from_secs(30),
        |hosts| hosts.iter().any(|host| host["host_id"] == HOST),
    );
    assert!(models_of(&hosts).is_empty(), "nothing on disk yet");

    sandbox.set_env("LLORCH_API_TOKEN_FILE", admin.display().to_string());
    let download = |sandbox: &Sandbox, id: &str| {
        sandbox.xtask(&[
            "--json",
            "models",
            "download",
            id,
            "--host",
            HOST,
            "--orchestrator-url",
            &orcd.url,
        ])
    };

    // Downloaded into the host's model directory, checked, with its manifest.
    let first = download(&sandbox, "tiny");
    first.assert_success();
    assert_eq!(first.json()["state"], "done", "{first}");
    assert_eq!(first.json()["bytes_done"], bytes.len());
    assert_eq!(
        std::fs::read(sandbox.model_dir("tiny").join(FILE)).unwrap(),
        bytes
    );
    assert_eq!(
        sandbox.files(),
        vec!["tiny/manifest.json".to_owned(), format!("tiny/{FILE}")]
    );
    let manifest = sandbox.manifest("tiny");
    assert_eq!(manifest["files"][0]["sha256"], digest.as_str());
    assert_eq!(manifest["source"], format!("hf:{REPO}@main"));
    // orcd sees it on the host's disk, verified, with the next heartbeat.
    wait_for_hosts(
        &orcd,
        "the host to report tiny",
        Duration::from_secs(10),
        |hosts| {
            models_of(hosts)
                .iter()
                .any(|model| model["model"] == "tiny" && model["verified"] == true)
        },
    );

    // A second request finds it there: nothing is fetched again.
    hub.clear_requests();
    let second = download(&sandbox, "tiny");
    second.assert_success();
    assert_eq!(second.json()["state"], "done");
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());

    // Bytes that do not hash to the catalog's SHA-256: discarded, nothing left behind.
    let bad = download(&sandbox, "tampered");
    assert!(!bad.status.success(), "{bad}");
    assert!(bad.stderr.contains("checksum mismatch"), "{bad}");
    assert!(
        !sandbox.model_dir("tampered").exists(),
        "{:?}",
        sandbox.files()
    );

    // An unknown id, a model that needs a conversion, and a client without the operator token.
    let unknown = download(&sandbox, "no-such-model");
    assert!(!unknown.status.success());
    assert!(
        unknown.stderr.contains("not in this host's catalog"),
        "{unknown}"
    );
    let packaged = download(&sandbox, "packaged");
    assert!(!packaged.status.success());
    assert!(
        packaged
            .stderr
            .contains("cargo xtask models download packaged"),
        "{packaged}"
    );
    let client_token = scratch.path().join("client.token");
    std::fs::write(&client_token, format!("{API_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&client_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    sandbox.set_env("LLORCH_API_TOKEN_FILE", client_token.display().to_string());
    let client = download(&sandbox, "tiny");
    assert!(!client.status.success());
    assert!(client.stderr.contains("operator token"), "{client}");

    // The pool manager's own route wants orcd's worker token.
    assert_eq!(
        http_post_status(&format!("{}/models/tiny/download", pool.url), None),
        401
    );
    assert_eq!(
        http_post_status(
            &format!("{}/models/tiny/download", pool.url),
            Some(WORKER_TOKEN)
        ),
        200
    );
    let log = std::fs::read_to_string(&pool.log).unwrap_or_default();
    assert!(log.contains("listening on"), "{log}");
}

fn http_post_status(url: &str, token: Option<&str>) -> u16 {
    let client = reqwest::blocking::Client::new();
    let mut request = client.post(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}
