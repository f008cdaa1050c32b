//! `dev setup`: installs what `dev doctor` finds missing, initialises submodules, fetches the
//! default model and writes a default config. Every step checks first, so a second run on a
//! ready machine only looks and returns.

use std::path::PathBuf;

use anyhow::{bail, Context as _};

use super::doctor::{self, Finding, Need, PackageManager, Status};
use crate::{process, Context};

/// What a setup prepares the machine for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupScope {
    /// `cargo xtask up`: the build tools and the default model.
    Run,
    /// `dev setup` and `test all`: also what the test suites need — sshd, the `openai` and
    /// `anthropic` Python clients and the chat model they drive the OpenAI and Anthropic APIs
    /// with.
    Tests,
}

/// The catalog's chat model: the end-to-end OpenAI tests need a model with a chat template,
/// which the default (base) model lacks.
pub const CHAT_TEST_MODEL: &str = "qwen2.5-coder-0.5b";

impl SetupScope {
    /// Whether a missing tool matters for this scope: `up` is never stopped by a tool that
    /// only the test suites need.
    fn covers(self, finding: &Finding) -> bool {
        self == SetupScope::Tests || finding.need != Need::Tests
    }
}

/// The findings that matter for `scope`, before installing and in the re-check after it.
fn findings_in_scope(findings: Vec<Finding>, scope: SetupScope) -> Vec<Finding> {
    findings
        .into_iter()
        .filter(|finding| scope.covers(finding))
        .collect()
}

/// What is still missing after an install, among what `scope` needs.
fn still_missing(findings: Vec<Finding>, scope: SetupScope) -> Vec<Finding> {
    findings_in_scope(findings, scope)
        .into_iter()
        .filter(Finding::is_problem)
        .collect()
}

/// Brings this machine to the state the README's two commands need.
pub fn run_setup(cx: &Context, assume_yes: bool, scope: SetupScope) -> anyhow::Result<()> {
    let findings = findings_in_scope(doctor::diagnose(&cx.settings.repo_root), scope);
    let manager = PackageManager::detect();
    let packages = packages_to_install(&findings);
    if !packages.is_empty() {
        install_packages(cx, manager, &packages, assume_yes)?;
        let missing_after = still_missing(doctor::diagnose(&cx.settings.repo_root), scope);
        if !missing_after.is_empty() {
            doctor::print_report(cx, &missing_after);
            bail!("installing {} did not provide everything `dev doctor` needs\nhint: install the tools listed above by hand, then run `cargo xtask dev doctor`", packages.join(" "));
        }
    }
    let unsolvable: Vec<&Finding> = findings
        .iter()
        .filter(|finding| {
            finding.is_problem() && finding.packages.is_empty() && finding.name != "git submodules"
        })
        .collect();
    if let Some(finding) = unsolvable.first() {
        bail!(
            "`{}` is missing and `dev setup` cannot install it: {}\nhint: {}",
            finding.name,
            finding.detail,
            finding
                .fix
                .as_deref()
                .unwrap_or("see the README's requirements")
        );
    }
    init_submodules(cx)?;
    let default_model = crate::models::default_model_id(cx)?;
    crate::models::ensure_downloaded(cx, &default_model)
        .with_context(|| format!("fetching the default model `{default_model}`"))?;
    if scope == SetupScope::Tests {
        ensure_python_packages(cx)?;
        crate::models::ensure_downloaded(cx, CHAT_TEST_MODEL).with_context(|| {
            format!("fetching the chat model `{CHAT_TEST_MODEL}` for the tests")
        })?;
    }
    if crate::config::ensure_default_config(&cx.settings.config_path)? {
        cx.out.status(format!(
            "wrote default config {}",
            cx.settings.config_path.display()
        ));
    }
    cx.out.status(cx.out.paint().green("setup complete"));
    Ok(())
}

/// The tools `cargo xtask coverage` runs with: cargo-llvm-cov, and the `llvm-cov` and
/// `llvm-profdata` of the LLVM release rustc is built on (Debian's `llvm-22` for rustc's LLVM
/// 22: profiles written by one LLVM version are not read by another).
pub struct CoverageTools {
    pub llvm_cov: PathBuf,
    pub llvm_profdata: PathBuf,
}

/// The LLVM package whose tools match this toolchain's profile format.
pub const COVERAGE_LLVM_PACKAGE: &str = "llvm-22";

