//! Draws one frame of `top`: a title and status line, the Hosts (when orcd has pool managers),
//! Workers, Queues and Jobs tables, the log of the selected worker when `l` opened it, the keys
//! in a footer, and the details or confirmation dialog on top. Pure: everything it shows comes in through [`Screen`], so tests
//! draw it on ratatui's `TestBackend`.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use llorch_api::{JobState, WorkerState};

use super::hosts::{percent, HostRow, HOST_COLUMNS};
use super::input::{Link, Mode, Pane, Ui, VisibleRows};
use super::state::{
    human_millis, job_state_name, worker_state_name, JobRow, Totals, WorkerRow, JOB_COLUMNS,
    QUEUE_COLUMNS,
};

/// The tail of the selected worker's log, or why there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    pub title: String,
    pub lines: Vec<String>,
}

/// Everything one frame shows.
pub struct Screen<'a> {
    pub orchestrator_url: &'a str,
    pub totals: Totals,
    pub rows: &'a VisibleRows,
    pub ui: &'a Ui,
    pub log: &'a LogTail,
    /// Colour is off with `--no-color`/`NO_COLOR`; selection then shows by reverse video.
    pub color: bool,
}

const LOG_HEIGHT: u16 = 8;
/// The Jobs pane's border, header and one row.
const JOBS_LEAST: u16 = 4;
/// Cells of a gauge's bar; with a space and `100%` it takes 11 columns.
const GAUGE_BAR: usize = 6;

pub fn draw(frame: &mut Frame, screen: &Screen) {
    let hosts_height = match screen.rows.hosts_reported {
        true => (screen.rows.hosts.len() as u16 + 3).clamp(4, 6),
        false => 0,
    };
    let workers_height = (screen.rows.workers.len() as u16 + 3).clamp(4, 8);
    let queues_height = (screen.rows.queues.len() as u16 + 3).clamp(4, 6);
    let status_lines = status_lines(screen);
    let status_height = wrapped_height(&status_lines, frame.area().width);
    // The log takes what the other panes leave over the Jobs pane's least, from one line of
    // log (when the screen is short, the Jobs pane keeps only its header) to LOG_HEIGHT.
    let others = 2 + status_height + hosts_height + workers_height + queues_height + JOBS_LEAST;
    let log_height = match screen.ui.show_log {
        true => (frame.area().height.saturating_sub(others)).clamp(3, LOG_HEIGHT),
        false => 0,
    };
    let [title, status, hosts, workers, queues, jobs, log, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(status_height),
        Constraint::Length(hosts_height),
        Constraint::Length(workers_height),
        Constraint::Length(queues_height),
        Constraint::Fill(1),
        Constraint::Length(log_height),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(title_line(screen), title);
    // Wrapped, so that a hint naming a long token file path still shows the setting's name.
    frame.render_widget(
        Paragraph::new(status_lines).wrap(Wrap { trim: false }),
        status,
    );
    if screen.rows.hosts_reported {
        draw_hosts(frame, hosts, screen);
    }
    draw_workers(frame, workers, screen);
    draw_queues(frame, queues, screen);
    draw_jobs(frame, jobs, screen);
    if screen.ui.show_log {
        draw_log(frame, log, screen);
    }
    frame.render_widget(footer_line(screen), footer);
    match &screen.ui.mode {
        Mode::Details => draw_details(frame, screen),
        Mode::ConfirmCancel(job_id) => draw_confirm(
            frame,
            screen,
            " cancel ",
            &[
                format!("Cancel job {job_id}?"),
                "y cancels it, any other key keeps it".into(),
            ],
        ),
        Mode::ConfirmUnload(model) => draw_confirm(
            frame,
            screen,
            " unload ",
            &[
                format!("Unload model {model}? Its workers finish their jobs, then stop."),
                "y unloads it, any other key keeps it".into(),
            ],
        ),
        Mode::Browse | Mode::Filter => {}
    }
}

fn fg(screen: &Screen, color: Color) -> Style {
    if screen.color {
        Style::new().fg(color)
    } else {
        Style::new()
    }
}

fn title_line(screen: &Screen) -> Paragraph<'static> {
    let totals = screen.totals;
    let (link, link_color) = match &screen.ui.link {
        Link::Connecting => ("connecting", Color::Yellow),
        Link::Live => ("live", Color::Green),
        Link::Lost(_) => ("down", Color::Red),
    };
    let mut spans = vec![
        Span::styled("top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  {}  ", screen.orchestrator_url)),
        Span::styled(link.to_owned(), fg(screen, link_color)),
        Span::raw(format!(
            "  workers {} ({} dead)  jobs {} running {} queued",
            totals.live_workers + totals.dead_workers,
            totals.dead_workers,
            totals.running_jobs,
            totals.queued_jobs
        )),
    ];
    if !screen.ui.filter.is_empty() && screen.ui.mode != Mode::Filter {
        spans.push(Span::raw(format!("  filter: {}", screen.ui.filter)));
    }
    Paragraph::new(Line::from(spans))
}

