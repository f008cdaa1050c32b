//! The config file read from disk, every setting's precedence (flags > `LLORCH_*` > file >
//! defaults), and the `config` commands as a user runs them: each command runs in a child
//! process of this test binary (its output goes to the real stdout), set up as `main` does.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use clap::Parser as _;

use super::{tests::resolve, *};
use crate::{flags::Cli, output::Printer};

fn env_of(pairs: &[(&'static str, String)]) -> impl Fn(&str) -> Option<String> {
    let pairs = pairs.to_vec();
    move |name| {
        pairs
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    }
}

fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_file_named_by_the_environment_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "version = 1\n[general]\nlog_level = \"warn\"\n");
    let env = env_of(&[("LLORCH_CONFIG_PATH", path.display().to_string())]);
    let settings = Settings::resolve(&GlobalFlags::default(), &env).unwrap();
    assert_eq!(settings.config_path, path);
    assert!(settings.config_file_exists);
    assert_eq!(settings.origins["config_path"], Origin::Env);
    assert_eq!(settings.log_level, "warn");
    assert_eq!(settings.origins["log_level"], Origin::File);
}

#[test]
fn the_config_flag_beats_the_environment_and_a_missing_file_means_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = config_file(dir.path(), "version = 1\n[general]\nlog_level = \"warn\"\n");
    let flags = GlobalFlags {
        config: Some(dir.path().join("absent.toml")),
        ..Default::default()
    };
    let env = env_of(&[("LLORCH_CONFIG_PATH", from_env.display().to_string())]);
    let settings = Settings::resolve(&flags, &env).unwrap();
    assert_eq!(settings.config_path, dir.path().join("absent.toml"));
    assert_eq!(settings.origins["config_path"], Origin::Flag);
    assert!(!settings.config_file_exists);
    assert_eq!(settings.log_level, "info");
    assert_eq!(settings.origins["log_level"], Origin::Default);
    assert_eq!(settings.file.version, CONFIG_VERSION);
}

#[test]
fn without_flag_or_environment_the_config_lives_in_the_xdg_config_dir() {
    let path = default_config_path(&env_of(&[]));
    assert!(path.ends_with("llorch/config.toml"), "{}", path.display());
    let settings = Settings::resolve(
        &GlobalFlags::default(),
        &env_of(&[(
            "LLORCH_CONFIG_PATH",
            "/nonexistent/llorch/config.toml".to_owned(),
        )]),
    )
    .unwrap();
    assert_eq!(settings.origins["config_path"], Origin::Env);
    assert!(!settings.config_file_exists);
}

#[test]
fn a_malformed_file_on_disk_names_the_file_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "version = 1\n[build]\nrelease = \"yes\"\n");
    let flags = GlobalFlags {
        config: Some(path.clone()),
        ..Default::default()
    };
    let error = format!("{:#}", Settings::resolve(&flags, &env_of(&[])).unwrap_err());
    assert!(
        error.starts_with(&format!("reading config file {}: ", path.display())),
        "{error}"
    );
    assert!(error.contains("line 3"), "{error}");
    assert!(
        error.ends_with("hint: fix the file, or run `cargo xtask config init --force` to start from the defaults"),
        "{error}"
    );
}

#[test]
fn a_config_path_that_cannot_be_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let flags = GlobalFlags {
        config: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let error = format!("{:#}", Settings::resolve(&flags, &env_of(&[])).unwrap_err());
    assert!(
        error.starts_with(&format!("reading config file {}: ", dir.path().display())),
        "{error}"
    );
}

#[test]
fn a_version_error_says_which_version_to_write() {
    let error = parse_config("version = 2\n", Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "config file c.toml has `version = 2`, but this xtask understands version 1\nhint: set `version = 1` and check the keys against `cargo xtask config init`'s template"
    );
}

const EVERY_SECTION: &str = r#"
version = 1
[general]
repo_root = "/file/repo"
color = "never"
[remote]
default_host = "box"
ssh_timeout = 4
[models]
catalog = "/file/catalog.toml"
[build]
default_backend = "cuda"
release = false
[orchestrator]
api_token_file = "/file/token"
[fleet]
file = "/file/fleet.toml"
"#;

