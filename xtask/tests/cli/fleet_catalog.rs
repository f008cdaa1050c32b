//! `fleet up` takes the operator's catalog.d entries to each host: `fleet host apply` (what runs
//! there) writes the ones its catalog lacks, leaves identical ones alone, and refuses an id the
//! host defines differently. Runs xtask only: no SSH, worker or model needed.

use crate::support;

use std::path::Path;

use support::Xtask;

fn xtask_as(home: &Path) -> Xtask {
    let mut xtask = support::xtask();
    xtask
        .env("LLORCH_CONFIG_PATH", home.join("config.toml"))
        .env("LLORCH_RUN_DIR", home.join("run"))
        .env("LLORCH_STATE_DIR", home.join("state"))
        .env("LLORCH_MODEL_BASE_DIR", home.join("models"));
    xtask
}

#[test]
fn a_host_adopts_the_operators_catalog_d_entries_once_and_refuses_a_conflicting_one() {
    let operator = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let gguf = operator.path().join("Mine.gguf");
    std::fs::write(&gguf, b"GGUF\x03\0\0\0 a stand-in for a model").unwrap();
    xtask_as(operator.path())
        .run(["models", "add", gguf.to_str().unwrap(), "--id", "mine"])
        .success();
    let written = std::fs::read_to_string(operator.path().join("catalog.d/mine.toml")).unwrap();
    let document: toml::Table = toml::from_str(&written).unwrap();
    let entry = serde_json::to_value(&document["models"].as_array().unwrap()[0]).unwrap();
    let request = serde_json::json!({ "workers": [], "catalog_entries": [entry] }).to_string();

    let apply = |expect_ok: bool| {
        let outcome = xtask_as(host.path())
            .stdin(request.as_bytes())
            .run(["--json", "fleet", "host", "apply"]);
        assert_eq!(outcome.code(), if expect_ok { 0 } else { 1 }, "{outcome}");
        let report = outcome.json();
        let step = report["steps"][0].clone();
        assert_eq!(step["step"], "catalog", "{report}");
        assert_eq!(step["outcome"] != "failed", expect_ok, "{report}");
        step
    };
    let first = apply(true);
    assert_eq!(first["outcome"], "changed", "{first}");
    assert!(
        first["detail"]
            .as_str()
            .unwrap()
            .contains("catalog.d entries written for mine"),
        "{first}"
    );
    let copied = host.path().join("catalog.d/mine.toml");
    let catalog = xtask_as(host.path())
        .run(["--json", "models", "catalog"])
        .success()
        .json();
    let mine = catalog["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["id"] == "mine")
        .unwrap_or_else(|| panic!("{catalog}"))
        .clone();
    assert_eq!(mine["origin"], copied.display().to_string());
    assert_eq!(mine["source"]["kind"], "local");

    assert_eq!(apply(true)["outcome"], "unchanged");

    let edited = std::fs::read_to_string(&copied)
        .unwrap()
        .replace("size = ", "size = 1");
    std::fs::write(&copied, edited).unwrap();
    let refused = apply(false);
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("model `mine` is defined differently here"),
        "{refused}"
    );
}
