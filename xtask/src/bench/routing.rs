//! `cargo xtask bench --routing`: orcd's cache-aware routing against least-loaded routing.
//! Two orcds, one per policy, each with two workers of the model; the same workload of
//! concurrent multi-turn conversations runs on each, alternating per run.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use llorch_api::pool::WorkerLaunch;

use super::client::{complete, Sample, Target};
use super::table::{percentile, Better, Figure};
use super::{Cleanup, BENCH_PROMPT, CTX_PER_SLOT};
use crate::{
    pool::{launch::SpawnSpec, worker as pool_worker},
    Context,
};

/// Conversations that run at once, turns each, and tokens per answer.
pub const CONVERSATIONS: u32 = 8;
const TURNS: usize = 4;
const ANSWER_TOKENS: u32 = 32;
const WORKERS_PER_POLICY: usize = 2;
const POLICIES: [&str; 2] = ["least-loaded", "prefix"];

/// How long a conversation's user reads an answer before sending the next turn: 200–740 ms,
/// differing between conversations and turns (fixed, so both policies get the same workload).
/// Without it the workload is a closed loop in which a turn's own slot has just been freed
/// when the next turn arrives, so least-loaded routing picks the same worker again by chance
/// of timing and the comparison says nothing about routing.
fn think_time(conversation: u32, turn: usize) -> Duration {
    let step = (conversation as usize * 7 + turn * 13) % 10;
    Duration::from_millis(200 + 60 * step as u64)
}

/// Starts an orcd per routing policy, each with its workers; returns their targets in the
/// order of [`POLICIES`].
pub fn start(
    cx: &Context,
    cleanup: &Cleanup,
    binaries: &crate::build::BuiltBinaries,
    model: &str,
    slots: u32,
    threads: Option<u32>,
) -> anyhow::Result<Vec<Target>> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut targets = Vec::new();
    for policy in POLICIES {
        let port = crate::ports::free_port(localhost)?;
        let name = format!("bench-orcd-{policy}");
        let orcd = crate::stack::start_orcd(
            cx,
            &cleanup.run_dir,
            &name,
            &binaries.orcd,
            &format!("127.0.0.1:{port}"),
            &["--routing".into(), policy.into()],
        )
        .with_context(|| format!("starting orcd with --routing {policy}"))?;
        cleanup.daemon(orcd.name.clone());
        let url = orcd.url.clone().expect("orcd is started with a url");
        for index in 0..WORKERS_PER_POLICY {
            let launch = WorkerLaunch {
                backend: cx.settings.default_backend,
                slots: Some(slots),
                ctx_size: Some(CTX_PER_SLOT),
                threads: Some(threads.unwrap_or_else(share_of_the_cores)),
                ..WorkerLaunch::of_model(model)
            };
            let spec = SpawnSpec {
                orchestrator_url: Some(url.clone()),
                id: Some(format!("bench-{policy}-{index}")),
                timeout: Duration::from_secs(120),
                ..SpawnSpec::new(launch).with_program(&binaries.worker)
            };
            let worker = pool_worker::start_worker(cx, &cleanup.run_dir, &spec)?;
            cleanup.daemon(worker.name.clone());
        }
        targets.push(Target::Orcd {
            url,
            model: model.to_owned(),
        });
    }
    Ok(targets)
}

/// Threads of each routed worker without `--threads`: the workers of a policy stand in for
/// hosts of their own, so each gets its share of this machine's CPUs instead of all of them;
/// two workers with every CPU each would fight over them, which hosts of their own never do,
/// and that contention, not routing, would decide the figures.
fn share_of_the_cores() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
    (cpus / WORKERS_PER_POLICY).max(1) as u32
}

pub fn figures() -> Vec<Figure> {
    vec![
        Figure::new(
            "time to first token p50, all turns",
            "ms",
            Better::Lower,
            "8 conversations at once, 4 turns each (every turn resends the history plus a 32-token answer, 200–740 ms after that answer), through one orcd with two workers of 4 slots (each with half the CPUs unless `--threads` is given): the median time to first token over all their turns",
            2,
        ),
        Figure::new(
            "throughput",
            "tok/s",
            Better::Higher,
            "all tokens the 8 conversations generated over the wall time of the workload (the pauses between turns included)",
            2,
        ),
    ]
}

/// One run of the workload on every policy, in turn.
pub async fn measure(
    http: &reqwest::Client,
    targets: &[Target],
    run: u32,
    figures: &mut [Figure],
) -> anyhow::Result<()> {
    for (column, target) in targets.iter().enumerate() {
        let started = Instant::now();
        let conversations = futures::future::try_join_all(
            (0..CONVERSATIONS).map(|index| conversation(http, target, run, column, index)),
        )
        .await?;
        let wall = started.elapsed().as_secs_f64();
        let samples: Vec<&Sample> = conversations.iter().flatten().collect();
        let first_tokens: Vec<f64> = samples
            .iter()
            .map(|sample| sample.time_to_first_token_ms())
            .collect();
        if let Some(p50) = percentile(&first_tokens, 50.0) {
            figures[0].push(column, p50);
        }
        let tokens: u32 = samples.iter().map(|sample| sample.generated_tokens).sum();
        figures[1].push(column, f64::from(tokens) / wall);
    }
    Ok(())
}

async fn conversation(
    http: &reqwest::Client,
    target: &Target,
    run: u32,
    column: usize,
    index: u32,
) -> anyhow::Result<Vec<Sample>> {
    let mut history = format!("Conversation {index} of run {run} on side {column}. {BENCH_PROMPT}");
    let mut samples = Vec::with_capacity(TURNS);
    for turn in 1..=TURNS {
        if turn > 1 {
            tokio::time::sleep(think_time(index, turn)).await;
        }
        let sample = complete(http, target, &history, ANSWER_TOKENS).await?;
        history.push_str(&sample.text);
        history.push_str(&format!(
            "\n\nQuestion {turn}: and what happened after that?\n\nAnswer {turn}:"
        ));
        samples.push(sample);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_times_stay_in_their_range_and_differ_between_conversations() {
        let times: Vec<Duration> = (0..CONVERSATIONS)
            .flat_map(|conversation| (2..=TURNS).map(move |turn| think_time(conversation, turn)))
            .collect();
        assert!(times
            .iter()
            .all(|time| (200..=740).contains(&time.as_millis())));
        let first_pauses: std::collections::BTreeSet<Duration> = (0..CONVERSATIONS)
            .map(|conversation| think_time(conversation, 2))
            .collect();
        assert!(first_pauses.len() >= 6, "{first_pauses:?}");
    }
}
