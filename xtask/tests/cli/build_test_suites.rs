//! `cargo xtask test` on a throwaway workspace whose tests are known in advance (see
//! fixtures/workspace.rs): counts per suite, the closing line CI reads, failures that stay
//! visible and fail the run, the binaries handed to e2e tests, the `cargo test` fallback,
//! tests that skip themselves, and backends whose hardware is missing failing with the reason.

use crate::fixtures;

use std::{ffi::OsString, os::unix::fs::symlink, path::Path};

use fixtures::workspace::Workspace;

fn fail_on_request() -> [(&'static str, OsString); 1] {
    [("FIXTURE_FAIL", "1".into())]
}

#[test]
fn unit_suite_counts_and_ends_with_the_closing_line() {
    let workspace = Workspace::new();
    let run = workspace.xtask(&["test", "unit"]);
    run.assert_success();
    assert_eq!(
        run.last_line(),
        "3 passed, 0 failed, 1 skipped",
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("unit"), "{}", run.stdout);
    // Unit tests need no binaries: nothing but the test harnesses was built.
    assert!(!workspace.path("target/release/llorch-worker").exists());

    let filtered = workspace.xtask(&["test", "unit", "worker_unit"]);
    filtered.assert_success();
    assert_eq!(
        filtered.last_line(),
        "1 passed, 0 failed, 1 skipped",
        "{}",
        filtered.stdout
    );
}

#[test]
fn a_failing_test_is_shown_counted_and_fails_the_run() {
    let workspace = Workspace::new();
    let run = workspace.xtask_with_env(&fail_on_request(), &["test", "unit"]);
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("fixture failure requested"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.last_line(),
        "2 passed, 1 failed, 1 skipped",
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);

    let report = workspace
        .xtask_with_env(&fail_on_request(), &["--json", "test", "unit"])
        .json();
    assert_eq!(report["failed"], 1);
    assert_eq!(report["suites"][0]["suite"], "unit");
    assert_eq!(report["suites"][0]["status"], "failed");
}

#[test]
fn integration_and_smoke_run_their_targets_with_the_built_binaries() {
    let workspace = Workspace::new();
    let integration = workspace.xtask(&["--json", "test", "integration"]);
    let report = integration.assert_success().json();
    // tests/e2e.rs only: two tests assert LLORCH_BIN_DIR and LLORCH_MODEL_BASE_DIR, the third
    // cannot run here and says so: skipped, not passed.
    assert_eq!(report["passed"], 2, "{report:#}");
    assert_eq!(report["failed"], 0);
    assert_eq!(report["skipped"], 1, "{report:#}");
    assert_eq!(
        report["suites"][0]["skipped_tests"],
        serde_json::json!([{"name": "e2e::needs_missing_hardware", "reason": "no such hardware here"}]),
        "{report:#}"
    );
    assert_eq!(report["suites"][0]["suite"], "integration");
    assert!(workspace.path("target/release/llorch-worker").is_file());
    assert!(workspace.path("target/release/orcd").is_file());

    let smoke = workspace.xtask(&["test", "smoke"]);
    smoke.assert_success();
    assert_eq!(
        smoke.last_line(),
        "1 passed, 0 failed, 0 skipped",
        "{}",
        smoke.stdout
    );

    let filtered = workspace.xtask(&["test", "integration", "bin_dir"]);
    filtered.assert_success();
    assert_eq!(
        filtered.last_line(),
        "1 passed, 0 failed, 0 skipped",
        "{}",
        filtered.stdout
    );
}

#[test]
fn a_missing_smoke_target_fails_instead_of_passing() {
    let workspace = Workspace::new();
    std::fs::remove_file(workspace.path("tests/tests/smoke.rs")).unwrap();
    let run = workspace.xtask(&["test", "smoke"]);
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("no `smoke` test target"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.last_line(),
        "0 passed, 1 failed, 0 skipped",
        "{}",
        run.stdout
    );
}

/// A PATH on which `cargo nextest` is not found: every directory holding `cargo-nextest` is
/// dropped, and the other tools those directories held are linked into `shims`.
fn path_without_nextest(shims: &Path) -> OsString {
    std::fs::create_dir_all(shims).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut kept = vec![shims.to_path_buf()];
    for dir in std::env::split_paths(&path) {
        if !dir.join("cargo-nextest").exists() {
            kept.push(dir);
            continue;
        }
        for tool in ["git", "cargo", "rustc", "cc"] {
            let source = dir.join(tool);
            if source.exists() && !shims.join(tool).exists() {
                symlink(&source, shims.join(tool)).unwrap();
            }
        }
    }
    std::env::join_paths(kept).unwrap()
}

#[test]
fn cargo_test_fallback_counts_the_same_without_nextest() {
    let workspace = Workspace::new();
    let path = path_without_nextest(&workspace.path("shims"));
    let run = workspace.xtask_with_env(&[("PATH", path.clone())], &["-v", "test", "unit"]);
    run.assert_success();
    assert!(
        run.stderr.contains("running `cargo test` instead"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.last_line(),
        "3 passed, 0 failed, 1 skipped",
        "{}",
        run.stdout
    );

    let mut env = fail_on_request().to_vec();
    env.push(("PATH", path));
    let failing = workspace.xtask_with_env(&env, &["--json", "test", "unit"]);
    assert_eq!(failing.status.code(), Some(1), "{}", failing.stderr);
    assert!(
        failing.stderr.contains("fixture failure requested"),
        "{}",
        failing.stderr
    );
    let report = failing.json();
    assert_eq!(report["runner"], "cargo-test");
    assert_eq!(
        (
            report["passed"].clone(),
            report["failed"].clone(),
            report["skipped"].clone()
        ),
        (2.into(), 1.into(), 1.into())
    );
}

#[cfg(not(target_os = "macos"))]
#[test]
fn metal_off_macos_fails_with_the_reason_and_runs_nothing() {
    let workspace = Workspace::new();
    let run = workspace.xtask(&["test", "unit", "--backend", "metal"]);
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "cannot test the metal backend on this machine: Metal needs macOS; this machine runs linux"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("passed"),
        "no invented results: {}",
        run.stdout
    );
    assert!(
        !workspace.path("target").exists(),
        "nothing was built or run"
    );
}

#[test]
fn cuda_runs_only_where_there_is_an_nvidia_gpu_and_toolkit() {
    let workspace = Workspace::new();
    let gpu = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|output| output.status.success() && !output.stdout.is_empty());
    let toolkit = which::which("nvcc").is_ok() || Path::new("/usr/local/cuda/bin/nvcc").is_file();
    let run = workspace.xtask(&["test", "unit", "--backend", "cuda"]);
    if gpu && toolkit {
        // The worker's `built_with_cuda` test exists only with the cuda feature.
        run.assert_success();
        assert_eq!(
            run.last_line(),
            "4 passed, 0 failed, 1 skipped",
            "{}",
            run.stdout
        );
        assert!(
            workspace.path("target/cuda").is_dir(),
            "unit tests build beside the cuda binaries"
        );
        return;
    }
    assert_eq!(run.status.code(), Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "cannot test the cuda backend on this machine: no NVIDIA GPU/toolkit on this machine"
        ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("passed"),
        "no invented results: {}",
        run.stdout
    );
    assert!(
        !workspace.path("target").exists(),
        "nothing was built or run"
    );
}
