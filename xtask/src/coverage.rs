//! `cargo xtask coverage`: line coverage of the unit suite per crate and in total, measured by
//! cargo-llvm-cov (rustc's `-C instrument-coverage`, read back with llvm-cov). The tools are
//! installed the way `dev setup` installs everything else; the figures come from llvm-cov's
//! JSON summary, grouped by the workspace package each file belongs to.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::{build, flags::CoverageArgs, process, Context};

pub fn run(args: CoverageArgs, cx: &Context) -> anyhow::Result<()> {
    let tools = crate::dev::ensure_coverage_tools(cx, args.yes)?;
    let metadata = build::workspace_metadata(cx)?;
    let summary_path = cx
        .settings
        .repo_root
        .join("target")
        .join("coverage")
        .join("summary.json");
    std::fs::create_dir_all(summary_path.parent().expect("a file has a parent"))
        .with_context(|| format!("creating {}", summary_path.display()))?;
    let selection = package_selection(&args.packages, &metadata)?;
    measure(cx, &tools, &selection, &summary_path)?;
    let export: LlvmCovExport = serde_json::from_slice(
        &std::fs::read(&summary_path)
            .with_context(|| format!("reading {}", summary_path.display()))?,
    )
    .with_context(|| format!("parsing llvm-cov's summary {}", summary_path.display()))?;
    let packages: Vec<(String, PathBuf)> = metadata
        .packages
        .iter()
        .filter_map(|package| {
            let dir = package.manifest_path.parent()?.to_path_buf();
            Some((package.name.clone(), dir))
        })
        .collect();
    let mut report = CoverageReport::from_export(&export, &packages, &cx.settings.repo_root)?;
    report.command = format!("cargo llvm-cov {} {SUITE_ARGS}", selection.join(" "));
    if cx.out.json() {
        cx.out.print_json(&report)?;
    } else {
        cx.out.println(report.table(args.files));
    }
    Ok(())
}

/// What `cargo llvm-cov` runs besides the package selection: the unit suite, optimised.
const SUITE_ARGS: &str = "--lib --bins --release";

/// `--workspace`, or `-p NAME` for each package asked for; a name that is not a workspace
/// package is an error listing those that are.
fn package_selection(
    packages: &[String],
    metadata: &build::WorkspaceMetadata,
) -> anyhow::Result<Vec<String>> {
    if packages.is_empty() {
        return Ok(vec!["--workspace".to_owned()]);
    }
    let known: Vec<&str> = metadata
        .packages
        .iter()
        .map(|package| package.name.as_str())
        .collect();
    let mut selection = Vec::new();
    for name in packages {
        if !known.contains(&name.as_str()) {
            bail!(
                "`{name}` is not a package of this workspace\nhint: its packages are {}",
                known.join(", ")
            );
        }
        selection.extend(["-p".to_owned(), name.clone()]);
    }
    Ok(selection)
}

/// Runs the unit suite of `selection` instrumented and writes llvm-cov's JSON summary to
/// `summary_path`.
fn measure(
    cx: &Context,
    tools: &crate::dev::CoverageTools,
    selection: &[String],
    summary_path: &Path,
) -> anyhow::Result<()> {
    let args: Vec<OsString> = std::iter::once("llvm-cov")
        .chain(selection.iter().map(String::as_str))
        .chain(SUITE_ARGS.split(' '))
        .chain(["--json", "--summary-only", "--output-path"])
        .map(OsString::from)
        .chain([summary_path.as_os_str().to_owned()])
        .collect();
    cx.out.status(
        "measuring line coverage of the unit suite (an instrumented build of the workspace)",
    );
    let status = process::stream_lines(
        build::cargo(cx, &args)
            .env("LLVM_COV", &tools.llvm_cov)
            .env("LLVM_PROFDATA", &tools.llvm_profdata)
            .stderr_to_stdout(),
        |line| eprintln!("{line}"),
    )
    .context("running cargo llvm-cov")?;
    if !status.success() {
        bail!("cargo llvm-cov failed ({status}): its output is above\nhint: a failing unit test fails the measurement too; `cargo xtask test unit` shows it");
    }
    Ok(())
}

