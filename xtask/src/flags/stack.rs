//! Flags of `cargo xtask up`, `down` and `bench`: the whole stack on this machine.

use clap::Args;
use llorch_api::Backend;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask up                                   # installs, builds, downloads, starts, answers
  cargo xtask up --prompt 'The capital of France is'
  cargo xtask up --model qwen2.5-coder-0.5b --chat 'Write a haiku about Rust.'
  cargo xtask up --bin-dir target/release          # start these binaries, build nothing
  cargo xtask down                                 # stops what `up` started")]
pub struct UpArgs {
    /// Catalog id of the model to serve [default: the catalog's default model]
    #[arg(long, short)]
    pub model: Option<String>,
    /// Backend the worker runs on [default: config build.default_backend, else cpu]
    #[arg(long, value_parser = parse_backend)]
    pub backend: Option<Backend>,
    /// Completion prompt streamed once the stack is up
    #[arg(
        long,
        short,
        default_value = "The three most important inventions in history are"
    )]
    pub prompt: String,
    /// Send a chat message instead of --prompt (needs a model with a chat template)
    #[arg(long)]
    pub chat: Option<String>,
    /// Tokens to generate for the first answer
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Concurrent sequences of the worker
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Install missing system packages without asking
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Start the orcd and llorch-worker found in DIR instead of building them
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo xtask down")]
pub struct DownArgs {}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask bench                     # markdown table on stdout, JSON in target/bench/latest.json
  cargo xtask bench --against-llama-server ~/llama.cpp/build/bin/llama-server
  cargo xtask bench --against-llama-server http://127.0.0.1:8081 --runs 5
  cargo xtask bench --against-llama-server ./llama-server --busy-cores 1
  cargo xtask bench --against-llama-server ./llama-server --threads 2
  cargo xtask bench --routing --runs 1  # cache-aware against least-loaded routing, 2 workers
  cargo xtask bench --schema-sizes --runs 3  # time to first token against JSON-schema size
  cargo xtask bench --speculation --against-llama-server ./llama-server  # editing workload
  cargo xtask bench --speculation --bin-dir target/release --runs 5
  cargo xtask bench --cold-load --against-llama-server ./llama-server --runs 3
  cargo xtask --json bench")]
pub struct BenchArgs {
    /// Catalog id of the model to measure [default: the catalog's default model]
    #[arg(long, short)]
    pub model: Option<String>,
    /// Repetitions of the whole workload, alternating the sides (medians are reported)
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Tokens generated per stream
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Concurrent streams for the aggregate measurement (also each server's slot count)
    #[arg(long, default_value_t = 4)]
    pub streams: u32,
    /// Threads of the worker and of llama-server; with llama-bench and llama-batched-bench beside
    /// llama-server, the engine's ceilings at this count are measured too [default: each
    /// server's own default]
    #[arg(long)]
    pub threads: Option<u32>,
    /// Compare with llama.cpp's llama-server: the path of its binary (started here with the
    /// same model, slots and context) or the URL of a running one
    #[arg(long, value_name = "PATH|URL")]
    pub against_llama_server: Option<String>,
    /// Busy-loop processes competing for the CPU during the whole measurement
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub busy_cores: u32,
    /// Also compare orcd's cache-aware routing with least-loaded routing: 8 concurrent
    /// conversations on two workers behind an orcd of each policy (starts 2 orcds, 4 workers)
    #[arg(long)]
    pub routing: bool,
    /// Instead of the comparisons: the worker's time to first token with `response_format`
    /// JSON schemas of more and more properties, against the same request without one
    #[arg(long)]
    pub schema_sizes: bool,
    /// Measure speculative decoding instead of the figures above: an editing workload (the
    /// answer mostly copies the prompt) and one without repetition, the worker at its default
    /// (`--speculative ngram`) against `--speculative off`, and with a llama-server path,
    /// against llama-server with and without `--spec-type ngram-mod` [model: qwen2.5-coder-0.5b]
    #[arg(long, conflicts_with_all = ["routing", "busy_cores"])]
    pub speculation: bool,
    /// Instead of the comparisons: the time to first token of a request for a model that is
    /// not loaded (start, load, prefill) through orcd and a pool manager, against llama-server's
    /// router mode (`--models-dir`, autoload) given its binary; unloaded again after every
    /// request. Also the pool manager's memory estimate against the worker's measured RSS
    #[arg(long, conflicts_with_all = ["routing", "busy_cores", "speculation", "schema_sizes", "threads"])]
    pub cold_load: bool,
    /// With --speculation: start the llorch-worker found in DIR instead of building it
    #[arg(long, value_name = "DIR", requires = "speculation")]
    pub bin_dir: Option<std::path::PathBuf>,
}

fn parse_backend(value: &str) -> Result<Backend, String> {
    value.parse()
}
