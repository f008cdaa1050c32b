//! `cargo xtask test`: runs the unit, integration and smoke suites in the release profile
//! (llama.cpp's CMake build is per profile; a debug test build would compile it a second time),
//! prints a per-suite table and ends with the one line CI reads: `N passed, N failed, N skipped`.
//! A test that cannot run here reports itself skipped (see [`runner::SKIP_DIR_ENV`]).

mod runner;

use std::path::PathBuf;
use std::{ffi::OsString, time::Instant};

use anyhow::bail;
use llorch_api::Backend;
use serde::Serialize;

use crate::{
    build::{self, BuiltBinaries},
    flags::{TestArgs, TestCmd},
    output::ExitCode,
    process, Context,
};
use runner::{Counts, Invocation, Runner, SkippedTest};

/// The e2e package and its smoke target, which `integration` leaves to `smoke`.
const E2E_PACKAGE: &str = "llorch-tests";
const SMOKE_TARGET: &str = "smoke";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Suite {
    /// rustfmt and clippy (`cargo xtask lint`), first in `test all`.
    Lint,
    Unit,
    Integration,
    Smoke,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Lint => "lint",
            Suite::Unit => "unit",
            Suite::Integration => "integration",
            Suite::Smoke => "smoke",
        }
    }

    /// Suites that start the real orcd and worker binaries.
    fn needs_binaries(self) -> bool {
        matches!(self, Suite::Integration | Suite::Smoke)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum SuiteStatus {
    Passed,
    Failed,
}

#[derive(Debug, Serialize)]
struct SuiteResult {
    suite: Suite,
    status: SuiteStatus,
    #[serde(flatten)]
    counts: Counts,
    duration_secs: f64,
    /// What failed besides tests (a build, a missing target).
    note: Option<String>,
    /// Tests that could not run on this machine, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped_tests: Vec<SkippedTest>,
}

#[derive(Debug, Serialize)]
struct TestReport {
    backend: Backend,
    runner: Runner,
    suites: Vec<SuiteResult>,
    #[serde(flatten)]
    total: Counts,
}

pub fn run(cmd: TestCmd, cx: &Context) -> anyhow::Result<()> {
    let (suites, args, setup_first) = match cmd {
        TestCmd::Unit(args) => (vec![Suite::Unit], args, false),
        TestCmd::Integration(args) => (vec![Suite::Integration], args, false),
        TestCmd::Smoke(args) => (vec![Suite::Smoke], args, false),
        TestCmd::All(args) => (
            vec![Suite::Lint, Suite::Unit, Suite::Integration, Suite::Smoke],
            args,
            true,
        ),
    };
    let backend = args.backend.unwrap_or(cx.settings.default_backend);
    if let Some(reason) = missing_hardware(cx, backend) {
        // Nothing can be tested: a report of skipped suites would read as a result.
        bail!(
            "cannot test the {backend} backend on this machine: {reason}\nhint: run `cargo xtask test` without --backend (cpu), or on a machine with the {backend} hardware"
        );
    }
    if setup_first {
        // `test all` is the README's one test command: it must pass on a fresh machine.
        crate::dev::run_setup(cx, true, crate::dev::SetupScope::Tests)?;
    }
    let runner = Runner::detect(cx);
    let results = run_suites(cx, runner, backend, &suites, &args)?;

    let mut total = Counts::default();
    for result in &results {
        total.add(result.counts);
    }
    let report = TestReport {
        backend,
        runner,
        suites: results,
        total,
    };
    if cx.out.json() {
        cx.out.print_json(&report)?;
    } else {
        print_table(&report, cx);
        cx.out.println(closing_line(total));
    }
    if report
        .suites
        .iter()
        .any(|result| result.status == SuiteStatus::Failed)
    {
        return Err(ExitCode(1).into());
    }
    Ok(())
}

fn run_suites(
    cx: &Context,
    runner: Runner,
    backend: Backend,
    suites: &[Suite],
    args: &TestArgs,
) -> anyhow::Result<Vec<SuiteResult>> {
    let metadata = build::workspace_metadata(cx)?;
    compile_tests_once(cx, backend, suites, &metadata);
    let binaries = if suites.iter().any(|suite| suite.needs_binaries()) {
        Some(build::build_binaries(cx, backend, true).map_err(|error| format!("{error:#}")))
    } else {
        None
    };
    let mut results = Vec::new();
    for &suite in suites {
        let started = Instant::now();
        let mut result = match (&binaries, suite.needs_binaries()) {
            _ if suite == Suite::Lint => lint_suite(cx),
            (Some(Err(error)), true) => {
                cx.out
                    .warn(format!("{} suite not run: {error}", suite.name()));
                failed_without_tests(suite, "building orcd and llorch-worker failed".into())
            }
            _ => {
                let bin_dir = match &binaries {
                    Some(Ok(built)) => Some(built),
                    _ => None,
                };
                run_suite(cx, runner, backend, suite, args, &metadata, bin_dir)?
            }
        };
        result.duration_secs = started.elapsed().as_secs_f64();
        results.push(result);
    }
    Ok(results)
}

/// Compiles the test binaries of every cargo suite in `suites` in one cargo invocation, so that
/// the suites that follow find them built: one selection keeps both cores busy to the end,
/// where one build per suite waited on each suite's last links in turn. A failure here is left
/// to the suites, which report it with their own notes.
fn compile_tests_once(
    cx: &Context,
    backend: Backend,
    suites: &[Suite],
    metadata: &build::WorkspaceMetadata,
) {
    let cargo_suites: Vec<Suite> = suites
        .iter()
        .copied()
        .filter(|suite| *suite != Suite::Lint)
        .collect();
    if cargo_suites.len() < 2 || backend != Backend::Cpu {
        return;
    }
    let mut args: Vec<OsString> = ["test", "--no-run", "--release"]
        .map(OsString::from)
        .to_vec();
    let mut selected_workspace = false;
    for suite in cargo_suites {
        let Ok(selection) = selection(cx, suite, backend, metadata) else {
            return;
        };
        for arg in selection {
            // Each suite's selection starts with `--workspace`; one is enough.
            if arg == "--workspace" {
                if selected_workspace {
                    continue;
                }
                selected_workspace = true;
            }
            args.push(arg);
        }
    }
    cx.out.status(
        cx.out
            .paint()
            .bold("compiling the tests of every suite at once"),
    );
    if let Err(error) = process::stream_lines(build::cargo(cx, &args).stderr_to_stdout(), |line| {
        eprintln!("{line}")
    }) {
        cx.out
            .warn(format!("compiling the tests at once failed: {error:#}"));
    }
}

fn run_suite(
    cx: &Context,
    runner: Runner,
    backend: Backend,
    suite: Suite,
    args: &TestArgs,
    metadata: &build::WorkspaceMetadata,
    binaries: Option<&BuiltBinaries>,
) -> anyhow::Result<SuiteResult> {
    let mut env = vec![("LLORCH_MODEL_BASE_DIR", cx.settings.model_base_dir.clone())];
    if let Some(binaries) = binaries {
        env.push(("LLORCH_BIN_DIR", binaries.dir().to_path_buf()));
    }
    // The smoke test drives `cargo xtask jobs` through this very binary.
    // Linux names a replaced executable "PATH (deleted)"; a rebuild during the run put the
    // new binary at PATH, which serves as well.
    if let Ok(xtask) = std::env::current_exe() {
        let path = xtask.to_string_lossy();
        let path = path.strip_suffix(" (deleted)").unwrap_or(&path);
        env.push(("LLORCH_XTASK_BIN", PathBuf::from(path)));
    }
    let selection = match selection(cx, suite, backend, metadata) {
        Ok(selection) => selection,
        Err(note) => return Ok(failed_without_tests(suite, note)),
    };
    cx.out
        .status(cx.out.paint().bold(&format!("{} tests", suite.name())));
    let invocation = Invocation {
        selection,
        env,
        filter: args.filter.clone(),
    };
    let outcome = runner::run(cx, runner, &invocation)?;
    let mut counts = outcome.counts;
    let mut note = None;
    if !outcome.exit_ok && outcome.counts.failed == 0 {
        // Nothing failed yet the run did: a compile error or a crashed harness. It must not
        // read as a pass.
        counts.failed += 1;
        note = Some(format!(
            "cargo {} without a failing test (build error?)",
            outcome.exit_description
        ));
    }
    let status = if counts.failed > 0 {
        SuiteStatus::Failed
    } else {
        SuiteStatus::Passed
    };
    Ok(SuiteResult {
        suite,
        status,
        counts,
        duration_secs: 0.0,
        note,
        skipped_tests: outcome.skipped,
    })
}

/// The lint checks as a suite: each check counts as one passed or failed test.
fn lint_suite(cx: &Context) -> SuiteResult {
    let checks = crate::lint::run_checks(cx);
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|check| {
            check
                .fix
                .as_ref()
                .map(|fix| format!("{}: {fix}", check.name))
        })
        .collect();
    SuiteResult {
        suite: Suite::Lint,
        status: if failed.is_empty() {
            SuiteStatus::Passed
        } else {
            SuiteStatus::Failed
        },
        counts: Counts {
            passed: (checks.len() - failed.len()) as u64,
            failed: failed.len() as u64,
            skipped: 0,
        },
        duration_secs: 0.0,
        note: (!failed.is_empty()).then(|| failed.join("; ")),
        skipped_tests: Vec::new(),
    }
}

