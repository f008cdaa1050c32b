//! `cargo xtask bench --speculation`: speculative decoding measured where users feel it. Two
//! workloads on an instruct model: an edit whose answer mostly copies the prompt (a 24-line
//! function rewritten with one variable renamed) and prose without repetition. The worker at
//! its default (`--speculative ngram`) is compared with the same worker at `--speculative off`
//! and, given a llama-server binary, with llama-server started with `--spec-type ngram-mod`
//! and without. Every request goes to every side in turn (A B C D, A B C D), each prompt is
//! fresh on every side (cold against cold), and the answers of the worker with and without
//! speculation are compared, since speculation must not change a greedy answer.

use std::{ffi::OsString, net::IpAddr, net::Ipv4Addr, time::Duration};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{
    client::{complete_text, Sample, Target},
    table::{markdown, Better, Figure},
    Cleanup, FreshWords,
};
use crate::{
    daemon::{DaemonInfo, DaemonSpec, RunDir},
    flags::BenchArgs,
    Context,
};

/// The instruct model of the issue's measurements; any catalog id with a ChatML template works.
const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";
/// Tokens each slot holds, the same on every server.
const CTX_PER_SLOT: u32 = 2048;
/// Enough for the whole edited function (about 280 tokens), so the answer ends by itself.
const EDIT_MAX_TOKENS: u32 = 400;
const PROSE_MAX_TOKENS: u32 = 280;

/// The function of the editing workload: 24 lines, `total` on nine of them.
const FUNCTION: &str = r#"def summarize_orders(orders, tax_rate, discount_threshold):
    """Return the totals of a list of orders, with tax and discounts applied."""
    summary = []
    for order in orders:
        total = 0
        for line in order["lines"]:
            price = line["price"]
            quantity = line["quantity"]
            total += price * quantity
        if total > discount_threshold:
            discount = total * 0.05
        else:
            discount = 0
        total -= discount
        tax = total * tax_rate
        total += tax
        summary.append({
            "id": order["id"],
            "customer": order["customer"],
            "discount": round(discount, 2),
            "tax": round(tax, 2),
            "total": round(total, 2),
        })
    return summary"#;

/// A workload: the user's message and how many tokens the answer may have.
struct Workload {
    name: &'static str,
    user: String,
    max_tokens: u32,
}

fn workloads() -> [Workload; 2] {
    [
        Workload {
            name: "editing",
            user: format!(
                "Rewrite this Python function exactly, but rename the variable `total` to \
                 `order_total`. Answer with the code only.\n\n```python\n{FUNCTION}\n```"
            ),
            max_tokens: EDIT_MAX_TOKENS,
        },
        Workload {
            name: "no repetition",
            user: "Write an essay on the printing press: who built the first one in Europe, \
                   how it spread, and what it changed for science, religion and politics."
                .to_owned(),
            max_tokens: PROSE_MAX_TOKENS,
        },
    ]
}

