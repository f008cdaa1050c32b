//! Models published as safetensors: download the listed source files, then run llama.cpp's
//! converter (`convert_hf_to_gguf.py` of a llama.cpp checkout named by `LLAMA_CPP_DIR`) into
//! `.partial/`. The tools are checked before anything is downloaded, and a failed conversion
//! leaves no output behind.

use std::{
    collections::VecDeque,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use llorch_catalog::{HubSource, ModelEntry};
use llorch_fetch::{hub, Delivery, Fetcher};

use crate::{process, Context};

const PYTHON: &str = "python3";
const OUTPUT_TAIL: usize = 20;
/// Source files kept beside the converted model (`models info` shows it).
const KEPT_SOURCE_FILES: [&str; 1] = ["config.json"];

/// A converter that was found and whose Python imports work.
pub struct Converter {
    script: PathBuf,
}

/// The [`llorch_fetch::Converter`] of `models download`: llama.cpp's converter, checked by
/// [`preflight`] before the download starts.
pub struct LlamaCpp<'a> {
    cx: &'a Context,
    found: Option<Converter>,
}

impl<'a> LlamaCpp<'a> {
    pub fn new(cx: &'a Context) -> LlamaCpp<'a> {
        LlamaCpp { cx, found: None }
    }
}

impl llorch_fetch::Converter for LlamaCpp<'_> {
    fn preflight(&mut self, entry: &ModelEntry) -> anyhow::Result<()> {
        self.found = Some(preflight(self.cx, entry)?);
        Ok(())
    }

    fn fetch_and_convert(
        &mut self,
        fetcher: &Fetcher<'_>,
        entry: &ModelEntry,
        source: &HubSource,
        partial: &Path,
    ) -> anyhow::Result<Delivery> {
        let converter = self
            .found
            .as_ref()
            .context("the converter is looked for before the download starts")?;
        fetch_and_convert(self.cx, fetcher, entry, source, converter, partial)
    }
}

/// What the conversion needs, said the same way whichever part is missing.
fn requirements(entry: &ModelEntry, script_name: &str) -> String {
    format!(
        "`{id}` is published as safetensors ({repo}) and must be converted to GGUF with llama.cpp's {script_name}. That needs:\n  - {PYTHON}\n  - a llama.cpp checkout, named by LLAMA_CPP_DIR (git clone https://github.com/ggml-org/llama.cpp)\n  - the converter's Python packages: {PYTHON} -m pip install -r \"$LLAMA_CPP_DIR/requirements/requirements-convert_hf_to_gguf.txt\"",
        id = entry.id,
        repo = entry.source_summary(),
    )
}

