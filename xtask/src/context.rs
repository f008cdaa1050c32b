//! What every domain gets: a shell rooted at the repository, the resolved settings and the
//! printer that owns stdout, stderr and progress. It sits below every domain module and uses
//! none of them but the settings and the printer.

use crate::{config, output::Printer};

/// Handed to every command's `run`.
pub struct Context {
    pub sh: xshell::Shell,
    pub settings: config::Settings,
    pub out: Printer,
}
