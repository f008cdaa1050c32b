//! What this host has: CPU, memory, load, GPUs, free disk and the catalog models on its disk,
//! read from the kernel (`/proc`, `statvfs`), `nvidia-smi` and the model directory.

use std::path::Path;
use std::process::Command;

use llorch_api::pool::{DiskModel, GpuFacts, HostFacts};
use llorch_catalog::{model_path, Catalog, Manifest};

/// Reads what the machine itself tells (the caller adds models, workers, budget and
/// backends); a part that cannot be read is reported empty or zero, never guessed.
pub fn read_machine_facts(model_dir: &Path) -> HostFacts {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    HostFacts {
        host_name: host_name(),
        os: os_name(
            &read("/etc/os-release"),
            read("/proc/sys/kernel/osrelease").trim(),
        ),
        cpu_model: cpu_model(&cpuinfo),
        physical_cores: physical_cores(&cpuinfo),
        ram_total_bytes: meminfo_bytes(&meminfo, "MemTotal"),
        ram_available_bytes: meminfo_bytes(&meminfo, "MemAvailable"),
        load_average: read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|load| load.parse().ok())
            .unwrap_or(0.0),
        gpus: nvidia_gpus(),
        disk_free_bytes: free_disk_bytes(model_dir),
        models: Vec::new(),
        workers: Vec::new(),
        memory_budget_bytes: None,
        backends: Vec::new(),
    }
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn os_name(os_release: &str, kernel: &str) -> String {
    let pretty = os_release
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    match kernel {
        "" => pretty,
        kernel => format!("{pretty} (kernel {kernel})"),
    }
}

fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// Distinct (`physical id`, `core id`) pairs: hyper-threads of one core count once. Kernels
/// that list neither (some ARM boards) count processors.
fn physical_cores(cpuinfo: &str) -> u32 {
    let mut cores = std::collections::BTreeSet::new();
    let mut processors = 0u32;
    let mut package = "";
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => processors += 1,
            "physical id" => package = value.trim(),
            "core id" => {
                cores.insert((package.to_owned(), value.trim().to_owned()));
            }
            _ => {}
        }
    }
    match cores.len() as u32 {
        0 => processors.max(1),
        count => count,
    }
}

fn meminfo_bytes(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// `nvidia-smi`'s CSV, one GPU per line; none where it is missing or fails.
fn nvidia_gpus() -> Vec<GpuFacts> {
    let output = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total,memory.used,utilization.gpu",
            "--format=csv,noheader,nounits",
        ])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
        }
        _ => Vec::new(),
    }
}

/// Parses `index, name, memory.total [MiB], memory.used [MiB], utilization.gpu [%]` lines.
fn parse_nvidia_smi(csv: &str) -> Vec<GpuFacts> {
    csv.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, name, total, used, utilization] = fields[..] else {
                return None;
            };
            let mib = |text: &str| text.parse::<u64>().ok().map(|mib| mib << 20);
            Some(GpuFacts {
                index: index.parse().ok()?,
                name: name.to_owned(),
                memory_total_bytes: mib(total)?,
                memory_used_bytes: mib(used)?,
                utilization_percent: utilization.parse().ok(),
            })
        })
        .collect()
}