/// Why orcd cannot be reached and that the view keeps trying, with the hint on its own line;
/// else the outcome of the last action.
/// Rows `lines` take when wrapped at `width` (at least one, so the layout does not jump).
fn wrapped_height(lines: &[Line], width: u16) -> u16 {
    let width = usize::from(width.max(1));
    let rows: usize = lines
        .iter()
        .map(|line| line.width().div_ceil(width).max(1))
        .sum();
    rows.clamp(1, 4) as u16
}

fn status_lines(screen: &Screen) -> Vec<Line<'static>> {
    match &screen.ui.link {
        Link::Lost(reason) => {
            let mut lines = reason.lines();
            let attempt = lines.next().unwrap_or_default();
            let mut status = vec![Line::styled(
                format!(
                    "{attempt} · retrying every {} s",
                    super::feed::RETRY_EVERY.as_secs()
                ),
                fg(screen, Color::Red),
            )];
            status.extend(lines.map(|hint| Line::raw(hint.to_owned())));
            status
        }
        _ => vec![Line::raw(screen.ui.message.clone().unwrap_or_default())],
    }
}

/// The keys that work where the focus is: `c` on the Jobs pane, `u` on the Queues pane when
/// orcd has pool managers.
fn browse_keys(screen: &Screen) -> String {
    let action = match screen.ui.focus {
        Pane::Jobs => "c cancel  ",
        Pane::Queues if screen.ui.can_unload(screen.rows) => "u unload  ",
        _ => "",
    };
    format!("↑↓/jk select  Tab pane  Enter details  {action}l log  / filter  q quit")
}

fn footer_line(screen: &Screen) -> Paragraph<'static> {
    let text = match &screen.ui.mode {
        Mode::Filter => format!("/{}▏  Enter apply  Esc clear", screen.ui.filter),
        Mode::ConfirmCancel(job_id) => format!("cancel job {job_id}? y/n"),
        Mode::ConfirmUnload(model) => format!("unload model {model}? y/n"),
        Mode::Details => "Esc close".to_owned(),
        Mode::Browse => browse_keys(screen),
    };
    Paragraph::new(Line::styled(text, Style::new().add_modifier(Modifier::DIM)))
}

fn pane_block(screen: &Screen, pane: Pane, title: String) -> Block<'static> {
    let focused = screen.ui.focus == pane;
    let border = match (focused, screen.color) {
        (true, true) => Style::new().fg(Color::Cyan),
        (true, false) => Style::new().add_modifier(Modifier::BOLD),
        (false, _) => Style::new(),
    };
    Block::new()
        .borders(Borders::ALL)
        .border_style(border)
        .title(if focused {
            format!("[{title}]")
        } else {
            format!(" {title} ")
        })
}

fn header(names: &[&'static str]) -> Row<'static> {
    Row::new(names.iter().copied()).style(Style::new().add_modifier(Modifier::BOLD))
}

/// One of the row panes: its rows under a bold header, the first column taking what the
/// fixed-width others leave.
struct PaneTable<'a> {
    pane: Pane,
    title: String,
    header: &'a [&'static str],
    first_min: u16,
    widths: &'a [u16],
    rows: Vec<Row<'static>>,
    /// Said under the header when there are no rows.
    empty: &'a str,
}

