//! Flags of `cargo xtask jobs`: the command-line client of orcd's task API.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cargo xtask jobs submit --prompt 'The capital of France is' --max-tokens 32
  cargo xtask jobs list
  cargo xtask jobs status job-3f2a
  cargo xtask jobs cancel job-3f2a")]
pub struct JobsArgs {
    /// orcd's base URL [env: LLORCH_ORCHESTRATOR_URL] [config: orchestrator.url]
    /// [default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL")]
    pub orchestrator_url: Option<String>,
    #[command(subcommand)]
    pub command: JobsCmd,
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Submit a job and stream its tokens to stdout as they arrive (statistics go to stderr)
    #[command(after_help = "\
Examples:
  cargo xtask jobs submit --prompt 'The capital of France is'
  cargo xtask jobs submit --model qwen2.5-coder-0.5b --chat 'Write a haiku about Rust.'
  cargo xtask jobs submit --prompt 'Once upon a time' --temperature 0.8 --seed 7 --max-tokens 64
  cargo xtask --json jobs submit --prompt 'Hello'      # one JSON result, nothing streamed")]
    Submit(SubmitArgs),
    /// List recent jobs (id, model, worker, state, tokens, timings)
    #[command(after_help = "Examples:\n  cargo xtask jobs list\n  cargo xtask --json jobs list")]
    List,
    /// Show one job
    #[command(after_help = "Example:\n  cargo xtask jobs status job-3f2a")]
    Status {
        /// The job id printed by `jobs submit` or `jobs list`
        id: String,
    },
    /// Cancel a queued or running job
    #[command(after_help = "Example:\n  cargo xtask jobs cancel job-3f2a")]
    Cancel {
        /// The job id printed by `jobs submit` or `jobs list`
        id: String,
    },
    /// Tokens used by client key, model and day since orcd started (needs an operator token:
    /// LLORCH_API_TOKEN_FILE pointing at a line of orcd's --admin-token-file)
    #[command(after_help = "\
Examples:
  cargo xtask jobs usage
  cargo xtask jobs usage --since 2026-12-01
  cargo xtask --json jobs usage --since 2026-12-01")]
    Usage {
        /// First day to report, as YYYY-MM-DD (UTC) [default: every day since orcd started]
        #[arg(long, value_name = "DAY")]
        since: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "chat"])))]
pub struct SubmitArgs {
    /// Catalog id of the model [default: config models.default_model, else the catalog's default]
    #[arg(long, short)]
    pub model: Option<String>,
    /// Text to complete (raw completion, no chat template)
    #[arg(long, short)]
    pub prompt: Option<String>,
    /// A user message, rendered with the model's chat template (needs a model that has one)
    #[arg(long)]
    pub chat: Option<String>,
    /// Optional system message for --chat
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Top-k sampling (0 disables)
    #[arg(long, default_value_t = 40)]
    pub top_k: u32,
    /// Top-p (nucleus) sampling
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Seed for reproducible sampling
    #[arg(long)]
    pub seed: Option<u32>,
    /// Stop before this string (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
}
