//! Shared by the `models_*` integration tests: a sandbox that runs the built xtask against a
//! temporary model dir and catalog, a local server that speaks the hub's download protocol,
//! and a local PEP 503 package index serving wheels built here (llorch-testkit's, which the
//! pool manager's and orcd's download tests use too). Servers bind 127.0.0.1:0 and
//! stop when dropped.

#![allow(dead_code)] // each test file uses a different part of this module

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Path as UrlPath, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use llorch_testkit::package_index::LoopbackServer as Server;
pub use llorch_testkit::package_index::{pseudo_random_bytes, sha256_hex, FakeIndex};

/// Longest any single xtask run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// A temporary model base dir, catalog file and (absent) config file for one test.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// One run of the xtask binary in a sandbox.
pub type Run = llorch_testkit::Outcome;

impl Sandbox {
    pub fn new(catalog: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("catalog.toml"), catalog).unwrap();
        std::fs::create_dir_all(dir.path().join("hf-home")).unwrap();
        Sandbox {
            dir,
            env: Vec::new(),
        }
    }

    pub fn base(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    pub fn model_dir(&self, id: &str) -> PathBuf {
        self.base().join(id)
    }

    /// The manifest.json written beside model `id`'s files.
    pub fn manifest(&self, id: &str) -> serde_json::Value {
        let path = self.model_dir(id).join("manifest.json");
        let text = std::fs::read(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        serde_json::from_slice(&text).unwrap()
    }

    pub fn set_env(&mut self, name: &str, value: impl Into<String>) {
        self.env.push((name.to_owned(), value.into()));
    }

    pub fn write_catalog(&self, catalog: &str) {
        std::fs::write(self.dir.path().join("catalog.toml"), catalog).unwrap();
    }

    /// The user catalog directory: `catalog.d` beside the (absent) config file.
    pub fn catalog_dir(&self) -> PathBuf {
        self.dir.path().join("catalog.d")
    }

    /// The files in the user catalog directory, sorted.
    pub fn catalog_dir_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.catalog_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|item| item.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Runs `xtask ARGS` isolated from the user's config, caches, tokens and indexes, with
    /// stdin closed (so it is not a terminal), and fails the test if it runs too long.
    pub fn xtask(&self, args: &[&str]) -> Run {
        let root = self.dir.path();
        let mut xtask = llorch_testkit::Xtask::new(env!("CARGO_BIN_EXE_xtask"));
        xtask
            .timeout(RUN_LIMIT)
            .env("LLORCH_MODEL_BASE_DIR", self.base())
            .env("LLORCH_CATALOG", root.join("catalog.toml"))
            .env("LLORCH_CONFIG_PATH", root.join("absent-config.toml"))
            .env("HF_HOME", root.join("hf-home"))
            .env("PIP_CONFIG_FILE", "/dev/null")
            .env("PIP_NO_CACHE_DIR", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
        for name in [
            "HF_TOKEN",
            "HF_ENDPOINT",
            "PIP_INDEX_URL",
            "PIP_EXTRA_INDEX_URL",
            "PIP_FIND_LINKS",
            "PIP_NO_INDEX",
            "LLAMA_CPP_DIR",
        ] {
            xtask.env_remove(name);
        }
        for (name, value) in &self.env {
            xtask.env(name, value);
        }
        xtask.run(args)
    }

    /// Files under the model base dir, relative, sorted (hidden lock files excluded).
    pub fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, found: &mut Vec<String>) {
            for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = item.path();
                if path.is_dir() {
                    walk(&path, root, found);
                } else {
                    found.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.base(), &self.base(), &mut found);
        found.retain(|path| !path.starts_with(".locks/"));
        found.sort();
        found
    }
}

/// One GET the fake hub answered: `repo/file` and the `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRequest {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct HubState {
    /// `owner/name/file` → bytes.
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// While set, any data range starting at or after this offset gets half its bytes and then
    /// a dropped connection.
    cut_from: Mutex<Option<u64>>,
    /// Etags announced instead of the served bytes' SHA-256 (bytes corrupted on the way).
    announced: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<HubRequest>>,
}

/// Serves `GET /{owner}/{name}/resolve/{revision}/{file}` like the hub: `x-repo-commit`,
/// an `etag` (the file's SHA-256, as the hub does for LFS files), and `Range` requests answered
/// with 206 and `content-range`. And the API's
/// `GET /api/models/{owner}/{name}/revision/{revision}?blobs=true`: the commit (`sha`) and
/// every file as a sibling with `size` and, as for Git LFS files, `lfs.sha256`/`lfs.size`
/// (only with `blobs=true`, like the hub). Announced hashes appear in both places.
pub struct FakeHub {
    server: Server,
    state: Arc<HubState>,
}

pub const FAKE_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl FakeHub {
    pub fn start() -> FakeHub {
        let state = Arc::new(HubState::default());
        let app = Router::new()
            .route("/{owner}/{name}/resolve/{revision}/{*file}", get(hub_file))
            .route(
                "/api/models/{owner}/{name}/revision/{revision}",
                get(hub_repo_info),
            )
            .with_state(state.clone());
        FakeHub {
            server: Server::start(app),
            state,
        }
    }

    pub fn url(&self) -> &str {
        &self.server.url
    }

    pub fn add_file(&self, repo: &str, file: &str, bytes: Vec<u8>) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(format!("{repo}/{file}"), bytes);
    }

    /// Announces `sha256` as the file's etag while serving other bytes.
    pub fn announce_sha256(&self, repo: &str, file: &str, sha256: &str) {
        self.state
            .announced
            .lock()
            .unwrap()
            .insert(format!("{repo}/{file}"), sha256.to_owned());
    }

    pub fn cut_from(&self, offset: Option<u64>) {
        *self.state.cut_from.lock().unwrap() = offset;
    }

    pub fn requests(&self) -> Vec<HubRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }
}