/// The cargo selection of a suite; every suite selects over the whole workspace, so that all
/// of them share one build (see [`integration_targets`]). An `Err` is a note for a suite that
/// cannot run at all.
fn selection(
    cx: &Context,
    suite: Suite,
    backend: Backend,
    metadata: &build::WorkspaceMetadata,
) -> Result<Vec<OsString>, String> {
    let os = |items: &[&str]| items.iter().map(OsString::from).collect::<Vec<_>>();
    match suite {
        Suite::Lint => Err("the lint suite runs no cargo tests".to_owned()),
        Suite::Unit => {
            let mut selection = os(&["--workspace", "--lib", "--bins"]);
            if backend != Backend::Cpu {
                // The worker's engine tests run on the backend under test, built beside its
                // binaries rather than over the cpu build.
                let target_dir =
                    build::backend_target_dir(cx, backend).map_err(|error| format!("{error:#}"))?;
                selection.extend(os(&[
                    "--features",
                    &format!("{}/{backend}", build::WORKER_PACKAGE),
                    "--target-dir",
                ]));
                selection.push(target_dir.into_os_string());
            }
            Ok(selection)
        }
        Suite::Integration => integration_selection(metadata),
        Suite::Smoke => smoke_selection(metadata),
    }
}

fn integration_selection(metadata: &build::WorkspaceMetadata) -> Result<Vec<OsString>, String> {
    let mut selection = vec![OsString::from("--workspace")];
    for target in integration_targets(metadata)? {
        selection.extend([OsString::from("--test"), OsString::from(target)]);
    }
    Ok(selection)
}

