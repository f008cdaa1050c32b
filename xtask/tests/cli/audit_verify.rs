//! `cargo xtask audit verify` on audit logs written with orcd's own chain format: an intact
//! rotated log passes in any argument order; a changed, removed or truncated line is named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use llorch_api::audit::{rfc3339_utc, Actor, AuditEvent, AuditRecord, GENESIS_HASH};

/// Writes `lines_per_file` chained records into each file, the chain running through them in
/// order (as orcd's daily rotation leaves it).
fn write_chain(paths: &[PathBuf], lines_per_file: u64) {
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut seq = 0;
    for path in paths {
        let mut text = String::new();
        for _ in 0..lines_per_file {
            let record = AuditRecord {
                seq,
                ts: rfc3339_utc(1_746_100_800_000 + seq * 1000),
                event: AuditEvent::AuthFailure {
                    method: "GET".into(),
                    path: format!("/v2/tasks/{seq}"),
                    status: 401,
                    reason: "missing token".into(),
                },
                actor: Some(Actor {
                    token: None,
                    peer: Some("10.0.0.7:41234".into()),
                }),
                prev_hash: prev_hash.clone(),
            };
            let (line, hash) = record.seal();
            text.push_str(&line);
            text.push('\n');
            prev_hash = hash;
            seq += 1;
        }
        std::fs::write(path, text).unwrap();
    }
}

fn verify(scratch: &Path, args: &[&Path]) -> (Output, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "audit", "verify"])
        .args(args)
        .env("LLORCH_CONFIG_PATH", scratch.join("no-config.toml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, report)
}

fn rotated_log(dir: &Path) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = [
        "audit.jsonl.2025-05-01",
        "audit.jsonl.2025-05-02",
        "audit.jsonl",
    ]
    .iter()
    .map(|name| dir.join(name))
    .collect();
    write_chain(&paths, 4);
    paths
}

#[test]
fn an_intact_rotated_log_verifies_in_glob_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = rotated_log(dir.path());
    // A shell glob puts the active file first; verify sorts by sequence.
    let (output, report) = verify(dir.path(), &[&paths[2], &paths[0], &paths[1]]);
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["ok"], true);
    assert_eq!(report["lines"], 12);
    assert_eq!(report["last_seq"], 11);
    assert_eq!(report["files"][0]["path"], paths[0].to_str().unwrap());
}

#[test]
fn a_changed_line_is_named_with_its_file_and_number() {
    let dir = tempfile::tempdir().unwrap();
    let paths = rotated_log(dir.path());
    let text = std::fs::read_to_string(&paths[1]).unwrap();
    // Line 3 of the second file: the peer address is rewritten.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("10.0.0.7", "10.0.0.8");
    std::fs::write(&paths[1], lines.join("\n") + "\n").unwrap();

    let (output, report) = verify(dir.path(), &[&paths[0], &paths[1], &paths[2]]);
    assert_eq!(output.status.code(), Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    assert_eq!(report["broken"]["path"], paths[1].to_str().unwrap());
    assert_eq!(report["broken"]["line"], 3);
    let reason = report["broken"]["reason"].as_str().unwrap();
    assert!(reason.contains("changed after it was written"), "{reason}");
    assert_eq!(report["lines"], 6, "the lines before it are intact");
}

#[test]
fn a_removed_line_or_a_missing_older_file_breaks_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let paths = rotated_log(dir.path());
    let text = std::fs::read_to_string(&paths[0]).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&paths[0], kept.join("\n") + "\n").unwrap();
    let (output, report) = verify(dir.path(), &[&paths[0]]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(report["broken"]["line"], 2);
    assert!(report["broken"]["reason"]
        .as_str()
        .unwrap()
        .contains("removed, inserted or reordered"));

    // The newest file alone does not start at genesis: refused, unless `--partial`.
    let (output, report) = verify(dir.path(), &[&paths[2]]);
    assert_eq!(output.status.code(), Some(1));
    assert!(report["broken"]["reason"]
        .as_str()
        .unwrap()
        .contains("--partial"));
    let (output, report) = verify(dir.path(), &[Path::new("--partial"), &paths[2]]);
    assert!(output.status.success(), "{report:#}");
}

#[test]
fn human_output_names_the_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let paths = rotated_log(dir.path());
    let mut text = std::fs::read_to_string(&paths[2]).unwrap();
    text.truncate(text.len() - 20);
    std::fs::write(&paths[2], text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["audit", "verify"])
        .args(&paths)
        .env("LLORCH_CONFIG_PATH", dir.path().join("no-config.toml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let expected = format!("BROKEN {}:4:", paths[2].display());
    assert!(stdout.contains(&expected), "{stdout}");
}
