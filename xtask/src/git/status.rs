//! `git status`: one report of where the checkout stands (branch, commit, upstream, changes,
//! submodules) and of the toolchain that builds it. Its `--json` form is a documented,
//! stable schema; field names only ever get added.

use std::path::PathBuf;

use serde::Serialize;

use super::{plural, short, CommitSummary, Repo, SubmoduleInfo, SubmoduleState};
use crate::Context;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub repo_root: PathBuf,
    /// `None` when HEAD is detached.
    pub branch: Option<String>,
    /// `None` before the first commit.
    pub commit: Option<CommitSummary>,
    /// `None` when the branch tracks nothing.
    pub upstream: Option<Upstream>,
    pub changes: Changes,
    pub submodules: Vec<SubmoduleInfo>,
    pub system: SystemInfo,
}

#[derive(Debug, Serialize)]
pub struct Upstream {
    pub name: String,
    /// Commits on the branch that the upstream lacks; `None` when the upstream is gone.
    pub ahead: Option<u64>,
    /// Commits on the upstream that the branch lacks; `None` when the upstream is gone.
    pub behind: Option<u64>,
    /// The upstream branch no longer exists on the remote.
    pub gone: bool,
}

#[derive(Debug, Serialize)]
pub struct Changes {
    pub staged: Vec<String>,
    pub unstaged: Vec<String>,
    pub untracked: Vec<String>,
    pub conflicted: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SystemInfo {
    /// `rustc --version`; `None` when rustc is not installed.
    pub rustc: Option<String>,
    pub cargo: Option<String>,
    /// `linux`, `macos`, ...
    pub os: String,
    pub arch: String,
    /// Distribution or OS release, e.g. `Debian GNU/Linux 13 (trixie)`, when known.
    pub os_version: Option<String>,
}

pub fn run(repo: &Repo<'_>, cx: &Context) -> anyhow::Result<()> {
    let report = collect(repo, cx)?;
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    print_human(&report, cx);
    Ok(())
}

pub fn collect(repo: &Repo<'_>, cx: &Context) -> anyhow::Result<StatusReport> {
    let worktree = repo.worktree_status()?;
    let commit = match worktree.head_commit {
        Some(_) => Some(repo.commit_summary("HEAD")?),
        None => None,
    };
    let upstream = worktree.upstream.clone().map(|name| Upstream {
        name,
        ahead: worktree.ahead_behind.map(|(ahead, _)| ahead),
        behind: worktree.ahead_behind.map(|(_, behind)| behind),
        gone: worktree.ahead_behind.is_none(),
    });
    Ok(StatusReport {
        repo_root: repo.root.clone(),
        branch: worktree.branch,
        commit,
        upstream,
        changes: Changes {
            staged: worktree.staged,
            unstaged: worktree.unstaged,
            untracked: worktree.untracked,
            conflicted: worktree.conflicted,
        },
        submodules: repo.submodules()?,
        system: system_info(cx),
    })
}

fn system_info(cx: &Context) -> SystemInfo {
    // Run from the repository root so a rust-toolchain file there picks the versions shown.
    let version = |program: &str| cx.cmd(program).arg("--version").read().ok();
    SystemInfo {
        rustc: version("rustc"),
        cargo: version("cargo"),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        os_version: os_version(cx),
    }
}

fn os_version(cx: &Context) -> Option<String> {
    if cfg!(target_os = "macos") {
        let version = cx.cmd("sw_vers").arg("-productVersion").read().ok()?;
        return Some(format!("macOS {}", version.trim()));
    }
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    os_release_name(&text)
}

/// `PRETTY_NAME` of an os-release file (shell-style `KEY="value"` lines).
fn os_release_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// Paths listed per kind of change in the human report; the JSON report lists all.
const PATHS_SHOWN: usize = 10;

fn print_human(report: &StatusReport, cx: &Context) {
    let paint = cx.out.paint();
    let label = |text: &str| paint.bold(&format!("{text:<11}"));

    let branch = match &report.branch {
        Some(branch) => paint.cyan(branch),
        None => paint.yellow("(detached HEAD)"),
    };
    let tracking = match &report.upstream {
        None => paint.dim("(no upstream)"),
        Some(Upstream {
            name, gone: true, ..
        }) => paint.yellow(&format!("→ {name} (gone from the remote)")),
        Some(upstream) => {
            let (ahead, behind) = (upstream.ahead.unwrap_or(0), upstream.behind.unwrap_or(0));
            let position = if ahead == 0 && behind == 0 {
                paint.green("up to date")
            } else {
                paint.yellow(&format!("ahead {ahead}, behind {behind}"))
            };
            format!("→ {} ({position})", upstream.name)
        }
    };
    cx.out
        .println(format!("{}{branch} {tracking}", label("branch")));
    match &report.commit {
        Some(commit) => cx.out.println(format!(
            "{}{} {}",
            label("commit"),
            paint.yellow(&commit.short_hash),
            commit.subject
        )),
        None => cx
            .out
            .println(format!("{}(no commits yet)", label("commit"))),
    }

    let changes = &report.changes;
    let groups: [(&str, &Vec<String>); 4] = [
        ("staged", &changes.staged),
        ("unstaged", &changes.unstaged),
        ("untracked", &changes.untracked),
        ("conflicted", &changes.conflicted),
    ];
    if groups.iter().all(|(_, paths)| paths.is_empty()) {
        cx.out
            .println(format!("{}{}", label("changes"), paint.green("clean")));
    } else {
        let counts: Vec<String> = groups
            .iter()
            .filter(|(_, paths)| !paths.is_empty())
            .map(|(kind, paths)| format!("{} {kind}", paths.len()))
            .collect();
        cx.out
            .println(format!("{}{}", label("changes"), counts.join(", ")));
        for (kind, paths) in groups {
            for path in paths.iter().take(PATHS_SHOWN) {
                cx.out
                    .println(format!("  {} {path}", paint.dim(&format!("{kind:<10}"))));
            }
            if paths.len() > PATHS_SHOWN {
                cx.out.println(format!(
                    "  {} … and {} more (`--json` lists every path)",
                    paint.dim(&format!("{kind:<10}")),
                    paths.len() - PATHS_SHOWN
                ));
            }
        }
    }

    if report.submodules.is_empty() {
        cx.out.println(format!("{}none", label("submodules")));
    } else {
        cx.out.println(format!(
            "{}{}",
            label("submodules"),
            plural(report.submodules.len(), "submodule")
        ));
        print_submodule_table(&report.submodules, cx);
    }

    let system = &report.system;
    let missing = || paint.red("not found");
    cx.out.println(format!(
        "{}{} · {} · {} {}{}",
        label("system"),
        system.rustc.clone().unwrap_or_else(missing),
        system.cargo.clone().unwrap_or_else(missing),
        system.os,
        system.arch,
        system
            .os_version
            .as_deref()
            .map(|version| format!(" ({version})"))
            .unwrap_or_default()
    ));
}

/// One line per submodule: path, commit, branch, state (shared with `submodules status`).
pub fn print_submodule_table(submodules: &[SubmoduleInfo], cx: &Context) {
    let paint = cx.out.paint();
    let width = submodules
        .iter()
        .map(|module| module.path.len())
        .max()
        .unwrap_or(0);
    for module in submodules {
        let branch = match (&module.branch, module.state) {
            (_, SubmoduleState::Uninitialised) => "-".to_owned(),
            (Some(branch), _) => branch.clone(),
            (None, _) => "(detached)".to_owned(),
        };
        let state = match module.state {
            SubmoduleState::InSync => paint.green(module.state.as_str()),
            SubmoduleState::Detached => paint.cyan("detached at the recorded commit"),
            SubmoduleState::Modified => {
                let mut reasons = Vec::new();
                if module.commit.as_deref() != Some(module.recorded_commit.as_str()) {
                    reasons.push(format!("recorded {}", short(&module.recorded_commit)));
                }
                if module.dirty {
                    reasons.push("uncommitted changes".to_owned());
                }
                paint.yellow(&format!("modified ({})", reasons.join(", ")))
            }
            SubmoduleState::Uninitialised => paint.red("uninitialised"),
            SubmoduleState::Conflict => paint.red("conflict"),
        };
        cx.out.println(format!(
            "  {:<width$}  {}  {:<12}  {state}",
            module.path,
            short(module.current_commit()),
            branch,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_pretty_name_is_unquoted() {
        let text =
            "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\n";
        assert_eq!(
            os_release_name(text).as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
        assert_eq!(os_release_name("ID=alpine\n"), None);
    }
}
