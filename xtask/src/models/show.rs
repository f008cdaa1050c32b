//! The read-only views: `models catalog` (entries, validation, downloaded or not), `models list`
//! (what is on disk) and `models info` (one model in full).

use llorch_catalog::{model_path, Catalog, Diagnostic, ModelEntry, Source};
use serde::Serialize;

use super::{
    catalog_entry, check_catalog, check_local_id, load_catalog, local, read_merged_catalog,
};
use crate::{
    output::{human_bytes, ExitCode},
    Context,
};

#[derive(Serialize)]
struct CatalogRow<'a> {
    #[serde(flatten)]
    entry: &'a ModelEntry,
    repo_url: Option<String>,
    downloaded: bool,
    path: std::path::PathBuf,
    /// The catalog file the entry comes from (`catalog.toml (built in)`, the configured file,
    /// or a `catalog.d` file).
    origin: &'a str,
    /// Whether that is a `catalog.d` file.
    user: bool,
}

pub fn catalog(cx: &Context) -> anyhow::Result<()> {
    let diagnostics = check_catalog(cx);
    let valid = !diagnostics.iter().any(Diagnostic::is_error);
    let catalog = read_merged_catalog(cx).ok();
    let base = &cx.settings.model_base_dir;
    let rows: Vec<CatalogRow> = catalog
        .iter()
        .flat_map(|catalog| {
            catalog
                .entries_with_origins()
                .map(move |(entry, origin)| CatalogRow {
                    entry,
                    repo_url: entry.repo_url(),
                    downloaded: local::installed(base, entry).is_some(),
                    path: model_path(base, entry),
                    origin,
                    user: catalog.is_user_origin(origin),
                })
        })
        .collect();
    if cx.out.json() {
        cx.out.print_json(&serde_json::json!({
            "catalog": catalog.as_ref().map(Catalog::origin),
            "catalog_dir": cx.settings.catalog_dir,
            "user_files": catalog.as_ref().map(Catalog::user_files),
            "valid": valid,
            "diagnostics": diagnostics,
            "models": rows,
        }))?;
    } else {
        // Diagnostics go to stderr in compiler style (`file:line: error: ...`), even with -q.
        for diagnostic in &diagnostics {
            eprintln!("{diagnostic}");
        }
        print_catalog(cx, catalog.as_ref(), &rows);
    }
    if valid {
        Ok(())
    } else {
        if !cx.out.json() {
            cx.out
                .status("the catalog has errors; fix them before downloading from it");
        }
        Err(ExitCode(1).into())
    }
}

fn print_catalog(cx: &Context, catalog: Option<&Catalog>, rows: &[CatalogRow]) {
    let Some(catalog) = catalog else {
        return;
    };
    let paint = cx.out.paint();
    let mut table = vec![[
        String::new(),
        "ID".to_owned(),
        "NAME".to_owned(),
        "PARAMS".to_owned(),
        "SIZE".to_owned(),
        "HERE".to_owned(),
        "FROM".to_owned(),
        "SOURCE".to_owned(),
    ]];
    for row in rows {
        let entry = row.entry;
        let size = if entry.requires_conversion {
            format!("~{}", human_bytes(entry.size))
        } else {
            human_bytes(entry.size)
        };
        let source = match &entry.source {
            Source::Hf(hub) if hub.revision == "main" => row.repo_url.clone().unwrap_or_default(),
            Source::Hf(hub) => format!(
                "{} @ {}",
                row.repo_url.clone().unwrap_or_default(),
                hub.revision
            ),
            Source::Pip(pip) => match pip.packages.as_slice() {
                [only] => format!("pip {only}"),
                [first, rest @ ..] => format!("pip {first} +{} more", rest.len()),
                [] => "pip".to_owned(),
            },
            Source::Local(local) => format!("added from {}", local.path.display()),
        };
        // Built-in entries say so; user entries name their catalog.d file.
        let from = if row.user {
            std::path::Path::new(row.origin)
                .file_name()
                .map(|name| format!("catalog.d/{}", name.to_string_lossy()))
                .unwrap_or_else(|| row.origin.to_owned())
        } else if row.origin.ends_with("(built in)") {
            "built-in".to_owned()
        } else {
            std::path::Path::new(row.origin)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| row.origin.to_owned())
        };
        table.push([
            if entry.default { "*" } else { "" }.to_owned(),
            entry.id.clone(),
            entry.name.clone(),
            entry.params.clone(),
            size,
            if row.downloaded { "downloaded" } else { "-" }.to_owned(),
            from,
            source,
        ]);
    }
    for (index, line) in aligned(&table).into_iter().enumerate() {
        cx.out
            .println(if index == 0 { paint.bold(&line) } else { line });
    }
    let downloaded = rows.iter().filter(|row| row.downloaded).count();
    let user = match catalog.user_files().len() {
        0 => format!(
            " (no user entries in {})",
            cx.settings.catalog_dir.display()
        ),
        files => format!(
            " + {files} file(s) in {}",
            cx.settings.catalog_dir.display()
        ),
    };
    cx.out.status(format!(
        "{} models in {}{user}, {downloaded} downloaded in {}; * default, ~ size after conversion (estimate)",
        rows.len(),
        catalog.origin(),
        cx.settings.model_base_dir.display()
    ));
}

