//! Resolves `--model` (a GGUF path or a catalog id) to the file to load and the model id the
//! worker reports to orcd.

use std::path::{Path, PathBuf};

use anyhow::Context;
use llorch_catalog::{model_path, resolve_model_path, Catalog};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub path: PathBuf,
    /// The catalog id when there is one, else the file stem.
    pub id: String,
}

/// `catalog_file` replaces the built-in catalog (`--catalog`, `LLORCH_CATALOG`); the entries
/// in `catalog_dir` (`--catalog-dir`, `LLORCH_CATALOG_DIR`) are merged in, as xtask does.
pub fn resolve_model(
    model: &str,
    base_dir: &Path,
    catalog_file: Option<&Path>,
    catalog_dir: &Path,
) -> anyhow::Result<ResolvedModel> {
    let catalog = match catalog_file {
        Some(file) => Catalog::load(file)
            .with_context(|| format!("reading the model catalog to resolve `{model}`"))?,
        None => Catalog::builtin(),
    };
    let catalog = catalog.with_user_dir(catalog_dir).with_context(|| {
        format!(
            "reading the user catalog {} to resolve `{model}`",
            catalog_dir.display()
        )
    })?;
    let errors: Vec<String> = catalog
        .validate()
        .iter()
        .filter(|diagnostic| diagnostic.is_error())
        .map(|diagnostic| format!("  {diagnostic}"))
        .collect();
    if !errors.is_empty() {
        anyhow::bail!(
            "the model catalog is invalid:\n{}\nhint: fix the entries, then check with `cargo xtask models catalog`",
            errors.join("\n")
        );
    }
    let path = resolve_model_path(base_dir, &catalog, model)?;
    let id = match catalog.get(model) {
        Some(entry) => entry.id.clone(),
        None => catalog_id_of_file(&catalog, base_dir, &path).unwrap_or_else(|| file_stem(&path)),
    };
    Ok(ResolvedModel { path, id })
}

/// A path that points at a downloaded catalog model still registers under the catalog id, so
/// jobs that name the id reach it.
fn catalog_id_of_file(catalog: &Catalog, base_dir: &Path, path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    catalog
        .models()
        .iter()
        .find(|entry| model_path(base_dir, entry).canonicalize().ok().as_deref() == Some(&*path))
        .map(|entry| entry.id.clone())
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_user_catalog() -> PathBuf {
        PathBuf::from("/nonexistent/catalog.d")
    }

    #[test]
    fn an_id_from_the_user_catalog_resolves_to_its_downloaded_file() {
        let base = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        let mut mine = Catalog::builtin().default_model().clone();
        mine.id = "mine".into();
        mine.file = "mine.gguf".into();
        mine.default = false;
        mine.source = llorch_catalog::Source::Local(llorch_catalog::LocalSource {
            path: "/models/mine.gguf".into(),
        });
        llorch_catalog::write_user_entry(user.path(), &mine, "added by a test").unwrap();
        let catalog = Catalog::builtin().with_user_dir(user.path()).unwrap();
        let mine = catalog.get("mine").expect("the user entry is merged");
        let file = model_path(base.path(), mine);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"GGUF").unwrap();
        let resolved = resolve_model("mine", base.path(), None, user.path()).unwrap();
        assert_eq!((resolved.path, resolved.id.as_str()), (file, "mine"));
        // Without the user catalog the id means nothing.
        assert!(resolve_model("mine", base.path(), None, &no_user_catalog()).is_err());
    }

    #[test]
    fn plain_file_registers_under_its_stem() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my-model.Q4.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let resolved =
            resolve_model(file.to_str().unwrap(), dir.path(), None, &no_user_catalog()).unwrap();
        assert_eq!(resolved.path, file);
        assert_eq!(resolved.id, "my-model.Q4");
    }

    #[test]
    fn catalog_id_and_its_file_path_resolve_to_the_same_id() {
        let base = tempfile::tempdir().unwrap();
        let catalog = Catalog::builtin();
        let entry = catalog.default_model();
        let file = model_path(base.path(), entry);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"GGUF").unwrap();

        let by_id = resolve_model(&entry.id, base.path(), None, &no_user_catalog()).unwrap();
        assert_eq!(
            by_id,
            ResolvedModel {
                path: file.clone(),
                id: entry.id.clone()
            }
        );
        let by_path = resolve_model(
            file.to_str().unwrap(),
            base.path(),
            None,
            &no_user_catalog(),
        )
        .unwrap();
        assert_eq!(by_path.id, entry.id);
    }

    #[test]
    fn missing_download_names_the_command_that_fixes_it() {
        let base = tempfile::tempdir().unwrap();
        let id = Catalog::builtin().default_model().id.clone();
        let error = resolve_model(&id, base.path(), None, &no_user_catalog()).unwrap_err();
        assert!(
            format!("{error:#}").contains(&format!("cargo xtask models download {id}")),
            "{error:#}"
        );
    }
}
