//! `cargo xtask remote`: host profiles, running commands on a host over SSH, and `--remote HOST`,
//! which runs a whole xtask command in the host's checkout and streams it back.

pub mod hosts;
mod readiness;
pub mod ssh;

use std::{ffi::OsString, time::Duration};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::{
    config::HostProfile,
    flags::{HostsCmd, RemoteCmd},
    output::ExitCode,
};

use self::ssh::{SshOptions, SshTarget};

/// The domains whose commands `--remote HOST` may run elsewhere.
pub const FORWARDABLE_DOMAINS: [&str; 6] = ["git", "models", "build", "test", "dev", "pool"];

pub fn run(cmd: RemoteCmd, cx: &crate::Context) -> anyhow::Result<()> {
    match cmd {
        RemoteCmd::Hosts(HostsCmd::List) => list_hosts(cx),
        RemoteCmd::Hosts(HostsCmd::Add {
            name,
            target,
            identity,
            repo_path,
            force,
            no_check,
        }) => {
            hosts::validate_profile_name(&name)?;
            let (user, host, port) = hosts::parse_target(&target)?;
            let profile = HostProfile {
                user,
                host,
                port,
                identity_file: identity.map(absolute_identity).transpose()?,
                repo_path,
            };
            add_host(cx, &name, profile, force, !no_check)
        }
        RemoteCmd::Hosts(HostsCmd::Remove { name }) => remove_host(cx, &name),
        RemoteCmd::Exec { host, command } => {
            if cx.out.json() {
                bail!("--json does not apply to `remote exec`: the remote command's output passes through unchanged\nhint: drop --json (and let the remote command print JSON itself if it can)");
            }
            let target = SshTarget::resolve(&host, &cx.settings)?;
            let remote_command = ssh::quote_command(&command)?;
            cx.out
                .debug(format!("ssh {}: {remote_command}", target.describe()));
            exit_with(ssh::run_streaming(
                &target,
                &SshOptions::from_settings(&cx.settings),
                &remote_command,
            )?)
        }
        RemoteCmd::Check { hosts } => check_hosts(cx, hosts),
    }
}

/// A relative key path is made absolute now: later commands run from other directories.
/// `~/...` is kept as written, for ssh to expand.
fn absolute_identity(path: std::path::PathBuf) -> anyhow::Result<std::path::PathBuf> {
    if path.is_absolute() || path.starts_with("~") {
        return Ok(path);
    }
    let current = std::env::current_dir().context("finding the current directory")?;
    Ok(current.join(path))
}

/// Returns `Err(ExitCode(code))` for a non-zero code, so `main` exits with it silently.
fn exit_with(code: u8) -> anyhow::Result<()> {
    match code {
        0 => Ok(()),
        code => Err(ExitCode(code).into()),
    }
}

#[derive(Serialize)]
struct HostRow<'a> {
    name: &'a str,
    address: String,
    #[serde(flatten)]
    profile: &'a HostProfile,
}

fn list_hosts(cx: &crate::Context) -> anyhow::Result<()> {
    let profiles = &cx.settings.file.remote.hosts;
    let rows: Vec<HostRow> = profiles
        .iter()
        .map(|(name, profile)| HostRow {
            name,
            address: SshTarget::resolve(name, &cx.settings)
                .map(|target| target.address())
                .unwrap_or_else(|_| profile.host.clone()),
            profile,
        })
        .collect();
    if cx.out.json() {
        return cx.out.print_json(&rows);
    }
    if rows.is_empty() {
        cx.out.status(format!(
            "no host profiles in {}\nhint: add one with `cargo xtask remote hosts add NAME USER@HOST[:PORT] --repo-path PATH`; ssh aliases from ~/.ssh/config work without a profile",
            cx.settings.config_path.display()
        ));
        return Ok(());
    }
    let paint = cx.out.paint();
    cx.out.println(paint.bold(&format!(
        "{:<16} {:<32} {:<24} {}",
        "NAME", "ADDRESS", "REPO PATH", "IDENTITY"
    )));
    let dash = || "-".to_owned();
    for row in rows {
        let path = |path: &Option<std::path::PathBuf>| {
            path.as_ref()
                .map(|path| path.display().to_string())
                .unwrap_or_else(dash)
        };
        cx.out.println(format!(
            "{:<16} {:<32} {:<24} {}",
            row.name,
            row.address,
            path(&row.profile.repo_path),
            path(&row.profile.identity_file)
        ));
    }
    Ok(())
}

