//! Model aliases: other names for served models (`"gpt-4o-mini" = "qwen2.5-coder-0.5b"`), so
//! clients configured for a hosted model's name work unchanged. They come from the `[aliases]`
//! table of orcd's configuration file (`--config`), are listed by `/v1/models` beside their
//! model, and are resolved before a job is scheduled (the audit record keeps both names).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use llorch_api::validation::validate_model_id;
use serde::Deserialize;

/// Alias → model. An alias never names another alias, so one lookup resolves it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelAliases(BTreeMap<String, String>);

/// orcd's configuration file: what does not fit a flag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

impl ModelAliases {
    /// Reads the `[aliases]` table of the configuration file at `path`.
    pub fn from_config_file(path: &Path) -> anyhow::Result<ModelAliases> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading orcd's configuration file {}", path.display()))?;
        let config: ConfigFile = toml::from_str(&text).with_context(|| {
            format!(
                "parsing orcd's configuration file {}\nhint: it holds an `[aliases]` table of `\"alias\" = \"model\"` lines",
                path.display()
            )
        })?;
        ModelAliases::new(config.aliases)
            .with_context(|| format!("in the `[aliases]` of {}", path.display()))
    }

    /// Checks every name and refuses chains and loops.
    pub fn new(aliases: BTreeMap<String, String>) -> anyhow::Result<ModelAliases> {
        for (alias, model) in &aliases {
            validate_model_id("model", alias)
                .with_context(|| format!("alias `{alias}` is not a valid model name"))?;
            validate_model_id("model", model).with_context(|| {
                format!("alias `{alias}` names `{model}`, not a valid model name")
            })?;
            if aliases.contains_key(model) {
                bail!("alias `{alias}` names `{model}`, which is itself an alias; name the model directly");
            }
        }
        Ok(ModelAliases(aliases))
    }

    /// The model `name` stands for: itself unless it is an alias.
    pub fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        self.0.get(name).map_or(name, String::as_str)
    }

    /// `(alias, model)` pairs, by alias.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(alias, model)| (alias.as_str(), model.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(pairs: &[(&str, &str)]) -> anyhow::Result<ModelAliases> {
        ModelAliases::new(
            pairs
                .iter()
                .map(|(alias, model)| (alias.to_string(), model.to_string()))
                .collect(),
        )
    }

    #[test]
    fn an_alias_resolves_to_its_model_and_other_names_to_themselves() {
        let aliases = aliases(&[("gpt-4o-mini", "qwen2.5-coder-0.5b")]).unwrap();
        assert_eq!(aliases.resolve("gpt-4o-mini"), "qwen2.5-coder-0.5b");
        assert_eq!(aliases.resolve("gemma3-270m"), "gemma3-270m");
        assert_eq!(
            aliases.iter().collect::<Vec<_>>(),
            [("gpt-4o-mini", "qwen2.5-coder-0.5b")]
        );
    }

    #[test]
    fn chains_and_bad_names_are_refused() {
        let chain = aliases(&[("a", "b"), ("b", "c")]).unwrap_err();
        assert!(
            format!("{chain:#}").contains("itself an alias"),
            "{chain:#}"
        );
        assert!(aliases(&[("a b", "m")]).is_err());
        assert!(aliases(&[("a", "")]).is_err());
    }

    #[test]
    fn the_config_file_holds_an_aliases_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orcd.toml");
        std::fs::write(
            &path,
            "[aliases]\n\"gpt-4o-mini\" = \"qwen2.5-coder-0.5b\"\n",
        )
        .unwrap();
        let aliases = ModelAliases::from_config_file(&path).unwrap();
        assert_eq!(aliases.resolve("gpt-4o-mini"), "qwen2.5-coder-0.5b");
        std::fs::write(&path, "[alias]\nx = \"y\"\n").unwrap();
        let error = ModelAliases::from_config_file(&path).unwrap_err();
        assert!(
            format!("{error:#}").contains("unknown field `alias`"),
            "{error:#}"
        );
    }
}
