//! `cargo xtask remote exec` against a real sshd on loopback: streams, exit codes, quoting of
//! hostile arguments, and ssh aliases used as hosts.

use crate::support;

use support::Sshd;

#[test]
fn exec_forwards_stdin_stdout_stderr_and_the_exit_code() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let outcome = sshd.xtask().stdin(b"line one\nline two\n").run([
        "remote",
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "cat; echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(outcome.code(), 3, "{outcome}");
    assert_eq!(outcome.stdout, "line one\nline two\n", "{outcome}");
    assert_eq!(outcome.stderr, "to-stderr\n", "{outcome}");
}

#[test]
fn exec_succeeds_with_zero_and_passes_large_output_intact() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let input: String = (0..20_000).map(|n| format!("{n}\n")).collect();
    let outcome = sshd
        .xtask()
        .stdin(input.as_bytes())
        .run(["remote", "exec", "box", "--", "cat"])
        .success();
    assert_eq!(outcome.stdout, input);
}

#[test]
fn hostile_arguments_arrive_as_single_words() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let canary = sshd.dir.path().join("pwned");
    let canary_text = canary.display().to_string();
    let hostile = [
        format!("; touch {canary_text}"),
        format!("$(touch {canary_text})"),
        format!("`touch {canary_text}`"),
        format!("' ; touch {canary_text}; '"),
        format!("\" ; touch {canary_text}; \""),
        format!("a\ntouch {canary_text}"),
        format!("&& touch {canary_text} || true"),
        "; rm -rf /nonexistent-llorch-test-dir".to_owned(),
        "*".to_owned(),
        "$HOME".to_owned(),
        "".to_owned(),
        "--help".to_owned(),
        "tab\there".to_owned(),
        "back\\slash".to_owned(),
        "ünïcödé €".to_owned(),
    ];
    let mut args = vec![
        "remote".to_owned(),
        "exec".into(),
        "box".into(),
        "--".into(),
    ];
    args.extend(["printf".into(), "%s\\0".into()]);
    args.extend(hostile.iter().cloned());
    let outcome = sshd.xtask().run(&args).success();
    let received: Vec<&str> = outcome.stdout.split_terminator('\0').collect();
    assert_eq!(
        received,
        hostile.iter().map(String::as_str).collect::<Vec<_>>(),
        "{outcome}"
    );
    assert!(
        !canary.exists(),
        "an argument ran a command on the remote side"
    );
}

#[test]
fn an_ssh_config_alias_works_as_a_host_without_a_profile() {
    let sshd = Sshd::start();
    let outcome = sshd
        .xtask()
        .run(["remote", "exec", &sshd.alias, "--", "echo", "via alias"])
        .success();
    assert_eq!(outcome.stdout, "via alias\n");
}

#[test]
fn remote_check_reports_each_profile() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let outcome = sshd.xtask().run(["--json", "remote", "check"]).success();
    let checks = outcome.json();
    assert_eq!(checks[0]["host"], "box", "{outcome}");
    assert_eq!(checks[0]["reachable"], true, "{outcome}");
}
