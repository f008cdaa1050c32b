//! `models delete`: removes a model's directory (files, manifest and any unfinished download)
//! after showing its disk usage and asking; without a terminal it needs `--force`.

use anyhow::{bail, Context as _};
use llorch_catalog::model_dir;

use super::{check_local_id, download::ModelLock, local::dir_size};
use crate::{output::human_bytes, Context};

pub fn run(cx: &Context, id: &str, force: bool) -> anyhow::Result<()> {
    check_local_id(id)?;
    let base = &cx.settings.model_base_dir;
    let dir = model_dir(base, id);
    if !dir.is_dir() {
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
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "id": id,
            "deleted": true,
            "path": dir,
            "freed_bytes": usage,
        }));
    }
    cx.out
        .println(format!("deleted `{id}` ({} freed)", human_bytes(usage)));
    Ok(())
}
