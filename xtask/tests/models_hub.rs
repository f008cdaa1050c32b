//! `cargo xtask models` against a local server that speaks the hub's download protocol
//! (HF_ENDPOINT): download, skip, list, info, verify, a cut-off transfer that resumes, a
//! checksum mismatch and a missing file.

mod models_support;

use models_support::{hub_entry, pseudo_random_bytes, sha256_hex, FakeHub, Sandbox};

const REPO: &str = "test-org/tiny-GGUF";
const FILE: &str = "tiny.Q4_K_M.gguf";

fn sandbox_for(hub: &FakeHub, catalog: &str) -> Sandbox {
    let mut sandbox = Sandbox::new(catalog);
    sandbox.set_env("HF_ENDPOINT", hub.url());
    sandbox
}

fn flip_one_byte(path: &std::path::Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn download_records_a_manifest_skips_the_second_time_and_verify_catches_a_flipped_byte() {
    let hub = FakeHub::start();
    let bytes = pseudo_random_bytes(3_000_000, 1);
    let digest = sha256_hex(&bytes);
    hub.add_file(REPO, FILE, bytes.clone());
    let sandbox = sandbox_for(
        &hub,
        &hub_entry("tiny", REPO, FILE, bytes.len(), Some(&digest), true),
    );

    let first = sandbox.xtask(&["--json", "models", "download", "tiny"]);
    first.assert_success();
    let report = first.json();
    assert_eq!(report["status"], "downloaded");
    assert_eq!(report["sha256"], digest.as_str());
    let model = sandbox.model_dir("tiny").join(FILE);
    assert_eq!(std::fs::read(&model).unwrap(), bytes);
    assert_eq!(
        sandbox.files(),
        vec!["tiny/manifest.json".to_owned(), format!("tiny/{FILE}")]
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sandbox.model_dir("tiny").join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["files"][0]["sha256"], digest.as_str());
    assert_eq!(manifest["files"][0]["size"], bytes.len());
    assert_eq!(manifest["source"], format!("hf:{REPO}@main"));

    // The second run is a no-op: nothing is fetched, not even metadata.
    hub.clear_requests();
    let second = sandbox.xtask(&["models", "download"]);
    second.assert_success();
    assert!(
        second.stderr.contains("already downloaded"),
        "{}",
        second.stderr
    );
    assert_eq!(second.stdout.trim(), model.display().to_string());
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());

    let list = sandbox.xtask(&["--json", "models", "list"]).json();
    assert_eq!(list["models"][0]["id"], "tiny");
    assert_eq!(list["models"][0]["status"], "ready");
    assert_eq!(list["models"][0]["files"][0]["size"], bytes.len());
    assert!(list["total_bytes"].as_u64().unwrap() > bytes.len() as u64);

    let info = sandbox.xtask(&["--json", "models", "info", "tiny"]).json();
    assert_eq!(info["repo_url"], format!("https://huggingface.co/{REPO}"));
    assert_eq!(info["local"]["status"], "ready");
    assert_eq!(info["manifest"]["files"][0]["sha256"], digest.as_str());

    let catalog = sandbox.xtask(&["--json", "models", "catalog"]).json();
    assert_eq!(catalog["valid"], true);
    assert_eq!(catalog["models"][0]["downloaded"], true);

    sandbox
        .xtask(&["models", "verify", "tiny"])
        .assert_success();
    flip_one_byte(&model, 1_234_567);
    let verify = sandbox.xtask(&["models", "verify", "tiny"]);
    verify.assert_failure();
    assert_eq!(verify.status.code(), Some(1));
    assert!(verify.stdout.contains("tiny: FAILED"), "{}", verify.stdout);
    assert!(
        verify
            .stdout
            .contains(&format!("expected {digest} (catalog)")),
        "{}",
        verify.stdout
    );
    let report = sandbox.xtask(&["--json", "models", "verify"]).json();
    assert_eq!(report["ok"], false);
    assert_eq!(report["models"][0]["files"][0]["ok"], false);

    // --force replaces the damaged copy.
    sandbox
        .xtask(&["models", "download", "tiny", "--force"])
        .assert_success();
    sandbox
        .xtask(&["models", "verify", "tiny"])
        .assert_success();
}

