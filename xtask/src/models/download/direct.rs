//! `models download hf:OWNER/REPO/FILE.gguf`: any GGUF of a hub repository, without a catalog
//! entry beforehand. The hub's API says which files exist and what each must hash to; the file
//! (every part, for a split GGUF) is downloaded and checked like a catalog model, and only then
//! is its entry written to `catalog.d/<id>.toml`, so a refused download leaves neither a model
//! nor an entry behind.

use anyhow::{bail, Context as _};
use llorch_catalog::{
    local_name, user_entry_path, valid_id, write_user_entry, HubSource, ModelEntry, Source,
    SplitPart,
};
use serde::Serialize;

use super::{download, Bars};
use crate::{models::gguf, models::load_catalog, output::human_bytes, Context};

/// `OWNER/REPO/PATH/IN/REPO.gguf`, split.
#[derive(Debug, PartialEq, Eq)]
struct HubFileSpec<'a> {
    repo: String,
    path: &'a str,
}

fn parse_spec(spec: &str) -> anyhow::Result<HubFileSpec<'_>> {
    let mut parts = spec.splitn(3, '/');
    let (Some(owner), Some(name), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("`hf:{spec}` does not name a file: write hf:OWNER/REPO/FILE.gguf\nhint: cargo xtask models download hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf");
    };
    let plain = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !plain(owner) || !plain(name) {
        bail!("`{owner}/{name}` in `hf:{spec}` is not a hub repository (OWNER/REPO)");
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment.starts_with('.'))
    {
        bail!("`{path}` in `hf:{spec}` is not a file path inside the repository");
    }
    if !path.ends_with(".gguf") {
        bail!(
            "`{path}` is not a GGUF file: the worker loads `.gguf` files\nhint: pick a `.gguf` file of {}/{owner}/{name}; for safetensors repositories add a catalog entry with `requires_conversion`",
            llorch_catalog::HUB_WEB_URL
        );
    }
    Ok(HubFileSpec {
        repo: format!("{owner}/{name}"),
        path,
    })
}

/// The id a file gets without `--id`: its name without `.gguf` and without the split suffix,
/// in lowercase, with anything but `a-z 0-9 - . _` turned into `-`.
fn derived_id(path: &str) -> String {
    let name = local_name(path);
    let stem = match SplitPart::parse(name) {
        Some(part) => part.prefix,
        None => name.strip_suffix(".gguf").unwrap_or(name),
    };
    let mut id = String::new();
    for c in stem.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_') {
            c
        } else {
            '-'
        };
        if !(c == '-' && id.ends_with('-')) {
            id.push(c);
        }
    }
    id.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .replace("..", ".")
}

/// `0.5B`, `7B`, `270M` as written in the file name, for `params`.
fn params_from_name(name: &str) -> Option<String> {
    name.split(['-', '_'])
        .find(|word| {
            word.strip_suffix(['B', 'b', 'M', 'm'])
                .is_some_and(|number| {
                    number.starts_with(|c: char| c.is_ascii_digit())
                        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
                })
        })
        .map(str::to_uppercase)
}

#[derive(Serialize)]
struct Report<'a> {
    id: &'a str,
    status: &'static str,
    path: &'a std::path::Path,
    files: &'a [llorch_catalog::ManifestFile],
    size: u64,
    sha256: &'a str,
    source: &'a str,
    catalog_file: &'a std::path::Path,
}

