//! `git clean`: delete untracked files and directories after showing them and asking. Ignored
//! files (target/, downloaded models) are never touched.

use anyhow::bail;
use serde::Serialize;

use super::{plural, Repo};
use crate::Context;

#[derive(Debug, Serialize)]
struct CleanReport {
    removed: Vec<String>,
}

pub fn run(repo: &Repo<'_>, cx: &Context, force: bool) -> anyhow::Result<()> {
    let untracked = repo.worktree_status()?.untracked;
    if untracked.is_empty() {
        if cx.out.json() {
            return cx.out.print_json(&CleanReport {
                removed: Vec::new(),
            });
        }
        cx.out.println("nothing to clean: no untracked files");
        return Ok(());
    }
    cx.out.warn("untracked files and directories to delete:");
    for path in &untracked {
        cx.out.warn(format!("  {path}"));
    }
    let question = format!(
        "delete {} in {}",
        plural(untracked.len(), "untracked path"),
        repo.root.display()
    );
    if !cx.out.confirm(&question, force)? {
        bail!("clean cancelled; nothing was deleted");
    }
    // Exactly the listed paths, so nothing appears between the question and the deletion.
    repo.read(
        repo.git()
            .args(["clean", "-f", "-d", "--quiet", "--"])
            .args(&untracked),
        "deleting untracked files",
    )?;
    if cx.out.json() {
        return cx.out.print_json(&CleanReport { removed: untracked });
    }
    cx.out.println(format!(
        "deleted {}",
        plural(untracked.len(), "untracked path")
    ));
    Ok(())
}
