//! Runs one cargo test selection with cargo-nextest (its libtest-json messages) or, when nextest
//! is not installed, `cargo test` (libtest's `test result:` summary lines, the only stable
//! machine-readable part of its output), and counts passed, failed and skipped tests.

use std::{collections::HashSet, ffi::OsString, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{build, process::stream_lines, Context};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runner {
    Nextest,
    CargoTest,
}

impl Runner {
    pub fn detect(cx: &Context) -> Runner {
        let nextest = cx.cmd("cargo").args(["nextest", "--version"]).succeeds();
        if nextest {
            Runner::Nextest
        } else {
            cx.out
                .debug("cargo-nextest is not installed: running `cargo test` instead");
            Runner::CargoTest
        }
    }
}

/// A test that cannot run here (no network namespaces, no systemd) and returns early writes one
/// file into the directory this variable names: its name, a tab, the reason. libtest and
/// nextest have no skip decided at run time, so the runner counts each such test as skipped
/// instead of passed.
pub const SKIP_DIR_ENV: &str = "LLORCH_TEST_SKIP_DIR";

/// A test that reported itself skipped through [`SKIP_DIR_ENV`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedTest {
    pub name: String,
    pub reason: String,
}

/// The skip records in `dir`, sorted by test name.
fn read_skip_records(dir: &std::path::Path) -> anyhow::Result<Vec<SkippedTest>> {
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|error| {
        anyhow::anyhow!("reading the skip records in {}: {error}", dir.display())
    })? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)
            .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
        let (name, reason) = text
            .trim_end()
            .split_once('\t')
            .unwrap_or((text.trim_end(), ""));
        skipped.push(SkippedTest {
            name: name.to_owned(),
            reason: reason.to_owned(),
        });
    }
    skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(skipped)
}

/// Moves the tests that reported a skip from passed to skipped: they returned, so the harness
/// counted them passed.
fn count_skips(counts: Counts, skipped: usize) -> Counts {
    let skipped = skipped as u64;
    Counts {
        passed: counts.passed.saturating_sub(skipped),
        failed: counts.failed,
        skipped: counts.skipped + skipped.min(counts.passed),
    }
}

/// Tests counted in one or more runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// One `cargo nextest run` / `cargo test` invocation.
pub struct Invocation {
    /// Package and target selection, features, target dir.
    pub selection: Vec<OsString>,
    pub env: Vec<(&'static str, PathBuf)>,
    pub filter: Option<String>,
}

/// The counts of a finished invocation and whether the process itself succeeded.
pub struct Outcome {
    pub counts: Counts,
    /// Tests that could not run here, with their reasons.
    pub skipped: Vec<SkippedTest>,
    pub exit_ok: bool,
    pub exit_description: String,
}

pub fn run(cx: &Context, runner: Runner, invocation: &Invocation) -> anyhow::Result<Outcome> {
    let mut args: Vec<OsString> = match runner {
        Runner::Nextest => [
            "nextest",
            "run",
            "--release",
            "--no-fail-fast",
            "--no-tests=warn",
            "--message-format",
            "libtest-json",
        ]
        .map(OsString::from)
        .to_vec(),
        Runner::CargoTest => ["test", "--release", "--no-fail-fast"]
            .map(OsString::from)
            .to_vec(),
    };
    args.extend(invocation.selection.iter().cloned());
    if cx.out.quiet() {
        match runner {
            Runner::Nextest => args.extend(
                [
                    "--cargo-quiet",
                    "--status-level",
                    "fail",
                    "--final-status-level",
                    "fail",
                ]
                .map(OsString::from),
            ),
            Runner::CargoTest => args.push("--quiet".into()),
        }
    }
    if let Some(filter) = &invocation.filter {
        match runner {
            Runner::Nextest => args.push(filter.into()),
            Runner::CargoTest => args.extend(["--".into(), filter.into()]),
        }
    }
    let skip_dir = tempfile::Builder::new()
        .prefix("llorch-skips-")
        .tempdir()
        .map_err(|error| anyhow::anyhow!("creating a directory for skip records: {error}"))?;
    let mut expression = build::cargo(cx, &args)
        .env("NEXTEST_EXPERIMENTAL_LIBTEST_JSON", "1")
        .env(SKIP_DIR_ENV, skip_dir.path());
    for (name, value) in &invocation.env {
        expression = expression.env(name, value);
    }

    // stdout is parsed; stderr (cargo, nextest's live reporter) goes straight to the terminal.
    let mut nextest = NextestTally::default();
    let mut counts = Counts::default();
    let status = stream_lines(expression, |line| match runner {
        Runner::Nextest => {
            if !nextest.record(line) && !line.trim_start().starts_with('{') {
                eprintln!("{line}");
            }
        }
        Runner::CargoTest => {
            // libtest's own progress and failure output is the run's log; show it as it comes.
            eprintln!("{line}");
            if let Some(summary) = parse_libtest_summary(line) {
                counts.add(summary);
            }
        }
    })?;
    if runner == Runner::Nextest {
        counts = nextest.finish();
    }
    let skipped = read_skip_records(skip_dir.path())?;
    let counts = count_skips(counts, skipped.len());
    Ok(Outcome {
        counts,
        skipped,
        exit_ok: status.success(),
        exit_description: status.to_string(),
    })
}

#[derive(Debug, Deserialize)]
struct NextestEvent {
    #[serde(rename = "type")]
    kind: String,
    event: String,
    #[serde(default)]
    name: String,
}

/// Counts tests from nextest's libtest-json lines: each finished test is one passed, failed
/// or skipped test. A test that was started but never reported finished is counted skipped:
/// nextest reports an ignored test that way when a name filter selects it.
#[derive(Debug, Default)]
struct NextestTally {
    counts: Counts,
    unfinished: HashSet<String>,
}

impl NextestTally {
    /// Takes one stdout line; `false` when it is not a nextest JSON event.
    fn record(&mut self, line: &str) -> bool {
        let Ok(event) = serde_json::from_str::<NextestEvent>(line) else {
            return false;
        };
        if event.kind != "test" {
            return true;
        }
        if event.event == "started" {
            self.unfinished.insert(event.name);
            return true;
        }
        self.unfinished.remove(&event.name);
        match event.event.as_str() {
            "ok" => self.counts.passed += 1,
            "ignored" => self.counts.skipped += 1,
            // `failed`, `timeout` and anything a newer nextest adds is not a pass.
            _ => self.counts.failed += 1,
        }
        true
    }

