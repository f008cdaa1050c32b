//! The one place that decides what goes to stdout, stderr and the terminal's progress line:
//! `--json`, `--quiet`, `--verbose`, colour and TTY detection all end up here.

use std::{
    fmt,
    io::{IsTerminal, Write},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressStyle};
use owo_colors::OwoColorize;
use serde::Serialize;

use crate::{config::ColorChoice, flags::GlobalFlags};

/// A command asks `main` to exit with this code without printing an error (e.g. `remote exec`
/// passing on the remote command's status, `models verify` after it printed its report).
#[derive(Debug)]
pub struct ExitCode(pub u8);

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

/// True when the error chain ends in a closed stdout (`cargo xtask ... | head`), which is not a
/// failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[derive(Debug, Clone)]
pub struct Printer {
    json: bool,
    quiet: bool,
    verbose: bool,
    color: bool,
    stderr_is_tty: bool,
    stdin_is_tty: bool,
}

impl Printer {
    /// `env_no_color` is `NO_COLOR`/`LLORCH_NO_COLOR`; the config file's choice arrives later
    /// through [`Printer::with_color_choice`], once it has been read.
    pub fn new(flags: &GlobalFlags, env_no_color: bool) -> Printer {
        let stdout_is_tty = std::io::stdout().is_terminal();
        Printer {
            json: flags.json,
            quiet: flags.quiet,
            verbose: flags.verbose,
            color: !flags.no_color && !env_no_color && !flags.json && stdout_is_tty,
            stderr_is_tty: std::io::stderr().is_terminal(),
            stdin_is_tty: std::io::stdin().is_terminal(),
        }
    }

    pub fn with_color_choice(mut self, choice: ColorChoice) -> Printer {
        self.color = match choice {
            ColorChoice::Never => false,
            ColorChoice::Always => !self.json,
            ColorChoice::Auto => self.color,
        };
        self
    }

    pub fn json(&self) -> bool {
        self.json
    }

    pub fn verbose(&self) -> bool {
        self.verbose
    }

    pub fn quiet(&self) -> bool {
        self.quiet
    }

    pub fn paint(&self) -> Paint {
        Paint {
            enabled: self.color,
        }
    }

    /// Whether stdin is a terminal someone can answer questions on.
    pub fn interactive(&self) -> bool {
        self.stdin_is_tty
    }

    /// The one JSON document of a `--json` run.
    pub fn print_json<T: Serialize + ?Sized>(&self, value: &T) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        // As an io::Error, a closed pipe (`| head`) is recognised by `is_broken_pipe`.
        serde_json::to_writer_pretty(&mut stdout, value).map_err(std::io::Error::from)?;
        writeln!(stdout)?;
        Ok(())
    }

    /// Primary human output (the result the user asked for) on stdout.
    pub fn println(&self, line: impl fmt::Display) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe is handled by the caller's next fallible write or by exit; ignore here.
        let _ = writeln!(stdout, "{line}");
    }

    /// Progress and status notes on stderr; hidden by `--quiet`.
    pub fn status(&self, line: impl fmt::Display) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// Details shown only with `--verbose`.
    pub fn debug(&self, line: impl fmt::Display) {
        if self.verbose {
            eprintln!("{}", self.paint().dim(&line.to_string()));
        }
    }

    pub fn warn(&self, line: impl fmt::Display) {
        eprintln!("{} {line}", self.paint().yellow("warning:"));
    }

    /// Prints an error chain: what was attempted, each cause, and the hint lines.
    pub fn error(&self, error: &anyhow::Error) {
        eprintln!("{} {}", self.paint().red("error:"), render_error(error));
    }

    fn progress_visible(&self) -> bool {
        self.stderr_is_tty && !self.quiet && !self.json && !self.verbose
    }

    /// Several spinners at once, one line each (`fleet up`'s hosts); drawn only where the other
    /// progress is, hidden otherwise (callers then print plain status lines).
    pub fn multi_progress(&self) -> indicatif::MultiProgress {
        if self.progress_visible() {
            indicatif::MultiProgress::new()
        } else {
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        }
    }

    /// Whether progress bars are drawn (a TTY, not quiet, verbose or JSON).
    pub fn shows_progress(&self) -> bool {
        self.progress_visible()
    }

    /// A byte-counting progress bar on a TTY; elsewhere one plain status line.
    pub fn progress_bar(&self, total_bytes: u64, message: impl Into<String>) -> ProgressBar {
        let message = message.into();
        if !self.progress_visible() {
            self.status(format!("{message} ..."));
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total_bytes).with_message(message);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template is valid")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// A spinner for work of unknown length on a TTY; elsewhere one plain status line.
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        let message = message.into();
        if !self.progress_visible() {
            self.status(format!("{message} ..."));
            return ProgressBar::hidden();
        }
        let spinner = ProgressBar::new_spinner().with_message(message);
        spinner.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .expect("static template is valid"),
        );
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    }

    /// Moves a spinner from [`Output::spinner`] on to its next step. Without a visible spinner
    /// (no TTY, `--quiet` aside) each step is a status line: a long command that only updated
    /// a hidden spinner looked stuck at its first step in logs.
    pub fn spinner_step(&self, spinner: &ProgressBar, message: impl Into<String>) {
        let message = message.into();
        if spinner.is_hidden() {
            self.status(format!("{message} ..."));
        } else {
            spinner.set_message(message);
        }
    }

    /// Asks a yes/no question on a TTY. Without one, refuses unless `force` was given, and says
    /// so: a destructive step never runs unattended by accident.
    pub fn confirm(&self, question: &str, force: bool) -> anyhow::Result<bool> {
        if force {
            return Ok(true);
        }
        if !self.stdin_is_tty {
            anyhow::bail!(
                "{question}: refusing to continue without confirmation because stdin is not a terminal\nhint: pass --force to proceed"
            );
        }
        eprint!("{question} [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    }
}

/// An error chain for people: what was attempted and each cause, joined by `: ` as anyhow's
/// `{:#}` does, then every `hint:` of any link on its own line at the end. Messages carry their
/// hint as a last `hint:` line; printed with `{:#}` the next cause would be glued to it.
pub fn render_error(error: &anyhow::Error) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    for link in error.chain() {
        let text = link.to_string();
        let mut body: Vec<&str> = Vec::new();
        let mut in_hint = false;
        for line in text.lines() {
            if let Some(hint) = line.trim_start().strip_prefix("hint:") {
                hints.push(hint.trim().to_owned());
                in_hint = true;
            } else if in_hint {
                // A hint runs to the end of its message (a command on the next line).
                let last = hints.last_mut().expect("in_hint follows a hint");
                last.push('\n');
                last.push_str(line);
            } else {
                body.push(line);
            }
        }
        let body = body.join("\n");
        if !body.trim().is_empty() {
            causes.push(body.trim_end().to_owned());
        }
    }
    let mut rendered = causes.join(": ");
    let mut seen = std::collections::HashSet::new();
    for hint in hints.iter().filter(|hint| seen.insert(hint.as_str())) {
        rendered.push_str("\nhint: ");
        rendered.push_str(hint);
    }
    rendered
}

