//! SSH plumbing shared by `remote` and `pool --host`: turning a host name into an `ssh` command
//! line, quoting remote commands, streaming a session, and explaining failed connections.

use std::{
    ffi::OsString,
    io::{Read, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;

use crate::{config::Settings, process, Context};

/// Names an ssh config file used instead of `~/.ssh/config` (`ssh -F`); the tests point it at
/// a private file so that the user's `~/.ssh` is never read or written.
pub const SSH_CONFIG_ENV: &str = "LLORCH_SSH_CONFIG";

/// Where and how to connect: a `[remote.hosts.NAME]` profile, or anything ssh itself
/// understands (an alias from `~/.ssh/config`, `user@host`, a plain host name).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SshTarget {
    /// What the user typed.
    pub name: String,
    pub host: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub repo_path: Option<PathBuf>,
    pub is_profile: bool,
}

impl SshTarget {
    pub fn resolve(name: &str, settings: &Settings) -> anyhow::Result<SshTarget> {
        if name.is_empty() || name.starts_with('-') || name.chars().any(char::is_whitespace) {
            bail!("`{name}` is not a host: give a profile name from `cargo xtask remote hosts list` or an ssh host");
        }
        if let Some(profile) = settings.file.remote.hosts.get(name) {
            if profile.host.starts_with('-') {
                bail!(
                    "host profile `{name}` in {} has `host = \"{}\"`, which ssh would read as an option\nhint: fix the host name in the config file",
                    settings.config_path.display(),
                    profile.host
                );
            }
            return Ok(SshTarget {
                name: name.to_owned(),
                host: profile.host.clone(),
                user: profile.user.clone(),
                port: profile.port,
                identity_file: profile.identity_file.clone(),
                repo_path: profile.repo_path.clone(),
                is_profile: true,
            });
        }
        Ok(SshTarget {
            name: name.to_owned(),
            host: name.to_owned(),
            user: None,
            port: None,
            identity_file: None,
            repo_path: None,
            is_profile: false,
        })
    }

    /// `user@host:port`, as far as the profile says.
    pub fn address(&self) -> String {
        let mut address = String::new();
        if let Some(user) = &self.user {
            address.push_str(user);
            address.push('@');
        }
        if self.host.contains(':') && self.port.is_some() {
            address.push_str(&format!("[{}]", self.host));
        } else {
            address.push_str(&self.host);
        }
        if let Some(port) = self.port {
            address.push_str(&format!(":{port}"));
        }
        address
    }

    /// How messages name the host: the profile and its address, or the ssh destination.
    pub fn describe(&self) -> String {
        if self.is_profile {
            format!("`{}` ({})", self.name, self.address())
        } else {
            format!("`{}`", self.name)
        }
    }
}

/// The options every connection uses, from the config file and the environment.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub connect_timeout_secs: u64,
    pub config_file: Option<PathBuf>,
}

impl SshOptions {
    pub fn from_settings(settings: &Settings) -> SshOptions {
        SshOptions {
            connect_timeout_secs: settings.ssh_timeout_secs,
            config_file: crate::config::process_env(SSH_CONFIG_ENV).map(PathBuf::from),
        }
    }
}

/// The arguments of `ssh` that run `remote_command` on `target`. Never prompts (BatchMode),
/// trusts a host key on first contact but never a changed one (accept-new), and puts `--`
/// before the destination so that no host name can be read as an option.
pub fn ssh_args(target: &SshTarget, options: &SshOptions, remote_command: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(file) = &options.config_file {
        args.extend(["-F".into(), file.into()]);
    }
    for option in [
        "BatchMode=yes".to_owned(),
        format!("ConnectTimeout={}", options.connect_timeout_secs),
        "StrictHostKeyChecking=accept-new".to_owned(),
        // Errors only: "Permanently added ... to the list of known hosts" would otherwise mix
        // into the remote command's stderr on first contact.
        "LogLevel=ERROR".to_owned(),
    ] {
        args.extend(["-o".into(), option.into()]);
    }
    if let Some(port) = target.port {
        args.extend(["-p".into(), port.to_string().into()]);
    }
    if let Some(user) = &target.user {
        args.extend(["-l".into(), user.into()]);
    }
    if let Some(identity) = &target.identity_file {
        args.extend(["-i".into(), identity.into()]);
    }
    args.extend([
        "--".into(),
        target.host.clone().into(),
        remote_command.into(),
    ]);
    args
}

