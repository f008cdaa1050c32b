//! The on-disk layout: `<base>/<id>/<file>` plus `<base>/<id>/manifest.json`. Unfinished
//! downloads live in `<base>/<id>/.partial/` and locks in `<base>/.locks/`; both are hidden so
//! that nothing scanning for models mistakes them for one.

use std::path::{Path, PathBuf};

use crate::{Catalog, ModelEntry};

/// Name of the directory inside a model's directory that holds an unfinished download.
pub const PARTIAL_DIR: &str = ".partial";
/// Directory under the base dir that holds one lock file per model being written.
pub const LOCKS_DIR: &str = ".locks";

pub fn model_dir(base: &Path, id: &str) -> PathBuf {
    base.join(id)
}

/// The model file the worker loads.
pub fn model_path(base: &Path, entry: &ModelEntry) -> PathBuf {
    model_dir(base, &entry.id).join(&entry.file)
}

/// Scratch space of an unfinished download of `id`.
pub fn partial_dir(base: &Path, id: &str) -> PathBuf {
    model_dir(base, id).join(PARTIAL_DIR)
}

/// The lock held while `id` is downloaded or deleted.
pub fn lock_path(base: &Path, id: &str) -> PathBuf {
    base.join(LOCKS_DIR).join(format!("{id}.lock"))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("model `{id}` is in the catalog but not downloaded (expected {})\nhint: run `cargo xtask models download {id}`", path.display())]
    NotDownloaded { id: String, path: PathBuf },
    #[error("`{given}` is neither a model file nor a catalog id{}\nhint: run `cargo xtask models catalog` to list the ids", suggestion.as_ref().map(|id| format!("; did you mean `{id}`?")).unwrap_or_default())]
    Unknown {
        given: String,
        suggestion: Option<String>,
    },
}

/// Turns what a user typed after `--model` into a file: an existing file path wins, otherwise
/// a catalog id whose file has been downloaded.
pub fn resolve_model_path(
    base: &Path,
    catalog: &Catalog,
    id_or_path: &str,
) -> Result<PathBuf, ResolveError> {
    let as_path = Path::new(id_or_path);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    match catalog.get(id_or_path) {
        Some(entry) => {
            let path = model_path(base, entry);
            if path.is_file() {
                Ok(path)
            } else {
                Err(ResolveError::NotDownloaded {
                    id: entry.id.clone(),
                    path,
                })
            }
        }
        None => Err(ResolveError::Unknown {
            given: id_or_path.to_owned(),
            suggestion: catalog.suggest(id_or_path).map(str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::MINIMAL;

    #[test]
    fn layout_paths() {
        let catalog = Catalog::parse(MINIMAL, "t.toml").unwrap();
        let entry = catalog.get("tiny").unwrap();
        let base = Path::new("/models");
        assert_eq!(model_path(base, entry), Path::new("/models/tiny/tiny.gguf"));
        assert_eq!(
            partial_dir(base, "tiny"),
            Path::new("/models/tiny/.partial")
        );
        assert_eq!(
            lock_path(base, "tiny"),
            Path::new("/models/.locks/tiny.lock")
        );
    }

    #[test]
    fn resolve_prefers_existing_files_then_downloaded_ids() {
        let catalog = Catalog::parse(MINIMAL, "t.toml").unwrap();
        let base = std::env::temp_dir().join(format!("llorch-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);

        let not_downloaded = resolve_model_path(&base, &catalog, "tiny").unwrap_err();
        assert!(matches!(not_downloaded, ResolveError::NotDownloaded { .. }));
        assert!(not_downloaded
            .to_string()
            .contains("cargo xtask models download tiny"));

        let unknown = resolve_model_path(&base, &catalog, "tinny").unwrap_err();
        assert!(
            unknown.to_string().contains("did you mean `tiny`?"),
            "{unknown}"
        );

        std::fs::create_dir_all(base.join("tiny")).unwrap();
        std::fs::write(base.join("tiny/tiny.gguf"), b"GGUF").unwrap();
        assert_eq!(
            resolve_model_path(&base, &catalog, "tiny").unwrap(),
            base.join("tiny/tiny.gguf")
        );
        let direct = base.join("tiny/tiny.gguf");
        assert_eq!(
            resolve_model_path(&base, &catalog, direct.to_str().unwrap()).unwrap(),
            direct
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
