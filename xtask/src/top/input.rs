//! What the person at the keyboard has chosen: the focused pane, the selected rows, the filter,
//! an open dialog; and what each key does to it. Keys never act on orcd themselves: a
//! confirmed cancel or unload comes back as an [`Action`] for the loop to carry out.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::hosts::HostRow;
use super::state::{FleetView, JobRow, QueueRow, WorkerRow};

/// The panes that hold rows, in `Tab` order (top to bottom on the screen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// Only while orcd reports pool managers' hosts.
    Hosts,
    Workers,
    Queues,
    Jobs,
}

impl Pane {
    const ORDER: [Pane; 4] = [Pane::Hosts, Pane::Workers, Pane::Queues, Pane::Jobs];

    fn index(self) -> usize {
        Pane::ORDER
            .iter()
            .position(|pane| *pane == self)
            .unwrap_or(0)
    }

    /// The next pane, past Hosts when it is not shown.
    fn next(self, hosts_shown: bool) -> Pane {
        let next = Pane::ORDER[(self.index() + 1) % Pane::ORDER.len()];
        match next {
            Pane::Hosts if !hosts_shown => next.next(hosts_shown),
            _ => next,
        }
    }
}

/// Whether the view reaches orcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Live,
    /// The last attempt failed; the text says why and what to fix.
    Lost(String),
}

/// What the keys currently go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Browse,
    /// Typing a filter after `/`.
    Filter,
    /// `Enter` opened the selected row's details.
    Details,
    /// `c` asked whether to cancel this job.
    ConfirmCancel(String),
    /// `u` asked whether to unload this model.
    ConfirmUnload(String),
}

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Quit,
    CancelJob(String),
    UnloadModel(String),
}

/// The rows each pane shows: the fleet's rows that match the filter.
#[derive(Debug, Clone, Default)]
pub struct VisibleRows {
    /// Whether orcd reports pool managers' hosts: the Hosts pane is drawn, and `u` offered,
    /// only then.
    pub hosts_reported: bool,
    pub hosts: Vec<HostRow>,
    pub workers: Vec<WorkerRow>,
    pub queues: Vec<QueueRow>,
    pub jobs: Vec<JobRow>,
}

impl VisibleRows {
    pub fn of(view: &FleetView, filter: &str, now_ms: u64) -> VisibleRows {
        let wanted = |fields: &[&str]| {
            filter.is_empty()
                || fields
                    .iter()
                    .any(|field| field.to_lowercase().contains(&filter.to_lowercase()))
        };
        VisibleRows {
            hosts_reported: !view.hosts().is_empty(),
            hosts: view
                .hosts()
                .iter()
                .map(HostRow::of)
                .filter(|row| {
                    let mut fields = vec![row.host_id.as_str(), &row.state];
                    fields.extend(row.models.iter().map(String::as_str));
                    wanted(&fields)
                })
                .collect(),
            workers: view
                .worker_rows()
                .into_iter()
                .filter(|row| wanted(&[&row.worker_id, &row.host, &row.model, &row.backend]))
                .collect(),
            queues: view
                .queue_rows(now_ms)
                .into_iter()
                .filter(|row| wanted(&[&row.model]))
                .collect(),
            jobs: view
                .job_rows(now_ms)
                .into_iter()
                .filter(|row| {
                    wanted(&[
                        &row.job_id,
                        &row.model,
                        row.worker_id.as_deref().unwrap_or(""),
                    ])
                })
                .collect(),
        }
    }

    fn len(&self, pane: Pane) -> usize {
        match pane {
            Pane::Hosts => self.hosts.len(),
            Pane::Workers => self.workers.len(),
            Pane::Queues => self.queues.len(),
            Pane::Jobs => self.jobs.len(),
        }
    }
}

/// The state of the view that is not the fleet's.
#[derive(Debug, Clone)]
pub struct Ui {
    pub focus: Pane,
    /// The selected row of each pane, in [`Pane::ORDER`].
    pub(super) selected: [usize; 4],
    pub show_log: bool,
    pub filter: String,
    pub mode: Mode,
    pub link: Link,
    /// The outcome of the last action (a cancel), shown until the next one.
    pub message: Option<String>,
}

impl Default for Ui {
    fn default() -> Ui {
        Ui {
            focus: Pane::Workers,
            selected: [0; 4],
            show_log: false,
            filter: String::new(),
            mode: Mode::Browse,
            link: Link::Connecting,
            message: None,
        }
    }
}

impl Ui {
    /// The selected row of `pane`, kept inside the rows it shows now.
    pub fn selected(&self, pane: Pane, rows: &VisibleRows) -> Option<usize> {
        let len = rows.len(pane);
        (len > 0).then(|| self.selected[pane.index()].min(len - 1))
    }

