//! `cargo xtask bench --cold-load`: the time to first token of a request for a model that is
//! not loaded (start, load and prefill), through orcd and a pool manager that starts the worker
//! on demand, against llama-server's router mode (`--models-dir` with autoload), which starts a
//! model instance for the request's `model` the same way. After every measured request the
//! model is unloaded again on its side (orcd's operator route `POST /v2/models/{model}/unload`,
//! the router's `POST /models/unload`), and the next request waits until each side reports it
//! unloaded: every measured request is cold. The sides alternate run by run. It also prints the
//! pool manager's memory estimate of the worker against the worker's measured RSS.

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use llorch_api::pool::{HostInfo, PoolWorker, PoolWorkerState};
use llorch_client::OrcdClient;
use serde::Serialize;

use super::{
    client::{complete, Target},
    rss_megabytes,
    table::{markdown, median, Better, Figure},
    Cleanup, BENCH_PROMPT, CTX_PER_SLOT,
};
use crate::{
    daemon::{DaemonInfo, DaemonSpec, RunDir},
    flags::BenchArgs,
    fleet::pool_manager::{self, PoolManagerSpec},
    models::placement::ModelAction,
    Context,
};

/// Tokens of each measured answer: the figure is the first one; a few more show it streams.
const ANSWER_TOKENS: u32 = 8;
/// The pool manager's host id in the bench's orcd.
const HOST_ID: &str = "bench-host";
/// The longest a load, or an unload, may take before the bench gives up: orcd's default load
/// timeout, on a machine shared with other work.
const LOAD_WAIT: Duration = Duration::from_secs(120);
/// Column of each side in the figures.
const LLAMA_SERVER: usize = 0;
const ORCD: usize = 1;

#[derive(Debug, Clone, Serialize)]
pub struct ColdLoadReport {
    pub model: String,
    pub runs: u32,
    pub slots: u32,
    pub ctx_per_slot: u32,
    pub cpu_cores: usize,
    pub unix_time: u64,
    pub llama_server: Option<String>,
    /// llama-server's router (column 0) against orcd with a pool manager (column 1).
    pub figures: Vec<Figure>,
    /// The pool manager's estimate of the worker's memory, in MiB, one per run.
    pub estimate_mib: Vec<f64>,
    /// The RSS of the worker it started, in MiB, after its first answer, one per run.
    pub worker_rss_mib: Vec<f64>,
    pub markdown: String,
}