/// Left-aligns columns; the last column is not padded.
fn aligned<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index + 1 == N {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[index]));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

#[derive(Serialize)]
struct ListRow {
    #[serde(flatten)]
    model: local::LocalModel,
    name: Option<String>,
}

pub fn list(cx: &Context, filter: Option<&str>) -> anyhow::Result<()> {
    let catalog = load_catalog(cx)?;
    let base = &cx.settings.model_base_dir;
    let needle = filter.map(str::to_lowercase);
    let rows: Vec<ListRow> = local::scan(base)
        .into_iter()
        .map(|model| ListRow {
            name: catalog.get(&model.id).map(|entry| entry.name.clone()),
            model,
        })
        .filter(|row| {
            needle.as_ref().is_none_or(|needle| {
                row.model.id.to_lowercase().contains(needle)
                    || row
                        .name
                        .as_ref()
                        .is_some_and(|name| name.to_lowercase().contains(needle))
            })
        })
        .collect();
    let total: u64 = rows.iter().map(|row| row.model.disk_usage).sum();
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "model_base_dir": base,
            "models": rows,
            "total_bytes": total,
        }));
    }
    if rows.is_empty() {
        let scope = filter
            .map(|f| format!(" matching `{f}`"))
            .unwrap_or_default();
        cx.out.status(format!(
            "no models{scope} in {}; `cargo xtask models download` fetches the default model",
            base.display()
        ));
        return Ok(());
    }
    let mut table = vec![[
        "ID".to_owned(),
        "FILE".to_owned(),
        "SIZE".to_owned(),
        "STATUS".to_owned(),
        "NAME".to_owned(),
    ]];
    for row in &rows {
        let model = &row.model;
        let mut status = model.status.label().to_owned();
        if model.partial_bytes > 0 {
            status.push_str(&format!(
                " (+{} unfinished download)",
                human_bytes(model.partial_bytes)
            ));
        }
        let name = row
            .name
            .clone()
            .unwrap_or_else(|| "(not in the catalog)".to_owned());
        if model.files.is_empty() {
            table.push([
                model.id.clone(),
                "-".to_owned(),
                "-".to_owned(),
                status,
                name,
            ]);
            continue;
        }
        for (index, file) in model.files.iter().enumerate() {
            let first = index == 0;
            table.push([
                if first {
                    model.id.clone()
                } else {
                    String::new()
                },
                file.name.clone(),
                human_bytes(file.size),
                if first { status.clone() } else { String::new() },
                if first { name.clone() } else { String::new() },
            ]);
        }
    }
    let paint = cx.out.paint();
    for (index, line) in aligned(&table).into_iter().enumerate() {
        cx.out
            .println(if index == 0 { paint.bold(&line) } else { line });
    }
    cx.out.println(format!(
        "total: {} in {} model(s) under {}",
        human_bytes(total),
        rows.len(),
        base.display()
    ));
    Ok(())
}

