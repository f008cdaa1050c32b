//! The terminal while `top` runs: raw mode and the alternate screen on entry, and the person's
//! terminal back exactly as it was on every way out — a normal return, an error, a panic (a
//! hook restores before the message prints) and SIGINT, SIGTERM or SIGHUP (a handler asks the
//! loop to stop, and the loop's guard restores).

use std::io::Stdout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use anyhow::Context as _;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

/// Restores the terminal when dropped.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    pub fn enter() -> anyhow::Result<TerminalGuard> {
        restore_on_panic();
        terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
        // From here on, a failure must not leave the terminal raw: the guard exists first.
        let backend = CrosstermBackend::new(std::io::stdout());
        let terminal = match Terminal::new(backend) {
            Ok(terminal) => terminal,
            Err(error) => {
                restore();
                return Err(error).context("opening the terminal");
            }
        };
        let guard = TerminalGuard { terminal };
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .context("switching to the alternate screen")?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor; safe to call twice.
pub fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

/// A panic prints its message on the restored screen, where it can be read.
fn restore_on_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// A flag that SIGINT, SIGTERM and SIGHUP raise; the loop checks it between frames.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let raised = stop.clone();
    ctrlc::set_handler(move || raised.store(true, Ordering::SeqCst))
        .context("installing the SIGTERM/SIGHUP handler that restores the terminal")?;
    Ok(stop)
}
