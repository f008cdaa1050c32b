//! Catalog model downloads on orcd's request (`POST /models/{model}/download`): the file of a
//! single-file hub model is fetched from the hub's download protocol (`HF_ENDPOINT`, as xtask
//! and the hub's own tools read it) into the model's `.partial/` directory, checked against the
//! catalog's size and SHA-256 (or the SHA-256 the hub announces where the catalog pins none),
//! flushed, renamed into place and recorded in `manifest.json` last, in the layout `cargo
//! xtask models download` writes. Nothing outside `.partial/` is written before the bytes are
//! known good. The model's lock file is the one xtask takes, so a host's xtask and its pool
//! manager never write the same model at once; a second request while one runs is refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use futures::StreamExt;
use llorch_api::pool::{DownloadState, ModelDownload};
use llorch_catalog::{
    local_name, model_dir, partial_dir, utc_timestamp, Manifest, ManifestFile, ModelEntry, Source,
    HUB_WEB_URL,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The longest the hub may go without sending a byte before the download is given up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The pool manager downloads single-file hub models only.
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

    fn progress(&self, model: &str, bytes_done: u64) {
        if let Some(download) = lock(&self.by_model).get_mut(model) {
            download.bytes_done = bytes_done;
        }
    }

    /// Records how the download of `model` ended.
    pub fn finish(&self, model: &str, outcome: &anyhow::Result<()>) {
        if let Some(download) = lock(&self.by_model).get_mut(model) {
            match outcome {
                Ok(()) => {
                    download.state = DownloadState::Done;
                    download.bytes_done = download.bytes_total;
                }
                Err(error) => {
                    download.state = DownloadState::Failed;
                    download.error = Some(format!("{error:#}"));
                }
            }
        }
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
            "`{model}` {what}; the pool manager downloads single-file GGUF models from the hub\nhint: run `cargo xtask models download {model}` on the host"
        ))
    };
    match &entry.source {
        Source::Hf(_) if entry.requires_conversion => Err(unsupported("needs a conversion")),
        Source::Hf(_) if entry.hub_files().len() != 1 => Err(unsupported("is split into parts")),
        Source::Hf(_) => Ok(entry),
        Source::Pip(_) => Err(unsupported("comes in Python packages")),
        Source::Local(_) => Err(unsupported("was added from a local file")),
    }
}

/// `HF_ENDPOINT`, else the public hub.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| HUB_WEB_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// Downloads `entry` into `base` (see the module's documentation), updating `downloads` as the
/// bytes arrive. On any failure its `.partial/` directory is removed, and its model directory
/// too unless it holds something else.
pub async fn run(
    http: &reqwest::Client,
    endpoint: &str,
    base: &Path,
    entry: &ModelEntry,
    downloads: &Downloads,
) -> anyhow::Result<()> {
    let partial = partial_dir(base, &entry.id);
    let result = fetch_and_install(http, endpoint, base, entry, &partial, downloads).await;
    if result.is_err() {
        let _ = tokio::fs::remove_dir_all(&partial).await;
        // Only removed when empty: an earlier good copy stays.
        let _ = tokio::fs::remove_dir(model_dir(base, &entry.id)).await;
    }
    result
}

async fn fetch_and_install(
    http: &reqwest::Client,
    endpoint: &str,
    base: &Path,
    entry: &ModelEntry,
    partial: &Path,
    downloads: &Downloads,
) -> anyhow::Result<()> {
    let Source::Hf(hub) = &entry.source else {
        bail!("`{}` is not a hub model", entry.id);
    };
    let remote = entry.hub_files().remove(0);
    let name = local_name(&remote).to_owned();
    let url = format!("{endpoint}/{}/resolve/{}/{remote}", hub.repo, hub.revision);
    let what = format!("downloading `{}` from {url}", entry.id);
    tokio::fs::create_dir_all(partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    let scratch = partial.join(format!("{name}.pool-download"));

    let response = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{what}: cannot reach the hub\nhint: check the host's network, or point the pool manager's HF_ENDPOINT at a reachable mirror"))?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "{what}: the hub answered {status}\nhint: {}",
            match status.as_u16() {
                401 | 403 => "the repository is gated or private; the pool manager downloads public models only: run `cargo xtask models download` with HF_TOKEN on the host",
                404 => "check the entry's `source` in the catalog",
                _ => "try again later",
            }
        );
    }
    let announced = announced_sha256(response.headers());
    let mut file = tokio::fs::File::create(&scratch)
        .await
        .with_context(|| format!("creating {}", scratch.display()))?;
    let mut hasher = Sha256::new();
    let mut received: u64 = 0;
    let mut body = response.bytes_stream();
    loop {
        let chunk = match tokio::time::timeout(STALL_TIMEOUT, body.next()).await {
            Err(_) => bail!(
                "{what}: no byte for {} s after {received} bytes\nhint: ask for the download again",
                STALL_TIMEOUT.as_secs()
            ),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.with_context(|| {
                format!("{what}: the transfer broke off after {received} bytes\nhint: ask for the download again")
            })?,
        };
        received += chunk.len() as u64;
        if received > entry.size {
            bail!(
                "{what}: the hub sent more than the catalog's {} bytes\nhint: if the file changed on purpose, update `size` and `sha256` in the catalog",
                entry.size
            );
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", scratch.display()))?;
        downloads.progress(&entry.id, received);
    }
    // On disk before the rename: a crash cannot leave a renamed but empty model.
    file.sync_all()
        .await
        .with_context(|| format!("flushing {}", scratch.display()))?;
    drop(file);
    let sha256 = hex::encode(hasher.finalize());
    check(entry, received, &sha256, announced.as_deref())?;

    let dir = model_dir(base, &entry.id);
    let target = dir.join(&name);
    tokio::fs::rename(&scratch, &target)
        .await
        .with_context(|| format!("moving {} to {}", scratch.display(), target.display()))?;
    let manifest = Manifest {
        id: entry.id.clone(),
        file: entry.file.clone(),
        files: vec![ManifestFile {
            name,
            size: received,
            sha256,
        }],
        source: entry.source_summary(),
        downloaded_at: utc_timestamp(SystemTime::now()),
        converted_with: None,
    };
    // Last: the manifest's presence is what makes the directory a model.
    manifest
        .write(&dir)
        .with_context(|| format!("recording the download of `{}`", entry.id))?;
    tokio::fs::remove_dir_all(partial)
        .await
        .with_context(|| format!("removing {}", partial.display()))?;
    Ok(())
}