/// Quotes `words` for a POSIX shell on the remote side: each word arrives as exactly one
/// argument, so no word can start a second command.
pub fn quote_command<S: AsRef<str>>(words: &[S]) -> anyhow::Result<String> {
    if let Some(position) = words.iter().position(|word| word.as_ref().contains('\0')) {
        bail!(
            "argument {} of the remote command contains a NUL byte, which no shell can pass on\nhint: remove the NUL byte",
            position + 1
        );
    }
    shlex::try_join(words.iter().map(AsRef::as_ref))
        .map_err(|error| anyhow!("quoting the remote command: {error}"))
}

/// One word as a POSIX shell reads it back, for commands shown in hints: a name taken from a
/// file (`hosts."a; rm -rf ~"`) is shown quoted, never as a second command to copy.
pub fn shell_word(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| format!("{word:?}"), |quoted| quoted.into_owned())
}

/// A path for the remote shell: `~/x` keeps its tilde expansion (as `"$HOME"/'x'`), anything
/// else is quoted literally.
pub fn quote_remote_path(path: &str) -> anyhow::Result<String> {
    if path == "~" {
        return Ok("\"$HOME\"".to_owned());
    }
    match path.strip_prefix("~/") {
        Some(rest) => Ok(format!("\"$HOME\"/{}", quote_command(&[rest])?)),
        None => quote_command(&[path]),
    }
}

/// Why ssh could not connect, read from its stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    Dns,
    Refused,
    Timeout,
    Auth,
    HostKeyChanged,
    Unreachable,
    ClosedByServer,
}

/// Reads ssh's own error from the last lines of its stderr. ssh exits 255 both when it cannot
/// connect and when the remote command exits 255; only the message tells them apart.
pub fn classify_failure(stderr: &str) -> Option<ConnectFailure> {
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..]
        .join("\n")
        .to_ascii_lowercase();
    let patterns: [(&[&str], ConnectFailure); 7] = [
        (
            &[
                "could not resolve hostname",
                "name or service not known",
                "nodename nor servname",
            ],
            ConnectFailure::Dns,
        ),
        (&["connection refused"], ConnectFailure::Refused),
        (&["timed out"], ConnectFailure::Timeout),
        (
            &["permission denied", "too many authentication failures"],
            ConnectFailure::Auth,
        ),
        (
            &[
                "host key verification failed",
                "remote host identification has changed",
            ],
            ConnectFailure::HostKeyChanged,
        ),
        (
            &["no route to host", "network is unreachable"],
            ConnectFailure::Unreachable,
        ),
        (
            &[
                "connection closed by",
                "connection reset by",
                "kex_exchange_identification",
            ],
            ConnectFailure::ClosedByServer,
        ),
    ];
    patterns
        .into_iter()
        .find(|(needles, _)| needles.iter().any(|needle| tail.contains(needle)))
        .map(|(_, failure)| failure)
}

