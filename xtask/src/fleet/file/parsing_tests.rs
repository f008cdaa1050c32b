//! The fleet file's every check, each reported with the file, line, column and field; the
//! values a valid file gives; and where the fleet file is looked for.

use std::path::{Path, PathBuf};

use super::*;
use crate::flags::GlobalFlags;

fn profiles(name: &str) -> Option<String> {
    match name {
        "box-a" => Some("10.0.0.2".to_owned()),
        "box-6" => Some("fd00::6".to_owned()),
        _ => None,
    }
}

fn parse_text(text: &str) -> anyhow::Result<Fleet> {
    parse(text, Path::new("fleet.toml"), &profiles)
}

/// The whole error for `text`, cause chain included.
fn error_of(text: &str) -> String {
    format!("{:#}", parse_text(text).unwrap_err())
}

/// An orchestrator on 10.0.0.1 and `box-a` with the given worker lines (line 4 on).
fn box_a(workers: &str) -> String {
    format!("[orchestrator]\nurl = \"http://10.0.0.1:8080\"\n[hosts.box-a]\n{workers}")
}

const ONE_WORKER: &str = "[[hosts.box-a.workers]]\nmodel = \"gemma3-270m\"\n";

#[test]
fn a_toml_syntax_error_names_the_file_line_and_the_example() {
    let error = error_of("[orchestrator\nurl = 1\n");
    assert!(
        error.starts_with("reading the fleet file fleet.toml: "),
        "{error}"
    );
    assert!(error.contains("line 1"), "{error}");
    assert!(
        error.ends_with("hint: deploy/fleet.example.toml shows every key"),
        "{error}"
    );
}

#[test]
fn the_orchestrator_url_must_be_http_with_a_host() {
    for url in ["ftp://10.0.0.1", "10.0.0.1:8080", "http://"] {
        let text = box_a(ONE_WORKER).replace("http://10.0.0.1:8080", url);
        let error = error_of(&text);
        assert!(
            error.contains("fleet.toml:2:7: `orchestrator.url` must be an http:// or https:// URL such as http://10.0.0.1:8080"),
            "{url}: {error}"
        );
    }
}

#[test]
fn listen_must_be_an_address_and_port() {
    let text = box_a(ONE_WORKER).replace(
        "url = \"http://10.0.0.1:8080\"",
        "url = \"http://10.0.0.1:8080\"\nlisten = \"0.0.0.0\"",
    );
    let error = error_of(&text);
    assert!(
        error.contains(
            "fleet.toml:3:10: `orchestrator.listen` must be ADDRESS:PORT such as 0.0.0.0:8080"
        ),
        "{error}"
    );
    let good = text.replace("\"0.0.0.0\"", "\"0.0.0.0:8080\"");
    assert_eq!(
        parse_text(&good).unwrap().orchestrator.listen.as_deref(),
        Some("0.0.0.0:8080")
    );
}

#[test]
fn token_files_and_the_supervisor_are_passed_on() {
    let text = box_a(ONE_WORKER)
        .replace(
            "url = \"http://10.0.0.1:8080\"",
            "url = \"https://orcd.lan\"\napi_token_file = \"/etc/llorch/api\"\nworker_token_file = \"/etc/llorch/worker\"",
        )
        .replace("[hosts.box-a]\n", "[hosts.box-a]\nsupervisor = \"detached\"\n");
    let fleet = parse_text(&text).unwrap();
    assert_eq!(fleet.orchestrator.url, "https://orcd.lan");
    assert_eq!(
        fleet.orchestrator.api_token_file,
        Some(PathBuf::from("/etc/llorch/api"))
    );
    assert_eq!(
        fleet.orchestrator.worker_token_file,
        Some(PathBuf::from("/etc/llorch/worker"))
    );
    assert_eq!(fleet.hosts[0].supervisor, Supervisor::Detached);
    assert_eq!(fleet.path, PathBuf::from("fleet.toml"));
}

#[test]
fn an_unknown_supervisor_or_backend_names_the_field_path() {
    let text =
        box_a(ONE_WORKER).replace("[hosts.box-a]\n", "[hosts.box-a]\nsupervisor = \"cron\"\n");
    let error = error_of(&text);
    assert!(
        error.contains("fleet.toml:4:14: `hosts.box-a.supervisor` unknown variant `cron`"),
        "{error}"
    );
    let text = box_a(&format!("{ONE_WORKER}backend = \"tpu\"\n"));
    let error = error_of(&text);
    assert!(
        error.contains("`hosts.box-a.workers[0].backend` unknown variant `tpu`"),
        "{error}"
    );
}