/// Free bytes for an unprivileged user on the file system holding `dir` (or its nearest
/// existing parent, before the first download created it).
fn free_disk_bytes(dir: &Path) -> u64 {
    let existing = dir.ancestors().find(|path| path.exists());
    let Some(path) = existing.and_then(|path| path.to_str()) else {
        return 0;
    };
    let Ok(path) = std::ffi::CString::new(path) else {
        return 0;
    };
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` is writable memory of the right
    // type; statvfs fills it completely when it returns 0.
    let filled = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } == 0;
    if !filled {
        return 0;
    }
    // SAFETY: statvfs returned 0, so it initialised `stats`.
    let stats = unsafe { stats.assume_init() };
    // fsblkcnt_t and c_ulong are 32 bits wide on some targets.
    #[allow(clippy::unnecessary_cast)]
    (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64)
}

/// The catalog models whose file is in `base_dir`, with their size, whether the download's
/// manifest recorded the catalog's pinned checksum (no file is hashed here), and the memory
/// `estimate` gives a worker of each.
pub fn models_on_disk(
    catalog: &Catalog,
    base_dir: &Path,
    estimate: &dyn Fn(&Path, u64) -> u64,
) -> Vec<DiskModel> {
    catalog
        .models()
        .iter()
        .filter_map(|entry| {
            let path = model_path(base_dir, entry);
            let bytes = std::fs::metadata(&path).ok()?.len();
            let manifest = Manifest::read(&llorch_catalog::model_dir(base_dir, &entry.id))
                .ok()
                .flatten();
            let recorded = manifest
                .as_ref()
                .and_then(|manifest| manifest.main_file())
                .map(|file| file.sha256.clone());
            let verified = match (&entry.sha256, recorded) {
                (Some(pinned), Some(recorded)) => pinned.eq_ignore_ascii_case(&recorded),
                _ => false,
            };
            Some(DiskModel {
                model: entry.id.clone(),
                file: entry.file.clone(),
                bytes,
                verified,
                estimated_bytes: estimate(&path, bytes),
            })
        })
        .collect()
}

/// Resident memory of a process in bytes (`VmRSS` of `/proc/PID/status`).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(meminfo_bytes(&status, "VmRSS")).filter(|&bytes| bytes > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nmodel name\t: Example CPU @ 3.00GHz\nphysical id\t: 0\ncore id\t\t: 0\n\n\
        processor\t: 1\nmodel name\t: Example CPU @ 3.00GHz\nphysical id\t: 0\ncore id\t\t: 0\n\n\
        processor\t: 2\nphysical id\t: 0\ncore id\t\t: 1\n\nprocessor\t: 3\nphysical id\t: 1\ncore id\t\t: 0\n";

    #[test]
    fn cpu_model_and_physical_cores_from_cpuinfo() {
        assert_eq!(cpu_model(CPUINFO), "Example CPU @ 3.00GHz");
        // (0,0) twice (hyper-threads), (0,1), (1,0).
        assert_eq!(physical_cores(CPUINFO), 3);
        assert_eq!(physical_cores("processor : 0\nprocessor : 1\n"), 2);
    }

    #[test]
    fn meminfo_values_are_bytes() {
        let meminfo = "MemTotal:       16384 kB\nMemFree: 1 kB\nMemAvailable:    8192 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal"), 16384 * 1024);
        assert_eq!(meminfo_bytes(meminfo, "MemAvailable"), 8192 * 1024);
        assert_eq!(meminfo_bytes(meminfo, "Mem"), 0);
    }

    #[test]
    fn nvidia_smi_lines_become_gpus() {
        let gpus = parse_nvidia_smi("0, NVIDIA H100 80GB HBM3, 81559, 1024, 7\nbroken line\n");
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_total_bytes, 81559 << 20);
        assert_eq!(gpus[0].utilization_percent, Some(7.0));
    }

    #[test]
    fn os_name_prefers_pretty_name() {
        let release = "NAME=Debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            os_name(release, "6.1.0"),
            "Debian GNU/Linux 12 (bookworm) (kernel 6.1.0)"
        );
    }

    #[test]
    fn this_machine_reports_memory_and_disk() {
        let facts = read_machine_facts(Path::new("/tmp/does-not-exist-yet/models"));
        assert!(facts.ram_total_bytes > 0);
        assert!(facts.ram_available_bytes <= facts.ram_total_bytes);
        assert!(facts.physical_cores >= 1);
        assert!(
            facts.disk_free_bytes > 0,
            "free space of /tmp's file system"
        );
        assert!(resident_bytes(std::process::id()).unwrap() > 0);
    }
}
