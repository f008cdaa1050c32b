//! `cargo xtask jobs`: submit, list, inspect and cancel jobs on orcd, and report usage by
//! key. Tokens are printed as the SSE events arrive, so a person sees the model write.

use std::io::Write;

use anyhow::{bail, Context as _};
use llorch_api::{CancelResult, ChatMessage, JobInfo, SamplingParams, StreamEvent, TaskRequest};
use llorch_client::{blocking::OrcdClient, url_segment, JobOutcome};

use crate::{
    flags::{JobsArgs, JobsCmd, SubmitArgs},
    Context,
};

pub fn run(args: JobsArgs, cx: &Context) -> anyhow::Result<()> {
    let client = crate::orcd::client(
        cx,
        args.orchestrator_url
            .as_deref()
            .unwrap_or(&cx.settings.orchestrator_url),
    )?;
    match args.command {
        JobsCmd::Submit(submit) => {
            let request = task_request(cx, submit)?;
            submit_and_print(cx, &client, &request).map(|_| ())
        }
        JobsCmd::List => {
            let jobs: Vec<JobInfo> = client.get_json("/v2/tasks")?;
            print_jobs(cx, &jobs)
        }
        JobsCmd::Status { id } => {
            let job: JobInfo = client.get_json(&format!("/v2/tasks/{}", url_segment(&id)))?;
            if cx.out.json() {
                return cx.out.print_json(&job);
            }
            print_jobs(cx, std::slice::from_ref(&job))
        }
        JobsCmd::Usage { since } => print_usage(cx, &client, since.as_deref()),
        JobsCmd::Cancel { id } => {
            let result: CancelResult =
                client.delete_json(&format!("/v2/tasks/{}", url_segment(&id)))?;
            if cx.out.json() {
                return cx.out.print_json(&result);
            }
            cx.out.println(format!(
                "cancelled {} (it was {})",
                result.job_id,
                format!("{:?}", result.previous_state).to_lowercase()
            ));
            Ok(())
        }
    }
}

fn task_request(cx: &Context, submit: SubmitArgs) -> anyhow::Result<TaskRequest> {
    let model = match submit.model {
        Some(model) => model,
        None => crate::models::default_model_id(cx)?,
    };
    let messages = submit.chat.map(|content| {
        let mut messages = Vec::new();
        if let Some(system) = submit.system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", content));
        messages
    });
    Ok(TaskRequest {
        model,
        prompt: submit.prompt,
        messages,
        parse_special: false,
        sampling: SamplingParams {
            max_tokens: submit.max_tokens,
            temperature: submit.temperature,
            top_k: submit.top_k,
            top_p: submit.top_p,
            seed: submit.seed,
            stop: submit.stop,
            ..SamplingParams::default()
        },
        tools: Default::default(),
        stream: true,
        unknown: Default::default(),
    })
}

/// Streams one job; tokens go to stdout as they arrive unless `--json` asked for one document.
pub fn submit_and_print(
    cx: &Context,
    client: &OrcdClient,
    request: &TaskRequest,
) -> anyhow::Result<JobOutcome> {
    let live = !cx.out.json();
    let mut stdout = std::io::stdout();
    let outcome = client.submit(request, |event| {
        match event {
            StreamEvent::Token { text, .. } if live => {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
            StreamEvent::Queued {
                state: Some(_),
                host_id,
                elapsed_ms,
                ..
            } => cx.out.debug(format!(
                "loading the model on {} ({} ms)",
                host_id.as_deref().unwrap_or("a host"),
                elapsed_ms.unwrap_or_default()
            )),
            StreamEvent::Queued { position, .. } => {
                cx.out.debug(format!("queued at position {position}"));
            }
            StreamEvent::Started { worker_id, .. } => {
                cx.out.debug(format!("started on {worker_id}"))
            }
            _ => {}
        }
        Ok(())
    })?;
    if cx.out.json() {
        cx.out.print_json(&outcome)?;
    } else {
        if !outcome.text.ends_with('\n') {
            println!();
        }
        cx.out.status(cx.out.paint().dim(&stats_line(&outcome)));
    }
    Ok(outcome)
}

fn stats_line(outcome: &JobOutcome) -> String {
    let stats = &outcome.stats;
    format!(
        "-- {} tokens ({}), prompt {} tokens, first token {:.0} ms, {:.1} tok/s, worker {}, job {}",
        stats.generated_tokens,
        format!("{:?}", stats.finish_reason).to_lowercase(),
        stats.prompt_tokens,
        stats.time_to_first_token_ms,
        stats.tokens_per_second,
        outcome.worker_id.as_deref().unwrap_or("?"),
        outcome.job_id.as_deref().unwrap_or("?"),
    )
}

fn print_jobs(cx: &Context, jobs: &[JobInfo]) -> anyhow::Result<()> {
    if cx.out.json() {
        return cx.out.print_json(jobs);
    }
    if jobs.is_empty() {
        cx.out.println("no jobs yet");
        return Ok(());
    }
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{:<38} {:<20} {:<24} {:<10} {:>6} {:>9} {:>9}",
        "JOB", "MODEL", "WORKER", "STATE", "TOKENS", "TTFT ms", "TOTAL ms"
    )));
    for job in jobs {
        let millis = |value: Option<f64>| value.map_or("-".to_owned(), |ms| format!("{ms:.0}"));
        cx.out.println(format!(
            "{:<38} {:<20} {:<24} {:<10} {:>6} {:>9} {:>9}",
            job.job_id,
            job.model,
            job.worker_id.as_deref().unwrap_or("-"),
            format!("{:?}", job.state).to_lowercase(),
            job.generated_tokens,
            millis(job.time_to_first_token_ms),
            millis(job.duration_ms),
        ));
        if let Some(error) = &job.error {
            cx.out.println(format!("    {}", paint.red(error)));
        }
    }
    Ok(())
}

/// `GET /v2/usage` as a table by key, model and day (or the report as JSON).
fn print_usage(cx: &Context, client: &OrcdClient, since: Option<&str>) -> anyhow::Result<()> {
    let path = match since {
        Some(day) if !llorch_api::usage::is_day(day) => {
            bail!("`--since {day}` is not a day\nhint: give it as YYYY-MM-DD, e.g. `--since 2026-12-01`")
        }
        Some(day) => format!("/v2/usage?since={day}"),
        None => "/v2/usage".to_owned(),
    };
    let report: llorch_api::usage::UsageReport = client
        .get_json(&path)
        .context("reading usage from orcd (it needs an operator token: LLORCH_API_TOKEN_FILE pointing at a line of orcd's --admin-token-file)")?;
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    if report.rows.is_empty() {
        cx.out.println("no finished jobs counted yet");
        return Ok(());
    }
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{:<24} {:<24} {:<10} {:>8} {:>12} {:>12} {:>12}",
        "KEY", "MODEL", "DAY", "JOBS", "PROMPT", "COMPLETION", "TOTAL"
    )));
    for row in &report.rows {
        let totals = &row.totals;
        cx.out.println(format!(
            "{:<24} {:<24} {:<10} {:>8} {:>12} {:>12} {:>12}",
            row.key,
            row.model,
            row.day,
            totals.requests,
            totals.prompt_tokens,
            totals.completion_tokens,
            totals.prompt_tokens + totals.completion_tokens,
        ));
    }
    Ok(())
}
