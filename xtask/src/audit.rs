//! `cargo xtask audit verify`: walks orcd's audit log (the active file and its rotated ones) as
//! one hash chain, with the same code orcd writes it with (`llorch_api::audit`), and names the
//! first line that was changed, removed, inserted or reordered.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use llorch_api::audit::{parse_sealed_line, ChainBreak, ChainVerifier, GENESIS_HASH};
use serde::Serialize;

use crate::{flags::AuditCmd, output::ExitCode, Context};

pub fn run(cmd: AuditCmd, cx: &Context) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify { files, partial } => verify(cx, &files, partial),
    }
}

#[derive(Debug, Serialize)]
struct FileReport {
    path: PathBuf,
    lines: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Broken {
    path: PathBuf,
    /// 1-based line number within `path`.
    line: u64,
    reason: String,
}

#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    /// Lines checked and found good, over all files.
    lines: u64,
    /// `(seq, hash)` of the last good line: worth keeping elsewhere, it pins the history.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_hash: Option<String>,
    files: Vec<FileReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broken: Option<Broken>,
}

fn verify(cx: &Context, files: &[PathBuf], partial: bool) -> anyhow::Result<()> {
    let ordered = chain_order(files)?;
    let mut verifier = if partial {
        ChainVerifier::from_anywhere()
    } else {
        ChainVerifier::from_genesis()
    };
    let mut report = Report {
        ok: true,
        lines: 0,
        last_seq: None,
        last_hash: None,
        files: Vec::new(),
        broken: None,
    };
    for path in &ordered {
        cx.out.debug(format!("checking {}", path.display()));
        let (file_report, broken) = verify_file(path, &mut verifier)?;
        report.lines += file_report.lines;
        report.files.push(file_report);
        if let Some(broken) = broken {
            report.ok = false;
            report.broken = Some(broken);
            break;
        }
    }
    if let Some((seq, hash)) = verifier.last() {
        report.last_seq = Some(seq);
        report.last_hash = Some(hash.to_owned());
    }
    if cx.out.json() {
        cx.out.print_json(&report)?;
    } else {
        print_report(cx, &report);
    }
    if report.ok {
        Ok(())
    } else {
        Err(ExitCode(1).into())
    }
}

/// Checks each line of one file against the chain so far.
fn verify_file(
    path: &Path,
    verifier: &mut ChainVerifier,
) -> anyhow::Result<(FileReport, Option<Broken>)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut report = FileReport {
        path: path.to_path_buf(),
        lines: 0,
        first_seq: None,
        last_seq: None,
    };
    let mut bytes = Vec::new();
    let mut number = 0;
    loop {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            return Ok((report, None));
        }
        number += 1;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        let checked = match std::str::from_utf8(&bytes) {
            Ok(line) => verifier.check(line),
            Err(error) => Err(ChainBreak::Malformed(format!("not UTF-8: {error}"))),
        };
        match checked {
            Ok(line) => {
                report.lines += 1;
                report.first_seq.get_or_insert(line.seq);
                report.last_seq = Some(line.seq);
            }
            Err(reason) => {
                let broken = Broken {
                    path: path.to_path_buf(),
                    line: number,
                    reason: explain(&reason, number == 1 && report.first_seq.is_none()),
                };
                return Ok((report, Some(broken)));
            }
        }
    }
}

/// The reason in words, with the fix when the cause is probably the command line.
fn explain(reason: &ChainBreak, first_line_of_chain: bool) -> String {
    match reason {
        ChainBreak::Unlinked { found, .. } if first_line_of_chain && found != GENESIS_HASH => {
            format!("{reason}\nhint: this file continues an older one; pass the older files too (`audit.jsonl*`), or `--partial` if they are gone")
        }
        _ => reason.to_string(),
    }
}

/// The files sorted by the `seq` of their first line, so that a shell glob (which puts
/// `audit.jsonl` before `audit.jsonl.2025-...`) gives the chain's order. Empty files come last;
/// a file whose first line cannot be read keeps its place at the front, where it is reported.
fn chain_order(files: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut keyed = Vec::with_capacity(files.len());
    for path in files {
        let file = File::open(path).with_context(|| {
            format!("opening {}\nhint: pass orcd's `--audit-log` file and its rotated `PATH.YYYY-MM-DD` files", path.display())
        })?;
        let mut first = String::new();
        BufReader::new(file)
            .read_line(&mut first)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = if first.is_empty() {
            (2, 0)
        } else {
            match parse_sealed_line(first.trim_end_matches('\n')) {
                Ok(line) => (1, line.seq),
                Err(_) => (0, 0),
            }
        };
        keyed.push((key, path.clone()));
    }
    // Stable: files with equal keys keep the order they were given in.
    keyed.sort_by_key(|(key, _)| *key);
    Ok(keyed.into_iter().map(|(_, path)| path).collect())
}

fn print_report(cx: &Context, report: &Report) {
    let paint = cx.out.paint();
    for file in &report.files {
        let range = match (file.first_seq, file.last_seq) {
            (Some(first), Some(last)) => format!("seq {first}..={last}"),
            _ => "no good lines".to_owned(),
        };
        cx.out.println(format!(
            "{}  {} lines, {range}",
            file.path.display(),
            file.lines
        ));
    }
    match &report.broken {
        None => {
            cx.out.println(format!(
                "{} {} lines in {} files form one unbroken chain",
                paint.green("ok"),
                report.lines,
                report.files.len()
            ));
            if let (Some(seq), Some(hash)) = (report.last_seq, &report.last_hash) {
                cx.out.println(format!(
                    "last: seq {seq}, hash {hash} (keep a copy elsewhere: it pins this history)"
                ));
            }
        }
        Some(broken) => {
            cx.out.println(format!(
                "{} {}:{}: {}",
                paint.red("BROKEN"),
                broken.path.display(),
                broken.line,
                broken.reason
            ));
            cx.out
                .println(format!("{} lines before it are intact", report.lines));
        }
    }
}
