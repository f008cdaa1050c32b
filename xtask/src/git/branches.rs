//! `git branches`: local branches with their upstream and how far apart they are, then the
//! remote-tracking branches.

use serde::Serialize;

use super::{porcelain::split_records, pull::parse_left_right, Repo};
use crate::Context;

#[derive(Debug, Serialize)]
pub struct LocalBranch {
    pub name: String,
    pub commit: String,
    pub subject: String,
    pub current: bool,
    pub upstream: Option<String>,
    /// `None` without an upstream, or when the upstream is gone.
    pub ahead: Option<u64>,
    pub behind: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct RemoteBranch {
    pub name: String,
    pub commit: String,
}

#[derive(Debug, Serialize)]
struct BranchesReport {
    local: Vec<LocalBranch>,
    remote: Vec<RemoteBranch>,
}

pub fn run(repo: &Repo<'_>, cx: &Context) -> anyhow::Result<()> {
    let report = BranchesReport {
        local: local_branches(repo)?,
        remote: remote_branches(repo)?,
    };
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    let paint = cx.out.paint();
    let width = report
        .local
        .iter()
        .map(|branch| branch.name.len())
        .max()
        .unwrap_or(0);
    for branch in &report.local {
        let marker = if branch.current { "*" } else { " " };
        let tracking = match (&branch.upstream, branch.ahead, branch.behind) {
            (None, ..) => String::new(),
            (Some(upstream), Some(ahead), Some(behind)) => {
                format!(" [{upstream}: ahead {ahead}, behind {behind}]")
            }
            (Some(upstream), ..) => format!(" [{upstream}: gone]"),
        };
        let name = format!("{:<width$}", branch.name);
        let name = if branch.current {
            paint.green(&name)
        } else {
            name
        };
        cx.out.println(format!(
            "{marker} {name}  {} {}{}",
            paint.yellow(&branch.commit),
            branch.subject,
            paint.dim(&tracking)
        ));
    }
    if !report.remote.is_empty() {
        cx.out.println(paint.bold("remote:"));
        for branch in &report.remote {
            cx.out.println(format!(
                "  {}  {}",
                paint.red(&branch.name),
                paint.yellow(&branch.commit)
            ));
        }
    }
    Ok(())
}

fn local_branches(repo: &Repo<'_>) -> anyhow::Result<Vec<LocalBranch>> {
    let output = repo.read(
        repo.git().args([
            "for-each-ref",
            "--format=%(refname:short)%00%(objectname:short)%00%(contents:subject)%00%(HEAD)%00%(upstream:short)",
            "refs/heads",
        ]),
        "listing local branches",
    )?;
    split_records(&output, 5)?
        .into_iter()
        .map(|record| {
            let [name, commit, subject, head, upstream] =
                <[String; 5]>::try_from(record).expect("5 fields");
            let upstream = (!upstream.is_empty()).then_some(upstream);
            // A gone upstream makes rev-list fail: that is "no counts", not an error.
            let counts = match &upstream {
                Some(upstream) => repo
                    .probe(repo.git().args([
                        "rev-list",
                        "--left-right",
                        "--count",
                        &format!("refs/heads/{name}...{upstream}"),
                        "--",
                    ]))?
                    .map(|output| parse_left_right(&output))
                    .transpose()?,
                None => None,
            };
            Ok(LocalBranch {
                current: head == "*",
                ahead: counts.map(|(ahead, _)| ahead),
                behind: counts.map(|(_, behind)| behind),
                name,
                commit,
                subject,
                upstream,
            })
        })
        .collect()
}

fn remote_branches(repo: &Repo<'_>) -> anyhow::Result<Vec<RemoteBranch>> {
    let output = repo.read(
        repo.git().args([
            "for-each-ref",
            "--format=%(refname:short)%00%(objectname:short)%00%(symref)",
            "refs/remotes",
        ]),
        "listing remote branches",
    )?;
    Ok(split_records(&output, 3)?
        .into_iter()
        // `origin/HEAD` is a pointer to another remote branch, not a branch.
        .filter(|record| record[2].is_empty())
        .map(|record| {
            let [name, commit, _] = <[String; 3]>::try_from(record).expect("3 fields");
            RemoteBranch { name, commit }
        })
        .collect())
}
