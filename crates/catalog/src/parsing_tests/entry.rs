//! One entry and its source: what each kind of source names, fetches and keeps.

use super::with_source;
use crate::{Catalog, ModelEntry, PipPackage, Source};

fn entry_of(source: &str) -> ModelEntry {
    Catalog::parse(&with_source(source), "t.toml")
        .unwrap()
        .models()[0]
        .clone()
}

#[test]
fn a_hub_source_with_files_fetches_them_and_keeps_their_last_segment() {
    let entry =
        entry_of(r#"{ kind = "hf", repo = "o/big", revision = "v2", files = ["Q4/tiny.gguf"] }"#);
    assert_eq!(entry.source_kind(), "hf");
    assert_eq!(entry.source_summary(), "hf:o/big@v2");
    assert_eq!(
        entry.repo_url().as_deref(),
        Some("https://huggingface.co/o/big")
    );
    assert_eq!(entry.hub_files(), ["Q4/tiny.gguf"]);
    assert_eq!(entry.local_files(), ["tiny.gguf"]);
}

#[test]
fn a_converted_hub_model_keeps_only_its_converted_file() {
    let mut entry = entry_of(
        r#"{ kind = "hf", repo = "o/tiny", files = ["config.json", "model.safetensors"] }"#,
    );
    entry.requires_conversion = true;
    assert_eq!(entry.hub_files(), ["config.json", "model.safetensors"]);
    assert_eq!(entry.local_files(), ["tiny.gguf"]);
}

#[test]
fn a_pip_source_is_summarised_by_its_requirements_and_has_no_hub_page() {
    let entry = entry_of(r#"{ kind = "pip", packages = ["t-part1==1.0", "t-part2==1.0"] }"#);
    assert_eq!(entry.source_kind(), "pip");
    assert_eq!(entry.source_summary(), "pip:t-part1==1.0, t-part2==1.0");
    assert_eq!(entry.repo_url(), None);
    assert!(entry.hub_files().is_empty());
    assert_eq!(entry.local_files(), ["tiny.gguf"]);
}

#[test]
fn a_local_source_is_summarised_by_its_path() {
    let entry = entry_of(r#"{ kind = "local", path = "/data/tiny.gguf" }"#);
    assert_eq!(entry.source_kind(), "local");
    assert_eq!(entry.source_summary(), "local:/data/tiny.gguf");
    assert_eq!(entry.repo_url(), None);
    assert!(entry.hub_files().is_empty());
    assert_eq!(entry.local_files(), ["tiny.gguf"]);
}

#[test]
fn a_pip_package_error_names_the_requirement_and_the_form() {
    let unpinned = PipPackage::try_from("gemma>=1".to_owned()).unwrap_err();
    assert_eq!(
        unpinned,
        "pip package `gemma>=1` must be pinned as `name==version`"
    );
    let odd = PipPackage::try_from("a b==1".to_owned()).unwrap_err();
    assert_eq!(
        odd,
        "pip package `a b==1` is not `name==version` with a plain name and version"
    );
    // In a catalog the message reaches the entry's diagnostic.
    let error = Catalog::parse(
        &with_source(r#"{ kind = "pip", packages = ["gemma"] }"#),
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("t.toml:2: error: model `tiny`"), "{error}");
    assert!(
        error.contains("must be pinned as `name==version`"),
        "{error}"
    );
}

#[test]
fn a_pip_package_keeps_its_name_and_version_apart() {
    let package = PipPackage::try_from("Name.With_Runs--x==1.0+local!2-r".to_owned()).unwrap();
    assert_eq!(package.requirement(), "Name.With_Runs--x==1.0+local!2-r");
    assert_eq!(package.normalized_name(), "name-with-runs-x");
    assert_eq!(String::from(package), "Name.With_Runs--x==1.0+local!2-r");
}

#[test]
fn the_source_kind_is_required_and_known() {
    let error = toml::from_str::<Source>("repo = \"o/a\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("kind"), "{error}");
}
