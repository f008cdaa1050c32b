//! Connection failures name the host, the cause and the fix: refused, timed out, unknown name,
//! refused key. The sshd harness provides the keys and the ssh config.

use crate::support;

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use support::Sshd;

/// A config with one profile `name` that connects to `port` with `key`.
fn write_profile(
    sshd: &Sshd,
    name: &str,
    host: &str,
    port: u16,
    key: &std::path::Path,
    timeout: u64,
) {
    let text = format!(
        "version = 1\n[remote]\nssh_timeout = {timeout}\n[remote.hosts.{name}]\nuser = \"{}\"\nhost = \"{host}\"\nport = {port}\nidentity_file = \"{}\"\nrepo_path = \"/tmp\"\n",
        sshd.user,
        key.display()
    );
    std::fs::write(&sshd.local.config_path, text).unwrap();
}

#[test]
fn connection_refused_names_host_cause_and_fix() {
    let sshd = Sshd::start();
    let closed_port = support::free_port();
    write_profile(
        &sshd,
        "down",
        "127.0.0.1",
        closed_port,
        &sshd.client_key,
        10,
    );
    let outcome = sshd.xtask().run(["remote", "exec", "down", "--", "true"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    let expected = format!(
        "connecting to `down` ({}@127.0.0.1:{closed_port}) over SSH: connection refused",
        sshd.user
    );
    assert!(outcome.stderr.contains(&expected), "{outcome}");
    assert!(
        outcome
            .stderr
            .contains("hint: nothing accepts SSH connections there"),
        "{outcome}"
    );
}

#[test]
fn a_silent_server_times_out_after_the_configured_seconds() {
    let sshd = Sshd::start();
    // Accepts TCP connections (the kernel completes the handshake) but never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    write_profile(&sshd, "silent", "127.0.0.1", port, &sshd.client_key, 1);
    let started = Instant::now();
    let outcome = sshd.xtask().run(["remote", "exec", "silent", "--", "true"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome.stderr.contains("connecting to `silent`"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("timed out after 1 s"), "{outcome}");
    assert!(outcome.stderr.contains("ssh_timeout"), "{outcome}");
    drop(silent);
}

#[test]
fn an_unknown_host_name_is_reported_as_dns() {
    let sshd = Sshd::start();
    write_profile(
        &sshd,
        "typo",
        "no-such-host.invalid",
        22,
        &sshd.client_key,
        5,
    );
    let outcome = sshd.xtask().run(["remote", "exec", "typo", "--", "true"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome
            .stderr
            .contains("`no-such-host.invalid` does not resolve (DNS)"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("hint: "), "{outcome}");
}

#[test]
fn a_refused_key_is_reported_as_authentication() {
    let sshd = Sshd::start();
    write_profile(
        &sshd,
        "locked",
        "127.0.0.1",
        sshd.port,
        &sshd.stranger_key,
        10,
    );
    let outcome = sshd.xtask().run(["remote", "exec", "locked", "--", "true"]);
    assert_eq!(outcome.code(), 1, "{outcome}");
    assert!(
        outcome.stderr.contains("authentication failed"),
        "{outcome}"
    );
    assert!(outcome.stderr.contains("ssh-copy-id"), "{outcome}");
}

#[test]
fn a_remote_exit_status_of_255_is_passed_on_not_taken_for_a_connection_error() {
    let sshd = Sshd::start();
    sshd.write_local_config("box", 10);
    let outcome = sshd.xtask().run([
        "remote",
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo bye >&2; exit 255",
    ]);
    assert_eq!(outcome.code(), 255, "{outcome}");
    assert_eq!(outcome.stderr, "bye\n", "{outcome}");
}