/// The part of `llvm-cov export --summary-only` this command reads.
#[derive(Debug, Deserialize)]
struct LlvmCovExport {
    data: Vec<ExportData>,
}

#[derive(Debug, Deserialize)]
struct ExportData {
    files: Vec<ExportFile>,
}

#[derive(Debug, Deserialize)]
struct ExportFile {
    filename: PathBuf,
    summary: ExportSummary,
}

#[derive(Debug, Deserialize)]
struct ExportSummary {
    lines: LineCounts,
}

/// Lines that carry code (`count`) and those of them that ran (`covered`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
struct LineCounts {
    count: u64,
    covered: u64,
}

impl LineCounts {
    fn add(&mut self, other: LineCounts) {
        self.count += other.count;
        self.covered += other.covered;
    }

    fn percent(self) -> f64 {
        if self.count == 0 {
            100.0
        } else {
            self.covered as f64 * 100.0 / self.count as f64
        }
    }
}

#[derive(Debug, Serialize)]
struct CrateCoverage {
    name: String,
    #[serde(flatten)]
    lines: LineCounts,
    percent: f64,
}

#[derive(Debug, Serialize)]
struct FileCoverage {
    /// Relative to the repository root.
    path: PathBuf,
    #[serde(flatten)]
    lines: LineCounts,
    percent: f64,
}

#[derive(Debug, Serialize)]
struct CoverageReport {
    suite: &'static str,
    /// The cargo-llvm-cov invocation that measured it.
    command: String,
    crates: Vec<CrateCoverage>,
    files: Vec<FileCoverage>,
    #[serde(flatten)]
    total: LineCounts,
    percent: f64,
}

impl CoverageReport {
    /// Groups the export's files by the package whose directory holds them (the deepest one,
    /// so `tests/` is not mistaken for the root); files outside the workspace (dependencies)
    /// are left out.
    fn from_export(
        export: &LlvmCovExport,
        packages: &[(String, PathBuf)],
        repo_root: &Path,
    ) -> anyhow::Result<Self> {
        let data = export
            .data
            .first()
            .context("llvm-cov's summary holds no data")?;
        let mut crates: Vec<CrateCoverage> = Vec::new();
        let mut files = Vec::new();
        let mut total = LineCounts::default();
        for file in &data.files {
            let Some((name, _)) = packages
                .iter()
                .filter(|(_, dir)| file.filename.starts_with(dir))
                .max_by_key(|(_, dir)| dir.components().count())
            else {
                continue;
            };
            let lines = file.summary.lines;
            total.add(lines);
            match crates.iter_mut().find(|entry| &entry.name == name) {
                Some(entry) => entry.lines.add(lines),
                None => crates.push(CrateCoverage {
                    name: name.clone(),
                    lines,
                    percent: 0.0,
                }),
            }
            files.push(FileCoverage {
                path: file
                    .filename
                    .strip_prefix(repo_root)
                    .unwrap_or(&file.filename)
                    .to_path_buf(),
                lines,
                percent: lines.percent(),
            });
        }
        for entry in &mut crates {
            entry.percent = entry.lines.percent();
        }
        crates.sort_by(|a, b| a.name.cmp(&b.name));
        files.sort_by(|a, b| a.percent.total_cmp(&b.percent).then(a.path.cmp(&b.path)));
        Ok(CoverageReport {
            suite: "unit",
            command: format!("cargo llvm-cov --workspace {SUITE_ARGS}"),
            crates,
            files,
            total,
            percent: total.percent(),
        })
    }