/// Finds the coverage tools, installing what is missing: the LLVM package through the system's
/// package manager (asking first, as `dev setup` does) and cargo-llvm-cov with `cargo install`.
pub fn ensure_coverage_tools(cx: &Context, assume_yes: bool) -> anyhow::Result<CoverageTools> {
    let llvm_bin = PathBuf::from(format!("/usr/lib/{COVERAGE_LLVM_PACKAGE}/bin"));
    let from_env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let tools = || CoverageTools {
        llvm_cov: from_env("LLVM_COV").unwrap_or_else(|| llvm_bin.join("llvm-cov")),
        llvm_profdata: from_env("LLVM_PROFDATA").unwrap_or_else(|| llvm_bin.join("llvm-profdata")),
    };
    if !tools().llvm_cov.is_file() || !tools().llvm_profdata.is_file() {
        install_packages(
            cx,
            PackageManager::detect(),
            &[COVERAGE_LLVM_PACKAGE],
            assume_yes,
        )?;
    }
    let found = tools();
    for tool in [&found.llvm_cov, &found.llvm_profdata] {
        if !tool.is_file() {
            bail!(
                "{} is missing after installing {COVERAGE_LLVM_PACKAGE}\nhint: point LLVM_COV and LLVM_PROFDATA at the llvm-cov and llvm-profdata of LLVM {} (`rustc -vV` names it)",
                tool.display(),
                COVERAGE_LLVM_PACKAGE.trim_start_matches("llvm-")
            );
        }
    }
    if which::which("cargo-llvm-cov").is_err() {
        if !may_install(cx, &["cargo-llvm-cov (cargo install)"], assume_yes)? {
            bail!("installation declined\nhint: cargo install cargo-llvm-cov --locked");
        }
        run_logged(
            cx,
            "cargo install cargo-llvm-cov",
            &[],
            &["cargo", "install", "cargo-llvm-cov", "--locked"],
            &[],
        )?;
    }
    Ok(found)
}

/// System packages for every missing tool the project or its tests need, without repeats.
fn packages_to_install(findings: &[Finding]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = findings
        .iter()
        .filter(|finding| finding.is_problem())
        .flat_map(|finding| finding.packages.iter().copied())
        .collect();
    packages.sort_unstable();
    packages.dedup();
    packages
}

/// CI runs unattended; a person at a terminal is asked; anything else must say `--yes`.
fn may_install(cx: &Context, packages: &[&str], assume_yes: bool) -> anyhow::Result<bool> {
    if assume_yes || std::env::var_os("CI").is_some_and(|value| !value.is_empty()) {
        return Ok(true);
    }
    if !cx.out.interactive() {
        bail!(
            "installing system packages ({}) needs confirmation, but stdin is not a terminal\nhint: run `cargo xtask dev setup --yes`",
            packages.join(" ")
        );
    }
    cx.out
        .confirm(&format!("install {}?", packages.join(" ")), false)
}