pub fn run(args: &BenchArgs, cx: &Context) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(model) => model.clone(),
        None => crate::models::default_model_id(cx)?,
    };
    let server_path = match args.against_llama_server.as_deref() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => bail!(
            "--cold-load starts llama-server itself, in router mode with a models directory of \
             its own: pass the path of its binary, not the URL of a running one"
        ),
        Some(path) if !Path::new(path).is_file() => bail!(
            "--against-llama-server {path}: no such file\n\
             hint: build llama-server from the llama.cpp that our crate bundles (docs/benchmarks.md)"
        ),
        other => other.map(PathBuf::from),
    };
    let model_path = crate::models::ensure_downloaded(cx, &model)?;
    let binaries = crate::build::build_binaries(cx, llorch_api::Backend::Cpu, true)?;
    let scratch = tempfile::tempdir().context("creating the bench's private run directory")?;
    let cleanup = Cleanup::new(RunDir::at(scratch.path()));
    cleanup.stop_on_signal(cx);
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // orcd with the model's slots and context per slot as its policy, so the worker the pool
    // manager starts has what llama-server's instance has.
    let policies = scratch.path().join("policies.toml");
    std::fs::write(&policies, policy_file(&model, args.streams))
        .context("writing the bench's model policies")?;
    let port = crate::ports::free_port(localhost)?;
    let orcd = crate::stack::start_orcd(
        cx,
        &cleanup.run_dir,
        "bench-orcd",
        &binaries.orcd,
        &format!("127.0.0.1:{port}"),
        &[
            "--model-policies".into(),
            policies.into(),
            "--load-timeout-secs".into(),
            LOAD_WAIT.as_secs().to_string().into(),
        ],
    )
    .context("starting orcd for the bench")?;
    cleanup.daemon(orcd.name.clone());
    let orcd_url = orcd.url.clone().expect("orcd is started with a url");

    let pool_port = crate::ports::free_port(localhost)?;
    let spec = PoolManagerSpec {
        host_id: HOST_ID.to_owned(),
        port: pool_port,
        bind: localhost,
        advertise_url: format!("http://127.0.0.1:{pool_port}"),
        orchestrator_url: orcd_url.clone(),
        memory_budget: None,
        backends: vec![llorch_api::Backend::Cpu],
        models: Vec::new(),
    };
    let launch = pool_manager::Launch {
        program: binaries.worker.with_file_name(pool_manager::BINARY),
        token: None,
        model_base_dir: cx.settings.model_base_dir.clone(),
        catalog_dir: cx.settings.catalog_dir.clone(),
        log_dir: scratch.path().join("pool-logs"),
        log_level: cx.settings.log_level.clone(),
        use_systemd: false,
        timeout: Duration::from_secs(30),
    };
    cx.out.status("starting the pool manager");
    // Registered before the start: a failed start still leaves nothing running.
    cleanup.daemon(pool_manager::NAME.to_owned());
    pool_manager::start(&cleanup.run_dir, &spec, &launch)?;

    let router = match &server_path {
        None => None,
        Some(path) => {
            let models_dir = scratch.path().join("llama-server-models");
            let name = link_model(&models_dir, &model, &model_path)?;
            // Its own empty download cache, so the router lists only the linked file.
            let cache = scratch.path().join("llama-server-cache");
            std::fs::create_dir_all(&cache)?;
            let info = start_router(&cleanup.run_dir, path, &models_dir, &cache, args.streams)?;
            cleanup.daemon(info.name.clone());
            Some(Router {
                url: info
                    .url
                    .clone()
                    .expect("llama-server is started with a url"),
                pid: info.pid,
                model: name,
            })
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(measure(
        cx,
        &OrcdClient::new(&orcd_url, None),
        &model,
        router.as_ref(),
        args.runs,
    ))?;
    drop(cleanup);

    let mut report = ColdLoadReport {
        model,
        runs: args.runs,
        slots: args.streams,
        ctx_per_slot: CTX_PER_SLOT,
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        llama_server: args.against_llama_server.clone(),
        figures: measured.figures,
        estimate_mib: measured.estimate_mib,
        worker_rss_mib: measured.worker_rss_mib,
        markdown: String::new(),
    };
    report.markdown = render(&report);
    super::publish(cx, "cold-load", report.unix_time, &report, &report.markdown)
}

/// orcd's `--model-policies`: the model's workers get `slots` slots of the bench's context.
fn policy_file(model: &str, slots: u32) -> String {
    format!("[models.\"{model}\"]\nslots = {slots}\nctx_size = {CTX_PER_SLOT}\n")
}

/// Links the model file into `dir` as `<model>.gguf` (a hard link, a symlink where the file is
/// on another file system) and returns the name the router gives it: the file name without
/// `.gguf`.
fn link_model(dir: &Path, model: &str, model_path: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(format!("{model}.gguf"));
    if std::fs::hard_link(model_path, &link).is_err() {
        std::os::unix::fs::symlink(model_path, &link).with_context(|| {
            format!(
                "linking {} into llama-server's models directory {}",
                model_path.display(),
                dir.display()
            )
        })?;
    }
    Ok(router_model_name(&link))
}

/// The id llama-server's router gives a single-file model of its `--models-dir`.
fn router_model_name(file: &Path) -> String {
    file.file_name()
        .map(|name| name.to_string_lossy().replace(".gguf", ""))
        .unwrap_or_default()
}

/// llama-server's arguments in router mode: no `-m`, the models directory, autoload (its
/// default) and at most one model loaded; every instance it starts gets the same slots and
/// context per slot as the worker, its own defaults otherwise.
fn router_args(models_dir: &Path, port: u16, slots: u32) -> Vec<OsString> {
    vec![
        "--models-dir".into(),
        models_dir.into(),
        "--models-max".into(),
        "1".into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string().into(),
        "--parallel".into(),
        slots.to_string().into(),
        "-c".into(),
        (CTX_PER_SLOT * slots).to_string().into(),
    ]
}

fn start_router(
    run_dir: &RunDir,
    program: &Path,
    models_dir: &Path,
    cache: &Path,
    slots: u32,
) -> anyhow::Result<DaemonInfo> {
    let port = crate::ports::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let library_dir = program.parent().unwrap_or(Path::new("."));
    let spec = DaemonSpec {
        name: "bench-llama-server-router".into(),
        kind: "llama-server".into(),
        program: program.to_path_buf(),
        args: router_args(models_dir, port, slots),
        // Its shared libraries sit beside it in llama.cpp's build; its instances inherit both.
        env: vec![
            ("LD_LIBRARY_PATH".into(), library_dir.into()),
            ("LLAMA_CACHE".into(), cache.into()),
        ],
        port: Some(port),
        url: Some(format!("http://127.0.0.1:{port}")),
        model: None,
        backend: None,
    };
    let info = run_dir
        .spawn(&spec)
        .context("starting llama-server in router mode")?;
    if let Err(error) = crate::daemon::wait_healthy(&info, Duration::from_secs(60)) {
        let _ = run_dir.stop(&info.name, Duration::from_secs(5));
        return Err(error.context(
            "waiting for llama-server's router\nhint: router mode (`--models-dir`) needs llama.cpp b7000 or later",
        ));
    }
    Ok(info)
}

struct Router {
    url: String,
    pid: u32,
    /// The model's id in the router.
    model: String,
}

struct Measured {
    figures: Vec<Figure>,
    estimate_mib: Vec<f64>,
    worker_rss_mib: Vec<f64>,
}

fn figures() -> Vec<Figure> {
    vec![
        Figure::new(
            "cold load, time to first token",
            "ms",
            Better::Lower,
            "a streamed completion of a model that is not loaded, with a prompt new to the server: from sending the request to its first token (starting the model's process, loading it, prefill); unloaded again after every request",
            2,
        ),
        Figure::new(
            "resident memory of the model's process",
            "MB",
            Better::Lower,
            "after its first answer: llama-server's model instance (the router's child) and the worker the pool manager started",
            2,
        ),
    ]
}

/// The sides of run `run` in the order they go: they alternate, so that neither always finds
/// the machine just after the other's load; orcd alone without llama-server.
fn order(run: u32, llama_server: bool) -> Vec<usize> {
    match (llama_server, run % 2) {
        (false, _) => vec![ORCD],
        (true, 0) => vec![ORCD, LLAMA_SERVER],
        (true, _) => vec![LLAMA_SERVER, ORCD],
    }
}

async fn measure(
    cx: &Context,
    orcd: &OrcdClient,
    model: &str,
    router: Option<&Router>,
    runs: u32,
) -> anyhow::Result<Measured> {
    let http = super::loopback_http();
    orcd.wait_for(
        "/v2/hosts",
        "the bench's pool manager registered with its model on disk",
        Duration::from_secs(30),
        |hosts: &Vec<HostInfo>| {
            hosts.iter().any(|host| {
                host.host_id == HOST_ID && host.facts.models.iter().any(|disk| disk.model == model)
            })
        },
    )
    .await?;
    let mut measured = Measured {
        figures: figures(),
        estimate_mib: Vec::new(),
        worker_rss_mib: Vec::new(),
    };
    let spinner = cx.out.spinner("warming up");
    // One unmeasured load on each side reads the model file into the page cache for both.
    for side in order(0, router.is_some()) {
        cold_request(&http, orcd, model, router, side, "Warm-up").await?;
    }
    for run in 0..runs {
        for side in order(run, router.is_some()) {
            cx.out.spinner_step(
                &spinner,
                format!(
                    "run {}/{runs}: {}",
                    run + 1,
                    if side == ORCD { "orcd" } else { "llama-server" }
                ),
            );
            let (ttft, rss, estimate) = cold_request(
                &http,
                orcd,
                model,
                router,
                side,
                &format!("Cold {run}, side {side}."),
            )
            .await?;
            measured.figures[0].push(side, ttft);
            measured.figures[1].push(side, rss);
            if let Some(estimate) = estimate {
                measured.estimate_mib.push(estimate);
                measured.worker_rss_mib.push(rss);
            }
        }
    }
    spinner.finish_and_clear();
    Ok(measured)
}

/// One cold request on `side`: waits until the model is unloaded there, sends it, reads the
/// memory of the process that served it, and unloads it again. Returns the time to first token
/// in ms, that process's RSS in MB (MiB) and, for orcd, the pool manager's estimate in MiB.
async fn cold_request(
    http: &reqwest::Client,
    orcd: &OrcdClient,
    model: &str,
    router: Option<&Router>,
    side: usize,
    first_words: &str,
) -> anyhow::Result<(f64, f64, Option<f64>)> {
    let prompt = format!("{first_words} {BENCH_PROMPT}");
    if side == ORCD {
        wait_unloaded_in_orcd(orcd, model).await?;
        let target = Target::Orcd {
            url: orcd.base_url().to_owned(),
            model: model.to_owned(),
        };
        let sample = complete(http, &target, &prompt, ANSWER_TOKENS).await?;
        let worker = running_worker(orcd, model).await?;
        let pid = worker
            .pid
            .context("the pool manager's running worker has no pid")?;
        let rss = rss_megabytes(pid);
        let estimate = worker.estimated_bytes as f64 / 1_048_576.0;
        let _: ModelAction = orcd
            .post_json(&format!("/v2/models/{model}/unload"))
            .await
            .context("asking orcd to unload the model")?;
        wait_unloaded_in_orcd(orcd, model).await?;
        return Ok((sample.time_to_first_token_ms(), rss, Some(estimate)));
    }
    let router = router.expect("llama-server is measured only when it runs");
    wait_router_status(http, router, "unloaded").await?;
    let target = Target::LlamaRouter {
        url: router.url.clone(),
        model: router.model.clone(),
    };
    let sample = complete(http, &target, &prompt, ANSWER_TOKENS).await?;
    let rss = total_rss(&children(router.pid));
    let answer = http
        .post(format!("{}/models/unload", router.url))
        .json(&serde_json::json!({ "model": router.model }))
        .send()
        .await
        .context("asking llama-server's router to unload the model")?;
    if !answer.status().is_success() {
        bail!(
            "llama-server's router refused to unload {}: {}",
            router.model,
            answer.text().await.unwrap_or_default()
        );
    }
    wait_router_status(http, router, "unloaded").await?;
    Ok((sample.time_to_first_token_ms(), rss, None))
}

/// Until orcd lists the model as `unloaded` and its host reports no worker of it (the stopped
/// worker's process gone and its memory back).
async fn wait_unloaded_in_orcd(orcd: &OrcdClient, model: &str) -> anyhow::Result<()> {
    orcd.wait_for(
        "/v1/models",
        &format!("orcd to list {model} as unloaded"),
        LOAD_WAIT,
        |models: &serde_json::Value| model_status(models, model) == Some("unloaded"),
    )
    .await?;
    orcd.wait_for(
        "/v2/hosts",
        &format!("the pool manager to report no worker of {model}"),
        LOAD_WAIT,
        |hosts: &Vec<HostInfo>| workers_of(hosts, model).next().is_none(),
    )
    .await?;
    Ok(())
}

/// The running worker of `model` once its host's facts list it (the next heartbeat after its
/// start).
async fn running_worker(orcd: &OrcdClient, model: &str) -> anyhow::Result<PoolWorker> {
    let hosts = orcd
        .wait_for(
            "/v2/hosts",
            &format!("the pool manager to report its running worker of {model}"),
            LOAD_WAIT,
            |hosts: &Vec<HostInfo>| {
                workers_of(hosts, model)
                    .any(|worker| worker.state == PoolWorkerState::Running && worker.pid.is_some())
            },
        )
        .await?;
    let worker = workers_of(&hosts, model)
        .find(|worker| worker.state == PoolWorkerState::Running)
        .cloned()
        .expect("the wait found one");
    Ok(worker)
}

fn workers_of<'a>(hosts: &'a [HostInfo], model: &'a str) -> impl Iterator<Item = &'a PoolWorker> {
    hosts
        .iter()
        .flat_map(|host| &host.facts.workers)
        .filter(move |worker| worker.launch.model == model)
}

/// The `status` of `model` in orcd's `/v1/models`.
fn model_status<'a>(models: &'a serde_json::Value, model: &str) -> Option<&'a str> {
    models["data"]
        .as_array()?
        .iter()
        .find(|entry| entry["id"] == model)?["status"]
        .as_str()
}

