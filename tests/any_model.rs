//! A model outside the built-in catalog, end to end with the real binaries: `cargo xtask models
//! add` registers the default model's file under a new id in a private catalog.d, `pool worker
//! spawn` starts the real worker for that id (the worker does not read catalog.d; xtask hands
//! it the file and the id), and orcd serves a job that names the new id.

use std::path::{Path, PathBuf};

use llorch_api::TaskRequest;
use llorch_tests::*;

const ID: &str = "any-model-e2e";
const WORKER: &str = "any-model-e2e-worker";

/// The xtask binary in a private config, model, run and state directory.
fn xtask(dir: &Path, orcd_url: &str, args: &[&str]) -> Outcome {
    llorch_tests::xtask()
        .env("LLORCH_CONFIG_PATH", dir.join("config.toml"))
        .env("LLORCH_MODEL_BASE_DIR", dir.join("models"))
        .env("LLORCH_RUN_DIR", dir.join("run"))
        .env("LLORCH_STATE_DIR", dir.join("state"))
        .env("LLORCH_BIN_DIR", bin_dir())
        .env("LLORCH_ORCHESTRATOR_URL", orcd_url)
        .run(args)
}

#[track_caller]
fn succeeded(output: Outcome) -> Outcome {
    output.success()
}

/// Stops the worker the test spawned, also when the test fails.
struct StopWorker<'a> {
    dir: &'a Path,
    orcd_url: String,
}

impl Drop for StopWorker<'_> {
    fn drop(&mut self) {
        let _ = xtask(
            self.dir,
            &self.orcd_url,
            &["pool", "worker", "stop", WORKER],
        );
    }
}

#[test]
fn a_model_added_under_a_new_id_is_served_by_a_real_worker_under_that_id() {
    let catalog = llorch_catalog::Catalog::builtin();
    let default = catalog.default_model();
    let file: PathBuf = llorch_catalog::model_path(&model_base_dir(), default);
    assert!(
        file.is_file(),
        "{} is missing: run `cargo xtask models download {}`",
        file.display(),
        default.id
    );
    let dir = tempfile::tempdir().unwrap();
    let orcd = start_orcd("127.0.0.1:0", &[]).unwrap();
    let path = file.to_str().unwrap();

    // A hard link spares copying 250 MB; across filesystems it must be a copy.
    let linked = xtask(
        dir.path(),
        &orcd.url,
        &["models", "add", path, "--id", ID, "--hardlink"],
    );
    if !linked.status.success() {
        succeeded(xtask(
            dir.path(),
            &orcd.url,
            &["models", "add", path, "--id", ID],
        ));
    }
    assert!(dir.path().join(format!("catalog.d/{ID}.toml")).is_file());

    let _stop = StopWorker {
        dir: dir.path(),
        orcd_url: orcd.url.clone(),
    };
    succeeded(xtask(
        dir.path(),
        &orcd.url,
        &[
            "pool",
            "worker",
            "spawn",
            "cpu",
            "--model",
            ID,
            "--id",
            WORKER,
            "--",
            "--slots",
            "1",
            "--ctx-size",
            "512",
        ],
    ));
    runtime().block_on(async {
        let registered = workers(&orcd.url).await.unwrap();
        assert_eq!(registered.len(), 1, "{registered:?}");
        assert_eq!(registered[0].model, ID);

        let task = TaskRequest {
            model: ID.to_owned(),
            ..greedy_task("The capital of France is", 4)
        };
        let events = submit(&orcd.url, &task)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(token_count(&events) > 0, "{events:?}");
        assert!(
            events.last().is_some_and(|event| event.is_terminal()),
            "{events:?}"
        );
    });
}