#[test]
fn an_interrupted_transfer_leaves_no_model_and_the_next_run_resumes() {
    let hub = FakeHub::start();
    // Three of hf-hub's 10 MB chunks; the server cuts the connection inside the second.
    let bytes = pseudo_random_bytes(25_000_000, 2);
    let digest = sha256_hex(&bytes);
    hub.add_file(REPO, FILE, bytes.clone());
    hub.cut_from(Some(10_000_000));
    let sandbox = sandbox_for(
        &hub,
        &hub_entry("tiny", REPO, FILE, bytes.len(), Some(&digest), true),
    );

    let cut = sandbox.xtask(&["models", "download", "tiny"]);
    cut.assert_failure();
    assert!(cut.stderr.contains("interrupted"), "{}", cut.stderr);
    assert!(
        cut.stderr.contains("run the same command again to resume"),
        "{}",
        cut.stderr
    );
    assert!(!sandbox.model_dir("tiny").join(FILE).exists());
    assert!(!sandbox.model_dir("tiny").join("manifest.json").exists());
    assert!(
        sandbox
            .files()
            .iter()
            .all(|file| file.starts_with("tiny/.partial/")),
        "{:?}",
        sandbox.files()
    );

    // Neither list nor verify takes the partial download for a model.
    let list = sandbox.xtask(&["--json", "models", "list"]).json();
    assert_eq!(list["models"][0]["status"], "incomplete");
    assert_eq!(list["models"][0]["files"], serde_json::json!([]));
    assert!(list["models"][0]["partial_bytes"].as_u64().unwrap() >= 10_000_000);
    let verify = sandbox.xtask(&["models", "verify", "tiny"]);
    assert_eq!(verify.status.code(), Some(1), "{}", verify.stdout);
    assert!(verify.stdout.contains("no manifest"), "{}", verify.stdout);

    hub.cut_from(None);
    hub.clear_requests();
    sandbox
        .xtask(&["models", "download", "tiny"])
        .assert_success();
    assert_eq!(
        std::fs::read(sandbox.model_dir("tiny").join(FILE)).unwrap(),
        bytes
    );
    assert_eq!(
        sandbox.files(),
        vec!["tiny/manifest.json".to_owned(), format!("tiny/{FILE}")]
    );
    let ranges: Vec<String> = hub
        .requests()
        .into_iter()
        .filter_map(|request| request.range)
        .collect();
    assert!(
        ranges
            .iter()
            .any(|range| range.starts_with("bytes=10000000-")),
        "{ranges:?}"
    );
    assert!(
        ranges
            .iter()
            .all(|range| range == "bytes=0-0" || !range.starts_with("bytes=0-")),
        "the first chunk was fetched again instead of resumed: {ranges:?}"
    );
    sandbox
        .xtask(&["models", "verify", "tiny"])
        .assert_success();
}

#[test]
fn a_checksum_mismatch_is_rejected_and_leaves_nothing_behind() {
    let hub = FakeHub::start();
    let served = pseudo_random_bytes(1_000_000, 3);
    let pinned = sha256_hex(b"the bytes the catalog expects");
    let actual = sha256_hex(&served);
    hub.add_file(REPO, FILE, served.clone());
    let sandbox = sandbox_for(
        &hub,
        &hub_entry("tiny", REPO, FILE, served.len(), Some(&pinned), true),
    );

    let run = sandbox.xtask(&["models", "download", "tiny"]);
    run.assert_failure();
    assert!(run.stderr.contains("checksum mismatch"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("expected sha256 {pinned}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("got {actual}")),
        "{}",
        run.stderr
    );
    assert_eq!(sandbox.files(), Vec::<String>::new());
    assert_eq!(
        sandbox.xtask(&["--json", "models", "list"]).json()["models"],
        serde_json::json!([])
    );
    assert_eq!(
        sandbox.xtask(&["models", "verify", "tiny"]).status.code(),
        Some(1)
    );

    // Without a pin, the SHA-256 the hub announces (the LFS etag) is checked.
    sandbox.write_catalog(&hub_entry("tiny", REPO, FILE, served.len(), None, true));
    hub.announce_sha256(REPO, FILE, &pinned);
    let run = sandbox.xtask(&["models", "download", "tiny"]);
    run.assert_failure();
    assert!(
        run.stderr
            .contains(&format!("the hub announced sha256 {pinned}, got {actual}")),
        "{}",
        run.stderr
    );
    assert_eq!(sandbox.files(), Vec::<String>::new());

    // A size that disagrees with the catalog is rejected the same way.
    sandbox.write_catalog(&hub_entry("tiny", REPO, FILE, served.len() + 1, None, true));
    let run = sandbox.xtask(&["models", "download", "tiny"]);
    run.assert_failure();
    assert!(run.stderr.contains("size mismatch"), "{}", run.stderr);
    assert_eq!(sandbox.files(), Vec::<String>::new());
}

#[test]
fn missing_files_and_unknown_ids_are_explained() {
    let hub = FakeHub::start();
    let sandbox = sandbox_for(&hub, &hub_entry("tiny", REPO, FILE, 10, None, true));
    let run = sandbox.xtask(&["models", "download", "tiny"]);
    run.assert_failure();
    assert!(run.stderr.contains("HTTP 404"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("`{REPO}` has no file `{FILE}`")),
        "{}",
        run.stderr
    );

    let run = sandbox.xtask(&["models", "download", "tinny"]);
    run.assert_failure();
    assert!(
        run.stderr.contains("did you mean `tiny`?"),
        "{}",
        run.stderr
    );
    assert!(hub
        .requests()
        .iter()
        .all(|request| request.path.ends_with(FILE)));
}