/// The config file's current text, or a minimal one when there is none yet.
fn config_text(cx: &crate::Context) -> anyhow::Result<String> {
    let path = &cx.settings.config_path;
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Ok(format!("version = {}\n", crate::config::CONFIG_VERSION))
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the edited text after checking that xtask itself can read it back.
fn write_config(cx: &crate::Context, text: &str) -> anyhow::Result<()> {
    let path = &cx.settings.config_path;
    crate::config::parse_config(text, path)?;
    crate::files::write_atomically(path, text)
}

fn add_host(
    cx: &crate::Context,
    name: &str,
    profile: HostProfile,
    replace: bool,
    check: bool,
) -> anyhow::Result<()> {
    let text = hosts::add_profile(&config_text(cx)?, name, &profile, replace)?;
    write_config(cx, &text)?;
    let path = cx.settings.config_path.display();
    // Connectivity is checked after saving: an unreachable host (asleep, off the VPN) is still
    // worth a profile, so the check only warns.
    let reachable = if check {
        let mut settings = cx.settings.clone();
        settings
            .file
            .remote
            .hosts
            .insert(name.to_owned(), profile.clone());
        let target = SshTarget::resolve(name, &settings)?;
        let spinner = cx
            .out
            .spinner(format!("connecting to {}", target.describe()));
        let result = ssh::probe(cx, &target, &SshOptions::from_settings(&settings));
        spinner.finish_and_clear();
        match result {
            Ok(elapsed) => {
                cx.out.status(format!(
                    "connected to {} in {} ms",
                    target.describe(),
                    elapsed.as_millis()
                ));
                Some(true)
            }
            Err(error) => {
                cx.out.warn(format!(
                    "profile saved, but the host is not reachable now: {error:#}"
                ));
                Some(false)
            }
        }
    } else {
        None
    };
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "name": name,
            "profile": profile,
            "config_path": cx.settings.config_path,
            "reachable": reachable,
        }));
    }
    cx.out
        .println(format!("added host profile `{name}` to {path}"));
    Ok(())
}

fn remove_host(cx: &crate::Context, name: &str) -> anyhow::Result<()> {
    if !cx.settings.config_file_exists {
        bail!(
            "there is no host profile named `{name}`: {} does not exist\nhint: see the profiles with `cargo xtask remote hosts list`",
            cx.settings.config_path.display()
        );
    }
    let text = hosts::remove_profile(&config_text(cx)?, name)?;
    write_config(cx, &text)?;
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({ "removed": name }));
    }
    cx.out.println(format!(
        "removed host profile `{name}` from {}",
        cx.settings.config_path.display()
    ));
    Ok(())
}

/// The result of connecting to one host, for `remote check` and `dev check`/`dev doctor`.
#[derive(Debug, Serialize)]
pub struct HostCheck {
    pub host: String,
    pub address: String,
    pub reachable: bool,
    pub latency_ms: Option<u128>,
    /// The connection error with its hint, when not reachable.
    pub error: Option<String>,
    /// `remote check` only: checkout, worker build and orchestrator seen from the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<readiness::Readiness>,
}

/// Connects to `host` (a profile or an ssh destination) and runs `true` there.
pub fn check_host(cx: &crate::Context, host: &str) -> anyhow::Result<HostCheck> {
    let target = SshTarget::resolve(host, &cx.settings)?;
    let result = ssh::probe(cx, &target, &SshOptions::from_settings(&cx.settings));
    Ok(HostCheck {
        host: host.to_owned(),
        address: target.address(),
        reachable: result.is_ok(),
        latency_ms: result.as_ref().ok().map(Duration::as_millis),
        error: result.err().map(|error| format!("{error:#}")),
        readiness: None,
    })
}

fn check_hosts(cx: &crate::Context, hosts: Vec<String>) -> anyhow::Result<()> {
    let hosts = if hosts.is_empty() {
        cx.settings.file.remote.hosts.keys().cloned().collect()
    } else {
        hosts
    };
    if hosts.is_empty() {
        bail!("no hosts to check: the config file has no host profiles\nhint: name a host (`cargo xtask remote check HOST`) or add a profile with `cargo xtask remote hosts add`");
    }
    let mut checks = hosts
        .iter()
        .map(|host| check_host(cx, host))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for check in checks.iter_mut().filter(|check| check.reachable) {
        let target = SshTarget::resolve(&check.host, &cx.settings)?;
        let options = SshOptions::from_settings(&cx.settings);
        match readiness::check(&target, &options, &cx.settings.orchestrator_url) {
            Ok(readiness) => check.readiness = Some(readiness),
            Err(error) => cx.out.warn(format!("checking {}: {error:#}", check.host)),
        }
    }
    let failed = checks.iter().filter(|check| !check.reachable).count();
    if cx.out.json() {
        cx.out.print_json(&checks)?;
    } else {
        let paint = cx.out.paint();
        for check in &checks {
            match (&check.latency_ms, &check.error) {
                (Some(latency), _) => {
                    cx.out.println(format!(
                        "{} {} ({}) {latency} ms",
                        paint.green("ok  "),
                        check.host,
                        check.address
                    ));
                    for line in check
                        .readiness
                        .iter()
                        .flat_map(|readiness| readiness.describe())
                    {
                        cx.out.println(format!("     {line}"));
                    }
                }
                (None, error) => cx.out.println(format!(
                    "{} {} ({})\n     {}",
                    paint.red("FAIL"),
                    check.host,
                    check.address,
                    error
                        .as_deref()
                        .unwrap_or("unknown error")
                        .replace('\n', "\n     ")
                )),
            }
        }
    }
    match failed {
        0 => Ok(()),
        _ => Err(ExitCode(1).into()),
    }
}