fn draw_table(frame: &mut Frame, area: Rect, screen: &Screen, pane: PaneTable) {
    let no_rows = pane.rows.is_empty();
    let widths = std::iter::once(Constraint::Min(pane.first_min))
        .chain(pane.widths.iter().map(|width| Constraint::Length(*width)));
    let table = Table::new(pane.rows, widths)
        .header(header(pane.header))
        .block(pane_block(screen, pane.pane, pane.title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let selected = if screen.ui.focus == pane.pane {
        screen.ui.selected(pane.pane, screen.rows)
    } else {
        None
    };
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut state);
    if no_rows && area.height > 3 {
        // Under the header, inside the border: why the table is empty.
        let line = Rect {
            x: area.x + 3,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1,
        };
        frame.render_widget(Paragraph::new(pane.empty.to_owned()), line);
    }
}

fn draw_hosts(frame: &mut Frame, area: Rect, screen: &Screen) {
    let hosts = &screen.rows.hosts;
    let lost = hosts.iter().filter(|host| host.is_lost()).count();
    let pane = PaneTable {
        pane: Pane::Hosts,
        title: match lost {
            0 => format!("Hosts ({})", hosts.len()),
            lost => format!("Hosts ({}, {lost} lost)", hosts.len()),
        },
        header: &HOST_COLUMNS,
        first_min: 8,
        widths: &[5, 11, 11, 11, 5, MODELS_WIDTH],
        rows: hosts.iter().map(|row| host_row(screen, row)).collect(),
        empty: "no hosts match the filter",
    };
    draw_table(frame, area, screen, pane);
}

const MODELS_WIDTH: u16 = 17;

/// A host's CPU, RAM and VRAM as gauges; a lost host's row is red with its last figures.
fn host_row(screen: &Screen, row: &HostRow) -> Row<'static> {
    let gauge_cell = |fraction: Option<f64>| match fraction {
        Some(fraction) if !row.is_lost() => {
            Cell::from(gauge(fraction)).style(fg(screen, gauge_color(fraction)))
        }
        Some(fraction) => Cell::from(gauge(fraction)),
        None => Cell::from("-"),
    };
    let cells = vec![
        Cell::from(row.host_id.clone()),
        Cell::from(row.state.clone()),
        gauge_cell(Some(row.cpu_fraction())),
        gauge_cell(Some(row.ram_fraction())),
        gauge_cell(row.vram_fraction()),
        Cell::from(human_millis(row.last_seen_ms_ago)),
        Cell::from(fit(&row.models_cell(), usize::from(MODELS_WIDTH))),
    ];
    let style = match row.is_lost() {
        true => fg(screen, Color::Red),
        false => Style::new(),
    };
    Row::new(cells).style(style)
}

/// `███░░░  50%`: a bar of [`GAUGE_BAR`] cells and the percentage.
pub fn gauge(fraction: f64) -> String {
    let filled = (fraction.clamp(0.0, 1.0) * GAUGE_BAR as f64).round() as usize;
    format!(
        "{}{} {:>4}",
        "█".repeat(filled),
        "░".repeat(GAUGE_BAR - filled),
        percent(fraction)
    )
}

fn gauge_color(fraction: f64) -> Color {
    match fraction {
        f if f >= 0.9 => Color::Red,
        f if f >= 0.7 => Color::Yellow,
        _ => Color::Green,
    }
}

/// `text`, cut to `width` characters with `…` when longer.
fn fit(text: &str, width: usize) -> String {
    match text.chars().count() <= width {
        true => text.to_owned(),
        false => text
            .chars()
            .take(width.saturating_sub(1))
            .chain(['…'])
            .collect(),
    }
}

fn draw_workers(frame: &mut Frame, area: Rect, screen: &Screen) {
    let workers = &screen.rows.workers;
    let pane = PaneTable {
        pane: Pane::Workers,
        title: format!("Workers ({})", workers.len()),
        header: &[
            "ID", "HOST", "MODEL", "BACK", "STATE", "SLOTS", "TOK/S", "RATE", "SEEN",
        ],
        first_min: 10,
        widths: &[11, 11, 5, 5, 5, 6, 10, 5],
        rows: workers.iter().map(|row| worker_row(screen, row)).collect(),
        empty: "no workers registered",
    };
    draw_table(frame, area, screen, pane);
}

fn worker_row(screen: &Screen, row: &WorkerRow) -> Row<'static> {
    let style = match row.state {
        WorkerState::Live => Style::new(),
        _ => fg(screen, Color::Red),
    };
    let mut cells = row.cells();
    // The screen has room for the rate's recent history, before the heartbeat's age.
    cells.insert(7, sparkline(&row.rate_history, 10));
    Row::new(cells).style(style)
}

fn draw_queues(frame: &mut Frame, area: Rect, screen: &Screen) {
    let pane = PaneTable {
        pane: Pane::Queues,
        title: "Queues".to_owned(),
        header: &QUEUE_COLUMNS,
        first_min: 12,
        widths: &[6, 7, 7, 5, 4, 4, 8],
        rows: screen
            .rows
            .queues
            .iter()
            .map(|row| Row::new(row.cells()))
            .collect(),
        empty: "no models",
    };
    draw_table(frame, area, screen, pane);
}

