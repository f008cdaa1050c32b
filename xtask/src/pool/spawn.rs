//! `pool worker spawn`, here or on a pool host, and what makes it trustworthy across machines:
//! the worker registers with the orchestrator configured on the operator's machine, advertises
//! an address orcd can reach, carries the worker token, gets a stable id, and the command
//! succeeds only once orcd lists the worker as live.
//!
//! `fleet` builds on [`spawn_worker`] with a [`SpawnSpec`] per worker.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{
    process,
    remote::{
        self,
        ssh::{self, SshOptions, SshTarget},
    },
};

use super::launch::{SpawnSpec, SpawnedWorker};
use super::registry::confirm_live;

/// Where a host keeps the worker token its workers register with, under its config directory
/// (`$XDG_CONFIG_HOME`, else `~/.config`): one file for `pool worker spawn --host` and `fleet
/// up`, so a token either of them puts there is the one both use.
pub const REMOTE_TOKEN_PATH: &str = "llorch/worker.token";

/// [`REMOTE_TOKEN_PATH`] on this machine, as the host side of `fleet` finds it.
pub fn host_token_path() -> anyhow::Result<PathBuf> {
    use etcetera::BaseStrategy;
    let strategy = etcetera::choose_base_strategy().context(
        "finding the config directory for the worker token: no home directory\nhint: set HOME or XDG_CONFIG_HOME",
    )?;
    Ok(strategy.config_dir().join(REMOTE_TOKEN_PATH))
}
/// Starts the worker of `spec` on `host` (`None`: this machine) and returns once orcd lists
/// it as live. On a pool host the command runs there as `cargo xtask pool worker spawn`, with
/// the orchestrator URL, advertised address, id and token path decided here.
pub fn spawn_worker(
    cx: &crate::Context,
    host: Option<&str>,
    spec: &SpawnSpec,
) -> anyhow::Result<SpawnedWorker> {
    match host {
        None => {
            let info = super::worker::spawn_here(cx, spec)?;
            let orchestrator_url = spec.orchestrator_url(cx);
            let orcd = confirm_live(cx, &orchestrator_url, &info.name)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "orcd at {orchestrator_url} does not list `{}` as live although the worker registered\nhint: is another orcd answering at that URL? check `GET /workers` there",
                    info.name
                )
            });
            match orcd {
                Ok(orcd) => Ok(SpawnedWorker {
                    worker_id: info.name,
                    host: None,
                    orcd,
                }),
                Err(error) => {
                    let run_dir = crate::daemon::RunDir::from_env()?;
                    let _ = run_dir.stop(&info.name, Duration::from_secs(10));
                    Err(error)
                }
            }
        }
        Some(host) => spawn_on_host(cx, host, spec),
    }
}