/// The received bytes against the catalog: its size, and its SHA-256 where it pins one, else
/// the one the hub announced.
fn check(
    entry: &ModelEntry,
    size: u64,
    sha256: &str,
    announced: Option<&str>,
) -> anyhow::Result<()> {
    if size != entry.size {
        bail!(
            "size mismatch for `{}`: expected {} bytes (catalog), got {size}; the download was discarded\nhint: ask for it again; if the file changed on purpose, update the catalog",
            entry.file,
            entry.size
        );
    }
    let (expected, whose) = match (&entry.sha256, announced) {
        (Some(pinned), _) => (pinned.to_ascii_lowercase(), "catalog"),
        (None, Some(announced)) => (announced.to_owned(), "the hub announced"),
        (None, None) => return Ok(()),
    };
    if expected != sha256 {
        return Err(anyhow!(
            "checksum mismatch for `{}`: expected sha256 {expected} ({whose}), got {sha256}; the download was discarded\nhint: ask for it again; if the file changed on purpose, update `sha256` in the catalog",
            entry.file
        ));
    }
    Ok(())
}

/// The SHA-256 the hub names an LFS file by (`x-linked-etag`, else `etag`), when it is one.
fn announced_sha256(headers: &reqwest::header::HeaderMap) -> Option<String> {
    ["x-linked-etag", "etag"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .map(|value| {
            value
                .trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_ascii_lowercase()
        })
        .find(|value| value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> llorch_catalog::Catalog {
        let hash = "a".repeat(64);
        llorch_catalog::Catalog::parse(
            &format!(
                "[[models]]\nid = \"tiny\"\nname = \"Tiny\"\ndescription = \"t\"\nparams = \"1M\"\nfile = \"tiny.gguf\"\nsize = 4\nsha256 = \"{hash}\"\nverified = true\ndefault = true\nsource = {{ kind = \"hf\", repo = \"o/r\" }}\n\n\
                 [[models]]\nid = \"parts\"\nname = \"Parts\"\ndescription = \"p\"\nparams = \"1M\"\nfile = \"p.gguf\"\nsize = 4\nsha256 = \"{hash}\"\nverified = true\ndefault = false\nsource = {{ kind = \"pip\", packages = [\"p-part==1\"] }}\n"
            ),
            "test",
        )
        .unwrap()
    }

    #[test]
    fn only_known_single_file_hub_models_are_downloaded() {
        let catalog = catalog();
        assert!(downloadable(&catalog, "tiny").is_ok());
        assert!(matches!(
            downloadable(&catalog, "nope"),
            Err(Refusal::Unknown(message)) if message.contains("models catalog")
        ));
        assert!(matches!(
            downloadable(&catalog, "parts"),
            Err(Refusal::Unsupported(message)) if message.contains("cargo xtask models download parts")
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
        downloads.progress("tiny", 2);
        assert_eq!(downloads.get("tiny").unwrap().bytes_done, 2);
        downloads.finish("tiny", &Err(anyhow!("cut off")));
        let failed = downloads.get("tiny").unwrap();
        assert_eq!(failed.state, DownloadState::Failed);
        assert_eq!(failed.error.as_deref(), Some("cut off"));
        // Once it ended, it may be asked for again.
        downloads.begin(entry).unwrap();
        downloads.finish("tiny", &Ok(()));
        assert_eq!(downloads.list()[0].state, DownloadState::Done);
        assert_eq!(downloads.list()[0].bytes_done, 4);
    }

    #[test]
    fn the_bytes_are_checked_against_the_catalog_then_the_announced_hash() {
        let catalog = catalog();
        let entry = catalog.get("tiny").unwrap();
        let pinned = "a".repeat(64);
        assert!(check(entry, 4, &pinned, None).is_ok());
        let error = check(entry, 4, &"b".repeat(64), Some(&"b".repeat(64))).unwrap_err();
        assert!(error.to_string().contains("(catalog)"), "{error}");
        assert!(check(entry, 5, &pinned, None)
            .unwrap_err()
            .to_string()
            .contains("size mismatch"));
        let mut unpinned = entry.clone();
        unpinned.sha256 = None;
        assert!(check(&unpinned, 4, &"c".repeat(64), Some(&"c".repeat(64))).is_ok());
        assert!(check(&unpinned, 4, &"c".repeat(64), Some(&"d".repeat(64)))
            .unwrap_err()
            .to_string()
            .contains("the hub announced"));
        assert!(check(&unpinned, 4, &"c".repeat(64), None).is_ok());
    }

    #[test]
    fn the_announced_hash_is_an_lfs_etag_only() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("etag", "\"0123\"".parse().unwrap());
        assert_eq!(announced_sha256(&headers), None);
        let hash = "AB".repeat(32);
        headers.insert("x-linked-etag", format!("\"{hash}\"").parse().unwrap());
        assert_eq!(announced_sha256(&headers), Some(hash.to_ascii_lowercase()));
    }
}
