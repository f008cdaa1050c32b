//! `cargo xtask remote hosts add|list|remove`: profiles round-trip through the user's config
//! file without disturbing anything else in it, and `add` checks connectivity.

use crate::support;

use support::Sshd;

const USER_CONFIG: &str = "\
# my llama-orch settings; this comment must survive
version = 1

[general]
log_level = \"debug\"   # so must this one

[remote]
ssh_timeout = 5

[orchestrator]
url = \"http://10.0.0.2:8080\"
";

#[test]
fn add_list_remove_round_trip_keeps_the_rest_of_the_file() {
    let sshd = Sshd::start();
    std::fs::write(&sshd.local.config_path, USER_CONFIG).unwrap();
    let target = format!("{}@127.0.0.1:{}", sshd.user, sshd.port);
    let key = sshd.client_key.display().to_string();
    let outcome = sshd
        .xtask()
        .run([
            "--json",
            "remote",
            "hosts",
            "add",
            "box",
            &target,
            "--identity",
            &key,
            "--repo-path",
            "~/llama-orch",
        ])
        .success();
    assert_eq!(outcome.json()["reachable"], true, "{outcome}");
    assert!(!outcome.stderr.contains("warning"), "{outcome}");

    let text = std::fs::read_to_string(&sshd.local.config_path).unwrap();
    assert!(
        text.starts_with("# my llama-orch settings; this comment must survive\n"),
        "{text}"
    );
    assert!(
        text.contains("log_level = \"debug\"   # so must this one"),
        "{text}"
    );
    assert!(text.contains("[remote.hosts.box]"), "{text}");

    let listed = sshd
        .xtask()
        .run(["--json", "remote", "hosts", "list"])
        .success()
        .json();
    assert_eq!(listed[0]["name"], "box");
    assert_eq!(listed[0]["address"], target.as_str());
    assert_eq!(listed[0]["repo_path"], "~/llama-orch");
    assert_eq!(listed[0]["identity_file"], key.as_str());

    // The new profile is usable at once.
    let echoed = sshd
        .xtask()
        .run(["remote", "exec", "box", "--", "echo", "hi"])
        .success();
    assert_eq!(echoed.stdout, "hi\n");

    let duplicate = sshd
        .xtask()
        .run(["remote", "hosts", "add", "box", &target, "--no-check"]);
    assert_eq!(duplicate.code(), 1, "{duplicate}");
    assert!(duplicate.stderr.contains("--force"), "{duplicate}");

    sshd.xtask()
        .run(["remote", "hosts", "remove", "box"])
        .success();
    assert_eq!(
        std::fs::read_to_string(&sshd.local.config_path).unwrap(),
        USER_CONFIG
    );
    let listed = sshd
        .xtask()
        .run(["--json", "remote", "hosts", "list"])
        .success()
        .json();
    assert_eq!(listed, serde_json::json!([]));

    let missing = sshd.xtask().run(["remote", "hosts", "remove", "box"]);
    assert_eq!(missing.code(), 1, "{missing}");
    assert!(
        missing.stderr.contains("no host profile named `box`"),
        "{missing}"
    );
}

#[test]
fn add_creates_the_config_file_and_warns_but_keeps_an_unreachable_host() {
    let sshd = Sshd::start();
    assert!(!sshd.local.config_path.exists());
    let target = format!("127.0.0.1:{}", support::free_port());
    let outcome = sshd
        .xtask()
        .run(["remote", "hosts", "add", "later", &target])
        .success();
    assert!(
        outcome
            .stderr
            .contains("warning: profile saved, but the host is not reachable now"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("connection refused"), "{outcome}");
    let text = std::fs::read_to_string(&sshd.local.config_path).unwrap();
    assert!(text.starts_with("version = 1\n"), "{text}");
    assert!(text.contains("[remote.hosts.later]"), "{text}");
}

#[test]
fn add_rejects_bad_names_and_targets() {
    let sshd = Sshd::start();
    for (name, target, expected) in [
        ("has space", "me@box", "not a valid host profile name"),
        ("a/b", "me@box", "not a valid host profile name"),
        ("ok", "me@box:notaport", "not a valid USER@HOST[:PORT]"),
        ("ok", "-oProxyCommand=touch", "not a valid USER@HOST[:PORT]"),
    ] {
        let outcome =
            sshd.xtask()
                .run(["remote", "hosts", "add", "--no-check", "--", name, target]);
        assert_ne!(outcome.code(), 0, "{outcome}");
        assert!(
            outcome.stderr.contains(expected),
            "{name} {target}: {outcome}"
        );
    }
    assert!(!sshd.local.config_path.exists(), "nothing written");
}
