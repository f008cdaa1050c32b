//! `catalog.d`: which files are merged, what an unreadable directory says, and where each entry
//! came from.

use super::MINIMAL;
use crate::{user_entry_path, write_user_entry, Catalog, CatalogError};

fn user_entry(id: &str) -> String {
    MINIMAL
        .replace("id = \"tiny\"", &format!("id = \"{id}\""))
        .replace("default = true\n", "")
}

#[test]
fn hidden_and_non_toml_files_are_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mine.toml"), user_entry("mine")).unwrap();
    // An unfinished `write_user_entry` and an editor's backup.
    std::fs::write(dir.path().join(".mine.1.tmp"), user_entry("tmp")).unwrap();
    std::fs::write(dir.path().join(".hidden.toml"), user_entry("hidden")).unwrap();
    std::fs::write(dir.path().join("mine.toml~"), "not toml at all [").unwrap();
    let catalog = Catalog::parse(MINIMAL, "base.toml")
        .unwrap()
        .with_user_dir(dir.path())
        .unwrap();
    let mine = user_entry_path(dir.path(), "mine");
    assert_eq!(catalog.user_files(), std::slice::from_ref(&mine));
    let origins: Vec<(&str, &str)> = catalog
        .entries_with_origins()
        .map(|(entry, origin)| (entry.id.as_str(), origin))
        .collect();
    let mine = mine.display().to_string();
    assert_eq!(origins, [("tiny", "base.toml"), ("mine", mine.as_str())]);
    assert!(catalog.is_user_origin(&mine));
    assert!(!catalog.is_user_origin("base.toml"));
    assert_eq!(catalog.origin_of("absent"), None);
}

#[test]
fn a_user_catalog_that_is_not_a_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.d");
    std::fs::write(&file, "").unwrap();
    let error = Catalog::parse(MINIMAL, "base.toml")
        .unwrap()
        .with_user_dir(&file)
        .unwrap_err();
    assert!(matches!(error, CatalogError::Io { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("reading catalog {}: ", file.display())),
        "{error}"
    );
}

#[test]
fn a_default_in_a_user_file_is_named_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.toml"),
        MINIMAL.replace("\"tiny\"", "\"mine\""),
    )
    .unwrap();
    let catalog = Catalog::parse(MINIMAL, "base.toml")
        .unwrap()
        .with_user_dir(dir.path())
        .unwrap();
    let found = catalog.validate();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].message,
        format!(
            "several entries have `default = true` (tiny, mine in {}); mark exactly one",
            dir.path().join("mine.toml").display()
        )
    );
}

#[test]
fn an_entry_that_cannot_be_written_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut entry = Catalog::parse(MINIMAL, "base.toml").unwrap().models()[0].clone();
    entry.id = "mine".into();
    // The entry's file name is taken by a directory, so the rename fails.
    std::fs::create_dir_all(dir.path().join("mine.toml").join("occupied")).unwrap();
    assert!(write_user_entry(dir.path(), &entry, "").is_err());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|item| item.unwrap().file_name())
        .collect();
    assert_eq!(names, ["mine.toml"]);
    // And a catalog.d that is a file cannot hold entries at all.
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    assert!(write_user_entry(&file, &entry, "").is_err());
}