/// The ChatML conversation as text, its special tokens parsed on every side, so that the
/// worker and llama-server see the same tokens. `word` (a fresh one per run and workload,
/// [`FreshWords`]) makes the prompt new to every cache after the template's first three
/// tokens: cold against cold.
fn chat_prompt(word: &str, session: u32, user: &str) -> String {
    format!(
        "<|im_start|>system\n{word} session {session}. You are a careful coding assistant.<|im_end|>\n\
         <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// The sides, in the order each request visits them.
struct Side {
    label: &'static str,
    target: Target,
}

const WORKER_OFF: usize = 0;
const WORKER_ON: usize = 1;
const SERVER_PLAIN: usize = 2;
const SERVER_NGRAM: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct SpeculationReport {
    pub model: String,
    pub runs: u32,
    pub threads: Option<u32>,
    pub cpu_cores: usize,
    pub unix_time: u64,
    pub llama_server: Option<String>,
    /// The worker with `--speculative off` (column 0) against its default (column 1).
    pub worker: Vec<Figure>,
    /// llama-server with `--spec-type ngram-mod` (column 0) against the worker at its default
    /// (column 1); empty without llama-server.
    pub against_llama_server: Vec<Figure>,
    /// llama-server without (column 0) and with `--spec-type ngram-mod` (column 1).
    pub llama_server_alone: Vec<Figure>,
    /// Per workload: drafted tokens the worker's model accepted, in percent of those drafted.
    pub worker_acceptance: Vec<(String, f64)>,
    /// Pairs of greedy answers (worker with and without speculation) that were identical, and
    /// how many pairs there were.
    pub identical_answers: (u32, u32),
    /// Per side: the most prompt tokens it reported taking from its cache on any measured
    /// request; 0 (or 1, a BOS token) shows that the time-to-first-token figures are cold.
    pub cold_cached_tokens: Vec<(String, u32)>,
    pub markdown: String,
}

pub fn run(args: &BenchArgs, cx: &Context) -> anyhow::Result<()> {
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let server_path = match args.against_llama_server.as_deref() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => bail!(
            "--speculation starts llama-server itself, with and without `--spec-type ngram-mod`: \
             pass the path of its binary, not the URL of a running one"
        ),
        other => other,
    };
    let model_path = crate::models::ensure_downloaded(cx, &model)?;
    let worker_program = match &args.bin_dir {
        Some(dir) => {
            let program = dir.join(crate::build::WORKER_BINARY);
            if !program.is_file() {
                bail!(
                    "--bin-dir: {} does not exist\nhint: build it with `cargo xtask build worker`, or leave out --bin-dir so that the bench builds it",
                    program.display()
                );
            }
            program
        }
        None => crate::build::build_binaries(cx, llorch_api::Backend::Cpu, true)?.worker,
    };
    let scratch = tempfile::tempdir().context("creating the bench's private run directory")?;
    let cleanup = Cleanup::new(RunDir::at(scratch.path()));
    cleanup.stop_on_signal(cx);

    let mut sides = Vec::new();
    for (label, speculative) in [("worker --speculative off", "off"), ("worker", "ngram")] {
        let name = format!("bench-worker-speculative-{speculative}");
        let info = start_worker(
            cx,
            &cleanup.run_dir,
            &worker_program,
            &model_path,
            &name,
            args,
            speculative,
        )?;
        cleanup.daemon(info.name.clone());
        let url = info.url.clone().expect("workers are started with a url");
        sides.push(Side {
            label,
            target: Target::Worker { url },
        });
    }
    if let Some(path) = server_path {
        for (label, name, extra) in [
            ("llama-server", "bench-llama-server", &[][..]),
            (
                "llama-server --spec-type ngram-mod",
                "bench-llama-server-ngram-mod",
                &["--spec-type", "ngram-mod"][..],
            ),
        ] {
            let info =
                super::start_llama_server(&cleanup.run_dir, name, path, &model_path, args, extra)?;
            cleanup.daemon(info.name.clone());
            let url = info
                .url
                .clone()
                .expect("llama-server is started with a url");
            sides.push(Side {
                label,
                target: Target::LlamaServer { url },
            });
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let samples = runtime.block_on(measure(cx, &sides, args.runs))?;
    drop(cleanup);

    let mut report = SpeculationReport {
        model,
        runs: args.runs,
        threads: args.threads,
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        llama_server: server_path.map(str::to_owned),
        worker: figures(&samples, WORKER_OFF, WORKER_ON),
        against_llama_server: if sides.len() > SERVER_NGRAM {
            figures(&samples, SERVER_NGRAM, WORKER_ON)
        } else {
            Vec::new()
        },
        llama_server_alone: if sides.len() > SERVER_NGRAM {
            figures(&samples, SERVER_PLAIN, SERVER_NGRAM)
        } else {
            Vec::new()
        },
        worker_acceptance: acceptance(&samples, WORKER_ON),
        identical_answers: identical_answers(&samples, WORKER_OFF, WORKER_ON),
        cold_cached_tokens: cold_cached_tokens(&samples, &sides),
        markdown: String::new(),
    };
    report.markdown = render(&report);
    super::publish(
        cx,
        "speculation",
        report.unix_time,
        &report,
        &report.markdown,
    )
}

/// Starts a worker on its own (no orcd: the bench talks to it directly) with `--speculative`.
fn start_worker(
    cx: &Context,
    run_dir: &RunDir,
    program: &std::path::Path,
    model_path: &std::path::Path,
    name: &str,
    args: &BenchArgs,
    speculative: &str,
) -> anyhow::Result<DaemonInfo> {
    let port = crate::ports::free_port(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    let mut worker_args: Vec<OsString> = vec![
        "--model".into(),
        model_path.into(),
        "--port".into(),
        port.to_string().into(),
        "--slots".into(),
        args.streams.to_string().into(),
        "--ctx-size".into(),
        CTX_PER_SLOT.to_string().into(),
        "--speculative".into(),
        speculative.into(),
    ];
    if let Some(threads) = args.threads {
        worker_args.extend(["--threads".into(), threads.to_string().into()]);
    }
    let spec = DaemonSpec {
        name: name.into(),
        kind: "worker".into(),
        program: program.to_path_buf(),
        args: worker_args,
        env: Vec::new(),
        port: Some(port),
        url: Some(format!("http://127.0.0.1:{port}")),
        model: None,
        backend: None,
    };
    cx.out.status(format!("starting {name}"));
    let info = run_dir
        .spawn(&spec)
        .with_context(|| format!("starting {name}"))?;
    if let Err(error) = crate::daemon::wait_healthy(&info, Duration::from_secs(120)) {
        let _ = run_dir.stop(&info.name, Duration::from_secs(5));
        return Err(error.context(format!("waiting for {name}")));
    }
    Ok(info)
}

/// `samples[workload][side]`: one sample per run.
type Samples = Vec<Vec<Vec<Sample>>>;

async fn measure(cx: &Context, sides: &[Side], runs: u32) -> anyhow::Result<Samples> {
    let http = super::loopback_http();
    let workloads = workloads();
    let spinner = cx.out.spinner("warming up");
    // One unmeasured request per side pages the model in.
    for side in sides {
        complete_text(
            &http,
            &side.target,
            &chat_prompt("Warm-up", u32::MAX, "Say hello."),
            8,
            true,
        )
        .await
        .with_context(|| format!("warming up {}", side.label))?;
    }
    let mut samples: Samples = vec![vec![Vec::new(); sides.len()]; workloads.len()];
    let mut fresh = FreshWords::default();
    for run in 0..runs {
        for (index, workload) in workloads.iter().enumerate() {
            cx.out.spinner_step(
                &spinner,
                format!("run {}/{runs}: {}", run + 1, workload.name),
            );
            let prompt = chat_prompt(fresh.next_word(), run, &workload.user);
            for (side_index, side) in sides.iter().enumerate() {
                let sample = complete_text(&http, &side.target, &prompt, workload.max_tokens, true)
                    .await
                    .with_context(|| format!("{} on {}", workload.name, side.label))?;
                samples[index][side_index].push(sample);
            }
        }
    }
    spinner.finish_and_clear();
    Ok(samples)
}

/// Decode rate and cold time to first token of both workloads, `first` in column 0 and
/// `second` in column 1.
fn figures(samples: &Samples, first: usize, second: usize) -> Vec<Figure> {
    let mut figures = vec![
        Figure::new(
            "editing: decode",
            "tok/s",
            Better::Higher,
            "a 24-line function rewritten with `total` renamed to `order_total` (the answer copies most of the prompt), greedy: tokens after the first over the time from the first to the last",
            2,
        ),
        Figure::new(
            "editing: time to first token, cold against cold",
            "ms",
            Better::Lower,
            "the same request: from sending it to the first token; its prompt is new to both servers after the template's first three tokens",
            2,
        ),
        Figure::new(
            "no repetition: decode",
            "tok/s",
            Better::Higher,
            "an essay of 280 tokens whose answer repeats little of anything, greedy: defined as for editing",
            2,
        ),
        Figure::new(
            "no repetition: time to first token, cold against cold",
            "ms",
            Better::Lower,
            "the same request: from sending it to the first token, its prompt new to both servers",
            2,
        ),
    ];
    for (workload, pair) in samples.iter().zip(figures.chunks_mut(2)) {
        for (column, side) in [first, second].into_iter().enumerate() {
            for sample in &workload[side] {
                pair[0].push(column, sample.decode_rate());
                pair[1].push(column, sample.time_to_first_token_ms());
            }
        }
    }
    figures
}

fn acceptance(samples: &Samples, side: usize) -> Vec<(String, f64)> {
    workloads()
        .iter()
        .zip(samples)
        .map(|(workload, per_side)| {
            let drafted: u32 = per_side[side].iter().map(|s| s.draft_tokens).sum();
            let accepted: u32 = per_side[side].iter().map(|s| s.draft_tokens_accepted).sum();
            let share = if drafted == 0 {
                0.0
            } else {
                100.0 * f64::from(accepted) / f64::from(drafted)
            };
            (workload.name.to_owned(), share)
        })
        .collect()
}

/// The most prompt tokens each side took from its cache on any measured request.
fn cold_cached_tokens(samples: &Samples, sides: &[Side]) -> Vec<(String, u32)> {
    (sides.iter().enumerate())
        .map(|(index, side)| {
            let most = (samples.iter().flat_map(|per_side| &per_side[index]))
                .map(|sample| sample.cached_tokens)
                .max()
                .unwrap_or(0);
            (side.label.to_owned(), most)
        })
        .collect()
}

fn identical_answers(samples: &Samples, first: usize, second: usize) -> (u32, u32) {
    let pairs = samples
        .iter()
        .flat_map(|per_side| per_side[first].iter().zip(&per_side[second]));
    let (mut same, mut all) = (0, 0);
    for (a, b) in pairs {
        all += 1;
        same += u32::from(a.text == b.text);
    }
    (same, all)
}

fn render(report: &SpeculationReport) -> String {
    let threads = report
        .threads
        .map_or("each server's default threads".to_owned(), |threads| {
            format!("--threads {threads} on every server")
        });
    let cached: Vec<String> = (report.cold_cached_tokens.iter())
        .map(|(side, tokens)| format!("{side} {tokens}"))
        .collect();
    let acceptance: Vec<String> = report
        .worker_acceptance
        .iter()
        .map(|(name, share)| format!("{name} {share:.0} %"))
        .collect();
    let mut text = format!(
        "{model}, greedy, {runs} runs, every request sent to each side in turn, {threads}, \
         {cores} cores; each cell is the median [min–max] over the runs, the ratio is that of \
         the medians [the runs' own ratios, min–max]\n\n\
         The worker with speculation (its default) against `--speculative off`:\n\n{worker}\n\
         Drafted tokens the worker accepted: {acceptance}. Answers with and without speculation \
         identical: {same} of {all}. The most prompt tokens a side took from its cache on a \
         measured request (0 or the template's first 3: cold): {cached}.\n",
        model = report.model,
        runs = report.runs,
        cores = report.cpu_cores,
        worker = markdown(["worker --speculative off", "worker"], &report.worker),
        acceptance = acceptance.join(", "),
        cached = cached.join(", "),
        same = report.identical_answers.0,
        all = report.identical_answers.1,
    );
    if !report.against_llama_server.is_empty() {
        text.push_str(&format!(
            "\nThe worker at its default against llama-server with `--spec-type ngram-mod`:\n\n{}\n\
             llama-server alone, without and with `--spec-type ngram-mod`:\n\n{}",
            markdown(
                ["llama-server --spec-type ngram-mod", "worker"],
                &report.against_llama_server
            ),
            markdown(
                ["llama-server", "llama-server --spec-type ngram-mod"],
                &report.llama_server_alone
            ),
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edited_function_is_24_lines_and_names_total_often() {
        assert_eq!(FUNCTION.lines().count(), 24);
        assert!(FUNCTION.matches("total").count() >= 9);
        let [edit, prose] = workloads();
        assert!(edit.user.contains("`order_total`") && edit.user.contains(FUNCTION));
        assert!(!prose.user.contains("def "));
    }

    #[test]
    fn every_run_has_a_fresh_prompt_in_the_chat_template() {
        let mut fresh = FreshWords::default();
        let (first, second) = (
            chat_prompt(fresh.next_word(), 0, "hi"),
            chat_prompt(fresh.next_word(), 0, "hi"),
        );
        assert_ne!(first, second);
        assert!(first.starts_with("<|im_start|>system\n"));
        assert!(first.ends_with("<|im_start|>assistant\n"));
    }
}
