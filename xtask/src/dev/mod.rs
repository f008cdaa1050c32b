//! `cargo xtask dev`: the machine's readiness — `doctor` looks, `setup` installs, `check`
//! validates the project's own configuration.

mod check;
mod doctor;
mod setup;

pub use doctor::{diagnose, Need};
pub use setup::{ensure_coverage_tools, run_setup, CoverageTools, SetupScope};

use crate::{flags::DevCmd, Context};

pub fn run(cmd: DevCmd, cx: &Context) -> anyhow::Result<()> {
    match cmd {
        DevCmd::Doctor => doctor::run(cx),
        DevCmd::Setup { yes } => run_setup(cx, yes, SetupScope::Tests),
        DevCmd::Check => check::run(cx),
    }
}