/// The status of the router's model in its `GET /models` (`data[].status.value`).
fn router_status<'a>(models: &'a serde_json::Value, model: &str) -> Option<&'a str> {
    models["data"]
        .as_array()?
        .iter()
        .find(|entry| entry["id"] == model)?["status"]["value"]
        .as_str()
}

/// Polls the router's `GET /models` until its model has `status`.
async fn wait_router_status(
    http: &reqwest::Client,
    router: &Router,
    status: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + LOAD_WAIT;
    let mut last = String::new();
    loop {
        let answer = match http.get(format!("{}/models", router.url)).send().await {
            Ok(response) => response.json::<serde_json::Value>().await.ok(),
            Err(error) => {
                last = error.to_string();
                None
            }
        };
        if let Some(models) = answer {
            match router_status(&models, &router.model) {
                Some(now) if now == status => return Ok(()),
                _ => last = models.to_string(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "llama-server's router did not report {} as {status} within {} s; its last answer: {last}",
                router.model,
                LOAD_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The processes `pid` started (the router's model instances), from every one of its threads'
/// `children` list: the router starts an instance from whichever thread serves the request.
fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    let mut children: Vec<u32> = tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    children.sort_unstable();
    children.dedup();
    children
}

/// The RSS of `pids` together in MB; NaN (not measured) when there is none.
fn total_rss(pids: &[u32]) -> f64 {
    let measured: Vec<f64> = pids
        .iter()
        .map(|pid| rss_megabytes(*pid))
        .filter(|rss| rss.is_finite())
        .collect();
    if measured.is_empty() {
        return f64::NAN;
    }
    measured.iter().sum()
}

fn render(report: &ColdLoadReport) -> String {
    let memory = match (
        median(&report.estimate_mib),
        median(&report.worker_rss_mib),
    ) {
        (Some(estimate), Some(rss)) if rss > 0.0 => format!(
            "\nThe pool manager's memory estimate of the worker: {estimate:.0} MiB against its measured RSS of {rss:.0} MiB after its first answer ({:+.1} %; the issue asks for ±25 %).\n",
            (estimate - rss) / rss * 100.0
        ),
        _ => String::new(),
    };
    format!(
        "{model}, cold load, {tokens} greedy tokens, {slots} slots of {ctx} tokens on both, each \
         server's default threads, {runs} runs alternating the sides, {cores} cores; each cell is \
         the median [min–max] over the runs; llama-server unloads through its router's \
         `POST /models/unload`, orcd through `POST /v2/models/{model}/unload`\n\n{table}{memory}",
        model = report.model,
        tokens = ANSWER_TOKENS,
        slots = report.slots,
        ctx = report.ctx_per_slot,
        runs = report.runs,
        cores = report.cpu_cores,
        table = markdown(
            ["llama-server router", "orcd + pool manager"],
            &report.figures
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_gets_a_models_dir_no_model_and_the_workers_slots() {
        let args: Vec<String> = router_args(Path::new("/tmp/models"), 8123, 4)
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let value = |flag: &str| {
            let at = args.iter().position(|arg| arg == flag).unwrap();
            args[at + 1].clone()
        };
        assert_eq!(value("--models-dir"), "/tmp/models");
        assert_eq!(value("--models-max"), "1");
        assert_eq!(value("--port"), "8123");
        assert_eq!(value("--parallel"), "4");
        // 4 slots of 2048 tokens, as the worker's policy.
        assert_eq!(value("-c"), "8192");
        assert!(!args.iter().any(|arg| arg == "-m" || arg == "--model"));
        assert!(!args.iter().any(|arg| arg == "--no-models-autoload"));
    }

    #[test]
    fn the_policy_gives_the_worker_the_same_slots_and_context() {
        let text = policy_file("gemma3-270m", 4);
        let table: toml::Value = toml::from_str(&text).unwrap();
        let policy = &table["models"]["gemma3-270m"];
        assert_eq!(policy["slots"].as_integer(), Some(4));
        assert_eq!(policy["ctx_size"].as_integer(), Some(2048));
    }

    #[test]
    fn linked_models_are_named_as_the_router_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.gguf");
        std::fs::write(&source, b"GGUF").unwrap();
        let models = dir.path().join("models");
        let name = link_model(&models, "gemma3-270m", &source).unwrap();
        assert_eq!(name, "gemma3-270m");
        assert_eq!(
            std::fs::read(models.join("gemma3-270m.gguf")).unwrap(),
            b"GGUF"
        );
    }

    #[test]
    fn statuses_are_read_from_both_model_lists() {
        let orcd = serde_json::json!({"data": [
            {"id": "qwen", "status": "loaded"},
            {"id": "gemma3-270m", "status": "unloaded"},
        ]});
        assert_eq!(model_status(&orcd, "gemma3-270m"), Some("unloaded"));
        assert_eq!(model_status(&orcd, "missing"), None);
        let router = serde_json::json!({"object": "list", "data": [
            {"id": "gemma3-270m", "status": {"value": "loading", "args": []}},
        ]});
        assert_eq!(router_status(&router, "gemma3-270m"), Some("loading"));
        assert_eq!(router_status(&serde_json::json!({}), "gemma3-270m"), None);
    }

    #[test]
    fn a_process_started_from_another_thread_is_found_and_its_memory_counted() {
        // A child started from a second thread is listed in that thread's `children` only.
        let child = std::thread::spawn(|| {
            crate::process::cmd("sleep")
                .arg("30")
                .expression()
                .start()
                .unwrap()
        })
        .join()
        .unwrap();
        let found = children(std::process::id());
        let pid = child.pids()[0];
        let _ = child.kill();
        assert!(found.contains(&pid), "{found:?}");
        assert!(total_rss(&[]).is_nan());
        assert!(total_rss(&[std::process::id()]) > 0.0);
    }

    #[test]
    fn the_sides_alternate_run_by_run() {
        assert_eq!(order(0, true), [ORCD, LLAMA_SERVER]);
        assert_eq!(order(1, true), [LLAMA_SERVER, ORCD]);
        assert_eq!(order(2, true), order(0, true));
        assert_eq!(order(1, false), [ORCD]);
    }

    #[test]
    fn the_report_gives_the_ratio_and_the_estimate_error() {
        let mut figures = figures();
        for (server, ours) in [(1000.0, 800.0), (1200.0, 900.0), (1100.0, 1000.0)] {
            figures[0].push(LLAMA_SERVER, server);
            figures[0].push(ORCD, ours);
        }
        let report = ColdLoadReport {
            model: "gemma3-270m".into(),
            runs: 3,
            slots: 4,
            ctx_per_slot: CTX_PER_SLOT,
            cpu_cores: 2,
            unix_time: 0,
            llama_server: None,
            figures,
            estimate_mib: vec![360.0, 370.0, 380.0],
            worker_rss_mib: vec![400.0, 400.0, 400.0],
            markdown: String::new(),
        };
        let text = render(&report);
        // Medians 1100 and 900: 0.82.
        assert!(
            text.contains("| 1100 [1000–1200] | 900 [800–1000] | 0.82"),
            "{text}"
        );
        assert!(
            text.contains(
                "370 MiB against its measured RSS of 400 MiB after its first answer (-7.5 %"
            ),
            "{text}"
        );
    }
}
