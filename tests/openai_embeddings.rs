//! `/v1/embeddings` against the real stack: orcd with client and worker tokens, a worker of the
//! default model started with `--embeddings`, and a second worker of the same file registered
//! under another id without it. The official `openai` Python client
//! (`python/openai_embeddings.py`) checks dimensions against the GGUF's own
//! `embedding_length`, identical vectors for identical input, a list answered in order, usage
//! and the refusals; the worker's own `/embed` is checked here for its token and metrics.

use std::{path::Path, time::Duration};

use llorch_api::{WorkerInfo, WorkerState};
use llorch_tests::*;

const CLIENT_TOKEN: &str = "client-token-for-the-embeddings-test";
const WORKER_TOKEN: &str = "worker-token-for-the-embeddings-test";
/// The model id the worker without `--embeddings` registers under.
const PLAIN_MODEL_ID: &str = "plain-generation-only";
/// Small, so that an input longer than one decode is quick to write.
const CTX_SIZE: u32 = 128;

async fn live_workers(orcd_url: &str) -> Vec<WorkerInfo> {
    let response = reqwest::Client::new()
        .get(format!("{orcd_url}/workers"))
        .bearer_auth(CLIENT_TOKEN)
        .send()
        .await;
    match response {
        Ok(response) => response
            .json::<Vec<WorkerInfo>>()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|worker| worker.state == WorkerState::Live)
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn the_openai_client_gets_normalised_embeddings_of_the_model() {
    require_python_modules(&["openai"]);
    let model = default_model_id();
    let catalog = llorch_catalog::Catalog::builtin();
    let gguf = llorch_catalog::model_path(&model_base_dir(), catalog.get(&model).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (orcd, tokens) =
        start_orcd_with_tokens(dir.path(), CLIENT_TOKEN, WORKER_TOKEN, &[]).unwrap();
    let worker_tokens = tokens.worker;
    let ctx_size = CTX_SIZE.to_string();
    let common = [
        "--worker-token-file",
        &worker_tokens,
        "--ctx-size",
        &ctx_size,
        "--threads",
        "1",
    ];
    let embedding_args: Vec<&str> = common.iter().copied().chain(["--embeddings"]).collect();
    let embedding_worker = start_worker_for(&model, &orcd.url, 1, &embedding_args).unwrap();
    let plain_args: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--model-id", PLAIN_MODEL_ID])
        .collect();
    let _plain_worker = start_worker_for(&model, &orcd.url, 1, &plain_args).unwrap();

    let runtime = runtime();
    runtime
        .block_on(wait_until(
            "both workers to be live",
            Duration::from_secs(120),
            || async { live_workers(&orcd.url).await.len() == 2 },
        ))
        .unwrap();
    let workers = runtime.block_on(live_workers(&orcd.url));
    let capability = |id: &str| {
        workers
            .iter()
            .find(|worker| worker.model == id)
            .map(|worker| worker.embeddings)
    };
    assert_eq!(capability(&model), Some(true), "{workers:?}");
    assert_eq!(capability(PLAIN_MODEL_ID), Some(false), "{workers:?}");

    // The worker's own endpoint needs the worker token, like `/execute`.
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let embed = |token: Option<&str>| {
            let request = http
                .post(format!("{}/embed", embedding_worker.url))
                .json(&serde_json::json!({"input": ["a"]}));
            match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            }
            .send()
        };
        assert_eq!(embed(None).await.unwrap().status(), 401);
        assert_eq!(embed(Some(WORKER_TOKEN)).await.unwrap().status(), 200);
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/openai_embeddings.py");
    run_python_checks(
        &script,
        &[
            orcd.url.as_ref(),
            model.as_ref(),
            PLAIN_MODEL_ID.as_ref(),
            CLIENT_TOKEN.as_ref(),
            gguf.as_os_str(),
            ctx_size.as_ref(),
        ],
    );

    // Requests and tokens are counted on the worker that answered them.
    let metrics = runtime.block_on(async {
        reqwest::get(format!("{}/metrics", embedding_worker.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in:\n{metrics}"))
    };
    assert!(
        counter("llorch_worker_embedding_requests_total") >= 5,
        "{metrics}"
    );
    assert!(
        counter("llorch_worker_embedding_tokens_total") >= 10,
        "{metrics}"
    );
}
