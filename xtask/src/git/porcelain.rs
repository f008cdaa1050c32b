//! Parsers for git's machine-readable outputs: `status --porcelain=v2 --branch -z`,
//! `submodule status`, `diff --raw -z`, `config -z` and NUL-separated `log`/`for-each-ref`
//! formats. Pure functions, so each format is tested on literal samples.

use anyhow::{bail, Context as _};

/// One `git status --porcelain=v2 --branch -z` report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorktreeStatus {
    /// Full hash of HEAD; `None` before the first commit.
    pub head_commit: Option<String>,
    /// Checked-out branch; `None` when HEAD is detached.
    pub branch: Option<String>,
    pub upstream: Option<String>,
    /// `(ahead, behind)`; `None` without an upstream or when the upstream branch is gone.
    pub ahead_behind: Option<(u64, u64)>,
    pub staged: Vec<String>,
    pub unstaged: Vec<String>,
    pub untracked: Vec<String>,
    pub conflicted: Vec<String>,
}

impl WorktreeStatus {
    /// Tracked changes that a hard reset would discard.
    pub fn uncommitted(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .staged
            .iter()
            .chain(&self.unstaged)
            .chain(&self.conflicted)
            .cloned()
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }
}

pub fn parse_status_v2(output: &str) -> anyhow::Result<WorktreeStatus> {
    let mut status = WorktreeStatus::default();
    let mut fields = output.split('\0').filter(|field| !field.is_empty());
    while let Some(record) = fields.next() {
        if let Some(header) = record.strip_prefix("# ") {
            parse_branch_header(header, &mut status)?;
            continue;
        }
        let (kind, rest) = record.split_at(1);
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        match kind {
            "1" => {
                let parts: Vec<&str> = rest.splitn(8, ' ').collect();
                let [xy, _sub, _m_head, _m_index, _m_worktree, _h_head, _h_index, path] = parts[..]
                else {
                    bail!("unexpected `git status` entry: {record:?}");
                };
                add_change(&mut status, xy, path);
            }
            "2" => {
                let parts: Vec<&str> = rest.splitn(9, ' ').collect();
                let [xy, _sub, _m_head, _m_index, _m_worktree, _h_head, _h_index, _score, path] =
                    parts[..]
                else {
                    bail!("unexpected `git status` entry: {record:?}");
                };
                add_change(&mut status, xy, path);
                // A rename's second field is the original path; it is not a change of its own.
                fields.next();
            }
            "u" => {
                let path = rest
                    .splitn(10, ' ')
                    .nth(9)
                    .with_context(|| format!("unexpected `git status` entry: {record:?}"))?;
                status.conflicted.push(path.to_owned());
            }
            "?" => status.untracked.push(rest.to_owned()),
            "!" => {}
            _ => bail!("unexpected `git status` entry: {record:?}"),
        }
    }
    Ok(status)
}

fn parse_branch_header(header: &str, status: &mut WorktreeStatus) -> anyhow::Result<()> {
    let (key, value) = header.split_once(' ').unwrap_or((header, ""));
    match key {
        "branch.oid" if value != "(initial)" => status.head_commit = Some(value.to_owned()),
        "branch.head" if value != "(detached)" => status.branch = Some(value.to_owned()),
        "branch.upstream" => status.upstream = Some(value.to_owned()),
        "branch.ab" => {
            let (ahead, behind) = value
                .split_once(' ')
                .and_then(|(ahead, behind)| {
                    Some((
                        ahead.strip_prefix('+')?.parse().ok()?,
                        behind.strip_prefix('-')?.parse().ok()?,
                    ))
                })
                .with_context(|| format!("unexpected `git status` header: {header:?}"))?;
            status.ahead_behind = Some((ahead, behind));
        }
        _ => {}
    }
    Ok(())
}

fn add_change(status: &mut WorktreeStatus, xy: &str, path: &str) {
    let mut flags = xy.chars();
    if flags.next().is_some_and(|staged| staged != '.') {
        status.staged.push(path.to_owned());
    }
    if flags.next().is_some_and(|unstaged| unstaged != '.') {
        status.unstaged.push(path.to_owned());
    }
}

/// The first column of `git submodule status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmoduleMark {
    /// ` `: checked out at the recorded commit.
    AtRecorded,
    /// `+`: checked out at another commit.
    Moved,
    /// `-`: not initialised.
    Uninitialised,
    /// `U`: merge conflicts.
    Conflict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmoduleLine {
    pub mark: SubmoduleMark,
    /// Checked-out commit (recorded one when uninitialised; with `--cached`, always recorded).
    pub commit: String,
    /// Relative to the superproject's root, also for nested submodules.
    pub path: String,
}

