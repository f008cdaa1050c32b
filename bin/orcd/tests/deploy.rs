//! The systemd units in `deploy/systemd/` stay true to the binaries: every `LLORCH_*` variable
//! the orcd unit sets is one orcd reads, both units keep their sandbox and hand tokens over with
//! `LoadCredential=`, and `systemd-analyze verify` accepts them where systemd is installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;

fn unit(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    (path, text)
}

/// `NAME` of every `Environment=NAME=value` line.
fn environment_names(unit: &str) -> BTreeSet<String> {
    unit.lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn the_orcd_unit_sets_only_variables_orcd_reads() {
    let (_, text) = unit("orcd.service");
    let known: BTreeSet<String> = orcd::Args::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect();
    let set = environment_names(&text);
    assert!(
        set.contains("LLORCH_API_TOKEN_FILE") && set.contains("LLORCH_EU_AUDIT"),
        "{set:?}"
    );
    let unknown: Vec<&String> = set.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "orcd.service sets variables orcd ignores: {unknown:?}"
    );
}

#[test]
fn both_units_are_sandboxed_and_get_tokens_as_credentials() {
    for name in ["orcd.service", "llorch-worker.service"] {
        let (_, text) = unit(name);
        for option in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "CapabilityBoundingSet=\n",
            "LoadCredential=worker.token:/etc/llorch/worker.token",
            "Environment=LLORCH_WORKER_TOKEN_FILE=%d/worker.token",
            "KillSignal=SIGTERM",
        ] {
            assert!(
                text.contains(option),
                "{name} lacks `{}`",
                option.trim_end()
            );
        }
        assert!(!text.contains("--insecure-no-auth"), "{name}");
    }
}

#[test]
fn systemd_accepts_the_units() {
    let Ok(analyze) = which_systemd_analyze() else {
        report_skipped(
            "deploy::systemd_accepts_the_units",
            "systemd-analyze is not installed (package systemd)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in ["orcd.service", "llorch-worker.service"] {
        let (_, text) = unit(name);
        // The binaries are not installed here; `verify` insists that ExecStart exists.
        let text = text
            .lines()
            .map(|line| match line {
                l if l.starts_with("ExecStart=") => {
                    format!("ExecStart={}", crate::support::orcd_binary().display())
                }
                l if l.starts_with("EnvironmentFile=") => l.replacen('=', "=-", 1),
                l => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = Command::new(&analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let complaints: Vec<&str> = stderr.lines().filter(|line| line.contains(name)).collect();
        assert!(
            output.status.success() && complaints.is_empty(),
            "{name}:\n{stderr}"
        );
    }
}

fn which_systemd_analyze() -> Result<PathBuf, ()> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("systemd-analyze"))
        .find(|path| path.is_file())
        .ok_or(())
}

/// Reports that `test` cannot run here: the reason on stderr and, under `cargo xtask test`, a
/// record in `LLORCH_TEST_SKIP_DIR` (name, tab, reason) so that the run counts it as skipped.
fn report_skipped(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(dir) = std::env::var_os("LLORCH_TEST_SKIP_DIR") {
        let record = Path::new(&dir).join(format!(
            "{}-{}",
            test.replace("::", "-"),
            std::process::id()
        ));
        std::fs::write(&record, format!("{test}\t{reason}\n")).unwrap_or_else(|error| {
            panic!("writing the skip record {}: {error}", record.display())
        });
    }
}
