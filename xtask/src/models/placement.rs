//! `cargo xtask models load|unload`: an operator asks orcd to load a model on a pool manager's
//! host now, or to stop the workers that serve it (`POST /v2/models/{model}/load|unload`).

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

pub fn run(
    cx: &Context,
    action: Action,
    model: &str,
    host: Option<String>,
    orchestrator_url: Option<String>,
) -> anyhow::Result<()> {
    for (what, id) in [("model", Some(model)), ("--host", host.as_deref())] {
        if let Some(id) = id {
            let path_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if id.is_empty() || !id.chars().all(path_safe) {
                anyhow::bail!(
                    "`{id}` is not a valid {what}: use letters, digits, `.`, `_` and `-`\nhint: `cargo xtask models catalog` lists model ids; `GET /v2/hosts` on orcd lists host ids"
                );
            }
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