fn install_packages(
    cx: &Context,
    manager: PackageManager,
    packages: &[&'static str],
    assume_yes: bool,
) -> anyhow::Result<()> {
    cx.out
        .status(format!("missing system packages: {}", packages.join(" ")));
    if manager == PackageManager::Unknown {
        bail!(
            "no supported package manager (apt-get or brew) found to install {}\nhint: install them with your system's package manager, then run `cargo xtask dev doctor`",
            packages.join(" ")
        );
    }
    if !may_install(cx, packages, assume_yes)? {
        bail!(
            "installation declined\nhint: {}",
            manager.install_command(packages)
        );
    }
    match manager {
        PackageManager::Apt => {
            let sudo: &[&str] = if doctor::is_root() {
                &[]
            } else {
                &["sudo", "-n"]
            };
            let env = [("DEBIAN_FRONTEND", "noninteractive")];
            run_logged(
                cx,
                "apt-get update",
                sudo,
                &["apt-get", "update", "-q"],
                &env,
            )?;
            let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
            install.extend_from_slice(packages);
            run_logged(
                cx,
                &format!("installing {}", packages.join(" ")),
                sudo,
                &install,
                &env,
            )
        }
        PackageManager::Brew => {
            let mut install = vec!["brew", "install"];
            install.extend_from_slice(packages);
            run_logged(
                cx,
                &format!("installing {}", packages.join(" ")),
                &[],
                &install,
                &[],
            )
        }
        PackageManager::Unknown => unreachable!("handled above"),
    }
}

/// Runs a package-manager command behind a spinner; its output is shown only with `-v` or
/// when it fails, where the tail says why.
fn run_logged(
    cx: &Context,
    what: &str,
    prefix: &[&str],
    argv: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let full: Vec<&str> = prefix.iter().chain(argv).copied().collect();
    let mut command = process::cmd(full[0]).args(&full[1..]);
    for (key, value) in env {
        command = command.env(key, value);
    }
    cx.out.debug(format!("$ {command}"));
    let spinner = cx.out.spinner(what);
    // stdin stays this terminal's: sudo may ask for a password.
    let output = command
        .expression()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .map_err(|error| command.start_error(error))
        .with_context(|| format!("{what}: could not start `{}`", full[0]))?;
    spinner.finish_and_clear();
    let text = String::from_utf8_lossy(&output.stdout);
    if cx.out.verbose() {
        eprint!("{text}");
    }
    if !output.status.success() {
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let hint = if prefix.first() == Some(&"sudo") {
            "run the command yourself with sudo, or run `cargo xtask dev setup` as a user that may use sudo without a password"
        } else {
            "read the output above, fix the package manager's problem, then run `cargo xtask dev setup` again"
        };
        bail!(
            "{what} failed (`{}`, {}):\n{}\nhint: {hint}",
            full.join(" "),
            output.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// Python packages the test suite drives orcd with: (import name, pip requirement).
const PYTHON_TEST_PACKAGES: &[(&str, &str)] = &[
    ("openai", "openai"),
    // Drives `/v1/messages` as Claude Code's SDK does (`tests/python/anthropic_messages.py`).
    ("anthropic", "anthropic"),
    // Validates structured-output answers and tool-call arguments (`tests/python/openai_*.py`).
    ("jsonschema", "jsonschema"),
];

/// Installs the Python packages the tests need. A distribution's externally managed Python
/// (PEP 668) refuses a plain install; then the packages go to the user's site directory.
fn ensure_python_packages(cx: &Context) -> anyhow::Result<()> {
    let missing: Vec<&str> = PYTHON_TEST_PACKAGES
        .iter()
        .filter(|(import, _)| {
            !process::cmd("python3")
                .args(["-c", &format!("import {import}")])
                .succeeds()
        })
        .map(|(_, requirement)| *requirement)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let what = format!("installing Python packages {}", missing.join(" "));
    let mut plain = vec![
        "python3",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ];
    plain.extend(&missing);
    if run_logged(cx, &what, &[], &plain, &[]).is_ok() {
        return Ok(());
    }
    let mut user = plain.clone();
    user.insert(4, "--user");
    run_logged(cx, &what, &[], &user, &[("PIP_BREAK_SYSTEM_PACKAGES", "1")])
}

fn init_submodules(cx: &Context) -> anyhow::Result<()> {
    let findings = doctor::diagnose(&cx.settings.repo_root);
    let needs_init = findings
        .iter()
        .any(|finding| finding.name == "git submodules" && finding.status == Status::Missing);
    if needs_init {
        cx.cmd("git")
            .args(["submodule", "update", "--init", "--recursive"])
            .run()
            .context("initialising git submodules\nhint: check your network access to the submodules' remotes")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(name: &'static str, need: Need, packages: Vec<&'static str>) -> Finding {
        Finding {
            name,
            need,
            status: Status::Missing,
            detail: String::new(),
            fix: None,
            packages,
        }
    }

    #[test]
    fn installs_required_and_test_packages_once_and_skips_optional_ones() {
        let findings = vec![
            missing("cmake", Need::Required, vec!["cmake"]),
            missing("c/c++ compiler", Need::Required, vec!["build-essential"]),
            missing("sshd", Need::Tests, vec!["openssh-server"]),
            missing("cmake again", Need::Required, vec!["cmake"]),
            missing("hf cli", Need::Optional, vec!["never-installed"]),
        ];
        assert_eq!(
            packages_to_install(&findings),
            vec!["build-essential", "cmake", "openssh-server"]
        );
    }

    fn present(name: &'static str, need: Need) -> Finding {
        Finding {
            status: Status::Ok,
            ..missing(name, need, vec![])
        }
    }

    /// The machine after `up` installed cmake: only sshd, which only the tests need, is absent.
    fn after_installing_cmake() -> Vec<Finding> {
        vec![
            present("cmake", Need::Required),
            present("libclang", Need::Required),
            missing("sshd", Need::Tests, vec!["openssh-server"]),
            missing("nvcc", Need::Optional, vec![]),
        ]
    }

    #[test]
    fn a_missing_tests_only_tool_neither_installs_nor_stops_up() {
        let before = vec![
            missing("cmake", Need::Required, vec!["cmake"]),
            missing("sshd", Need::Tests, vec!["openssh-server"]),
        ];
        assert_eq!(
            packages_to_install(&findings_in_scope(before, SetupScope::Run)),
            vec!["cmake"],
            "`up` installs only what running needs"
        );
        let left: Vec<&str> = still_missing(after_installing_cmake(), SetupScope::Run)
            .iter()
            .map(|finding| finding.name)
            .collect();
        assert!(left.is_empty(), "`up` stops on {left:?}");
    }

    #[test]
    fn a_missing_tests_only_tool_stops_the_test_setup() {
        let left: Vec<&str> = still_missing(after_installing_cmake(), SetupScope::Tests)
            .iter()
            .map(|finding| finding.name)
            .collect();
        assert_eq!(left, vec!["sshd"]);
    }
}
