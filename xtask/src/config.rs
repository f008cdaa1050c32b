//! Configuration: the TOML file, `LLORCH_*` environment overrides and flags, resolved once into
//! [`Settings`] with the precedence flags > environment > file > defaults.

use crate::files::write_atomically;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::flags::{ConfigCmd, GlobalFlags};

mod set;

/// The only config file format version this build understands.
pub const CONFIG_VERSION: u32 = 1;
pub const DEFAULT_ORCHESTRATOR_URL: &str = "http://127.0.0.1:8080";
pub const DEFAULT_SSH_TIMEOUT_SECS: u64 = 10;

/// `~/.config/llorch/config.toml`, as written by the user. Unknown keys are errors so that a
/// typo never silently falls back to a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub version: u32,
    #[serde(default)]
    pub general: GeneralSection,
    #[serde(default)]
    pub remote: RemoteSection,
    #[serde(default)]
    pub models: ModelsSection,
    #[serde(default)]
    pub build: BuildSection,
    #[serde(default)]
    pub orchestrator: OrchestratorSection,
    #[serde(default)]
    pub fleet: FleetSection,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneralSection {
    pub model_base_dir: Option<PathBuf>,
    pub repo_root: Option<PathBuf>,
    pub color: Option<ColorChoice>,
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    pub default_host: Option<String>,
    /// Seconds before an SSH connection attempt gives up.
    pub ssh_timeout: Option<u64>,
    #[serde(default)]
    pub hosts: BTreeMap<String, HostProfile>,
}