/// Colours text when colour is enabled, and returns it unchanged otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    enabled: bool,
}

macro_rules! paint_method {
    ($name:ident) => {
        pub fn $name(&self, text: &str) -> String {
            if self.enabled {
                text.$name().to_string()
            } else {
                text.to_owned()
            }
        }
    };
}

impl Paint {
    /// Whether colour is on: full-screen views that style cells themselves ask this.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    paint_method!(bold);
    paint_method!(dimmed);

    pub fn dim(&self, text: &str) -> String {
        self.dimmed(text)
    }
    paint_method!(red);
    paint_method!(green);
    paint_method!(yellow);
    paint_method!(cyan);
}

/// Human-readable byte count (`253.1 MB`), decimal units like `ls -h --si` and model cards;
/// the downloads' status lines (llorch-fetch) count the same way.
pub use llorch_fetch::human_bytes;

/// Human-readable duration (`42s`, `2m05s`, `2h01m`, `1d01h`): uptimes and build times.
pub fn human_duration(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..=86399 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(125), "2m05s");
        assert_eq!(human_duration(7260), "2h01m");
        assert_eq!(human_duration(90000), "1d01h");
    }

    #[test]
    fn human_bytes_uses_decimal_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(253_113_024), "253.1 MB");
        assert_eq!(human_bytes(4_920_000_000), "4.9 GB");
    }

    #[test]
    fn paint_is_identity_when_disabled() {
        assert_eq!(Paint { enabled: false }.red("x"), "x");
        assert_ne!(Paint { enabled: true }.red("x"), "x");
    }

    #[test]
    fn the_hint_follows_the_whole_cause_chain_on_its_own_line() {
        let error = anyhow::anyhow!("error sending request")
            .context("could not reach orcd at http://127.0.0.1:1\nhint: start the stack with `cargo xtask up`")
            .context("listing jobs");
        assert_eq!(
            render_error(&error),
            "listing jobs: could not reach orcd at http://127.0.0.1:1: error sending request\nhint: start the stack with `cargo xtask up`"
        );
    }

    #[test]
    fn every_hint_of_the_chain_is_kept_once_and_multi_line_causes_stay_whole() {
        let error =
            anyhow::anyhow!("`w1` exited\n--- log ---\nboom\n---\nhint: fix the model path")
                .context("starting a worker\nhint: fix the model path")
                .context("up\nhint: or run `cargo xtask dev doctor`");
        assert_eq!(
            render_error(&error),
            "up: starting a worker: `w1` exited\n--- log ---\nboom\n---\nhint: or run `cargo xtask dev doctor`\nhint: fix the model path"
        );
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let error = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("printing");
        assert!(is_broken_pipe(&error));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