fn spawn_on_host(
    cx: &crate::Context,
    host: &str,
    spec: &SpawnSpec,
) -> anyhow::Result<SpawnedWorker> {
    let target = SshTarget::resolve(host, &cx.settings)?;
    let options = SshOptions::from_settings(&cx.settings);
    let orchestrator_url = spec.orchestrator_url(cx);
    let host_address = connect_address(&target, &options);
    check_orchestrator_reachable_from(
        &orchestrator_url,
        &target,
        &host_address,
        &cx.settings.config_path,
    )?;
    let worker_id = spec.worker_id(&target.name);
    crate::daemon::validate_name(&worker_id)?;

    let mut args = super::output_flags(cx);
    args.extend(
        [
            "pool",
            "worker",
            "spawn",
            spec.launch.backend.as_str(),
            "--model",
            &spec.launch.model,
            "--id",
            &worker_id,
            "--orchestrator-url",
            &orchestrator_url,
            "--timeout",
            &spec.timeout.as_secs().to_string(),
            "--bind",
            &spec
                .bind
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                .to_string(),
        ]
        .map(str::to_owned),
    );
    match (&spec.advertise_url, &spec.advertise_host) {
        (Some(url), _) => args.extend(["--advertise-url".to_owned(), url.clone()]),
        (None, Some(address)) => args.extend(["--advertise-host".to_owned(), address.clone()]),
        (None, None) => args.extend(["--advertise-host".to_owned(), host_address.clone()]),
    }
    // `pool worker spawn` takes the launch's settings under llorch-worker's own flag names.
    args.extend(spec.launch.setting_args());
    if let Some(port) = spec.port {
        args.extend(["--port".to_owned(), port.to_string()]);
    }
    // LLORCH_BIN_DIR here names a directory of THIS machine; only an explicit --bin-dir is
    // meant for the host.
    let from_env = std::env::var_os("LLORCH_BIN_DIR").map(PathBuf::from);
    if let Some(dir) = spec
        .bin_dir
        .as_ref()
        .filter(|dir| from_env.as_ref() != Some(dir))
    {
        args.extend(["--bin-dir".to_owned(), path_text(dir)?]);
    }
    if let Some(token_file) = &spec.worker_token_file {
        let remote_path = install_token(cx, &target, &options, token_file)?;
        args.extend(["--worker-token-file".to_owned(), remote_path]);
    }
    if !spec.worker_args.is_empty() {
        args.push("--".to_owned());
        args.extend(spec.worker_args.iter().cloned());
    }
    // The host's own xtask waits for the worker's registration and, when it fails, prints the
    // worker's reason and stops it; its exit code is ours.
    remote::run_xtask_on(cx, host, &args)?;

    match confirm_live(cx, &orchestrator_url, &worker_id)? {
        Some(orcd) => Ok(SpawnedWorker {
            worker_id,
            host: Some(host.to_owned()),
            orcd,
        }),
        None => {
            let stop = ["pool", "worker", "stop", &worker_id].map(str::to_owned);
            if let Err(error) = remote::run_xtask_on(cx, host, &stop) {
                cx.out
                    .warn(format!("stopping `{worker_id}` on {host}: {error:#}"));
            }
            bail!(
                "orcd at {orchestrator_url} does not list `{worker_id}` as live, although the worker on {} said it registered there; the worker was stopped\nhint: the host may reach a different orcd under that URL; pass an address of this orcd that {host} reaches with --orchestrator-url",
                target.describe()
            )
        }
    }
}

/// The address ssh connects to for `target`: the profile's host, or what `ssh -G` resolves an
/// alias to. This is the default address orcd reaches the host's workers at.
pub fn connect_address(target: &SshTarget, options: &SshOptions) -> String {
    if target.is_profile {
        return target.host.clone();
    }
    let mut command = process::cmd("ssh");
    if let Some(file) = &options.config_file {
        command = command.arg("-F").arg(file);
    }
    let resolved = command
        .args(["-G", "--", &target.host])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .find_map(|line| line.strip_prefix("hostname ").map(str::to_owned))
        });
    resolved.unwrap_or_else(|| target.host.clone())
}

/// A loopback orchestrator URL names the operator's machine only from the operator's machine;
/// from a pool host it would be the host itself.
fn check_orchestrator_reachable_from(
    orchestrator_url: &str,
    target: &SshTarget,
    host_address: &str,
    config_path: &Path,
) -> anyhow::Result<()> {
    if is_loopback_url(orchestrator_url) && !is_loopback_host(host_address) {
        bail!(
            "the orchestrator URL {orchestrator_url} is a loopback address: from {} it would name that host itself, not the machine orcd runs on\nhint: run orcd on an address the host can reach (`orcd --listen 0.0.0.0:8080` with tokens, see deploy/README.md) and set it here: `orchestrator.url` in {}, LLORCH_ORCHESTRATOR_URL, or --orchestrator-url http://ADDRESS:8080",
            target.describe(),
            config_path.display()
        );
    }
    Ok(())
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

fn is_loopback_url(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| url.host_str().map(is_loopback_host))
        .unwrap_or(false)
}