pub fn info(cx: &Context, id: &str) -> anyhow::Result<()> {
    check_local_id(id)?;
    let catalog = load_catalog(cx)?;
    let base = &cx.settings.model_base_dir;
    let entry = catalog.get(id);
    let local = local::inspect(base, id);
    if entry.is_none() && local.is_none() {
        // Neither known nor on disk: the catalog's error carries the "did you mean".
        catalog_entry(&catalog, id)?;
    }
    let config_path = llorch_catalog::model_dir(base, id).join("config.json");
    let config: Option<serde_json::Value> = std::fs::read_to_string(&config_path)
        .ok()
        .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
    if cx.out.json() {
        return cx.out.print_json(&serde_json::json!({
            "id": id,
            "catalog": entry,
            "origin": catalog.origin_of(id),
            "repo_url": entry.and_then(ModelEntry::repo_url),
            "local": local,
            "manifest": local.as_ref().and_then(|model| model.manifest.as_ref()),
            "config": config,
        }));
    }
    let paint = cx.out.paint();
    match entry {
        Some(entry) => {
            print_entry(cx, entry, catalog.default_model().id == entry.id);
            cx.out.println(format!(
                "  catalog:     {}",
                catalog.origin_of(id).unwrap_or_default()
            ));
        }
        None => cx.out.println(format!(
            "{} (not in the catalog {})",
            paint.bold(id),
            catalog.origin()
        )),
    }
    match &local {
        None => cx.out.println(format!(
            "local: not downloaded; `cargo xtask models download {id}` fetches it"
        )),
        Some(model) => {
            cx.out.println("local:");
            cx.out
                .println(format!("  directory:   {}", model.dir.display()));
            let when = model
                .manifest
                .as_ref()
                .map(|manifest| format!(", downloaded {}", manifest.downloaded_at))
                .unwrap_or_default();
            cx.out
                .println(format!("  status:      {}{when}", model.status.label()));
            if let Some(error) = &model.manifest_error {
                cx.out
                    .println(format!("  manifest:    {}", paint.red(error)));
            }
            for file in &model.files {
                let recorded = model
                    .manifest
                    .as_ref()
                    .and_then(|manifest| manifest.files.iter().find(|f| f.name == file.name))
                    .map(|f| format!("  sha256 {}", f.sha256))
                    .unwrap_or_default();
                cx.out.println(format!(
                    "  file:        {}  {}{recorded}",
                    file.name,
                    human_bytes(file.size)
                ));
            }
            if let Some(converted) = model
                .manifest
                .as_ref()
                .and_then(|m| m.converted_with.as_ref())
            {
                cx.out.println(format!("  converted:   {converted}"));
            }
            if model.partial_bytes > 0 {
                cx.out.println(format!(
                    "  unfinished:  {} (resumed by the next download)",
                    human_bytes(model.partial_bytes)
                ));
            }
            cx.out
                .println(format!("  disk usage:  {}", human_bytes(model.disk_usage)));
        }
    }
    if let Some(config) = &config {
        cx.out
            .println(format!("config.json ({}):", config_path.display()));
        let text = serde_json::to_string_pretty(config)?;
        for line in text.lines() {
            cx.out.println(format!("  {line}"));
        }
    }
    Ok(())
}

fn print_entry(cx: &Context, entry: &ModelEntry, is_default: bool) {
    let paint = cx.out.paint();
    let default = if is_default { " (default)" } else { "" };
    cx.out.println(format!(
        "{}  {}{default}",
        paint.bold(&entry.id),
        entry.name
    ));
    cx.out.println(format!("  {}", entry.description));
    cx.out.println(format!("  params:      {}", entry.params));
    let estimate = if entry.requires_conversion {
        " (estimate)"
    } else {
        ""
    };
    cx.out.println(format!(
        "  file:        {}  {} bytes ({}){estimate}",
        entry.file,
        entry.size,
        human_bytes(entry.size)
    ));
    if let Some(sha256) = &entry.sha256 {
        cx.out.println(format!("  sha256:      {sha256} (pinned)"));
    }
    match &entry.source {
        Source::Hf(hub) => {
            cx.out.println(format!(
                "  source:      {} (revision {})",
                entry.repo_url().unwrap_or_default(),
                hub.revision
            ));
            if !hub.files.is_empty() {
                cx.out
                    .println(format!("  downloads:   {}", hub.files.join(", ")));
            }
        }
        Source::Pip(pip) => {
            cx.out
                .println("  source:      pip packages, concatenated in this order:");
            for package in &pip.packages {
                cx.out.println(format!("                 {package}"));
            }
        }
        Source::Local(local) => {
            cx.out.println(format!(
                "  source:      added from {} (`models add`)",
                local.path.display()
            ));
        }
    }
    if entry.requires_conversion {
        cx.out.println(format!(
            "  conversion:  {} {} (llama.cpp; set LLAMA_CPP_DIR)",
            entry.converter.as_deref().unwrap_or_default(),
            entry.converter_args.join(" ")
        ));
    }
    let yes_no = |flag: bool| if flag { "yes" } else { "no" };
    cx.out.println(format!(
        "  chat:        {}",
        if entry.chat_template {
            "has a chat template"
        } else {
            "no chat template (plain prompts)"
        }
    ));
    cx.out
        .println(format!("  verified:    {}", yes_no(entry.verified)));
}

#[cfg(test)]
mod tests {
    use super::aligned;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let rows = [
            ["a".to_owned(), "long cell".to_owned(), "x".to_owned()],
            [
                "longer".to_owned(),
                "b".to_owned(),
                "last column".to_owned(),
            ],
        ];
        assert_eq!(
            aligned(&rows),
            vec![
                "a       long cell  x".to_owned(),
                "longer  b          last column".to_owned()
            ]
        );
    }
}
