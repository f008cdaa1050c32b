//! What every domain gets: the resolved settings, the printer that owns stdout, stderr and
//! progress, and commands that run in the repository root. It sits below every domain module
//! and uses none of them but the settings, the printer and the process module.

use std::ffi::OsString;

use crate::{config, output::Printer, process};

/// Handed to every command's `run`.
pub struct Context {
    pub settings: config::Settings,
    pub out: Printer,
}

impl Context {
    /// `program` run in the repository root, so that a `rust-toolchain` file or the checkout's
    /// git state there applies whatever directory xtask was started from.
    pub fn cmd(&self, program: impl Into<OsString>) -> process::Cmd {
        process::cmd(program).dir(&self.settings.repo_root)
    }
}
