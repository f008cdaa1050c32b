//! Semantic checks of a parsed catalog: what TOML and serde cannot see (duplicate ids, unsafe
//! file names, inconsistent conversion settings) and what deserves a warning.

use std::{collections::HashMap, fmt};

use serde::Serialize;

use crate::entry::{local_name, ModelEntry, Source, SplitPart};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, printed `origin:line: error: model `id`: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub origin: String,
    /// 1-based line of the entry (or of the error, for syntax errors reported by TOML itself,
    /// whose message then carries the line and column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The entry's id, or `#N` for an entry without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        origin: String,
        line: Option<usize>,
        model: Option<String>,
        message: String,
    ) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            origin,
            line,
            model,
            message,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {severity}: ")?;
        if let Some(model) = &self.model {
            write!(f, "model `{model}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Ids become directory names and appear in URLs and commands: keep them boring.
pub fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
        && !id.contains("..")
}

/// A plain file name: joined onto the model directory, it must not escape it.
fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name != crate::MANIFEST_FILE
}

/// A file inside a hub repository: plain names, optionally below plain folders.
fn valid_hub_path(path: &str) -> bool {
    path.split('/').all(valid_file_name)
}

fn valid_sha256(hash: &str) -> bool {
    hash.len() == 64 && hash.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

fn valid_repo(repo: &str) -> bool {
    let mut parts = repo.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    [owner, name].iter().all(|part| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    })
}

/// `origin` names the catalog as a whole; `origins[i]` the file entry `i` came from (merged
/// catalogs hold entries of several files).
pub(crate) fn validate(
    origin: &str,
    models: &[ModelEntry],
    lines: &[usize],
    origins: &[String],
) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    if models.is_empty() {
        diagnostics.push(Diagnostic::error(
            origin.to_owned(),
            None,
            None,
            "the catalog has no `[[models]]` entries".to_owned(),
        ));
        return diagnostics;
    }
    let mut first_seen: HashMap<&str, (&str, usize)> = HashMap::new();
    let mut defaults = Vec::new();
    for ((entry, &line), entry_origin) in models.iter().zip(lines).zip(origins) {
        let mut report = |severity: Severity, message: String| {
            diagnostics.push(Diagnostic {
                severity,
                origin: entry_origin.clone(),
                line: Some(line),
                model: Some(entry.id.clone()),
                message,
            })
        };
        let error = Severity::Error;
        match first_seen.get(entry.id.as_str()) {
            Some(&(first_origin, first)) if first_origin == entry_origin => report(
                error,
                format!("duplicate id, first defined on line {first}"),
            ),
            Some(&(first_origin, first)) => report(
                error,
                format!("duplicate id, already defined in {first_origin}:{first}; ids must be unique across the catalog and catalog.d"),
            ),
            None => {
                first_seen.insert(&entry.id, (entry_origin, line));
            }
        }
        if !valid_id(&entry.id) {
            report(
                error,
                "`id` must start with a lowercase letter or digit and contain only `a-z 0-9 - . _`"
                    .to_owned(),
            );
        }
        if entry.name.trim().is_empty() {
            report(error, "`name` is empty".to_owned());
        }
        if !valid_file_name(&entry.file) {
            report(
                error,
                format!(
                    "`file` `{}` must be a plain file name inside the model directory",
                    entry.file
                ),
            );
        } else if !entry.file.ends_with(".gguf") {
            report(
                error,
                format!("`file` `{}` must be a `.gguf` file", entry.file),
            );
        }
        if entry.size == 0 {
            report(
                error,
                "`size` must be the file's size in bytes, not 0".to_owned(),
            );
        }
        if let Some(hash) = &entry.sha256 {
            if !valid_sha256(hash) {
                report(
                    error,
                    format!("`sha256` `{hash}` is not 64 lowercase hex digits"),
                );
            }
        }
        if entry.default {
            defaults.push(if entry_origin == origin {
                entry.id.clone()
            } else {
                format!("{} in {entry_origin}", entry.id)
            });
        }
        match &entry.source {
            Source::Hf(hub) => {
                if !valid_repo(&hub.repo) {
                    report(
                        error,
                        format!("`source.repo` `{}` is not `owner/name`", hub.repo),
                    );
                }
                if hub.revision.is_empty() || hub.revision.contains(['/', ' ']) {
                    report(
                        error,
                        format!(
                            "`source.revision` `{}` is not a plain branch, tag or commit",
                            hub.revision
                        ),
                    );
                }
                for file in &hub.files {
                    let plain = if entry.requires_conversion {
                        valid_file_name(file)
                    } else {
                        valid_hub_path(file)
                    };
                    if !plain {
                        report(
                            error,
                            format!("`source.files` entry `{file}` must be a plain file name (or `folder/name` for a GGUF)"),
                        );
                    }
                }
                if !entry.requires_conversion && !hub.files.is_empty() {
                    if let Some(problem) = split_problem(&entry.file, &hub.files) {
                        report(error, problem);
                    }
                }
                if entry.requires_conversion && hub.files.is_empty() {
                    report(
                        error,
                        "`requires_conversion` needs `source.files`: the files the converter reads"
                            .to_owned(),
                    );
                }
            }
            Source::Local(local) => {
                if local.path.as_os_str().is_empty() {
                    report(error, "`source.path` is empty".to_owned());
                }
                if entry.requires_conversion {
                    report(
                        error,
                        "local sources are GGUF files and cannot `requires_conversion`".to_owned(),
                    );
                }
            }
            Source::Pip(pip) => {
                if pip.packages.is_empty() {
                    report(error, "`source.packages` is empty".to_owned());
                }
                let mut seen = HashMap::new();
                for package in &pip.packages {
                    if seen.insert(package.normalized_name(), ()).is_some() {
                        report(
                            error,
                            format!("pip package `{}` is listed twice", package.name),
                        );
                    }
                }
                if entry.requires_conversion {
                    report(
                        error,
                        "pip sources are assembled GGUF files and cannot `requires_conversion`"
                            .to_owned(),
                    );
                }
                if entry.sha256.is_none() {
                    report(
                        Severity::Warning,
                        "pip parts have no checksum of the assembled file; pin `sha256`".to_owned(),
                    );
                }
            }
        }
        match (entry.requires_conversion, &entry.converter) {
            (true, None) => report(error, "`requires_conversion` is set but `converter` is missing".to_owned()),
            (true, Some(converter)) if !valid_file_name(converter) || !converter.ends_with(".py") => report(
                error,
                format!("`converter` `{converter}` must be a script name such as `convert_hf_to_gguf.py`"),
            ),
            (false, Some(_)) => report(error, "`converter` is set but `requires_conversion` is not".to_owned()),
            (false, None) if !entry.converter_args.is_empty() => {
                report(error, "`converter_args` is set but `requires_conversion` is not".to_owned())
            }
            _ => {}
        }
        if entry.requires_conversion && entry.sha256.is_some() {
            report(
                error,
                "a converted file's bytes depend on the converter version; do not pin `sha256`"
                    .to_owned(),
            );
        }
        if !entry.verified {
            report(
                Severity::Warning,
                format!(
                    "source `{}` is not verified to exist; `models download {}` may fail",
                    entry.source_summary(),
                    entry.id
                ),
            );
        }
    }
    match defaults.as_slice() {
        [_] => {}
        [] => diagnostics.push(Diagnostic::error(
            origin.to_owned(),
            None,
            None,
            "no entry has `default = true`; mark exactly one".to_owned(),
        )),
        several => diagnostics.push(Diagnostic::error(
            origin.to_owned(),
            None,
            None,
            format!(
                "several entries have `default = true` ({}); mark exactly one",
                several.join(", ")
            ),
        )),
    }
    diagnostics
}

