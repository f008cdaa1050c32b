//! That xtask runs child processes one way: outside `src/process.rs`, no file of xtask names
//! `duct`, `xshell`, `std::process::Command` or `Stdio` (that module's doc says why duct). Read
//! as text with comments and literals blanked, so that a word in a message or a comment is no
//! finding and each finding has its line.

use std::path::Path;

use anyhow::Context as _;

/// The one file that may run processes by other means than itself.
const PROCESS_MODULE: &str = "process.rs";

/// Every use of a process API outside [`PROCESS_MODULE`] under `src_dir` (xtask's `src`), as
/// `PATH:LINE: what`, in path order; `shown_as` prefixes the paths (`xtask/src`).
pub fn find_stray_uses(src_dir: &Path, shown_as: &str) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    collect_rust_files(src_dir, &mut files)?;
    files.sort();
    let mut findings = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src_dir).unwrap_or(&file);
        if relative == Path::new(PROCESS_MODULE) {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (line, what) in stray_uses(&text) {
            findings.push(format!("{shown_as}/{}:{line}: {what}", relative.display()));
        }
    }
    Ok(findings)
}

fn collect_rust_files(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "listing {}\nhint: run from a llama-orch checkout, or pass --repo-root DIR",
            dir.display()
        )
    })?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_rust_files(&path, files)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The process APIs used in `source`: (1-based line, what was found and what to use).
fn stray_uses(source: &str) -> Vec<(usize, String)> {
    let code = blank_comments_and_literals(source);
    let mut findings = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let mut found = |what: &str| {
            findings.push((
                index + 1,
                format!("{what}; run processes through `crate::process` (its doc says why)"),
            ))
        };
        for word in ["duct", "xshell", "Stdio", "CommandExt"] {
            if contains_word(line, word) {
                found(&format!("`{word}` is named"));
            }
        }
        if contains_word(line, "process::Command") {
            found("`process::Command` is named");
        }
        if let Some((_, group)) = line.split_once("process::{") {
            let group = group.split('}').next().unwrap_or_default();
            if contains_word(group, "Command") {
                found("`Command` is imported from `process`");
            }
        }
        if line.contains("process::*") {
            found("`process::*` imports `Command`");
        }
    }
    findings
}

/// Whether `word` occurs in `line` with no identifier character on either side.
fn contains_word(line: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(word).any(|(start, _)| {
        let before = line[..start].chars().next_back();
        let after = line[start + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// `source` with every comment and every string and character literal replaced by spaces,
/// line breaks kept, so that lines keep their numbers.
fn blank_comments_and_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut code = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                code.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    code.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    code.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"..." or r#"..."#: no escapes; ends at a quote followed by as many hashes.
            let open = 1 + hashes + 1;
            code.push_str(&" ".repeat(open));
            i += open;
            while i < chars.len() {
                let closes = chars[i] == '"'
                    && (1..=hashes).all(|offset| chars.get(i + offset) == Some(&'#'));
                if closes {
                    code.push_str(&" ".repeat(1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                code.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            code.push(' ');
            i += 1;
            while i < chars.len() {
                match chars[i] {
                    '\\' => {
                        code.push(' ');
                        if let Some(&escaped) = chars.get(i + 1) {
                            code.push(blank(escaped));
                        }
                        i += 2;
                    }
                    '"' => {
                        code.push(' ');
                        i += 1;
                        break;
                    }
                    other => {
                        code.push(blank(other));
                        i += 1;
                    }
                }
            }
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{..}'); a lifetime ('a) has no closing quote.
            code.push(' ');
            i += 1;
            while i < chars.len() {
                let current = chars[i];
                code.push(' ');
                i += 1;
                if current == '\\' {
                    code.push(' ');
                    i += 1;
                } else if current == '\'' {
                    break;
                }
            }
        } else {
            code.push(c);
            i += 1;
        }
    }
    code
}

/// The number of `#`s when a raw string (`r"`, `r#"`, `br"`) starts at `at`.
fn raw_string_start(chars: &[char], at: usize) -> Option<usize> {
    if chars[at] != 'r' {
        return None;
    }
    let before = at.checked_sub(1).map(|index| chars[index]);
    let starts_a_token = match before {
        Some('b') => at < 2 || !is_ident_char(chars[at - 2]),
        Some(before) => !is_ident_char(before),
        None => true,
    };
    if !starts_a_token {
        return None;
    }
    let hashes = chars[at + 1..].iter().take_while(|&&c| c == '#').count();
    (chars.get(at + 1 + hashes) == Some(&'"')).then_some(hashes)
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_found(source: &str) -> Vec<usize> {
        stray_uses(source)
            .into_iter()
            .map(|(line, _)| line)
            .collect()
    }

    #[test]
    fn xtask_runs_processes_only_through_its_process_module() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let findings = find_stray_uses(&src, "xtask/src").unwrap();
        assert!(
            findings.is_empty(),
            "process APIs used outside xtask/src/process.rs:\n{}",
            findings.join("\n")
        );
    }

    #[test]
    fn every_way_of_naming_a_process_api_is_found_on_its_line() {
        let source = r#"use std::{
    io::Write,
    process::{Command, Stdio},
};
use xshell::cmd;
fn f() {
    let _ = duct::cmd!("sh");
    let _ = std::process::Command::new("sh");
    let _ = tokio::process::Command::new("sh");
    use std::os::unix::process::CommandExt;
    use std::process::*;
}
"#;
        assert_eq!(lines_found(source), [3, 3, 5, 7, 8, 9, 10, 11]);
        let (_, what) = &stray_uses(source)[0];
        assert_eq!(
            what,
            "`Stdio` is named; run processes through `crate::process` (its doc says why)"
        );
    }

    #[test]
    fn words_in_comments_literals_and_longer_names_are_not_uses() {
        let source = r##"//! The product: duct and xshell are named in this comment.
/* a block comment /* nested */ naming std::process::Command */
fn f<'a>(name: &'a str) -> (&'a str, char, char) {
    let _ = "duct::cmd(\"sh\") in a string";
    let _ = r#"xshell::cmd!(sh, "git") in a raw string"#;
    let _ = b"Stdio";
    let _ = std::process::id();
    let _ = std::process::ExitCode::SUCCESS;
    let _ = crate::flags::Command::Lint;
    let _ = conductor::run();
    (name, '"', '\'')
}
let after = duct::cmd("sh");
"##;
        assert_eq!(lines_found(source), [13]);
    }

    #[test]
    fn blanking_keeps_every_line_and_column() {
        let source = "a // duct\n\"x\ny\" b\n'\\n' c";
        let code = blank_comments_and_literals(source);
        assert_eq!(code.lines().count(), source.lines().count());
        assert_eq!(code, "a        \n  \n   b\n     c");
    }
}
