//! `cargo xtask bench`: the release worker measured against llama.cpp's own `llama-server` on
//! the same model and machine, and orcd's cost measured against talking to the worker direct.
//! Requests alternate between the two sides (A B A B) within one run, so that a noisy machine
//! slows both alike and the ratios stay meaningful. It starts its own orcd, worker and (given a
//! path) llama-server on free ports in a private run directory and stops them at the end.

mod ceilings;
mod client;
mod cold_load;
mod routing;
mod schema_sizes;
mod speculation;
mod table;

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _};
use llorch_api::{pool::WorkerLaunch, WorkerInfo, WorkerState};
use serde::Serialize;

use self::client::{aggregate_decode_rate, complete, end_to_end_rate, Sample, Target};
use self::table::{markdown, percentile, Better, Figure};
use crate::{
    daemon::{DaemonInfo, DaemonSpec, RunDir},
    flags::BenchArgs,
    pool::{launch::SpawnSpec, worker as pool_worker},
    process, Context,
};

/// About 100 tokens of plain English, so prompt processing is measured on more than a handful
/// of tokens and every run sees the same input.
const BENCH_PROMPT: &str = "The history of computing spans several centuries, from mechanical \
calculators built by hand to the vast data centres that power the modern internet. Early pioneers \
imagined machines that could follow instructions, store numbers and print tables without error. \
Over time, vacuum tubes gave way to transistors, and transistors to integrated circuits holding \
billions of switches. Today, language models run on hardware that fits on a desk, and a small \
cluster of ordinary computers can serve many people at once. In this essay, we look at how";

/// The conversation figure: its last turn is measured.
const TURNS: usize = 8;
/// Tokens of each answer in the conversation.
const ANSWER_TOKENS: u32 = 64;
/// Concurrent streams of orcd's many-streams figure, and tokens per stream there.
const MANY_STREAMS: u32 = 64;
const MANY_STREAMS_TOKENS: u32 = 16;
/// Tokens each slot holds, the same on both servers.
const CTX_PER_SLOT: u32 = 2048;

/// First words of the prompts behind the cold figures, taken in turn ([`FreshWords`]). Their
/// first letters differ from each other and from the first words of every other prompt the
/// bench sends ("Warm-up", "Conversation", "Path", "Stream"), so a cold prompt's first token
/// is in no cache on either side: a word sharing only its first letter with a cached prompt
/// can still share a token, and a shared first token makes every later token a hit too.
const FRESH_WORDS: [&str; 22] = [
    "Amber",
    "Bison",
    "Delta",
    "Ember",
    "Fjord",
    "Glacier",
    "Harbor",
    "Iris",
    "Jasper",
    "Kettle",
    "Lantern",
    "Meadow",
    "Nectar",
    "Orchid",
    "Quartz",
    "Raven",
    "Timber",
    "Umber",
    "Velvet",
    "Xylophone",
    "Yarrow",
    "Zephyr",
];

/// Hands out [`FRESH_WORDS`] in turn. With 4 slots a side, a word comes back only after 21
/// other cold prompts, long after its prompt left every slot; the servers' own count of cached
/// prompt tokens (the "cold requests" figure) shows whether it did.
#[derive(Debug, Default)]
pub(super) struct FreshWords {
    next: usize,
}

impl FreshWords {
    pub fn next_word(&mut self) -> &'static str {
        let word = FRESH_WORDS[self.next % FRESH_WORDS.len()];
        self.next += 1;
        word
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub runs: u32,
    pub max_tokens: u32,
    pub streams: u32,
    pub threads: Option<u32>,
    pub busy_cores: u32,
    pub cpu_cores: usize,
    pub unix_time: u64,
    pub llama_server: Option<String>,
    /// llama-server (column 0) against the worker (column 1).
    pub comparison: Vec<Figure>,
    /// The worker direct (column 0) against the same worker through orcd (column 1).
    pub orcd: Vec<Figure>,
    /// Least-loaded routing (column 0) against cache-aware routing (column 1); empty without
    /// `--routing`.
    pub routing: Vec<Figure>,
    /// llama.cpp's benchmark tools (column 0) against the worker (column 1); empty unless
    /// `--threads` and the tools sit beside the llama-server binary.
    pub ceilings: Vec<Figure>,
    /// The compared worker's thread count at the end and how often it changed during the run
    /// (its `/metrics`): what the default, adaptive count did with this machine's load.
    pub worker_threads: Option<WorkerThreads>,
    pub markdown: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct WorkerThreads {
    pub at_end: u64,
    pub changes: u64,
}

/// Stops the bench's daemons and busy loops however `run` ends: by returning, by an error, or
/// by Ctrl-C, SIGTERM or SIGHUP (the daemons run in their own sessions, so the terminal's
/// signal does not reach them; killed without this, the bench left llama-server, the worker
/// and orcd running).
struct Cleanup {
    run_dir: RunDir,
    started: Arc<Mutex<Started>>,
}

#[derive(Default)]
struct Started {
    daemons: Vec<String>,
    busy: Vec<process::Handle>,
}

impl Cleanup {
    fn new(run_dir: RunDir) -> Cleanup {
        Cleanup {
            run_dir,
            started: Arc::new(Mutex::new(Started::default())),
        }
    }

