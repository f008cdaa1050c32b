//! The one way xtask runs child processes: duct, through [`Cmd`] and the helpers here.
//!
//! Why duct: xtask's commands capture a child's output, stream it through or read it line by
//! line as it comes, feed it stdin, take a non-zero exit as an answer, leave a process running in
//! the background, and start daemons in a session of their own. duct does all of that
//! (`stdout_capture`, `reader`, `stdin_bytes`, `unchecked`, `start`, `before_spawn`); xshell does
//! the first few only and cannot start a detached daemon, and bare `std::process` needs pipes and
//! threads by hand for each. One crate means one set of defaults and one way a failed command
//! reads in an error.
//!
//! [`Cmd`] is a program with its arguments, working directory and environment that shows itself
//! as a shell would read it. [`Cmd::read`], [`Cmd::run`], [`Cmd::output`] and [`Cmd::succeeds`]
//! cover most call sites; [`Cmd::expression`] hands the rest duct's own builder (redirections,
//! `reader`, `start`), with [`stream_lines`], [`start_reading_stderr`] and [`in_new_session`]
//! for what several of them do.
//!
//! `std::process::Command` appears only here, inside duct's `before_spawn` in
//! [`in_new_session`]: `pre_exec` (for `setsid`) is a method of std's `CommandExt` and takes
//! nothing else. `cargo xtask lint` fails when `duct`, `xshell`, `std::process::Command` or
//! `Stdio` is named outside this file (`lint/process_use.rs`).

use std::{
    ffi::{OsStr, OsString},
    fmt,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{ExitStatus, Output},
};

use anyhow::{bail, Context as _};

pub use duct::{Expression, Handle};

/// How many lines of a failed command's stderr its error shows.
const STDERR_TAIL_LINES: usize = 10;

/// A program and its arguments, run in `dir` (else this process's working directory) with this
/// process's environment plus the changes made here.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    dir: Option<PathBuf>,
    /// Set (`Some`) or removed (`None`), in order.
    env: Vec<(OsString, Option<OsString>)>,
}

/// `program` with no arguments yet.
pub fn cmd(program: impl Into<OsString>) -> Cmd {
    Cmd {
        program: program.into(),
        args: Vec::new(),
        dir: None,
        env: Vec::new(),
    }
}