/// The error for a failed connection: which host, what went wrong, how to fix it.
pub fn connect_error(
    target: &SshTarget,
    failure: ConnectFailure,
    options: &SshOptions,
) -> anyhow::Error {
    let where_ = match target.port {
        Some(port) => format!("{} port {port}", target.host),
        None => target.host.clone(),
    };
    let (cause, hint) = match failure {
        ConnectFailure::Dns => (
            format!("the host name `{}` does not resolve (DNS)", target.host),
            "check the spelling, add the name to /etc/hosts or define it as an alias in ~/.ssh/config".to_owned(),
        ),
        ConnectFailure::Refused => (
            format!("connection refused by {where_}"),
            "nothing accepts SSH connections there: start sshd on the host, or fix the port (`cargo xtask remote hosts list`)".to_owned(),
        ),
        ConnectFailure::Timeout => (
            format!("connection to {where_} timed out after {} s", options.connect_timeout_secs),
            "check that the host is up and reachable (network, VPN, firewall), or raise `ssh_timeout` under [remote] in the config file".to_owned(),
        ),
        ConnectFailure::Auth => (
            "authentication failed: the host refused every key offered".to_owned(),
            format!(
                "install your public key on the host (`ssh-copy-id {}`), set the profile's key with `cargo xtask remote hosts add {} ... --identity FILE --force`, or load it into ssh-agent; passwords are never asked for",
                target.address(),
                target.name
            ),
        ),
        ConnectFailure::HostKeyChanged => (
            "the host key does not match the one in known_hosts".to_owned(),
            format!(
                "if the host was reinstalled, remove the old key with `ssh-keygen -R {}` and connect again; host key checking stays on",
                target.host
            ),
        ),
        ConnectFailure::Unreachable => (
            format!("no route to {where_}"),
            "check the address and the network between the machines (VPN, interface down)".to_owned(),
        ),
        ConnectFailure::ClosedByServer => (
            format!("{where_} closed the connection before login"),
            "check that an SSH server (not another service) listens there and read its logs (`journalctl -u ssh`)".to_owned(),
        ),
    };
    anyhow!(
        "connecting to {} over SSH: {cause}\nhint: {hint}",
        target.describe()
    )
}

/// Runs `remote_command` on `target` with this process's stdin, stdout and stderr streaming
/// through, and returns its exit status. A failed connection is an error naming its cause.
pub fn run_streaming(
    target: &SshTarget,
    options: &SshOptions,
    remote_command: &str,
) -> anyhow::Result<u8> {
    // stdin and stdout are this terminal's; stderr streams through *and* is kept, to tell an
    // ssh connection error from the remote command's own exit status 255.
    let expression = process::cmd("ssh")
        .args(ssh_args(target, options, remote_command))
        .expression();
    let (child, mut stderr) = process::start_reading_stderr(&expression).map_err(missing_ssh)?;
    let mut kept: Vec<u8> = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = match stderr.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("reading the SSH session's stderr"),
        };
        // A closed local stderr must not stop the session; keep reading.
        let _ = std::io::stderr().write_all(&buffer[..read]);
        kept.extend_from_slice(&buffer[..read]);
        if kept.len() > 64 * 1024 {
            kept.drain(..kept.len() - 16 * 1024);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for ssh to {}", target.describe()))?
        .status;
    let code = exit_code_of(status);
    if code == 255 {
        if let Some(failure) = classify_failure(&String::from_utf8_lossy(&kept)) {
            return Err(connect_error(target, failure, options));
        }
    }
    Ok(code)
}

/// Connects and runs `true`, without any terminal I/O; returns how long the round trip took.
pub fn probe(cx: &Context, target: &SshTarget, options: &SshOptions) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let output = cx
        .cmd("ssh")
        .args(ssh_args(target, options, "true"))
        .output()
        .map_err(|error| match process::is_not_found(&error) {
            true => missing_ssh(std::io::ErrorKind::NotFound.into()),
            false => error.context(format!("running ssh to {}", target.describe())),
        })?;
    let elapsed = started.elapsed();
    if output.status.success() {
        return Ok(elapsed);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    match classify_failure(&stderr) {
        Some(failure) => Err(connect_error(target, failure, options)),
        None => bail!(
            "connecting to {} over SSH: `ssh ... true` exited with {}: {}",
            target.describe(),
            exit_code_of(output.status),
            stderr.trim()
        ),
    }
}

