//! `models verify`: re-reads every file of a downloaded model and compares its size and SHA-256
//! with the catalog's pin (when there is one) and the manifest's record. Prints a per-file
//! report and exits with status 1 on any failure.

use std::path::PathBuf;

use llorch_catalog::{model_dir, Catalog, Manifest, ModelEntry};
use serde::Serialize;

use super::{check_local_id, checksum, load_catalog, local};
use crate::{
    output::{human_bytes, ExitCode},
    Context,
};

#[derive(Debug, Serialize)]
struct FileReport {
    name: String,
    path: PathBuf,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_sha256: Option<String>,
    /// `catalog` (pinned) or `manifest` (recorded at download).
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_from: Option<&'static str>,
    problems: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ModelReport {
    id: String,
    ok: bool,
    /// Problems of the model as a whole (not downloaded, manifest unreadable).
    problems: Vec<String>,
    files: Vec<FileReport>,
}

pub fn run(cx: &Context, id: Option<&str>) -> anyhow::Result<()> {
    let catalog = load_catalog(cx)?;
    let base = &cx.settings.model_base_dir;
    let ids: Vec<String> = match id {
        Some(id) => {
            check_local_id(id)?;
            vec![id.to_owned()]
        }
        None => local::scan(base)
            .into_iter()
            .filter(|model| model.status != local::Status::Incomplete)
            .map(|model| model.id)
            .collect(),
    };
    if ids.is_empty() {
        if cx.out.json() {
            return cx
                .out
                .print_json(&serde_json::json!({ "ok": true, "models": [] }));
        }
        cx.out
            .status(format!("no downloaded models in {}", base.display()));
        return Ok(());
    }
    let reports: Vec<ModelReport> = ids
        .iter()
        .map(|id| verify_model(cx, &catalog, id))
        .collect();
    let ok = reports.iter().all(|report| report.ok);
    if cx.out.json() {
        cx.out
            .print_json(&serde_json::json!({ "ok": ok, "models": reports }))?;
    } else {
        print_reports(cx, &reports);
    }
    if ok {
        Ok(())
    } else {
        Err(ExitCode(1).into())
    }
}

/// Re-reads model `id` and compares every file with its pinned or recorded SHA-256 and size.
pub fn is_verified(cx: &Context, id: &str) -> anyhow::Result<bool> {
    let catalog = load_catalog(cx)?;
    Ok(verify_model(cx, &catalog, id).ok)
}

fn verify_model(cx: &Context, catalog: &Catalog, id: &str) -> ModelReport {
    let base = &cx.settings.model_base_dir;
    let dir = model_dir(base, id);
    let entry = catalog.get(id);
    let mut report = ModelReport {
        id: id.to_owned(),
        ok: false,
        problems: Vec::new(),
        files: Vec::new(),
    };
    if !dir.is_dir() {
        report.problems.push(match entry {
            Some(_) => format!(
                "not downloaded (no {}); run `cargo xtask models download {id}`",
                dir.display()
            ),
            None => format!("`{id}` is neither in the catalog nor downloaded"),
        });
        return report;
    }
    let manifest = match Manifest::read(&dir) {
        Ok(manifest) => manifest,
        Err(error) => {
            report.problems.push(error.to_string());
            None
        }
    };
    if manifest.is_none() && report.problems.is_empty() {
        report.problems.push(format!(
            "no manifest: the download did not finish; run `cargo xtask models download {id}`"
        ));
    }
    for (name, recorded_size, recorded_sha) in expected_files(entry, manifest.as_ref()) {
        report.files.push(verify_file(
            cx,
            &dir,
            entry,
            &name,
            recorded_size,
            recorded_sha,
        ));
    }
    if report.files.is_empty() && report.problems.is_empty() {
        report
            .problems
            .push("the manifest lists no files".to_owned());
    }
    report.ok = report.problems.is_empty() && report.files.iter().all(|file| file.ok);
    report
}

/// The files to check with what the manifest recorded about each: the manifest's list, or the
/// catalog's model file when there is no manifest.
fn expected_files(
    entry: Option<&ModelEntry>,
    manifest: Option<&Manifest>,
) -> Vec<(String, Option<u64>, Option<String>)> {
    match (manifest, entry) {
        (Some(manifest), _) => manifest
            .files
            .iter()
            .map(|file| {
                (
                    file.name.clone(),
                    Some(file.size),
                    Some(file.sha256.clone()),
                )
            })
            .collect(),
        (None, Some(entry)) => vec![(entry.file.clone(), None, None)],
        (None, None) => Vec::new(),
    }
}

fn verify_file(
    cx: &Context,
    dir: &std::path::Path,
    entry: Option<&ModelEntry>,
    name: &str,
    recorded_size: Option<u64>,
    recorded_sha: Option<String>,
) -> FileReport {
    let path = dir.join(name);
    let is_model_file = entry.is_some_and(|entry| entry.file == name);
    let pinned = entry
        .filter(|_| is_model_file)
        .and_then(|entry| entry.sha256.clone());
    let catalog_size = entry
        .filter(|entry| is_model_file && !entry.requires_conversion)
        .map(|entry| entry.size);
    let (expected_sha256, expected_from) = match (pinned, recorded_sha) {
        (Some(pinned), _) => (Some(pinned), Some("catalog")),
        (None, Some(recorded)) => (Some(recorded), Some("manifest")),
        (None, None) => (None, None),
    };
    let mut report = FileReport {
        name: name.to_owned(),
        path: path.clone(),
        ok: false,
        size: None,
        expected_size: catalog_size.or(recorded_size),
        sha256: None,
        expected_sha256,
        expected_from,
        problems: Vec::new(),
    };
    let size = match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_file() => metadata.len(),
        Ok(_) => {
            report.problems.push("not a regular file".to_owned());
            return report;
        }
        Err(error) => {
            report.problems.push(format!("missing: {error}"));
            return report;
        }
    };
    report.size = Some(size);
    if size == 0 {
        report.problems.push("empty file".to_owned());
    }
    for (expected, from) in [(catalog_size, "catalog"), (recorded_size, "manifest")] {
        if let Some(expected) = expected.filter(|expected| *expected != size) {
            report
                .problems
                .push(format!("size {size} bytes, but the {from} says {expected}"));
        }
    }
    let bar = cx.out.progress_bar(size, format!("hashing {name}"));
    match checksum::sha256_file(&path, &bar) {
        Ok((digest, _)) => {
            match &report.expected_sha256 {
                Some(expected) if *expected != digest => report.problems.push(format!(
                    "sha256 mismatch: expected {expected} ({}), got {digest}",
                    report.expected_from.unwrap_or_default()
                )),
                Some(_) => {}
                None => report.problems.push(
                    "no pinned or recorded sha256 to compare with; run `models download --force` to record one".to_owned(),
                ),
            }
            report.sha256 = Some(digest);
        }
        Err(error) => report.problems.push(format!("reading failed: {error}")),
    }
    bar.finish_and_clear();
    report.ok = report.problems.is_empty();
    report
}

fn print_reports(cx: &Context, reports: &[ModelReport]) {
    let paint = cx.out.paint();
    for report in reports {
        let verdict = if report.ok {
            paint.green("ok")
        } else {
            paint.red("FAILED")
        };
        cx.out.println(format!("{}: {verdict}", report.id));
        for problem in &report.problems {
            cx.out.println(format!("  {}", paint.red(problem)));
        }
        for file in &report.files {
            let mark = if file.ok {
                paint.green("ok  ")
            } else {
                paint.red("FAIL")
            };
            let size = file.size.map(human_bytes).unwrap_or_else(|| "-".to_owned());
            let digest = file.sha256.as_deref().unwrap_or("-");
            cx.out
                .println(format!("  {mark} {}  {size}  sha256 {digest}", file.name));
            for problem in &file.problems {
                cx.out.println(format!("       {}", paint.red(problem)));
            }
        }
    }
    let failed = reports.iter().filter(|report| !report.ok).count();
    if failed > 0 {
        cx.out.warn(format!(
            "{failed} of {} model(s) failed verification",
            reports.len()
        ));
    }
}
