//! `models delete`: removes a model's directory (files, manifest and any unfinished download)
//! after showing its disk usage and asking; without a terminal it needs `--force`. With
//! `--forget` it also removes the model's catalog.d entry.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use llorch_catalog::{model_dir, user_entry_path};

use llorch_catalog::ModelLock;

use super::{check_local_id, load_catalog, local::dir_size};
use crate::{output::human_bytes, Context};

/// The catalog.d file to remove for `--forget`: the one `id` comes from, which must be
/// `catalog.d/<id>.toml` (a hand-written file may hold other entries too).
fn entry_to_forget(cx: &Context, id: &str) -> anyhow::Result<PathBuf> {
    let catalog = load_catalog(cx)?;
    let ours = user_entry_path(&cx.settings.catalog_dir, id);
    match catalog.origin_of(id) {
        Some(origin) if origin == ours.display().to_string() => Ok(ours),
        Some(origin) if catalog.is_user_origin(origin) => bail!(
            "`{id}` is defined in {origin}, which may hold other entries; --forget only removes catalog.d/<id>.toml files\nhint: remove the entry from {origin} by hand"
        ),
        Some(origin) => bail!(
            "`{id}` comes from {origin}, not from catalog.d; only catalog.d entries can be forgotten\nhint: drop --forget to delete the downloaded files only"
        ),
        None => bail!(
            "`{id}` has no catalog entry to forget\nhint: drop --forget to delete the directory only"
        ),
    }
}

pub fn run(cx: &Context, id: &str, force: bool, forget: bool) -> anyhow::Result<()> {
    check_local_id(id)?;
    let base = &cx.settings.model_base_dir;
    let dir = model_dir(base, id);
    let forget = if forget {
        Some(entry_to_forget(cx, id)?)
    } else {
        None
    };
    if !dir.is_dir() {
        if let Some(entry) = forget {
            if !cx
                .out
                .confirm(&format!("forget `{id}` ({})", entry.display()), force)?
            {
                cx.out.status(format!("kept `{id}`"));
                return Ok(());
            }
            std::fs::remove_file(&entry)
                .with_context(|| format!("removing {}", entry.display()))?;
            if cx.out.json() {
                return cx.out.print_json(&serde_json::json!({
                    "id": id,
                    "deleted": false,
                    "forgotten": entry,
                }));
            }
            cx.out
                .println(format!("forgot `{id}` (removed {})", entry.display()));
            return Ok(());
        }
        bail!(
            "`{id}` is not downloaded: {} does not exist\nhint: `cargo xtask models list` shows what is",
            dir.display()
        );
    }
    let usage = dir_size(&dir);
    cx.out.status(format!(
        "`{id}` uses {} in {}",
        human_bytes(usage),
        dir.display()
    ));
    if !cx
        .out
        .confirm(&format!("delete `{id}` ({})", human_bytes(usage)), force)?
    {
        cx.out.status(format!("kept `{id}`"));
        if cx.out.json() {
            return cx
                .out
                .print_json(&serde_json::json!({ "id": id, "deleted": false }));
        }
        return Ok(());
    }
    let Some(_lock) = ModelLock::try_acquire(base, id)? else {
        bail!("`{id}` is being downloaded by another process; try again when it has finished");
    };
    std::fs::remove_dir_all(&dir).with_context(|| format!("deleting {}", dir.display()))?;
    if let Some(entry) = &forget {
        std::fs::remove_file(entry).with_context(|| format!("removing {}", entry.display()))?;
    }
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "id": id,
            "deleted": true,
            "path": dir,
            "freed_bytes": usage,
            "forgotten": forget,
        }));
    }
    let forgotten = forget
        .map(|entry| format!("; removed {}", entry.display()))
        .unwrap_or_default();
    cx.out.println(format!(
        "deleted `{id}` ({} freed){forgotten}",
        human_bytes(usage)
    ));
    Ok(())
}