/// Why `files` of a GGUF (not converted) hub entry are wrong: they must be `file` (maybe in a
/// folder), or every part of one split GGUF in order, the first being `file`.
fn split_problem(file: &str, files: &[String]) -> Option<String> {
    let first = &files[0];
    if local_name(first) != file {
        return Some(format!(
            "`source.files` must start with `file` `{file}` (the file the worker loads), not `{first}`"
        ));
    }
    if files.len() == 1 {
        return None;
    }
    let expected = SplitPart::parse(first)
        .filter(|part| part.index == 1)
        .map(|part| part.all_names());
    match expected {
        Some(names) if names == files => None,
        Some(names) => Some(format!(
            "`source.files` must list every part of the split GGUF in order: {}",
            names.join(", ")
        )),
        None => Some(
            "several `source.files` are only for the parts of a split GGUF (`NAME-00001-of-0000N.gguf`, the first being `file`) or models that `requires_conversion`".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::{parsing_tests::diagnostics_of, tests::MINIMAL, Catalog, Severity};

    #[test]
    fn duplicate_ids_are_errors_naming_the_first_line() {
        let text = format!("{MINIMAL}{}", MINIMAL.replace("default = true\n", ""));
        let found = diagnostics_of(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0]
                .contains("t.toml:13: error: model `tiny`: duplicate id, first defined on line 2"),
            "{found:#?}"
        );
    }

    #[test]
    fn unverified_sources_are_warnings_only() {
        let text = MINIMAL.replace("verified = true", "verified = false");
        let catalog = Catalog::parse(&text, "t.toml").unwrap();
        let found = catalog.validate();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].severity, Severity::Warning);
        assert!(found[0].message.contains("not verified"), "{found:#?}");
    }

    #[test]
    fn unsafe_names_and_bad_hashes_are_errors() {
        let text = MINIMAL
            .replace("id = \"tiny\"", "id = \"../escape\"")
            .replace("file = \"tiny.gguf\"", "file = \"../x.gguf\"")
            .replace("size = 1024", "size = 1024\nsha256 = \"ABC\"")
            .replace("example/tiny-GGUF", "no-slash");
        let found = diagnostics_of(&text);
        assert_eq!(found.len(), 4, "{found:#?}");
        for needle in [
            "`id` must",
            "`file` `../x.gguf`",
            "`sha256` `ABC`",
            "`source.repo` `no-slash`",
        ] {
            assert!(
                found.iter().any(|d| d.contains(needle)),
                "{needle}: {found:#?}"
            );
        }
    }

    #[test]
    fn exactly_one_default_is_required() {
        let none = MINIMAL.replace("default = true\n", "");
        assert!(diagnostics_of(&none)[0].contains("no entry has `default = true`"));
        let two = format!("{MINIMAL}{}", MINIMAL.replace("\"tiny\"", "\"tiny2\""));
        let found = diagnostics_of(&two);
        assert!(
            found[0].contains("several entries have `default = true` (tiny, tiny2)"),
            "{found:#?}"
        );
    }

    #[test]
    fn conversion_settings_must_be_consistent() {
        let missing_files = MINIMAL.replace(
            "verified = true",
            "verified = true\nrequires_conversion = true",
        );
        let found = diagnostics_of(&missing_files);
        assert!(
            found.iter().any(|d| d.contains("needs `source.files`")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|d| d.contains("`converter` is missing")),
            "{found:#?}"
        );

        let stray_converter = MINIMAL.replace(
            "verified = true",
            "verified = true\nconverter = \"convert_hf_to_gguf.py\"",
        );
        assert!(diagnostics_of(&stray_converter)[0].contains("`requires_conversion` is not"));

        let good = MINIMAL
            .replace("verified = true", "verified = true\nrequires_conversion = true\nconverter = \"convert_hf_to_gguf.py\"\nconverter_args = [\"--outtype\", \"f16\"]")
            .replace("repo = \"example/tiny-GGUF\"", "repo = \"example/tiny\", files = [\"config.json\", \"model.safetensors\"]");
        assert!(
            diagnostics_of(&good).is_empty(),
            "{:#?}",
            diagnostics_of(&good)
        );
    }

    #[test]
    fn pip_sources_need_packages_and_warn_without_a_pin() {
        let text = MINIMAL.replace(
            "source = { kind = \"hf\", repo = \"example/tiny-GGUF\" }",
            "source = { kind = \"pip\", packages = [\"a-part1==1\", \"A_part1==1\"] }",
        );
        let catalog = Catalog::parse(&text, "t.toml").unwrap();
        let found = catalog.validate();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].message.contains("listed twice"), "{found:#?}");
        assert_eq!(found[1].severity, Severity::Warning);
        let empty = text.replace("[\"a-part1==1\", \"A_part1==1\"]", "[]");
        assert!(diagnostics_of(&empty)[0].contains("`source.packages` is empty"));
    }

    #[test]
    fn hub_files_of_a_gguf_are_its_split_parts_or_a_folder_path() {
        let with_files = |file: &str, files: &str| {
            MINIMAL
                .replace("file = \"tiny.gguf\"", &format!("file = \"{file}\""))
                .replace(
                    "repo = \"example/tiny-GGUF\"",
                    &format!("repo = \"example/tiny-GGUF\", files = [{files}]"),
                )
        };
        let split = with_files(
            "t-00001-of-00002.gguf",
            "\"Q4/t-00001-of-00002.gguf\", \"Q4/t-00002-of-00002.gguf\"",
        );
        assert!(
            diagnostics_of(&split).is_empty(),
            "{:?}",
            diagnostics_of(&split)
        );
        let folder = with_files("tiny.gguf", "\"Q4/tiny.gguf\"");
        assert!(
            diagnostics_of(&folder).is_empty(),
            "{:?}",
            diagnostics_of(&folder)
        );

        let missing_part = with_files(
            "t-00001-of-00003.gguf",
            "\"t-00001-of-00003.gguf\", \"t-00002-of-00003.gguf\"",
        );
        assert!(
            diagnostics_of(&missing_part)[0].contains("t-00003-of-00003.gguf"),
            "{:?}",
            diagnostics_of(&missing_part)
        );
        let not_first = with_files("tiny.gguf", "\"other.gguf\"");
        assert!(diagnostics_of(&not_first)[0].contains("must start with `file`"));
        let unrelated = with_files("tiny.gguf", "\"tiny.gguf\", \"b.gguf\"");
        assert!(diagnostics_of(&unrelated)[0].contains("split GGUF"));
        let escaping = with_files("tiny.gguf", "\"../tiny.gguf\"");
        assert!(diagnostics_of(&escaping)
            .iter()
            .any(|d| d.contains("plain file name")));
    }

    #[test]
    fn local_sources_need_a_path() {
        let text = MINIMAL.replace(
            "source = { kind = \"hf\", repo = \"example/tiny-GGUF\" }",
            "source = { kind = \"local\", path = \"\" }",
        );
        assert!(diagnostics_of(&text)[0].contains("`source.path` is empty"));
    }

    #[test]
    fn an_empty_catalog_is_an_error() {
        let catalog = Catalog::parse("", "t.toml").unwrap();
        assert_eq!(
            catalog.validate()[0].message,
            "the catalog has no `[[models]]` entries"
        );
    }
}
