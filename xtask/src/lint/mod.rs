//! `cargo xtask lint`: the checks CI runs before the tests — rustfmt over the workspace, and
//! clippy over every package and target with warnings (the workspace's `[workspace.lints]`
//! among them) denied — that no crate's modules import each other in a circle
//! ([`import_circles`]), and that xtask runs child processes one way ([`process_use`]). `test
//! all` runs them as its first suite.

mod import_circles;
mod process_use;

use std::ffi::OsString;

use serde::Serialize;

use crate::{build, flags::LintArgs, output::ExitCode, process, Context};

/// One lint check and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct LintCheck {
    pub name: &'static str,
    pub passed: bool,
    /// What to do when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The checks: (name, cargo arguments, the fix when it fails). Clippy runs in the release
/// profile, whose build-script outputs (llama.cpp's CMake build) the binaries and tests share.
fn checks() -> [(&'static str, Vec<&'static str>, &'static str); 2] {
    [
        (
            "rustfmt",
            vec!["fmt", "--all", "--check"],
            "run `cargo fmt --all`, then commit the result",
        ),
        (
            "clippy",
            vec![
                "clippy",
                "--release",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            "fix the clippy findings shown above; `cargo clippy --fix` applies the mechanical ones",
        ),
    ]
}

/// Runs every check, its output streamed to stderr, and says how each ended. A check that
/// cannot start at all (rustfmt or clippy not installed) fails with the fix.
pub fn run_checks(cx: &Context) -> Vec<LintCheck> {
    let mut checks = vec![import_circles_check(cx), process_use_check(cx)];
    checks.extend(cargo_checks(cx));
    checks
}

/// The modules of every library and binary of the workspace form layers, no circle.
fn import_circles_check(cx: &Context) -> LintCheck {
    const NAME: &str = "import-circles";
    cx.out.status(cx.out.paint().bold(&format!("lint: {NAME}")));
    let circles = build::workspace_metadata(cx).and_then(|metadata| {
        let roots: Vec<_> = metadata
            .packages
            .iter()
            .flat_map(|package| {
                package
                    .targets
                    .iter()
                    .filter(|target| {
                        target
                            .kind
                            .iter()
                            .any(|kind| kind == "lib" || kind == "bin")
                    })
                    .map(|target| {
                        (
                            format!("{} ({})", package.name, target.name),
                            target.src_path.clone(),
                        )
                    })
            })
            .collect();
        import_circles::find_circles(&roots)
    });
    match circles {
        Ok(circles) if circles.is_empty() => LintCheck {
            name: NAME,
            passed: true,
            fix: None,
        },
        Ok(circles) => {
            for circle in &circles {
                eprintln!("import circle in {circle}");
            }
            LintCheck {
                name: NAME,
                passed: false,
                fix: Some(format!(
                    "{} import circle(s) above: move what both sides need into a module below them (the README's architecture section names the layers)",
                    circles.len()
                )),
            }
        }
        Err(error) => LintCheck {
            name: NAME,
            passed: false,
            fix: Some(format!("{error:#}")),
        },
    }
}

/// xtask names duct, and no other process API, only in `xtask/src/process.rs`.
fn process_use_check(cx: &Context) -> LintCheck {
    const NAME: &str = "one-process-api";
    cx.out.status(cx.out.paint().bold(&format!("lint: {NAME}")));
    let src_dir = cx.settings.repo_root.join("xtask").join("src");
    match process_use::find_stray_uses(&src_dir, "xtask/src") {
        Ok(findings) if findings.is_empty() => LintCheck {
            name: NAME,
            passed: true,
            fix: None,
        },
        Ok(findings) => {
            for finding in &findings {
                eprintln!("{finding}");
            }
            LintCheck {
                name: NAME,
                passed: false,
                fix: Some(format!(
                    "{} use(s) of a process API above outside xtask/src/process.rs: build the command with `process::cmd` (or `cx.cmd` for the repository root) and run it with its helpers",
                    findings.len()
                )),
            }
        }
        Err(error) => LintCheck {
            name: NAME,
            passed: false,
            fix: Some(format!("{error:#}")),
        },
    }
}

fn cargo_checks(cx: &Context) -> Vec<LintCheck> {
    checks()
        .into_iter()
        .map(|(name, args, fix)| {
            cx.out.status(cx.out.paint().bold(&format!("lint: {name}")));
            let args: Vec<OsString> = args.into_iter().map(OsString::from).collect();
            let result =
                process::stream_lines(build::cargo(cx, &args).stderr_to_stdout(), |line| {
                    eprintln!("{line}")
                });
            match result {
                Ok(status) if status.success() => LintCheck {
                    name,
                    passed: true,
                    fix: None,
                },
                Ok(_) => LintCheck {
                    name,
                    passed: false,
                    fix: Some(fix.to_owned()),
                },
                Err(error) => LintCheck {
                    name,
                    passed: false,
                    fix: Some(format!(
                        "{error:#}; install it with `rustup component add rustfmt clippy`"
                    )),
                },
            }
        })
        .collect()
}

pub fn run(_args: LintArgs, cx: &Context) -> anyhow::Result<()> {
    let checks = run_checks(cx);
    if cx.out.json() {
        cx.out
            .print_json(&serde_json::json!({ "checks": checks }))?;
    } else {
        let paint = cx.out.paint();
        for check in &checks {
            match &check.fix {
                None => cx
                    .out
                    .println(format!("{:<8} {}", check.name, paint.green("ok"))),
                Some(fix) => cx.out.println(format!(
                    "{:<8} {}\nhint: {fix}",
                    check.name,
                    paint.red("FAILED")
                )),
            }
        }
    }
    if checks.iter().any(|check| !check.passed) {
        return Err(ExitCode(1).into());
    }
    Ok(())
}
