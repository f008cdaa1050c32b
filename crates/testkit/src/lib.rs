//! The one way the end-to-end tests run the real `cargo xtask` binary: [`Xtask`] starts it with
//! no `LLORCH_*` variable of the person running the tests (so their config, tokens and run
//! directory never leak in), colour off, stdin given or empty (never a terminal), stdout and
//! stderr captured, and a time limit after which the whole process group is killed and the test
//! fails with what it printed. xtask's own tests and those in `tests/` share it; each names the
//! binary it runs (`env!("CARGO_BIN_EXE_xtask")` there, the built one here).
//!
//! [`package_index`]: the PEP 503 index on loopback that the download tests of xtask, the pool
//! manager and orcd fetch pip-packaged models from.

pub mod package_index;

use std::{
    ffi::OsStr,
    io::{Read, Write},
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// How long one run may take unless the test says otherwise: generous, since a `--remote` run
/// may rebuild xtask on the "remote" side first.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The result of one xtask run.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The exit code, or -1 when a signal ended the run.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Panics with both streams unless the command exited 0.
    #[track_caller]
    pub fn success(self) -> Outcome {
        self.assert_success();
        self
    }

    /// Panics with both streams unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Outcome {
        assert!(self.status.success(), "expected success, got {self}");
        self
    }

    /// Panics with both streams if the command exited 0.
    #[track_caller]
    pub fn assert_failure(&self) -> &Outcome {
        assert!(!self.status.success(), "expected a failure, got {self}");
        self
    }

    /// stdout as one JSON document; panics with both streams when it is not.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not one JSON document ({error}): {self}"))
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// One run of the xtask binary under test, set up step by step, then [`Xtask::run`].
pub struct Xtask {
    command: Command,
    stdin: Vec<u8>,
    timeout: Duration,
}

impl Xtask {
    /// The binary at `program`, isolated from the caller's `LLORCH_*` settings.
    pub fn new(program: impl AsRef<OsStr>) -> Xtask {
        Xtask::in_netns(program, None)
    }

    /// Like [`Xtask::new`], run inside network namespace `netns` (`ip netns exec`), if any.
    pub fn in_netns(program: impl AsRef<OsStr>, netns: Option<&str>) -> Xtask {
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(program.as_ref());
                command
            }
            None => Command::new(program.as_ref()),
        };
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LLORCH_") {
                command.env_remove(name);
            }
        }
        command.env("NO_COLOR", "1");
        Xtask {
            command,
            stdin: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn env(&mut self, name: &str, value: impl AsRef<OsStr>) -> &mut Xtask {
        self.command.env(name, value);
        self
    }

    pub fn env_remove(&mut self, name: &str) -> &mut Xtask {
        self.command.env_remove(name);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Xtask {
        self.command.current_dir(dir);
        self
    }

    /// What the run reads on stdin (nothing by default; stdin is a closed pipe either way).
    pub fn stdin(&mut self, bytes: &[u8]) -> &mut Xtask {
        self.stdin = bytes.to_vec();
        self
    }

    pub fn timeout(&mut self, timeout: Duration) -> &mut Xtask {
        self.timeout = timeout;
        self
    }

    /// Runs `xtask ARGS` to its end and returns what it printed; panics after the time limit.
    pub fn run<I, S>(&mut self, args: I) -> Outcome
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self
            .command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting the xtask binary");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let input = std::mem::take(&mut self.stdin);
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        // Drained on threads so a chatty run never blocks on a full pipe.
        let out = drain(child.stdout.take().expect("stdout is piped"));
        let err = drain(child.stderr.take().expect("stderr is piped"));
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for xtask") {
                break status;
            }
            if Instant::now() > deadline {
                // The whole group: an ssh client started by xtask would keep the pipes open.
                // SAFETY: kill has no memory effects; the group is the one made above.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                panic!(
                    "xtask did not finish within {:?}; stderr so far:\n{}",
                    self.timeout,
                    String::from_utf8_lossy(&err.join().unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = writer.join();
        Outcome {
            status,
            stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_captures_both_streams_and_the_exit_code_without_llorch_settings() {
        std::env::set_var("LLORCH_LEAK_CHECK", "leaked");
        let outcome = Xtask::new("sh").stdin(b"from stdin").run([
            "-c",
            "cat; echo; echo \"[$LLORCH_LEAK_CHECK][$NO_COLOR]\"; echo oops >&2; exit 3",
        ]);
        assert_eq!(outcome.code(), 3);
        assert_eq!(outcome.stdout, "from stdin\n[][1]\n");
        assert_eq!(outcome.stderr, "oops\n");
        outcome.assert_failure();
    }

    #[test]
    #[should_panic(expected = "did not finish within")]
    fn a_run_past_its_limit_fails_the_test() {
        Xtask::new("sleep")
            .timeout(Duration::from_millis(100))
            .run(["30"]);
    }

    #[test]
    fn json_reads_stdout_as_one_document() {
        let outcome = Xtask::new("echo").run([r#"{"ok": true}"#]).success();
        assert_eq!(outcome.json()["ok"], true);
    }
}