#[test]
fn every_file_setting_is_used_when_no_flag_or_environment_says_otherwise() {
    let settings = resolve(&GlobalFlags::default(), &env_of(&[]), Some(EVERY_SECTION));
    assert_eq!(settings.repo_root, PathBuf::from("/file/repo"));
    assert_eq!(settings.color, ColorChoice::Never);
    assert_eq!(settings.remote_host.as_deref(), Some("box"));
    assert_eq!(settings.ssh_timeout_secs, 4);
    assert_eq!(settings.catalog_path, PathBuf::from("/file/catalog.toml"));
    assert_eq!(settings.default_backend, llorch_api::Backend::Cuda);
    assert!(!settings.release);
    assert_eq!(settings.api_token_file, Some(PathBuf::from("/file/token")));
    assert_eq!(
        settings.file.fleet.file,
        Some(PathBuf::from("/file/fleet.toml"))
    );
    for name in [
        "repo_root",
        "color",
        "remote_host",
        "ssh_timeout_secs",
        "catalog_path",
        "default_backend",
        "release",
        "api_token_file",
    ] {
        assert_eq!(settings.origins[name], Origin::File, "{name}");
    }
}

#[test]
fn the_environment_beats_the_file_and_flags_beat_the_environment() {
    let env = env_of(&[
        ("LLORCH_REPO_ROOT", "/env/repo".to_owned()),
        ("LLORCH_CATALOG", "/env/catalog.toml".to_owned()),
        ("LLORCH_API_TOKEN_FILE", "/env/token".to_owned()),
    ]);
    let settings = resolve(&GlobalFlags::default(), &env, Some(EVERY_SECTION));
    assert_eq!(settings.repo_root, PathBuf::from("/env/repo"));
    assert_eq!(settings.catalog_path, PathBuf::from("/env/catalog.toml"));
    assert_eq!(settings.api_token_file, Some(PathBuf::from("/env/token")));
    for name in ["repo_root", "catalog_path", "api_token_file"] {
        assert_eq!(settings.origins[name], Origin::Env, "{name}");
    }
    let flags = GlobalFlags {
        repo_root: Some("/flag/repo".into()),
        ..Default::default()
    };
    let settings = resolve(&flags, &env, Some(EVERY_SECTION));
    assert_eq!(settings.repo_root, PathBuf::from("/flag/repo"));
    assert_eq!(settings.origins["repo_root"], Origin::Flag);
}

#[test]
fn the_defaults_follow_the_repository_and_the_config_file() {
    let settings = resolve(&GlobalFlags::default(), &env_of(&[]), None);
    assert_eq!(settings.repo_root, built_repo_root());
    assert!(built_repo_root().join("xtask").join("Cargo.toml").is_file());
    assert_eq!(
        settings.catalog_path,
        built_repo_root().join("catalog.toml")
    );
    assert_eq!(settings.remote_host, None);
    assert_eq!(settings.ssh_timeout_secs, DEFAULT_SSH_TIMEOUT_SECS);
    assert_eq!(settings.default_backend, llorch_api::Backend::Cpu);
    assert!(settings.release);
    assert_eq!(settings.orchestrator_url, DEFAULT_ORCHESTRATOR_URL);
    assert_eq!(settings.api_token_file, None);
    // A repo root from the environment moves the default catalog with it.
    let env = env_of(&[("LLORCH_REPO_ROOT", "/env/repo".to_owned())]);
    let settings = resolve(&GlobalFlags::default(), &env, None);
    assert_eq!(
        settings.catalog_path,
        PathBuf::from("/env/repo/catalog.toml")
    );
    assert_eq!(settings.origins["catalog_path"], Origin::Default);
}

#[test]
fn only_a_truthy_llorch_no_color_turns_colour_off() {
    for off in ["1", "true", "yes", "on", "anything"] {
        let env = env_of(&[("LLORCH_NO_COLOR", off.to_owned())]);
        assert!(color_disabled_by(&env), "{off}");
    }
    for on in ["0", "false", " FALSE ", "no", "Off", " "] {
        let env = env_of(&[("LLORCH_NO_COLOR", on.to_owned())]);
        assert!(!color_disabled_by(&env), "{on:?}");
    }
    assert!(!color_disabled_by(&env_of(&[])));
}

#[test]
fn the_process_environment_is_read_by_name() {
    // cargo and nextest set the package name for every test process they start.
    assert_eq!(process_env("CARGO_PKG_NAME").as_deref(), Some("xtask"));
    assert_eq!(process_env("LLORCH_SURELY_UNSET_BY_ANYONE"), None);
}

#[test]
fn a_missing_config_file_is_written_from_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llorch/config.toml");
    assert!(ensure_default_config(&path).unwrap());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        default_config_text()
    );
    assert!(!ensure_default_config(&path).unwrap());
}

