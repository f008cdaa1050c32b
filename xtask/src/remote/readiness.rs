//! What `remote check` asks a reachable host besides "does SSH work": is the checkout there,
//! is the worker built, and can the host reach the orchestrator configured here. One SSH round
//! trip running a short POSIX script; each answer is one `key=value` line.

use serde::Serialize;

use super::ssh::{self, SshOptions, SshTarget};
use crate::process;

/// A pool host's readiness to run workers for this machine's orchestrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// The profile's repo_path holds a checkout (`Cargo.toml`); `None` without a repo_path.
    pub repo: Option<bool>,
    /// `target/release/llorch-worker` exists in the checkout.
    pub worker_built: Option<bool>,
    /// The orchestrator URL the host was asked to reach.
    pub orchestrator_url: String,
    /// The HTTP status of `GET {orchestrator_url}/health` from the host; 0: no connection;
    /// `None`: neither curl nor python3 there to ask with.
    pub orcd_status: Option<u16>,
}

impl Readiness {
    /// One line per finding, for the text output.
    pub fn describe(&self) -> Vec<String> {
        let yes_no = |value: Option<bool>, yes: &str, no: &str| {
            match value {
            Some(true) => yes.to_owned(),
            Some(false) => no.to_owned(),
            None => "no repo_path in the profile; give one with `remote hosts add ... --repo-path PATH --force`".to_owned(),
        }
        };
        vec![
            format!("checkout: {}", yes_no(self.repo, "present", "MISSING (clone the repository at the profile's repo_path)")),
            format!(
                "worker:   {}",
                yes_no(self.worker_built, "built", "not built (`cargo xtask --remote HOST build worker cpu`)")
            ),
            format!(
                "orcd:     {}",
                match self.orcd_status {
                    Some(200) => format!("{} answers from the host", self.orchestrator_url),
                    Some(0) => format!(
                        "{} is NOT reachable from the host (set an address the host reaches: `orchestrator.url`, LLORCH_ORCHESTRATOR_URL)",
                        self.orchestrator_url
                    ),
                    Some(status) => format!("{}/health answered {status}", self.orchestrator_url),
                    None => "not checked: neither curl nor python3 on the host".to_owned(),
                }
            ),
        ]
    }
}

/// Asks `target` over SSH. Errors only when SSH itself fails.
pub fn check(
    target: &SshTarget,
    options: &SshOptions,
    orchestrator_url: &str,
) -> anyhow::Result<Readiness> {
    let repo = target
        .repo_path
        .as_ref()
        .and_then(|path| path.to_str())
        .map(ssh::quote_remote_path)
        .transpose()?;
    let health =
        ssh::quote_command(&[format!("{}/health", orchestrator_url.trim_end_matches('/'))])?;
    let mut script = String::from("set +e\n");
    if let Some(repo) = &repo {
        script.push_str(&format!(
            "if [ -f {repo}/Cargo.toml ]; then echo repo=yes; else echo repo=no; fi\n\
             if [ -x {repo}/target/release/llorch-worker ]; then echo worker=yes; else echo worker=no; fi\n"
        ));
    }
    script.push_str(&format!(
        "if command -v curl >/dev/null 2>&1; then echo orcd=$(curl -s -o /dev/null -m 5 -w '%{{http_code}}' {health}); \
         elif command -v python3 >/dev/null 2>&1; then python3 - {health} <<'PY'\n\
import sys, urllib.request, urllib.error\n\
try:\n    print('orcd=%d' % urllib.request.urlopen(sys.argv[1], timeout=5).status)\n\
except urllib.error.HTTPError as error:\n    print('orcd=%d' % error.code)\n\
except Exception:\n    print('orcd=0')\n\
PY\n\
         else echo orcd=none; fi\n"
    ));
    let output = process::cmd("ssh")
        .args(ssh::ssh_args(target, options, &script))
        .output()
        // Not the whole command line: the script would fill the screen.
        .map_err(|error| anyhow::anyhow!("running ssh: {}", error.root_cause()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(failure) = ssh::classify_failure(&stderr) {
            return Err(ssh::connect_error(target, failure, options));
        }
    }
    Ok(parse(
        &String::from_utf8_lossy(&output.stdout),
        orchestrator_url,
    ))
}

fn parse(stdout: &str, orchestrator_url: &str) -> Readiness {
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
    };
    let flag = |key: &str| value(key).map(|value| value == "yes");
    Readiness {
        repo: flag("repo"),
        worker_built: flag("worker"),
        orchestrator_url: orchestrator_url.to_owned(),
        orcd_status: value("orcd").and_then(|status| match status {
            "none" => None,
            status => Some(status.parse().unwrap_or(0)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_line_by_line() {
        let readiness = parse("repo=yes\nworker=no\norcd=000\n", "http://10.0.0.2:8080");
        assert_eq!(readiness.repo, Some(true));
        assert_eq!(readiness.worker_built, Some(false));
        assert_eq!(readiness.orcd_status, Some(0));
        let ready = parse("repo=yes\nworker=yes\norcd=200\n", "http://10.0.0.2:8080");
        assert_eq!(ready.orcd_status, Some(200));
        assert_eq!(parse("orcd=none\n", "u").orcd_status, None);
    }
}
