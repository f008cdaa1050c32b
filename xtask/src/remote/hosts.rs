//! Host profiles (`[remote.hosts.NAME]`): parsing `USER@HOST[:PORT]` and editing the config file
//! with a format-preserving TOML editor, so the user's comments and other settings survive.

use std::path::Path;

use anyhow::{bail, Context as _};
use toml_edit::{DocumentMut, Item, Table};

use crate::config::HostProfile;

/// Profile names become TOML keys and command-line arguments: letters, digits, `_`, `.`, `-`,
/// not starting with `-`.
pub fn validate_profile_name(name: &str) -> anyhow::Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || !valid_chars || name.starts_with('-') {
        bail!(
            "`{name}` is not a valid host profile name: use letters, digits, `_`, `.` and `-`, not starting with `-`"
        );
    }
    Ok(())
}

/// Splits `USER@HOST[:PORT]` (user optional; IPv6 as `[addr]:port`) into a profile's fields.
pub fn parse_target(text: &str) -> anyhow::Result<(Option<String>, String, Option<u16>)> {
    let invalid = |why: &str| anyhow::anyhow!("`{text}` is not a valid USER@HOST[:PORT]: {why}");
    let (user, rest) = match text.split_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, text),
    };
    if user.is_some_and(|user| user.is_empty() || user.starts_with('-')) {
        return Err(invalid("the user name is empty or starts with `-`"));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("`[` without `]`"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected `:PORT` after `]`"))?,
                ),
            ),
        }
    } else {
        match rest.matches(':').count() {
            0 => (rest, None),
            1 => {
                let (host, port) = rest.split_once(':').expect("one colon");
                (host, Some(port))
            }
            // A bare IPv6 address: no port can be told apart from it.
            _ => (rest, None),
        }
    };
    if host.is_empty()
        || host.starts_with('-')
        || host.chars().any(|c| c.is_whitespace() || c == '@')
    {
        return Err(invalid(
            "the host is empty, starts with `-` or contains spaces",
        ));
    }
    let port = port
        .map(|port| match port.parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid("the port must be a number from 1 to 65535")),
            Ok(port) => Ok(port),
        })
        .transpose()?;
    Ok((user.map(str::to_owned), host.to_owned(), port))
}

/// The config file's text with profile `name` added (or replaced when `replace`).
pub fn add_profile(
    text: &str,
    name: &str,
    profile: &HostProfile,
    replace: bool,
) -> anyhow::Result<String> {
    let mut document = parse(text)?;
    let remote = child_table(document.as_table_mut(), "remote")?;
    let hosts = child_table(remote, "hosts")?;
    if hosts.contains_key(name) && !replace {
        bail!(
            "a host profile named `{name}` already exists\nhint: pass --force to replace it, or remove it with `cargo xtask remote hosts remove {name}`"
        );
    }
    hosts.insert(name, Item::Table(profile_table(profile)?));
    Ok(document.to_string())
}

/// The config file's text without profile `name`; tables that only held it go too.
pub fn remove_profile(text: &str, name: &str) -> anyhow::Result<String> {
    let mut document = parse(text)?;
    let removed = document
        .get_mut("remote")
        .and_then(Item::as_table_mut)
        .and_then(|remote| remote.get_mut("hosts"))
        .and_then(Item::as_table_mut)
        .and_then(|hosts| hosts.remove(name));
    if removed.is_none() {
        bail!("there is no host profile named `{name}`\nhint: see the profiles with `cargo xtask remote hosts list`");
    }
    // Tables this command created implicitly would otherwise linger as empty headers.
    let remote = document["remote"].as_table_mut().expect("checked above");
    if remote["hosts"]
        .as_table()
        .is_some_and(|hosts| hosts.is_empty() && hosts.is_implicit())
    {
        remote.remove("hosts");
    }
    if remote.is_empty() && remote.is_implicit() {
        document.remove("remote");
    }
    Ok(document.to_string())
}

fn parse(text: &str) -> anyhow::Result<DocumentMut> {
    text.parse::<DocumentMut>()
        .context("parsing the config file\nhint: fix the TOML syntax (`cargo xtask config show` names the line)")
}

