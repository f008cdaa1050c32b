//! `git sync`: hard reset to `origin/<default branch>` and submodules back to their committed
//! versions, after listing what that throws away and asking.

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{plural, short, submodule_moves, CommitSummary, Repo};
use super::{SubmoduleInfo, SubmoduleMove, SubmoduleState};
use crate::Context;

/// What a sync throws away.
#[derive(Debug, Default, Serialize)]
struct Discarded {
    /// Staged, unstaged and conflicted paths of the superproject.
    uncommitted: Vec<String>,
    /// Commits that no branch will reach any more.
    commits: Vec<CommitSummary>,
    submodules: Vec<SubmoduleLoss>,
}

#[derive(Debug, Serialize)]
struct SubmoduleLoss {
    path: String,
    /// Uncommitted changes inside it are discarded.
    dirty: bool,
    /// Checked-out commit when it is not the recorded one (it goes back to the recorded one).
    moved_from: Option<String>,
}

impl Discarded {
    fn is_empty(&self) -> bool {
        self.uncommitted.is_empty() && self.commits.is_empty() && self.submodules.is_empty()
    }

    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.uncommitted.is_empty() {
            parts.push(plural(self.uncommitted.len(), "uncommitted change"));
        }
        if !self.commits.is_empty() {
            parts.push(plural(self.commits.len(), "unpushed commit"));
        }
        if !self.submodules.is_empty() {
            parts.push(format!(
                "the local state of {}",
                plural(self.submodules.len(), "submodule")
            ));
        }
        parts.join(", ")
    }
}

#[derive(Debug, Serialize)]
struct SyncReport {
    branch: String,
    target: String,
    commit: CommitSummary,
    discarded: Discarded,
    submodules_moved: Vec<SubmoduleMove>,
}

pub fn run(repo: &Repo<'_>, cx: &Context, force: bool) -> anyhow::Result<()> {
    if repo
        .probe(repo.git().args(["remote", "get-url", "origin"]))?
        .is_none()
    {
        bail!("syncing {}: the repository has no remote named `origin`\nhint: add it with `git remote add origin URL`", repo.root.display());
    }
    let spinner = cx.out.spinner("fetching origin");
    let fetched = repo.read(
        repo.git()
            .args(["fetch", "--recurse-submodules=no", "origin"]),
        "fetching `origin`",
    );
    spinner.finish_and_clear();
    fetched?;
    let branch = default_branch(repo)?;
    let target = format!("origin/{branch}");

    let worktree = repo.worktree_status()?;
    let submodules_before = repo.submodules()?;
    let discarded = discarded_by_reset(repo, &worktree, &submodules_before, &branch, &target)?;
    if !discarded.is_empty() {
        print_discarded(&discarded, cx);
        let question = format!(
            "resetting {} to {target} discards {}",
            repo.root.display(),
            discarded.summary()
        );
        if !cx.out.confirm(&question, force)? {
            bail!("sync cancelled; nothing was changed");
        }
    }

    repo.read(
        repo.git().args(["reset", "--hard", "--quiet"]),
        "discarding uncommitted changes",
    )?;
    let switched = repo.read(
        repo.git()
            .args(["checkout", "--quiet", "-B", &branch, "--track", &target]),
        &format!("resetting `{branch}` to `{target}`"),
    );
    if let Err(error) = switched {
        bail!("{error:#}\nhint: untracked files in the way can be removed with `cargo xtask git clean`");
    }
    // `--force` also discards changes inside submodules that are already at the right commit.
    repo.read(
        repo.git()
            .args(["submodule", "sync", "--recursive", "--quiet"]),
        "syncing the submodules' URLs",
    )?;
    let spinner = cx.out.spinner("restoring submodules");
    let restored = repo.read(
        repo.git()
            .args(["submodule", "update", "--init", "--recursive", "--force"]),
        "restoring the submodules' committed versions",
    );
    spinner.finish_and_clear();
    restored?;

    let report = SyncReport {
        commit: repo.commit_summary("HEAD")?,
        submodules_moved: submodule_moves(&submodules_before, &repo.submodules()?),
        branch,
        target,
        discarded,
    };
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    cx.out.println(format!(
        "{} reset to {} at {} {}; submodules back at their recorded commits ({} moved)",
        report.branch,
        report.target,
        report.commit.short_hash,
        report.commit.subject,
        report.submodules_moved.len()
    ));
    if !worktree.untracked.is_empty() {
        cx.out.status(format!(
            "kept {}; `cargo xtask git clean` removes them",
            plural(worktree.untracked.len(), "untracked path")
        ));
    }
    Ok(())
}