/// Set in a child process: the `xtask` arguments it runs, one per line.
const CHILD_ARGS: &str = "LLORCH_CONFIG_TEST_CHILD_ARGS";
/// Printed by the child before the command's output, after libtest's own lines.
const CHILD_OUTPUT_STARTS: &str = "--- the command's output ---";

/// In the child process (a test of this module re-run with [`CHILD_ARGS`] set): runs the
/// `config` command as `main` would and exits with its status. Returns in the parent.
fn run_command_if_child() {
    let Some(args) = process_env(CHILD_ARGS) else {
        return;
    };
    let cli = Cli::parse_from(std::iter::once("xtask").chain(args.lines()));
    let crate::flags::Command::Config(cmd) = cli.command else {
        panic!("the child runs `config` commands only: {args}")
    };
    let out = Printer::new(&cli.global, env_color_disabled());
    println!("{CHILD_OUTPUT_STARTS}");
    let status = match Settings::resolve(&cli.global, &process_env) {
        Ok(settings) => {
            let cx = crate::Context {
                out: out.clone().with_color_choice(settings.color),
                settings,
            };
            match run(cmd, &cx) {
                Ok(()) => 0,
                Err(error) => {
                    out.error(&error);
                    1
                }
            }
        }
        Err(error) => {
            out.error(&error);
            1
        }
    };
    std::io::stdout().flush().unwrap();
    std::process::exit(status);
}

/// What a `config` command printed: stdout, stderr and whether it succeeded.
struct Ran {
    stdout: String,
    stderr: String,
    success: bool,
}

/// Runs `xtask ARGS` with the config file `config` in a child process: the test `test` of this
/// module, which calls [`run_command_if_child`] first.
fn xtask(test: &str, config: &Path, args: &[&str]) -> Ran {
    let output = crate::process::cmd(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &format!("config::parsing_tests::{test}"),
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ARGS, args.join("\n"))
        .env("LLORCH_CONFIG_PATH", config)
        .env("NO_COLOR", "1")
        .env_remove("LLORCH_NO_COLOR")
        // Empty counts as unset: the file's log level shows through.
        .env("LLORCH_LOG_LEVEL", "")
        .env_remove("LLORCH_REMOTE_HOST")
        .env_remove("LLORCH_ORCHESTRATOR_URL")
        .env_remove("LLORCH_API_TOKEN_FILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let Some((_, printed)) = stdout.split_once(&format!("{CHILD_OUTPUT_STARTS}\n")) else {
        panic!("the child did not run the command: {stdout}")
    };
    Ran {
        stdout: printed.to_owned(),
        stderr: String::from_utf8(output.stderr).unwrap(),
        success: output.status.success(),
    }
}

#[test]
fn config_show_prints_every_setting_with_its_origin() {
    run_command_if_child();
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "version = 1\n[general]\nlog_level = \"warn\"\n");
    let shown = xtask(
        "config_show_prints_every_setting_with_its_origin",
        &path,
        &["config", "show"],
    );
    assert!(shown.success, "{}", shown.stderr);
    let mut lines = shown.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("config file: {}", path.display()).as_str())
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.contains(&"  log_level          warn  (file)"),
        "{rows:#?}"
    );
    assert!(
        rows.contains(&"  color              never  (env)"),
        "{rows:#?}"
    );
    assert!(
        rows.contains(&"  remote_host        -  (default)"),
        "{rows:#?}"
    );
    assert!(
        rows.contains(&format!("  config_path        {}  (env)", path.display()).as_str()),
        "{rows:#?}"
    );

    let absent = dir.path().join("absent.toml");
    let shown = xtask(
        "config_show_prints_every_setting_with_its_origin",
        &absent,
        &["config", "show"],
    );
    assert_eq!(
        shown.stdout.lines().next(),
        Some(format!("config file: {} (not present)", absent.display()).as_str())
    );

    let json = xtask(
        "config_show_prints_every_setting_with_its_origin",
        &path,
        &["--json", "config", "show"],
    );
    let settings: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(settings["log_level"], "warn");
    assert_eq!(settings["origins"]["log_level"], "file");
    assert_eq!(settings["config_file_exists"], true);
}

