//! systemd user units for fleet workers: one `llorch-fleet-NAME.service` per worker under
//! `~/.config/systemd/user`, enabled with lingering so it survives logout and reboots. The
//! unit carries the worker's spec in a comment, which is how the next `fleet up` reads back
//! what runs. Where no systemd runs, `host.rs` uses the detached supervisor instead.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

use super::file::WorkerSpec;
use crate::process;

const UNIT_PREFIX: &str = "llorch-fleet-";
const SPEC_MARKER: &str = "# llorch-fleet-spec: ";

pub fn unit_name(worker: &str) -> String {
    format!("{UNIT_PREFIX}{worker}.service")
}

/// `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
pub fn unit_dir() -> anyhow::Result<PathBuf> {
    use etcetera::BaseStrategy;
    let strategy = etcetera::choose_base_strategy()
        .context("finding the systemd user unit directory: no home directory")?;
    Ok(strategy.config_dir().join("systemd").join("user"))
}

/// True when a systemd user manager answers here (not in containers without systemd).
pub fn available() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && process::cmd("systemctl")
            .args(["--user", "show-environment"])
            .succeeds()
}

/// The unit file for `spec`, running `program args` with `env`.
pub fn render(
    spec: &WorkerSpec,
    program: &Path,
    args: &[OsString],
    env: &[(String, String)],
) -> String {
    let spec_json = serde_json::to_string(spec).expect("a worker spec always serializes");
    render_service(
        &format!(
            "llama-orch worker {} ({} on {})",
            spec.name, spec.launch.model, spec.launch.backend
        ),
        &spec_json,
        program,
        args,
        env,
        // SIGTERM lets the worker finish its tokens and deregister from orcd.
        "KillSignal=SIGTERM\nTimeoutStopSec=20\n",
    )
}

/// A service unit that restarts on failure and starts at boot, with `spec_json` (what it was
/// started with) in a comment for the next `fleet up` to compare; `stop` holds the unit's
/// stop settings.
pub fn render_service(
    description: &str,
    spec_json: &str,
    program: &Path,
    args: &[OsString],
    env: &[(String, String)],
    stop: &str,
) -> String {
    let mut exec = quote_word(&program.to_string_lossy());
    for arg in args {
        exec.push(' ');
        exec.push_str(&quote_word(&arg.to_string_lossy()));
    }
    let environment: String = env
        .iter()
        .map(|(name, value)| format!("Environment={}\n", quote_word(&format!("{name}={value}"))))
        .collect();
    format!(
        "# Written by `cargo xtask fleet up`; the next `fleet up` replaces it and `fleet down` removes it.\n\
         {SPEC_MARKER}{spec_json}\n\
         [Unit]\n\
         Description={description}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={exec}\n\
         {environment}\
         Restart=on-failure\n\
         RestartSec=5\n\
         {stop}\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
    )
}

/// The JSON spec comment of a unit file.
pub fn spec_json(unit_text: &str) -> Option<&str> {
    unit_text
        .lines()
        .find_map(|line| line.strip_prefix(SPEC_MARKER))
}

/// The spec a unit file was written for.
pub fn parse_spec(unit_text: &str) -> Option<WorkerSpec> {
    spec_json(unit_text).and_then(|json| serde_json::from_str(json).ok())
}

/// One ExecStart/Environment word: double-quoted, with `\` and `"` escaped, `%` doubled
/// (specifiers) and `$` doubled (variable expansion), so every value arrives unchanged.
fn quote_word(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('"');
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' => quoted.push_str("$$"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The fleet units in the unit directory: worker name and the spec it was written for.
pub fn list() -> anyhow::Result<Vec<(String, Option<WorkerSpec>)>> {
    let dir = unit_dir()?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
    };
    let mut units = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(worker) = file_name
            .strip_prefix(UNIT_PREFIX)
            .and_then(|rest| rest.strip_suffix(".service"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        units.push((worker.to_owned(), parse_spec(&text)));
    }
    units.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(units)
}

/// Whether the unit (`llorch-fleet-NAME.service`, ...) runs.
pub fn is_active(unit: &str) -> bool {
    process::cmd("systemctl")
        .args(["--user", "is-active", "--quiet", unit])
        .expression()
        .stdin_null()
        .unchecked()
        .run()
        .is_ok_and(|output| output.status.success())
}

/// Writes the unit, makes sure lingering is on, and (re)starts it.
pub fn install_and_start(unit: &str, unit_text: &str) -> anyhow::Result<()> {
    let path = unit_dir()?.join(unit);
    crate::files::write_atomically(&path, unit_text)?;
    enable_linger()?;
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", unit])?;
    systemctl(&["restart", unit])
}

/// Stops and disables the unit and removes its file.
pub fn remove(unit: &str) -> anyhow::Result<()> {
    // A unit that is already stopped or unknown to systemd is not an error here.
    let _ = systemctl(&["disable", "--now", unit]);
    let path = unit_dir()?.join(unit);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("removing {}", path.display())),
    }
    systemctl(&["daemon-reload"])
}

