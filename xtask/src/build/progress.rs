//! What a long cargo build tells the operator while it runs: crates compiled so far, the ones
//! compiling now and for how long, the elapsed time. On a terminal it is the spinner's message;
//! elsewhere (a pipe, an SSH session, `fleet up`'s hosts) one status line when the first crate
//! starts and then one every [`PLAIN_REPORT_INTERVAL`], also while cargo itself prints nothing
//! (llama.cpp's CMake build is minutes of silence).
//!
//! Also why a build rebuilds what was built: cargo unifies dependency features over the packages
//! one invocation builds, so `build orcd` after `build all` (or the other way round) recompiles
//! shared crates. The last invocation's selection is kept beside the artifacts and a different
//! one is named before the build starts.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// How often a build reports without a terminal.
pub const PLAIN_REPORT_INTERVAL: Duration = Duration::from_secs(20);

/// A build's progress as cargo reports it.
#[derive(Debug)]
pub struct BuildProgress {
    label: String,
    started: Instant,
    compiled: usize,
    fresh: usize,
    /// Crates cargo announced (`Compiling NAME vX`) that have no artifact yet, with since when.
    compiling: Vec<(String, Instant)>,
    last_report: Option<Instant>,
}

impl BuildProgress {
    pub fn new(label: impl Into<String>, now: Instant) -> BuildProgress {
        BuildProgress {
            label: label.into(),
            started: now,
            compiled: 0,
            fresh: 0,
            compiling: Vec::new(),
            last_report: None,
        }
    }

    /// Takes one of cargo's human status lines; true when it was one (and is counted here
    /// instead of printed).
    pub fn status_line(&mut self, line: &str, now: Instant) -> bool {
        let Some(rest) = line.trim_start().strip_prefix("Compiling ") else {
            return false;
        };
        let name = rest.split_whitespace().next().unwrap_or(rest).to_owned();
        self.compiling.push((name, now));
        true
    }

    /// A `compiler-artifact` message: one crate (target) done.
    pub fn artifact(&mut self, name: &str, fresh: bool) {
        if fresh {
            self.fresh += 1;
            return;
        }
        self.compiled += 1;
        // Target names use `_` where package names use `-` (llama_cpp_sys_2, llama-cpp-sys-2).
        let same = |package: &str| package.replace('-', "_") == name.replace('-', "_");
        if let Some(index) = self.compiling.iter().position(|(package, _)| same(package)) {
            self.compiling.remove(index);
        }
    }

    pub fn compiled(&self) -> usize {
        self.compiled
    }

    pub fn fresh(&self) -> usize {
        self.fresh
    }

    /// `building orcd (release): 57 crates compiled, 3 up to date, 2m10s; compiling
    /// llama-cpp-sys-2 (1m45s)`.
    pub fn describe(&self, now: Instant) -> String {
        let mut line = format!(
            "{}: {} crates compiled, {} up to date, {}",
            self.label,
            self.compiled,
            self.fresh,
            clock(now.saturating_duration_since(self.started))
        );
        if !self.compiling.is_empty() {
            let names: Vec<String> = self
                .compiling
                .iter()
                .map(|(name, since)| {
                    format!("{name} ({})", clock(now.saturating_duration_since(*since)))
                })
                .collect();
            line.push_str("; compiling ");
            line.push_str(&names.join(", "));
        }
        line
    }

    /// The line to print now without a terminal, if one is due: when the first crate
    /// starts, then every `interval`.
    pub fn due(&mut self, now: Instant, interval: Duration) -> Option<String> {
        let due = match self.last_report {
            None => !self.compiling.is_empty() || self.compiled > 0,
            Some(last) => now.saturating_duration_since(last) >= interval,
        };
        if !due {
            return None;
        }
        self.last_report = Some(now);
        Some(self.describe(now))
    }
}

fn clock(elapsed: Duration) -> String {
    crate::output::human_duration(elapsed.as_secs())
}

/// Where the last invocation of a target directory and profile is kept.
pub fn stamp_path(target_dir: &Path, profile: &str) -> PathBuf {
    target_dir.join(profile).join(".llorch-last-build")
}

/// Why this build may recompile what the last one built, when the selection differs.
pub fn rebuild_reason(last: Option<&str>, this: &str) -> Option<String> {
    let last = last?.trim();
    (last != this).then(|| {
        format!(
            "the last build in this target directory was `cargo build {last}`, this one is `cargo build {this}`: cargo selects dependency features per invocation, so crates both share are compiled again"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_build_still_reports_what_it_compiles_and_for_how_long() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut progress = BuildProgress::new("building llorch-worker (cpu, release)", start);
        assert_eq!(progress.due(at(0), PLAIN_REPORT_INTERVAL), None);
        assert!(progress.status_line("   Compiling serde v1.0.219", at(1)));
        assert!(!progress.status_line("warning: unused variable", at(1)));
        assert_eq!(
            progress.due(at(1), PLAIN_REPORT_INTERVAL).as_deref(),
            Some(
                "building llorch-worker (cpu, release): 0 crates compiled, 0 up to date, 1s; compiling serde (0s)"
            )
        );
        progress.artifact("serde", false);
        progress.artifact("libc", true);
        assert!(progress.status_line("   Compiling llama-cpp-sys-2 v0.1.160 (/x)", at(2)));
        // Cargo prints nothing for minutes; the report still comes every interval.
        assert_eq!(progress.due(at(10), PLAIN_REPORT_INTERVAL), None);
        assert_eq!(
            progress.due(at(200), PLAIN_REPORT_INTERVAL).as_deref(),
            Some(
                "building llorch-worker (cpu, release): 1 crates compiled, 1 up to date, 3m20s; compiling llama-cpp-sys-2 (3m18s)"
            )
        );
        progress.artifact("llama_cpp_sys_2", false);
        assert_eq!(
            progress.describe(at(201)),
            "building llorch-worker (cpu, release): 2 crates compiled, 1 up to date, 3m21s"
        );
        assert_eq!((progress.compiled(), progress.fresh()), (2, 1));
    }

    #[test]
    fn a_different_selection_is_named_as_the_reason_to_rebuild() {
        assert_eq!(rebuild_reason(None, "--release -p orcd"), None);
        assert_eq!(
            rebuild_reason(Some("--release -p orcd\n"), "--release -p orcd"),
            None
        );
        let reason =
            rebuild_reason(Some("--release --workspace --bins"), "--release -p orcd").unwrap();
        assert!(
            reason.contains("`cargo build --release --workspace --bins`"),
            "{reason}"
        );
        assert!(reason.contains("features"), "{reason}");
    }
}