/// The API request path recorded in [`FakeHub::requests`]: `api/OWNER/NAME@REV?blobs=..`.
async fn hub_repo_info(
    State(state): State<Arc<HubState>>,
    UrlPath((owner, name, revision)): UrlPath<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let blobs = query.get("blobs").is_some_and(|value| value == "true");
    state.requests.lock().unwrap().push(HubRequest {
        path: format!("api/{owner}/{name}@{revision}?blobs={blobs}"),
        range: None,
    });
    let prefix = format!("{owner}/{name}/");
    let files = state.files.lock().unwrap();
    let announced = state.announced.lock().unwrap();
    let mut siblings: Vec<serde_json::Value> = files
        .iter()
        .filter_map(|(key, bytes)| {
            let path = key.strip_prefix(&prefix)?;
            let sha256 = announced
                .get(key)
                .cloned()
                .unwrap_or_else(|| sha256_hex(bytes));
            Some(if blobs {
                serde_json::json!({
                    "rfilename": path,
                    "blobId": &sha256[..40],
                    "size": bytes.len(),
                    "lfs": { "sha256": sha256, "size": bytes.len(), "pointerSize": 135 },
                })
            } else {
                serde_json::json!({ "rfilename": path })
            })
        })
        .collect();
    if siblings.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": "Repository not found" })),
        )
            .into_response();
    }
    siblings.sort_by(|a, b| a["rfilename"].as_str().cmp(&b["rfilename"].as_str()));
    axum::Json(serde_json::json!({
        "_id": "0123456789abcdef01234567",
        "id": format!("{owner}/{name}"),
        "sha": FAKE_COMMIT,
        "siblings": siblings,
    }))
    .into_response()
}

/// A small GGUF v3 file: the magic, a header with `general.name` and `general.size_label`,
/// then `payload` bytes standing in for tensors.
pub fn fake_gguf(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(2u64.to_le_bytes());
    for (key, value) in [("general.name", name), ("general.size_label", "1M")] {
        bytes.extend((key.len() as u64).to_le_bytes());
        bytes.extend(key.as_bytes());
        bytes.extend(8u32.to_le_bytes());
        bytes.extend((value.len() as u64).to_le_bytes());
        bytes.extend(value.as_bytes());
    }
    bytes.extend(payload);
    bytes
}

/// `bytes=a-b` or `bytes=a-` → (a, b) clamped to the file.
fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = if end.is_empty() {
        total - 1
    } else {
        end.parse().ok()?
    };
    (start < total).then_some((start, end.min(total - 1)))
}

async fn hub_file(
    State(state): State<Arc<HubState>>,
    UrlPath((owner, name, _revision, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let key = format!("{owner}/{name}/{file}");
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    state.requests.lock().unwrap().push(HubRequest {
        path: key.clone(),
        range: range.clone(),
    });
    let Some(bytes) = state.files.lock().unwrap().get(&key).cloned() else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let total = bytes.len() as u64;
    let announced = state.announced.lock().unwrap().get(&key).cloned();
    let etag = format!("\"{}\"", announced.unwrap_or_else(|| sha256_hex(&bytes)));
    let (status, start, end) = match range.as_deref().and_then(|r| parse_range(r, total)) {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        None => (StatusCode::OK, 0, total - 1),
    };
    let body = Bytes::copy_from_slice(&bytes[start as usize..=end as usize]);
    let is_probe = start == 0 && end == 0;
    let cut = state
        .cut_from
        .lock()
        .unwrap()
        .is_some_and(|offset| start >= offset && !is_probe);
    let length = body.len();
    let builder = Response::builder()
        .status(status)
        .header("x-repo-commit", FAKE_COMMIT)
        .header(header::ETAG, &etag)
        .header("x-linked-etag", &etag)
        .header("x-linked-size", total.to_string())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, length.to_string())
        .header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{total}"),
        );
    let body = if cut {
        // Half the promised bytes, then an error: hyper drops the connection mid-body.
        let half = body.slice(..length / 2);
        Body::from_stream(futures::stream::iter(vec![
            Ok(half),
            Err(std::io::Error::other("connection cut by the test server")),
        ]))
    } else {
        Body::from(body)
    };
    builder.body(body).unwrap()
}

/// A catalog entry for tests, as TOML.
pub fn hub_entry(
    id: &str,
    repo: &str,
    file: &str,
    size: usize,
    sha256: Option<&str>,
    default: bool,
) -> String {
    let pin = sha256
        .map(|hash| format!("sha256 = \"{hash}\"\n"))
        .unwrap_or_default();
    format!(
        "[[models]]\nid = \"{id}\"\nname = \"Test {id}\"\ndescription = \"test model\"\nparams = \"1M\"\nfile = \"{file}\"\nsize = {size}\n{pin}verified = true\ndefault = {default}\nsource = {{ kind = \"hf\", repo = \"{repo}\" }}\n\n"
    )
}

pub fn pip_entry(
    id: &str,
    file: &str,
    size: usize,
    sha256: &str,
    packages: &[&str],
    default: bool,
) -> String {
    let packages: Vec<String> = packages.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[[models]]\nid = \"{id}\"\nname = \"Test {id}\"\ndescription = \"test model in pip parts\"\nparams = \"1M\"\nfile = \"{file}\"\nsize = {size}\nsha256 = \"{sha256}\"\nverified = true\ndefault = {default}\nsource = {{ kind = \"pip\", packages = [{}] }}\n\n",
        packages.join(", ")
    )
}