    pub fn selected_worker<'a>(&self, rows: &'a VisibleRows) -> Option<&'a WorkerRow> {
        self.selected(Pane::Workers, rows)
            .and_then(|index| rows.workers.get(index))
    }

    pub fn selected_queue<'a>(&self, rows: &'a VisibleRows) -> Option<&'a QueueRow> {
        self.selected(Pane::Queues, rows)
            .and_then(|index| rows.queues.get(index))
    }

    pub fn selected_job<'a>(&self, rows: &'a VisibleRows) -> Option<&'a JobRow> {
        self.selected(Pane::Jobs, rows)
            .and_then(|index| rows.jobs.get(index))
    }

    fn move_selection(&mut self, rows: &VisibleRows, down: bool) {
        let Some(current) = self.selected(self.focus, rows) else {
            return;
        };
        let last = rows.len(self.focus) - 1;
        self.selected[self.focus.index()] = if down {
            (current + 1).min(last)
        } else {
            current.saturating_sub(1)
        };
    }

    /// Moves the focus off the Hosts pane when it is no longer drawn.
    pub fn keep_focus_visible(&mut self, rows: &VisibleRows) {
        if self.focus == Pane::Hosts && !rows.hosts_reported {
            self.focus = Pane::Workers;
        }
    }

    /// Applies one key press; `rows` is what the screen shows.
    pub fn handle_key(&mut self, key: KeyEvent, rows: &VisibleRows) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            // Raw mode turns Ctrl-C into a key; it still means "stop".
            return Action::Quit;
        }
        match self.mode.clone() {
            Mode::Filter => {
                match key.code {
                    KeyCode::Enter => self.mode = Mode::Browse,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Browse;
                    }
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => {}
                }
                Action::Nothing
            }
            Mode::Details => {
                if matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                    self.mode = Mode::Browse;
                }
                Action::Nothing
            }
            Mode::ConfirmCancel(job_id) => {
                self.mode = Mode::Browse;
                match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => Action::CancelJob(job_id),
                    _ => {
                        self.message = Some(format!("kept job {job_id}"));
                        Action::Nothing
                    }
                }
            }
            Mode::ConfirmUnload(model) => {
                self.mode = Mode::Browse;
                match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => Action::UnloadModel(model),
                    _ => {
                        self.message = Some(format!("kept model {model}"));
                        Action::Nothing
                    }
                }
            }
            Mode::Browse => self.browse_key(key, rows),
        }
    }

    fn browse_key(&mut self, key: KeyEvent, rows: &VisibleRows) -> Action {
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(rows, true),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(rows, false),
            KeyCode::Tab => self.focus = self.focus.next(rows.hosts_reported),
            KeyCode::Enter if self.selected(self.focus, rows).is_some() => {
                self.mode = Mode::Details
            }
            KeyCode::Char('l') => self.show_log = !self.show_log,
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('c') => self.ask_to_cancel(rows),
            KeyCode::Char('u') => self.ask_to_unload(rows),
            _ => {}
        }
        Action::Nothing
    }

    /// Whether `u` works where the focus is: on the Queues pane, when orcd has pool managers
    /// (only the workers they run can be unloaded). The footer offers it only then.
    pub fn can_unload(&self, rows: &VisibleRows) -> bool {
        self.focus == Pane::Queues && rows.hosts_reported
    }

    /// `u` acts on the selected model of the Queues pane.
    fn ask_to_unload(&mut self, rows: &VisibleRows) {
        if !rows.hosts_reported {
            self.message = Some(
                "u unloads models that pool managers run; orcd reports no pool managers".into(),
            );
            return;
        }
        if self.focus != Pane::Queues {
            self.message = Some("u unloads a model: Tab to the Queues pane and select one".into());
            return;
        }
        match self.selected_queue(rows) {
            Some(queue) => self.mode = Mode::ConfirmUnload(queue.model.clone()),
            None => self.message = Some("no model selected".into()),
        }
    }

    /// `c` acts on the selected job of the Jobs pane, and only on one that has not ended.
    fn ask_to_cancel(&mut self, rows: &VisibleRows) {
        if self.focus != Pane::Jobs {
            self.message = Some("c cancels a job: Tab to the Jobs pane and select one".into());
            return;
        }
        match self.selected_job(rows) {
            Some(job) if !job.state.is_finished() => {
                self.mode = Mode::ConfirmCancel(job.job_id.clone())
            }
            Some(job) => {
                self.message = Some(format!(
                    "job {} has already ended ({})",
                    job.job_id,
                    super::state::job_state_name(job.state)
                ))
            }
            None => self.message = Some("no job selected".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::fixtures::*;
    use super::*;
    use ratatui::crossterm::event::KeyEvent;

    fn press(ui: &mut Ui, rows: &VisibleRows, keys: &[KeyCode]) -> Action {
        let mut last = Action::Nothing;
        for key in keys {
            last = ui.handle_key(KeyEvent::from(*key), rows);
        }
        last
    }

    #[test]
    fn cancelling_asks_first_and_only_yes_cancels() {
        let rows = VisibleRows::of(&busy(), "", NOW_MS);
        let mut ui = Ui::default();
        let to_jobs = [KeyCode::Tab, KeyCode::Tab, KeyCode::Char('j')];
        press(&mut ui, &rows, &to_jobs);
        assert_eq!(
            press(&mut ui, &rows, &[KeyCode::Char('c')]),
            Action::Nothing
        );
        assert_eq!(ui.mode, Mode::ConfirmCancel("job-3".into()));
        assert_eq!(
            press(&mut ui, &rows, &[KeyCode::Char('n')]),
            Action::Nothing
        );
        assert_eq!(ui.mode, Mode::Browse);
        assert_eq!(
            press(&mut ui, &rows, &[KeyCode::Char('c'), KeyCode::Char('y')]),
            Action::CancelJob("job-3".into())
        );
    }

    #[test]
    fn unloading_asks_first_acts_on_the_selected_model_and_needs_pool_managers() {
        let rows = VisibleRows::of(&busy_on_hosts(), "", NOW_MS);
        let mut ui = Ui::default();
        press(&mut ui, &rows, &[KeyCode::Char('u')]);
        assert_eq!(ui.mode, Mode::Browse, "not from the Workers pane");
        assert!(ui
            .message
            .as_deref()
            .unwrap()
            .contains("Tab to the Queues pane"));
        // Workers → Queues; the second row is the model being loaded.
        press(&mut ui, &rows, &[KeyCode::Tab, KeyCode::Char('j')]);
        assert!(ui.can_unload(&rows));
        press(&mut ui, &rows, &[KeyCode::Char('u')]);
        assert_eq!(ui.mode, Mode::ConfirmUnload("qwen2.5-coder-0.5b".into()));
        assert_eq!(press(&mut ui, &rows, &[KeyCode::Esc]), Action::Nothing);
        assert_eq!(ui.message.as_deref(), Some("kept model qwen2.5-coder-0.5b"));
        assert_eq!(
            press(
                &mut ui,
                &rows,
                &[KeyCode::Char('k'), KeyCode::Char('u'), KeyCode::Char('y')]
            ),
            Action::UnloadModel("gemma3-270m".into())
        );

        // Without pool managers nothing is unloaded, and the footer does not offer it.
        let plain = VisibleRows::of(&busy(), "", NOW_MS);
        assert!(!ui.can_unload(&plain));
        press(&mut ui, &plain, &[KeyCode::Char('u')]);
        assert_eq!(ui.mode, Mode::Browse);
        assert!(ui.message.as_deref().unwrap().contains("no pool managers"));
    }

    #[test]
    fn tab_visits_the_hosts_pane_only_while_it_is_drawn() {
        let with_hosts = VisibleRows::of(&busy_on_hosts(), "", NOW_MS);
        let without = VisibleRows::of(&busy(), "", NOW_MS);
        let mut ui = Ui::default();
        let tab = [KeyCode::Tab; 3];
        press(&mut ui, &with_hosts, &tab);
        assert_eq!(ui.focus, Pane::Hosts);
        ui.keep_focus_visible(&without);
        assert_eq!(ui.focus, Pane::Workers);
        press(&mut ui, &without, &tab);
        assert_eq!(ui.focus, Pane::Workers, "Workers → Queues → Jobs → Workers");
    }

    #[test]
    fn an_ended_job_is_not_offered_for_cancelling() {
        let rows = VisibleRows::of(&busy(), "job-0", NOW_MS);
        let mut ui = Ui::default();
        press(
            &mut ui,
            &rows,
            &[KeyCode::Tab, KeyCode::Tab, KeyCode::Char('c')],
        );
        assert_eq!(ui.mode, Mode::Browse);
        assert!(ui.message.as_deref().unwrap().contains("already ended"));
    }

    #[test]
    fn the_filter_keeps_matching_rows_and_escape_clears_it() {
        let mut ui = Ui::default();
        let all = VisibleRows::of(&busy(), "", NOW_MS);
        press(
            &mut ui,
            &all,
            &[
                KeyCode::Char('/'),
                KeyCode::Char('c'),
                KeyCode::Char('p'),
                KeyCode::Char('u'),
                KeyCode::Char('-'),
                KeyCode::Char('b'),
                KeyCode::Enter,
            ],
        );
        assert_eq!(ui.filter, "cpu-b");
        let filtered = VisibleRows::of(&busy(), &ui.filter, NOW_MS);
        assert_eq!(filtered.workers.len(), 1);
        assert_eq!(
            filtered
                .jobs
                .iter()
                .map(|job| job.job_id.as_str())
                .collect::<Vec<_>>(),
            ["job-3", "job-0"]
        );
        press(&mut ui, &filtered, &[KeyCode::Esc]);
        assert_eq!(ui.filter, "");
    }

    #[test]
    fn selection_stays_inside_the_rows() {
        let rows = VisibleRows::of(&busy(), "", NOW_MS);
        let mut ui = Ui::default();
        press(
            &mut ui,
            &rows,
            &[KeyCode::Down, KeyCode::Down, KeyCode::Down],
        );
        assert_eq!(ui.selected_worker(&rows).unwrap().worker_id, "cpu-b");
        press(&mut ui, &rows, &[KeyCode::Up, KeyCode::Up, KeyCode::Up]);
        assert_eq!(ui.selected_worker(&rows).unwrap().worker_id, "cpu-a");
        let none = VisibleRows::of(&empty(), "", NOW_MS);
        assert_eq!(ui.selected(Pane::Workers, &none), None);
    }
}