fn missing_ssh(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        anyhow!("running ssh: the `ssh` client is not installed\nhint: run `cargo xtask dev setup` (it installs openssh-client)")
    } else {
        anyhow!(error).context("running ssh")
    }
}

/// The exit status a shell would report: the code, or 128 + the signal that ended the process.
pub fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            name: "box".into(),
            host: "box.lan".into(),
            user: Some("me".into()),
            port: Some(2222),
            identity_file: Some("/keys/id".into()),
            repo_path: None,
            is_profile: true,
        }
    }

    fn options() -> SshOptions {
        SshOptions {
            connect_timeout_secs: 7,
            config_file: None,
        }
    }

    #[test]
    fn ssh_args_are_batch_accept_new_and_end_with_destination() {
        let args: Vec<String> = ssh_args(&target(), &options(), "echo 'hi'")
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-o BatchMode=yes"), "{joined}");
        assert!(joined.contains("-o ConnectTimeout=7"), "{joined}");
        assert!(
            joined.contains("-o StrictHostKeyChecking=accept-new"),
            "{joined}"
        );
        assert!(joined.contains("-p 2222 -l me -i /keys/id"), "{joined}");
        assert_eq!(&args[args.len() - 3..], ["--", "box.lan", "echo 'hi'"]);
        assert!(!joined.contains("StrictHostKeyChecking=no"));
    }

    #[test]
    fn quoting_keeps_hostile_words_whole() {
        let words = [
            "printf",
            "%s\n",
            "; rm -rf /",
            "$(id)",
            "`id`",
            "a'b\"c",
            "line\nbreak",
            "",
        ];
        let quoted = quote_command(&words).unwrap();
        assert_eq!(shlex::split(&quoted).unwrap(), words);
        assert!(quote_command(&["a\0b"])
            .unwrap_err()
            .to_string()
            .contains("NUL"));
    }

    #[test]
    fn remote_paths_keep_tilde_expansion_only() {
        assert_eq!(
            quote_remote_path("~/llama orch").unwrap(),
            "\"$HOME\"/'llama orch'"
        );
        assert_eq!(quote_remote_path("/srv/$x").unwrap(), "'/srv/$x'");
    }

    #[test]
    fn failures_are_classified_from_ssh_messages() {
        let cases = [
            (
                "ssh: Could not resolve hostname nope: Name or service not known",
                ConnectFailure::Dns,
            ),
            (
                "ssh: connect to host 127.0.0.1 port 1: Connection refused",
                ConnectFailure::Refused,
            ),
            (
                "Connection timed out during banner exchange",
                ConnectFailure::Timeout,
            ),
            (
                "me@box: Permission denied (publickey).",
                ConnectFailure::Auth,
            ),
            (
                "Host key verification failed.",
                ConnectFailure::HostKeyChanged,
            ),
            (
                "ssh: connect to host 10.0.0.1 port 22: No route to host",
                ConnectFailure::Unreachable,
            ),
            (
                "kex_exchange_identification: Connection closed by remote host",
                ConnectFailure::ClosedByServer,
            ),
        ];
        for (stderr, expected) in cases {
            assert_eq!(classify_failure(stderr), Some(expected), "{stderr}");
        }
        assert_eq!(classify_failure("my command failed"), None);
    }

    #[test]
    fn connect_errors_name_host_cause_and_fix() {
        let message = connect_error(&target(), ConnectFailure::Refused, &options()).to_string();
        assert!(message.contains("`box` (me@box.lan:2222)"), "{message}");
        assert!(message.contains("refused"), "{message}");
        assert!(message.contains("\nhint: "), "{message}");
        let message = connect_error(&target(), ConnectFailure::Timeout, &options()).to_string();
        assert!(message.contains("timed out after 7 s"), "{message}");
    }
}
