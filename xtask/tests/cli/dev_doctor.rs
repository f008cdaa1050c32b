//! `cargo xtask dev doctor` run as a user would, on a PATH from which one tool was removed.

use std::{os::unix::fs::symlink, path::Path, process::Command};

/// A PATH directory with symlinks to every tool the doctor looks for, except `without`.
fn path_without(dir: &Path, without: &str) {
    let tools = [
        "rustc", "cargo", "git", "cc", "c++", "gcc", "g++", "cmake", "ssh", "python3", "apt-get",
        "bash", "sh", "env",
    ];
    for tool in tools.into_iter().filter(|tool| *tool != without) {
        if let Ok(path) = which::which(tool) {
            symlink(path, dir.join(tool)).unwrap();
        }
    }
}

#[test]
fn doctor_reports_missing_cmake_with_its_fix_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    path_without(dir.path(), "cmake");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--json", "dev", "doctor"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "doctor must fail when cmake is missing"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let cmake = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "cmake")
        .expect("a cmake check");
    assert_eq!(cmake["status"], "missing");
    assert_eq!(cmake["need"], "required");
    let fix = cmake["fix"].as_str().unwrap();
    assert!(
        fix.contains("install") && fix.contains("cmake"),
        "fix: {fix}"
    );
    assert!(fix.contains("cargo xtask dev setup"), "fix: {fix}");
}

#[test]
fn doctor_human_output_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    path_without(dir.path(), "cmake");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--no-color", "dev", "doctor"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("MISS cmake"), "{stdout}");
    assert!(
        stdout.contains("fix:") && stdout.contains("cmake"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "--no-color output has escape codes: {stdout}"
    );
}
