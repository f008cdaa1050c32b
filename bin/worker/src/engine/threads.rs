//! How many threads llama.cpp gets, decided at run time from how long decode steps take.
//!
//! On an idle machine every physical core helps; but ggml's threads spin-wait at each barrier,
//! so once another process takes a core, a step with all cores waits for the thread that lost
//! its core and generation collapses (measured on 2 cores: about 80 down to under 6 tok/s).
//! So the engine starts with all physical cores and this controller watches the duration of
//! generation-only steps (same number of sequences, no prompt tokens, so like is compared with
//! like): when a window of steps is much slower than the fastest window seen at that count, the
//! count steps down at once; now and then it tries one thread more or less and keeps the change
//! only if steps got faster, backing off when they did not. The engine applies a change between
//! steps. Pure logic, tested with made-up timings.

use std::collections::BTreeMap;
use std::time::Duration;

/// Steps per window: the median of a window is one measurement.
const WINDOW: usize = 16;
/// A window this much slower than the fastest seen at the same count means contention.
const SLOWDOWN: f64 = 1.4;
/// A probed count is kept only if it is at least this much faster.
const KEEP_IF_FASTER: f64 = 0.95;
/// One step of a probe this much slower than before ends the probe at once: with a core taken,
/// a step with one thread too many can take seconds.
const PROBE_ABORT: f64 = 2.0;
/// Windows between probes, doubled after each probe that did not pay off, up to the maximum.
const FIRST_PROBE_AFTER: u32 = 8;
const MAX_PROBE_AFTER: u32 = 256;

/// What the controller wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ThreadChange {
    Keep,
    /// Use this many threads from the next step on.
    Switch(u32),
}

#[derive(Debug, Default, Clone)]
struct Figures {
    /// Median of the latest full window.
    last: Option<f64>,
    /// Fastest window median seen: the idle baseline.
    best: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    from: u32,
}

#[derive(Debug, Clone)]
pub(super) struct ThreadController {
    max: u32,
    current: u32,
    /// Step durations (seconds) of the current window, per number of sequences in the step.
    windows: BTreeMap<u32, Vec<f64>>,
    /// By (threads, sequences in the step).
    figures: BTreeMap<(u32, u32), Figures>,
    probe: Option<Probe>,
    windows_until_probe: u32,
    probe_after: u32,
    /// The direction of the next probe when both are possible.
    next_probe_up: bool,
}

impl ThreadController {
    /// Starts at `max` threads (all physical cores).
    pub fn new(max: u32) -> ThreadController {
        let max = max.max(1);
        ThreadController {
            max,
            current: max,
            windows: BTreeMap::new(),
            figures: BTreeMap::new(),
            probe: None,
            windows_until_probe: FIRST_PROBE_AFTER,
            probe_after: FIRST_PROBE_AFTER,
            next_probe_up: false,
        }
    }

    #[cfg(test)]
    fn threads(&self) -> u32 {
        self.current
    }

    /// Records one generation-only step of `sequences` sequences that took `duration`.
    pub fn observe(&mut self, sequences: u32, duration: Duration) -> ThreadChange {
        let seconds = duration.as_secs_f64();
        if let Some(probe) = self.probe {
            let before = self.figure(probe.from, sequences).last;
            if before.is_some_and(|before| seconds > before * PROBE_ABORT) {
                return self.end_probe(probe, false);
            }
        }
        let window = self.windows.entry(sequences).or_default();
        window.push(seconds);
        if window.len() < WINDOW {
            return ThreadChange::Keep;
        }
        let median = median(window);
        window.clear();
        let threads = self.current;
        let figures = self.figures.entry((threads, sequences)).or_default();
        figures.last = Some(median);
        let best = *figures
            .best
            .insert(figures.best.map_or(median, |best| best.min(median)));

        if let Some(probe) = self.probe {
            return match self.figure(probe.from, sequences).last {
                Some(before) => self.end_probe(probe, median < before * KEEP_IF_FASTER),
                // Nothing to compare with at this many sequences yet: keep probing.
                None => ThreadChange::Keep,
            };
        }
        if threads > 1 && median > best * SLOWDOWN {
            return self.switch(threads - 1);
        }
        self.windows_until_probe = self.windows_until_probe.saturating_sub(1);
        if self.windows_until_probe > 0 || self.max == 1 {
            return ThreadChange::Keep;
        }
        let up = match threads {
            1 => true,
            t if t == self.max => false,
            _ => self.next_probe_up,
        };
        self.next_probe_up = !up;
        self.probe = Some(Probe { from: threads });
        self.switch(if up { threads + 1 } else { threads - 1 })
    }

    fn figure(&self, threads: u32, sequences: u32) -> Figures {
        self.figures
            .get(&(threads, sequences))
            .cloned()
            .unwrap_or_default()
    }

