//! Flags of `cargo xtask top`: the live terminal view of the fleet.

use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "\
Keys: ↑/↓ or j/k select, Tab switches pane, Enter shows details, c cancels the selected job
and u unloads the selected model (operator token; both ask y/n), l toggles the log of the
selected worker (a pool-managed worker's through orcd), / filters, q quits. The Hosts pane
shows when orcd has pool managers.

Examples:
  cargo xtask top                                   # full screen, live from orcd's /v2/events
  cargo xtask top --orchestrator-url http://gpu-box:8080
  cargo xtask top --once                            # one plain snapshot, for scripts and `watch`
  cargo xtask --json top --once                     # the snapshot as one JSON document")]
pub struct TopArgs {
    /// orcd's base URL [env: LLORCH_ORCHESTRATOR_URL] [config: orchestrator.url]
    /// [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL")]
    pub orchestrator_url: Option<String>,
    /// Print one plain snapshot of the fleet and exit (with --json: one JSON document)
    #[arg(long)]
    pub once: bool,
}
