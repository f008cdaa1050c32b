//! `cargo xtask bench`: speed of the release stack on a fixed prompt with greedy decoding —
//! single-stream prompt and generation rates and time to first token, straight to the worker
//! and through orcd, and aggregate generation with several concurrent streams. It starts its own
//! orcd and worker on free ports in a private run directory and stops them at the end.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use llorch_api::{
    ExecuteRequest, SamplingParams, StreamEvent, TaskRequest, WorkerInfo, WorkerState,
};
use serde::Serialize;

use crate::{
    daemon::RunDir,
    flags::BenchArgs,
    pool::worker::{self as pool_worker, WorkerLaunch},
    Context,
};

/// About 100 tokens of plain English, so prompt processing is measured on more than a handful
/// of tokens and every run sees the same input.
const BENCH_PROMPT: &str = "The history of computing spans several centuries, from mechanical \
calculators built by hand to the vast data centres that power the modern internet. Early pioneers \
imagined machines that could follow instructions, store numbers and print tables without error. \
Over time, vacuum tubes gave way to transistors, and transistors to integrated circuits holding \
billions of switches. Today, language models run on hardware that fits on a desk, and a small \
cluster of ordinary computers can serve many people at once. In this essay, we look at how";

/// One measured stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSample {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// From sending the request to the first token event, as the client saw it.
    pub time_to_first_token_ms: f64,
    /// Prompt processing rate reported by the worker.
    pub prompt_tokens_per_second: f64,
    /// Generation rate after the first token, as the client saw it.
    pub generation_tokens_per_second: f64,
    pub wall_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    pub path: &'static str,
    pub median: StreamSample,
    pub samples: Vec<StreamSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AggregateResult {
    pub streams: u32,
    pub generated_tokens: u32,
    pub wall_seconds: f64,
    pub tokens_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub max_tokens: u32,
    pub runs: u32,
    pub worker_threads: Option<u32>,
    pub cpu_cores: usize,
    pub unix_time: u64,
    pub single_stream: Vec<PathResult>,
    pub aggregate: AggregateResult,
}

/// Stops the bench's private daemons however `run` ends.
struct Cleanup {
    run_dir: RunDir,
    names: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            let _ = self.run_dir.stop(name, Duration::from_secs(10));
        }
    }
}

pub fn run(args: BenchArgs, cx: &Context) -> anyhow::Result<()> {
    if args.runs == 0 || args.streams == 0 || args.max_tokens == 0 {
        bail!("--runs, --streams and --max-tokens must be at least 1");
    }
    let model = match &args.model {
        Some(model) => model.clone(),
        None => crate::jobs::default_model_id(cx)?,
    };
    crate::models::ensure_downloaded(cx, &model)?;
    let binaries = crate::build::build_binaries(cx, llorch_api::Backend::Cpu, true)?;
    let scratch = tempfile::tempdir().context("creating the bench's private run directory")?;
    let mut cleanup = Cleanup {
        run_dir: RunDir::at(scratch.path()),
        names: Vec::new(),
    };

    let port = pool_worker::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let orcd = crate::stack::start_orcd(
        cx,
        &cleanup.run_dir,
        "bench-orcd",
        &binaries.orcd,
        &format!("127.0.0.1:{port}"),
    )
    .context("starting orcd for the bench")?;
    cleanup.names.push(orcd.name.clone());
    let orcd_url = orcd.url.clone().expect("orcd is started with a url");
    let mut extra_args = vec!["--slots".into(), args.streams.to_string().into()];
    if let Some(threads) = args.threads {
        extra_args.extend(["--threads".into(), threads.to_string().into()]);
    }
    let launch = WorkerLaunch {
        model: model.clone(),
        program: binaries.worker.clone(),
        orchestrator_url: orcd_url.clone(),
        id: Some("bench-worker".to_owned()),
        extra_args,
        ..WorkerLaunch::defaults(cx)
    };
    let worker =
        pool_worker::start_worker(cx, &cleanup.run_dir, &launch, Duration::from_secs(120))?;
    cleanup.names.push(worker.name.clone());
    let worker_url = worker.url.clone().expect("workers are started with a url");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let http = reqwest::Client::new();
        wait_for_registration(&http, &orcd_url, &model).await?;
        // One unmeasured stream warms caches and pages the model in.
        measure_orcd(&http, &orcd_url, &model, 8).await?;
        let spinner = cx.out.spinner("measuring");
        let mut direct = Vec::new();
        let mut through_orcd = Vec::new();
        for run in 0..args.runs {
            spinner.set_message(format!("single stream, run {}/{}", run + 1, args.runs));
            direct.push(measure_direct(&http, &worker_url, args.max_tokens).await?);
            through_orcd.push(measure_orcd(&http, &orcd_url, &model, args.max_tokens).await?);
        }
        spinner.set_message(format!("{} concurrent streams", args.streams));
        let aggregate =
            measure_aggregate(&http, &orcd_url, &model, args.max_tokens, args.streams).await?;
        spinner.finish_and_clear();
        anyhow::Ok(BenchReport {
            model: model.clone(),
            max_tokens: args.max_tokens,
            runs: args.runs,
            worker_threads: args.threads,
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
            single_stream: vec![
                path_result("worker direct", direct),
                path_result("through orcd", through_orcd),
            ],
            aggregate,
        })
    })?;
    drop(cleanup);

    let path = write_report(cx, &report)?;
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    print_table(cx, &report);
    cx.out.status(format!("written to {}", path.display()));
    Ok(())
}