pub fn run(
    cx: &Context,
    spec: &str,
    id: Option<&str>,
    revision: &str,
    force: bool,
) -> anyhow::Result<()> {
    let spec = parse_spec(spec)?;
    let id = id.map_or_else(|| derived_id(spec.path), str::to_owned);
    if !valid_id(&id) {
        bail!("`{id}` is not a usable model id: ids start with a lowercase letter or digit and contain only `a-z 0-9 - . _`\nhint: pass --id NAME");
    }
    let catalog = load_catalog(cx)?;
    let catalog_file = user_entry_path(&cx.settings.catalog_dir, &id);

    let listing = llorch_fetch::hub::list_files(&Bars::new(cx), &spec.repo, revision)?;
    let files = match SplitPart::parse(spec.path) {
        Some(part) if part.index != 1 => bail!(
            "`{}` is part {} of a split GGUF; name the first part\nhint: cargo xtask models download hf:{}/{}",
            spec.path,
            part.index,
            spec.repo,
            part.all_names()[0]
        ),
        Some(part) => part.all_names(),
        None => vec![spec.path.to_owned()],
    };
    for file in &files {
        let Some(sibling) = listing.file(file) else {
            let ggufs: Vec<&str> = listing
                .siblings
                .iter()
                .map(|sibling| sibling.rfilename.as_str())
                .filter(|name| name.ends_with(".gguf"))
                .take(12)
                .collect();
            bail!(
                "`{}` has no file `{file}` at revision `{revision}`\nhint: {}",
                spec.repo,
                if ggufs.is_empty() {
                    "the repository has no GGUF files".to_owned()
                } else {
                    format!("its GGUF files include: {}", ggufs.join(", "))
                }
            );
        };
        if sibling.lfs.is_none() {
            bail!(
                "the hub publishes no SHA-256 for `{file}` of `{}` (it is not stored with Git LFS), so the download could not be checked\nhint: GGUF files on the hub are LFS files; check the file name",
                spec.repo
            );
        }
    }
    let first = listing
        .file(&files[0])
        .and_then(|sibling| sibling.lfs.as_ref())
        .context("the first file was listed a moment ago")?;
    let file = local_name(&files[0]).to_owned();
    let stem = match SplitPart::parse(&file) {
        Some(part) => part.prefix.to_owned(),
        None => file.trim_end_matches(".gguf").to_owned(),
    };
    let mut entry = ModelEntry {
        id: id.clone(),
        name: stem.clone(),
        description: format!(
            "{} of {} on the hub, added with `cargo xtask models download`",
            files[0], spec.repo
        ),
        params: params_from_name(&stem).unwrap_or_else(|| "unknown".to_owned()),
        file,
        size: first.size,
        // Left unpinned while downloading, so the download is checked against what the hub
        // publishes for every file; pinned below once the bytes matched.
        sha256: None,
        verified: true,
        default: false,
        chat_template: false,
        requires_conversion: false,
        converter: None,
        converter_args: Vec::new(),
        source: Source::Hf(HubSource {
            repo: spec.repo.clone(),
            // Pinned to the commit the published hashes belong to.
            revision: listing.sha.clone(),
            files: if files.len() == 1 && files[0] == local_name(&files[0]) {
                Vec::new()
            } else {
                files.clone()
            },
        }),
    };

    if let Some(existing) = catalog.get(&id) {
        let origin = catalog.origin_of(&id).unwrap_or_default();
        let same_file = matches!(&existing.source, Source::Hf(hub) if hub.repo == spec.repo)
            && existing.hub_files() == entry.hub_files();
        if origin != catalog_file.display().to_string() || !same_file {
            bail!(
                "the catalog already has a model `{id}` ({}, from {origin})\nhint: pass --id with another name",
                existing.source_summary()
            );
        }
    }

    // A copy downloaded earlier from another revision whose file has changed since is not the
    // file the hub publishes now: download it again rather than pin the new commit to old bytes.
    let model_dir = llorch_catalog::model_dir(&cx.settings.model_base_dir, &id);
    let stale = llorch_catalog::Manifest::read(&model_dir)
        .ok()
        .flatten()
        .and_then(|manifest| manifest.main_file().cloned())
        .is_some_and(|recorded| recorded.sha256 != first.sha256);
    if stale {
        cx.out.status(format!(
            "`{id}` is here, but the hub now publishes other bytes for {}; downloading it again",
            files[0]
        ));
    }
    let outcome = download(cx, &entry, force || stale)?;
    let main = outcome
        .manifest
        .main_file()
        .context("the manifest just written lacks the model file")?;
    entry.sha256 = Some(main.sha256.clone());
    let info = gguf::read_info(&outcome.path);
    entry.chat_template = info.chat_template;
    if let Some(name) = info.name.filter(|name| !name.trim().is_empty()) {
        entry.name = name;
    }
    if let Some(label) = info.size_label {
        entry.params = label;
    }
    let written = write_user_entry(
        &cx.settings.catalog_dir,
        &entry,
        &format!(
            "Written by `cargo xtask models download hf:{}/{}`; the SHA-256 is the one the hub\npublishes for the file, checked after the download.",
            spec.repo, spec.path
        ),
    )
    .with_context(|| format!("recording `{id}` in {}", catalog_file.display()))?;

    let status = if outcome.already_present {
        "already-present"
    } else {
        "downloaded"
    };
    if cx.out.json() {
        return cx.out.print_json(&Report {
            id: &id,
            status,
            path: &outcome.path,
            files: &outcome.manifest.files,
            size: outcome.manifest.total_size(),
            sha256: &main.sha256,
            source: &entry.source_summary(),
            catalog_file: &written,
        });
    }
    let paint = cx.out.paint();
    cx.out.status(format!(
        "{} `{id}` from {} ({} in {} file(s), sha256 checked against the hub); recorded in {}",
        paint.green(status),
        spec.repo,
        human_bytes(outcome.manifest.total_size()),
        outcome.manifest.files.len(),
        written.display()
    ));
    cx.out.println(outcome.path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split_into_repo_and_path() {
        assert_eq!(
            parse_spec("o/r/f.gguf").unwrap(),
            HubFileSpec {
                repo: "o/r".into(),
                path: "f.gguf"
            }
        );
        assert_eq!(parse_spec("o/r/Q4/f.gguf").unwrap().path, "Q4/f.gguf");
        for bad in [
            "o/r",
            "o",
            "o/r/f.bin",
            "o/../f.gguf",
            "o/r/../f.gguf",
            "o/r//f.gguf",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_derive_from_the_file_name() {
        assert_eq!(
            derived_id("qwen2.5-0.5b-instruct-q4_k_m.gguf"),
            "qwen2.5-0.5b-instruct-q4_k_m"
        );
        assert_eq!(
            derived_id("Q4_K_M/Meta-Llama-3.1-70B-Q4_K_M-00001-of-00002.gguf"),
            "meta-llama-3.1-70b-q4_k_m"
        );
        assert_eq!(derived_id("Tiny Model (v2).gguf"), "tiny-model-v2");
        assert!(valid_id(&derived_id("__Odd..Name__.gguf")));
    }

    #[test]
    fn params_come_from_the_name_when_it_says() {
        assert_eq!(
            params_from_name("qwen2.5-0.5b-instruct").as_deref(),
            Some("0.5B")
        );
        assert_eq!(params_from_name("Llama-3-8B-Q4_K_M").as_deref(), Some("8B"));
        assert_eq!(params_from_name("gemma-3-270m-it").as_deref(), Some("270M"));
        assert_eq!(params_from_name("tiny"), None);
    }
}
