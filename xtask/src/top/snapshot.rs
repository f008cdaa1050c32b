//! `top --once`: the fleet as plain text (for scripts and `watch`) or, with `--json`, as one
//! JSON document. The text is stable: three sections (`WORKERS`, `QUEUES`, `JOBS`), after a
//! `HOSTS` section when orcd has pool managers, each a header line and one line per row, columns separated by spaces, `-` where there is no value,
//! so `awk` and the tests split it on whitespace.

use serde::Serialize;

use super::hosts::{HostRow, HOST_COLUMNS};
use super::state::{
    FleetView, JobRow, QueueRow, Totals, WorkerRow, JOB_COLUMNS, QUEUE_COLUMNS, WORKER_COLUMNS,
};

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub orchestrator_url: String,
    pub totals: Totals,
    /// The pool managers' hosts; empty when orcd has none.
    pub hosts: Vec<HostRow>,
    pub workers: Vec<WorkerRow>,
    pub queues: Vec<QueueRow>,
    pub jobs: Vec<JobRow>,
}

impl FleetReport {
    pub fn of(view: &FleetView, orchestrator_url: &str, now_ms: u64) -> FleetReport {
        FleetReport {
            orchestrator_url: orchestrator_url.to_owned(),
            totals: view.totals(),
            hosts: view.hosts().iter().map(HostRow::of).collect(),
            workers: view.worker_rows(),
            queues: view.queue_rows(now_ms),
            jobs: view.job_rows(now_ms),
        }
    }
}

/// Lays out `rows` under `header` in columns as wide as their widest cell.
fn table(title: &str, header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|name| name.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut text = format!("{title} ({})\n", rows.len());
    text.push_str(&line(header.iter().map(|name| name.to_string()).collect()));
    text.push('\n');
    for row in rows {
        text.push_str(&line(row));
        text.push('\n');
    }
    text
}

/// The plain snapshot.
pub fn plain_text(report: &FleetReport) -> String {
    let totals = report.totals;
    let mut text = format!(
        "orcd {}  workers {} live {} dead  jobs {} running {} queued\n\n",
        report.orchestrator_url,
        totals.live_workers,
        totals.dead_workers,
        totals.running_jobs,
        totals.queued_jobs
    );
    let hosts = (!report.hosts.is_empty()).then(|| {
        (
            "HOSTS",
            &HOST_COLUMNS[..],
            report.hosts.iter().map(HostRow::cells).collect(),
        )
    });
    let sections = hosts.into_iter().chain([
        (
            "WORKERS",
            &WORKER_COLUMNS[..],
            report.workers.iter().map(WorkerRow::cells).collect(),
        ),
        (
            "QUEUES",
            &QUEUE_COLUMNS[..],
            report.queues.iter().map(QueueRow::cells).collect(),
        ),
        (
            "JOBS",
            &JOB_COLUMNS[..],
            report.jobs.iter().map(JobRow::cells).collect(),
        ),
    ]);
    let tables: Vec<String> = sections
        .map(|(title, header, rows)| table(title, header, rows))
        .collect();
    text.push_str(&tables.join("\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::super::state::fixtures::*;
    use super::*;

    #[test]
    fn the_plain_snapshot_of_a_busy_fleet() {
        let text = plain_text(&FleetReport::of(&busy(), "http://127.0.0.1:8080", NOW_MS));
        let expected = "\
orcd http://127.0.0.1:8080  workers 2 live 0 dead  jobs 3 running 1 queued

WORKERS (2)
ID     HOST      MODEL        BACKEND  STATE  SLOTS  TOK/S  SEEN
cpu-a  10.0.0.5  gemma3-270m  cpu      live   2/2    60.0   800ms
cpu-b  10.0.0.6  gemma3-270m  cpu      live   1/2    30.0   800ms

QUEUES (1)
MODEL        QUEUED  RUNNING  LOADING  SLOTS  LIVE  DEAD  WAIT
gemma3-270m  1       3        0        3/4    2     0     500ms

JOBS (5)
JOB    MODEL        WORKER  STATE      TTFT  TOKENS  TIME
job-4  gemma3-270m  -       queued     -     0       500ms
job-3  gemma3-270m  cpu-b   running    42ms  8       1.0s
job-2  gemma3-270m  cpu-a   running    42ms  64      2.0s
job-1  gemma3-270m  cpu-a   running    42ms  120     3.0s
job-0  gemma3-270m  cpu-b   completed  42ms  32      2.4s
";
        assert_eq!(text, expected);
    }

    #[test]
    fn hosts_come_first_when_orcd_has_pool_managers() {
        let text = plain_text(&FleetReport::of(
            &lost_host(),
            "http://127.0.0.1:8080",
            NOW_MS,
        ));
        let hosts: Vec<&str> = text
            .lines()
            .skip_while(|line| !line.starts_with("HOSTS"))
            .take(4)
            .collect();
        assert_eq!(
            hosts,
            [
                "HOSTS (2)",
                "HOST     STATE  CPU  RAM           VRAM          SEEN   MODELS",
                "gpu-box  live   25%  12.0/32.0GiB  18.0/24.0GiB  400ms  gemma3-270m,qwen2.5-coder-0.5b",
                "nas      lost   90%  14.0/16.0GiB  -             31.0s  gemma3-270m",
            ]
        );
        assert!(text.find("HOSTS").unwrap() < text.find("WORKERS").unwrap());
        assert!(!plain_text(&FleetReport::of(&busy(), "http://h:1", NOW_MS)).contains("HOSTS"));
    }

    #[test]
    fn an_empty_fleet_still_prints_every_section() {
        let text = plain_text(&FleetReport::of(&empty(), "http://h:1", NOW_MS));
        for header in ["WORKERS (0)\nID ", "QUEUES (0)\nMODEL ", "JOBS (0)\nJOB "] {
            assert!(text.contains(header), "{header:?} missing from\n{text}");
        }
    }
}
