//! `pool status`: what a pool machine has to offer: models on disk, workers running, and a
//! summary of its GPUs, CPU and memory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::worker::{self, WorkerRow};
use crate::{daemon::RunDir, output::human_bytes};

#[derive(Debug, Serialize)]
struct PoolStatus {
    hostname: String,
    os: &'static str,
    model_base_dir: PathBuf,
    models: Vec<ModelFile>,
    workers: Vec<WorkerRow>,
    cpu: CpuSummary,
    memory: Option<MemorySummary>,
    gpus: Vec<GpuSummary>,
    /// Why `gpus` is empty, when it is.
    gpu_note: Option<String>,
}

#[derive(Debug, Serialize)]
struct ModelFile {
    /// Relative to the model base directory.
    path: PathBuf,
    size_bytes: u64,
}

#[derive(Debug, Serialize)]
struct CpuSummary {
    model: Option<String>,
    logical_cores: usize,
    load_average: Option<[f64; 3]>,
}

#[derive(Debug, Serialize)]
struct MemorySummary {
    total_bytes: u64,
    available_bytes: u64,
}

#[derive(Debug, Serialize)]
struct GpuSummary {
    index: u32,
    name: String,
    memory_total_bytes: u64,
    memory_used_bytes: u64,
    utilization_percent: Option<u32>,
}

pub fn run(cx: &crate::Context) -> anyhow::Result<()> {
    let run_dir = RunDir::from_env()?;
    let (gpus, gpu_note) = match nvidia_gpus(cx) {
        Ok(gpus) if gpus.is_empty() => (gpus, Some("nvidia-smi lists no GPU".to_owned())),
        Ok(gpus) => (gpus, None),
        Err(note) => (Vec::new(), Some(note)),
    };
    let status = PoolStatus {
        hostname: crate::host_name::hostname_label(),
        os: std::env::consts::OS,
        model_base_dir: cx.settings.model_base_dir.clone(),
        models: model_files(&cx.settings.model_base_dir)?,
        workers: worker::worker_rows(&run_dir)?,
        cpu: cpu_summary(),
        memory: memory_summary(),
        gpus,
        gpu_note,
    };
    if cx.out.json() {
        return cx.out.print_json(&status);
    }
    print_status(cx, &status);
    Ok(())
}

fn print_status(cx: &crate::Context, status: &PoolStatus) {
    let paint = cx.out.paint();
    cx.out.println(format!(
        "{} {} ({})",
        paint.bold("host:"),
        status.hostname,
        status.os
    ));

    cx.out
        .println(paint.bold(&format!("models in {}:", status.model_base_dir.display())));
    if status.models.is_empty() {
        cx.out
            .println("  none (download one with `cargo xtask models download ID`)");
    }
    for model in &status.models {
        cx.out.println(format!(
            "  {:<60} {:>10}",
            model.path.display(),
            human_bytes(model.size_bytes)
        ));
    }

    cx.out
        .println(paint.bold(&format!("workers: {}", status.workers.len())));
    if !status.workers.is_empty() {
        worker::print_worker_table(cx, &status.workers);
    }

    let cpu = &status.cpu;
    let load = cpu
        .load_average
        .map(|[one, five, fifteen]| format!(", load {one:.2} {five:.2} {fifteen:.2}"))
        .unwrap_or_default();
    cx.out.println(format!(
        "{} {} logical cores{}{load}",
        paint.bold("cpu:"),
        cpu.logical_cores,
        cpu.model
            .as_deref()
            .map(|model| format!(" ({model})"))
            .unwrap_or_default()
    ));
    match &status.memory {
        Some(memory) => cx.out.println(format!(
            "{} {} available of {}",
            paint.bold("memory:"),
            human_bytes(memory.available_bytes),
            human_bytes(memory.total_bytes)
        )),
        None => cx.out.println(format!(
            "{} unknown on {}",
            paint.bold("memory:"),
            status.os
        )),
    }
    match &status.gpu_note {
        Some(note) => cx
            .out
            .println(format!("{} none ({note})", paint.bold("gpus:"))),
        None => {
            cx.out.println(paint.bold("gpus:"));
            for gpu in &status.gpus {
                cx.out.println(format!(
                    "  [{}] {}  {} used of {}{}",
                    gpu.index,
                    gpu.name,
                    human_bytes(gpu.memory_used_bytes),
                    human_bytes(gpu.memory_total_bytes),
                    gpu.utilization_percent
                        .map(|percent| format!(", {percent}% busy"))
                        .unwrap_or_default()
                ));
            }
        }
    }
}

