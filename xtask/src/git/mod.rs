//! `cargo xtask git`: the checkout's state, pull, sync, clean, branches and submodules. Every
//! git call goes through [`Repo`], which reads git's porcelain formats and turns a failed call
//! into an error that names the step and git's own message.

mod branches;
mod clean;
mod porcelain;
mod pull;
mod status;
mod submodules;
mod sync;

use std::{collections::BTreeMap, path::PathBuf};

use crate::{flags::GitCmd, output::Printer, process::Cmd, Context};
use anyhow::{bail, Context as _};
use serde::Serialize;

pub use porcelain::WorktreeStatus;

pub fn run(cmd: GitCmd, cx: &Context) -> anyhow::Result<()> {
    let repo = Repo::open(cx)?;
    match cmd {
        GitCmd::Status => status::run(&repo, cx),
        GitCmd::Pull => pull::run(&repo, cx),
        GitCmd::Sync { force } => sync::run(&repo, cx, force),
        GitCmd::Submodules(cmd) => submodules::run(&repo, cx, cmd),
        GitCmd::Clean { force } => clean::run(&repo, cx, force),
        GitCmd::Branches => branches::run(&repo, cx),
    }
}

/// The work tree a command acts on: the top level of the repository that contains
/// `settings.repo_root`.
pub struct Repo<'a> {
    cx: &'a Context,
    out: &'a Printer,
    pub root: PathBuf,
}