/// The branch `origin/HEAD` points to, asking the remote when the clone never recorded it.
fn default_branch(repo: &Repo<'_>) -> anyhow::Result<String> {
    if let Some(output) = repo.probe(repo.git().args([
        "symbolic-ref",
        "--quiet",
        "--short",
        "refs/remotes/origin/HEAD",
    ]))? {
        if let Some(branch) = output.trim().strip_prefix("origin/") {
            return Ok(branch.to_owned());
        }
    }
    let output = repo.read(
        repo.git().args(["ls-remote", "--symref", "origin", "HEAD"]),
        "asking `origin` for its default branch",
    )?;
    parse_symref_head(&output).context("finding origin's default branch: origin does not say which branch HEAD is\nhint: name it with `git remote set-head origin main`")
}

/// `ref: refs/heads/main\tHEAD` from `git ls-remote --symref origin HEAD`.
fn parse_symref_head(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (reference, name) = line.strip_prefix("ref: ")?.split_once('\t')?;
        (name == "HEAD").then(|| reference.strip_prefix("refs/heads/").map(str::to_owned))?
    })
}

fn discarded_by_reset(
    repo: &Repo<'_>,
    worktree: &super::WorktreeStatus,
    submodules: &[SubmoduleInfo],
    branch: &str,
    target: &str,
) -> anyhow::Result<Discarded> {
    let submodules: Vec<SubmoduleLoss> = submodules
        .iter()
        .filter(|module| module.state == SubmoduleState::Modified)
        .map(|module| SubmoduleLoss {
            path: module.path.clone(),
            dirty: module.dirty,
            moved_from: module
                .commit
                .clone()
                .filter(|commit| *commit != module.recorded_commit),
        })
        .collect();
    // A moved submodule shows up as a changed path too; it is listed once, as a submodule.
    let uncommitted = worktree
        .uncommitted()
        .into_iter()
        .filter(|path| !submodules.iter().any(|module| module.path == *path))
        .collect();

    let mut commits = Vec::new();
    let local_branch = format!("refs/heads/{branch}");
    if repo
        .probe(
            repo.git()
                .args(["rev-parse", "--verify", "--quiet", &local_branch]),
        )?
        .is_some()
    {
        commits.extend(repo.commits_between(&local_branch, &[target])?);
    }
    if worktree.branch.is_none() && worktree.head_commit.is_some() {
        // Commits made on a detached HEAD are reachable from nothing else.
        commits.extend(repo.commits_between("HEAD", &["--branches", "--remotes"])?);
    }
    let mut seen = std::collections::HashSet::new();
    commits.retain(|commit| seen.insert(commit.hash.clone()));
    Ok(Discarded {
        uncommitted,
        commits,
        submodules,
    })
}

fn print_discarded(discarded: &Discarded, cx: &Context) {
    cx.out.warn("this sync discards:");
    for path in &discarded.uncommitted {
        cx.out.warn(format!("  uncommitted change  {path}"));
    }
    for commit in &discarded.commits {
        cx.out.warn(format!(
            "  unpushed commit     {} {}",
            commit.short_hash, commit.subject
        ));
    }
    for module in &discarded.submodules {
        let mut what = Vec::new();
        if let Some(from) = &module.moved_from {
            what.push(format!("checked out at {}", short(from)));
        }
        if module.dirty {
            what.push("uncommitted changes".to_owned());
        }
        cx.out.warn(format!(
            "  submodule           {} ({})",
            module.path,
            what.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symref_head_names_the_default_branch() {
        let output = "ref: refs/heads/main\tHEAD\n0123456789012345678901234567890123456789\tHEAD\n";
        assert_eq!(parse_symref_head(output).as_deref(), Some("main"));
        assert_eq!(parse_symref_head("abc\tHEAD\n"), None);
    }

    #[test]
    fn summary_names_each_kind_of_loss() {
        let discarded = Discarded {
            uncommitted: vec!["a".into(), "b".into()],
            commits: vec![CommitSummary {
                hash: "h".into(),
                short_hash: "h".into(),
                subject: "s".into(),
            }],
            submodules: Vec::new(),
        };
        assert_eq!(
            discarded.summary(),
            "2 uncommitted changes, 1 unpushed commit"
        );
        assert!(Discarded::default().is_empty());
    }
}
