//! `models add PATH --id ID`: registers a GGUF of this machine as a catalog model. The file (or
//! every part of a split GGUF) is copied, or hard-linked with `--hardlink`, into
//! `<base>/<id>/.partial/` while it is hashed, moved into place with a rename, recorded in the
//! manifest, and only then written to `catalog.d/<id>.toml`.

use std::{
    fs::File,
    io::BufWriter,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use llorch_catalog::{
    model_dir, partial_dir, user_entry_path, valid_id, write_user_entry, LocalSource, ModelEntry,
    Source, SplitPart,
};
use serde::Serialize;

use super::{
    checksum::{self, HashingWriter},
    download::{install, lock_model, Delivery, Produced},
    gguf, load_catalog, local,
};
use crate::{output::human_bytes, Context};

#[derive(Serialize)]
struct Report<'a> {
    id: &'a str,
    path: &'a Path,
    /// `copied` or `hard-linked`
    method: &'static str,
    files: &'a [llorch_catalog::ManifestFile],
    size: u64,
    sha256: &'a str,
    catalog_file: &'a Path,
}

pub fn run(cx: &Context, path: &Path, id: &str, hardlink: bool, force: bool) -> anyhow::Result<()> {
    if !valid_id(id) {
        bail!("`{id}` is not a usable model id: ids start with a lowercase letter or digit and contain only `a-z 0-9 - . _`\nhint: cargo xtask models add {} --id my-model", path.display());
    }
    let source = std::fs::canonicalize(path)
        .with_context(|| format!("adding {}: the file cannot be found", path.display()))?;
    if !source.is_file() {
        bail!("adding {}: not a file", path.display());
    }
    let name = source
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .context("a file has a name")?;
    if !name.ends_with(".gguf") {
        bail!(
            "adding {}: the catalog's model files end in `.gguf`\nhint: rename the file (after checking it is GGUF)",
            path.display()
        );
    }
    let names = match SplitPart::parse(&name) {
        Some(part) if part.index != 1 => bail!(
            "{} is part {} of a split GGUF; add the first part, and every part is added with it\nhint: cargo xtask models add {} --id {id}",
            path.display(),
            part.index,
            source.with_file_name(&part.all_names()[0]).display()
        ),
        Some(part) => part.all_names(),
        None => vec![name.clone()],
    };
    let dir = source.parent().context("a file lies in a directory")?;
    let parts: Vec<PathBuf> = names.iter().map(|name| dir.join(name)).collect();
    for part in &parts {
        if !part.is_file() {
            bail!(
                "adding {}: the split GGUF's part {} is missing\nhint: put every part in the same directory",
                path.display(),
                part.display()
            );
        }
        gguf::check_magic(part)?;
    }

    let catalog = load_catalog(cx)?;
    let catalog_file = user_entry_path(&cx.settings.catalog_dir, id);
    if let Some(existing) = catalog.get(id) {
        let origin = catalog.origin_of(id).unwrap_or_default();
        if !force || origin != catalog_file.display().to_string() {
            let hint = if origin == catalog_file.display().to_string() {
                "pass --force to replace it, or pick another --id"
            } else {
                "pick another --id"
            };
            bail!(
                "the catalog already has a model `{id}` ({}, from {origin})\nhint: {hint}",
                existing.source_summary()
            );
        }
    }
    let base = &cx.settings.model_base_dir;
    let _lock = lock_model(cx, base, id)?;
    let target_dir = model_dir(base, id);
    if let Some(existing) = local::inspect(base, id).filter(|model| !model.files.is_empty()) {
        if !force {
            bail!(
                "{} already holds files ({}) that no catalog entry describes\nhint: pass --force to replace them, or pick another --id",
                target_dir.display(),
                existing
                    .files
                    .iter()
                    .map(|file| file.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    let partial = partial_dir(base, id);
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let produced = place_parts(cx, &parts, &partial, hardlink);
    let mut produced = match produced {
        Ok(produced) => produced,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&partial);
            let _ = std::fs::remove_dir(&target_dir);
            return Err(error);
        }
    };
    // A replaced model's old files go first, so none of them lingers beside the new ones.
    if force {
        for old in local::inspect(base, id)
            .map(|model| model.files)
            .unwrap_or_default()
        {
            let _ = std::fs::remove_file(target_dir.join(&old.name));
        }
        let _ = std::fs::remove_file(llorch_catalog::Manifest::path(&target_dir));
    }
    let info = gguf::read_info(&produced[0].path);
    let model = produced.remove(0);
    let entry = ModelEntry {
        id: id.to_owned(),
        name: info
            .name
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| {
                SplitPart::parse(&name)
                    .map(|part| part.prefix.to_owned())
                    .unwrap_or_else(|| name.trim_end_matches(".gguf").to_owned())
            }),
        description: format!(
            "{} on this machine, added with `cargo xtask models add`",
            source.display()
        ),
        params: info.size_label.unwrap_or_else(|| "unknown".to_owned()),
        file: name.clone(),
        size: model.size,
        sha256: Some(model.sha256.clone()),
        verified: true,
        default: false,
        chat_template: info.chat_template,
        requires_conversion: false,
        converter: None,
        converter_args: Vec::new(),
        source: Source::Local(LocalSource {
            path: source.clone(),
        }),
    };
    let outcome = install(
        base,
        &entry,
        Delivery {
            model,
            extras: produced,
            converted_with: None,
        },
    )?;
    std::fs::remove_dir_all(&partial)
        .with_context(|| format!("removing the scratch directory {}", partial.display()))?;
    let written = write_user_entry(
        &cx.settings.catalog_dir,
        &entry,
        &format!(
            "Written by `cargo xtask models add {}`; the model's bytes are {} into the model directory.",
            source.display(),
            if hardlink { "hard-linked" } else { "copied" }
        ),
    )
    .with_context(|| format!("recording `{id}` in {}", catalog_file.display()))?;

    let method = if hardlink { "hard-linked" } else { "copied" };
    let total = outcome.manifest.total_size();
    if cx.out.json() {
        return cx.out.print_json(&Report {
            id,
            path: &outcome.path,
            method,
            files: &outcome.manifest.files,
            size: total,
            sha256: &entry.sha256.clone().unwrap_or_default(),
            catalog_file: &written,
        });
    }
    cx.out.status(format!(
        "added `{id}` ({}, {} file(s) {method}, sha256 {}); recorded in {}",
        human_bytes(total),
        outcome.manifest.files.len(),
        entry.sha256.as_deref().unwrap_or_default(),
        written.display()
    ));
    cx.out.println(outcome.path.display());
    Ok(())
}

/// Copies (hashing on the way) or hard-links (then hashes) every part into `partial`.
fn place_parts(
    cx: &Context,
    parts: &[PathBuf],
    partial: &Path,
    hardlink: bool,
) -> anyhow::Result<Vec<Produced>> {
    let mut produced = Vec::with_capacity(parts.len());
    for part in parts {
        let name = part
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .context("a part has a file name")?;
        let target = partial.join(&name);
        let _ = std::fs::remove_file(&target);
        let size = std::fs::metadata(part)
            .with_context(|| format!("reading {}", part.display()))?
            .len();
        let (sha256, size) = if hardlink {
            std::fs::hard_link(part, &target).map_err(|error| {
                let cross_device = error.raw_os_error() == Some(libc::EXDEV);
                let mut message = format!(
                    "hard-linking {} to {}: {error}",
                    part.display(),
                    target.display()
                );
                if cross_device {
                    message.push_str(
                        "\nhint: a hard link needs the model base dir on the same filesystem; drop --hardlink to copy",
                    );
                }
                anyhow::anyhow!(message)
            })?;
            let bar = cx.out.progress_bar(size, format!("hashing {name}"));
            let hashed = checksum::sha256_file(&target, &bar)
                .with_context(|| format!("hashing {}", target.display()))?;
            bar.finish_and_clear();
            hashed
        } else {
            let bar = cx.out.progress_bar(size, format!("copying {name}"));
            let mut input =
                File::open(part).with_context(|| format!("opening {}", part.display()))?;
            let output =
                File::create(&target).with_context(|| format!("creating {}", target.display()))?;
            let progress = checksum::Bar(&bar);
            let mut writer =
                HashingWriter::new(BufWriter::with_capacity(1 << 20, output), &progress);
            std::io::copy(&mut input, &mut writer)
                .with_context(|| format!("copying {} to {}", part.display(), target.display()))?;
            let (buffered, sha256, written) = writer.finish();
            let file = buffered
                .into_inner()
                .map_err(|error| error.into_error())
                .with_context(|| format!("writing {}", target.display()))?;
            file.sync_all()
                .with_context(|| format!("flushing {}", target.display()))?;
            bar.finish_and_clear();
            (sha256, written)
        };
        produced.push(Produced {
            name,
            path: target,
            size,
            sha256,
            announced_sha256: None,
        });
    }
    Ok(produced)
}