    /// Stops what was started on Ctrl-C, SIGTERM or SIGHUP, then exits 130.
    fn stop_on_signal(&self, cx: &Context) {
        let (run_dir, started) = (self.run_dir.clone(), self.started.clone());
        let installed = ctrlc::set_handler(move || {
            eprintln!("bench interrupted: stopping its servers");
            stop_all(&run_dir, &started);
            std::process::exit(130);
        });
        if let Err(error) = installed {
            cx.out.debug(format!(
                "bench: no signal handler ({error}); an interrupted bench leaves its servers running"
            ));
        }
    }

    fn daemon(&self, name: String) {
        lock(&self.started).daemons.push(name);
    }

    fn busy(&self, handle: process::Handle) {
        lock(&self.started).busy.push(handle);
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        stop_all(&self.run_dir, &self.started);
    }
}

/// A panic elsewhere must not keep the servers from being stopped.
fn lock(started: &Mutex<Started>) -> std::sync::MutexGuard<'_, Started> {
    started
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stops what was started, last first; what is stopped is forgotten, so a signal during
/// `drop` (or the other way round) stops nothing twice.
fn stop_all(run_dir: &RunDir, started: &Mutex<Started>) {
    let mut started = lock(started);
    for busy in started.busy.drain(..) {
        // Reaped too: a killed loop is otherwise a zombie until the bench exits.
        let _ = busy.kill();
        let _ = busy.wait();
    }
    while let Some(name) = started.daemons.pop() {
        let _ = run_dir.stop(&name, Duration::from_secs(10));
    }
}

pub fn run(args: BenchArgs, cx: &Context) -> anyhow::Result<()> {
    if args.runs == 0 || args.streams == 0 || args.max_tokens < 2 {
        bail!("--runs and --streams must be at least 1, --max-tokens at least 2");
    }
    if args.schema_sizes {
        return schema_sizes::run(&args, cx);
    }
    if args.speculation {
        return speculation::run(&args, cx);
    }
    if args.cold_load {
        return cold_load::run(&args, cx);
    }
    let model = match &args.model {
        Some(model) => model.clone(),
        None => crate::models::default_model_id(cx)?,
    };
    let model_path = crate::models::ensure_downloaded(cx, &model)?;
    let binaries = crate::build::build_binaries(cx, llorch_api::Backend::Cpu, true)?;
    let scratch = tempfile::tempdir().context("creating the bench's private run directory")?;
    let cleanup = Cleanup::new(RunDir::at(scratch.path()));
    cleanup.stop_on_signal(cx);
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let port = crate::ports::free_port(localhost)?;
    let orcd = crate::stack::start_orcd(
        cx,
        &cleanup.run_dir,
        "bench-orcd",
        &binaries.orcd,
        &format!("127.0.0.1:{port}"),
        &[
            "--queue-limit".into(),
            (2 * MANY_STREAMS).to_string().into(),
        ],
    )
    .context("starting orcd for the bench")?;
    cleanup.daemon(orcd.name.clone());
    let orcd_url = orcd.url.clone().expect("orcd is started with a url");
    let launch = WorkerLaunch {
        backend: cx.settings.default_backend,
        slots: Some(args.streams),
        ctx_size: Some(CTX_PER_SLOT),
        threads: args.threads,
        ..WorkerLaunch::of_model(&model)
    };
    let spec = SpawnSpec {
        orchestrator_url: Some(orcd_url.clone()),
        id: Some("bench-worker".to_owned()),
        timeout: Duration::from_secs(120),
        worker_args: vec!["--queue-size".into(), MANY_STREAMS.to_string()],
        ..SpawnSpec::new(launch).with_program(&binaries.worker)
    };
    let worker = pool_worker::start_worker(cx, &cleanup.run_dir, &spec)?;
    cleanup.daemon(worker.name.clone());
    let worker_url = worker.url.clone().expect("workers are started with a url");

    let llama_server = match &args.against_llama_server {
        None => None,
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => Some((
            Target::LlamaServer {
                url: url.trim_end_matches('/').to_owned(),
            },
            None,
        )),
        Some(path) => {
            let info = start_llama_server(
                &cleanup.run_dir,
                "bench-llama-server",
                path,
                &model_path,
                &args,
                &[],
            )?;
            cleanup.daemon(info.name.clone());
            let url = info
                .url
                .clone()
                .expect("llama-server is started with a url");
            Some((Target::LlamaServer { url }, Some(info.pid)))
        }
    };

    let routing_targets = if args.routing {
        routing::start(cx, &cleanup, &binaries, &model, args.streams, args.threads)?
    } else {
        Vec::new()
    };

    for _ in 0..args.busy_cores {
        let busy = process::cmd("sh")
            .args(["-c", "while :; do :; done"])
            .expression()
            .stdin_null()
            .stdout_null()
            .start()
            .context("starting a busy-loop process (`sh`) for --busy-cores")?;
        cleanup.busy(busy);
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sides = Sides {
        llama_server: llama_server.as_ref().map(|(target, _)| target.clone()),
        worker: Target::Worker {
            url: worker_url.clone(),
        },
        orcd: Target::Orcd {
            url: orcd_url.clone(),
            model: model.clone(),
        },
        worker_url: worker_url.clone(),
    };
    let (mut comparison, mut orcd_figures, routing_figures, worker_end_to_end) =
        runtime.block_on(async {
            let http = loopback_http();
            wait_for_registration(&orcd_url, &model, 1).await?;
            for target in &routing_targets {
                if let Target::Orcd { url, .. } = target {
                    wait_for_registration(url, &model, 2).await?;
                }
            }
            measure(cx, &http, &sides, &routing_targets, &args).await
        })?;
    orcd_figures.retain(Figure::measured);
    let worker_threads = runtime.block_on(worker_threads(&worker_url));
    // Memory after the whole workload, with every slot used.
    let rss = comparison
        .iter_mut()
        .find(|figure| figure.name == RSS_NAME)
        .expect("the comparison has an RSS figure");
    if let Some(pid) = llama_server.as_ref().and_then(|(_, pid)| *pid) {
        rss.push(0, rss_megabytes(pid));
    }
    rss.push(1, rss_megabytes(worker.pid));
    comparison.retain(Figure::measured);
    drop(cleanup);
    // After the servers are gone, so the tools have the machine to themselves as they had.
    let ceilings = measure_ceilings(cx, &args, &model_path, &comparison, &worker_end_to_end)?;

    let llama_server_name = args.against_llama_server.clone();
    let mut report = BenchReport {
        model,
        runs: args.runs,
        max_tokens: args.max_tokens,
        streams: args.streams,
        threads: args.threads,
        busy_cores: args.busy_cores,
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        llama_server: llama_server_name,
        comparison,
        orcd: orcd_figures,
        routing: routing_figures,
        ceilings,
        worker_threads,
        markdown: String::new(),
    };
    report.markdown = render(&report);
    let path = write_report(cx, &report)?;
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    cx.out.println(&report.markdown);
    cx.out.status(format!("written to {}", path.display()));
    Ok(())
}

/// The worker's thread gauge and change counter from its `/metrics`; `None` if it does not
/// report them.
/// The engine steps the worker has run so far (`llorch_worker_decode_step_seconds_count`).
async fn decode_steps(http: &reqwest::Client, worker_url: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{worker_url}/metrics"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("reading the bench worker's /metrics")?
        .text()
        .await?;
    crate::metrics::metric_sample(&text, "llorch_worker_decode_step_seconds_count")
        .context("the bench worker's /metrics has no llorch_worker_decode_step_seconds_count")
}

async fn worker_threads(worker_url: &str) -> Option<WorkerThreads> {
    let text = reqwest::get(format!("{worker_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(WorkerThreads {
        at_end: crate::metrics::metric_sample(&text, "llorch_worker_threads")? as u64,
        changes: crate::metrics::metric_sample(&text, "llorch_worker_thread_changes_total")? as u64,
    })
}

/// Starts the llama-server binary at `path` like the bench's worker: same model, slots and
/// context per slot, its own defaults otherwise, plus `extra` arguments.
fn start_llama_server(
    run_dir: &RunDir,
    name: &str,
    path: &str,
    model_path: &std::path::Path,
    args: &BenchArgs,
    extra: &[&str],
) -> anyhow::Result<DaemonInfo> {
    let program = std::path::PathBuf::from(path);
    if !program.is_file() {
        bail!(
            "--against-llama-server {path}: no such file, and not an http:// URL\n\
             hint: build llama-server from the llama.cpp that our crate bundles (see the README's Benchmarks section), or pass the URL of a running one"
        );
    }
    let port = crate::ports::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let mut server_args: Vec<OsString> = vec![
        "-m".into(),
        model_path.into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string().into(),
        "--parallel".into(),
        args.streams.to_string().into(),
        "-c".into(),
        (CTX_PER_SLOT * args.streams).to_string().into(),
    ];
    if let Some(threads) = args.threads {
        server_args.extend([
            "--threads".into(),
            threads.to_string().into(),
            "--threads-batch".into(),
            threads.to_string().into(),
        ]);
    }
    server_args.extend(extra.iter().map(OsString::from));
    let spec = DaemonSpec {
        name: name.into(),
        kind: "llama-server".into(),
        program,
        args: server_args,
        env: Vec::new(),
        port: Some(port),
        url: Some(format!("http://127.0.0.1:{port}")),
        model: None,
        backend: None,
    };
    let info = run_dir.spawn(&spec).context("starting llama-server")?;
    if let Err(error) = crate::daemon::wait_healthy(&info, Duration::from_secs(120)) {
        let _ = run_dir.stop(&info.name, Duration::from_secs(5));
        return Err(error.context("waiting for llama-server"));
    }
    Ok(info)
}

struct Sides {
    llama_server: Option<Target>,
    worker: Target,
    orcd: Target,
    /// The worker's base URL, for its /metrics.
    worker_url: String,
}

impl Sides {
    /// The comparison's columns: llama-server (0, when given) and the worker (1).
    fn compared(&self) -> Vec<(usize, &Target)> {
        let mut sides = Vec::new();
        if let Some(llama_server) = &self.llama_server {
            sides.push((0, llama_server));
        }
        sides.push((1, &self.worker));
        sides
    }
}

const RSS_NAME: &str = "resident memory after the run";
const COLD_CACHED_NAME: &str = "cold requests, prompt tokens from a cache";

fn comparison_figures() -> Vec<Figure> {
    vec![
        Figure::new(
            "single-stream decode",
            "tok/s",
            Better::Higher,
            "one stream alone, a ~100-token prompt whose first word is new to both servers: its tokens after the first divided by the time from its first to its last token",
            2,
        ),
        Figure::new(
            "time to first token, cold against cold",
            "ms",
            Better::Lower,
            "the same stream: from sending the request to receiving the first token; its first word is new to both servers, so neither answers from a cached prefix (the figure of cold requests' cached prompt tokens shows what they reported)",
            2,
        ),
        Figure::new(
            "concurrent streams, aggregate decode",
            "tok/s",
            Better::Higher,
            "`--streams` streams sent at once, fresh prompts: all their tokens after each stream's first, divided by the time from the earliest first token to the latest last token",
            2,
        ),
        Figure::new(
            "conversation turn 8, time to first token, warm against warm",
            "ms",
            Better::Lower,
            "a conversation where each turn resends the whole history plus the last answer (64 tokens) and a new question; the time to first token of turn 8, each server with its own cache of turn 7",
            2,
        ),
        Figure::new(
            "conversation turn 8, time to first token, cold against cold",
            "ms",
            Better::Lower,
            "turn 8's prompt with its first word replaced by one new to both servers, so that no cache holds any of it (the figure of cold requests' cached prompt tokens shows what they reported)",
            2,
        ),
        Figure::new(
            "conversation turn 8, cached prompt tokens",
            "tokens",
            Better::Higher,
            "the prompt tokens of turn 8 that the server reports it took from its cache",
            2,
        ),
        Figure::new(
            COLD_CACHED_NAME,
            "tokens",
            Better::Lower,
            "the prompt tokens each server reported taking from its cache on every request of the figures marked cold against cold (single stream, conversation turn 8 cold): 0, or 1 for a BOS token every prompt starts with, means cold",
            2,
        ),
        Figure::new(
            RSS_NAME,
            "MB",
            Better::Lower,
            "resident set size of the server process after the whole run (a running server given by URL is not measured)",
            2,
        ),
    ]
}

fn orcd_figures() -> Vec<Figure> {
    vec![
        Figure::new(
            "single-stream decode",
            "tok/s",
            Better::Higher,
            "as in the comparison, straight to the worker or through orcd",
            2,
        ),
        Figure::new(
            "time to first token, cold against cold",
            "ms",
            Better::Lower,
            "as in the comparison, straight to the worker or through orcd",
            2,
        ),
        Figure::new(
            "64 streams, aggregate decode",
            "tok/s",
            Better::Higher,
            "64 streams of 16 tokens sent at once (the worker queues what its slots cannot take): defined as the aggregate decode of the comparison",
            2,
        ),
        Figure::new(
            "64 streams, time to first token p50, cold against cold",
            "ms",
            Better::Lower,
            "the median over the 64 streams of their time to first token, queueing included",
            2,
        ),
        Figure::new(
            "64 streams, engine steps",
            "steps",
            Better::Lower,
            "the decode steps the worker ran for the 64 streams (`llorch_worker_decode_step_seconds_count`), 16 per wave of `--streams` streams when each wave starts in one step",
            2,
        ),
    ]
}

/// The worker's concurrent streams measured as llama-batched-bench measures its own run, for
/// the ceilings: one end-to-end rate per run, and the prompt tokens of each stream.
#[derive(Debug, Default)]
struct WorkerEndToEnd {
    rates: Vec<f64>,
    prompt_tokens: Vec<u32>,
}

impl WorkerEndToEnd {
    /// The median prompt length, which llama-batched-bench is given so that both measure the
    /// same mix of prompt and generated tokens.
    fn prompt_tokens(&self) -> Option<u32> {
        let mut tokens = self.prompt_tokens.clone();
        tokens.sort_unstable();
        tokens.get(tokens.len() / 2).copied()
    }
}

async fn measure(
    cx: &Context,
    http: &reqwest::Client,
    sides: &Sides,
    routing_targets: &[Target],
    args: &BenchArgs,
) -> anyhow::Result<(Vec<Figure>, Vec<Figure>, Vec<Figure>, WorkerEndToEnd)> {
    let mut worker_end_to_end = WorkerEndToEnd::default();
    let mut comparison = comparison_figures();
    let mut orcd = orcd_figures();
    let mut routing_figures = if routing_targets.is_empty() {
        Vec::new()
    } else {
        routing::figures()
    };
    let spinner = cx.out.spinner("warming up");
    // One unmeasured stream on each side pages the model in and warms the caches.
    for (_, target) in sides.compared() {
        complete(http, target, "Warm-up. The capital of France is", 8).await?;
    }
    complete(http, &sides.orcd, "Warm-up. The capital of France is", 8).await?;

    let mut fresh = FreshWords::default();
    let mut cold_cached = Figure::new(COLD_CACHED_NAME, "tokens", Better::Lower, "", 2);
    for run in 0..args.runs {
        let progress = |what: &str| format!("run {}/{}: {what}", run + 1, args.runs);
        cx.out.spinner_step(&spinner, progress("single stream"));
        for (column, target) in sides.compared() {
            let word = fresh.next_word();
            let prompt = format!("{word}: run {run}, side {column}. {BENCH_PROMPT}");
            let sample = complete(http, target, &prompt, args.max_tokens).await?;
            comparison[0].push(column, sample.decode_rate());
            comparison[1].push(column, sample.time_to_first_token_ms());
            cold_cached.push(column, f64::from(sample.cached_tokens));
        }

        cx.out
            .spinner_step(&spinner, progress("concurrent streams"));
        for (column, target) in sides.compared() {
            let samples = concurrent(http, target, args.streams, args.max_tokens, |stream| {
                format!("Stream {stream} of run {run}, side {column}. {BENCH_PROMPT}")
            })
            .await?;
            comparison[2].push(column, aggregate_decode_rate(&samples));
            if column == 1 {
                worker_end_to_end.rates.push(end_to_end_rate(&samples));
                worker_end_to_end
                    .prompt_tokens
                    .extend(samples.iter().map(|sample| sample.prompt_tokens));
            }
        }

        // Under --busy-cores a server that spins at its barriers takes minutes per request,
        // and the figures the contention target is about are the two above: the conversation,
        // orcd's cost and routing are measured on an idle machine only (the report says so).
        if args.busy_cores > 0 {
            continue;
        }
        cx.out.spinner_step(&spinner, progress("conversation"));
        let compared = sides.compared();
        let mut histories: Vec<String> = compared
            .iter()
            .map(|(column, _)| format!("Conversation {run} on side {column}. {BENCH_PROMPT}"))
            .collect();
        for turn in 1..=TURNS {
            for (index, (column, target)) in compared.iter().enumerate() {
                let sample = complete(http, target, &histories[index], ANSWER_TOKENS).await?;
                if turn == TURNS {
                    comparison[3].push(*column, sample.time_to_first_token_ms());
                    comparison[5].push(*column, f64::from(sample.cached_tokens));
                    continue;
                }
                histories[index].push_str(&sample.text);
                histories[index].push_str(&format!(
                    "\n\nQuestion {turn}: and what happened after that?\n\nAnswer {turn}:"
                ));
            }
        }
        for (index, (column, target)) in compared.iter().enumerate() {
            let cold = histories[index].replacen("Conversation", fresh.next_word(), 1);
            let sample = complete(http, target, &cold, ANSWER_TOKENS).await?;
            comparison[4].push(*column, sample.time_to_first_token_ms());
            cold_cached.push(*column, f64::from(sample.cached_tokens));
        }

        cx.out
            .spinner_step(&spinner, progress("orcd against direct"));
        let paths = [(0, &sides.worker), (1, &sides.orcd)];
        for (column, target) in paths {
            let prompt = format!("Path run {run}, side {column}. {BENCH_PROMPT}");
            let sample = complete(http, target, &prompt, args.max_tokens).await?;
            orcd[0].push(column, sample.decode_rate());
            orcd[1].push(column, sample.time_to_first_token_ms());
        }
        for (column, target) in paths {
            let steps_before = decode_steps(http, &sides.worker_url).await?;
            let samples = concurrent(http, target, MANY_STREAMS, MANY_STREAMS_TOKENS, |stream| {
                format!("Stream {stream} of run {run} on path {column}: the capital of France is")
            })
            .await?;
            orcd[4].push(
                column,
                decode_steps(http, &sides.worker_url).await? - steps_before,
            );
            orcd[2].push(column, aggregate_decode_rate(&samples));
            let first_tokens: Vec<f64> =
                samples.iter().map(Sample::time_to_first_token_ms).collect();
            if let Some(p50) = percentile(&first_tokens, 50.0) {
                orcd[3].push(column, p50);
            }
        }

        if !routing_targets.is_empty() {
            cx.out.spinner_step(&spinner, progress("routing"));
            routing::measure(http, routing_targets, run, &mut routing_figures).await?;
        }
    }
    spinner.finish_and_clear();
    let cold = comparison
        .iter_mut()
        .find(|figure| figure.name == COLD_CACHED_NAME)
        .expect("the comparison has a cold-cache figure");
    cold.columns = cold_cached.columns;
    Ok((comparison, orcd, routing_figures, worker_end_to_end))
}

/// `streams` completions sent at once, each with its own prompt.
async fn concurrent(
    http: &reqwest::Client,
    target: &Target,
    streams: u32,
    max_tokens: u32,
    prompt: impl Fn(u32) -> String,
) -> anyhow::Result<Vec<Sample>> {
    let prompts: Vec<String> = (0..streams).map(prompt).collect();
    futures::future::try_join_all(
        prompts
            .iter()
            .map(|prompt| complete(http, target, prompt, max_tokens)),
    )
    .await
}

/// Waits until `count` live workers of `model` are registered with the orcd at `orcd_url`.
async fn wait_for_registration(orcd_url: &str, model: &str, count: usize) -> anyhow::Result<()> {
    let serves = |worker: &WorkerInfo| worker.model == model && worker.state == WorkerState::Live;
    llorch_client::OrcdClient::new(orcd_url, None)
        .wait_until_live(
            &format!("{count} bench worker(s) of {model}"),
            Duration::from_secs(30),
            |workers| workers.iter().filter(|worker| serves(worker)).count() >= count,
        )
        .await?;
    Ok(())
}

/// The bench's HTTP client: every side it measures listens on this machine's loopback.
fn loopback_http() -> reqwest::Client {
    llorch_client::http::client_for("http://127.0.0.1", None)
}

/// Resident set size of a process in MB, NaN if it cannot be read.
fn rss_megabytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(f64::NAN, |kilobytes| kilobytes / 1024.0)
}

fn render(report: &BenchReport) -> String {
    let threads = report
        .threads
        .map_or("each server's default threads".to_owned(), |threads| {
            format!("--threads {threads} on both")
        });
    format!(
        "{model}, greedy, {tokens} tokens per stream, {streams} slots of {ctx} tokens, {threads}, \
         {runs} runs alternating the sides, {cores} cores, {busy} busy-loop processes; \
         each cell is the median [min–max] over the runs\n\n\
         {comparison}\n{orcd}{ceilings}{routing}{worker_threads}",
        model = report.model,
        tokens = report.max_tokens,
        streams = report.streams,
        ctx = CTX_PER_SLOT,
        runs = report.runs,
        cores = report.cpu_cores,
        busy = report.busy_cores,
        comparison = markdown(["llama-server", "worker"], &report.comparison),
        orcd = if report.orcd.is_empty() {
            "Under busy-loop processes only the single stream and the concurrent streams are \
             measured: a server that spins at its thread barriers takes minutes per request, so \
             the conversation, orcd's cost and routing are figures of an idle machine.\n"
                .to_owned()
        } else {
            format!(
                "orcd's cost (the same worker, straight or through orcd):\n\n{}",
                markdown(["worker direct", "through orcd"], &report.orcd)
            )
        },
        ceilings = if report.ceilings.is_empty() {
            String::new()
        } else {
            format!(
                "\nThe engine's ceilings (llama.cpp's own tools, no server, the same threads):\n\n{}",
                markdown(["llama.cpp tool", "worker"], &report.ceilings)
            )
        },
        worker_threads = match (report.threads, report.worker_threads) {
            (None, Some(threads)) => format!(
                "\nThe worker's adaptive thread count: {} at the end, changed {} during the run.\n",
                threads.at_end,
                match threads.changes {
                    1 => "once".to_owned(),
                    changes => format!("{changes} times"),
                }
            ),
            _ => String::new(),
        },
        routing = if report.routing.is_empty() {
            String::new()
        } else {
            format!(
                "\nRouting across two workers (each policy its own orcd and workers):\n\n{}",
                markdown(["least-loaded", "prefix routing"], &report.routing)
            )
        },
    )
}

/// The ceilings of [`ceilings`], run `--runs` times, beside the worker's medians of the same
/// quantities; nothing without `--threads` or without the tools beside llama-server.
fn measure_ceilings(
    cx: &Context,
    args: &BenchArgs,
    model_path: &std::path::Path,
    comparison: &[Figure],
    worker_end_to_end: &WorkerEndToEnd,
) -> anyhow::Result<Vec<Figure>> {
    let (Some(threads), Some(server)) = (args.threads, args.against_llama_server.as_deref()) else {
        return Ok(Vec::new());
    };
    let Some(tools) = ceilings::Tools::beside(std::path::Path::new(server)) else {
        cx.out.status(
            "no llama-bench and llama-batched-bench beside llama-server: the ceilings are not measured",
        );
        return Ok(Vec::new());
    };
    let prompt_tokens = worker_end_to_end
        .prompt_tokens()
        .context("the bench measured no concurrent streams")?;
    let mut figures = ceilings::figures();
    let workload = ceilings::Workload {
        threads,
        streams: args.streams,
        prompt_tokens,
        generated_tokens: args.max_tokens,
    };
    for _ in 0..args.runs {
        let rates = ceilings::measure(&tools, model_path, &workload)?;
        for (figure, rate) in figures.iter_mut().zip(rates) {
            figure.push(0, rate);
        }
    }
    // The worker's side: its single-stream and aggregate decode samples from the comparison,
    // and its end-to-end rates.
    let worker = |name: &str| {
        comparison
            .iter()
            .find(|figure| figure.name == name)
            .map(|figure| figure.columns[1].clone())
            .unwrap_or_default()
    };
    let single = worker("single-stream decode");
    let aggregate = worker("concurrent streams, aggregate decode");
    for (figure, samples) in
        figures
            .iter_mut()
            .zip([single, aggregate, worker_end_to_end.rates.clone()])
    {
        for sample in samples {
            figure.push(1, sample);
        }
    }
    Ok(figures)
}

fn write_report(cx: &Context, report: &BenchReport) -> anyhow::Result<std::path::PathBuf> {
    write_json(cx, "bench", "latest", report.unix_time, report)
}

/// A mode's report: written to `target/bench/<stem>-<unix_time>.json` and
/// `<stem>-latest.json`, then printed (its markdown, or the JSON with `--json`).
fn publish(
    cx: &Context,
    stem: &str,
    unix_time: u64,
    report: &impl Serialize,
    markdown: &str,
) -> anyhow::Result<()> {
    let path = write_json(cx, stem, &format!("{stem}-latest"), unix_time, report)?;
    if cx.out.json() {
        return cx.out.print_json(report);
    }
    cx.out.println(markdown);
    cx.out.status(format!("written to {}", path.display()));
    Ok(())
}

/// Writes a report to `target/bench/<stem>-<unix_time>.json` and to `<latest>.json` beside it;
/// returns the latter.
fn write_json(
    cx: &Context,
    stem: &str,
    latest: &str,
    unix_time: u64,
    report: &impl Serialize,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = cx.settings.repo_root.join("target/bench");
    let text = serde_json::to_string_pretty(report)? + "\n";
    crate::files::write_atomically(&dir.join(format!("{stem}-{unix_time}.json")), &text)?;
    let latest = dir.join(format!("{latest}.json"));
    crate::files::write_atomically(&latest, &text)?;
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::tests::sleeper;

    #[test]
    fn cold_prompts_start_with_a_letter_no_other_prompt_starts_with() {
        let mut firsts: Vec<char> = FRESH_WORDS
            .iter()
            .map(|word| word.chars().next().unwrap())
            .collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(
            firsts.len(),
            FRESH_WORDS.len(),
            "two words share a first letter"
        );
        // The first words of the bench's other prompts.
        for other in ["Warm-up", "Conversation", "Path", "Stream"] {
            let letter = other.chars().next().unwrap();
            assert!(!firsts.contains(&letter), "{other}");
        }
        let mut fresh = FreshWords::default();
        let words: Vec<&str> = (0..FRESH_WORDS.len() + 1)
            .map(|_| fresh.next_word())
            .collect();
        assert_eq!(words[0], words[FRESH_WORDS.len()], "taken in turn");
        assert_ne!(words[0], words[1]);
    }

    /// A report with one sample of every figure, as after a run of `measure`.
    fn measured_report(busy_cores: u32) -> BenchReport {
        let filled = |mut figures: Vec<Figure>| {
            for figure in &mut figures {
                figure.push(0, 10.0);
                figure.push(1, 12.0);
            }
            figures
        };
        BenchReport {
            model: "gemma3-270m".into(),
            runs: 1,
            max_tokens: 128,
            streams: 4,
            threads: None,
            busy_cores,
            cpu_cores: 2,
            unix_time: 0,
            llama_server: Some("llama-server".into()),
            comparison: filled(comparison_figures()),
            orcd: filled(orcd_figures()),
            routing: Vec::new(),
            ceilings: Vec::new(),
            worker_threads: None,
            markdown: String::new(),
        }
    }

    #[test]
    fn a_contended_report_leaves_out_the_figures_it_did_not_measure_and_says_why() {
        let idle = render(&measured_report(0));
        assert!(idle.contains("orcd's cost"));
        assert!(idle.contains("conversation turn 8, time to first token"));

        let mut contended = measured_report(1);
        // What `measure` leaves unmeasured under --busy-cores: the conversation and orcd's cost.
        for figure in &mut contended.comparison {
            if figure.name.starts_with("conversation") {
                figure.columns = vec![Vec::new(); 2];
            }
        }
        contended.orcd = orcd_figures();
        contended.comparison.retain(Figure::measured);
        contended.orcd.retain(Figure::measured);
        let text = render(&contended);
        assert!(text.contains("single-stream decode"));
        assert!(text.contains("concurrent streams, aggregate decode"));
        assert!(
            !text.contains("conversation turn 8, time to first token"),
            "{text}"
        );
        assert!(!text.contains("worker direct"), "{text}");
        assert!(text.contains("only the single stream and the concurrent streams"));
    }

    #[test]
    fn cleanup_stops_every_server_once_and_the_busy_loops() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        let cleanup = Cleanup::new(run_dir.clone());
        let first = run_dir.spawn(&sleeper("first")).unwrap();
        let second = run_dir.spawn(&sleeper("second")).unwrap();
        cleanup.daemon(first.name.clone());
        cleanup.daemon(second.name.clone());
        let busy = process::cmd("sh")
            .args(["-c", "while :; do :; done"])
            .expression()
            .start()
            .unwrap();
        let busy_pid = busy.pids()[0];
        cleanup.busy(busy);

        // What a signal does, then what the end of `run` does: nothing is stopped twice.
        stop_all(&cleanup.run_dir, &cleanup.started);
        assert!(!first.is_running() && !second.is_running());
        // Killed and reaped by duct: gone from /proc.
        assert!(!std::path::Path::new(&format!("/proc/{busy_pid}")).exists());
        drop(cleanup);
        assert!(run_dir.list().unwrap().is_empty());
    }
}
