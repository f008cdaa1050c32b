//! The catalog file as a whole: loading, errors as diagnostics, the default, suggestions.

use std::path::Path;

use super::MINIMAL;
use crate::{default_catalog_dir, default_model_base_dir, Catalog, CatalogError, Severity};

#[test]
fn a_catalog_file_loads_and_is_named_by_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let catalog = Catalog::load(&path).unwrap();
    assert_eq!(catalog.origin(), path.display().to_string());
    assert_eq!(
        catalog.to_string(),
        format!("{} (1 models)", path.display())
    );
    assert!(Catalog::check_file(&path).is_empty());
}

#[test]
fn an_unreadable_catalog_names_the_path_and_the_cause() {
    let error = Catalog::load(Path::new("/nonexistent/catalog.toml")).unwrap_err();
    assert!(matches!(error, CatalogError::Io { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("reading catalog /nonexistent/catalog.toml: "),
        "{error}"
    );
    let diagnostics = error.diagnostics();
    assert_eq!(diagnostics[0].origin, "/nonexistent/catalog.toml");
    assert!(
        diagnostics[0].message.starts_with("cannot read the file: "),
        "{diagnostics:?}"
    );
}

#[test]
fn a_syntax_error_is_one_diagnostic_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.toml");
    std::fs::write(&path, "[[models]]\nid = \n").unwrap();
    let diagnostics = Catalog::check_file(&path);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].origin, path.display().to_string());
    assert_eq!(diagnostics[0].line, None, "the line is in TOML's message");
    assert!(diagnostics[0].message.contains("line 2"), "{diagnostics:?}");
}

#[test]
fn invalid_entries_are_listed_one_per_line_under_the_catalog() {
    let text = format!("{MINIMAL}\n[[models]]\nname = \"no id\"\n");
    let error = Catalog::parse(&text, "t.toml").unwrap_err();
    let message = error.to_string();
    assert!(
        message
            .starts_with("catalog t.toml has invalid entries:\n  t.toml:13: error: model `#2`: "),
        "{message}"
    );
    assert!(message.contains("missing field `id`"), "{message}");
}

#[test]
fn without_a_default_the_first_entry_is_used() {
    let second = MINIMAL
        .replace("\"tiny\"", "\"second\"")
        .replace("default = true\n", "");
    let first = MINIMAL.replace("default = true\n", "");
    let catalog = Catalog::parse(&format!("{first}{second}"), "t.toml").unwrap();
    assert_eq!(catalog.default_model().id, "tiny");
    // The marked entry wins over the first.
    let catalog = Catalog::parse(&format!("{first}{second}{MINIMAL}"), "t.toml").unwrap();
    assert_eq!(catalog.models()[2].id, "tiny");
    assert!(std::ptr::eq(catalog.default_model(), &catalog.models()[2]));
}

#[test]
fn suggestions_prefer_a_prefix_then_the_nearest_id() {
    let catalog = Catalog::builtin();
    assert_eq!(catalog.suggest("qwen2.5"), Some("qwen2.5-coder-0.5b"));
    assert_eq!(catalog.suggest("mistrl"), Some("mistral"));
    assert_eq!(catalog.suggest("lama2"), Some("llama2"));
    // An empty name is no prefix of everything: only a near id is suggested, and none is.
    assert_eq!(catalog.suggest(""), None);
}

#[test]
fn default_directories_are_under_llorch() {
    assert!(
        default_model_base_dir().ends_with("llorch/models"),
        "{}",
        default_model_base_dir().display()
    );
    assert!(
        default_catalog_dir().ends_with("llorch/catalog.d"),
        "{}",
        default_catalog_dir().display()
    );
}

#[test]
fn an_error_diagnostic_says_so() {
    let text = MINIMAL.replace("size = 1024", "size = 0");
    let catalog = Catalog::parse(&text, "t.toml").unwrap();
    let found = catalog.validate();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].is_error());
    assert_eq!(found[0].severity, Severity::Error);
}
