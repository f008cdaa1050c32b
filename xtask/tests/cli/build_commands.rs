//! `cargo xtask build` on a throwaway workspace: the executables cargo reported, the crate
//! counts, the profile flags, and backends that must fail before anything compiles.

use crate::fixtures;

use std::{ffi::OsString, path::Path};

use fixtures::workspace::Workspace;

#[test]
fn build_prints_the_executables_cargo_built() {
    let workspace = Workspace::new();

    let orcd = workspace.xtask(&["build", "orcd"]);
    orcd.assert_success();
    let path = orcd.last_line();
    assert_eq!(
        Path::new(path),
        workspace.path("target/release/orcd"),
        "{}",
        orcd.stdout
    );
    assert!(Path::new(path).is_file());
    assert!(
        orcd.stderr.contains("crates: 1 compiled, 0 up to date"),
        "{}",
        orcd.stderr
    );

    // Built again, nothing compiles and the same path is reported.
    let again = workspace
        .xtask(&["--json", "build", "orcd"])
        .assert_success()
        .json();
    assert_eq!(again["compiled"], 0);
    assert_eq!(again["fresh"], 1);
    assert_eq!(again["profile"], "release");
    assert_eq!(again["backend"], serde_json::Value::Null);
    assert_eq!(again["binaries"]["orcd"].as_str().unwrap(), path);

    let worker = workspace
        .xtask(&["--json", "build", "worker", "cpu", "--debug"])
        .assert_success()
        .json();
    assert_eq!(worker["backend"], "cpu");
    assert_eq!(worker["profile"], "debug");
    let worker_path = worker["binaries"]["llorch-worker"].as_str().unwrap();
    assert_eq!(
        Path::new(worker_path),
        workspace.path("target/debug/llorch-worker")
    );
    assert!(Path::new(worker_path).is_file());

    let all = workspace.xtask(&["build", "all"]);
    all.assert_success();
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            workspace.path("target/release/orcd").to_str().unwrap(),
            workspace
                .path("target/release/llorch-worker")
                .to_str()
                .unwrap(),
        ]
    );
}

#[test]
fn a_build_without_a_terminal_reports_progress_and_why_it_rebuilds() {
    let workspace = Workspace::new();
    let orcd = workspace.xtask(&["build", "orcd"]);
    orcd.assert_success();
    // No terminal here: plain lines, the first when the first crate starts.
    assert!(
        orcd.stderr
            .contains("building orcd (release): 0 crates compiled, 0 up to date"),
        "{}",
        orcd.stderr
    );
    assert!(
        orcd.stderr.contains("; compiling orcd ("),
        "{}",
        orcd.stderr
    );
    assert!(
        !orcd.stderr.contains("Compiling orcd"),
        "cargo's own lines are counted, not echoed: {}",
        orcd.stderr
    );
    assert!(!orcd.stderr.contains("the last build"), "{}", orcd.stderr);

    let all = workspace.xtask(&["build", "all"]);
    all.assert_success();
    assert!(
        all.stderr.contains(
            "the last build in this target directory was `cargo build --release -p orcd`, this one is `cargo build --release --workspace --bins`"
        ),
        "{}",
        all.stderr
    );
}

#[test]
fn compile_errors_are_shown_and_fail_the_build() {
    let workspace = Workspace::new();
    std::fs::write(
        workspace.path("orcd/src/main.rs"),
        "fn main() { let x: u8 = \"no\"; }\n",
    )
    .unwrap();
    let run = workspace.xtask(&["build", "orcd"]);
    run.assert_failure();
    assert!(run.stderr.contains("mismatched types"), "{}", run.stderr);
    assert!(run.stderr.contains("cargo failed"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "no path is printed: {}", run.stdout);
}

/// PATH without any directory that holds `nvcc`, so that only $CUDA_PATH (unset here) and
/// /usr/local/cuda can provide it.
fn path_without_nvcc() -> OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<_> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("nvcc").exists())
        .collect();
    std::env::join_paths(kept).unwrap()
}

#[test]
fn cuda_without_the_toolkit_fails_before_compiling() {
    let workspace = Workspace::new();
    let run = workspace.xtask_with_env(
        &[("PATH", path_without_nvcc())],
        &["build", "worker", "cuda"],
    );
    if Path::new("/usr/local/cuda/bin/nvcc").is_file() {
        // A toolkit in the default place: the build goes ahead, into its own target dir.
        run.assert_success();
        assert_eq!(
            Path::new(run.last_line()),
            workspace.path("target/cuda/release/llorch-worker")
        );
        return;
    }
    run.assert_failure();
    assert!(run.stderr.contains("`nvcc`"), "{}", run.stderr);
    assert!(
        run.stderr.contains("hint: install the CUDA toolkit"),
        "{}",
        run.stderr
    );
    assert!(
        !workspace.path("target").exists(),
        "nothing may compile: {}",
        run.stderr
    );
}

#[test]
fn cuda_toolkit_from_cuda_path_builds_into_its_own_target_dir() {
    let workspace = Workspace::new();
    // A stand-in toolkit: the throwaway worker's `cuda` feature compiles no CUDA code, so only
    // the lookup of `nvcc` under $CUDA_PATH/bin is exercised.
    let toolkit = workspace.path("fake-cuda");
    std::fs::create_dir_all(toolkit.join("bin")).unwrap();
    std::fs::write(toolkit.join("bin/nvcc"), "#!/bin/sh\nexit 0\n").unwrap();
    let run = workspace.xtask_with_env(
        &[
            ("PATH", path_without_nvcc()),
            ("CUDA_PATH", toolkit.into_os_string()),
        ],
        &["--json", "build", "all", "--backend", "cuda"],
    );
    let report = run.assert_success().json();
    assert_eq!(report["backend"], "cuda");
    assert_eq!(
        Path::new(report["binaries"]["llorch-worker"].as_str().unwrap()),
        workspace.path("target/cuda/release/llorch-worker")
    );
    assert_eq!(
        Path::new(report["binaries"]["orcd"].as_str().unwrap()),
        workspace.path("target/cuda/release/orcd")
    );
    assert!(
        !workspace.path("target/release").exists(),
        "the cpu build is untouched"
    );
}

#[cfg(not(target_os = "macos"))]
#[test]
fn metal_off_macos_fails_before_compiling() {
    let workspace = Workspace::new();
    let run = workspace.xtask(&["build", "worker", "metal"]);
    run.assert_failure();
    assert!(
        run.stderr.contains("the metal backend needs macOS"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: "), "{}", run.stderr);
    assert!(!workspace.path("target").exists());
}

#[test]
fn unknown_backend_lists_the_valid_ones() {
    let workspace = Workspace::new();
    let run = workspace.xtask(&["build", "worker", "vulkan"]);
    run.assert_failure();
    assert!(
        run.stderr.contains("[possible values: cpu, cuda, metal]"),
        "{}",
        run.stderr
    );
}
