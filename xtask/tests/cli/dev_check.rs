//! `cargo xtask dev check` and `dev setup` on a machine that already has everything: the
//! project's own configuration is validated, and a second setup is a quick no-op.

use std::process::Command;

fn xtask(config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .env("LLORCH_CONFIG_PATH", config)
        .env_remove("LLORCH_CATALOG");
    command
}

#[test]
fn check_passes_on_the_repository_catalog_and_fails_on_an_unreachable_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "version = 1\n").unwrap();
    let output = xtask(&config)
        .args(["--json", "dev", "check"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report:#}");

    // Port 1 on loopback refuses connections: the host profile's check must fail, naming it.
    std::fs::write(
        &config,
        "version = 1\n[remote]\nssh_timeout = 2\n[remote.hosts.nowhere]\nhost = \"127.0.0.1\"\nport = 1\n",
    )
    .unwrap();
    let output = xtask(&config)
        .args(["--json", "dev", "check"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ssh = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "ssh nowhere")
        .unwrap();
    assert_eq!(ssh["ok"], false, "{ssh:#}");
    assert!(
        ssh["fix"]
            .as_str()
            .unwrap()
            .contains("remote check nowhere"),
        "{ssh:#}"
    );
}

#[test]
fn check_fails_on_a_broken_catalog_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let catalog = dir.path().join("catalog.toml");
    std::fs::write(&catalog, "[[models]]\nid = \"x\"\nname = \n").unwrap();
    std::fs::write(
        &config,
        format!(
            "version = 1\n[models]\ncatalog = \"{}\"\n",
            catalog.display()
        ),
    )
    .unwrap();
    let output = xtask(&config)
        .args(["--no-color", "dev", "check"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("FAIL catalog") && stdout.contains("line 3"),
        "{stdout}"
    );
}

#[test]
fn a_malformed_config_file_is_reported_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "version = 1\n[general]\ncolour = \"never\"\n").unwrap();
    let output = xtask(&config).args(["config", "show"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("column"),
        "{stderr}"
    );
    assert!(
        stderr.contains("colour"),
        "the unknown key is named: {stderr}"
    );
}

#[test]
fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "version = 1\n[general]\nmodel_base_dir = \"/from/file\"\n",
    )
    .unwrap();
    let show = |extra: &[&str], env: Option<&str>| -> serde_json::Value {
        let mut command = xtask(&config);
        command.env_remove("LLORCH_MODEL_BASE_DIR");
        if let Some(env) = env {
            command.env("LLORCH_MODEL_BASE_DIR", env);
        }
        let output = command
            .args(extra)
            .args(["--json", "config", "show"])
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout).unwrap()
    };
    assert_eq!(show(&[], None)["model_base_dir"], "/from/file");
    assert_eq!(show(&[], Some("/from/env"))["model_base_dir"], "/from/env");
    assert_eq!(
        show(&["--model-base-dir", "/from/flag"], Some("/from/env"))["model_base_dir"],
        "/from/flag"
    );
    assert_eq!(
        show(&["--model-base-dir", "/from/flag"], Some("/from/env"))["origins"]["model_base_dir"],
        "flag"
    );
}