impl Cmd {
    pub fn arg(mut self, arg: impl Into<OsString>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I>(mut self, args: I) -> Cmd
    where
        I: IntoIterator,
        I::Item: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.dir = Some(dir.into());
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Cmd {
        self.env.push((name.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, name: impl Into<OsString>) -> Cmd {
        self.env.push((name.into(), None));
        self
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// duct's expression for this command, its streams inherited (duct's default), for what the
    /// helpers below do not cover.
    pub fn expression(&self) -> Expression {
        let mut expression = duct::cmd(&self.program, &self.args);
        if let Some(dir) = &self.dir {
            expression = expression.dir(dir);
        }
        for (name, value) in &self.env {
            expression = match value {
                Some(value) => expression.env(name, value),
                None => expression.env_remove(name),
            };
        }
        expression
    }

    /// Runs it to the end with stdin closed and stdout and stderr captured. A non-zero exit is
    /// an answer, in the returned status; only a command that cannot start is an error.
    pub fn output(&self) -> anyhow::Result<Output> {
        self.expression()
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|error| self.start_error(error))
    }

    /// Its stdout, trimmed; stdin is closed. A non-zero exit is an error that names the command,
    /// its exit status and the end of its stderr.
    pub fn read(&self) -> anyhow::Result<String> {
        let output = self.output()?;
        self.check(&output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Runs it to the end with stdin closed and stdout and stderr going where this process's
    /// go; a non-zero exit is an error (its output, above it, says why).
    pub fn run(&self) -> anyhow::Result<()> {
        let output = self
            .expression()
            .stdin_null()
            .unchecked()
            .run()
            .map_err(|error| self.start_error(error))?;
        if !output.status.success() {
            bail!("`{self}` failed ({}); its output is above", output.status);
        }
        Ok(())
    }

    /// Whether it starts and exits 0, with every stream closed: a probe for a tool or a state.
    pub fn succeeds(&self) -> bool {
        self.expression()
            .stdin_null()
            .stdout_null()
            .stderr_null()
            .unchecked()
            .run()
            .is_ok_and(|output| output.status.success())
    }

    /// An error for a finished `output` unless it exited 0: the command, its exit status and the
    /// last lines of its stderr.
    pub fn check(&self, output: &Output) -> anyhow::Result<()> {
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail = last_lines(&stderr, STDERR_TAIL_LINES);
        if tail.is_empty() {
            bail!(
                "`{self}` failed ({}) and wrote nothing to stderr",
                output.status
            );
        }
        bail!("`{self}` failed ({}):\n{tail}", output.status)
    }

    /// The error for a command that could not be started (or waited for); a missing program
    /// gets a hint.
    pub fn start_error(&self, error: std::io::Error) -> anyhow::Error {
        let hint = (error.kind() == std::io::ErrorKind::NotFound).then(|| {
            format!(
                "\nhint: install `{}` or put it on PATH; `cargo xtask dev doctor` lists what is missing",
                self.program.to_string_lossy()
            )
        });
        anyhow::Error::new(error).context(format!("running `{self}`{}", hint.unwrap_or_default()))
    }
}

/// The command line as a POSIX shell would read it back.
impl fmt::Display for Cmd {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = std::iter::once(&self.program).chain(&self.args);
        for (index, word) in words.enumerate() {
            let word = word.to_string_lossy();
            let quoted = shlex::try_quote(&word).unwrap_or_else(|_| format!("{word:?}").into());
            if index > 0 {
                formatter.write_str(" ")?;
            }
            formatter.write_str(&quoted)?;
        }
        Ok(())
    }
}

/// Whether `error` (anywhere in its chain) is a program that was not found.
pub fn is_not_found(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Runs `expression`, hands each line of its stdout to `on_line` as it arrives, and returns the
/// exit status once stdout closes; a non-zero exit is an answer, not an error.
pub fn stream_lines(
    expression: Expression,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<ExitStatus> {
    let reader = expression.unchecked().reader()?;
    for line in BufReader::new(&reader).lines() {
        on_line(&line.context("reading the command's output")?);
    }
    let output = reader
        .try_wait()?
        .context("the process closed its output but did not exit")?;
    Ok(output.status)
}

/// Starts `expression` with its stderr on a pipe that the returned reader reads, for a caller
/// that shows stderr as it comes and keeps it too (an SSH session, whose stderr tells a failed
/// connection from the remote command's own exit 255). Its exit status is an answer.
pub fn start_reading_stderr(
    expression: &Expression,
) -> std::io::Result<(Handle, os_pipe::PipeReader)> {
    let (reader, writer) = os_pipe::pipe()?;
    // The expression that holds the pipe's write end is dropped at the end of this statement,
    // so the reader sees the end of the stream when the child exits.
    let handle = expression.stderr_file(writer).unchecked().start()?;
    Ok((handle, reader))
}

/// `expression` started in a new session (`setsid`): no terminal and no process group of ours,
/// so a daemon outlives this process and our terminal's Ctrl-C does not reach it.
pub fn in_new_session(expression: Expression) -> Expression {
    expression.before_spawn(|command: &mut std::process::Command| {
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(command, || {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    })
}

/// The last `count` non-empty lines of `text`.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_shows_itself_as_a_shell_reads_it() {
        let command = cmd("git").args(["-C", "/a b", "log", "--format=%H"]);
        assert_eq!(command.to_string(), "git -C '/a b' log '--format=%H'");
    }

    #[test]
    fn read_trims_stdout_and_runs_in_dir_with_env() {
        let dir = tempfile::tempdir().unwrap();
        let text = cmd("sh")
            .args([
                "-c",
                "printf '  %s %s\\n\\n' \"$(pwd)\" \"$LLORCH_PROCESS_TEST\"",
            ])
            .dir(dir.path())
            .env("LLORCH_PROCESS_TEST", "set")
            .read()
            .unwrap();
        let pwd = dir.path().canonicalize().unwrap();
        assert_eq!(text, format!("{} set", pwd.display()));
    }

    #[test]
    fn env_remove_takes_a_variable_away() {
        let text = cmd("sh")
            .args(["-c", "echo \"${HOME-unset}\""])
            .env_remove("HOME")
            .read()
            .unwrap();
        assert_eq!(text, "unset");
    }

    #[test]
    fn a_failed_read_names_the_command_its_status_and_its_stderr_tail() {
        let error = cmd("sh")
            .args(["-c", "echo first >&2; echo last >&2; exit 3"])
            .read()
            .unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.starts_with("`sh -c 'echo first >&2; echo last >&2; exit 3'` failed (exit status: 3):\nfirst\nlast"),
            "{text}"
        );
    }

    #[test]
    fn output_takes_a_non_zero_exit_as_an_answer_and_closes_stdin() {
        let output = cmd("sh")
            .args(["-c", "cat; echo out; echo err >&2; exit 2"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"err\n");
    }

    #[test]
    fn a_missing_program_is_not_found_with_a_hint() {
        let error = cmd("llorch-no-such-program").arg("x").output().unwrap_err();
        assert!(is_not_found(&error));
        let text = format!("{error:#}");
        assert!(
            text.starts_with("running `llorch-no-such-program x`\nhint: install `llorch-no-such-program` or put it on PATH"),
            "{text}"
        );
        assert!(!cmd("llorch-no-such-program").succeeds());
    }

    #[test]
    fn run_fails_on_a_non_zero_exit_and_succeeds_tells_the_exit_apart() {
        let error = cmd("sh").args(["-c", "exit 4"]).run().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`sh -c 'exit 4'` failed (exit status: 4); its output is above"
        );
        assert!(cmd("true").succeeds());
        assert!(!cmd("false").succeeds());
    }

    #[test]
    fn stream_lines_hands_over_each_line_and_the_status() {
        let mut lines = Vec::new();
        let status = stream_lines(
            cmd("sh")
                .args(["-c", "echo one; echo two; exit 5"])
                .expression(),
            |line| lines.push(line.to_owned()),
        )
        .unwrap();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(status.code(), Some(5));
    }

    #[test]
    fn stderr_is_read_to_its_end_while_stdout_is_captured() {
        use std::io::Read;
        let expression = cmd("sh")
            .args(["-c", "echo out; echo err >&2; exit 255"])
            .expression()
            .stdout_capture();
        let (handle, mut stderr) = start_reading_stderr(&expression).unwrap();
        drop(expression);
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        let output = handle.wait().unwrap();
        assert_eq!(text, "err\n");
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.status.code(), Some(255));
    }

    #[test]
    fn a_new_session_is_led_by_the_child() {
        // `ps -o sid=` is the session id; in a new session it is the child's own pid.
        let text = in_new_session(
            cmd("sh")
                .args(["-c", "echo $$; ps -o sid= -p $$"])
                .expression(),
        )
        .stdin_null()
        .read()
        .unwrap();
        let mut words = text.split_whitespace();
        let (pid, session) = (words.next().unwrap(), words.next().unwrap());
        assert_eq!(pid, session);
    }
}
