//! `cargo xtask up` and `down` with the real orcd, worker and default model, run the way the
//! README suggests for a client: `LLORCH_API_TOKEN_FILE` exported. The daemons `up` starts get
//! an explicit environment, so the client's variables never reach them.
//!
//! Needs the release `orcd` and `llorch-worker` (`LLORCH_BIN_DIR`, set by `cargo xtask test`,
//! else target/release) and the default model (`cargo xtask models download`).

use crate::support;

use std::{os::unix::fs::PermissionsExt, path::PathBuf};

use support::http_status;

/// Kills what a failed run left in its run directory.
struct RunDirGuard(PathBuf);

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        support::kill_recorded_daemons(&self.0);
    }
}

fn release_binaries() -> PathBuf {
    let dir = std::env::var_os("LLORCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo_root().join("target/release"));
    for name in ["orcd", "llorch-worker"] {
        assert!(
            dir.join(name).is_file(),
            "{} is missing: build it with `cargo xtask build all` (or point LLORCH_BIN_DIR at the release binaries)",
            dir.join(name).display()
        );
    }
    dir
}

#[test]
fn up_with_the_clients_token_file_exported_starts_the_stack_and_down_stops_it() {
    let bin_dir = release_binaries();
    let model_base_dir = std::env::var_os("LLORCH_MODEL_BASE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(llorch_catalog::default_model_base_dir);
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let _guard = RunDirGuard(run_dir.clone());
    // What a client of a token-protected orcd exports, per the README.
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, "client-token-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("http://127.0.0.1:{}", support::free_port());
    let xtask = || {
        let mut xtask = support::xtask();
        xtask
            .env("LLORCH_CONFIG_PATH", dir.path().join("config.toml"))
            .env("LLORCH_RUN_DIR", &run_dir)
            .env("LLORCH_MODEL_BASE_DIR", &model_base_dir)
            .env("LLORCH_ORCHESTRATOR_URL", &url)
            .env("LLORCH_API_TOKEN_FILE", &token_file);
        xtask
    };

    let up = xtask()
        .run([
            "--json",
            "up",
            "--yes",
            "--max-tokens",
            "8",
            "--slots",
            "1",
            "--bin-dir",
            bin_dir.to_str().unwrap(),
        ])
        .success();
    let answer = up.json();
    assert_eq!(answer["stats"]["generated_tokens"], 8, "{up}");
    assert!(
        !answer["text"].as_str().unwrap_or_default().is_empty(),
        "{up}"
    );
    assert_eq!(http_status(&format!("{url}/health")), Some(200));

    let down = xtask().run(["--json", "down"]).success().json();
    let stopped: Vec<&str> = down["stopped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|daemon| daemon["kind"].as_str().unwrap())
        .collect();
    assert_eq!(stopped, ["worker", "orcd"], "{down}");
    assert_eq!(http_status(&format!("{url}/health")), None);
}