#[test]
fn config_path_prints_the_file_in_use_and_whether_it_exists() {
    run_command_if_child();
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.toml");
    let test = "config_path_prints_the_file_in_use_and_whether_it_exists";
    let printed = xtask(test, &absent, &["config", "path"]);
    assert!(printed.success, "{}", printed.stderr);
    assert_eq!(printed.stdout, format!("{}\n", absent.display()));
    let json = xtask(test, &absent, &["--json", "config", "path"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({ "path": absent, "exists": false })
    );
}

#[test]
fn config_init_writes_the_template_once_unless_forced() {
    run_command_if_child();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llorch/config.toml");
    let test = "config_init_writes_the_template_once_unless_forced";
    let init = xtask(test, &path, &["config", "init"]);
    assert!(init.success, "{}", init.stderr);
    assert!(
        init.stderr.contains(&format!("wrote {}", path.display())),
        "{}",
        init.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        default_config_text()
    );

    std::fs::write(&path, "version = 1\n# mine\n").unwrap();
    let refused = xtask(test, &path, &["config", "init"]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains(&format!(
            "not overwriting the existing config file {}",
            path.display()
        )),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("pass --force"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "version = 1\n# mine\n"
    );

    let forced = xtask(test, &path, &["--json", "config", "init", "--force"]);
    assert!(forced.success, "{}", forced.stderr);
    let value: serde_json::Value = serde_json::from_str(&forced.stdout).unwrap();
    assert_eq!(value, serde_json::json!({ "written": path }));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        default_config_text()
    );
}

#[test]
fn config_set_reports_the_value_written_and_refuses_a_bad_one() {
    run_command_if_child();
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "version = 1\n");
    let test = "config_set_reports_the_value_written_and_refuses_a_bad_one";
    let set = xtask(test, &path, &["config", "set", "remote.ssh_timeout", "7"]);
    assert!(set.success, "{}", set.stderr);
    assert_eq!(
        set.stdout,
        format!("set remote.ssh_timeout = 7 in {}\n", path.display())
    );
    let json = xtask(
        test,
        &path,
        &["--json", "config", "set", "general.log_level", "debug"],
    );
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        value,
        serde_json::json!({ "path": path, "key": "general.log_level", "value": "\"debug\"" })
    );
    let file = parse_config(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    assert_eq!(file.remote.ssh_timeout, Some(7));
    assert_eq!(file.general.log_level.as_deref(), Some("debug"));

    let before = std::fs::read_to_string(&path).unwrap();
    let refused = xtask(
        test,
        &path,
        &["config", "set", "remote.ssh_timeout", "soon"],
    );
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("`remote.ssh_timeout` cannot be `soon`"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
}

#[test]
fn a_broken_config_file_stops_every_command_with_the_fix() {
    run_command_if_child();
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "version = 1\n[general]\nmodel_dir = \"/x\"\n");
    let shown = xtask(
        "a_broken_config_file_stops_every_command_with_the_fix",
        &path,
        &["config", "show"],
    );
    assert!(!shown.success);
    assert!(shown.stdout.is_empty(), "{}", shown.stdout);
    assert!(shown.stderr.contains("model_dir"), "{}", shown.stderr);
    assert!(
        shown.stderr.contains("cargo xtask config init --force"),
        "{}",
        shown.stderr
    );
}

#[test]
fn config_set_names_an_unreadable_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = format!(
        "{:#}",
        set::set_value(dir.path(), "general.log_level", "debug").unwrap_err()
    );
    assert!(
        error.starts_with(&format!("reading config file {}: ", dir.path().display())),
        "{error}"
    );
}

#[test]
fn config_set_refuses_a_file_that_is_not_toml_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "version = 1\n[general\n");
    let error = format!(
        "{:#}",
        set::set_value(&path, "general.log_level", "debug").unwrap_err()
    );
    assert!(
        error.starts_with("parsing the config file\nhint: fix the TOML syntax"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "version = 1\n[general\n"
    );
}

#[test]
fn config_set_refuses_a_section_that_is_not_a_table() {
    let error = set::edit("version = 1\ngeneral = 3\n", "general.log_level", "debug")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "`general` in the config file is not a [table]\nhint: edit that part of the file by hand"
    );
}

#[test]
fn config_set_names_the_type_a_literal_value_lacks() {
    let error = set::edit("version = 1\n", "remote.ssh_timeout", "-1")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("`remote.ssh_timeout` cannot be `-1`: "),
        "{error}"
    );
    assert!(error.contains("u64"), "{error}");
    let error = set::edit("version = 1\n", "build.release", "maybe")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("`build.release` cannot be `maybe`: "),
        "{error}"
    );
}

#[test]
fn config_set_refuses_a_file_of_another_version() {
    let error = set::edit("version = 2\n", "general.log_level", "trace")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "`general.log_level` cannot be `trace`: the file has `version = 2`, this xtask understands 1"
    );
}
