//! `cargo xtask models` against a local server that speaks the hub's download protocol and API
//! (HF_ENDPOINT): download, skip, list, info, verify, a cut-off transfer that resumes, a
//! checksum mismatch and a missing file; `models download hf:OWNER/REPO/FILE.gguf` checked
//! against the SHA-256 the hub publishes, a tampered file that leaves nothing behind, and a
//! split GGUF.

use crate::models_support;

use models_support::{
    fake_gguf, hub_entry, pseudo_random_bytes, sha256_hex, FakeHub, Sandbox, FAKE_COMMIT,
};

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
    let manifest = sandbox.manifest("tiny");
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
        .filter(|request| !request.path.starts_with("api/"))
        .all(|request| request.path.ends_with(FILE)));
}

const ANY_REPO: &str = "some-org/Any-Model-GGUF";
const ANY_FILE: &str = "Any-Model-0.5B-Q4_K_M.gguf";
const ANY_ID: &str = "any-model-0.5b-q4_k_m";

#[test]
fn an_hf_download_is_checked_against_the_published_sha256_and_recorded_in_catalog_d() {
    let hub = FakeHub::start();
    let bytes = fake_gguf("Any Model", &pseudo_random_bytes(2_000_000, 4));
    let digest = sha256_hex(&bytes);
    hub.add_file(ANY_REPO, ANY_FILE, bytes.clone());
    let sandbox = sandbox_for(&hub, &hub_entry("tiny", REPO, FILE, 10, None, true));

    let spec = format!("hf:{ANY_REPO}/{ANY_FILE}");
    let run = sandbox.xtask(&["--json", "models", "download", &spec]);
    run.assert_success();
    let report = run.json();
    assert_eq!(report["id"], ANY_ID);
    assert_eq!(report["status"], "downloaded");
    assert_eq!(report["sha256"], digest.as_str());
    let entry_file = sandbox.catalog_dir().join(format!("{ANY_ID}.toml"));
    assert_eq!(report["catalog_file"], entry_file.display().to_string());
    assert_eq!(
        std::fs::read(sandbox.model_dir(ANY_ID).join(ANY_FILE)).unwrap(),
        bytes
    );
    assert_eq!(
        sandbox.files(),
        vec![
            format!("{ANY_ID}/{ANY_FILE}"),
            format!("{ANY_ID}/manifest.json")
        ]
    );
    // The published hashes came from the API, asked for with blobs=true.
    assert!(
        hub.requests()
            .iter()
            .any(|request| request.path == format!("api/{ANY_REPO}@main?blobs=true")),
        "{:?}",
        hub.requests()
    );

    // The entry is merged into the catalog, pinned to the commit and the hash, with its origin.
    let catalog = sandbox.xtask(&["--json", "models", "catalog"]);
    catalog.assert_success();
    let catalog = catalog.json();
    assert_eq!(catalog["valid"], true, "{catalog}");
    let row = catalog["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["id"] == ANY_ID)
        .unwrap_or_else(|| panic!("{catalog}"))
        .clone();
    assert_eq!(row["origin"], entry_file.display().to_string());
    assert_eq!(row["user"], true);
    assert_eq!(row["downloaded"], true);
    assert_eq!(row["sha256"], digest.as_str());
    assert_eq!(row["size"], bytes.len());
    assert_eq!(row["name"], "Any Model", "taken from general.name");
    assert_eq!(row["source"]["repo"], ANY_REPO);
    assert_eq!(row["source"]["revision"], FAKE_COMMIT);
    let tiny = &catalog["models"][0];
    assert_eq!(tiny["id"], "tiny");
    assert_eq!(tiny["user"], false);

    // Every command that takes an id accepts it.
    sandbox
        .xtask(&["models", "verify", ANY_ID])
        .assert_success();
    let info = sandbox.xtask(&["--json", "models", "info", ANY_ID]).json();
    assert_eq!(info["origin"], entry_file.display().to_string());
    assert_eq!(info["local"]["status"], "ready");

    // Again: nothing is downloaded, the entry stays as it was.
    let before = std::fs::read_to_string(&entry_file).unwrap();
    hub.clear_requests();
    let again = sandbox.xtask(&["--json", "models", "download", &spec]);
    again.assert_success();
    assert_eq!(again.json()["status"], "already-present");
    assert!(
        hub.requests()
            .iter()
            .all(|request| request.path.starts_with("api/")),
        "{:?}",
        hub.requests()
    );
    assert_eq!(std::fs::read_to_string(&entry_file).unwrap(), before);

    // When the hub publishes other bytes for the file, the copy here is replaced and re-pinned.
    let updated = fake_gguf("Any Model", &pseudo_random_bytes(1_500_000, 6));
    hub.add_file(ANY_REPO, ANY_FILE, updated.clone());
    let refreshed = sandbox.xtask(&["--json", "models", "download", &spec]);
    refreshed.assert_success();
    assert_eq!(refreshed.json()["status"], "downloaded");
    assert!(
        refreshed.stderr.contains("downloading it again"),
        "{}",
        refreshed.stderr
    );
    assert_eq!(
        std::fs::read(sandbox.model_dir(ANY_ID).join(ANY_FILE)).unwrap(),
        updated
    );
    assert!(std::fs::read_to_string(&entry_file)
        .unwrap()
        .contains(&sha256_hex(&updated)));

    // An id that is taken is refused, naming where it comes from.
    let taken = sandbox.xtask(&["models", "download", &spec, "--id", "tiny"]);
    taken.assert_failure();
    assert!(
        taken
            .stderr
            .contains("the catalog already has a model `tiny`"),
        "{}",
        taken.stderr
    );
    assert!(taken.stderr.contains("catalog.toml"), "{}", taken.stderr);

    // A missing file is explained with the GGUF files the repository does have.
    let missing = sandbox.xtask(&["models", "download", &format!("hf:{ANY_REPO}/other.gguf")]);
    missing.assert_failure();
    assert!(
        missing
            .stderr
            .contains(&format!("`{ANY_REPO}` has no file `other.gguf`")),
        "{}",
        missing.stderr
    );
    assert!(missing.stderr.contains(ANY_FILE), "{}", missing.stderr);
}

#[test]
fn a_tampered_hf_download_is_refused_and_leaves_nothing_behind() {
    let hub = FakeHub::start();
    let served = fake_gguf("Any Model", &pseudo_random_bytes(1_000_000, 5));
    let published = sha256_hex(b"the bytes the uploader published");
    hub.add_file(ANY_REPO, ANY_FILE, served.clone());
    hub.announce_sha256(ANY_REPO, ANY_FILE, &published);
    let sandbox = sandbox_for(&hub, &hub_entry("tiny", REPO, FILE, 10, None, true));

    let run = sandbox.xtask(&["models", "download", &format!("hf:{ANY_REPO}/{ANY_FILE}")]);
    run.assert_failure();
    assert!(
        run.stderr.contains(&format!(
            "the hub announced sha256 {published}, got {}",
            sha256_hex(&served)
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("discarded"), "{}", run.stderr);
    assert_eq!(sandbox.files(), Vec::<String>::new());
    assert_eq!(sandbox.catalog_dir_files(), Vec::<String>::new());
    let catalog = sandbox.xtask(&["--json", "models", "catalog"]).json();
    assert_eq!(catalog["models"].as_array().unwrap().len(), 1, "{catalog}");

    // An unknown repository and a spec that names no file are explained.
    let unknown = sandbox.xtask(&["models", "download", "hf:nobody/nothing/x.gguf"]);
    unknown.assert_failure();
    assert!(
        unknown
            .stderr
            .contains("no repository `nobody/nothing` with revision `main`"),
        "{}",
        unknown.stderr
    );
    let no_file = sandbox.xtask(&["models", "download", &format!("hf:{ANY_REPO}")]);
    no_file.assert_failure();
    assert!(
        no_file.stderr.contains("write hf:OWNER/REPO/FILE.gguf"),
        "{}",
        no_file.stderr
    );
    assert_eq!(sandbox.files(), Vec::<String>::new());
}

#[test]
fn a_split_gguf_is_downloaded_part_by_part_and_stored_side_by_side() {
    let hub = FakeHub::start();
    let repo = "some-org/Big-GGUF";
    let names: Vec<String> = (1..=3)
        .map(|index| format!("Q4_K_M/Big-Q4_K_M-{index:05}-of-00003.gguf"))
        .collect();
    let parts: Vec<Vec<u8>> = (1..=3u64)
        .map(|index| fake_gguf("Big", &pseudo_random_bytes(300_000, 10 + index)))
        .collect();
    for (name, bytes) in names.iter().zip(&parts) {
        hub.add_file(repo, name, bytes.clone());
    }
    let sandbox = sandbox_for(&hub, &hub_entry("tiny", REPO, FILE, 10, None, true));

    // A later part is refused with the first part's name.
    let later = sandbox.xtask(&["models", "download", &format!("hf:{repo}/{}", names[1])]);
    later.assert_failure();
    assert!(
        later.stderr.contains("name the first part")
            && later.stderr.contains(&format!("hf:{repo}/{}", names[0])),
        "{}",
        later.stderr
    );

    // A tampered last part throws the whole download away.
    hub.announce_sha256(repo, &names[2], &sha256_hex(b"other bytes"));
    let spec = format!("hf:{repo}/{}", names[0]);
    let tampered = sandbox.xtask(&["models", "download", &spec, "--id", "big"]);
    tampered.assert_failure();
    assert!(
        tampered
            .stderr
            .contains("checksum mismatch for `Big-Q4_K_M-00003-of-00003.gguf`"),
        "{}",
        tampered.stderr
    );
    assert_eq!(sandbox.files(), Vec::<String>::new());
    assert_eq!(sandbox.catalog_dir_files(), Vec::<String>::new());

    hub.add_file(repo, &names[2], parts[2].clone());
    hub.announce_sha256(repo, &names[2], &sha256_hex(&parts[2]));
    let run = sandbox.xtask(&["--json", "models", "download", &spec, "--id", "big"]);
    run.assert_success();
    let report = run.json();
    assert_eq!(
        report["path"],
        sandbox
            .model_dir("big")
            .join("Big-Q4_K_M-00001-of-00003.gguf")
            .display()
            .to_string(),
        "the worker is given the first part"
    );
    let mut expected: Vec<String> = (1..=3)
        .map(|index| format!("big/Big-Q4_K_M-{index:05}-of-00003.gguf"))
        .collect();
    expected.push("big/manifest.json".to_owned());
    assert_eq!(sandbox.files(), expected);
    for (index, bytes) in parts.iter().enumerate() {
        let name = format!("Big-Q4_K_M-{:05}-of-00003.gguf", index + 1);
        assert_eq!(
            &std::fs::read(sandbox.model_dir("big").join(&name)).unwrap(),
            bytes
        );
        assert_eq!(report["files"][index]["name"], name);
        assert_eq!(report["files"][index]["sha256"], sha256_hex(bytes));
    }
    assert_eq!(sandbox.catalog_dir_files(), vec!["big.toml".to_owned()]);
    let info = sandbox.xtask(&["--json", "models", "info", "big"]).json();
    assert_eq!(
        info["catalog"]["source"]["files"],
        serde_json::json!(names),
        "{info}"
    );
    sandbox.xtask(&["models", "verify", "big"]).assert_success();

    // A missing part makes the model not installed, so the next download fetches it again.
    std::fs::remove_file(
        sandbox
            .model_dir("big")
            .join("Big-Q4_K_M-00002-of-00003.gguf"),
    )
    .unwrap();
    let verify = sandbox.xtask(&["models", "verify", "big"]);
    assert_eq!(verify.status.code(), Some(1), "{}", verify.stdout);
    let again = sandbox.xtask(&["--json", "models", "download", "big"]);
    again.assert_success();
    assert_eq!(again.json()["status"], "downloaded");
    sandbox.xtask(&["models", "verify", "big"]).assert_success();
}
