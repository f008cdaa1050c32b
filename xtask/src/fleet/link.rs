//! How this machine talks to one fleet host: `cargo xtask ...` and shell scripts, over SSH in
//! the host's checkout or, for `local`, right here; output captured, stderr lines handed to the
//! progress display as they arrive. Also the two steps only this side can do: putting the
//! host's checkout at this checkout's commit, and copying a model the host cannot download.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

use super::host::{StepOutcome, StepReport};
use crate::{
    process::{self, Cmd},
    remote::ssh::{self, SshOptions, SshTarget},
    Context,
};

/// The SSH connect timeout of `fleet status` and `fleet plan`, whatever `ssh_timeout` says.
pub const LOOK_CONNECT_TIMEOUT_SECS: u64 = 4;

/// A host of the fleet, as this machine reaches it.
pub enum HostLink {
    Local,
    Remote {
        target: SshTarget,
        options: SshOptions,
        repo_path: String,
    },
}

/// What a command on the host printed and how it exited.
pub struct Captured {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl HostLink {
    pub fn new(cx: &Context, name: &str) -> anyhow::Result<HostLink> {
        if name == super::file::LOCAL_HOST {
            return Ok(HostLink::Local);
        }
        let target = SshTarget::resolve(name, &cx.settings)?;
        let Some(repo_path) = &target.repo_path else {
            bail!(
                "host `{name}` has no repo_path: the fleet runs `cargo xtask` in the host's checkout\nhint: `cargo xtask remote hosts add {} USER@HOST[:PORT] --repo-path ~/llama-orch --force`",
                ssh::shell_word(name)
            );
        };
        let repo_path = repo_path
            .to_str()
            .with_context(|| format!("the repo_path of `{name}` is not valid UTF-8"))?
            .to_owned();
        Ok(HostLink::Remote {
            options: SshOptions::from_settings(&cx.settings),
            target,
            repo_path,
        })
    }

    /// Like [`HostLink::new`], with the SSH connect timeout capped at
    /// [`LOOK_CONNECT_TIMEOUT_SECS`]: `status` and `plan` only look, and a host that is down
    /// should not hold the whole report up for the full `ssh_timeout`.
    pub fn for_status(cx: &Context, name: &str) -> anyhow::Result<HostLink> {
        let mut link = HostLink::new(cx, name)?;
        if let HostLink::Remote { options, .. } = &mut link {
            options.connect_timeout_secs =
                options.connect_timeout_secs.min(LOOK_CONNECT_TIMEOUT_SECS);
        }
        Ok(link)
    }

    /// Connects (SSH) and runs `true`; an error names the cause and the fix.
    pub fn check_reachable(&self, cx: &Context) -> anyhow::Result<()> {
        match self {
            HostLink::Local => Ok(()),
            HostLink::Remote {
                target, options, ..
            } => ssh::probe(cx, target, options).map(|_| ()),
        }
    }

