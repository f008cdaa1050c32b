//! `git pull`: fetch the upstream, fast-forward (never merge), update submodules recursively,
//! and summarise what arrived.

use anyhow::bail;
use serde::Serialize;

use super::{plural, porcelain, short, submodule_moves, Repo, SubmoduleMove};
use crate::Context;

#[derive(Debug, Serialize)]
struct PullReport {
    branch: String,
    upstream: String,
    from: String,
    to: String,
    commits_pulled: u64,
    files_changed: Vec<String>,
    submodules_moved: Vec<SubmoduleMove>,
}

pub fn run(repo: &Repo<'_>, cx: &Context) -> anyhow::Result<()> {
    let worktree = repo.worktree_status()?;
    let Some(branch) = worktree.branch else {
        bail!("pulling: HEAD is detached, so there is no branch to fast-forward\nhint: check out a branch first (`git switch main`), or reset to origin with `cargo xtask git sync`");
    };
    let Some(upstream) = worktree.upstream else {
        bail!("pulling `{branch}`: the branch has no upstream to pull from\nhint: set one with `git branch --set-upstream-to=origin/{branch}`, or publish the branch with `git push -u origin {branch}`");
    };
    let Some(from) = worktree.head_commit else {
        bail!("pulling `{branch}`: the repository has no commit yet\nhint: clone the repository instead: `git clone --recurse-submodules URL`");
    };
    let submodules_before = repo.submodules()?;

    let spinner = cx.out.spinner(format!("fetching {upstream}"));
    let fetched = repo.read(
        repo.git().args(["fetch", "--recurse-submodules=no"]),
        &format!("fetching `{upstream}`"),
    );
    spinner.finish_and_clear();
    fetched?;

    let counts = repo.read(
        repo.git()
            .args(["rev-list", "--left-right", "--count", "HEAD...@{upstream}"]),
        &format!("comparing `{branch}` with `{upstream}`"),
    )?;
    let (ahead, behind) = parse_left_right(&counts)?;
    if ahead > 0 && behind > 0 {
        bail!(
            "pulling `{branch}`: it cannot fast-forward: the branch has {} that `{upstream}` lacks, and `{upstream}` has {} that the branch lacks; nothing was merged\nhint: replay your commits with `git rebase {upstream}`, or discard them with `cargo xtask git sync`",
            plural(ahead as usize, "commit"),
            plural(behind as usize, "commit")
        );
    }
    if behind > 0 {
        let merged = repo.read(
            repo.git()
                .args(["merge", "--ff-only", "--quiet", "@{upstream}"]),
            &format!("fast-forwarding `{branch}` to `{upstream}`"),
        );
        if let Err(error) = merged {
            bail!("{error:#}\nhint: commit or stash the local changes git names, or discard them with `cargo xtask git sync`");
        }
    }
    let to = repo
        .read(repo.git().args(["rev-parse", "HEAD"]), "reading HEAD")?
        .trim()
        .to_owned();

    update_submodules(repo, cx, None)?;
    let submodules_after = repo.submodules()?;

    let files_changed = if from == to {
        Vec::new()
    } else {
        let raw = repo.read(
            repo.git()
                .args(["diff", "--raw", "-z", "--no-renames", &from, &to]),
            "listing the files the pull changed",
        )?;
        porcelain::parse_diff_raw(&raw)?
            .into_iter()
            .filter(|change| !change.is_submodule)
            .map(|change| change.path)
            .collect()
    };
    let report = PullReport {
        branch,
        upstream,
        from,
        to,
        commits_pulled: behind,
        files_changed,
        submodules_moved: submodule_moves(&submodules_before, &submodules_after),
    };
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    print_human(&report, cx);
    Ok(())
}

/// `git submodule sync` + `update --init --recursive` for all submodules or one path.
pub fn update_submodules(repo: &Repo<'_>, cx: &Context, path: Option<&str>) -> anyhow::Result<()> {
    let what = path.map_or("submodules".to_owned(), |path| {
        format!("submodule `{path}`")
    });
    let pathspec: Vec<&str> = path.map(|path| vec!["--", path]).unwrap_or_default();
    // A URL changed in .gitmodules only takes effect once copied into .git/config.
    repo.read(
        repo.git()
            .args(["submodule", "sync", "--recursive", "--quiet"])
            .args(&pathspec),
        &format!("syncing the URLs of {what}"),
    )?;
    let spinner = cx.out.spinner(format!("updating {what}"));
    let updated = repo.read(
        repo.git()
            .args(["submodule", "update", "--init", "--recursive"])
            .args(&pathspec),
        &format!("updating {what}"),
    );
    spinner.finish_and_clear();
    updated.map(drop)
}

/// `git rev-list --left-right --count A...B` prints `<left>\t<right>`.
pub fn parse_left_right(output: &str) -> anyhow::Result<(u64, u64)> {
    let mut counts = output.split_whitespace().map(str::parse::<u64>);
    match (counts.next(), counts.next(), counts.next()) {
        (Some(Ok(left)), Some(Ok(right)), None) => Ok((left, right)),
        _ => bail!("unexpected `git rev-list --left-right --count` output: {output:?}"),
    }
}

fn print_human(report: &PullReport, cx: &Context) {
    let paint = cx.out.paint();
    if report.commits_pulled == 0 {
        cx.out.println(format!(
            "{} is up to date with {} at {}",
            report.branch,
            report.upstream,
            short(&report.to)
        ));
    } else {
        cx.out.println(format!(
            "pulled {} from {} ({}..{}): {} changed",
            plural(report.commits_pulled as usize, "commit"),
            report.upstream,
            short(&report.from),
            short(&report.to),
            plural(report.files_changed.len(), "file"),
        ));
    }
    cx.out.println(format!(
        "{} moved",
        plural(report.submodules_moved.len(), "submodule")
    ));
    for moved in &report.submodules_moved {
        let from = moved
            .from
            .as_deref()
            .map_or_else(|| paint.dim("(new)"), |from| short(from).to_owned());
        cx.out
            .println(format!("  {}  {from} → {}", moved.path, short(&moved.to)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_right_counts_parse_and_reject_garbage() {
        assert_eq!(parse_left_right("2\t5\n").unwrap(), (2, 5));
        assert!(parse_left_right("2\n").is_err());
        assert!(parse_left_right("a\tb\n").is_err());
    }
}
