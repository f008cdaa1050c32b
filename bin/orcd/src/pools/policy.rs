//! Per-model placement policies (`orcd --model-policies FILE`): which hosts, how many replicas,
//! how long an idle worker stays, and how its workers are started.
//!
//! ```toml
//! [defaults]
//! keep_alive = "5m"
//!
//! [models."qwen2.5-coder-0.5b"]
//! hosts = ["gpu-box", "laptop"]
//! min_replicas = 0
//! max_replicas = 2
//! keep_alive = "30s"      # "never": no idle unload
//! scale_out_after = "10s"
//! slots = 4
//! ctx_size = 2048
//! backend = "cpu"
//! pin = false
//! on_demand = true
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use llorch_api::Backend;
use serde::Deserialize;

use super::placement::ModelPolicy;

/// The policies of every model: a model without an entry gets the defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policies {
    defaults: ModelPolicy,
    models: BTreeMap<String, ModelPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    defaults: PolicyEntry,
    #[serde(default)]
    models: BTreeMap<String, PolicyEntry>,
}

/// One table of the file; absent fields fall back to `[defaults]`, then to the built-in ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyEntry {
    hosts: Option<Vec<String>>,
    min_replicas: Option<u32>,
    max_replicas: Option<u32>,
    keep_alive: Option<String>,
    scale_out_after: Option<String>,
    slots: Option<u32>,
    ctx_size: Option<u32>,
    backend: Option<Backend>,
    pin: Option<bool>,
    on_demand: Option<bool>,
}

impl Policies {
    /// Reads and checks the file; errors name the table and the field.
    pub fn load(path: &Path) -> anyhow::Result<Policies> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the model policies {}", path.display()))?;
        Policies::parse(&text).with_context(|| format!("in the model policies {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Policies> {
        let file: PolicyFile = toml::from_str(text)?;
        let defaults = file
            .defaults
            .apply(ModelPolicy::default())
            .context("in `[defaults]`")?;
        let mut models = BTreeMap::new();
        for (model, entry) in file.models {
            let policy = entry
                .apply(defaults.clone())
                .with_context(|| format!("in `[models.\"{model}\"]`"))?;
            models.insert(model, policy);
        }
        Ok(Policies { defaults, models })
    }

    pub fn of(&self, model: &str) -> ModelPolicy {
        self.models
            .get(model)
            .cloned()
            .unwrap_or_else(|| self.defaults.clone())
    }

    /// Models named in the file (listed by `/v1/models` even before a host reports them).
    pub fn named_models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }
}

impl PolicyEntry {
    fn apply(self, base: ModelPolicy) -> anyhow::Result<ModelPolicy> {
        let policy = ModelPolicy {
            hosts: self.hosts.or(base.hosts),
            min_replicas: self.min_replicas.unwrap_or(base.min_replicas),
            max_replicas: self.max_replicas.unwrap_or(base.max_replicas),
            keep_alive: match self.keep_alive {
                Some(text) => keep_alive(&text)?,
                None => base.keep_alive,
            },
            scale_out_after: match self.scale_out_after {
                Some(text) => duration("scale_out_after", &text)?,
                None => base.scale_out_after,
            },
            slots: self.slots.unwrap_or(base.slots),
            ctx_size: self.ctx_size.unwrap_or(base.ctx_size),
            backend: self.backend.or(base.backend),
            pin: self.pin.unwrap_or(base.pin),
            on_demand: self.on_demand.unwrap_or(base.on_demand),
        };
        if policy.max_replicas == 0 || policy.min_replicas > policy.max_replicas {
            anyhow::bail!(
                "`min_replicas` ({}) must not exceed `max_replicas` ({}), which must be at least 1",
                policy.min_replicas,
                policy.max_replicas
            );
        }
        let mut launch = llorch_api::pool::WorkerLaunch::of_model("m");
        launch.slots = Some(policy.slots);
        launch.ctx_size = Some(policy.ctx_size);
        launch.validate().map_err(anyhow::Error::msg)?;
        Ok(policy)
    }
}

fn keep_alive(text: &str) -> anyhow::Result<Option<Duration>> {
    match text {
        "never" => Ok(None),
        text => duration("keep_alive", text).map(Some),
    }
}

fn duration(field: &str, text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text).with_context(|| {
        format!("`{field}` = \"{text}\" is not a duration: write e.g. \"30s\", \"5m\" or \"1h\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_inherit_the_defaults_table_then_the_built_in_ones() {
        let policies = Policies::parse(
            r#"
            [defaults]
            keep_alive = "1m"
            slots = 2

            [models."qwen2.5-coder-0.5b"]
            hosts = ["a"]
            max_replicas = 3
            keep_alive = "5s"
            backend = "cpu"

            [models.gemma3-270m]
            keep_alive = "never"
            pin = true
            "#,
        )
        .unwrap();
        let qwen = policies.of("qwen2.5-coder-0.5b");
        assert_eq!(qwen.hosts, Some(vec!["a".to_owned()]));
        assert_eq!((qwen.max_replicas, qwen.slots), (3, 2));
        assert_eq!(qwen.keep_alive, Some(Duration::from_secs(5)));
        assert_eq!(qwen.backend, Some(Backend::Cpu));
        let gemma = policies.of("gemma3-270m");
        assert_eq!(gemma.keep_alive, None);
        assert!(gemma.pin);
        let other = policies.of("unnamed");
        assert_eq!(other.keep_alive, Some(Duration::from_secs(60)));
        assert_eq!(other.ctx_size, 2048);
        assert!(other.on_demand);
        assert_eq!(
            policies.named_models().collect::<Vec<_>>(),
            vec!["gemma3-270m", "qwen2.5-coder-0.5b"]
        );
        assert_eq!(
            Policies::default().of("x").keep_alive,
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn mistakes_name_the_table_and_field() {
        let error = |text: &str| format!("{:#}", Policies::parse(text).unwrap_err());
        assert!(error("[models.m]\nkeep_alive = \"soon\"").contains("`keep_alive` = \"soon\""));
        assert!(error("[models.m]\nkeep_alive = \"soon\"").contains("[models.\"m\"]"));
        assert!(error("[models.m]\nslot = 2").contains("slot"));
        assert!(error("[models.m]\nmin_replicas = 3\nmax_replicas = 2").contains("min_replicas"));
        assert!(error("[defaults]\nslots = 0").contains("`slots`"));
        assert!(error("[models.m]\nbackend = \"rocm\"").contains("rocm"));
    }
}
