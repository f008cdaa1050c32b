//! The engine's ceilings: what llama.cpp's own benchmark tools reach on the same model and
//! threads, with no server around them. `llama-bench` (tg128: one sequence generating 128
//! tokens) bounds single-stream decode; `llama-batched-bench` (64-token prompts, 128 tokens,
//! `--streams` sequences) bounds the aggregate decode of concurrent streams. They are looked
//! for beside the llama-server binary given to `--against-llama-server`, and only run with
//! `--threads`, since a ceiling is only comparable at the same thread count.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::table::{Better, Figure};

/// Tokens generated per sequence by both tools, as in llama-bench's `tg128`.
const GENERATED: u32 = 128;
/// Prompt tokens per sequence for llama-batched-bench.
const PROMPT: u32 = 64;

/// The two tools, when both were found beside llama-server.
pub struct Tools {
    llama_bench: PathBuf,
    batched_bench: PathBuf,
}

impl Tools {
    /// The tools beside `llama_server`, or `None` when either is missing.
    pub fn beside(llama_server: &Path) -> Option<Tools> {
        let dir = llama_server.parent()?;
        let tools = Tools {
            llama_bench: dir.join("llama-bench"),
            batched_bench: dir.join("llama-batched-bench"),
        };
        (tools.llama_bench.is_file() && tools.batched_bench.is_file()).then_some(tools)
    }
}

pub fn figures() -> Vec<Figure> {
    vec![
        Figure::new(
            "single-stream decode against llama-bench tg128",
            "tok/s",
            Better::Higher,
            "llama-bench `-p 0 -n 128` (one sequence, no server) against the worker's single-stream decode",
            2,
        ),
        Figure::new(
            "concurrent streams against llama-batched-bench, decode",
            "tok/s",
            Better::Higher,
            "llama-batched-bench `-npp 64 -ntg 128 -npl <streams>`: its generation rate (speed_tg) against the worker's aggregate decode",
            2,
        ),
        Figure::new(
            "concurrent streams against llama-batched-bench, end to end",
            "tok/s",
            Better::Higher,
            "the same llama-batched-bench run: all tokens over its whole time, prompts included (speed), against the worker's aggregate decode",
            2,
        ),
    ]
}

/// One measurement of each ceiling: llama-bench's tg128 rate, then llama-batched-bench's
/// generation and end-to-end rates, in the order of [`figures`].
pub fn measure(
    tools: &Tools,
    model: &Path,
    threads: u32,
    streams: u32,
) -> anyhow::Result<[f64; 3]> {
    let threads = threads.to_string();
    let single = run_tool(
        &tools.llama_bench,
        &[
            "-m".as_ref(),
            model.as_os_str(),
            "-p".as_ref(),
            "0".as_ref(),
            "-n".as_ref(),
            GENERATED.to_string().as_ref(),
            "-t".as_ref(),
            threads.as_ref(),
            "-r".as_ref(),
            "1".as_ref(),
            "-o".as_ref(),
            "json".as_ref(),
        ],
    )?;
    let tg128 = llama_bench_rate(&single)?;
    let context = ((PROMPT + GENERATED) * streams).max(2048).to_string();
    let batched = run_tool(
        &tools.batched_bench,
        &[
            "-m".as_ref(),
            model.as_os_str(),
            "-c".as_ref(),
            context.as_ref(),
            "-npp".as_ref(),
            PROMPT.to_string().as_ref(),
            "-ntg".as_ref(),
            GENERATED.to_string().as_ref(),
            "-npl".as_ref(),
            streams.to_string().as_ref(),
            "-t".as_ref(),
            threads.as_ref(),
            "-tb".as_ref(),
            threads.as_ref(),
            "--output-format".as_ref(),
            "jsonl".as_ref(),
        ],
    )?;
    let (decode, end_to_end) = batched_bench_rates(&batched)?;
    Ok([tg128, decode, end_to_end])
}

fn run_tool(program: &Path, args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
    // The tools load llama.cpp's shared libraries from their own directory.
    let dir = program.parent().unwrap_or(Path::new("."));
    let output = duct::cmd(program, args)
        .env("LD_LIBRARY_PATH", dir)
        .stderr_capture()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {}", program.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "{} failed ({}): {}\nhint: build it with llama-server (see the README's Benchmarks section), or leave out --threads to skip the ceilings",
            program.display(),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `avg_ts` of the generation test in llama-bench's JSON output.
fn llama_bench_rate(json: &str) -> anyhow::Result<f64> {
    let results: Value = serde_json::from_str(json).context("reading llama-bench's JSON output")?;
    results
        .as_array()
        .into_iter()
        .flatten()
        .find(|result| result["n_gen"].as_u64() == Some(u64::from(GENERATED)))
        .and_then(|result| result["avg_ts"].as_f64())
        .context("llama-bench printed no tg128 result with `avg_ts`")
}

/// `speed_tg` and `speed` of llama-batched-bench's JSON lines (its one configuration).
fn batched_bench_rates(jsonl: &str) -> anyhow::Result<(f64, f64)> {
    jsonl
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|result| Some((result["speed_tg"].as_f64()?, result["speed"].as_f64()?)))
        .context("llama-batched-bench printed no JSON line with `speed_tg` and `speed`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tg128_rate_is_read_from_llama_bench_json() {
        let json = r#"[{"n_prompt": 0, "n_gen": 128, "avg_ts": 97.5, "stddev_ts": 1.0}]"#;
        assert_eq!(llama_bench_rate(json).unwrap(), 97.5);
        assert!(llama_bench_rate(r#"[{"n_prompt": 512, "n_gen": 0, "avg_ts": 300.0}]"#).is_err());
        assert!(llama_bench_rate("not json").is_err());
    }

    #[test]
    fn decode_and_end_to_end_rates_are_read_from_batched_bench_jsonl() {
        let jsonl = "main: n_kv_max = 2048\n{\"pp\": 64, \"tg\": 128, \"pl\": 4, \"speed_pp\": 500.0, \"speed_tg\": 129.0, \"t\": 4.2, \"speed\": 121.0}\n";
        assert_eq!(batched_bench_rates(jsonl).unwrap(), (129.0, 121.0));
        assert!(batched_bench_rates("| pp | tg |\n").is_err());
    }

    #[test]
    fn the_tools_are_found_only_when_both_sit_beside_llama_server() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("llama-server");
        std::fs::write(&server, "").unwrap();
        std::fs::write(dir.path().join("llama-bench"), "").unwrap();
        assert!(Tools::beside(&server).is_none());
        std::fs::write(dir.path().join("llama-batched-bench"), "").unwrap();
        assert!(Tools::beside(&server).is_some());
    }
}
