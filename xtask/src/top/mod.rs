//! `cargo xtask top`: the fleet live in a terminal, from orcd's `/v2/events` (the stream the web
//! console draws from). `state` folds the events into rows, `input` turns keys into choices,
//! `render` draws a frame, `terminal` owns raw mode, `feed` the connection; `--once` prints
//! one snapshot instead (`snapshot`).

mod feed;
mod input;
mod render;
mod snapshot;
mod state;
mod terminal;

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use llorch_api::CancelResult;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::daemon::RunDir;
use crate::flags::TopArgs;
use crate::Context;
use llorch_client::{blocking::OrcdClient, url_segment};

use self::feed::FeedMessage;
use self::input::{Action, Link, Ui, VisibleRows};
use self::render::{LogTail, Screen};
use self::state::FleetView;

/// How long the loop waits for a key before it redraws anyway (new events, the log, clocks).
const FRAME_EVERY: Duration = Duration::from_millis(200);
/// Lines of a worker's log kept for the log pane.
const LOG_LINES: usize = 200;

pub fn run(args: TopArgs, cx: &Context) -> anyhow::Result<()> {
    let url = args
        .orchestrator_url
        .unwrap_or_else(|| cx.settings.orchestrator_url.clone());
    let client = crate::orcd::client(cx, &url)?;
    if args.once {
        return print_once(cx, &client);
    }
    if cx.out.json() {
        bail!("--json needs --once: the live view is drawn for people\nhint: run `cargo xtask --json top --once` for one JSON document");
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!("`top` draws a full-screen view and needs a terminal on stdout\nhint: run `cargo xtask top --once` for a plain snapshot");
    }
    let events_client = crate::orcd::client(cx, &url)?;
    let (sender, receiver) = mpsc::channel();
    feed::follow(events_client, sender);
    live(cx, &client, &receiver)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn print_once(cx: &Context, client: &OrcdClient) -> anyhow::Result<()> {
    let view = FleetView::from_snapshot(feed::snapshot(client)?);
    let report = snapshot::FleetReport::of(&view, client.base_url(), unix_millis());
    if cx.out.json() {
        return cx.out.print_json(&report);
    }
    print!("{}", snapshot::plain_text(&report));
    Ok(())
}

/// The full-screen loop: fold in what the feed sent, draw, wait briefly for a key, act on it.
fn live(
    cx: &Context,
    client: &OrcdClient,
    feed: &mpsc::Receiver<FeedMessage>,
) -> anyhow::Result<()> {
    let stop = terminal::stop_on_signals()?;
    let mut screen = terminal::TerminalGuard::enter()?;
    let mut view = FleetView::default();
    let mut ui = Ui::default();
    let mut log = LogFollower::new();
    while !stop.load(Ordering::SeqCst) {
        for message in feed.try_iter() {
            match message {
                FeedMessage::Event(event) => {
                    ui.link = Link::Live;
                    view.apply(event);
                }
                FeedMessage::Lost(reason) => ui.link = Link::Lost(reason),
            }
        }
        let rows = VisibleRows::of(&view, &ui.filter, unix_millis());
        if ui.show_log {
            log.follow(
                ui.selected_worker(&rows)
                    .map(|worker| worker.worker_id.as_str()),
            );
        }
        let frame = Screen {
            orchestrator_url: client.base_url(),
            totals: view.totals(),
            rows: &rows,
            ui: &ui,
            log: &log.tail,
            color: cx.out.paint().enabled(),
        };
        screen.terminal.draw(|f| render::draw(f, &frame))?;
        if !event::poll(FRAME_EVERY)? {
            continue;
        }
        // A resize needs nothing but the next frame, which is drawn at the new size.
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match ui.handle_key(key, &rows) {
            Action::Nothing => {}
            Action::Quit => break,
            Action::CancelJob(job_id) => ui.message = Some(cancel(client, &job_id)),
        }
    }
    Ok(())
}

/// Cancels a job with the operator's token; the outcome is a line for the status bar.
fn cancel(client: &OrcdClient, job_id: &str) -> String {
    let path = format!("/v2/tasks/{}", url_segment(job_id));
    match client.delete_json::<CancelResult>(&path) {
        Ok(result) => format!(
            "cancelled job {} (it was {})",
            result.job_id,
            state::job_state_name(result.previous_state)
        ),
        Err(error) => crate::output::render_error(&error).replace('\n', " · "),
    }
}

/// The log pane's source: the log file of a worker started on this machine by `pool worker
/// spawn` or `up`, found in the run directory under the worker's id.
struct LogFollower {
    run_dir: Option<RunDir>,
    tail: LogTail,
    last_read: Option<(String, Instant)>,
}

impl LogFollower {
    fn new() -> LogFollower {
        LogFollower {
            run_dir: RunDir::from_env().ok(),
            tail: LogTail::default(),
            last_read: None,
        }
    }

    /// Reads the tail again when the selection changed or a moment passed.
    fn follow(&mut self, worker_id: Option<&str>) {
        let Some(worker_id) = worker_id else {
            self.tail = LogTail {
                title: "log".into(),
                lines: vec!["select a worker in the Workers pane to follow its log".into()],
            };
            self.last_read = None;
            return;
        };
        let fresh = self
            .last_read
            .as_ref()
            .is_some_and(|(id, at)| id == worker_id && at.elapsed() < Duration::from_millis(500));
        if !fresh {
            self.tail = read_log(self.run_dir.as_ref(), worker_id);
            self.last_read = Some((worker_id.to_owned(), Instant::now()));
        }
    }
}

fn read_log(run_dir: Option<&RunDir>, worker_id: &str) -> LogTail {
    let Some(run_dir) = run_dir else {
        return LogTail {
            title: format!("log of {worker_id}"),
            lines: vec![
                "no run directory: set LLORCH_RUN_DIR to where `pool worker spawn` keeps logs"
                    .into(),
            ],
        };
    };
    let path = run_dir.log_path(worker_id);
    match crate::daemon::tail_lines(&path, LOG_LINES) {
        Ok(lines) => LogTail {
            title: format!("log of {worker_id}: {}", path.display()),
            lines,
        },
        Err(_) => LogTail {
            title: format!("log of {worker_id}"),
            lines: vec![format!(
                "no log at {}: only workers started on this machine by `cargo xtask pool worker spawn` or `up` have one here",
                path.display()
            )],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_pane_reads_a_local_workers_log_from_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = RunDir::at(dir.path());
        std::fs::write(
            run_dir.log_path("cpu-a"),
            "loading model\nlistening on :9001\n",
        )
        .unwrap();
        let tail = read_log(Some(&run_dir), "cpu-a");
        assert_eq!(tail.lines, ["loading model", "listening on :9001"]);
        assert!(tail.title.starts_with("log of cpu-a: "), "{}", tail.title);

        let elsewhere = read_log(Some(&run_dir), "gpu-box-1");
        assert!(
            elsewhere.lines[0].starts_with("no log at ")
                && elsewhere.lines[0].contains("pool worker spawn"),
            "{:?}",
            elsewhere.lines
        );
    }
}