/// The last lines of the unit's journal, for an error message.
pub fn journal_tail(unit: &str) -> String {
    process::cmd("journalctl")
        .args(["--user", "-u", unit, "-n", "20", "--no-pager"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default()
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let output = process::cmd("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .context("running systemctl\nhint: set `supervisor = \"detached\"` for this host in the fleet file")?;
    if !output.status.success() {
        bail!(
            "`systemctl --user {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Lingering keeps the user's manager, and so the units, running without a login session.
fn enable_linger() -> anyhow::Result<()> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .context("enabling lingering: neither USER nor LOGNAME is set")?;
    let linger_file = Path::new("/var/lib/systemd/linger").join(&user);
    if linger_file.exists() {
        return Ok(());
    }
    let output = process::cmd("loginctl")
        .args(["enable-linger", &user])
        .output()
        .context("running loginctl")?;
    if !output.status.success() {
        bail!(
            "`loginctl enable-linger {user}` failed: {}\nhint: run it once as root (`sudo loginctl enable-linger {user}`) so the workers survive logout and reboots",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WorkerSpec {
        WorkerSpec {
            name: "box-a-gemma3-270m".into(),
            launch: llorch_api::pool::WorkerLaunch {
                backend: llorch_api::Backend::Cuda,
                gpu: Some(1),
                slots: Some(2),
                ctx_size: Some(4096),
                ..llorch_api::pool::WorkerLaunch::of_model("gemma3-270m")
            },
            port: 9001,
            bind: "10.0.0.2".parse().unwrap(),
            advertise_url: "http://10.0.0.2:9001".into(),
            orchestrator_url: "http://10.0.0.1:8080".into(),
        }
    }

    #[test]
    fn the_unit_runs_the_worker_restarts_it_and_survives_reboots() {
        let text = render(
            &spec(),
            Path::new("/home/me/llama orch/target/release/llorch-worker"),
            &[
                "--model".into(),
                "gemma3-270m".into(),
                "--slots".into(),
                "2".into(),
            ],
            &[("RUST_LOG".into(), "info".into())],
        );
        assert!(
            text.contains("\nExecStart=\"/home/me/llama orch/target/release/llorch-worker\" \"--model\" \"gemma3-270m\" \"--slots\" \"2\"\n"),
            "{text}"
        );
        assert!(text.contains("\nEnvironment=\"RUST_LOG=info\"\n"), "{text}");
        assert!(text.contains("\nRestart=on-failure\n"), "{text}");
        assert!(text.contains("\nKillSignal=SIGTERM\n"), "{text}");
        assert!(
            text.contains("[Install]\nWantedBy=default.target\n"),
            "{text}"
        );
        assert!(
            text.contains("Description=llama-orch worker box-a-gemma3-270m (gemma3-270m on cuda)")
        );
    }

    #[test]
    fn the_spec_is_read_back_from_the_unit() {
        let text = render(&spec(), Path::new("/bin/w"), &[], &[]);
        assert_eq!(parse_spec(&text), Some(spec()));
        assert_eq!(parse_spec("[Unit]\n"), None);
    }

    #[test]
    fn words_are_quoted_against_specifiers_and_expansion() {
        assert_eq!(quote_word("a b"), "\"a b\"");
        assert_eq!(quote_word("100%"), "\"100%%\"");
        assert_eq!(quote_word("$HOME"), "\"$$HOME\"");
        assert_eq!(quote_word("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
    }

    #[test]
    fn unit_names_carry_the_worker_name() {
        assert_eq!(unit_name("a-b"), "llorch-fleet-a-b.service");
    }
}
