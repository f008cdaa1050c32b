//! `cargo xtask bench --schema-sizes`: the worker's time to first token with a
//! `response_format` JSON schema against the same request without one, for objects of more and
//! more properties, optional and required. llama.cpp's converter does work cubic in the optional
//! properties of one object, and its grammar checks every vocabulary entry against every open
//! alternative at each token; this table is where the limits of `llorch_api::json_schema` come
//! from. Requests alternate (without, with) within each run, so machine noise hits both alike.

use std::time::Duration;

use anyhow::Context as _;
use llorch_api::json_schema::MAX_OPTIONAL_PROPERTIES;
use llorch_api::{pool::WorkerLaunch, OutputConstraint, SamplingParams};
use serde::Serialize;
use serde_json::{json, Value};

use super::client::{complete_sampled, Target};
use super::table::{markdown, Better, Figure};
use super::{wait_for_registration, Cleanup, BENCH_PROMPT};
use crate::daemon::RunDir;
use crate::flags::BenchArgs;
use crate::pool::{launch::SpawnSpec, worker as pool_worker};
use crate::Context;

/// The schemas measured: an object of `optional` optional and `required` required string
/// properties. The largest optional count is the limit; beyond it orcd and the worker refuse.
const SHAPES: [(&str, usize, usize); 7] = [
    ("8 optional properties", 8, 0),
    ("16 optional properties", 16, 0),
    ("32 optional properties", 32, 0),
    (
        "64 optional properties (the limit)",
        MAX_OPTIONAL_PROPERTIES,
        0,
    ),
    ("64 required properties", 0, 64),
    ("256 required properties", 0, 256),
    ("1000 required properties (the limit)", 0, 1000),
];

/// Tokens generated per request: the first, and the time per token of the rest, are timed.
const TOKENS: u32 = 16;

#[derive(Debug, Clone, Serialize)]
pub struct SchemaSizesReport {
    pub model: String,
    pub runs: u32,
    /// Time to first token without a schema (column 0) against with one (column 1), one
    /// figure per schema.
    pub first_token: Vec<Figure>,
    /// The same for the time per token after the first.
    pub later_tokens: Vec<Figure>,
    pub markdown: String,
}

/// An object schema of `optional` optional and `required` required string properties.
pub fn object_schema(optional: usize, required: usize) -> Value {
    let names: Vec<String> = (0..optional + required).map(|i| format!("p{i}")).collect();
    let properties: serde_json::Map<String, Value> = (names.iter())
        .map(|name| (name.clone(), json!({"type": "string"})))
        .collect();
    json!({"type": "object", "properties": properties, "required": names[optional..]})
}

fn sampling(constraint: Option<OutputConstraint>) -> SamplingParams {
    SamplingParams {
        max_tokens: TOKENS,
        temperature: 0.0,
        constraint,
        ..SamplingParams::default()
    }
}

pub fn run(args: &BenchArgs, cx: &Context) -> anyhow::Result<()> {
    let model = match &args.model {
        Some(model) => model.clone(),
        None => crate::models::default_model_id(cx)?,
    };
    crate::models::ensure_downloaded(cx, &model)?;
    let binaries = crate::build::build_binaries(cx, llorch_api::Backend::Cpu, true)?;
    let scratch = tempfile::tempdir().context("creating the bench's private run directory")?;
    let cleanup = Cleanup::new(RunDir::at(scratch.path()));
    cleanup.stop_on_signal(cx);
    let localhost = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let port = crate::ports::free_port(localhost)?;
    let orcd = crate::stack::start_orcd(
        cx,
        &cleanup.run_dir,
        "bench-orcd",
        &binaries.orcd,
        &format!("127.0.0.1:{port}"),
        &[],
    )
    .context("starting orcd for the schema bench")?;
    cleanup.daemon(orcd.name.clone());
    let launch = WorkerLaunch {
        backend: cx.settings.default_backend,
        slots: Some(1),
        threads: args.threads,
        ..WorkerLaunch::of_model(&model)
    };
    let spec = SpawnSpec {
        orchestrator_url: Some(orcd.url.clone().expect("orcd is started with a url")),
        id: Some("bench-worker".to_owned()),
        timeout: Duration::from_secs(120),
        ..SpawnSpec::new(launch).with_program(&binaries.worker)
    };
    let worker = pool_worker::start_worker(cx, &cleanup.run_dir, &spec)?;
    cleanup.daemon(worker.name.clone());
    let target = Target::Worker {
        url: worker.url.clone().expect("workers are started with a url"),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (first_token, later_tokens) = runtime.block_on(async {
        let http = super::loopback_http();
        let orcd_url = orcd.url.clone().expect("orcd is started with a url");
        wait_for_registration(&orcd_url, &model, 1).await?;
        measure(cx, &http, &target, args.runs).await
    })?;
    drop(cleanup);
    let mut report = SchemaSizesReport {
        model,
        runs: args.runs,
        first_token,
        later_tokens,
        markdown: String::new(),
    };
    report.markdown = format!(
        "{model}, greedy, {TOKENS} tokens through the worker direct, {runs} runs alternating \
         without and with the schema; each cell is the median [min–max] over the runs\n\n\
         Time to first token:\n\n{first}\nTime per token after the first:\n\n{later}",
        model = report.model,
        runs = report.runs,
        first = markdown(["no schema", "with the schema"], &report.first_token),
        later = markdown(["no schema", "with the schema"], &report.later_tokens),
    );
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    cx.out.println(&report.markdown);
    Ok(())
}

async fn measure(
    cx: &Context,
    http: &reqwest::Client,
    target: &Target,
    runs: u32,
) -> anyhow::Result<(Vec<Figure>, Vec<Figure>)> {
    let (mut first_token, mut later_tokens) = (Vec::new(), Vec::new());
    for (name, optional, required) in SHAPES {
        let schema = object_schema(optional, required);
        let mut first = Figure::new(
            name,
            "ms",
            Better::Lower,
            "time from sending the request to its first token",
            2,
        );
        let mut later = Figure::new(
            name,
            "ms",
            Better::Lower,
            "time from the first token to the last over the tokens after the first",
            2,
        );
        for run in 1..=runs {
            cx.out
                .status(format!("schema bench: {name}, run {run} of {runs}"));
            let constraint = OutputConstraint::JsonSchema {
                schema: schema.clone(),
            };
            for (column, constraint) in [(0, None), (1, Some(constraint))] {
                let sample = complete_sampled(http, target, BENCH_PROMPT, sampling(constraint))
                    .await
                    .with_context(|| format!("the request of {name}"))?;
                first.push(column, sample.time_to_first_token_ms());
                let rate = sample.decode_rate();
                later.push(column, if rate > 0.0 { 1000.0 / rate } else { f64::NAN });
            }
        }
        first_token.push(first);
        later_tokens.push(later);
    }
    Ok((first_token, later_tokens))
}

#[cfg(test)]
mod tests {
    use llorch_api::json_schema::check_schema;

    use super::*;

    #[test]
    fn every_measured_schema_is_within_the_limits_and_shaped_as_named() {
        for (name, optional, required) in SHAPES {
            let schema = object_schema(optional, required);
            assert_eq!(check_schema(&schema), Ok(()), "{name}");
            let properties = schema["properties"].as_object().unwrap().len();
            let listed = schema["required"].as_array().unwrap().len();
            assert_eq!(
                (properties - listed, listed),
                (optional, required),
                "{name}"
            );
        }
        // One more optional property than the largest measured is refused.
        assert!(check_schema(&object_schema(MAX_OPTIONAL_PROPERTIES + 1, 0)).is_err());
    }
}