/// Every `.gguf` file below the model base directory.
fn model_files(base: &Path) -> anyhow::Result<Vec<ModelFile>> {
    let mut found = Vec::new();
    let mut pending = vec![base.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let file_type = entry.file_type()?;
            let path = entry.path();
            if file_type.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "gguf") {
                found.push(ModelFile {
                    path: path.strip_prefix(base).unwrap_or(&path).to_path_buf(),
                    size_bytes: entry.metadata()?.len(),
                });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn cpu_summary() -> CpuSummary {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned());
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| {
            let mut values = text
                .split_whitespace()
                .map(|value| value.parse::<f64>().ok());
            Some([values.next()??, values.next()??, values.next()??])
        });
    CpuSummary {
        model,
        logical_cores: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        load_average,
    }
}

/// MemAvailable from /proc/meminfo; None where there is no such file (macOS).
pub fn memory_available() -> Option<u64> {
    memory_summary().map(|summary| summary.available_bytes)
}

/// From /proc/meminfo; None where there is no such file (macOS).
fn memory_summary() -> Option<MemorySummary> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kilobytes = |key: &str| {
        meminfo
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some(MemorySummary {
        total_bytes: kilobytes("MemTotal:")?,
        available_bytes: kilobytes("MemAvailable:")?,
    })
}

/// NVIDIA GPUs as nvidia-smi reports them; Err(note) says why there is nothing to report.
fn nvidia_gpus(cx: &crate::Context) -> Result<Vec<GpuSummary>, String> {
    let output = cx
        .cmd("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
            "--format=csv,noheader,nounits",
        ])
        .read()
        .map_err(|_| "nvidia-smi not found or failing; no NVIDIA GPU visible".to_owned())?;
    Ok(parse_nvidia_smi(&output))
}

/// Parses `index, name, total MiB, used MiB, utilization %` lines.
fn parse_nvidia_smi(csv: &str) -> Vec<GpuSummary> {
    const MIB: u64 = 1024 * 1024;
    csv.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, name, total, used, utilization] = fields.as_slice() else {
                return None;
            };
            Some(GpuSummary {
                index: index.parse().ok()?,
                name: (*name).to_owned(),
                memory_total_bytes: total.parse::<u64>().ok()? * MIB,
                memory_used_bytes: used.parse::<u64>().ok()? * MIB,
                utilization_percent: utilization.parse().ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_csv_is_parsed() {
        let gpus = parse_nvidia_smi(
            "0, NVIDIA H100 80GB HBM3, 81559, 1024, 3\n1, Tesla T4, 15360, 0, [N/A]\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_total_bytes, 81559 * 1024 * 1024);
        assert_eq!(gpus[1].utilization_percent, None);
    }

    #[test]
    fn model_files_are_found_recursively_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("gemma3-270m")).unwrap();
        std::fs::write(dir.path().join("gemma3-270m/model.gguf"), b"GGUF").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let models = model_files(dir.path()).unwrap();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].path, PathBuf::from("gemma3-270m/model.gguf"));
        assert_eq!(models[0].size_bytes, 4);
        assert!(model_files(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn memory_and_cpu_are_read_on_linux() {
        if cfg!(target_os = "linux") {
            let memory = memory_summary().expect("/proc/meminfo exists on Linux");
            assert!(memory.total_bytes > 0 && memory.available_bytes <= memory.total_bytes);
            assert!(cpu_summary().load_average.is_some());
        }
    }
}