pub fn parse_submodule_status(output: &str) -> anyhow::Result<Vec<SubmoduleLine>> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut chars = line.chars();
            let mark = match chars.next() {
                Some(' ') => SubmoduleMark::AtRecorded,
                Some('+') => SubmoduleMark::Moved,
                Some('-') => SubmoduleMark::Uninitialised,
                Some('U') => SubmoduleMark::Conflict,
                _ => bail!("unexpected `git submodule status` line: {line:?}"),
            };
            let (commit, rest) = chars
                .as_str()
                .split_once(' ')
                .with_context(|| format!("unexpected `git submodule status` line: {line:?}"))?;
            // An initialised submodule is followed by ` (<git describe>)`.
            let path = match rest.rfind(" (") {
                Some(start) if rest.ends_with(')') => &rest[..start],
                _ => rest,
            };
            Ok(SubmoduleLine {
                mark,
                commit: commit.to_owned(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// One entry of `git diff --raw -z --no-renames A B`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChange {
    pub path: String,
    pub old_commit: String,
    pub new_commit: String,
    /// Either side is a gitlink (mode 160000).
    pub is_submodule: bool,
}

pub fn parse_diff_raw(output: &str) -> anyhow::Result<Vec<RawChange>> {
    let mut fields = output.split('\0').filter(|field| !field.is_empty());
    let mut changes = Vec::new();
    while let Some(meta) = fields.next() {
        let parts: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let [old_mode, new_mode, old_commit, new_commit, _status] = parts[..] else {
            bail!("unexpected `git diff --raw` entry: {meta:?}");
        };
        let path = fields
            .next()
            .with_context(|| format!("`git diff --raw` entry without a path: {meta:?}"))?;
        changes.push(RawChange {
            path: path.to_owned(),
            old_commit: old_commit.to_owned(),
            new_commit: new_commit.to_owned(),
            is_submodule: old_mode == "160000" || new_mode == "160000",
        });
    }
    Ok(changes)
}

/// A submodule as declared in `.gitmodules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeclaredSubmodule {
    pub name: String,
    pub path: String,
    pub url: Option<String>,
    /// `submodule.<name>.branch`, the branch `update --remote` would follow.
    pub branch: Option<String>,
}

/// Parses `git config -f .gitmodules -z --get-regexp '^submodule\.'`: `key\nvalue\0` entries.
pub fn parse_gitmodules(output: &str) -> Vec<DeclaredSubmodule> {
    let mut declared: Vec<DeclaredSubmodule> = Vec::new();
    for entry in output.split('\0').filter(|entry| !entry.is_empty()) {
        let (key, value) = entry.split_once('\n').unwrap_or((entry, ""));
        // Names may contain dots; the variable is what follows the last one.
        let Some((name, variable)) = key
            .strip_prefix("submodule.")
            .and_then(|rest| rest.rsplit_once('.'))
        else {
            continue;
        };
        let index = match declared.iter().position(|module| module.name == name) {
            Some(index) => index,
            None => {
                declared.push(DeclaredSubmodule {
                    name: name.to_owned(),
                    ..Default::default()
                });
                declared.len() - 1
            }
        };
        let module = &mut declared[index];
        match variable {
            "path" => module.path = value.to_owned(),
            "url" => module.url = Some(value.to_owned()),
            "branch" => module.branch = Some(value.to_owned()),
            _ => {}
        }
    }
    declared.retain(|module| !module.path.is_empty());
    declared
}

/// Splits the output of a `--format` made of `%x00`/`%00`-separated fields, one record a line.
pub fn split_records(output: &str, field_count: usize) -> anyhow::Result<Vec<Vec<String>>> {
    output
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<String> = line.split('\0').map(str::to_owned).collect();
            if fields.len() != field_count {
                bail!("expected {field_count} fields in {line:?}");
            }
            Ok(fields)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_v2_reports_branch_upstream_and_each_kind_of_change() {
        let output = "# branch.oid 1111111111111111111111111111111111111111\0\
# branch.head main\0\
# branch.upstream origin/main\0\
# branch.ab +2 -3\0\
1 M. N... 100644 100644 100644 aaa bbb staged only.txt\0\
1 .M N... 100644 100644 100644 aaa aaa unstaged.rs\0\
1 MM N... 100644 100644 100644 aaa bbb both.rs\0\
2 R. N... 100644 100644 100644 aaa aaa R100 new name.rs\0old name.rs\0\
1 .M SC.. 160000 160000 160000 ccc ccc vendor/a\0\
u UU N... 100644 100644 100644 100644 d1 d2 d3 conflict.rs\0\
? notes/\0\
! target/\0";
        let status = parse_status_v2(output).unwrap();
        assert_eq!(
            status.head_commit.as_deref(),
            Some("1111111111111111111111111111111111111111")
        );
        assert_eq!(status.branch.as_deref(), Some("main"));
        assert_eq!(status.upstream.as_deref(), Some("origin/main"));
        assert_eq!(status.ahead_behind, Some((2, 3)));
        assert_eq!(status.staged, ["staged only.txt", "both.rs", "new name.rs"]);
        assert_eq!(status.unstaged, ["unstaged.rs", "both.rs", "vendor/a"]);
        assert_eq!(status.conflicted, ["conflict.rs"]);
        assert_eq!(status.untracked, ["notes/"]);
        assert_eq!(
            status.uncommitted(),
            [
                "both.rs",
                "conflict.rs",
                "new name.rs",
                "staged only.txt",
                "unstaged.rs",
                "vendor/a"
            ]
        );
    }

    #[test]
    fn status_v2_detached_initial_and_gone_upstream() {
        let status = parse_status_v2("# branch.oid (initial)\0# branch.head (detached)\0").unwrap();
        assert_eq!(status.head_commit, None);
        assert_eq!(status.branch, None);
        let gone =
            parse_status_v2("# branch.oid abc\0# branch.head x\0# branch.upstream o/x\0").unwrap();
        assert_eq!(gone.upstream.as_deref(), Some("o/x"));
        assert_eq!(gone.ahead_behind, None);
    }

    #[test]
    fn status_v2_rejects_garbage() {
        assert!(parse_status_v2("Z what\0").is_err());
        assert!(parse_status_v2("# branch.ab 2 3\0").is_err());
    }

    #[test]
    fn submodule_status_marks_paths_and_describe_suffix() {
        let output = " 1111111111111111111111111111111111111111 vendor/a (heads/main)\n\
+2222222222222222222222222222222222222222 vendor/b c (v1.0-3-g2222222)\n\
-3333333333333333333333333333333333333333 vendor/c\n\
U0000000000000000000000000000000000000000 vendor/d\n";
        let lines = parse_submodule_status(output).unwrap();
        let summary: Vec<(SubmoduleMark, &str, &str)> = lines
            .iter()
            .map(|line| (line.mark, &line.commit[..4], line.path.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (SubmoduleMark::AtRecorded, "1111", "vendor/a"),
                (SubmoduleMark::Moved, "2222", "vendor/b c"),
                (SubmoduleMark::Uninitialised, "3333", "vendor/c"),
                (SubmoduleMark::Conflict, "0000", "vendor/d"),
            ]
        );
        assert!(parse_submodule_status("*abc path\n").is_err());
    }

    #[test]
    fn diff_raw_separates_files_from_gitlinks() {
        let output = ":100644 100644 aaa bbb M\0README.md\0:160000 160000 ccc ddd M\0vendor/a\0:000000 100644 000 eee A\0new file\0";
        let changes = parse_diff_raw(output).unwrap();
        assert_eq!(changes.len(), 3);
        assert!(!changes[0].is_submodule);
        assert_eq!(
            changes[1],
            RawChange {
                path: "vendor/a".into(),
                old_commit: "ccc".into(),
                new_commit: "ddd".into(),
                is_submodule: true
            }
        );
        assert_eq!(changes[2].path, "new file");
    }

    #[test]
    fn gitmodules_entries_group_by_name_with_dots() {
        let output = "submodule.vendor/llama.cpp.path\nvendor/llama.cpp\0submodule.vendor/llama.cpp.url\nhttps://example.invalid/llama.cpp\0submodule.vendor/llama.cpp.branch\nmaster\0submodule.b.path\nb\0submodule.orphan.url\nx\0";
        let declared = parse_gitmodules(output);
        assert_eq!(
            declared,
            [
                DeclaredSubmodule {
                    name: "vendor/llama.cpp".into(),
                    path: "vendor/llama.cpp".into(),
                    url: Some("https://example.invalid/llama.cpp".into()),
                    branch: Some("master".into()),
                },
                DeclaredSubmodule {
                    name: "b".into(),
                    path: "b".into(),
                    url: None,
                    branch: None,
                },
            ]
        );
    }

    #[test]
    fn records_split_on_nul_and_check_width() {
        let records = split_records("a\0b\0c\nd\0e\0f\n", 3).unwrap();
        assert_eq!(records[1], ["d", "e", "f"]);
        assert!(split_records("a\0b\n", 3).is_err());
    }
}