async fn wait_for_registration(
    http: &reqwest::Client,
    orcd_url: &str,
    model: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{orcd_url}/workers")).send().await {
            let workers: Vec<WorkerInfo> = response.json().await.unwrap_or_default();
            if workers
                .iter()
                .any(|worker| worker.model == model && worker.state == WorkerState::Live)
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the bench worker did not register with orcd at {orcd_url} within 30 s")
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature: 0.0,
        ..SamplingParams::default()
    }
}

async fn measure_direct(
    http: &reqwest::Client,
    worker_url: &str,
    max_tokens: u32,
) -> anyhow::Result<StreamSample> {
    let request = ExecuteRequest {
        job_id: format!("bench-{}", uuid_like()),
        prompt: Some(BENCH_PROMPT.to_owned()),
        messages: None,
        parse_special: false,
        sampling: greedy(max_tokens),
    };
    measure_stream(http.post(format!("{worker_url}/execute")).json(&request)).await
}

async fn measure_orcd(
    http: &reqwest::Client,
    orcd_url: &str,
    model: &str,
    max_tokens: u32,
) -> anyhow::Result<StreamSample> {
    let request = TaskRequest {
        model: model.to_owned(),
        prompt: Some(BENCH_PROMPT.to_owned()),
        messages: None,
        parse_special: false,
        sampling: greedy(max_tokens),
        stream: true,
    };
    measure_stream(http.post(format!("{orcd_url}/v2/tasks")).json(&request)).await
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Sends one streaming request and times its events.
async fn measure_stream(request: reqwest::RequestBuilder) -> anyhow::Result<StreamSample> {
    let started = Instant::now();
    let response = request.send().await.context("sending a bench request")?;
    if !response.status().is_success() {
        bail!(
            "bench request answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut events = response.bytes_stream().eventsource();
    let (mut first_token, mut last_token) = (None, None);
    while let Some(event) = events.next().await {
        let event = event.context("reading a bench stream")?;
        match StreamEvent::from_sse(&event.event, &event.data)? {
            StreamEvent::Token { .. } => {
                let now = Instant::now();
                first_token.get_or_insert(now);
                last_token = Some(now);
            }
            StreamEvent::Done(stats) => {
                let first = first_token.context("a bench stream finished without tokens")?;
                let last = last_token.unwrap_or(first);
                let after_first = stats.generated_tokens.saturating_sub(1) as f64;
                let span = (last - first).as_secs_f64();
                return Ok(StreamSample {
                    prompt_tokens: stats.prompt_tokens,
                    generated_tokens: stats.generated_tokens,
                    time_to_first_token_ms: (first - started).as_secs_f64() * 1000.0,
                    prompt_tokens_per_second: stats.prompt_tokens_per_second,
                    generation_tokens_per_second: if span > 0.0 { after_first / span } else { 0.0 },
                    wall_ms: started.elapsed().as_secs_f64() * 1000.0,
                });
            }
            StreamEvent::Error { message, .. } => bail!("a bench stream failed: {message}"),
            StreamEvent::Queued { .. } | StreamEvent::Started { .. } => {}
        }
    }
    bail!("a bench stream ended without a done event")
}

async fn measure_aggregate(
    http: &reqwest::Client,
    orcd_url: &str,
    model: &str,
    max_tokens: u32,
    streams: u32,
) -> anyhow::Result<AggregateResult> {
    let started = Instant::now();
    let samples = futures::future::try_join_all(
        (0..streams).map(|_| measure_orcd(http, orcd_url, model, max_tokens)),
    )
    .await?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let generated_tokens = samples.iter().map(|sample| sample.generated_tokens).sum();
    Ok(AggregateResult {
        streams,
        generated_tokens,
        wall_seconds,
        tokens_per_second: generated_tokens as f64 / wall_seconds,
    })
}

/// The sample whose generation rate is the median (odd counts) or the lower middle one.
fn path_result(path: &'static str, samples: Vec<StreamSample>) -> PathResult {
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by(|a, b| {
        samples[*a]
            .generation_tokens_per_second
            .total_cmp(&samples[*b].generation_tokens_per_second)
    });
    let median = samples[order[(order.len() - 1) / 2]].clone();
    PathResult {
        path,
        median,
        samples,
    }
}

fn write_report(cx: &Context, report: &BenchReport) -> anyhow::Result<std::path::PathBuf> {
    let dir = cx.settings.repo_root.join("target/bench");
    let text = serde_json::to_string_pretty(report)? + "\n";
    crate::config::write_atomically(&dir.join(format!("bench-{}.json", report.unix_time)), &text)?;
    let latest = dir.join("latest.json");
    crate::config::write_atomically(&latest, &text)?;
    Ok(latest)
}

fn print_table(cx: &Context, report: &BenchReport) {
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{} — greedy, {} tokens, median of {} runs, {} cores",
        report.model, report.max_tokens, report.runs, report.cpu_cores
    )));
    cx.out.println(format!(
        "{:<16} {:>10} {:>14} {:>14} {:>10}",
        "path", "TTFT ms", "prompt tok/s", "gen tok/s", "tokens"
    ));
    for path in &report.single_stream {
        let m = &path.median;
        cx.out.println(format!(
            "{:<16} {:>10.0} {:>14.1} {:>14.1} {:>10}",
            path.path,
            m.time_to_first_token_ms,
            m.prompt_tokens_per_second,
            m.generation_tokens_per_second,
            m.generated_tokens
        ));
    }
    let aggregate = &report.aggregate;
    cx.out.println(format!(
        "{:<16} {:>10} {:>14} {:>14.1} {:>10}   ({} streams through orcd, {:.1} s)",
        "aggregate",
        "-",
        "-",
        aggregate.tokens_per_second,
        aggregate.generated_tokens,
        aggregate.streams,
        aggregate.wall_seconds
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rate: f64) -> StreamSample {
        StreamSample {
            prompt_tokens: 1,
            generated_tokens: 2,
            time_to_first_token_ms: 1.0,
            prompt_tokens_per_second: 1.0,
            generation_tokens_per_second: rate,
            wall_ms: 1.0,
        }
    }

    #[test]
    fn median_picks_the_middle_generation_rate() {
        let result = path_result("x", vec![sample(50.0), sample(90.0), sample(70.0)]);
        assert_eq!(result.median.generation_tokens_per_second, 70.0);
        let result = path_result("x", vec![sample(50.0), sample(90.0)]);
        assert_eq!(result.median.generation_tokens_per_second, 50.0);
    }
}