impl<'a> Repo<'a> {
    pub fn open(cx: &'a Context) -> anyhow::Result<Repo<'a>> {
        let dir = &cx.settings.repo_root;
        if !dir.is_dir() {
            bail!(
                "opening the repository: `{}` is not a directory\nhint: pass --repo-root DIR (or set LLORCH_REPO_ROOT) to a llama-orch checkout",
                dir.display()
            );
        }
        let output = cx
            .cmd("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .map_err(spawn_error)?;
        if !output.status.success() {
            bail!(
                "`{}` is not a git repository\nhint: run from a llama-orch checkout, or pass --repo-root DIR (or set LLORCH_REPO_ROOT); `git clone --recurse-submodules URL` creates one",
                dir.display()
            );
        }
        let root = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim_end());
        Ok(Repo {
            cx,
            out: &cx.out,
            root,
        })
    }

    /// Runs a git command to completion and returns its stdout; `what` names the step in the
    /// error, which carries git's stderr.
    pub fn read(&self, command: Cmd, what: &str) -> anyhow::Result<String> {
        let shown = command.to_string();
        self.out.debug(format!("$ {shown}"));
        let output = command
            .output()
            .map_err(spawn_error)
            .with_context(|| what.to_owned())?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("{what}: `{shown}` failed: {}", stderr.trim_end());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Like [`Repo::read`], but a non-zero exit is an answer (`None`), not an error.
    pub fn probe(&self, command: Cmd) -> anyhow::Result<Option<String>> {
        self.out.debug(format!("$ {command}"));
        let output = command.output().map_err(spawn_error)?;
        Ok(output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    pub fn git(&self) -> Cmd {
        self.cx.cmd("git").arg("-C").arg(&self.root)
    }

    /// `git -C <root>/<path>`: a command inside a submodule.
    pub fn git_in(&self, path: &str) -> Cmd {
        self.cx.cmd("git").arg("-C").arg(self.root.join(path))
    }

    pub fn worktree_status(&self) -> anyhow::Result<WorktreeStatus> {
        let output = self.read(
            self.git()
                .args(["status", "--porcelain=v2", "--branch", "-z"]),
            "reading the work tree's status",
        )?;
        porcelain::parse_status_v2(&output)
    }

    /// Short hash and subject of a commit.
    pub fn commit_summary(&self, rev: &str) -> anyhow::Result<CommitSummary> {
        let output = self.read(
            self.git()
                .args(["log", "-1", "--format=%H%x00%h%x00%s", rev, "--"]),
            &format!("reading commit `{rev}`"),
        )?;
        let mut records = porcelain::split_records(&output, 3)?;
        let record = records
            .pop()
            .with_context(|| format!("reading commit `{rev}`: git printed nothing"))?;
        let [hash, short_hash, subject] = <[String; 3]>::try_from(record).expect("3 fields");
        Ok(CommitSummary {
            hash,
            short_hash,
            subject,
        })
    }

    /// Commits reachable from `include` but from none of `exclude`, newest first.
    pub fn commits_between(
        &self,
        include: &str,
        exclude: &[&str],
    ) -> anyhow::Result<Vec<CommitSummary>> {
        let output = self.read(
            self.git()
                .args(["log", "--format=%H%x00%h%x00%s", include, "--not"])
                .args(exclude)
                .arg("--"),
            &format!("listing the commits of `{include}`"),
        )?;
        porcelain::split_records(&output, 3)?
            .into_iter()
            .map(|record| {
                let [hash, short_hash, subject] =
                    <[String; 3]>::try_from(record).expect("3 fields");
                Ok(CommitSummary {
                    hash,
                    short_hash,
                    subject,
                })
            })
            .collect()
    }

    pub fn declared_submodules(&self) -> anyhow::Result<Vec<porcelain::DeclaredSubmodule>> {
        let gitmodules = self.root.join(".gitmodules");
        if !gitmodules.exists() {
            return Ok(Vec::new());
        }
        // Exit code 1 means no matching key: a .gitmodules without submodules.
        let output = self
            .probe(self.git().args([
                "config",
                "-f",
                ".gitmodules",
                "-z",
                "--get-regexp",
                r"^submodule\.",
            ]))?
            .unwrap_or_default();
        Ok(porcelain::parse_gitmodules(&output))
    }

    /// Every submodule (recursively) with its checked-out and recorded commits, branch and state.
    pub fn submodules(&self) -> anyhow::Result<Vec<SubmoduleInfo>> {
        let checked_out = self.submodule_lines(false)?;
        if checked_out.is_empty() {
            return Ok(Vec::new());
        }
        let recorded: BTreeMap<String, String> = if checked_out
            .iter()
            .any(|line| line.mark == porcelain::SubmoduleMark::Moved)
        {
            self.submodule_lines(true)?
                .into_iter()
                .map(|line| (line.path, line.commit))
                .collect()
        } else {
            BTreeMap::new()
        };
        let names: BTreeMap<String, String> = self
            .declared_submodules()?
            .into_iter()
            .map(|module| (module.path, module.name))
            .collect();
        checked_out
            .into_iter()
            .map(|line| {
                let name = names.get(&line.path).cloned().unwrap_or(line.path.clone());
                let recorded_commit = recorded
                    .get(&line.path)
                    .cloned()
                    .unwrap_or(line.commit.clone());
                self.submodule_info(name, line, recorded_commit)
            })
            .collect()
    }

    fn submodule_lines(&self, cached: bool) -> anyhow::Result<Vec<porcelain::SubmoduleLine>> {
        let cached = cached.then_some("--cached");
        let output = self.read(
            self.git()
                .args(["submodule", "status", "--recursive"])
                .args(cached),
            "reading the submodules' status",
        )?;
        porcelain::parse_submodule_status(&output)
    }

    fn submodule_info(
        &self,
        name: String,
        line: porcelain::SubmoduleLine,
        recorded_commit: String,
    ) -> anyhow::Result<SubmoduleInfo> {
        use porcelain::SubmoduleMark;
        if line.mark == SubmoduleMark::Uninitialised {
            return Ok(SubmoduleInfo {
                name,
                path: line.path,
                commit: None,
                recorded_commit,
                branch: None,
                state: SubmoduleState::Uninitialised,
                dirty: false,
                untracked: false,
            });
        }
        let inner = self.read(
            self.git_in(&line.path)
                .args(["status", "--porcelain=v2", "--branch", "-z"]),
            &format!("reading the status of submodule `{}`", line.path),
        )?;
        let inner = porcelain::parse_status_v2(&inner)?;
        let dirty = !inner.uncommitted().is_empty();
        let state = match line.mark {
            SubmoduleMark::Conflict => SubmoduleState::Conflict,
            SubmoduleMark::Moved => SubmoduleState::Modified,
            _ if dirty => SubmoduleState::Modified,
            _ if inner.branch.is_none() => SubmoduleState::Detached,
            _ => SubmoduleState::InSync,
        };
        Ok(SubmoduleInfo {
            name,
            path: line.path,
            commit: inner.head_commit.or(Some(line.commit)),
            recorded_commit,
            branch: inner.branch,
            state,
            dirty,
            untracked: !inner.untracked.is_empty(),
        })
    }

    /// Resolves a submodule given by name or path; an unknown one lists the known ones.
    pub fn find_submodule(&self, wanted: &str) -> anyhow::Result<porcelain::DeclaredSubmodule> {
        let declared = self.declared_submodules()?;
        let wanted_path = wanted.trim_end_matches('/');
        if let Some(module) = declared
            .iter()
            .find(|module| module.name == wanted || module.path == wanted_path)
        {
            return Ok(module.clone());
        }
        if declared.is_empty() {
            bail!(
                "unknown submodule `{wanted}`: {} declares no submodules\nhint: check --repo-root",
                self.root.display()
            );
        }
        let known: Vec<String> = declared
            .iter()
            .map(|module| {
                if module.name == module.path {
                    module.path.clone()
                } else {
                    format!("{} (path {})", module.name, module.path)
                }
            })
            .collect();
        bail!(
            "unknown submodule `{wanted}`; known submodules: {}\nhint: pass one of them to --name, see `cargo xtask git submodules list`",
            known.join(", ")
        )
    }
}

fn spawn_error(error: anyhow::Error) -> anyhow::Error {
    if crate::process::is_not_found(&error) {
        anyhow::anyhow!("running git: the `git` program is not installed or not on PATH\nhint: install git (`sudo apt-get install git`, `brew install git`), or run `cargo xtask dev setup`")
    } else {
        error
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitSummary {
    pub hash: String,
    pub short_hash: String,
    pub subject: String,
}

/// Where a submodule stands relative to the commit the superproject records for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmoduleState {
    /// At the recorded commit, on a branch, without uncommitted changes.
    InSync,
    /// At another commit than the recorded one, or with uncommitted changes inside.
    Modified,
    /// Declared but not checked out (`git submodule update --init` has not run).
    Uninitialised,
    /// At the recorded commit with a detached HEAD (what `git submodule update` leaves);
    /// commits made there belong to no branch.
    Detached,
    /// The superproject has a merge conflict on the submodule's commit.
    Conflict,
}

impl SubmoduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubmoduleState::InSync => "in sync",
            SubmoduleState::Modified => "modified",
            SubmoduleState::Uninitialised => "uninitialised",
            SubmoduleState::Detached => "detached",
            SubmoduleState::Conflict => "conflict",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmoduleInfo {
    pub name: String,
    pub path: String,
    /// Checked-out commit; `None` when uninitialised.
    pub commit: Option<String>,
    /// The commit the superproject's index records.
    pub recorded_commit: String,
    /// `None` when HEAD is detached or the submodule is uninitialised.
    pub branch: Option<String>,
    pub state: SubmoduleState,
    /// Uncommitted changes to tracked files inside the submodule.
    pub dirty: bool,
    /// Untracked files inside the submodule.
    pub untracked: bool,
}

impl SubmoduleInfo {
    /// The submodule's checked-out commit, or the recorded one when it has none.
    pub fn current_commit(&self) -> &str {
        self.commit.as_deref().unwrap_or(&self.recorded_commit)
    }
}

/// A commit hash as people read it.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(7)]
}

/// Submodules whose commit differs between two snapshots (or that appeared), for summaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubmoduleMove {
    pub path: String,
    /// `None` when the submodule was not checked out before.
    pub from: Option<String>,
    pub to: String,
}

pub fn submodule_moves(before: &[SubmoduleInfo], after: &[SubmoduleInfo]) -> Vec<SubmoduleMove> {
    after
        .iter()
        .filter_map(|now| {
            let then = before.iter().find(|then| then.path == now.path);
            let from = then.and_then(|then| then.commit.clone());
            let to = now.commit.clone()?;
            (from.as_deref() != Some(to.as_str())).then(|| SubmoduleMove {
                path: now.path.clone(),
                from,
                to,
            })
        })
        .collect()
}

/// `1 file` / `2 files`.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(path: &str, commit: Option<&str>) -> SubmoduleInfo {
        SubmoduleInfo {
            name: path.into(),
            path: path.into(),
            commit: commit.map(str::to_owned),
            recorded_commit: "r".into(),
            branch: None,
            state: SubmoduleState::Detached,
            dirty: false,
            untracked: false,
        }
    }

    #[test]
    fn moves_list_changed_and_newly_initialised_submodules_only() {
        let before = [info("a", Some("1")), info("b", Some("2")), info("c", None)];
        let after = [
            info("a", Some("1")),
            info("b", Some("3")),
            info("c", Some("4")),
        ];
        let moves = submodule_moves(&before, &after);
        assert_eq!(
            moves,
            [
                SubmoduleMove {
                    path: "b".into(),
                    from: Some("2".into()),
                    to: "3".into()
                },
                SubmoduleMove {
                    path: "c".into(),
                    from: None,
                    to: "4".into()
                },
            ]
        );
    }

    #[test]
    fn plural_and_short_hash() {
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(plural(0, "file"), "0 files");
        assert_eq!(short("0123456789abcdef"), "0123456");
        assert_eq!(short("abc"), "abc");
    }
}