fn smoke_selection(metadata: &build::WorkspaceMetadata) -> Result<Vec<OsString>, String> {
    let has_smoke = metadata.packages.iter().any(|package| {
        package.name == E2E_PACKAGE
            && package
                .targets
                .iter()
                .any(|target| is_test_target(target) && target.name == SMOKE_TARGET)
    });
    if !has_smoke {
        return Err(format!(
            "package `{E2E_PACKAGE}` has no `{SMOKE_TARGET}` test target (tests/{SMOKE_TARGET}.rs)"
        ));
    }
    // `--workspace` like the other suites, so that it builds nothing they did not.
    Ok(["--workspace", "--test", SMOKE_TARGET]
        .map(OsString::from)
        .to_vec())
}

fn is_test_target(target: &build::MetadataTarget) -> bool {
    target.kind.iter().any(|kind| kind == "test")
}

/// Every workspace package's `tests/*` targets except the e2e smoke test, for one
/// `cargo test --workspace --test A --test B …` selection. One selection, not one per package:
/// cargo unifies dependency features over the packages it builds, so `-p orcd`, then
/// `-p llorch-worker`, … each compiled another variant of the shared dependencies (llama.cpp's
/// build script among them: 16 of CI's minutes). `--test NAME` picks that name in every
/// package, so a name must be unique across the workspace.
fn integration_targets(metadata: &build::WorkspaceMetadata) -> Result<Vec<String>, String> {
    let mut owners: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for package in &metadata.packages {
        for target in package
            .targets
            .iter()
            .filter(|target| is_test_target(target))
        {
            owners
                .entry(target.name.as_str())
                .or_default()
                .push(package.name.as_str());
        }
    }
    let mut targets = Vec::new();
    for (name, packages) in owners {
        if packages.len() > 1 {
            return Err(format!(
                "test target `{name}` is in packages {}: `--test {name}` cannot tell them apart; rename one of tests/{name}.rs",
                packages.join(" and ")
            ));
        }
        if !(packages[0] == E2E_PACKAGE && name == SMOKE_TARGET) {
            targets.push(name.to_owned());
        }
    }
    Ok(targets)
}