#[test]
fn an_ipv6_host_is_bracketed_in_urls_and_bound_as_is() {
    let text = "[orchestrator]\nurl = \"http://[fd00::1]:8080\"\n[hosts.box-6]\n[[hosts.box-6.workers]]\nmodel = \"gemma3-270m\"\n";
    let worker = &parse_text(text).unwrap().hosts[0].workers[0];
    assert_eq!(worker.advertise_url, "http://[fd00::6]:9001");
    assert_eq!(worker.bind, "fd00::6".parse::<IpAddr>().unwrap());
    assert_eq!(worker.orchestrator_url, "http://[fd00::1]:8080");
    let bracketed = text.replace(
        "[hosts.box-6]\n",
        "[hosts.box-6]\nadvertise = \"[fd00::9]\"\n",
    );
    let worker = &parse_text(&bracketed).unwrap().hosts[0].workers[0];
    assert_eq!(worker.advertise_url, "http://[fd00::9]:9001");
    assert_eq!(worker.bind, "fd00::9".parse::<IpAddr>().unwrap());
}

#[test]
fn bind_must_be_an_ip_address() {
    let text = box_a(ONE_WORKER).replace("[hosts.box-a]\n", "[hosts.box-a]\nbind = \"0.0.0.0\"\n");
    assert_eq!(
        parse_text(&text).unwrap().hosts[0].workers[0].bind,
        "0.0.0.0".parse::<IpAddr>().unwrap()
    );
    let text = text.replace("\"0.0.0.0\"", "\"everywhere\"");
    let error = error_of(&text);
    assert!(
        error.contains("fleet.toml:4:8: `hosts.box-a.bind` must be an IP address such as 0.0.0.0"),
        "{error}"
    );
}

#[test]
fn loopback_orchestrators_let_local_workers_advertise_loopback() {
    for url in [
        "http://localhost:8080",
        "http://[::1]:8080",
        "http://127.0.0.2:8080",
    ] {
        let text = format!("[orchestrator]\nurl = \"{url}\"\n[hosts.local]\n[[hosts.local.workers]]\nmodel = \"gemma3-270m\"\n");
        let fleet = parse_text(&text).unwrap_or_else(|error| panic!("{url}: {error:#}"));
        assert_eq!(
            fleet.hosts[0].workers[0].advertise_url, "http://127.0.0.1:9001",
            "{url}"
        );
    }
}

#[test]
fn default_ports_skip_the_ports_other_workers_ask_for() {
    let text = box_a(
        "[[hosts.box-a.workers]]\nmodel = \"gemma3-270m\"\n\
         [[hosts.box-a.workers]]\nmodel = \"qwen2.5-coder-0.5b\"\nport = 9001\n\
         [[hosts.box-a.workers]]\nmodel = \"gemma3-270m\"\n",
    );
    let workers = &parse_text(&text).unwrap().hosts[0].workers;
    let ports: Vec<u16> = workers.iter().map(|worker| worker.port).collect();
    assert_eq!(ports, [9002, 9001, 9003]);
    // Two workers of one model on one host are told apart by their ports.
    assert_eq!(workers[0].name, "box-a-gemma3-270m-9002");
    assert_eq!(workers[2].name, "box-a-gemma3-270m-9003");
    assert_eq!(workers[1].name, "box-a-qwen2.5-coder-0.5b");
}

/// Asserts that `box-a`'s one worker with `line` added (line 6) is refused with `expected`.
fn assert_worker_refused(line: &str, expected: &str) {
    let error = error_of(&box_a(&format!("{ONE_WORKER}{line}\n")));
    assert!(error.contains(expected), "{error}");
}

#[test]
fn port_zero_is_refused() {
    assert_worker_refused(
        "port = 0",
        "fleet.toml:6:8: `hosts.box-a.workers[0].port` must be a port from 1 to 65535",
    );
}

#[test]
fn a_worker_name_must_be_a_plain_name() {
    assert_worker_refused(
        "name = \"my worker\"",
        "fleet.toml:6:8: `hosts.box-a.workers[0].name` `my worker` is not a valid worker name",
    );
}

