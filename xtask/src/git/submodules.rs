//! `git submodules list|status|update|reset|branch`: the submodules one at a time or all
//! together, always by the name or path declared in .gitmodules.

use anyhow::bail;
use serde::Serialize;

use super::{
    plural, porcelain::split_records, pull::update_submodules, short,
    status::print_submodule_table, submodule_moves, Repo, SubmoduleInfo, SubmoduleMove,
};
use crate::{flags::SubmodulesCmd, Context};

pub fn run(repo: &Repo<'_>, cx: &Context, cmd: SubmodulesCmd) -> anyhow::Result<()> {
    match cmd {
        SubmodulesCmd::List => list(repo, cx),
        SubmodulesCmd::Status => status(repo, cx),
        SubmodulesCmd::Update(target) => update(repo, cx, target.name.as_deref()),
        SubmodulesCmd::Reset { name, force } => reset(repo, cx, &name, force),
        SubmodulesCmd::Branch { name, branch } => match branch {
            Some(branch) => switch_branch(repo, cx, &name, &branch),
            None => list_branches(repo, cx, &name),
        },
    }
}

fn list(repo: &Repo<'_>, cx: &Context) -> anyhow::Result<()> {
    let declared = repo.declared_submodules()?;
    if cx.out.json() {
        return cx.out.print_json(&declared);
    }
    if declared.is_empty() {
        cx.out.println("no submodules declared in .gitmodules");
        return Ok(());
    }
    let paint = cx.out.paint();
    let width = declared
        .iter()
        .map(|module| module.path.len())
        .max()
        .unwrap_or(0);
    for module in &declared {
        let name = if module.name == module.path {
            String::new()
        } else {
            format!(" (name {})", module.name)
        };
        let branch = module
            .branch
            .as_deref()
            .map(|branch| format!(" [branch {branch}]"))
            .unwrap_or_default();
        cx.out.println(format!(
            "{:<width$}  {}{}{}",
            module.path,
            module.url.as_deref().unwrap_or("(no url)"),
            paint.dim(&branch),
            paint.dim(&name)
        ));
    }
    Ok(())
}

fn status(repo: &Repo<'_>, cx: &Context) -> anyhow::Result<()> {
    let submodules = repo.submodules()?;
    if cx.out.json() {
        return cx.out.print_json(&submodules);
    }
    if submodules.is_empty() {
        cx.out.println("no submodules");
        return Ok(());
    }
    print_submodule_table(&submodules, cx);
    Ok(())
}

#[derive(Debug, Serialize)]
struct UpdateReport {
    moved: Vec<SubmoduleMove>,
    submodules: Vec<SubmoduleInfo>,
}

fn update(repo: &Repo<'_>, cx: &Context, name: Option<&str>) -> anyhow::Result<()> {
    let path = name
        .map(|name| repo.find_submodule(name).map(|module| module.path))
        .transpose()?;
    let before = repo.submodules()?;
    update_submodules(repo, cx, path.as_deref())?;
    let after = repo.submodules()?;
    let report = UpdateReport {
        moved: submodule_moves(&before, &after),
        submodules: after,
    };
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    cx.out.println(format!(
        "updated; {} moved",
        plural(report.moved.len(), "submodule")
    ));
    for moved in &report.moved {
        let from = moved.from.as_deref().map_or("(new)", short);
        cx.out
            .println(format!("  {}  {from} → {}", moved.path, short(&moved.to)));
    }
    Ok(())
}

fn reset(repo: &Repo<'_>, cx: &Context, name: &str, force: bool) -> anyhow::Result<()> {
    let declared = repo.find_submodule(name)?;
    let current = repo
        .submodules()?
        .into_iter()
        .find(|module| module.path == declared.path);
    let mut losses = Vec::new();
    if let Some(module) = &current {
        if module.dirty {
            losses.push("its uncommitted changes".to_owned());
        }
        if let Some(commit) = module
            .commit
            .as_deref()
            .filter(|commit| *commit != module.recorded_commit)
        {
            // Commits on no branch of the submodule become unreachable once it moves away.
            let containing = repo.read(
                repo.git_in(&module.path).args([
                    "for-each-ref",
                    "--contains",
                    commit,
                    "--format=%(refname)",
                ]),
                &format!(
                    "checking which branches of `{}` hold {}",
                    module.path,
                    short(commit)
                ),
            )?;
            if containing.trim().is_empty() {
                losses.push(format!("commit {} which is on no branch", short(commit)));
            }
        }
    }
    if !losses.is_empty() {
        let question = format!(
            "resetting submodule `{}` discards {}",
            declared.path,
            losses.join(" and ")
        );
        if !cx.out.confirm(&question, force)? {
            bail!("reset cancelled; nothing was changed");
        }
    }
    repo.read(
        repo.git()
            .args([
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--force",
                "--",
            ])
            .arg(&declared.path),
        &format!("resetting submodule `{}`", declared.path),
    )?;
    let after = repo
        .submodules()?
        .into_iter()
        .find(|module| module.path == declared.path);
    if cx.out.json() {
        return cx.out.print_json(&after);
    }
    let was = current
        .as_ref()
        .and_then(|module| module.commit.as_deref())
        .map(|commit| format!(" (was {})", short(commit)))
        .unwrap_or_default();
    let now = after
        .as_ref()
        .map(|module| short(module.current_commit()).to_owned())
        .unwrap_or_default();
    cx.out.println(format!(
        "{} reset to its recorded commit {now}{was}",
        declared.path
    ));
    Ok(())
}

