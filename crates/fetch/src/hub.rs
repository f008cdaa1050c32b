//! Hugging Face downloads through the hf-hub crate. Its cache is placed inside the model's
//! `.partial/` directory: hf-hub writes `<blob>.sync.part` with a committed-bytes trailer, so a
//! re-run after an interrupted transfer resumes from the last complete chunk, and the finished
//! blob is moved (not copied) into the model directory.
//!
//! What a file's bytes must hash to comes from the hub itself: its API
//! (`/api/models/OWNER/REPO/revision/REV?blobs=true`) lists every file with the `lfs.sha256`
//! and size Git LFS stores for it, and the same SHA-256 is the `X-Linked-Etag` of the file's
//! `resolve` URL (hf-hub names the blob after it). The API's value is used where it answers,
//! the etag otherwise.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, Context as _};
use hf_hub::{
    api::tokio::{ApiBuilder, ApiError},
    Repo, RepoType,
};
use llorch_catalog::{HubSource, ModelEntry};
use serde::Deserialize;

use crate::{human_bytes, Fetcher, Progress};

/// Where hf-hub talks to when `HF_ENDPOINT` is not set.
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A file fetched from the hub, lying inside `.partial/`.
pub struct Fetched {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// The SHA-256 the hub announced for the file: the etag of files stored with Git LFS.
    pub announced_sha256: Option<String>,
}

/// How often hf-hub's progress is passed on to the [`Progress`] of the download.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// hf-hub's progress as counters: hf-hub wants a `'static` progress it may move into its
/// tasks, the download's [`Progress`] is borrowed; [`fetch`] reads these while it waits.
#[derive(Clone, Default)]
struct HubCounters {
    length: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
}

impl hf_hub::api::tokio::Progress for HubCounters {
    async fn init(&mut self, size: usize, _filename: &str) {
        self.length.store(size as u64, Ordering::Relaxed);
    }

    async fn update(&mut self, size: usize) {
        self.done.fetch_add(size as u64, Ordering::Relaxed);
    }

    async fn finish(&mut self) {}
}

/// Passes what `counters` gained since `reported` on to `progress`.
fn pass_on(counters: &HubCounters, progress: &dyn Progress, reported: &mut (u64, u64)) {
    let length = counters.length.load(Ordering::Relaxed);
    if length != reported.0 {
        progress.set_length(length);
        reported.0 = length;
    }
    let done = counters.done.load(Ordering::Relaxed);
    if done > reported.1 {
        progress.inc(done - reported.1);
        reported.1 = done;
    }
}

/// `HF_ENDPOINT` (the variable the hub's own tools read), else the public hub.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// `HF_TOKEN`, else the token `huggingface-cli login` stored.
fn token() -> Option<String> {
    std::env::var("HF_TOKEN")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .or_else(|| hf_hub::Cache::from_env().token())
}

/// A repository at one revision as the hub's API describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoFiles {
    /// The commit the revision resolved to.
    pub sha: String,
    pub siblings: Vec<Sibling>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    /// Present for files stored with Git LFS (every GGUF on the hub).
    #[serde(default)]
    pub lfs: Option<LfsPointer>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LfsPointer {
    pub sha256: String,
    pub size: u64,
}

impl RepoFiles {
    pub fn file(&self, name: &str) -> Option<&Sibling> {
        self.siblings
            .iter()
            .find(|sibling| sibling.rfilename == name)
    }