    fn finish(self) -> Counts {
        Counts {
            skipped: self.counts.skipped + self.unfinished.len() as u64,
            ..self.counts
        }
    }
}

/// `test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured; 5 filtered out; ...`
fn parse_libtest_summary(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, numbers) = rest.split_once(". ")?;
    let mut counts = Counts::default();
    for part in numbers.split(';') {
        let mut words = part.split_whitespace();
        let (Some(count), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        match what {
            "passed" => counts.passed = count,
            "failed" => counts.failed = count,
            "ignored" => counts.skipped = count,
            _ => {}
        }
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nextest_events_count_finished_tests_and_unfinished_ones_as_skipped() {
        let lines = [
            r#"{"type":"suite","event":"started","test_count":3}"#,
            r#"{"type":"test","event":"started","name":"a::a$t::x"}"#,
            r#"{"type":"test","event":"started","name":"a::a$t::filtered_ignored"}"#,
            r#"{"type":"test","event":"ok","name":"a::a$t::x","exec_time":0.1}"#,
            r#"{"type":"test","event":"ignored","name":"a::a$t::y"}"#,
            r#"{"type":"test","event":"failed","name":"a::a$t::z","stdout":"boom"}"#,
            r#"{"type":"test","event":"timeout","name":"a::a$t::w"}"#,
            r#"{"type":"suite","event":"failed","passed":1,"failed":2,"ignored":1}"#,
        ];
        let mut tally = NextestTally::default();
        for line in lines {
            assert!(tally.record(line), "{line}");
        }
        assert!(!tally.record("   Compiling a v0.1.0"));
        assert_eq!(
            tally.finish(),
            Counts {
                passed: 1,
                failed: 2,
                skipped: 2
            }
        );
    }

    #[test]
    fn tests_that_reported_a_skip_count_as_skipped_not_passed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1"), "b::needs_netns\tno `ip netns` here\n").unwrap();
        std::fs::write(
            dir.path().join("2"),
            "a::needs_systemd\tno systemd-analyze\n",
        )
        .unwrap();
        let skipped = read_skip_records(dir.path()).unwrap();
        assert_eq!(
            skipped,
            vec![
                SkippedTest {
                    name: "a::needs_systemd".into(),
                    reason: "no systemd-analyze".into()
                },
                SkippedTest {
                    name: "b::needs_netns".into(),
                    reason: "no `ip netns` here".into()
                },
            ]
        );
        let counts = Counts {
            passed: 5,
            failed: 1,
            skipped: 1,
        };
        assert_eq!(
            count_skips(counts, skipped.len()),
            Counts {
                passed: 3,
                failed: 1,
                skipped: 3
            }
        );
    }

    #[test]
    fn libtest_summary_lines_are_parsed_and_others_ignored() {
        let line = "test result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 5 filtered out; finished in 0.01s";
        assert_eq!(
            parse_libtest_summary(line),
            Some(Counts {
                passed: 3,
                failed: 1,
                skipped: 2
            })
        );
        assert_eq!(
            parse_libtest_summary("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"),
            Some(Counts::default())
        );
        assert_eq!(parse_libtest_summary("test foo ... ok"), None);
    }
}