/// The table `key` inside `parent`, created implicitly (no header of its own) when missing.
fn child_table<'a>(parent: &'a mut Table, key: &str) -> anyhow::Result<&'a mut Table> {
    let item = parent.entry(key).or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    });
    item.as_table_mut().with_context(|| {
        format!("`{key}` in the config file is not a [table]\nhint: edit the host profiles by hand, or write them as [remote.hosts.NAME] tables")
    })
}

fn profile_table(profile: &HostProfile) -> anyhow::Result<Table> {
    let mut table = Table::new();
    if let Some(user) = &profile.user {
        table["user"] = toml_edit::value(user.as_str());
    }
    table["host"] = toml_edit::value(profile.host.as_str());
    if let Some(port) = profile.port {
        table["port"] = toml_edit::value(i64::from(port));
    }
    if let Some(identity) = &profile.identity_file {
        table["identity_file"] = toml_edit::value(path_text(identity)?);
    }
    if let Some(repo_path) = &profile.repo_path {
        table["repo_path"] = toml_edit::value(path_text(repo_path)?);
    }
    Ok(table)
}

fn path_text(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| {
        format!(
            "the path {} is not valid UTF-8, which TOML cannot hold",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_FILE: &str = "\
# my settings, keep this comment
version = 1

[general]
log_level = \"debug\" # trailing comment

[remote]
ssh_timeout = 3

[remote.hosts.old]
host = \"old.lan\"

[orchestrator]
url = \"http://10.0.0.2:8080\"
";

    fn profile() -> HostProfile {
        HostProfile {
            user: Some("me".into()),
            host: "box.lan".into(),
            port: Some(2222),
            identity_file: Some("~/.ssh/id_box".into()),
            repo_path: Some("~/llama-orch".into()),
        }
    }

    #[test]
    fn add_keeps_comments_and_places_the_profile_under_remote() {
        let text = add_profile(USER_FILE, "box", &profile(), false).unwrap();
        assert!(text.contains("# my settings, keep this comment"), "{text}");
        assert!(
            text.contains("log_level = \"debug\" # trailing comment"),
            "{text}"
        );
        let new_table = text.find("[remote.hosts.box]").expect("table added");
        assert!(new_table < text.find("[orchestrator]").unwrap(), "{text}");
        let parsed = crate::config::parse_config(&text, Path::new("c.toml")).unwrap();
        assert_eq!(parsed.remote.hosts["box"], profile());
        assert_eq!(parsed.remote.ssh_timeout, Some(3));
    }

    #[test]
    fn add_then_remove_restores_the_file_exactly() {
        let added = add_profile(USER_FILE, "box", &profile(), false).unwrap();
        assert_eq!(remove_profile(&added, "box").unwrap(), USER_FILE);
        let minimal = "version = 1\n";
        let added = add_profile(minimal, "box", &profile(), false).unwrap();
        assert!(!added.contains("[remote]\n"), "no empty header: {added}");
        assert_eq!(remove_profile(&added, "box").unwrap(), minimal);
    }

    #[test]
    fn add_refuses_to_overwrite_without_replace() {
        let error = add_profile(USER_FILE, "old", &profile(), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--force"), "{error}");
        let replaced = add_profile(USER_FILE, "old", &profile(), true).unwrap();
        assert!(
            replaced.contains("box.lan") && !replaced.contains("old.lan"),
            "{replaced}"
        );
    }

    #[test]
    fn remove_of_an_unknown_name_is_an_error() {
        assert!(remove_profile(USER_FILE, "nope").is_err());
    }

    #[test]
    fn targets_parse_with_optional_user_and_port() {
        assert_eq!(
            parse_target("me@box:2222").unwrap(),
            (Some("me".into()), "box".into(), Some(2222))
        );
        assert_eq!(parse_target("box").unwrap(), (None, "box".into(), None));
        assert_eq!(
            parse_target("me@[::1]:22").unwrap(),
            (Some("me".into()), "::1".into(), Some(22))
        );
        assert_eq!(
            parse_target("fe80::1").unwrap(),
            (None, "fe80::1".into(), None)
        );
        for bad in [
            "me@",
            "@box",
            "box:0",
            "box:x",
            "-oProxyCommand=x",
            "me@box:99999",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn profile_names_are_validated() {
        assert!(validate_profile_name("gpu-box_2.lan").is_ok());
        for bad in ["", "-x", "a b", "a/b", "ä"] {
            assert!(validate_profile_name(bad).is_err(), "{bad}");
        }
    }
}