    /// The published SHA-256 of every LFS file, by path.
    fn published_sha256(&self) -> HashMap<&str, &str> {
        self.siblings
            .iter()
            .filter_map(|sibling| {
                let lfs = sibling.lfs.as_ref()?;
                Some((sibling.rfilename.as_str(), lfs.sha256.as_str()))
            })
            .collect()
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime for the hub")
}

fn api(cache: &Path) -> anyhow::Result<hf_hub::api::tokio::Api> {
    ApiBuilder::new()
        .with_endpoint(endpoint())
        .with_cache_dir(cache.to_path_buf())
        .with_token(token())
        .with_progress(false)
        .build()
        .context("setting up the hub client")
}

/// Asks the hub's API which files `repo` has at `revision`, with their sizes and SHA-256.
pub fn list_files(
    progress: &dyn Progress,
    repo: &str,
    revision: &str,
) -> anyhow::Result<RepoFiles> {
    let scratch = tempfile::tempdir().context("creating a scratch directory for the hub client")?;
    let api = api(scratch.path())?;
    let handle = api.repo(Repo::with_revision(
        repo.to_owned(),
        RepoType::Model,
        revision.to_owned(),
    ));
    let request = handle.info_request().query(&[("blobs", "true")]);
    let endpoint = endpoint();
    let what = format!("asking {endpoint} which files `{repo}` has at revision `{revision}`");
    progress.debug(&format!(
        "GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true"
    ));
    let answer = runtime()?.block_on(async {
        let response = request.send().await?.error_for_status()?;
        response.json::<RepoFiles>().await
    });
    answer.map_err(|error| match error.status().map(|status| status.as_u16()) {
        Some(status @ (401 | 403)) => anyhow!(
            "{what}: the hub refused access (HTTP {status}); `{repo}` is gated or private\nhint: accept the model's license on {}/{repo} and set HF_TOKEN to a read token",
            llorch_catalog::HUB_WEB_URL
        ),
        Some(404) => anyhow!(
            "{what}: not found (HTTP 404): no repository `{repo}` with revision `{revision}`\nhint: check the spelling as OWNER/REPO (the repository's page is {}/{repo}) and --revision",
            llorch_catalog::HUB_WEB_URL
        ),
        Some(status) => anyhow!("{what}: the hub answered HTTP {status}\nhint: try again later"),
        None if error.is_connect() || error.is_timeout() => anyhow!(
            "{what}: cannot reach {endpoint}: {}\nhint: check the network, or point HF_ENDPOINT at a reachable mirror",
            chain(&error)
        ),
        None => anyhow!("{what}: {}", chain(&error)),
    })
}

/// Downloads `files` of the repository into `partial`'s hub cache and returns them in order.
pub fn fetch(
    fetcher: &Fetcher<'_>,
    entry: &ModelEntry,
    source: &HubSource,
    files: &[String],
    partial: &Path,
) -> anyhow::Result<Vec<Fetched>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let progress = fetcher.progress;
    let endpoint = endpoint();
    let api = api(&partial.join("hub"))?;
    let repo = api.repo(Repo::with_revision(
        source.repo.clone(),
        RepoType::Model,
        source.revision.clone(),
    ));
    // The published hashes; a mirror without the API still has the etags, so this is not fatal.
    let listing = match list_files(progress, &source.repo, &source.revision) {
        Ok(listing) => Some(listing),
        Err(error) => {
            progress.debug(&format!(
                "no file list from the hub's API, checking against the etags: {error:#}"
            ));
            None
        }
    };
    let published = listing
        .as_ref()
        .map(RepoFiles::published_sha256)
        .unwrap_or_default();
    let runtime = runtime()?;
    let mut fetched = Vec::with_capacity(files.len());
    for name in files {
        let expected = if *name == entry.file && !entry.requires_conversion {
            entry.size
        } else {
            0
        };
        progress.start(expected, &format!("downloading {name}"));
        let url = repo.url(name);
        progress.debug(&format!("GET {url}"));
        let counters = HubCounters::default();
        let pointer = runtime
            .block_on(async {
                let download = repo.download_with_progress(name, counters.clone());
                tokio::pin!(download);
                let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
                let mut reported = (expected, 0);
                loop {
                    tokio::select! {
                        result = &mut download => {
                            pass_on(&counters, progress, &mut reported);
                            break result;
                        }
                        _ = tick.tick() => pass_on(&counters, progress, &mut reported),
                    }
                }
            })
            .map_err(|error| explain(error, entry, source, name, &url, &endpoint, partial))?;
        progress.finish();
        // hf-hub returns a snapshot symlink; the blob behind it is the file itself.
        let path = std::fs::canonicalize(&pointer)
            .with_context(|| format!("resolving the downloaded file {}", pointer.display()))?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        progress.status(&format!("fetched {name} ({})", human_bytes(size)));
        // hf-hub names the blob after the etag.
        let announced_sha256 = published
            .get(name.as_str())
            .map(|sha256| (*sha256).to_owned())
            .or_else(|| {
                path.file_name()
                    .map(|blob| blob.to_string_lossy().into_owned())
            })
            .filter(|sha256| {
                sha256.len() == 64 && sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
            });
        fetched.push(Fetched {
            name: name.clone(),
            path,
            size,
            announced_sha256,
        });
    }
    Ok(fetched)
}

/// Turns hf-hub's error into what happened and what to do about it.
fn explain(
    error: ApiError,
    entry: &ModelEntry,
    source: &HubSource,
    name: &str,
    url: &str,
    endpoint: &str,
    partial: &Path,
) -> anyhow::Error {
    let what = format!("downloading `{name}` of `{}` from {url}", entry.id);
    let ApiError::RequestError(request) = &error else {
        return anyhow!("{what}: {}", chain(&error));
    };
    match request.status().map(|status| status.as_u16()) {
        Some(401 | 403) => anyhow!(
            "{what}: the hub refused access (HTTP {}); `{}` is gated or private\nhint: accept the model's license on {}/{} and set HF_TOKEN to a read token",
            request.status().map(|s| s.as_u16()).unwrap_or_default(),
            source.repo,
            llorch_catalog::HUB_WEB_URL,
            source.repo
        ),
        Some(404) => anyhow!(
            "{what}: not found (HTTP 404): `{}` has no file `{name}` at revision `{}`\nhint: check `source` of `{}` in the catalog",
            source.repo,
            source.revision,
            entry.id
        ),
        Some(status) => anyhow!("{what}: the hub answered HTTP {status}\nhint: try again later"),
        None if request.is_connect() || request.is_timeout() => anyhow!(
            "{what}: cannot reach {endpoint}: {}\nhint: check the network, or point HF_ENDPOINT at a reachable mirror",
            chain(request)
        ),
        None => anyhow!(
            "{what}: the transfer was interrupted: {}\nhint: run the same command again to resume; the bytes received so far are kept in {}",
            chain(request),
            partial.display()
        ),
    }
}

/// An error and its causes on one line (`a: b: c`), as reqwest hides the cause in `source()`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