#[test]
fn a_context_under_64_tokens_is_refused() {
    assert_worker_refused(
        "ctx_size = 32",
        "fleet.toml:6:12: `hosts.box-a.workers[0].ctx_size` must be at least 64 tokens",
    );
    let fleet = parse_text(&box_a(&format!("{ONE_WORKER}ctx_size = 64\nslots = 1\n"))).unwrap();
    let worker = &fleet.hosts[0].workers[0];
    assert_eq!(
        (worker.launch.ctx_size, worker.launch.slots),
        (Some(64), Some(1))
    );
}

#[test]
fn a_fleet_without_hosts_says_how_to_add_one() {
    let error = error_of("[orchestrator]\nurl = \"http://10.0.0.1:8080\"\n");
    assert!(
        error.ends_with("fleet.toml: the fleet has no hosts\nhint: add a [hosts.NAME] table (its pool manager loads models on demand) and, for pinned workers, [[hosts.NAME.workers]]"),
        "{error}"
    );
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let error = error_of(&box_a(&format!(
        "{ONE_WORKER}port = 0\nslots = 0\nctx_size = 1\n"
    )));
    assert!(
        error.starts_with("the fleet file fleet.toml is not valid:\n"),
        "{error}"
    );
    for field in ["port", "slots", "ctx_size"] {
        assert!(
            error.contains(&format!("`hosts.box-a.workers[0].{field}`")),
            "{field}: {error}"
        );
    }
}

/// Settings whose config file (in `dir`) has the profile `box-a` at `box-a.lan`.
fn settings_with_profile(dir: &Path, extra: &str) -> Settings {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!("version = 1\n[remote.hosts.box-a]\nhost = \"box-a.lan\"\n{extra}"),
    )
    .unwrap();
    let flags = GlobalFlags {
        config: Some(config),
        ..Default::default()
    };
    Settings::resolve(&flags, &|_| None).unwrap()
}

#[test]
fn a_fleet_file_on_disk_uses_the_config_files_host_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_with_profile(dir.path(), "");
    let path = dir.path().join("fleet.toml");
    std::fs::write(&path, box_a(ONE_WORKER)).unwrap();
    let fleet = load(&path, &settings).unwrap();
    assert_eq!(fleet.path, path);
    assert_eq!(
        fleet.hosts[0].workers[0].advertise_url,
        "http://box-a.lan:9001"
    );
}

#[test]
fn a_missing_fleet_file_says_how_to_name_or_write_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_with_profile(dir.path(), "");
    let path = dir.path().join("fleet.toml");
    let error = format!("{:#}", load(&path, &settings).unwrap_err());
    assert!(
        error.starts_with(&format!("reading the fleet file {}\nhint: write one (deploy/fleet.example.toml shows every key) or name it with --fleet FILE or LLORCH_FLEET", path.display())),
        "{error}"
    );
}

#[test]
fn the_fleet_file_is_the_flag_then_the_environment_then_the_config_then_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let beside = settings_with_profile(dir.path(), "");
    let configured =
        settings_with_profile(dir.path(), "[fleet]\nfile = \"/etc/llorch/fleet.toml\"\n");
    assert_eq!(
        fleet_path(Some("/flag/fleet.toml".into()), &configured),
        PathBuf::from("/flag/fleet.toml")
    );
    // The test process's own environment decides which of the rest this run can see.
    match crate::config::process_env(FLEET_ENV) {
        Some(from_env) => {
            assert_eq!(fleet_path(None, &configured), PathBuf::from(from_env));
        }
        None => {
            assert_eq!(
                fleet_path(None, &configured),
                PathBuf::from("/etc/llorch/fleet.toml")
            );
            assert_eq!(fleet_path(None, &beside), dir.path().join("fleet.toml"));
        }
    }
}

#[test]
fn positions_count_lines_and_columns_from_one() {
    assert_eq!(line_column("ab\ncd", 0), (1, 1));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("ab\ncd", 99), (2, 3), "past the end: the end");
}

#[test]
fn host_names_and_addresses_are_told_from_other_text() {
    for address in ["10.0.0.9", "fd00::1", "[fd00::1]", "gpu-box.lan", "a"] {
        assert!(is_address(address), "{address}");
    }
    let long_label = "a".repeat(64);
    let long_name = ["a"; 128].join(".");
    for other in [
        "",
        "-box",
        "box-",
        "a..b",
        "a b",
        "a_b",
        &long_label,
        &long_name,
    ] {
        assert!(!is_address(other), "{other:?}");
    }
}
