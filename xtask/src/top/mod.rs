//! `cargo xtask top`: the fleet live in a terminal, from orcd's `/v2/events` (the stream the web
//! console draws from). `state` folds the events into rows, `hosts` the pool managers'
//! reports, `input` turns keys into choices, `render` draws a frame, `terminal` owns raw
//! mode, `feed` the connection and the polls, `log` the log pane; `--once` prints one
//! snapshot instead (`snapshot`).

mod feed;
mod hosts;
mod input;
mod log;
mod render;
mod snapshot;
mod state;
mod terminal;

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use llorch_api::CancelResult;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::flags::TopArgs;
use crate::models::placement::ModelAction;
use crate::Context;
use llorch_client::{blocking::OrcdClient, url_segment};

use self::feed::{FeedMessage, RemoteLogWanted};
use self::input::{Action, Link, Ui, VisibleRows};
use self::log::LogFollower;
use self::render::Screen;
use self::state::FleetView;

/// How long the loop waits for a key before it redraws anyway (new events, the log, clocks).
const FRAME_EVERY: Duration = Duration::from_millis(200);

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
    let (sender, receiver) = mpsc::channel();
    feed::follow(crate::orcd::client(cx, &url)?, sender.clone());
    let wanted = RemoteLogWanted::default();
    feed::poll(crate::orcd::client(cx, &url)?, wanted.clone(), sender);
    live(cx, &client, &receiver, LogFollower::new(wanted))
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn print_once(cx: &Context, client: &OrcdClient) -> anyhow::Result<()> {
    let mut view = FleetView::from_snapshot(feed::snapshot(client)?);
    view.set_hosts(feed::hosts(client).unwrap_or_default());
    if let Some(models) = feed::loading_models(client) {
        view.set_loading_models(&models);
    }
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
    mut log: LogFollower,
) -> anyhow::Result<()> {
    let stop = terminal::stop_on_signals()?;
    let mut screen = terminal::TerminalGuard::enter()?;
    let mut view = FleetView::default();
    let mut ui = Ui::default();
    while !stop.load(Ordering::SeqCst) {
        for message in feed.try_iter() {
            match message {
                FeedMessage::Event(event) => {
                    ui.link = Link::Live;
                    view.apply(event);
                }
                FeedMessage::Lost(reason) => ui.link = Link::Lost(reason),
                FeedMessage::Polled(polled) => {
                    if let Some(hosts) = polled.hosts {
                        view.set_hosts(hosts);
                    }
                    if let Some(models) = polled.loading_models {
                        view.set_loading_models(&models);
                    }
                    if let Some((worker_id, lines)) = polled.remote_log {
                        log.remote_arrived(worker_id, lines);
                    }
                }
            }
        }
        let rows = VisibleRows::of(&view, &ui.filter, unix_millis());
        ui.keep_focus_visible(&rows);
        match ui.show_log {
            true => {
                let worker = ui.selected_worker(&rows).map(|worker| {
                    let id = worker.worker_id.as_str();
                    (id, view.host_running(id))
                });
                log.follow(worker);
            }
            false => log.stop(),
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
            Action::UnloadModel(model) => ui.message = Some(unload(client, &model)),
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
        Err(error) => feed::one_line(&error),
    }
}

/// Asks orcd to stop the workers pool managers run for `model` (operator token); the outcome
/// is a line for the status bar. A refused token's line names the setting to fix.
fn unload(client: &OrcdClient, model: &str) -> String {
    let path = format!("/v2/models/{}/unload", url_segment(model));
    match client.post_json::<ModelAction>(&path) {
        Ok(action) => format!(
            "unloading model {}: stopping {}",
            action.model,
            action.workers.join(", ")
        ),
        Err(error) => feed::one_line(&error),
    }
}
