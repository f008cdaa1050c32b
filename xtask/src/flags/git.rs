//! Flags of `cargo xtask git`: the checkout's state, pulling, resetting and its submodules.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask git status
  cargo xtask --json git status
  cargo xtask git pull
  cargo xtask git sync --force
  cargo xtask git submodules status
  cargo xtask --repo-root ~/src/llama-orch git branches")]
pub enum GitCmd {
    /// Branch, commit, upstream, uncommitted changes, submodules and toolchain of the checkout
    #[command(after_help = "Examples:\n  cargo xtask git status\n  cargo xtask --json git status")]
    Status,
    /// Fast-forward the current branch from its upstream and update submodules recursively
    #[command(
        after_help = "Examples:\n  cargo xtask git pull\n  cargo xtask --json git pull\n\nA branch that has diverged from its upstream is never merged: the command stops and says how to\nrebase or reset."
    )]
    Pull,
    /// Hard-reset to origin's default branch and put submodules back at their committed versions
    #[command(
        after_help = "Examples:\n  cargo xtask git sync\n  cargo xtask git sync --force\n\nWhat would be lost (uncommitted changes, unpushed commits, submodule changes) is listed first.\nUntracked files are kept; `cargo xtask git clean` removes them."
    )]
    Sync {
        /// Do not ask before discarding changes (required when stdin is not a terminal)
        #[arg(long)]
        force: bool,
    },
    /// List, inspect, update, reset or switch the branch of submodules
    #[command(subcommand)]
    Submodules(SubmodulesCmd),
    /// Delete untracked files and directories (ignored files such as target/ are kept)
    #[command(after_help = "Examples:\n  cargo xtask git clean\n  cargo xtask git clean --force")]
    Clean {
        /// Do not ask before deleting (required when stdin is not a terminal)
        #[arg(long)]
        force: bool,
    },
    /// Local branches with their upstream and ahead/behind counts, then remote branches
    #[command(
        after_help = "Examples:\n  cargo xtask git branches\n  cargo xtask --json git branches"
    )]
    Branches,
}

#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  cargo xtask git submodules list
  cargo xtask git submodules status
  cargo xtask git submodules update --all
  cargo xtask git submodules reset --name vendor/llama.cpp
  cargo xtask git submodules branch --name vendor/llama.cpp --branch master")]
pub enum SubmodulesCmd {
    /// Submodules declared in .gitmodules: name, path, URL and tracked branch
    #[command(
        after_help = "Examples:\n  cargo xtask git submodules list\n  cargo xtask --json git submodules list"
    )]
    List,
    /// Every submodule's checked-out commit, branch and state (recursive)
    #[command(
        after_help = "Examples:\n  cargo xtask git submodules status\n  cargo xtask --json git submodules status"
    )]
    Status,
    /// Initialise and check out the committed version of all submodules or of one
    #[command(
        after_help = "Examples:\n  cargo xtask git submodules update --all\n  cargo xtask git submodules update --name vendor/llama.cpp"
    )]
    Update(UpdateTarget),
    /// Put one submodule back at its committed version, discarding its local changes
    #[command(
        after_help = "Examples:\n  cargo xtask git submodules reset --name vendor/llama.cpp\n  cargo xtask git submodules reset --name vendor/llama.cpp --force"
    )]
    Reset {
        /// Submodule name or path (see `cargo xtask git submodules list`)
        #[arg(long)]
        name: String,
        /// Do not ask before discarding changes (required when stdin is not a terminal)
        #[arg(long)]
        force: bool,
    },
    /// Switch a submodule to a branch; without --branch, list its branches
    #[command(
        after_help = "Examples:\n  cargo xtask git submodules branch --name vendor/llama.cpp\n  cargo xtask git submodules branch --name vendor/llama.cpp --branch master"
    )]
    Branch {
        /// Submodule name or path (see `cargo xtask git submodules list`)
        #[arg(long)]
        name: String,
        /// Local branch, or branch of the submodule's origin to track, to switch to
        #[arg(long)]
        branch: Option<String>,
    },
}

/// Which submodules `git submodules update` acts on: exactly one of the two must be given.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct UpdateTarget {
    /// Update every submodule, recursively
    #[arg(long)]
    pub all: bool,
    /// Update only this submodule (name or path), recursively
    #[arg(long)]
    pub name: Option<String>,
}