fn draw_jobs(frame: &mut Frame, area: Rect, screen: &Screen) {
    let jobs = &screen.rows.jobs;
    let pane = PaneTable {
        pane: Pane::Jobs,
        title: format!("Jobs ({})", jobs.len()),
        header: &JOB_COLUMNS,
        first_min: 10,
        widths: &[12, 12, 9, 6, 6, 7],
        rows: jobs.iter().map(|row| job_row(screen, row)).collect(),
        empty: "no jobs",
    };
    draw_table(frame, area, screen, pane);
}

fn job_row(screen: &Screen, row: &JobRow) -> Row<'static> {
    let style = match row.state {
        JobState::Running => fg(screen, Color::Green),
        JobState::Failed => fg(screen, Color::Red),
        JobState::Cancelled => fg(screen, Color::Yellow),
        JobState::Queued | JobState::Completed => Style::new(),
    };
    Row::new(row.cells()).style(style)
}

fn draw_log(frame: &mut Frame, area: Rect, screen: &Screen) {
    let inner_height = area.height.saturating_sub(2) as usize;
    let start = screen.log.lines.len().saturating_sub(inner_height);
    let lines: Vec<Line> = screen.log.lines[start..]
        .iter()
        .map(|line| Line::raw(line.clone()))
        .collect();
    let block = Block::new()
        .borders(Borders::ALL)
        .title(format!(" {} ", screen.log.title));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// A box in the middle of the screen, `height` lines tall, with everything under it cleared.
fn dialog_area(frame: &Frame, height: u16) -> Rect {
    let area = frame.area();
    let width = area.width.saturating_sub(4).min(72);
    let [row] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [dialog] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    dialog
}

fn draw_details(frame: &mut Frame, screen: &Screen) {
    let (title, lines) = details(screen);
    let area = dialog_area(frame, lines.len() as u16 + 2);
    frame.render_widget(Clear, area);
    let block = Block::new()
        .borders(Borders::ALL)
        .title(format!(" {title} "));
    let text: Vec<Line> = lines.into_iter().map(Line::raw).collect();
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(block),
        area,
    );
}

/// The fields of the selected row of the focused pane, one per line.
pub fn details(screen: &Screen) -> (String, Vec<String>) {
    let ui = screen.ui;
    let rows = screen.rows;
    let index = ui.selected(ui.focus, rows).unwrap_or(0);
    match ui.focus {
        Pane::Hosts => match rows.hosts.get(index) {
            Some(host) => (format!("host {}", host.host_id), host.details()),
            None => ("host".into(), vec![]),
        },
        Pane::Workers => match rows.workers.get(index) {
            Some(w) => (
                format!("worker {}", w.worker_id),
                vec![
                    format!("url        {}", w.url),
                    format!("model      {} ({})", w.model, w.backend),
                    format!("state      {}", worker_state_name(w.state)),
                    format!("slots      {} busy of {}", w.slots_busy, w.slots_total),
                    format!("context    {} tokens", w.ctx_size),
                    format!("speed      {:.1} tok/s", w.tokens_per_second),
                    format!("last seen  {} ago", human_millis(w.last_seen_ms_ago)),
                ],
            ),
            None => ("worker".into(), vec![]),
        },
        Pane::Queues => match rows.queues.get(index) {
            Some(q) => (
                format!("model {}", q.model),
                vec![
                    format!("queued     {}", q.queued),
                    format!("running    {}", q.running),
                    format!("loading    {}", q.loading),
                    format!("slots      {} busy of {}", q.slots_busy, q.slots_total),
                    format!(
                        "workers    {} live, {} dead",
                        q.live_workers, q.dead_workers
                    ),
                    format!(
                        "median wait {}",
                        q.median_wait_ms.map_or("-".to_owned(), human_millis)
                    ),
                ],
            ),
            None => ("model".into(), vec![]),
        },
        Pane::Jobs => match rows.jobs.get(index) {
            Some(j) => {
                let mut lines = vec![
                    format!("model      {}", j.model),
                    format!("worker     {}", j.worker_id.as_deref().unwrap_or("-")),
                    format!("state      {}", job_state_name(j.state)),
                    format!(
                        "tokens     {} prompt, {} generated",
                        j.prompt_tokens, j.generated_tokens
                    ),
                    format!(
                        "first token {}",
                        j.time_to_first_token_ms
                            .map_or("-".to_owned(), human_millis)
                    ),
                    format!("time       {}", human_millis(j.duration_ms)),
                ];
                if let Some(reason) = &j.finish_reason {
                    lines.push(format!("finished   {reason}"));
                }
                if let Some(error) = &j.error {
                    lines.push(format!("error      {error}"));
                }
                (format!("job {}", j.job_id), lines)
            }
            None => ("job".into(), vec![]),
        },
    }
}

