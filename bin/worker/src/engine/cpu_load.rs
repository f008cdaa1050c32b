//! How much CPU other processes take on the cores this worker may use, measured while the
//! engine decodes: the cause the thread controller (`threads.rs`) looks for before it tries
//! fewer threads, so an idle machine never pays for a probe.
//!
//! Linux only: the busy time of the CPUs in this process's affinity mask (`/proc/stat`, steal
//! time included: a hypervisor giving our core away is contention too) minus this process's
//! own CPU time (`/proc/self/stat`). Elsewhere [`CpuSampler::new`] gives `None` and the
//! controller falls back to probing now and then.

use std::time::{Duration, Instant};

/// CPU time other processes used during some interval of decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ForeignTime {
    /// Seconds of CPU (summed over cores) that was not ours.
    pub foreign_seconds: f64,
    /// Wall-clock seconds the interval lasted.
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Busy ticks of the allowed CPUs, every process.
    busy: u64,
    /// This process's user + system ticks.
    own: u64,
}

#[derive(Debug)]
pub(super) struct CpuSampler {
    /// CPU numbers this process may run on.
    allowed: Vec<usize>,
    ticks_per_second: f64,
    last: Option<Sample>,
}

impl CpuSampler {
    /// `None` where `/proc` does not say what is needed.
    pub fn new() -> Option<CpuSampler> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let allowed = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .and_then(|list| parse_cpu_list(list.trim()))?;
        // SAFETY: sysconf has no memory effects.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks <= 0 {
            return None;
        }
        let mut sampler = CpuSampler {
            allowed,
            ticks_per_second: ticks as f64,
            last: None,
        };
        sampler.sample()?;
        Some(sampler)
    }

    /// CPUs this process may run on.
    pub fn cpus(&self) -> u32 {
        self.allowed.len() as u32
    }

    /// Takes a sample at the end of a decode step that took `step`. Gives what others used
    /// since the previous sample when that interval was this step and little else: an
    /// interval with idle time in it (between requests) would count others' work while we
    /// were not running as contention.
    pub fn after_step(&mut self, step: Duration) -> Option<ForeignTime> {
        let previous = self.last;
        let now = self.sample()?;
        let previous = previous?;
        let wall = now.at.duration_since(previous.at);
        if wall > step.mul_f64(1.5) + Duration::from_millis(2) {
            return None;
        }
        let foreign_ticks = now
            .busy
            .saturating_sub(previous.busy)
            .saturating_sub(now.own.saturating_sub(previous.own));
        Some(ForeignTime {
            foreign_seconds: foreign_ticks as f64 / self.ticks_per_second,
            wall_seconds: wall.as_secs_f64(),
        })
    }

    fn sample(&mut self) -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let sample = Sample {
            at: Instant::now(),
            busy: busy_ticks(&stat, &self.allowed)?,
            own: own_ticks(&own)?,
        };
        self.last = Some(sample);
        Some(sample)
    }
}

/// "0-3,8,10-11" → [0, 1, 2, 3, 8, 10, 11].
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                cpus.extend(first.trim().parse::<usize>().ok()?..=last.trim().parse().ok()?)
            }
            None => cpus.push(part.trim().parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// Busy ticks (user, nice, system, irq, softirq, steal; guest time is inside user) of the
/// `allowed` CPUs from `/proc/stat`.
fn busy_ticks(stat: &str, allowed: &[usize]) -> Option<u64> {
    let mut busy = 0;
    let mut found = false;
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        // The first line ("cpu  ...") is the sum over all CPUs, not one of them.
        let Some(cpu) = fields
            .next()
            .and_then(|number| number.parse::<usize>().ok())
        else {
            continue;
        };
        if !allowed.contains(&cpu) {
            continue;
        }
        let ticks: Vec<u64> = fields.map(|field| field.parse().unwrap_or(0)).collect();
        let field = |index: usize| ticks.get(index).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        busy += field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        found = true;
    }
    found.then_some(busy)
}

/// utime + stime from `/proc/self/stat` (fields 14 and 15; the command name before them is
/// in parentheses and may hold spaces).
fn own_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_ranges_and_single_cpus() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-3,7"), Some(vec![0, 2, 3, 7]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn busy_ticks_sum_the_allowed_cpus_without_idle_and_iowait() {
        let stat = "cpu  100 100 100 100 100 100 100 100 0 0\n\
                    cpu0 1 2 3 1000 500 4 5 6 0 0\n\
                    cpu1 10 20 30 1000 500 40 50 60 0 0\n\
                    intr 12345\n";
        assert_eq!(busy_ticks(stat, &[0]), Some(21));
        assert_eq!(busy_ticks(stat, &[0, 1]), Some(231));
        assert_eq!(busy_ticks(stat, &[5]), None);
    }

    #[test]
    fn own_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (llorch (w) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(own_ticks(stat), Some(325));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_can_be_sampled_and_an_idle_gap_is_not_measured() {
        let mut sampler = CpuSampler::new().expect("Linux has /proc/stat and /proc/self");
        assert!(sampler.cpus() >= 1);
        // The interval since the previous sample is far longer than a 1 ms step.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(sampler.after_step(Duration::from_millis(1)), None);
        let foreign = sampler
            .after_step(Duration::from_millis(10))
            .expect("back-to-back samples are one interval");
        assert!(foreign.wall_seconds >= 0.0 && foreign.foreign_seconds >= 0.0);
    }
}