/// Finds the converter and checks that it starts (`--help` imports everything it needs).
fn preflight(cx: &Context, entry: &ModelEntry) -> anyhow::Result<Converter> {
    let script_name = entry
        .converter
        .as_deref()
        .context("the catalog entry requires conversion but names no converter")?;
    let needs = requirements(entry, script_name);
    let Some(llama_cpp) = std::env::var_os("LLAMA_CPP_DIR").filter(|dir| !dir.is_empty()) else {
        bail!("{needs}\nmissing: LLAMA_CPP_DIR is not set\nhint: set LLAMA_CPP_DIR and install the packages, then run the download again; nothing was downloaded");
    };
    let script = PathBuf::from(llama_cpp).join(script_name);
    if !script.is_file() {
        bail!(
            "{needs}\nmissing: {} does not exist\nhint: point LLAMA_CPP_DIR at the root of a llama.cpp checkout; nothing was downloaded",
            script.display()
        );
    }
    cx.out.debug(format!(
        "checking the converter: {PYTHON} {} --help",
        script.display()
    ));
    let output = process::cmd(PYTHON)
        .arg(&script)
        .arg("--help")
        .output()
        .with_context(|| format!("{needs}\nmissing: `{PYTHON}` could not be started"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let missing = stderr
            .lines()
            .rev()
            .find_map(|line| line.split("No module named ").nth(1))
            .map(|module| format!("the Python module {module}"))
            .unwrap_or_else(|| {
                format!(
                    "`{PYTHON} {} --help` failed ({}): {}",
                    script.display(),
                    output.status,
                    stderr.lines().last().unwrap_or_default()
                )
            });
        bail!("{needs}\nmissing: {missing}\nhint: install the converter's packages, then run the download again; nothing was downloaded");
    }
    Ok(Converter { script })
}

/// Downloads the source files (reusing those a failed run already fetched) and converts them.
fn fetch_and_convert(
    cx: &Context,
    fetcher: &Fetcher<'_>,
    entry: &ModelEntry,
    source: &HubSource,
    converter: &Converter,
    partial: &Path,
) -> anyhow::Result<Delivery> {
    let source_dir = partial.join("source");
    std::fs::create_dir_all(&source_dir)
        .with_context(|| format!("creating {}", source_dir.display()))?;
    // Files are moved into `source/` only once complete, so their presence means done.
    let to_fetch: Vec<String> = entry
        .hub_files()
        .into_iter()
        .filter(|name| !source_dir.join(name).is_file())
        .collect();
    for fetched in hub::fetch(fetcher, entry, source, &to_fetch, partial)? {
        let target = source_dir.join(&fetched.name);
        std::fs::rename(&fetched.path, &target).with_context(|| {
            format!("moving {} to {}", fetched.path.display(), target.display())
        })?;
    }
    let hub_cache = partial.join("hub");
    if hub_cache.exists() {
        std::fs::remove_dir_all(&hub_cache)
            .with_context(|| format!("removing {}", hub_cache.display()))?;
    }

    let output = partial.join(format!("{}.converting", entry.file));
    let _ = std::fs::remove_file(&output);
    run_converter(cx, entry, converter, &source_dir, &output).inspect_err(|_| {
        let _ = std::fs::remove_file(&output);
    })?;

    let model = fetcher.hash(&entry.file, &output, None)?;
    let mut extras = Vec::new();
    for name in KEPT_SOURCE_FILES {
        let path = source_dir.join(name);
        if path.is_file() {
            extras.push(fetcher.hash(name, &path, None)?);
        }
    }
    Ok(Delivery {
        model,
        extras,
        converted_with: Some(format!(
            "{} {}",
            converter.script.display(),
            entry.converter_args.join(" ")
        )),
    })
}

fn run_converter(
    cx: &Context,
    entry: &ModelEntry,
    converter: &Converter,
    source_dir: &Path,
    output: &Path,
) -> anyhow::Result<()> {
    let mut args = vec![
        converter.script.display().to_string(),
        source_dir.display().to_string(),
        "--outfile".to_owned(),
        output.display().to_string(),
    ];
    args.extend(entry.converter_args.iter().cloned());
    let command = process::cmd(PYTHON).args(&args);
    cx.out.debug(command.to_string());
    let spinner = cx.out.spinner(format!("converting `{}` to GGUF", entry.id));
    let mut tail = VecDeque::with_capacity(OUTPUT_TAIL);
    let status = process::stream_lines(
        command.expression().stderr_to_stdout().stdin_null(),
        |line| {
            cx.out.debug(format!("convert: {line}"));
            spinner.set_message(format!("converting `{}`: {}", entry.id, line.trim()));
            if tail.len() == OUTPUT_TAIL {
                tail.pop_front();
            }
            tail.push_back(line.to_owned());
        },
    )
    .with_context(|| format!("running the converter for `{}`", entry.id))?;
    spinner.finish_and_clear();
    if !status.success() {
        let tail: Vec<String> = tail.into_iter().collect();
        bail!(
            "converting `{}` with {} failed ({status}):\n  {}\nhint: the downloaded sources are kept; fix the converter's environment and run the download again",
            entry.id,
            converter.script.display(),
            tail.join("\n  ")
        );
    }
    let mut magic = [0; 4];
    let is_gguf = std::fs::File::open(output)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF";
    if !is_gguf {
        bail!(
            "converting `{}`: {} exited successfully but {} is not a GGUF file",
            entry.id,
            converter.script.display(),
            output.display()
        );
    }
    cx.out.status(format!("converted `{}` to GGUF", entry.id));
    Ok(())
}