    fn end_probe(&mut self, probe: Probe, keep: bool) -> ThreadChange {
        self.probe = None;
        if keep {
            self.probe_after = FIRST_PROBE_AFTER;
            self.windows_until_probe = self.probe_after;
            ThreadChange::Keep
        } else {
            self.probe_after = (self.probe_after * 2).min(MAX_PROBE_AFTER);
            self.switch(probe.from)
        }
    }

    fn switch(&mut self, threads: u32) -> ThreadChange {
        self.current = threads.clamp(1, self.max);
        self.windows.clear();
        if self.probe.is_none() {
            self.windows_until_probe = self.probe_after;
        }
        ThreadChange::Switch(self.current)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Physical cores this process may use: CPUs in its affinity mask, counting hyper-threads of
/// one core once (as llama.cpp's own default does), at least 1.
pub fn physical_cores() -> u32 {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut siblings = std::collections::BTreeSet::new();
    for cpu in 0..logical.max(1) * 4 {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings");
        if let Ok(mask) = std::fs::read_to_string(path) {
            siblings.insert(mask.trim().to_owned());
        }
    }
    match siblings.len() as u32 {
        0 => logical,
        cores => cores.min(logical),
    }
    .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: f64) -> Duration {
        Duration::from_secs_f64(millis / 1000.0)
    }

    /// Feeds `windows` full windows of single-sequence steps whose duration depends on the
    /// thread count; returns every switch made.
    fn run(
        controller: &mut ThreadController,
        windows: usize,
        step_ms: impl Fn(u32) -> f64,
    ) -> Vec<u32> {
        let mut switches = Vec::new();
        for _ in 0..windows * WINDOW {
            let duration = ms(step_ms(controller.threads()));
            if let ThreadChange::Switch(threads) = controller.observe(1, duration) {
                switches.push(threads);
            }
        }
        switches
    }

    /// Idle 2-core machine: 2 threads 10 ms a step, 1 thread 12 ms.
    fn idle(threads: u32) -> f64 {
        if threads == 2 {
            10.0
        } else {
            12.0
        }
    }

    /// One core taken by another process: 2 threads collapse, 1 thread keeps going.
    fn contended(threads: u32) -> f64 {
        if threads == 2 {
            150.0
        } else {
            14.0
        }
    }

    #[test]
    fn an_idle_machine_keeps_all_cores() {
        let mut controller = ThreadController::new(2);
        run(&mut controller, 100, idle);
        assert_eq!(controller.threads(), 2);
        // Probes down to 1 thread happen, are not kept, and become rarer.
        assert!(controller.probe_after > FIRST_PROBE_AFTER);
    }

    #[test]
    fn contention_steps_down_at_once_and_the_end_of_it_steps_back_up() {
        let mut controller = ThreadController::new(2);
        run(&mut controller, 4, idle);
        assert_eq!(controller.threads(), 2);
        let switches = run(&mut controller, 1, contended);
        assert_eq!(switches, vec![1], "one slow window is enough");
        run(&mut controller, 200, contended);
        assert_eq!(controller.threads(), 1, "probes up are abandoned");
        run(&mut controller, 300, idle);
        assert_eq!(controller.threads(), 2, "back to all cores once idle");
    }

    #[test]
    fn a_probe_into_contention_ends_after_one_slow_step() {
        let mut controller = ThreadController::new(2);
        run(&mut controller, 4, idle);
        run(&mut controller, 1, contended);
        assert_eq!(controller.threads(), 1);
        // Count the slow (2-thread) steps taken over many probes.
        let mut slow_steps = 0;
        for _ in 0..100 * WINDOW {
            if controller.threads() == 2 {
                slow_steps += 1;
            }
            controller.observe(1, ms(contended(controller.threads())));
        }
        assert!(slow_steps <= 10, "{slow_steps} slow steps");
    }

    #[test]
    fn started_under_contention_the_count_still_finds_its_way_down() {
        // No idle baseline ever: only the periodic probe down can tell.
        let mut controller = ThreadController::new(2);
        run(&mut controller, 40, contended);
        assert_eq!(controller.threads(), 1);
    }

    #[test]
    fn steps_of_different_sizes_are_not_compared() {
        let mut controller = ThreadController::new(2);
        for _ in 0..4 * WINDOW {
            assert_eq!(controller.observe(1, ms(10.0)), ThreadChange::Keep);
        }
        // Four sequences per step take longer, which is no sign of contention.
        for _ in 0..WINDOW {
            assert_eq!(controller.observe(4, ms(30.0)), ThreadChange::Keep);
        }
        assert_eq!(controller.threads(), 2);
    }

    #[test]
    fn one_core_never_changes() {
        let mut controller = ThreadController::new(1);
        assert!(run(&mut controller, 50, contended).is_empty());
    }

    #[test]
    fn physical_cores_is_at_least_one() {
        assert!(physical_cores() >= 1);
    }
}