/// `[remote.hosts.NAME]`: how to reach one machine of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostProfile {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    /// Where the llama-orch checkout lives on that host.
    pub repo_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsSection {
    /// Catalog file to use instead of the repository's `catalog.toml`.
    pub catalog: Option<PathBuf>,
    /// The user catalog directory merged after it (default: catalog.d beside this file).
    pub catalog_dir: Option<PathBuf>,
    /// Catalog id used when a command takes an optional model.
    pub default_model: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    pub default_backend: Option<llorch_api::Backend>,
    pub release: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSection {
    pub url: Option<String>,
    /// File holding the client API token sent to orcd (mode 0600).
    pub api_token_file: Option<PathBuf>,
}

/// `[fleet]`: where `cargo xtask fleet` finds its fleet file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// The fleet file (default: fleet.toml beside this config file; LLORCH_FLEET overrides).
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Where a resolved value came from, reported by `config show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Flag,
    Env,
    File,
    Default,
}

/// The effective settings every command works with.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub config_path: PathBuf,
    pub config_file_exists: bool,
    pub model_base_dir: PathBuf,
    pub repo_root: PathBuf,
    pub color: ColorChoice,
    pub log_level: String,
    pub remote_host: Option<String>,
    pub ssh_timeout_secs: u64,
    pub default_backend: llorch_api::Backend,
    pub release: bool,
    pub orchestrator_url: String,
    /// Client token file for orcd, when it has tokens configured.
    pub api_token_file: Option<PathBuf>,
    pub catalog_path: PathBuf,
    /// `catalog.d`: user catalog files (`models download hf:...`, `models add`) merged after
    /// `catalog_path`.
    pub catalog_dir: PathBuf,
    /// Origin of each value above, by field name.
    pub origins: BTreeMap<&'static str, Origin>,
    /// The parsed file (host profiles live here); defaults when there is no file.
    #[serde(skip)]
    pub file: ConfigFile,
}

/// Reads one environment variable; a function so tests resolve without touching the process
/// environment.
pub type EnvLookup = dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// `NO_COLOR` (any non-empty value) or a truthy `LLORCH_NO_COLOR` turn colour off.
pub fn env_color_disabled() -> bool {
    color_disabled_by(&process_env)
}

fn color_disabled_by(env: &EnvLookup) -> bool {
    env("NO_COLOR").is_some() || env("LLORCH_NO_COLOR").is_some_and(|value| is_truthy(&value))
}

fn is_truthy(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "0" | "false" | "no" | "off"
    )
}

/// The checkout this xtask was built from: the parent of `xtask/`.
pub fn built_repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// `LLORCH_CONFIG_PATH`, else the XDG config dir (`~/.config/llorch/config.toml`).
pub fn default_config_path(env: &EnvLookup) -> PathBuf {
    if let Some(path) = env("LLORCH_CONFIG_PATH") {
        return PathBuf::from(path);
    }
    use etcetera::BaseStrategy;
    match etcetera::choose_base_strategy() {
        Ok(strategy) => strategy.config_dir().join("llorch").join("config.toml"),
        Err(_) => PathBuf::from(".llorch-config.toml"),
    }
}

/// Parses a config file's text; errors name the file, line and column.
pub fn parse_config(text: &str, path: &Path) -> anyhow::Result<ConfigFile> {
    let file: ConfigFile = toml::from_str(text).map_err(|error| {
        anyhow::anyhow!(
            "reading config file {}: {}\nhint: fix the file, or run `cargo xtask config init --force` to start from the defaults",
            path.display(),
            error.to_string().trim_end()
        )
    })?;
    if file.version != CONFIG_VERSION {
        bail!(
            "config file {} has `version = {}`, but this xtask understands version {CONFIG_VERSION}\nhint: set `version = {CONFIG_VERSION}` and check the keys against `cargo xtask config init`'s template",
            path.display(),
            file.version
        );
    }
    Ok(file)
}

fn load_config_file(path: &Path) -> anyhow::Result<Option<ConfigFile>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(&text, path).map(Some),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading config file {}", path.display())),
    }
}

/// Picks the first of flag, env, file and default that is set, recording which one won.
fn pick<T>(
    origins: &mut BTreeMap<&'static str, Origin>,
    name: &'static str,
    flag: Option<T>,
    env: Option<T>,
    file: Option<T>,
    default: impl FnOnce() -> T,
) -> T {
    let (value, origin) = if let Some(value) = flag {
        (value, Origin::Flag)
    } else if let Some(value) = env {
        (value, Origin::Env)
    } else if let Some(value) = file {
        (value, Origin::File)
    } else {
        (default(), Origin::Default)
    };
    origins.insert(name, origin);
    value
}

impl Settings {
    /// Resolves flags > `LLORCH_*` environment > config file > defaults.
    pub fn resolve(flags: &GlobalFlags, env: &EnvLookup) -> anyhow::Result<Settings> {
        let config_path = flags
            .config
            .clone()
            .unwrap_or_else(|| default_config_path(env));
        let loaded = load_config_file(&config_path)?;
        let config_file_exists = loaded.is_some();
        let file = loaded.unwrap_or(ConfigFile {
            version: CONFIG_VERSION,
            ..Default::default()
        });
        Self::resolve_with(flags, env, file, config_path, config_file_exists)
    }

    fn resolve_with(
        flags: &GlobalFlags,
        env: &EnvLookup,
        file: ConfigFile,
        config_path: PathBuf,
        config_file_exists: bool,
    ) -> anyhow::Result<Settings> {
        let mut origins = BTreeMap::new();
        origins.insert(
            "config_path",
            if flags.config.is_some() {
                Origin::Flag
            } else if env("LLORCH_CONFIG_PATH").is_some() {
                Origin::Env
            } else {
                Origin::Default
            },
        );
        let model_base_dir = pick(
            &mut origins,
            "model_base_dir",
            flags.model_base_dir.clone(),
            env("LLORCH_MODEL_BASE_DIR").map(PathBuf::from),
            file.general.model_base_dir.clone(),
            llorch_catalog::default_model_base_dir,
        );
        let repo_root = pick(
            &mut origins,
            "repo_root",
            flags.repo_root.clone(),
            env("LLORCH_REPO_ROOT").map(PathBuf::from),
            file.general.repo_root.clone(),
            built_repo_root,
        );
        let color = pick(
            &mut origins,
            "color",
            flags.no_color.then_some(ColorChoice::Never),
            color_disabled_by(env).then_some(ColorChoice::Never),
            file.general.color,
            ColorChoice::default,
        );
        let log_level = pick(
            &mut origins,
            "log_level",
            None,
            env("LLORCH_LOG_LEVEL"),
            file.general.log_level.clone(),
            || "info".to_owned(),
        );
        let remote_host = pick(
            &mut origins,
            "remote_host",
            None,
            env("LLORCH_REMOTE_HOST").map(Some),
            file.remote.default_host.clone().map(Some),
            || None,
        );
        let ssh_timeout_secs = pick(
            &mut origins,
            "ssh_timeout_secs",
            None,
            None,
            file.remote.ssh_timeout,
            || DEFAULT_SSH_TIMEOUT_SECS,
        );
        let default_backend = pick(
            &mut origins,
            "default_backend",
            None,
            None,
            file.build.default_backend,
            || llorch_api::Backend::Cpu,
        );
        let release = pick(
            &mut origins,
            "release",
            None,
            None,
            file.build.release,
            || true,
        );
        let orchestrator_url = pick(
            &mut origins,
            "orchestrator_url",
            None,
            env("LLORCH_ORCHESTRATOR_URL"),
            file.orchestrator.url.clone(),
            || DEFAULT_ORCHESTRATOR_URL.to_owned(),
        );
        let api_token_file = pick(
            &mut origins,
            "api_token_file",
            None,
            env("LLORCH_API_TOKEN_FILE").map(|path| Some(PathBuf::from(path))),
            file.orchestrator.api_token_file.clone().map(Some),
            || None,
        );
        let catalog_path = pick(
            &mut origins,
            "catalog_path",
            None,
            env("LLORCH_CATALOG").map(PathBuf::from),
            file.models.catalog.clone(),
            || repo_root.join("catalog.toml"),
        );
        let catalog_dir = pick(
            &mut origins,
            "catalog_dir",
            None,
            env("LLORCH_CATALOG_DIR").map(PathBuf::from),
            file.models.catalog_dir.clone(),
            || {
                config_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(llorch_catalog::USER_CATALOG_DIR)
            },
        );
        Ok(Settings {
            config_path,
            config_file_exists,
            model_base_dir,
            repo_root,
            color,
            log_level,
            remote_host,
            ssh_timeout_secs,
            default_backend,
            release,
            orchestrator_url,
            api_token_file,
            catalog_path,
            catalog_dir,
            origins,
            file,
        })
    }
}

/// The file `config init` and `dev setup` write: every key, commented, at its default.
pub fn default_config_text() -> String {
    format!(
        r#"# llama-orch configuration. Precedence: flags > LLORCH_* environment > this file > defaults.
version = {CONFIG_VERSION}

[general]
# model_base_dir = "{models}"
# repo_root = "/path/to/llama-orch"
# color = "auto"        # auto | always | never
# log_level = "info"    # passed to orcd and workers started by `cargo xtask pool`

[remote]
# default_host = "workstation"
# ssh_timeout = {DEFAULT_SSH_TIMEOUT_SECS}      # seconds

# [remote.hosts.workstation]
# user = "me"
# host = "workstation.lan"
# port = 22
# identity_file = "~/.ssh/id_ed25519"
# repo_path = "~/llama-orch"

[models]
# catalog = "/path/to/catalog.toml"
# catalog_dir = "~/.config/llorch/catalog.d"   # your own entries; LLORCH_CATALOG_DIR overrides
# default_model = "gemma3-270m"

[build]
# default_backend = "cpu"   # cpu | cuda | metal
# release = true

[orchestrator]
# url = "{DEFAULT_ORCHESTRATOR_URL}"
# api_token_file = "~/.config/llorch/api-token"   # mode 0600; needed when orcd has tokens

[fleet]
# file = "~/.config/llorch/fleet.toml"   # what `cargo xtask fleet` reads; LLORCH_FLEET overrides
"#,
        models = llorch_catalog::default_model_base_dir().display()
    )
}

/// Writes the default config unless a file exists; returns whether it wrote one.
pub fn ensure_default_config(path: &Path) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    write_atomically(path, &default_config_text())?;
    Ok(true)
}

/// The rows of `config show`: every effective value of [`Settings`] (taken from its serialized
/// form, so a new setting is shown without touching this), each with the origin that won.
fn show_rows(settings: &Settings) -> Vec<(String, String, Origin)> {
    let serde_json::Value::Object(fields) =
        serde_json::to_value(settings).expect("settings always serialize")
    else {
        unreachable!("Settings serializes as a map");
    };
    fields
        .into_iter()
        .filter(|(name, _)| !matches!(name.as_str(), "origins" | "config_file_exists"))
        .map(|(name, value)| {
            let origin = settings
                .origins
                .get(name.as_str())
                .copied()
                .unwrap_or(Origin::Default);
            let value = match value {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            (name, value, origin)
        })
        .collect()
}

pub fn run(cmd: ConfigCmd, cx: &crate::Context) -> anyhow::Result<()> {
    let settings = &cx.settings;
    match cmd {
        ConfigCmd::Show => {
            if cx.out.json() {
                return cx.out.print_json(settings);
            }
            let paint = cx.out.paint();
            let file_note = if settings.config_file_exists {
                ""
            } else {
                " (not present)"
            };
            cx.out.println(format!(
                "{} {}{}",
                paint.bold("config file:"),
                settings.config_path.display(),
                file_note
            ));
            for (name, value, origin) in show_rows(settings) {
                cx.out.println(format!(
                    "  {name:<18} {value}  {}",
                    paint.dim(&format!("({})", format!("{origin:?}").to_lowercase()))
                ));
            }
            Ok(())
        }
        ConfigCmd::Path => {
            if cx.out.json() {
                return cx.out.print_json(&serde_json::json!({
                    "path": settings.config_path,
                    "exists": settings.config_file_exists,
                }));
            }
            cx.out.println(settings.config_path.display().to_string());
            Ok(())
        }
        ConfigCmd::Set { key, value } => {
            let outcome = set::set_value(&settings.config_path, &key, &value)?;
            if cx.out.json() {
                return cx.out.print_json(&outcome);
            }
            cx.out.println(format!(
                "set {} = {} in {}",
                outcome.key,
                outcome.value,
                outcome.path.display()
            ));
            Ok(())
        }
        ConfigCmd::Init { force } => {
            let path = &settings.config_path;
            if path.exists() && !force {
                bail!(
                    "not overwriting the existing config file {}\nhint: pass --force to replace it with the defaults",
                    path.display()
                );
            }
            write_atomically(path, &default_config_text())?;
            if cx.out.json() {
                return cx.out.print_json(&serde_json::json!({ "written": path }));
            }
            cx.out.status(format!("wrote {}", path.display()));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
    }

    pub(super) fn resolve(
        flags: &GlobalFlags,
        env: &EnvLookup,
        file_text: Option<&str>,
    ) -> Settings {
        let path = PathBuf::from("/test/config.toml");
        let file = match file_text {
            Some(text) => parse_config(text, &path).unwrap(),
            None => ConfigFile {
                version: CONFIG_VERSION,
                ..Default::default()
            },
        };
        Settings::resolve_with(flags, env, file, path, file_text.is_some()).unwrap()
    }

    const FILE: &str = r#"
version = 1
[general]
model_base_dir = "/from/file"
log_level = "debug"
[orchestrator]
url = "http://file:1"
"#;

    #[test]
    fn the_user_catalog_dir_sits_beside_the_config_file_unless_env_or_file_say() {
        let settings = resolve(&GlobalFlags::default(), &env_of(&[]), None);
        assert_eq!(settings.catalog_dir, PathBuf::from("/test/catalog.d"));
        assert_eq!(settings.origins["catalog_dir"], Origin::Default);
        let file = "version = 1\n[models]\ncatalog_dir = \"/file/catalog.d\"\n";
        let settings = resolve(&GlobalFlags::default(), &env_of(&[]), Some(file));
        assert_eq!(settings.catalog_dir, PathBuf::from("/file/catalog.d"));
        assert_eq!(settings.origins["catalog_dir"], Origin::File);
        let env = env_of(&[("LLORCH_CATALOG_DIR", "/env/catalog.d")]);
        let settings = resolve(&GlobalFlags::default(), &env, Some(file));
        assert_eq!(settings.catalog_dir, PathBuf::from("/env/catalog.d"));
        assert_eq!(settings.origins["catalog_dir"], Origin::Env);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let flags = GlobalFlags {
            model_base_dir: Some("/from/flag".into()),
            ..Default::default()
        };
        let env = env_of(&[("LLORCH_MODEL_BASE_DIR", "/from/env")]);
        let no_env = env_of(&[]);

        let settings = resolve(&flags, &env, Some(FILE));
        assert_eq!(settings.model_base_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.origins["model_base_dir"], Origin::Flag);

        let settings = resolve(&GlobalFlags::default(), &env, Some(FILE));
        assert_eq!(settings.model_base_dir, PathBuf::from("/from/env"));
        assert_eq!(settings.origins["model_base_dir"], Origin::Env);

        let settings = resolve(&GlobalFlags::default(), &no_env, Some(FILE));
        assert_eq!(settings.model_base_dir, PathBuf::from("/from/file"));
        assert_eq!(settings.origins["model_base_dir"], Origin::File);

        let settings = resolve(&GlobalFlags::default(), &no_env, None);
        assert_eq!(
            settings.model_base_dir,
            llorch_catalog::default_model_base_dir()
        );
        assert_eq!(settings.origins["model_base_dir"], Origin::Default);
    }

    #[test]
    fn env_overrides_log_level_orchestrator_and_remote_host() {
        let env = env_of(&[
            ("LLORCH_LOG_LEVEL", "trace"),
            ("LLORCH_ORCHESTRATOR_URL", "http://env:2"),
            ("LLORCH_REMOTE_HOST", "mac"),
        ]);
        let settings = resolve(&GlobalFlags::default(), &env, Some(FILE));
        assert_eq!(settings.log_level, "trace");
        assert_eq!(settings.orchestrator_url, "http://env:2");
        assert_eq!(settings.remote_host.as_deref(), Some("mac"));

        let settings = resolve(&GlobalFlags::default(), &env_of(&[]), Some(FILE));
        assert_eq!(settings.log_level, "debug");
        assert_eq!(settings.orchestrator_url, "http://file:1");
        assert_eq!(settings.remote_host, None);
    }

    #[test]
    fn colour_is_off_by_flag_no_color_or_llorch_no_color() {
        let off = |flags: &GlobalFlags, env: &EnvLookup| resolve(flags, env, None).color;
        let flags = GlobalFlags {
            no_color: true,
            ..Default::default()
        };
        assert_eq!(off(&flags, &env_of(&[])), ColorChoice::Never);
        assert_eq!(
            off(&GlobalFlags::default(), &env_of(&[("NO_COLOR", "1")])),
            ColorChoice::Never
        );
        assert_eq!(
            off(
                &GlobalFlags::default(),
                &env_of(&[("LLORCH_NO_COLOR", "true")])
            ),
            ColorChoice::Never
        );
        assert_eq!(
            off(
                &GlobalFlags::default(),
                &env_of(&[("LLORCH_NO_COLOR", "0")])
            ),
            ColorChoice::Auto
        );
        let always = "version = 1\n[general]\ncolor = \"always\"\n";
        assert_eq!(
            resolve(&GlobalFlags::default(), &env_of(&[]), Some(always)).color,
            ColorChoice::Always
        );
        assert_eq!(
            resolve(
                &GlobalFlags::default(),
                &env_of(&[("NO_COLOR", "x")]),
                Some(always)
            )
            .color,
            ColorChoice::Never
        );
    }

    #[test]
    fn malformed_file_names_file_line_and_column() {
        let error = parse_config(
            "version = 1\n[general]\nlog_level = \n",
            Path::new("/etc/x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("/etc/x.toml"), "{error}");
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("column"), "{error}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let error = parse_config(
            "version = 1\n[general]\nmodel_dir = \"/x\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("model_dir"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn missing_or_wrong_version_is_an_error() {
        assert!(parse_config("[general]\n", Path::new("c.toml")).is_err());
        let error = parse_config("version = 7\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("version = 7"), "{error}");
    }

    #[test]
    fn host_profiles_parse() {
        let text = r#"
version = 1
[remote]
default_host = "mac"
ssh_timeout = 3
[remote.hosts.mac]
user = "me"
host = "mac.lan"
port = 2222
repo_path = "~/llama-orch"
"#;
        let file = parse_config(text, Path::new("c.toml")).unwrap();
        let mac = &file.remote.hosts["mac"];
        assert_eq!(mac.host, "mac.lan");
        assert_eq!(mac.port, Some(2222));
        assert_eq!(file.remote.ssh_timeout, Some(3));
    }

    /// The template with every `# key = value` line and `# [table]` header made live.
    fn uncommented(template: &str) -> String {
        template
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn default_config_text_parses_and_round_trips() {
        let path = Path::new("default.toml");
        let template = default_config_text();
        assert_eq!(
            parse_config(&template, path).unwrap(),
            ConfigFile {
                version: CONFIG_VERSION,
                ..Default::default()
            },
            "every key of the template is commented out"
        );
        // Every commented key is one the file may hold, with a value of the right type...
        let live = parse_config(&uncommented(&template), path).unwrap();
        // ...and a file of those values reads back the same after a write.
        let written = toml::to_string(&live).unwrap();
        assert_eq!(parse_config(&written, path).unwrap(), live, "{written}");
        // The values the template shows for settings with defaults are those defaults.
        let defaults = resolve(&GlobalFlags::default(), &env_of(&[]), None);
        let shown = resolve(
            &GlobalFlags::default(),
            &env_of(&[]),
            Some(&uncommented(&template)),
        );
        assert_eq!(shown.model_base_dir, defaults.model_base_dir);
        assert_eq!(shown.color, defaults.color);
        assert_eq!(shown.log_level, defaults.log_level);
        assert_eq!(shown.ssh_timeout_secs, defaults.ssh_timeout_secs);
        assert_eq!(shown.default_backend, defaults.default_backend);
        assert_eq!(shown.release, defaults.release);
        assert_eq!(shown.orchestrator_url, defaults.orchestrator_url);
        assert_eq!(
            live.models.default_model.as_deref(),
            Some(
                llorch_catalog::Catalog::builtin()
                    .default_model()
                    .id
                    .as_str()
            )
        );
    }

    #[test]
    fn config_show_has_a_row_for_every_setting_and_origin() {
        let env = env_of(&[("LLORCH_API_TOKEN_FILE", "/run/token")]);
        let settings = resolve(&GlobalFlags::default(), &env, Some(FILE));
        let rows = show_rows(&settings);
        let names: Vec<&str> = rows.iter().map(|(name, _, _)| name.as_str()).collect();
        for name in settings.origins.keys() {
            assert!(names.contains(name), "`{name}` has no row: {names:?}");
        }
        assert!(rows.contains(&(
            "api_token_file".to_owned(),
            "/run/token".to_owned(),
            Origin::Env
        )));
        assert!(rows.contains(&(
            "orchestrator_url".to_owned(),
            "http://file:1".to_owned(),
            Origin::File
        )));
        assert!(rows.contains(&("remote_host".to_owned(), "-".to_owned(), Origin::Default)));
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/config.toml");
        write_atomically(&path, "a").unwrap();
        write_atomically(&path, "version = 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "version = 1\n");
        assert!(
            !ensure_default_config(&path).unwrap(),
            "an existing file is kept"
        );
    }
}

#[cfg(test)]
mod parsing_tests;
