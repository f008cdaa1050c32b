//! `models download`: the crate llorch-fetch (shared with the pool manager) fetches into
//! `<id>/.partial/`, checks size and SHA-256, then moves the file into place with a rename and
//! records it in `manifest.json`. Nothing outside `.partial/` is written until the bytes are
//! known good, so an interrupted or rejected download never leaves a file that `list`,
//! `verify` or the worker would take for a model. Here: the command's output, the progress
//! bars, and the conversion of safetensors models (`convert`, llama.cpp's Python converter).

mod convert;
pub mod direct;

use std::{cell::RefCell, path::Path};

use anyhow::Context as _;
use indicatif::ProgressBar;
use llorch_catalog::{ModelEntry, ModelLock};
pub use llorch_fetch::{install, Delivery, Outcome, Produced};
use llorch_fetch::{Fetcher, Progress};
use serde::Serialize;

use super::{catalog_entry, default_model_id, load_catalog};
use crate::{output::human_bytes, Context};

#[derive(Serialize)]
struct Report<'a> {
    id: &'a str,
    status: &'static str,
    path: &'a Path,
    size: u64,
    sha256: &'a str,
    source: &'a str,
}

pub fn run(cx: &Context, id: Option<&str>, force: bool) -> anyhow::Result<()> {
    let catalog = load_catalog(cx)?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => default_model_id(cx)?,
    };
    let entry = catalog_entry(&catalog, &id)?;
    let outcome = download(cx, entry, force)?;
    let main = outcome
        .manifest
        .main_file()
        .context("the manifest just written lacks the model file")?;
    let status = if outcome.already_present {
        "already-present"
    } else {
        "downloaded"
    };
    if cx.out.json() {
        return cx.out.print_json(&Report {
            id: &entry.id,
            status,
            path: &outcome.path,
            size: main.size,
            sha256: &main.sha256,
            source: &outcome.manifest.source,
        });
    }
    let paint = cx.out.paint();
    if outcome.already_present {
        cx.out.status(format!(
            "`{}` is already downloaded and matches its manifest; `cargo xtask models verify {}` re-hashes it, --force downloads it again",
            entry.id, entry.id
        ));
    } else {
        cx.out.status(format!(
            "{} `{}` ({}, sha256 {})",
            paint.green("downloaded"),
            entry.id,
            human_bytes(main.size),
            main.sha256
        ));
    }
    cx.out.println(outcome.path.display());
    Ok(())
}

/// Downloads `entry` unless it is already present (or `force`), and returns where it is.
pub fn download(cx: &Context, entry: &ModelEntry, force: bool) -> anyhow::Result<Outcome> {
    let progress = Bars::new(cx);
    let fetcher = Fetcher::new(&cx.settings.model_base_dir, &progress);
    let mut converter = convert::LlamaCpp::new(cx);
    fetcher.download(entry, force, Some(&mut converter))
}

/// Takes the model's lock ([`llorch_catalog::ModelLock`], shared with the pool manager's
/// downloads), saying so when another process holds it and waiting for it.
pub fn lock_model(cx: &Context, base: &Path, id: &str) -> anyhow::Result<ModelLock> {
    Fetcher::new(base, &Bars::new(cx)).lock(id)
}

/// A download's progress as xtask shows it: one indicatif bar per stage (a `...` status line
/// without a terminal), status lines on stderr, details with `--verbose`.
pub struct Bars<'a> {
    cx: &'a Context,
    bar: RefCell<Option<ProgressBar>>,
}

impl<'a> Bars<'a> {
    pub fn new(cx: &'a Context) -> Bars<'a> {
        Bars {
            cx,
            bar: RefCell::new(None),
        }
    }

    fn with_bar(&self, act: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.bar.borrow().as_ref() {
            act(bar);
        }
    }
}

impl Progress for Bars<'_> {
    fn start(&self, length: u64, message: &str) {
        let bar = self.cx.out.progress_bar(length, message);
        if let Some(previous) = self.bar.replace(Some(bar)) {
            previous.finish_and_clear();
        }
    }

    fn set_length(&self, length: u64) {
        self.with_bar(|bar| bar.set_length(length));
    }

    fn inc(&self, bytes: u64) {
        self.with_bar(|bar| bar.inc(bytes));
    }

    fn set_message(&self, message: &str) {
        let message = message.to_owned();
        self.with_bar(|bar| bar.set_message(message));
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn status(&self, line: &str) {
        self.cx.out.status(line);
    }

    fn debug(&self, line: &str) {
        self.cx.out.debug(line);
    }

    fn visible(&self) -> bool {
        self.bar
            .borrow()
            .as_ref()
            .is_some_and(|bar| !bar.is_hidden())
    }
}

impl Drop for Bars<'_> {
    /// A download that failed midway leaves no bar drawn under its error.
    fn drop(&mut self) {
        self.finish();
    }
}
