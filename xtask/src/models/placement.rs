//! `cargo xtask models load|unload`: an operator asks orcd to load a model on a pool manager's
//! host now, or to stop the workers that serve it (`POST /v2/models/{model}/load|unload`).
//! `cargo xtask models download ID --host H`: orcd asks host H's pool manager to download a
//! catalog model (`POST /v2/hosts/{host}/downloads/{model}`), and its progress is followed.

use std::time::Duration;

use anyhow::bail;
use llorch_api::pool::{DownloadState, ModelDownload};
use serde::Deserialize;

use crate::Context;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Load,
    Unload,
}

/// orcd's answer (`ModelAction` in orcd's `pools::routes`).
#[derive(Debug, serde::Serialize, Deserialize)]
pub struct ModelAction {
    pub model: String,
    pub status: String,
    #[serde(default)]
    pub workers: Vec<String>,
}

/// The longest a host's download is followed: a large model over a slow link.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(6 * 3600);

/// Ids go into orcd's URL paths: letters, digits, `.`, `_` and `-` only.
fn check_path_safe(what: &str, id: &str) -> anyhow::Result<()> {
    let path_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || !id.chars().all(path_safe) {
        bail!(
            "`{id}` is not a valid {what}: use letters, digits, `.`, `_` and `-`\nhint: `cargo xtask models catalog` lists model ids; `GET /v2/hosts` on orcd lists host ids"
        );
    }
    Ok(())
}

/// Asks orcd to have `host`'s pool manager download `model`, then follows the download until
/// it is on the host's disk (or failed, with the pool manager's reason).
pub fn download_on_host(
    cx: &Context,
    model: &str,
    host: &str,
    orchestrator_url: Option<String>,
) -> anyhow::Result<()> {
    check_path_safe("model", model)?;
    check_path_safe("--host", host)?;
    let base_url = orchestrator_url.unwrap_or_else(|| cx.settings.orchestrator_url.clone());
    let client = crate::orcd::client(cx, &base_url)?;
    let started: ModelDownload =
        client.post_json(&format!("/v2/hosts/{host}/downloads/{model}"))?;
    let finished = if started.state == DownloadState::Downloading {
        let bar = cx
            .out
            .progress_bar(started.bytes_total, format!("{host}: downloading {model}"));
        let downloads = client
            .wait_for(
                &format!("/v2/hosts/{host}/downloads"),
                &format!("the download of {model} on {host}"),
                DOWNLOAD_WAIT,
                |downloads: &Vec<ModelDownload>| match downloads
                    .iter()
                    .find(|download| download.model == model)
                {
                    Some(download) => {
                        bar.set_position(download.bytes_done);
                        download.state != DownloadState::Downloading
                    }
                    None => false,
                },
            )
            .map_err(anyhow::Error::from)?;
        bar.finish_and_clear();
        downloads
            .into_iter()
            .find(|download| download.model == model)
            .expect("the wait found it")
    } else {
        started
    };
    if cx.out.json() {
        cx.out.print_json(&finished)?;
    }
    match finished.state {
        DownloadState::Failed => bail!(
            "{host}: the download of {model} failed: {}",
            finished.error.as_deref().unwrap_or("no reason given")
        ),
        _ if cx.out.json() => Ok(()),
        _ => {
            cx.out.println(format!(
                "{host}: {model} is on disk ({})",
                crate::output::human_bytes(finished.bytes_total)
            ));
            Ok(())
        }
    }
}

pub fn run(
    cx: &Context,
    action: Action,
    model: &str,
    host: Option<String>,
    orchestrator_url: Option<String>,
) -> anyhow::Result<()> {
    for (what, id) in [("model", Some(model)), ("--host", host.as_deref())] {
        if let Some(id) = id {
            check_path_safe(what, id)?;
        }
    }
    let base_url = orchestrator_url.unwrap_or_else(|| cx.settings.orchestrator_url.clone());
    let client = crate::orcd::client(cx, &base_url)?;
    let verb = match action {
        Action::Load => "load",
        Action::Unload => "unload",
    };
    let mut path = format!("/v2/models/{model}/{verb}");
    if let Some(host) = &host {
        path.push_str(&format!("?host={host}"));
    }
    if action == Action::Load {
        cx.out.status(format!(
            "loading {model}{} (waits until its worker is live)",
            host.as_deref()
                .map(|host| format!(" on {host}"))
                .unwrap_or_default()
        ));
    }
    let answer: ModelAction = client.post_json(&path)?;
    if cx.out.json() {
        return cx.out.print_json(&answer);
    }
    match action {
        Action::Load => cx
            .out
            .println(format!("{}: {}", answer.model, answer.status)),
        Action::Unload => cx.out.println(format!(
            "{}: stopping {}",
            answer.model,
            answer.workers.join(", ")
        )),
    }
    Ok(())
}
