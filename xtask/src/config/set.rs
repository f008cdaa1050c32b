//! `config set KEY VALUE`: one value of the config file changed in place. The file keeps its
//! comments and layout (toml_edit); the key and value are checked against the same schema the
//! file is read with, plus what a value must mean (a URL orcd can be reached at, a token file
//! the client can read); the new file replaces the old one atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use toml_edit::{DocumentMut, Item, Table};

use super::{default_config_text, ConfigFile, CONFIG_VERSION};
use crate::files::write_atomically;

/// What `config set` wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SetOutcome {
    pub path: PathBuf,
    pub key: String,
    /// The value as it now stands in the file (TOML syntax).
    pub value: String,
}

/// Sets `key` (dotted: `orchestrator.url`, `remote.hosts.box.port`) to `value` in the config
/// file at `path`, which is created from the commented template when missing.
pub fn set_value(path: &Path, key: &str, value: &str) -> anyhow::Result<SetOutcome> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => default_config_text(),
        Err(error) => {
            return Err(error).with_context(|| format!("reading config file {}", path.display()))
        }
    };
    let value = check_meaning(key, value)?;
    let (text, written) = edit(&text, key, &value)?;
    write_atomically(path, &text)?;
    Ok(SetOutcome {
        path: path.to_path_buf(),
        key: key.to_owned(),
        value: written,
    })
}

/// The new file text and the value as written. The value is taken as a string first, then as
/// a TOML literal (numbers, booleans) when the key wants one.
pub fn edit(text: &str, key: &str, value: &str) -> anyhow::Result<(String, String)> {
    let path = key_path(key)?;
    let as_string = with_value(text, &path, toml_edit::value(value))?;
    let string_error = match validate(&as_string) {
        Ok(()) => return Ok((as_string, toml_edit::Value::from(value).to_string())),
        Err(error) => error,
    };
    if string_error.starts_with("unknown field") {
        bail!(
            "`{key}` is not a config key: {string_error}\nhint: `cargo xtask config init` writes a file that lists every key"
        );
    }
    if let Ok(literal) = value.parse::<toml_edit::Value>() {
        let typed = with_value(text, &path, Item::Value(literal.clone()))?;
        match validate(&typed) {
            Ok(()) => return Ok((typed, literal.to_string().trim().to_owned())),
            Err(typed_error) => bail!("`{key}` cannot be `{value}`: {typed_error}"),
        }
    }
    bail!("`{key}` cannot be `{value}`: {string_error}")
}

/// `a.b.c` as its parts; every part a bare TOML key.
fn key_path(key: &str) -> anyhow::Result<Vec<&str>> {
    let parts: Vec<&str> = key.split('.').collect();
    let bare = |part: &&str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if parts.len() < 2 || !parts.iter().all(bare) {
        bail!(
            "`{key}` is not a config key: write SECTION.KEY, e.g. `orchestrator.url`\nhint: `cargo xtask config init` writes a file that lists every key"
        );
    }
    Ok(parts)
}

/// `text` with the item at `path` replaced or added; missing tables are created without a
/// header of their own unless they are sections.
fn with_value(text: &str, path: &[&str], item: Item) -> anyhow::Result<String> {
    let mut document: DocumentMut = text.parse().context(
        "parsing the config file\nhint: fix the TOML syntax (`cargo xtask config show` names the line)",
    )?;
    let (last, tables) = path.split_last().expect("key_path has two parts or more");
    let mut table: &mut Table = document.as_table_mut();
    for (depth, name) in tables.iter().enumerate() {
        let entry = table.entry(name).or_insert_with(|| {
            let mut new = Table::new();
            // `[section]` of its own at the top; `remote.hosts.NAME` keeps a header too.
            new.set_implicit(depth + 1 < tables.len());
            Item::Table(new)
        });
        table = entry.as_table_mut().with_context(|| {
            format!("`{name}` in the config file is not a [table]\nhint: edit that part of the file by hand")
        })?;
    }
    let keep_decor = table
        .get(last)
        .and_then(Item::as_value)
        .map(|old| old.decor().clone());
    table[last] = item;
    if let (Some(decor), Some(new)) = (keep_decor, table[last].as_value_mut()) {
        // A trailing comment after the old value stays after the new one.
        *new.decor_mut() = decor;
    }
    Ok(document.to_string())
}

/// The schema check of the whole file: the message names the field, without the file's line.
fn validate(text: &str) -> Result<(), String> {
    let file: ConfigFile = toml::from_str(text).map_err(|error| error.message().to_owned())?;
    if file.version != CONFIG_VERSION {
        return Err(format!(
            "the file has `version = {}`, this xtask understands {CONFIG_VERSION}",
            file.version
        ));
    }
    Ok(())
}