fn failed_without_tests(suite: Suite, note: String) -> SuiteResult {
    SuiteResult {
        suite,
        status: SuiteStatus::Failed,
        counts: Counts {
            failed: 1,
            ..Counts::default()
        },
        duration_secs: 0.0,
        note: Some(note),
        skipped_tests: Vec::new(),
    }
}

/// Why this machine cannot run `backend`, or `None` when it can.
fn missing_hardware(cx: &Context, backend: Backend) -> Option<String> {
    match backend {
        Backend::Cpu => None,
        Backend::Cuda => {
            let gpu = cx
                .cmd("nvidia-smi")
                .args(["--query-gpu=name", "--format=csv,noheader"])
                .read()
                .is_ok_and(|names| !names.is_empty());
            (!gpu || build::find_nvcc().is_none())
                .then(|| "no NVIDIA GPU/toolkit on this machine".to_owned())
        }
        Backend::Metal => (!cfg!(target_os = "macos")).then(|| {
            format!(
                "Metal needs macOS; this machine runs {}",
                std::env::consts::OS
            )
        }),
    }
}

fn print_table(report: &TestReport, cx: &Context) {
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{:<12} {:>7} {:>7} {:>8} {:>9}",
        "suite", "passed", "failed", "skipped", "time"
    )));
    for result in &report.suites {
        let status = match result.status {
            SuiteStatus::Passed => paint.green("passed"),
            SuiteStatus::Failed => paint.red("FAILED"),
        };
        let note = result
            .note
            .as_deref()
            .map(|note| format!("  {}", paint.dim(note)))
            .unwrap_or_default();
        cx.out.println(format!(
            "{:<12} {:>7} {:>7} {:>8} {:>8.1}s  {status}{note}",
            result.suite.name(),
            result.counts.passed,
            result.counts.failed,
            result.counts.skipped,
            result.duration_secs,
        ));
        for skipped in &result.skipped_tests {
            cx.out.println(format!(
                "  {} {}: {}",
                paint.yellow("skipped"),
                skipped.name,
                skipped.reason
            ));
        }
    }
}

/// The run's last line, which CI reads: `N passed, N failed, N skipped`.
fn closing_line(total: Counts) -> String {
    format!(
        "{} passed, {} failed, {} skipped",
        total.passed, total.failed, total.skipped
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_line_counts_passed_failed_and_skipped() {
        assert_eq!(
            closing_line(Counts {
                passed: 4,
                failed: 1,
                skipped: 0
            }),
            "4 passed, 1 failed, 0 skipped"
        );
        assert_eq!(
            closing_line(Counts {
                passed: 0,
                failed: 0,
                skipped: 3
            }),
            "0 passed, 0 failed, 3 skipped"
        );
    }

    fn metadata(packages: &[(&str, &[(&str, &str)])]) -> build::WorkspaceMetadata {
        build::WorkspaceMetadata {
            target_directory: "/t".into(),
            packages: packages
                .iter()
                .map(|(name, targets)| build::MetadataPackage {
                    name: (*name).into(),
                    manifest_path: format!("/w/{name}/Cargo.toml").into(),
                    targets: targets
                        .iter()
                        .map(|(name, kind)| build::MetadataTarget {
                            name: (*name).into(),
                            kind: vec![(*kind).into()],
                            src_path: format!("tests/{name}.rs").into(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn integration_takes_every_test_target_but_the_e2e_smoke_test() {
        let metadata = metadata(&[
            (
                E2E_PACKAGE,
                &[("llorch_tests", "lib"), ("smoke", "test"), ("jobs", "test")],
            ),
            ("xtask", &[("xtask", "bin"), ("fleet", "test")]),
            ("orcd", &[("orcd", "bin")]),
        ]);
        assert_eq!(
            integration_targets(&metadata).unwrap(),
            ["fleet".to_owned(), "jobs".to_owned()]
        );
        assert_eq!(
            integration_selection(&metadata).unwrap(),
            ["--workspace", "--test", "fleet", "--test", "jobs"]
        );
        assert_eq!(
            smoke_selection(&metadata).unwrap(),
            ["--workspace", "--test", "smoke"]
        );
    }

    #[test]
    fn a_test_name_in_two_packages_is_refused_naming_both() {
        let metadata = metadata(&[
            (E2E_PACKAGE, &[("smoke", "test"), ("jobs", "test")]),
            ("xtask", &[("jobs", "test")]),
        ]);
        let error = integration_targets(&metadata).unwrap_err();
        assert!(error.contains("`jobs`"), "{error}");
        assert!(error.contains("llorch-tests and xtask"), "{error}");
    }
}