    fn table(&self, with_files: bool) -> String {
        let mut text = String::from("crate                     lines  covered  line coverage\n");
        let row = |name: &str, lines: LineCounts| {
            format!(
                "{name:<22} {:>8} {:>8}  {:>6.1} %\n",
                lines.count,
                lines.covered,
                lines.percent()
            )
        };
        for entry in &self.crates {
            text.push_str(&row(&entry.name, entry.lines));
        }
        text.push_str(&row("total", self.total));
        if with_files {
            text.push_str("\nfile                                               lines  covered  line coverage\n");
            for file in &self.files {
                text.push_str(&format!(
                    "{:<50} {:>6} {:>8}  {:>6.1} %\n",
                    file.path.display(),
                    file.lines.count,
                    file.lines.covered,
                    file.percent
                ));
            }
        }
        text.push_str(&format!("suite: {} (`{}`)", self.suite, self.command));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(files: &[(&str, u64, u64)]) -> LlvmCovExport {
        let files = files
            .iter()
            .map(|(name, count, covered)| {
                serde_json::json!({"filename": name, "summary": {"lines": {"count": count, "covered": covered, "percent": 0.0}}})
            })
            .collect::<Vec<_>>();
        serde_json::from_value(serde_json::json!({"data": [{"files": files, "totals": {}}], "type": "llvm.coverage.json.export"}))
            .unwrap()
    }

    #[test]
    fn files_are_summed_per_package_by_their_deepest_directory() {
        let packages = vec![
            ("llorch-tests".to_owned(), PathBuf::from("/w/tests")),
            ("xtask".to_owned(), PathBuf::from("/w/xtask")),
            ("root".to_owned(), PathBuf::from("/w")),
        ];
        let report = CoverageReport::from_export(
            &export(&[
                ("/w/xtask/src/main.rs", 10, 5),
                ("/w/xtask/src/config.rs", 30, 30),
                ("/w/tests/src/lib.rs", 4, 1),
                ("/root/.cargo/registry/src/serde/lib.rs", 1000, 3),
            ]),
            &packages,
            Path::new("/w"),
        )
        .unwrap();
        let crates: Vec<_> = report
            .crates
            .iter()
            .map(|entry| (entry.name.as_str(), entry.lines.count, entry.lines.covered))
            .collect();
        assert_eq!(crates, [("llorch-tests", 4, 1), ("xtask", 40, 35)]);
        assert_eq!(
            report.total,
            LineCounts {
                count: 44,
                covered: 36
            }
        );
        assert!((report.percent - 36.0 * 100.0 / 44.0).abs() < 1e-9);
        // Lowest first, paths relative to the repository.
        assert_eq!(report.files[0].path, PathBuf::from("tests/src/lib.rs"));
        assert!(report.table(true).contains("total"));
    }

    #[test]
    fn packages_are_selected_by_name_and_an_unknown_one_lists_the_known() {
        let package = |name: &str| build::MetadataPackage {
            name: name.to_owned(),
            manifest_path: PathBuf::from(format!("/w/{name}/Cargo.toml")),
            targets: Vec::new(),
        };
        let metadata = build::WorkspaceMetadata {
            target_directory: PathBuf::from("/w/target"),
            packages: vec![package("xtask"), package("llorch-catalog")],
        };
        assert_eq!(package_selection(&[], &metadata).unwrap(), ["--workspace"]);
        assert_eq!(
            package_selection(&["llorch-catalog".into(), "xtask".into()], &metadata).unwrap(),
            ["-p", "llorch-catalog", "-p", "xtask"]
        );
        let error = package_selection(&["catalog".into()], &metadata)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "`catalog` is not a package of this workspace\nhint: its packages are xtask, llorch-catalog"
        );
    }

    #[test]
    fn an_empty_summary_is_an_error_not_a_zero() {
        let empty = LlvmCovExport { data: Vec::new() };
        assert!(CoverageReport::from_export(&empty, &[], Path::new("/w")).is_err());
    }
}
