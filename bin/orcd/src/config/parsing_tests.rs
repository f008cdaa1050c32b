//! The files orcd's flags name (model policies, `--config` aliases) reaching the settings, the
//! errors that name them, and where the EU audit log goes by default.

use std::path::Path;

use super::*;

fn settings_of(args: &[&str]) -> anyhow::Result<Settings> {
    Args::try_parse_from(std::iter::once("orcd").chain(args.iter().copied()))
        .unwrap()
        .settings()
}

/// The whole error of orcd started with `args`, cause chain included.
fn error_of(args: &[&str]) -> String {
    format!("{:#}", settings_of(args).unwrap_err())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn model_policies_and_the_load_timeout_reach_the_pool_settings() {
    let dir = tempfile::tempdir().unwrap();
    let policies = write(
        dir.path(),
        "models.toml",
        "[models.\"gemma3-270m\"]\nslots = 2\nmin_replicas = 1\n",
    );
    let settings = settings_of(&[
        "--model-policies",
        &policies,
        "--load-timeout-secs",
        "9",
        "--heartbeat-timeout-secs",
        "4",
    ])
    .unwrap();
    let gemma = settings.pools.policies.of("gemma3-270m");
    assert_eq!((gemma.slots, gemma.min_replicas), (2, 1));
    assert_eq!(settings.pools.load_timeout, Duration::from_secs(9));
    assert_eq!(
        settings.pools.host_timeout,
        Duration::from_secs(4),
        "pool managers are lost as late as workers"
    );
}

#[test]
fn a_missing_or_broken_policy_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml").display().to_string();
    let error = error_of(&["--model-policies", &missing]);
    assert!(
        error.starts_with(&format!("reading the model policies {missing}")),
        "{error}"
    );
    let broken = write(
        dir.path(),
        "models.toml",
        "[models.\"gemma3-270m\"]\nslot = 2\n",
    );
    let error = error_of(&["--model-policies", &broken]);
    assert!(
        error.starts_with(&format!("in the model policies {broken}")),
        "{error}"
    );
    assert!(error.contains("slot"), "{error}");
}

#[test]
fn the_config_file_gives_the_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "orcd.toml",
        "[aliases]\n\"fast\" = \"gemma3-270m\"\n",
    );
    let settings = settings_of(&["--config", &config]).unwrap();
    assert_eq!(settings.aliases.resolve("fast"), "gemma3-270m");
    assert_eq!(settings.aliases.resolve("other"), "other");
    let chained = write(
        dir.path(),
        "chained.toml",
        "[aliases]\n\"fast\" = \"quick\"\n\"quick\" = \"gemma3-270m\"\n",
    );
    let error = error_of(&["--config", &chained]);
    assert!(
        error.starts_with(&format!("in the `[aliases]` of {chained}")),
        "{error}"
    );
    assert!(error.contains("itself an alias"), "{error}");
}

#[test]
fn the_eu_audit_log_goes_to_systemds_state_directory_first() {
    assert_eq!(
        audit_path_in(Some("/var/lib/orcd".into())),
        PathBuf::from("/var/lib/orcd/audit.jsonl")
    );
    assert_eq!(
        audit_path_in(Some("/var/lib/orcd:/var/lib/other".into())),
        PathBuf::from("/var/lib/orcd/audit.jsonl"),
        "systemd lists several directories separated by `:`; the first is orcd's"
    );
    let xdg = audit_path_in(None);
    assert!(xdg.ends_with("llorch/audit.jsonl"), "{}", xdg.display());
}

#[test]
fn an_unreadable_token_file_stops_orcd_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let worker = write(
        dir.path(),
        "worker.token",
        "worker-token-0123456789abcdef\n",
    );
    std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o600)).unwrap();
    let missing = dir.path().join("api.token").display().to_string();
    let error = error_of(&["--api-token-file", &missing, "--worker-token-file", &worker]);
    assert!(error.contains(&missing), "{error}");
    let api = write(dir.path(), "api.token", "client-token-0123456789abcdef\n");
    std::fs::set_permissions(&api, std::fs::Permissions::from_mode(0o600)).unwrap();
    let settings =
        settings_of(&["--api-token-file", &api, "--worker-token-file", &worker]).unwrap();
    assert_ne!(settings.auth, AuthConfig::disabled(), "tokens turn auth on");
}
