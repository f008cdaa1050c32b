//! `dev check`: validates what this project itself is configured with — the config file, the
//! model catalog, the built binaries — as opposed to `doctor`, which looks at the machine.

use serde::Serialize;

use crate::Context;

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    /// A problem that does not fail the check (e.g. binaries not built yet).
    warning: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            warning: false,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warning(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: true,
            warning: true,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn failed(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: false,
            warning: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

fn config_check(cx: &Context) -> Check {
    // Settings::resolve already rejected a malformed file before any command ran.
    let settings = &cx.settings;
    if settings.config_file_exists {
        Check::ok(
            "config",
            format!("{} is valid", settings.config_path.display()),
        )
    } else {
        Check::warning(
            "config",
            format!(
                "{} does not exist; defaults apply",
                settings.config_path.display()
            ),
            "cargo xtask config init",
        )
    }
}

/// Errors fail the check; warnings (e.g. unverified repos) are shown but pass.
fn catalog_checks(cx: &Context) -> Vec<Check> {
    let diagnostics = crate::models::check_catalog(cx);
    if diagnostics.is_empty() {
        let user = if cx.settings.catalog_dir.is_dir() {
            format!(" with {}", cx.settings.catalog_dir.display())
        } else {
            String::new()
        };
        return vec![Check::ok(
            "catalog",
            format!("{}{user} is valid", cx.settings.catalog_path.display()),
        )];
    }
    diagnostics
        .into_iter()
        .map(|diagnostic| {
            let place = match diagnostic.line {
                Some(line) => format!("{}:{line}", diagnostic.origin),
                None => diagnostic.origin.clone(),
            };
            let detail = match &diagnostic.model {
                Some(model) => format!("{place}: model `{model}`: {}", diagnostic.message),
                None => format!("{place}: {}", diagnostic.message),
            };
            let fix = "edit the catalog entry; `cargo xtask models catalog` lists every entry";
            match diagnostic.severity {
                llorch_catalog::Severity::Error => Check::failed("catalog", detail, fix),
                llorch_catalog::Severity::Warning => Check::warning("catalog", detail, fix),
            }
        })
        .collect()
}

fn binary_checks(cx: &Context) -> Vec<Check> {
    let bin_dir = cx.settings.repo_root.join("target/release");
    ["orcd", "llorch-worker"]
        .into_iter()
        .map(|binary| {
            let path = bin_dir.join(binary);
            if path.is_file() {
                Check::ok(format!("binary {binary}"), path.display().to_string())
            } else {
                Check::warning(
                    format!("binary {binary}"),
                    format!("{} not built yet", path.display()),
                    "cargo xtask build all",
                )
            }
        })
        .collect()
}

/// Every configured host profile is tried over SSH; an unreachable host fails the check, since
/// `--remote` and `pool --host` would fail the same way.
fn ssh_checks(cx: &Context) -> Vec<Check> {
    cx.settings
        .file
        .remote
        .hosts
        .keys()
        .map(|host| match crate::remote::check_host(cx, host) {
            Ok(check) if check.reachable => Check::ok(
                format!("ssh {host}"),
                format!(
                    "{} reachable ({} ms)",
                    check.address,
                    check.latency_ms.unwrap_or_default()
                ),
            ),
            Ok(check) => Check::failed(
                format!("ssh {host}"),
                format!(
                    "{} unreachable: {}",
                    check.address,
                    check.error.unwrap_or_default()
                ),
                format!("cargo xtask remote check {host}"),
            ),
            Err(error) => Check::failed(
                format!("ssh {host}"),
                format!("{error:#}"),
                "fix the host profile in the config file",
            ),
        })
        .collect()
}

pub fn run(cx: &Context) -> anyhow::Result<()> {
    let mut checks = vec![config_check(cx)];
    checks.extend(catalog_checks(cx));
    checks.extend(binary_checks(cx));
    checks.extend(ssh_checks(cx));
    let failed = checks.iter().filter(|check| !check.ok).count();
    if cx.out.json() {
        cx.out
            .print_json(&serde_json::json!({ "ok": failed == 0, "checks": checks }))?;
    } else {
        let paint = cx.out.paint();
        for check in &checks {
            let mark = if !check.ok {
                paint.red("FAIL")
            } else if check.warning {
                paint.yellow("warn")
            } else {
                paint.green("ok  ")
            };
            cx.out
                .println(format!("{mark} {:<22} {}", check.name, check.detail));
            if let (Some(fix), true) = (&check.fix, !check.ok || check.warning) {
                cx.out
                    .println(format!("     {:<22} fix: {}", "", paint.cyan(fix)));
            }
        }
    }
    if failed > 0 {
        return Err(crate::output::ExitCode(1).into());
    }
    Ok(())
}