/// What a value must mean beyond its type; returns the value to write (token file paths made
/// absolute, so the setting does not depend on the directory a command runs in).
fn check_meaning(key: &str, value: &str) -> anyhow::Result<String> {
    if key == "orchestrator.url" {
        let url = reqwest::Url::parse(value).map_err(|error| {
            anyhow::anyhow!("`{key}` must be orcd's base URL, like http://10.0.0.2:8080; `{value}` is not a URL ({error})")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("`{key}` must be an http:// or https:// URL with a host, like http://10.0.0.2:8080; got `{value}`");
        }
        return Ok(value.trim_end_matches('/').to_owned());
    }
    if key.ends_with("token_file") {
        let path = std::path::absolute(value)
            .with_context(|| format!("`{key}`: making {value} an absolute path"))?;
        llorch_api::secret::read_token_file(&path, "token").map_err(|error| {
            anyhow::anyhow!("`{key}` must name a token file the client can read: {error}")
        })?;
        return path.to_str().map(str::to_owned).with_context(|| {
            format!(
                "the path {} is not valid UTF-8, which TOML cannot hold",
                path.display()
            )
        });
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_FILE: &str = "\
# my settings, keep this comment
version = 1

[general]
log_level = \"debug\" # trailing comment

[orchestrator]
url = \"http://10.0.0.2:8080\"
";

    #[test]
    fn a_string_value_replaces_the_old_one_and_comments_stay() {
        let (text, written) = edit(USER_FILE, "general.log_level", "trace").unwrap();
        assert_eq!(written, "\"trace\"");
        assert_eq!(
            text,
            USER_FILE.replace("log_level = \"debug\"", "log_level = \"trace\"")
        );
    }

    #[test]
    fn a_number_is_written_as_a_number_and_a_missing_section_is_added() {
        let (text, written) = edit(USER_FILE, "remote.ssh_timeout", "5").unwrap();
        assert_eq!(written, "5");
        let file: ConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(file.remote.ssh_timeout, Some(5));
        assert!(
            text.starts_with("# my settings, keep this comment\n"),
            "{text}"
        );
    }

    #[test]
    fn the_template_gets_the_value_in_its_own_section() {
        let (text, _) = edit(
            &default_config_text(),
            "orchestrator.url",
            "http://10.0.0.2:9000",
        )
        .unwrap();
        let file: ConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(
            file.orchestrator.url.as_deref(),
            Some("http://10.0.0.2:9000")
        );
        assert!(
            text.contains("# api_token_file = "),
            "comments stay: {text}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_naming_the_key() {
        let error = edit(USER_FILE, "orchestrator.ulr", "http://x:1")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`orchestrator.ulr` is not a config key"),
            "{error}"
        );
        assert!(error.contains("url"), "the known keys are listed: {error}");

        let error = edit(USER_FILE, "remote.ssh_timeout", "soon")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`remote.ssh_timeout` cannot be `soon`"),
            "{error}"
        );

        let error = edit(USER_FILE, "build.default_backend", "tpu")
            .unwrap_err()
            .to_string();
        assert!(error.contains("tpu"), "{error}");

        for key in ["url", "orchestrator.", ".url", "orchestrator.u rl"] {
            assert!(edit(USER_FILE, key, "x").is_err(), "{key}");
        }
    }

    #[test]
    fn the_orchestrator_url_must_be_an_http_url() {
        assert_eq!(
            check_meaning("orchestrator.url", "http://10.0.0.2:8080/").unwrap(),
            "http://10.0.0.2:8080"
        );
        for bad in ["10.0.0.2:8080", "ftp://x", "http://", "not a url"] {
            assert!(check_meaning("orchestrator.url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_file_must_be_readable_and_is_stored_absolute() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("api-token");
        std::fs::write(&token, "client-token-0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            check_meaning("orchestrator.api_token_file", token.to_str().unwrap()).unwrap(),
            token.to_str().unwrap()
        );
        let missing = dir.path().join("nope");
        let error = check_meaning("orchestrator.api_token_file", missing.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains("token file"), "{error}");
    }

    #[test]
    fn set_value_creates_the_file_from_the_template_and_replaces_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("llorch/config.toml");
        let outcome = set_value(&path, "orchestrator.url", "http://10.0.0.2:8080").unwrap();
        assert_eq!(outcome.value, "\"http://10.0.0.2:8080\"");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# llama-orch configuration."), "{text}");
        let before = text.clone();
        assert!(set_value(&path, "orchestrator.nope", "x").is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            before,
            "a refused value changes nothing"
        );
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["config.toml"], "no temporary file is left");
    }
}