/// Puts the first token of `token_file` into `~/.config/llorch/worker.token` on the host (mode
/// 0600; under `$XDG_CONFIG_HOME` when set) unless it already holds exactly that, and returns
/// the file's absolute path. A different token there (an earlier orcd's, an earlier spawn's) is
/// replaced: written beside it, then renamed over it, so no worker ever reads half a token.
fn install_token(
    cx: &crate::Context,
    target: &SshTarget,
    options: &SshOptions,
    token_file: &Path,
) -> anyhow::Result<String> {
    // Read and checked here first: a bad file fails before anything happens on the host.
    let tokens = llorch_api::secret::read_token_file(token_file, "worker token")
        .map_err(|error| anyhow::anyhow!("reading --worker-token-file: {error}"))?;
    let first = tokens
        .first()
        .with_context(|| format!("{} holds no worker token", token_file.display()))?;
    let text = format!("{first}\n");
    let script = format!(
        "set -e; umask 077; file=\"${{XDG_CONFIG_HOME:-$HOME/.config}}\"/{path}; mkdir -p \"$(dirname \"$file\")\"; \
         cat > \"$file.tmp\"; chmod 600 \"$file.tmp\"; \
         if [ ! -e \"$file\" ]; then mv \"$file.tmp\" \"$file\"; echo \"copied $file\"; \
         elif [ \"$(cat \"$file\")\" = \"$(cat \"$file.tmp\")\" ]; then rm -f \"$file.tmp\"; chmod 600 \"$file\"; echo \"present $file\"; \
         else mv \"$file.tmp\" \"$file\"; echo \"replaced $file\"; fi",
        path = ssh::quote_command(&[REMOTE_TOKEN_PATH])?
    );
    let output = process::cmd("ssh")
        .args(ssh::ssh_args(target, options, &script))
        .expression()
        .stdin_bytes(text)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running ssh to copy the worker token")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(failure) = ssh::classify_failure(&stderr) {
            return Err(ssh::connect_error(target, failure, options));
        }
        bail!(
            "copying the worker token to {}: {}\nhint: check that the remote home directory is writable",
            target.describe(),
            stderr.trim()
        );
    }
    let line = stdout.lines().last().unwrap_or_default();
    let (what, path) = line
        .split_once(' ')
        .with_context(|| format!("unexpected answer from the token copy: {line:?}"))?;
    match what {
        "copied" => cx.out.status(format!(
            "copied the worker token to {path} on {} (mode 0600)",
            target.describe()
        )),
        "replaced" => cx.out.status(format!(
            "replaced the worker token in {path} on {}: it held a different one (now the first token of {}, mode 0600)",
            target.describe(),
            token_file.display()
        )),
        _ => cx.out.debug(format!(
            "{} already has this worker token in {path}",
            target.describe()
        )),
    }
    Ok(path.to_owned())
}

fn path_text(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_orchestrators_are_caught_for_remote_hosts_only() {
        let target = SshTarget {
            name: "far".into(),
            host: "10.0.0.2".into(),
            user: None,
            port: None,
            identity_file: None,
            repo_path: None,
            is_profile: true,
        };
        let config = Path::new("/home/me/.config/llorch/config.toml");
        let check = |url, address| check_orchestrator_reachable_from(url, &target, address, config);
        let error = check("http://127.0.0.1:8080", "10.0.0.2")
            .unwrap_err()
            .to_string();
        assert!(error.contains("loopback"), "{error}");
        assert!(error.contains("\nhint: "), "{error}");
        assert!(error.contains("--orchestrator-url"), "{error}");
        check("http://10.0.0.1:8080", "10.0.0.2").unwrap();
        check("http://127.0.0.1:8080", "127.0.0.1").unwrap();
        assert!(is_loopback_url("http://localhost:8080"));
        assert!(is_loopback_url("http://[::1]:8080"));
        assert!(!is_loopback_url("http://orcd.lan:8080"));
    }
}
