//! `--remote HOST`: the same xtask command runs in the host's checkout over SSH, its output
//! streams back and its exit code is kept. The "remote" checkout is this one, reached through
//! the private sshd, whose sessions carry their own config, model and run directories.

use crate::support;

use support::Sshd;

#[test]
fn a_models_command_runs_on_the_remote_side() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let remote = sshd
        .xtask()
        .run(["--remote", "box", "--json", "models", "catalog"])
        .success();
    // Same checkout, same catalog: the remote run prints what a local one does, except that
    // it names the remote side's model directory (and user catalog directory), which proves
    // where it ran.
    let local = sshd.xtask().run(["--json", "models", "catalog"]).success();
    let remote_dir = sshd.remote.model_base_dir.display().to_string();
    let local_dir = sshd.local.model_base_dir.display().to_string();
    assert!(remote.stdout.contains(&remote_dir), "{remote}");
    assert!(!remote.stdout.contains(&local_dir), "{remote}");
    let catalog_dir_of = |outcome: &support::Outcome| {
        outcome.json()["catalog_dir"]
            .as_str()
            .unwrap_or_else(|| panic!("{outcome}"))
            .to_owned()
    };
    let (remote_catalog_dir, local_catalog_dir) = (catalog_dir_of(&remote), catalog_dir_of(&local));
    assert_ne!(remote_catalog_dir, local_catalog_dir);
    let remote_as_local: serde_json::Value = serde_json::from_str(
        &remote
            .stdout
            .replace(&remote_dir, &local_dir)
            .replace(&remote_catalog_dir, &local_catalog_dir),
    )
    .unwrap();
    assert_eq!(remote_as_local, local.json());
}

#[test]
fn remote_may_come_after_the_subcommand_and_sees_the_remote_environment() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let outcome = sshd
        .xtask()
        .run(["pool", "status", "--json", "--remote", "box"])
        .success();
    let status = outcome.json();
    assert_eq!(
        status["model_base_dir"],
        sshd.remote.model_base_dir.display().to_string(),
        "{outcome}"
    );
}

#[test]
fn the_remote_exit_code_and_error_come_back() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let outcome = sshd
        .xtask()
        .run(["--remote=box", "pool", "worker", "stop", "no-such-worker"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome
            .stderr
            .contains("there is no worker `no-such-worker`"),
        "{outcome}"
    );
    assert!(
        outcome
            .stderr
            .contains(&sshd.remote.run_dir.display().to_string()),
        "the error comes from the remote side: {outcome}"
    );
}

#[test]
fn remote_is_refused_for_domains_that_do_not_forward() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let outcome = sshd.xtask().run(["--remote", "box", "config", "show"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome
            .stderr
            .contains("`--remote` does not apply to `cargo xtask config`"),
        "{outcome}"
    );
}

#[test]
fn a_host_without_repo_path_gets_a_hint() {
    let sshd = Sshd::start();
    let outcome = sshd
        .xtask()
        .run(["--remote", &sshd.alias, "pool", "status"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome
            .stderr
            .contains("the repository path there is unknown"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("--repo-path"), "{outcome}");
}
