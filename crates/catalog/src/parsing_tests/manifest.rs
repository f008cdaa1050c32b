//! `manifest.json`: what a broken or unreadable manifest says, and a write that cannot happen.

use crate::{Manifest, ManifestError, ManifestFile, MANIFEST_FILE};

fn manifest() -> Manifest {
    Manifest {
        id: "tiny".into(),
        file: "tiny-00001-of-00002.gguf".into(),
        files: vec![
            ManifestFile {
                name: "tiny-00001-of-00002.gguf".into(),
                size: 3,
                sha256: "ab".repeat(32),
            },
            ManifestFile {
                name: "tiny-00002-of-00002.gguf".into(),
                size: 4,
                sha256: "cd".repeat(32),
            },
        ],
        source: "hf:o/tiny@main".into(),
        downloaded_at: "2025-01-31T12:00:00Z".into(),
        converted_with: Some("convert_hf_to_gguf.py --outtype f16".into()),
    }
}

#[test]
fn a_split_model_sums_its_parts_and_names_its_first() {
    let manifest = manifest();
    assert_eq!(manifest.total_size(), 7);
    assert_eq!(manifest.main_file().unwrap().size, 3);
    let dir = tempfile::tempdir().unwrap();
    manifest.write(dir.path()).unwrap();
    let back = Manifest::read(dir.path()).unwrap().unwrap();
    assert_eq!(back.converted_with, manifest.converted_with);
}

#[test]
fn a_broken_manifest_names_the_file_and_the_download_that_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("gemma3-270m");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::write(model_dir.join(MANIFEST_FILE), "{\"id\": 3}").unwrap();
    let error = Manifest::read(&model_dir).unwrap_err();
    let ManifestError::Parse { id, path, .. } = &error else {
        panic!("a parse error: {error:?}")
    };
    assert_eq!(id, "gemma3-270m");
    assert_eq!(path, &model_dir.join(MANIFEST_FILE));
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "{} is not a valid manifest: ",
            model_dir.join(MANIFEST_FILE).display()
        )),
        "{text}"
    );
    assert!(
        text.ends_with("hint: run `cargo xtask models download gemma3-270m --force` to download the model again"),
        "{text}"
    );
}

#[test]
fn an_unreadable_manifest_is_an_error_not_an_absent_one() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the manifest should be: it exists, but cannot be read as a file.
    std::fs::create_dir(dir.path().join(MANIFEST_FILE)).unwrap();
    let error = Manifest::read(dir.path()).unwrap_err();
    assert!(matches!(error, ManifestError::Read { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(&format!(
            "reading {}: ",
            dir.path().join(MANIFEST_FILE).display()
        )),
        "{error}"
    );
}

#[test]
fn a_failed_write_names_the_manifest_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-downloaded");
    let error = manifest().write(&missing).unwrap_err();
    assert!(matches!(error, ManifestError::Write { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(&format!(
            "writing {}: ",
            missing.join(MANIFEST_FILE).display()
        )),
        "{error}"
    );
    assert!(!missing.exists());
    // The rename fails when the manifest's place is a directory: the temporary file goes.
    std::fs::create_dir_all(missing.join(MANIFEST_FILE).join("occupied")).unwrap();
    assert!(manifest().write(&missing).is_err());
    let names: Vec<_> = std::fs::read_dir(&missing)
        .unwrap()
        .map(|item| item.unwrap().file_name())
        .collect();
    assert_eq!(names, [MANIFEST_FILE]);
}