#[derive(Debug, Serialize)]
struct SubmoduleBranch {
    name: String,
    commit: String,
    current: bool,
    remote: bool,
}

fn branches_of(repo: &Repo<'_>, path: &str) -> anyhow::Result<Vec<SubmoduleBranch>> {
    let output = repo.read(
        repo.git_in(path).args([
            "for-each-ref",
            "--format=%(refname)%00%(refname:short)%00%(objectname:short)%00%(HEAD)%00%(symref)",
            "refs/heads",
            "refs/remotes",
        ]),
        &format!("listing the branches of submodule `{path}`"),
    )?;
    Ok(split_records(&output, 5)?
        .into_iter()
        .filter(|record| record[4].is_empty())
        .map(|record| {
            let [full, name, commit, head, _] = <[String; 5]>::try_from(record).expect("5 fields");
            SubmoduleBranch {
                remote: full.starts_with("refs/remotes/"),
                current: head == "*",
                name,
                commit,
            }
        })
        .collect())
}

/// The submodule's path, after checking that it is checked out (branches live in its clone).
fn initialised_path(repo: &Repo<'_>, name: &str) -> anyhow::Result<String> {
    let declared = repo.find_submodule(name)?;
    let initialised = repo
        .submodules()?
        .iter()
        .any(|module| module.path == declared.path && module.commit.is_some());
    if !initialised {
        bail!(
            "submodule `{}` is not initialised, so it has no branches yet\nhint: run `cargo xtask git submodules update --name {}`",
            declared.path,
            declared.path
        );
    }
    Ok(declared.path)
}

fn list_branches(repo: &Repo<'_>, cx: &Context, name: &str) -> anyhow::Result<()> {
    let path = initialised_path(repo, name)?;
    let branches = branches_of(repo, &path)?;
    if cx.out.json() {
        return cx.out.print_json(&branches);
    }
    let paint = cx.out.paint();
    if !branches.iter().any(|branch| branch.current) {
        cx.out
            .println(paint.dim(&format!("{path}: HEAD is detached")));
    }
    for branch in &branches {
        let marker = if branch.current { "*" } else { " " };
        let name = if branch.remote {
            paint.red(&branch.name)
        } else if branch.current {
            paint.green(&branch.name)
        } else {
            branch.name.clone()
        };
        cx.out
            .println(format!("{marker} {name}  {}", paint.yellow(&branch.commit)));
    }
    Ok(())
}

fn switch_branch(repo: &Repo<'_>, cx: &Context, name: &str, branch: &str) -> anyhow::Result<()> {
    let path = initialised_path(repo, name)?;
    let branches = branches_of(repo, &path)?;
    let local = branches
        .iter()
        .any(|candidate| !candidate.remote && candidate.name == branch);
    let remote = format!("origin/{branch}");
    let switch = if local {
        repo.git_in(&path).args(["switch", "--quiet", branch])
    } else if branches
        .iter()
        .any(|candidate| candidate.remote && candidate.name == remote)
    {
        repo.git_in(&path)
            .args(["switch", "--quiet", "--create", branch, "--track", &remote])
    } else {
        let known: Vec<&str> = branches
            .iter()
            .map(|candidate| candidate.name.as_str())
            .collect();
        bail!(
            "submodule `{path}` has no branch `{branch}` (nor `{remote}`); its branches: {}\nhint: if the branch is new upstream, run `git -C {path} fetch origin` first",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        );
    };
    repo.read(
        switch,
        &format!("switching submodule `{path}` to `{branch}`"),
    )?;
    let module = repo
        .submodules()?
        .into_iter()
        .find(|module| module.path == path);
    if cx.out.json() {
        return cx.out.print_json(&module);
    }
    if let Some(module) = module {
        cx.out.println(format!(
            "{path}: on {branch} at {} ({})",
            short(module.current_commit()),
            if module.commit.as_deref() == Some(module.recorded_commit.as_str()) {
                "the recorded commit".to_owned()
            } else {
                format!(
                    "recorded {}; commit the new pointer in the superproject to keep it",
                    short(&module.recorded_commit)
                )
            }
        ));
    }
    Ok(())
}