/// Runs `cargo xtask ARGS` in the checkout of `host` (the profile's `repo_path`), streaming
/// stdin, stdout and stderr, and passes on its exit code.
pub fn run_xtask_on(cx: &crate::Context, host: &str, args: &[String]) -> anyhow::Result<()> {
    let target = SshTarget::resolve(host, &cx.settings)?;
    let Some(repo_path) = &target.repo_path else {
        bail!(
            "running `cargo xtask` on {}: the repository path there is unknown\nhint: give the host a profile with it: `cargo xtask remote hosts add {} USER@HOST[:PORT] --repo-path ~/llama-orch`",
            target.describe(),
            target.name
        );
    };
    let repo_path = repo_path
        .to_str()
        .with_context(|| format!("the repo_path of `{host}` is not valid UTF-8"))?;
    let mut words = vec!["cargo".to_owned(), "xtask".to_owned()];
    words.extend(args.iter().cloned());
    // rustup puts cargo in ~/.cargo/bin, which non-interactive SSH sessions rarely have on PATH.
    let remote_command = format!(
        "PATH=\"$HOME/.cargo/bin:$PATH\"; export PATH; cd -- {} && exec {}",
        ssh::quote_remote_path(repo_path)?,
        ssh::quote_command(&words)?
    );
    cx.out
        .debug(format!("ssh {}: {remote_command}", target.describe()));
    let code = ssh::run_streaming(
        &target,
        &SshOptions::from_settings(&cx.settings),
        &remote_command,
    )?;
    if code == 127 {
        cx.out.warn(format!(
            "the shell on {} could not find a command (exit 127): is Rust installed there, and does {repo_path} exist?",
            target.describe()
        ));
    }
    exit_with(code)
}

/// `--remote HOST`: reruns this very invocation on `host`, without `--remote HOST`.
pub fn forward_invocation(cx: &crate::Context, host: &str) -> anyhow::Result<()> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args = strip_option(&args, "--remote");
    let domain = domain_of(&args);
    if !domain
        .as_deref()
        .is_some_and(|domain| FORWARDABLE_DOMAINS.contains(&domain))
    {
        bail!(
            "`--remote` does not apply to `cargo xtask {}`: it forwards only {}\nhint: use `cargo xtask remote exec {host} -- COMMAND` to run anything else there",
            domain.as_deref().unwrap_or(""),
            FORWARDABLE_DOMAINS.join(", ")
        );
    }
    run_xtask_on(cx, host, &to_strings(args)?)
}

/// `args` without any `OPTION VALUE` or `OPTION=VALUE`; arguments after `--` belong to
/// another program and are kept as they are.
pub fn strip_option(args: &[OsString], option: &str) -> Vec<OsString> {
    let with_value = format!("{option}=");
    let mut kept = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            kept.push(arg.clone());
            kept.extend(iter.cloned());
            break;
        }
        if arg == option {
            iter.next();
        } else if !arg.to_str().is_some_and(|arg| arg.starts_with(&with_value)) {
            kept.push(arg.clone());
        }
    }
    kept
}

/// The subcommand (`git`, `pool`, ...) of an xtask command line, as clap reads it.
fn domain_of(args: &[OsString]) -> Option<String> {
    use clap::CommandFactory;
    let argv = std::iter::once(OsString::from("xtask")).chain(args.iter().cloned());
    crate::flags::Cli::command()
        .try_get_matches_from(argv)
        .ok()
        .and_then(|matches| matches.subcommand_name().map(str::to_owned))
}

pub fn to_strings(args: Vec<OsString>) -> anyhow::Result<Vec<String>> {
    args.into_iter()
        .map(|arg| {
            arg.into_string().map_err(|arg| {
                anyhow::anyhow!(
                    "the argument {arg:?} is not valid UTF-8 and cannot be sent to a remote shell"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn strip_option_removes_both_spellings_but_not_after_double_dash() {
        assert_eq!(
            strip_option(
                &os(&[
                    "--remote",
                    "box",
                    "pool",
                    "--remote=box",
                    "status",
                    "--",
                    "--remote",
                    "x"
                ]),
                "--remote"
            ),
            os(&["pool", "status", "--", "--remote", "x"])
        );
        assert_eq!(
            strip_option(
                &os(&["pool", "worker", "list", "--host", "h", "--json"]),
                "--host"
            ),
            os(&["pool", "worker", "list", "--json"])
        );
    }

    #[test]
    fn domain_is_found_after_global_options() {
        assert_eq!(
            domain_of(&os(&["--json", "config", "show"])).as_deref(),
            Some("config")
        );
        assert_eq!(
            domain_of(&os(&["--quiet", "pool", "status"])).as_deref(),
            Some("pool")
        );
    }
}