/// A yes/no question in a yellow box: `lines` are the question and what each answer does.
fn draw_confirm(frame: &mut Frame, screen: &Screen, title: &str, lines: &[String]) {
    let inner_width = usize::from(dialog_area(frame, 1).width.saturating_sub(2)).max(1);
    let height: usize = lines
        .iter()
        .map(|line| line.chars().count().div_ceil(inner_width).max(1))
        .sum();
    let area = dialog_area(frame, height as u16 + 2);
    frame.render_widget(Clear, area);
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(fg(screen, Color::Yellow))
        .title(title.to_owned());
    let text: Vec<Line> = lines.iter().map(|line| Line::raw(line.clone())).collect();
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(block),
        area,
    );
}

/// The last `width` values as block characters, scaled to the largest of them.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let recent = &values[values.len().saturating_sub(width)..];
    let peak = recent.iter().copied().fold(0.0_f64, f64::max);
    recent
        .iter()
        .map(|value| {
            if peak <= 0.0 {
                BARS[0]
            } else {
                BARS[((value / peak) * 8.0).round().clamp(0.0, 8.0) as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::Terminal;

    use super::super::input::{Link, Mode, Pane, Ui, VisibleRows};
    use super::super::state::fixtures::*;
    use super::super::state::FleetView;
    use super::*;

    /// Draws `view` at 80×24 (the smallest screen `top` promises to be usable on).
    fn draw_at_80x24(view: &FleetView, ui: &Ui, log: &LogTail) -> Buffer {
        let rows = VisibleRows::of(view, &ui.filter, NOW_MS);
        let screen = Screen {
            orchestrator_url: "http://127.0.0.1:8080",
            totals: view.totals(),
            rows: &rows,
            ui,
            log,
            color: true,
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|frame| draw(frame, &screen)).unwrap();
        terminal.backend().buffer().clone()
    }

    /// The log pane open on twenty lines, `line 1` to `line 20`.
    fn log_open(title: &str) -> (Ui, LogTail) {
        let ui = Ui {
            link: Link::Live,
            show_log: true,
            ..Ui::default()
        };
        let log = LogTail {
            title: title.into(),
            lines: (1..=20).map(|n| format!("line {n}")).collect(),
        };
        (ui, log)
    }

    fn live_ui() -> Ui {
        Ui {
            link: Link::Live,
            ..Ui::default()
        }
    }

    /// Compares the characters of every cell with `expected`; styles are checked on their own.
    fn assert_screen(buffer: &Buffer, expected: &[&str]) {
        let mut want = Buffer::with_lines(expected.iter().copied());
        want.set_style(want.area, Style::reset());
        let mut got = buffer.clone();
        got.set_style(got.area, Style::reset());
        assert_eq!(got, want, "\n{}", screen_text(buffer));
    }

    fn screen_text(buffer: &Buffer) -> String {
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The footer while the Workers pane has the focus (neither `c` nor `u` works there).
    const KEYS_LINE: &str =
        "↑↓/jk select  Tab pane  Enter details  l log  / filter  q quit                  ";
    const QUEUES_HEADER: &str =
        "│  MODEL                        QUEUED RUNNING LOADING SLOTS LIVE DEAD WAIT    │";
    const BLANK: &str =
        "                                                                                ";
    const EMPTY_ROW: &str =
        "│                                                                              │";
    const BOTTOM: &str =
        "└──────────────────────────────────────────────────────────────────────────────┘";

    #[test]
    fn an_empty_fleet_shows_every_pane_with_its_header_and_why_it_is_empty() {
        let buffer = draw_at_80x24(&empty(), &live_ui(), &LogTail::default());
        let mut expected = vec![
            "top  http://127.0.0.1:8080  live  workers 0 (0 dead)  jobs 0 running 0 queued   ",
            BLANK,
            "┌[Workers (0)]─────────────────────────────────────────────────────────────────┐",
            "│  ID         HOST        MODEL       BACK  STATE SLOTS TOK/S  RATE       SEEN │",
            "│  no workers registered                                                       │",
            BOTTOM,
            "┌ Queues ──────────────────────────────────────────────────────────────────────┐",
            QUEUES_HEADER,
            "│  no models                                                                   │",
            BOTTOM,
            "┌ Jobs (0) ────────────────────────────────────────────────────────────────────┐",
            "│  JOB                MODEL        WORKER       STATE     TTFT   TOKENS TIME   │",
            "│  no jobs                                                                     │",
        ];
        expected.extend([EMPTY_ROW; 9]);
        expected.extend([BOTTOM, KEYS_LINE]);
        assert_screen(&buffer, &expected);
    }

    #[test]
    fn a_busy_fleet_shows_slots_rates_queue_and_jobs_active_first() {
        let buffer = draw_at_80x24(&busy(), &live_ui(), &LogTail::default());
        let mut expected = vec![
            "top  http://127.0.0.1:8080  live  workers 2 (0 dead)  jobs 3 running 1 queued   ",
            BLANK,
            "┌[Workers (2)]─────────────────────────────────────────────────────────────────┐",
            "│  ID         HOST        MODEL       BACK  STATE SLOTS TOK/S  RATE       SEEN │",
            "│> cpu-a      10.0.0.5    gemma3-270m cpu   live  2/2   60.0   ▁▃▄▅▇█     800ms│",
            "│  cpu-b      10.0.0.6    gemma3-270m cpu   live  1/2   30.0   ▁▃▄▅▇█     800ms│",
            BOTTOM,
            "┌ Queues ──────────────────────────────────────────────────────────────────────┐",
            QUEUES_HEADER,
            "│  gemma3-270m                  1      3       0       3/4   2    0    500ms   │",
            BOTTOM,
            "┌ Jobs (5) ────────────────────────────────────────────────────────────────────┐",
            "│  JOB                MODEL        WORKER       STATE     TTFT   TOKENS TIME   │",
            "│  job-4              gemma3-270m  -            queued    -      0      500ms  │",
            "│  job-3              gemma3-270m  cpu-b        running   42ms   8      1.0s   │",
            "│  job-2              gemma3-270m  cpu-a        running   42ms   64     2.0s   │",
            "│  job-1              gemma3-270m  cpu-a        running   42ms   120    3.0s   │",
            "│  job-0              gemma3-270m  cpu-b        completed 42ms   32     2.4s   │",
        ];
        expected.extend([EMPTY_ROW; 4]);
        expected.extend([BOTTOM, KEYS_LINE]);
        assert_screen(&buffer, &expected);
        // The selected worker is drawn in reverse video, running jobs in green.
        assert!(buffer[(3, 4)].modifier.contains(Modifier::REVERSED));
        assert_eq!(buffer[(3, 14)].fg, Color::Green);
    }

    const HOSTS_HEADER: &str =
        "│  HOST       STATE CPU         RAM         VRAM        SEEN  MODELS           │";
    const GPU_BOX_ROW: &str =
        "│  gpu-box    live  ██░░░░  25% ██░░░░  38% █████░  75% 400ms gemma3-270m,qwen…│";

    #[test]
    fn a_busy_fleet_on_pool_managers_shows_hosts_with_gauges_and_a_loading_model() {
        let buffer = draw_at_80x24(&busy_on_hosts(), &live_ui(), &LogTail::default());
        let expected = vec![
            "top  http://127.0.0.1:8080  live  workers 2 (0 dead)  jobs 3 running 1 queued   ",
            BLANK,
            "┌ Hosts (2) ───────────────────────────────────────────────────────────────────┐",
            HOSTS_HEADER,
            GPU_BOX_ROW,
            "│  nas        live  █████░  90% █████░  88% -           900ms gemma3-270m      │",
            BOTTOM,
            "┌[Workers (2)]─────────────────────────────────────────────────────────────────┐",
            "│  ID         HOST        MODEL       BACK  STATE SLOTS TOK/S  RATE       SEEN │",
            "│> cpu-a      10.0.0.5    gemma3-270m cpu   live  2/2   60.0   ▁▃▄▅▇█     800ms│",
            "│  cpu-b      10.0.0.6    gemma3-270m cpu   live  1/2   30.0   ▁▃▄▅▇█     800ms│",
            BOTTOM,
            "┌ Queues ──────────────────────────────────────────────────────────────────────┐",
            QUEUES_HEADER,
            "│  gemma3-270m                  1      3       0       3/4   2    0    500ms   │",
            "│  qwen2.5-coder-0.5b           0      0       1       0/0   0    0    -       │",
            BOTTOM,
            "┌ Jobs (5) ────────────────────────────────────────────────────────────────────┐",
            "│  JOB                MODEL        WORKER       STATE     TTFT   TOKENS TIME   │",
            "│  job-4              gemma3-270m  -            queued    -      0      500ms  │",
            "│  job-3              gemma3-270m  cpu-b        running   42ms   8      1.0s   │",
            "│  job-2              gemma3-270m  cpu-a        running   42ms   64     2.0s   │",
            BOTTOM,
            KEYS_LINE,
        ];
        assert_screen(&buffer, &expected);
        // Gauges are coloured by how full they are: CPU 25 % green, the nas' 90 % red.
        assert_eq!(buffer[(20, 4)].fg, Color::Green);
        assert_eq!(buffer[(20, 5)].fg, Color::Red);
    }

    #[test]
    fn a_lost_host_is_red_marked_lost_and_counted_in_the_title() {
        let buffer = draw_at_80x24(&lost_host(), &live_ui(), &LogTail::default());
        let text = screen_text(&buffer);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2..7],
            [
                "┌ Hosts (2, 1 lost) ───────────────────────────────────────────────────────────┐",
                HOSTS_HEADER,
                GPU_BOX_ROW,
                "│  nas        lost  █████░  90% █████░  88% -           31.0s gemma3-270m      │",
                BOTTOM,
            ],
            "\n{text}"
        );
        // The rest of the screen is the busy fleet's, squeezed to 24 lines as before.
        assert!(lines[7].starts_with("┌[Workers (2)]"), "{text}");
        assert_eq!(lines[23], KEYS_LINE);
        for x in 3..79 {
            assert_eq!(
                buffer[(x, 5)].fg,
                Color::Red,
                "the lost host's row, column {x}"
            );
        }
        assert_eq!(buffer[(3, 4)].fg, Color::Reset, "the live host's name");
    }

    #[test]
    fn unloading_is_offered_on_the_queues_pane_and_asks_in_a_dialog() {
        let mut ui = Ui {
            link: Link::Live,
            focus: Pane::Queues,
            ..Ui::default()
        };
        let text = screen_text(&draw_at_80x24(&busy_on_hosts(), &ui, &LogTail::default()));
        assert!(
            text.ends_with(
                "↑↓/jk select  Tab pane  Enter details  u unload  l log  / filter  q quit        "
            ),
            "{text}"
        );
        let text = screen_text(&draw_at_80x24(&busy(), &ui, &LogTail::default()));
        assert!(
            text.ends_with(KEYS_LINE),
            "no pool managers, no `u`:\n{text}"
        );

        ui.mode = Mode::ConfirmUnload("gemma3-270m".into());
        let text = screen_text(&draw_at_80x24(&busy_on_hosts(), &ui, &LogTail::default()));
        assert!(
            text.contains("│Unload model gemma3-270m? Its workers finish their jobs, then stop."),
            "{text}"
        );
        assert!(
            text.contains("│y unloads it, any other key keeps it"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "unload model gemma3-270m? y/n                                                   "
            ),
            "{text}"
        );
    }

    #[test]
    fn with_hosts_at_80x24_the_log_pane_takes_what_is_left() {
        let (ui, log) = log_open("log of cpu-a on host gpu-box, through orcd");
        let text = screen_text(&draw_at_80x24(&busy_on_hosts(), &ui, &log));
        let lines: Vec<&str> = text.lines().collect();
        let log_top = lines
            .iter()
            .position(|line| line.starts_with("┌ log of cpu-a on host gpu-box, through orcd "))
            .unwrap_or_else(|| panic!("no log pane:\n{text}"));
        // Short of room, the Jobs pane keeps its header; the log shows its last line under it.
        assert!(lines[log_top - 3].starts_with("┌ Jobs (5)"), "{text}");
        assert!(lines[log_top + 1].starts_with("│line 20 "), "{text}");
        assert_eq!(lines[23], KEYS_LINE);
    }

    #[test]
    fn a_dead_worker_is_red_with_its_heartbeat_age_and_counted_in_the_title() {
        let buffer = draw_at_80x24(&dead_worker(), &live_ui(), &LogTail::default());
        let mut expected = vec![
            "top  http://127.0.0.1:8080  live  workers 2 (1 dead)  jobs 0 running 0 queued   ",
            BLANK,
            "┌[Workers (2)]─────────────────────────────────────────────────────────────────┐",
            "│  ID         HOST        MODEL       BACK  STATE SLOTS TOK/S  RATE       SEEN │",
            "│> cpu-a      10.0.0.5    gemma3-270m cpu   live  0/2   0.0               800ms│",
            "│  cpu-b      10.0.0.6    gemma3-270m cpu   dead  0/2   0.0               47.0s│",
            BOTTOM,
            "┌ Queues ──────────────────────────────────────────────────────────────────────┐",
            QUEUES_HEADER,
            "│  gemma3-270m                  0      0       0       0/2   1    1    -       │",
            BOTTOM,
            "┌ Jobs (1) ────────────────────────────────────────────────────────────────────┐",
            "│  JOB                MODEL        WORKER       STATE     TTFT   TOKENS TIME   │",
            "│  job-7              gemma3-270m  cpu-b        failed    42ms   12     2.4s   │",
        ];
        expected.extend([EMPTY_ROW; 8]);
        expected.extend([BOTTOM, KEYS_LINE]);
        assert_screen(&buffer, &expected);
        assert_eq!(buffer[(3, 5)].fg, Color::Red, "the dead worker's row");
        assert_eq!(buffer[(3, 4)].fg, Color::Reset, "the live worker's row");
    }

    #[test]
    fn an_unreachable_orcd_is_named_with_its_hint_and_the_retry() {
        let error = anyhow::anyhow!("Connection refused").context(
            "could not reach orcd at http://127.0.0.1:8080\nhint: start the stack with `cargo xtask up`",
        );
        let ui = Ui {
            link: Link::Lost(super::super::feed::why_lost(&error)),
            ..Ui::default()
        };
        let buffer = draw_at_80x24(&empty(), &ui, &LogTail::default());
        let text = screen_text(&buffer);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("top  http://127.0.0.1:8080  down  "),
            "{text}"
        );
        assert_eq!(
            lines[1].trim_end(),
            "could not reach orcd at http://127.0.0.1:8080 · retrying every 2 s"
        );
        assert_eq!(
            lines[2].trim_end(),
            "hint: start the stack with `cargo xtask up`"
        );
        assert!(lines[3].starts_with("┌[Workers (0)]"), "{text}");
        assert_eq!(buffer[(0, 1)].fg, Color::Red);
    }

    #[test]
    fn a_refused_token_names_the_setting_even_behind_a_long_path() {
        let error = anyhow::anyhow!(
            "GET /v2/events: orcd answered 401 Unauthorized: missing or unknown token\nhint: the client read its token from /home/operator/.config/llorch/secrets/orcd-client-token (LLORCH_API_TOKEN_FILE); it must hold a token of orcd's --api-token-file"
        );
        let ui = Ui {
            link: Link::Lost(super::super::feed::why_lost(&error)),
            ..Ui::default()
        };
        let text = screen_text(&draw_at_80x24(&empty(), &ui, &LogTail::default()));
        let status: String = text
            .lines()
            .skip(1)
            .take_while(|line| !line.starts_with('┌'))
            .collect();
        assert!(status.contains("401 Unauthorized"), "{text}");
        assert!(status.contains("(LLORCH_API_TOKEN_FILE)"), "{text}");
        assert!(text.contains("┌[Workers (0)]"), "{text}");
    }

    #[test]
    fn cancelling_asks_in_a_dialog_and_the_footer() {
        let ui = Ui {
            link: Link::Live,
            focus: Pane::Jobs,
            mode: Mode::ConfirmCancel("job-3".into()),
            ..Ui::default()
        };
        let text = screen_text(&draw_at_80x24(&busy(), &ui, &LogTail::default()));
        assert!(text.contains("│Cancel job job-3?"), "{text}");
        assert!(
            text.contains("│y cancels it, any other key keeps it"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "cancel job job-3? y/n                                                           "
            ),
            "{text}"
        );
    }

    #[test]
    fn the_log_pane_shows_the_last_lines_that_fit() {
        let (ui, log) = log_open("log of cpu-a");
        let text = screen_text(&draw_at_80x24(&busy(), &ui, &log));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[15].starts_with("┌ log of cpu-a "), "{text}");
        assert!(lines[16].starts_with("│line 15 "), "{text}");
        assert!(lines[21].starts_with("│line 20 "), "{text}");
    }

    #[test]
    fn without_colour_nothing_is_coloured_and_selection_is_reverse_video() {
        let view = dead_worker();
        let ui = live_ui();
        let rows = VisibleRows::of(&view, "", NOW_MS);
        let screen = Screen {
            orchestrator_url: "http://127.0.0.1:8080",
            totals: view.totals(),
            rows: &rows,
            ui: &ui,
            log: &LogTail::default(),
            color: false,
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|frame| draw(frame, &screen)).unwrap();
        let buffer = terminal.backend().buffer();
        assert!(buffer
            .content()
            .iter()
            .all(|cell| cell.fg == Color::Reset && cell.bg == Color::Reset));
        assert!(buffer[(3, 4)].modifier.contains(Modifier::REVERSED));
    }

    #[test]
    fn the_plain_helpers_format_short_durations_and_sparklines() {
        assert_eq!(human_millis(850), "850ms");
        assert_eq!(human_millis(2_350), "2.4s");
        assert_eq!(human_millis(187_000), "3m07s");
        assert_eq!(sparkline(&[0.0, 5.0, 10.0], 2), "▄█");
        assert_eq!(sparkline(&[0.0, 0.0], 5), "  ");
    }
}
