//! The Hosts pane's rows: what each pool manager reported about its machine in its last
//! heartbeat (`GET /v2/hosts`), reduced to the figures an operator scans — CPU load, RAM and
//! VRAM in use as fractions, the models on its disk — and whether orcd still hears from it.

use llorch_api::pool::{HostInfo, HostState};
use serde::Serialize;

use super::state::human_millis;

/// The columns of the Hosts table, as the screen and the plain snapshot print them.
pub const HOST_COLUMNS: [&str; 7] = ["HOST", "STATE", "CPU", "RAM", "VRAM", "SEEN", "MODELS"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRow {
    pub host_id: String,
    pub url: String,
    /// `live`, or `lost` once its heartbeats stopped (its figures are then the last known).
    pub state: String,
    pub host_name: String,
    pub cpu_model: String,
    pub physical_cores: u32,
    pub load_average: f64,
    pub ram_total_bytes: u64,
    pub ram_used_bytes: u64,
    /// Summed over the host's GPUs; none without GPUs.
    pub vram_total_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
    pub disk_free_bytes: u64,
    /// Catalog ids of the model files on its disk.
    pub models: Vec<String>,
    /// Workers its pool manager runs.
    pub workers: Vec<String>,
    pub last_seen_ms_ago: u64,
}

impl HostRow {
    pub fn of(host: &HostInfo) -> HostRow {
        let facts = &host.facts;
        let gpus = (!facts.gpus.is_empty()).then_some(&facts.gpus);
        HostRow {
            host_id: host.host_id.clone(),
            url: host.url.clone(),
            state: match host.state {
                HostState::Live => "live",
                HostState::Lost => "lost",
            }
            .to_owned(),
            host_name: facts.host_name.clone(),
            cpu_model: facts.cpu_model.clone(),
            physical_cores: facts.physical_cores,
            load_average: facts.load_average,
            ram_total_bytes: facts.ram_total_bytes,
            ram_used_bytes: facts
                .ram_total_bytes
                .saturating_sub(facts.ram_available_bytes),
            vram_total_bytes: gpus.map(|gpus| gpus.iter().map(|gpu| gpu.memory_total_bytes).sum()),
            vram_used_bytes: gpus.map(|gpus| gpus.iter().map(|gpu| gpu.memory_used_bytes).sum()),
            disk_free_bytes: facts.disk_free_bytes,
            models: facts
                .models
                .iter()
                .map(|model| model.model.clone())
                .collect(),
            workers: facts
                .workers
                .iter()
                .map(|worker| worker.worker_id.clone())
                .collect(),
            last_seen_ms_ago: host.last_seen_ms_ago,
        }
    }

    pub fn is_lost(&self) -> bool {
        self.state == "lost"
    }

    /// The one-minute load average per physical core, 1.0 when every core is busy.
    pub fn cpu_fraction(&self) -> f64 {
        self.load_average / f64::from(self.physical_cores.max(1))
    }

    pub fn ram_fraction(&self) -> f64 {
        fraction(self.ram_used_bytes, self.ram_total_bytes)
    }

    pub fn vram_fraction(&self) -> Option<f64> {
        Some(fraction(self.vram_used_bytes?, self.vram_total_bytes?))
    }

    /// The models column: every model id, comma-separated; `-` for none.
    pub fn models_cell(&self) -> String {
        match self.models.is_empty() {
            true => "-".to_owned(),
            false => self.models.join(","),
        }
    }

    /// One text per [`HOST_COLUMNS`], for the plain snapshot: percentages and sizes.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.host_id.clone(),
            self.state.clone(),
            percent(self.cpu_fraction()),
            used_of(self.ram_used_bytes, self.ram_total_bytes),
            match (self.vram_used_bytes, self.vram_total_bytes) {
                (Some(used), Some(total)) => used_of(used, total),
                _ => "-".to_owned(),
            },
            human_millis(self.last_seen_ms_ago),
            self.models_cell(),
        ]
    }

    /// The details dialog: every figure the host reported.
    pub fn details(&self) -> Vec<String> {
        let mut lines = vec![
            format!("url        {}", self.url),
            format!(
                "state      {} (seen {} ago)",
                self.state,
                human_millis(self.last_seen_ms_ago)
            ),
            format!("machine    {}, {}", self.host_name, self.cpu_model),
            format!(
                "cpu        load {:.2} on {} cores ({})",
                self.load_average,
                self.physical_cores,
                percent(self.cpu_fraction())
            ),
            format!(
                "ram        {} used",
                used_of(self.ram_used_bytes, self.ram_total_bytes)
            ),
        ];
        if let (Some(used), Some(total)) = (self.vram_used_bytes, self.vram_total_bytes) {
            lines.push(format!("vram       {} used", used_of(used, total)));
        }
        lines.push(format!("disk free  {}", gibibytes(self.disk_free_bytes)));
        lines.push(format!("models     {}", self.models_cell()));
        lines.push(format!(
            "workers    {}",
            match self.workers.is_empty() {
                true => "-".to_owned(),
                false => self.workers.join(", "),
            }
        ));
        lines
    }
}

fn fraction(used: u64, total: u64) -> f64 {
    match total {
        0 => 0.0,
        total => used as f64 / total as f64,
    }
}

/// `45%`, capped at 100 % (a load average can exceed the cores).
pub fn percent(fraction: f64) -> String {
    format!("{:.0}%", (fraction * 100.0).clamp(0.0, 100.0))
}

fn gibibytes(bytes: u64) -> String {
    format!("{:.1}GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// `3.0/8.0GiB`: one word, so the plain snapshot splits on whitespace.
fn used_of(used: u64, total: u64) -> String {
    format!(
        "{:.1}/{}",
        used as f64 / f64::from(1u32 << 30),
        gibibytes(total)
    )
}

#[cfg(test)]
mod tests {
    use super::super::state::fixtures::{cpu_host, gpu_host};
    use super::*;

    #[test]
    fn a_host_row_has_its_fractions_and_plain_cells() {
        let gpu = HostRow::of(&gpu_host("gpu-box", HostState::Live, 400));
        assert_eq!(gpu.cpu_fraction(), 0.25);
        assert_eq!(gpu.ram_fraction(), 0.375);
        assert_eq!(gpu.vram_fraction(), Some(0.75));
        assert_eq!(
            gpu.cells(),
            [
                "gpu-box",
                "live",
                "25%",
                "12.0/32.0GiB",
                "18.0/24.0GiB",
                "400ms",
                "gemma3-270m,qwen2.5-coder-0.5b"
            ]
        );
        let cpu = HostRow::of(&cpu_host("nas", HostState::Lost, 31_000));
        assert!(cpu.is_lost());
        assert_eq!(cpu.vram_fraction(), None);
        assert_eq!(cpu.cells()[4], "-");
        assert_eq!(percent(1.7), "100%");
    }
}