    /// `cargo xtask --json ARGS` on the host, `stdin` fed to it, each stderr line to `on_line`.
    pub fn xtask(
        &self,
        cx: &Context,
        args: &[&str],
        stdin: Option<&[u8]>,
        on_line: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Captured> {
        let mut words: Vec<String> = vec!["--json".into(), "--no-color".into()];
        words.extend(args.iter().map(|arg| (*arg).to_owned()));
        let command = match self {
            HostLink::Local => {
                let exe = std::env::current_exe().context("finding the xtask executable")?;
                cx.cmd(exe).args(&words)
            }
            HostLink::Remote { repo_path, .. } => {
                let mut remote = vec!["cargo".to_owned(), "-q".to_owned(), "xtask".to_owned()];
                remote.extend(words);
                // rustup puts cargo in ~/.cargo/bin, which non-interactive sessions rarely have.
                let script = format!(
                    "PATH=\"$HOME/.cargo/bin:$PATH\"; export PATH; cd -- {} && exec {}",
                    ssh::quote_remote_path(repo_path)?,
                    ssh::quote_command(&remote)?
                );
                self.ssh_command(&script)
            }
        };
        self.capture(command, stdin, on_line)
    }

    /// A POSIX shell script on the host (in the checkout for remote hosts).
    pub fn shell(&self, script: &str, stdin: Option<&[u8]>) -> anyhow::Result<Captured> {
        let command = match self {
            HostLink::Local => process::cmd("sh").args(["-c", script]),
            HostLink::Remote { .. } => self.ssh_command(script),
        };
        self.capture(command, stdin, &mut |_| {})
    }

    fn ssh_command(&self, script: &str) -> Cmd {
        let HostLink::Remote {
            target, options, ..
        } = self
        else {
            unreachable!("only remote hosts are reached over SSH")
        };
        process::cmd("ssh").args(ssh::ssh_args(target, options, script))
    }

    fn capture(
        &self,
        command: Cmd,
        stdin: Option<&[u8]>,
        on_line: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Captured> {
        let expression = command.expression().stdout_capture();
        let expression = match stdin {
            Some(bytes) => expression.stdin_bytes(bytes),
            None => expression.stdin_null(),
        };
        // Not the whole command line in the error: a script would fill the screen.
        let (child, stderr_pipe) = process::start_reading_stderr(&expression)
            .with_context(|| format!("running {:?}", command.program()))?;
        let mut stderr = String::new();
        for line in BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            let trimmed = line.trim();
            if !trimmed.is_empty() {
                on_line(trimmed);
            }
            stderr.push_str(&line);
            stderr.push('\n');
            if stderr.len() > 64 * 1024 {
                stderr.drain(..stderr.len() - 16 * 1024);
            }
        }
        let output = child.wait().context("waiting for the host's command")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let code = ssh::exit_code_of(output.status);
        if let HostLink::Remote {
            target, options, ..
        } = self
        {
            if code == 255 {
                if let Some(failure) = ssh::classify_failure(&stderr) {
                    return Err(ssh::connect_error(target, failure, options));
                }
            }
        }
        Ok(Captured {
            code,
            stdout,
            stderr,
        })
    }

    fn repo_path(&self) -> Option<&str> {
        match self {
            HostLink::Local => None,
            HostLink::Remote { repo_path, .. } => Some(repo_path),
        }
    }
}

impl Captured {
    /// The JSON document on stdout, or an error with the command's stderr.
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        serde_json::from_str(&self.stdout).map_err(|_| {
            anyhow::anyhow!(
                "{what} failed (exit {}): {}",
                self.code,
                last_lines(&self.stderr, 12)
            )
        })
    }
}

pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// This checkout's commit.
pub fn local_commit(cx: &Context) -> anyhow::Result<String> {
    cx.cmd("git")
        .args(["rev-parse", "HEAD"])
        .read()
        .context("reading this checkout's commit (git rev-parse HEAD)")
}

/// Puts the host's checkout at `commit`: nothing when it is there already; otherwise fetch
/// (from its origin, else a bundle sent from here over SSH) and check out, refusing over
/// uncommitted changes unless `force`.
pub fn sync_checkout(
    cx: &Context,
    link: &HostLink,
    commit: &str,
    force: bool,
) -> anyhow::Result<StepReport> {
    let Some(repo_path) = link.repo_path() else {
        return Ok(StepReport {
            step: "checkout".into(),
            outcome: StepOutcome::Unchanged,
            detail: "this checkout".into(),
        });
    };
    let cd = format!("cd -- {} || exit 3", ssh::quote_remote_path(repo_path)?);
    let probe = link.shell(
        &format!("{cd}\ngit rev-parse HEAD && git status --porcelain --untracked-files=no"),
        None,
    )?;
    if probe.code == 3 {
        bail!(
            "the checkout {repo_path} does not exist on the host\nhint: clone it there (`git clone URL {repo_path}`), or fix the profile's repo_path"
        );
    }
    if probe.code != 0 {
        bail!(
            "reading the checkout {repo_path} (git rev-parse HEAD): {}\nhint: is git installed there and {repo_path} a git checkout?",
            last_lines(&probe.stderr, 5)
        );
    }
    let mut lines = probe.stdout.lines();
    let head = lines.next().unwrap_or_default().trim().to_owned();
    let dirty: Vec<&str> = lines.filter(|line| !line.trim().is_empty()).collect();
    if head == commit {
        let detail = match dirty.len() {
            0 => format!("at {}", &commit[..12.min(commit.len())]),
            count => format!(
                "at {} with {count} uncommitted change(s) there",
                &commit[..12.min(commit.len())]
            ),
        };
        return Ok(StepReport {
            step: "checkout".into(),
            outcome: StepOutcome::Unchanged,
            detail,
        });
    }
    if !dirty.is_empty() && !force {
        bail!(
            "the checkout {repo_path} has uncommitted changes ({}), so it is not moved to {}\nhint: commit or stash them there, or pass --force to check out over them",
            dirty.iter().take(3).map(|line| line.trim()).collect::<Vec<_>>().join(", "),
            &commit[..12.min(commit.len())]
        );
    }
    let fetched = link.shell(
        &format!("{cd}\ngit cat-file -e {commit}^{{commit}} 2>/dev/null || git fetch --quiet origin {commit}"),
        None,
    )?;
    if fetched.code != 0 {
        // The host's origin does not have it (unpushed work, or no route there): send it.
        let bundle = tempfile::Builder::new()
            .prefix("llorch-fleet-")
            .suffix(".bundle")
            .tempfile()
            .context("creating a temporary bundle file")?;
        let bundle_path = bundle.path().to_path_buf();
        cx.cmd("git")
            .args(["bundle", "create", "--quiet"])
            .arg(&bundle_path)
            .arg("HEAD")
            .run()
            .context("bundling this checkout's commit (git bundle create)")?;
        let bytes = std::fs::read(&bundle_path).context("reading the bundle")?;
        let sent = link.shell(
            &format!("{cd}\nbundle=$(mktemp) && cat > \"$bundle\" && git fetch --quiet \"$bundle\" HEAD; status=$?; rm -f \"$bundle\"; exit $status"),
            Some(&bytes),
        )?;
        if sent.code != 0 {
            bail!(
                "fetching {commit} on the host: neither its origin nor a bundle sent from here worked: {}",
                last_lines(&sent.stderr, 5)
            );
        }
    }
    let force_flag = if force { " --force" } else { "" };
    let checked_out = link.shell(
        &format!("{cd}\ngit checkout --quiet --detach{force_flag} {commit}"),
        None,
    )?;
    if checked_out.code != 0 {
        bail!(
            "checking out {commit} in {repo_path}: {}",
            last_lines(&checked_out.stderr, 5)
        );
    }
    Ok(StepReport {
        step: "checkout".into(),
        outcome: StepOutcome::Changed,
        detail: format!(
            "{} -> {}",
            &head[..12.min(head.len())],
            &commit[..12.min(commit.len())]
        ),
    })
}

/// Copies model `id` from this machine's model directory into `remote_dir` on the host, checks
/// every file's SHA-256 there against this side's manifest, and only then moves it in place.
pub fn copy_model(
    cx: &Context,
    link: &HostLink,
    id: &str,
    remote_dir: &Path,
) -> anyhow::Result<StepReport> {
    let local_file = crate::models::ensure_downloaded(cx, id)
        .with_context(|| format!("fetching model `{id}` on this machine to copy it to the host"))?;
    let local_dir = local_file
        .parent()
        .context("a model file lives in a directory")?
        .to_path_buf();
    let manifest = llorch_catalog::Manifest::read(&local_dir)
        .map_err(|error| anyhow::anyhow!("reading the manifest of `{id}`: {error}"))?
        .with_context(|| format!("model `{id}` has no manifest in {}", local_dir.display()))?;
    let mut names: Vec<String> = manifest
        .files
        .iter()
        .map(|file| file.name.clone())
        .collect();
    names.push(llorch_catalog::MANIFEST_FILE.to_owned());
    let archive = tempfile::NamedTempFile::new().context("creating a temporary archive")?;
    let archive_path = archive.path().to_path_buf();
    cx.cmd("tar")
        .arg("-C")
        .arg(&local_dir)
        .arg("-cf")
        .arg(&archive_path)
        .args(&names)
        .run()
        .with_context(|| format!("packing model `{id}` (tar)"))?;
    let bytes = std::fs::read(&archive_path).context("reading the archive")?;
    let remote_dir = remote_dir
        .to_str()
        .context("the host's model directory is not valid UTF-8")?;
    let dir = ssh::quote_command(&[remote_dir])?;
    let staging = ssh::quote_command(&[format!("{remote_dir}.fleet-copy")])?;
    let files = ssh::quote_command(
        &manifest
            .files
            .iter()
            .map(|file| file.name.as_str())
            .collect::<Vec<_>>(),
    )?;
    let copied = link.shell(
        &format!("set -e\nrm -rf {staging}\nmkdir -p {staging}\ntar -C {staging} -xf -\ncd {staging}\nsha256sum -- {files}"),
        Some(&bytes),
    )?;
    if copied.code != 0 {
        bail!(
            "copying model `{id}` to the host: {}",
            last_lines(&copied.stderr, 5)
        );
    }
    for file in &manifest.files {
        let remote_sha = copied
            .stdout
            .lines()
            .find_map(|line| {
                let (sha, name) = line.split_once(char::is_whitespace)?;
                (name.trim_start_matches([' ', '*']) == file.name).then(|| sha.to_owned())
            })
            .unwrap_or_default();
        if remote_sha != file.sha256 {
            let _ = link.shell(&format!("rm -rf {staging}"), None);
            bail!(
                "model `{id}`: {} arrived with SHA-256 {remote_sha}, expected {}; the copy was removed\nhint: run `cargo xtask models verify {id}` here, then `fleet up` again",
                file.name,
                file.sha256
            );
        }
    }
    let moved = link.shell(&format!("set -e\nrm -rf {dir}\nmv {staging} {dir}"), None)?;
    if moved.code != 0 {
        bail!(
            "moving model `{id}` into place on the host: {}",
            last_lines(&moved.stderr, 5)
        );
    }
    Ok(StepReport {
        step: "model".into(),
        outcome: StepOutcome::Changed,
        detail: format!("{id} copied from here, SHA-256 verified there"),
    })
}

/// Reads a token file's first token.
pub fn first_token(path: &Path, what: &str) -> anyhow::Result<String> {
    let tokens = llorch_api::secret::read_token_file(path, what)
        .map_err(|error| anyhow::anyhow!("reading the {what}: {error}"))?;
    Ok(tokens
        .into_iter()
        .next()
        .expect("read_token_file refuses empty files"))
}

/// `~/x` with the home directory put in.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}
