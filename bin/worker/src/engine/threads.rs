//! How many threads llama.cpp gets, decided at run time from how long decode steps take and
//! from how much CPU other processes take.
//!
//! On an idle machine every physical core helps; but ggml's threads spin-wait at each barrier,
//! so once another process takes a core, a step with all cores waits for the thread that lost
//! its core and generation collapses (measured on 2 cores: about 80 down to under 6 tok/s).
//! So the engine starts with all physical cores and this controller watches the duration of
//! generation-only steps (same number of sequences, no prompt tokens, so like is compared with
//! like): when a window of steps is much slower than the fastest window seen at that count, the
//! count steps down at once. To find a better count it tries one thread more or less (a probe)
//! and keeps the change only if steps got faster, backing off when they did not.
//!
//! A probe costs: a new llama.cpp context, and a window of slower steps when it fails. So where
//! the CPU time of other processes can be measured (`cpu_load.rs`), a probe needs a cause:
//! down when others use part of the cores our threads run on, up when there is a free core for
//! one more thread. An idle machine then keeps all cores and never probes. Where it cannot be
//! measured, probes come now and then, rarer after each one that did not pay off. The engine
//! applies a change between steps. Pure logic, tested with made-up timings and loads.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cpu_load::ForeignTime;

/// Steps per window: the median of a window is one measurement. Small enough that a core
/// taken before or while a stream starts is acted on within its first dozen tokens (issue 21;
/// with 16 the first verdict came after 16 steps at the earliest): where the load is measured,
/// the first window that shows it starts a probe down at once.
const WINDOW: usize = 8;
/// A window this much slower than the fastest seen at the same count means contention.
const SLOWDOWN: f64 = 1.4;
/// A probed count is kept only if it is at least this much faster.
const KEEP_IF_FASTER: f64 = 0.95;
/// One step of a probe this much slower than before ends the probe at once: with a core taken,
/// a step with one thread too many can take seconds.
const PROBE_ABORT: f64 = 2.0;
/// A probe that found no window to compare in this many steps (the load changed from one
/// sequence to several) ends without a verdict.
const PROBE_MAX_STEPS: u32 = 3 * WINDOW as u32;
/// Windows between probes, doubled after each probe that did not pay off, up to the maximum.
const FIRST_PROBE_AFTER: u32 = 8;
const MAX_PROBE_AFTER: u32 = 256;
/// Others need this much of the cores our threads use (in cores) before one thread fewer is
/// tried, and this much must be free beyond our threads before one more is tried. The gap
/// between them keeps the count from flapping.
const CONTENTION_MARGIN: f64 = 0.5;
const ROOM_MARGIN: f64 = 0.75;

/// What the controller wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ThreadChange {
    Keep,
    /// Use this many threads from the next step on.
    Switch(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Down,
    Up,
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
    /// Steps observed since the probe began.
    steps: u32,
}

/// One window's steps and the foreign CPU time measured during them.
#[derive(Debug, Default, Clone)]
struct Window {
    steps: Vec<f64>,
    foreign: ForeignTime,
}

impl Window {
    /// Cores' worth of CPU other processes used during the window's steps, if measured.
    fn foreign_cores(&self) -> Option<f64> {
        (self.foreign.wall_seconds > 0.0)
            .then(|| self.foreign.foreign_seconds / self.foreign.wall_seconds)
    }
}

#[derive(Debug, Clone)]
pub(super) struct ThreadController {
    max: u32,
    current: u32,
    /// CPUs this process may use, when other processes' CPU time is measured; `None`: probe
    /// without a cause, now and then.
    cpus: Option<f64>,
    /// Steps of the current window, per number of sequences in the step.
    windows: BTreeMap<u32, Window>,
    /// By (threads, sequences in the step).
    figures: BTreeMap<(u32, u32), Figures>,
    probe: Option<Probe>,
    windows_until_probe: u32,
    probe_after: u32,
    /// Without load figures: the direction of the next probe when both are possible.
    next_probe_up: bool,
    /// With load figures: what the latest window's load asked for.
    wanted: Option<Direction>,
}

impl ThreadController {
    /// Starts at `max` threads (all physical cores), probing now and then.
    pub fn new(max: u32) -> ThreadController {
        let max = max.max(1);
        ThreadController {
            max,
            current: max,
            cpus: None,
            windows: BTreeMap::new(),
            figures: BTreeMap::new(),
            probe: None,
            windows_until_probe: FIRST_PROBE_AFTER,
            probe_after: FIRST_PROBE_AFTER,
            next_probe_up: false,
            wanted: None,
        }
    }

    /// Starts at `max` threads and probes only when other processes' CPU time, measured on
    /// the `cpus` this process may use, gives a cause.
    pub fn with_load(max: u32, cpus: u32) -> ThreadController {
        ThreadController {
            cpus: Some(f64::from(cpus.max(1))),
            ..ThreadController::new(max)
        }
    }

    #[cfg(test)]
    fn threads(&self) -> u32 {
        self.current
    }

    /// Records one generation-only step of `sequences` sequences that took `duration`, with
    /// the CPU time others used meanwhile when it was measured.
    pub fn observe(
        &mut self,
        sequences: u32,
        duration: Duration,
        foreign: Option<ForeignTime>,
    ) -> ThreadChange {
        let seconds = duration.as_secs_f64();
        if let Some(probe) = &mut self.probe {
            probe.steps += 1;
            let probe = *probe;
            let before = self.figure(probe.from, sequences).last;
            if before.is_some_and(|before| seconds > before * PROBE_ABORT) {
                return self.end_probe(probe, Some(false));
            }
            if probe.steps > PROBE_MAX_STEPS {
                return self.end_probe(probe, None);
            }
        }
        let window = self.windows.entry(sequences).or_default();
        window.steps.push(seconds);
        if let Some(foreign) = foreign {
            window.foreign.foreign_seconds += foreign.foreign_seconds;
            window.foreign.wall_seconds += foreign.wall_seconds;
        }
        if window.steps.len() < WINDOW {
            return ThreadChange::Keep;
        }
        let median = median(&mut window.steps);
        let foreign_cores = window.foreign_cores();
        *window = Window::default();
        let threads = self.current;
        tracing::debug!(
            threads,
            sequences,
            median_ms = median * 1e3,
            foreign_cores = foreign_cores.unwrap_or(f64::NAN),
            probing = self.probe.is_some(),
            "decode window"
        );
        let figures = self.figures.entry((threads, sequences)).or_default();
        figures.last = Some(median);
        let best = *figures
            .best
            .insert(figures.best.map_or(median, |best| best.min(median)));

        if let Some(probe) = self.probe {
            return match self.figure(probe.from, sequences).last {
                Some(before) => self.end_probe(probe, Some(median < before * KEEP_IF_FASTER)),
                // Nothing to compare with at this many sequences yet: keep probing.
                None => ThreadChange::Keep,
            };
        }
        // A slow window while the load shows our cores free is not contention (a longer
        // context, a hiccup); where the load is not measured, the timing alone decides.
        let load_says_free = self
            .free_cores(foreign_cores)
            .is_some_and(|free| free >= f64::from(threads) - CONTENTION_MARGIN);
        if threads > 1 && median > best * SLOWDOWN && !load_says_free {
            return self.switch(threads - 1);
        }
        let direction = match self.cpus {
            Some(_) => self.direction_from_load(foreign_cores),
            None => self.direction_by_turns(),
        };
        match direction {
            Some(direction) => self.start_probe(direction),
            None => ThreadChange::Keep,
        }
    }

    /// With load figures: a probe when the load gives a cause and the backoff allows it. A
    /// new cause is tried at once.
    fn direction_from_load(&mut self, foreign_cores: Option<f64>) -> Option<Direction> {
        let wanted = self.free_cores(foreign_cores).and_then(|free| {
            let threads = f64::from(self.current);
            if self.current > 1 && free < threads - CONTENTION_MARGIN {
                Some(Direction::Down)
            } else if self.current < self.max && free >= threads + ROOM_MARGIN {
                Some(Direction::Up)
            } else {
                None
            }
        });
        if wanted != self.wanted {
            self.wanted = wanted;
            self.probe_after = FIRST_PROBE_AFTER;
            self.windows_until_probe = 0;
        }
        wanted?;
        if self.windows_until_probe > 0 {
            self.windows_until_probe -= 1;
            return None;
        }
        wanted
    }

    /// Physical cores left by others, from the CPUs (hyper-threads counted) they kept busy:
    /// a busy hyper-thread takes about half of its core, so others' time counts in the
    /// proportion of physical cores (`max`) to CPUs.
    fn free_cores(&self, foreign_cores: Option<f64>) -> Option<f64> {
        let cpus = self.cpus?;
        let physical = f64::from(self.max);
        Some(physical - foreign_cores? * (physical / cpus).min(1.0))
    }

    /// Without load figures: every so many windows, one thread fewer or more in turn.
    fn direction_by_turns(&mut self) -> Option<Direction> {
        self.windows_until_probe = self.windows_until_probe.saturating_sub(1);
        if self.windows_until_probe > 0 || self.max == 1 {
            return None;
        }
        let up = match self.current {
            1 => true,
            threads if threads == self.max => false,
            _ => self.next_probe_up,
        };
        self.next_probe_up = !up;
        Some(if up { Direction::Up } else { Direction::Down })
    }

    fn start_probe(&mut self, direction: Direction) -> ThreadChange {
        let to = match direction {
            Direction::Up => self.current + 1,
            Direction::Down => self.current - 1,
        };
        if to == self.current || to < 1 || to > self.max {
            return ThreadChange::Keep;
        }
        self.probe = Some(Probe {
            from: self.current,
            steps: 0,
        });
        self.switch(to)
    }

    fn figure(&self, threads: u32, sequences: u32) -> Figures {
        self.figures
            .get(&(threads, sequences))
            .cloned()
            .unwrap_or_default()
    }

    /// Ends a probe: kept when it paid off, abandoned with backoff when it did not, abandoned
    /// as if never tried when nothing could be compared (`None`).
    fn end_probe(&mut self, probe: Probe, paid_off: Option<bool>) -> ThreadChange {
        self.probe = None;
        match paid_off {
            Some(true) => {
                self.probe_after = FIRST_PROBE_AFTER;
                self.windows_until_probe = self.probe_after;
                // The new count is judged afresh by the load of its own windows.
                self.wanted = None;
                ThreadChange::Keep
            }
            Some(false) => {
                self.probe_after = (self.probe_after * 2).min(MAX_PROBE_AFTER);
                self.switch(probe.from)
            }
            None => self.switch(probe.from),
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
            if let ThreadChange::Switch(threads) = controller.observe(1, duration, None) {
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
            controller.observe(1, ms(contended(controller.threads())), None);
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
            assert_eq!(controller.observe(1, ms(10.0), None), ThreadChange::Keep);
        }
        // Four sequences per step take longer, which is no sign of contention.
        for _ in 0..WINDOW {
            assert_eq!(controller.observe(4, ms(30.0), None), ThreadChange::Keep);
        }
        assert_eq!(controller.threads(), 2);
    }

    #[test]
    fn one_core_never_changes() {
        let mut controller = ThreadController::new(1);
        assert!(run(&mut controller, 50, contended).is_empty());
    }

    /// Like `run`, with the foreign load (in cores) that each step measured.
    fn run_with_load(
        controller: &mut ThreadController,
        windows: usize,
        step_ms: impl Fn(u32) -> f64,
        foreign_cores: f64,
    ) -> Vec<u32> {
        let mut switches = Vec::new();
        for _ in 0..windows * WINDOW {
            let duration = ms(step_ms(controller.threads()));
            let foreign = ForeignTime {
                foreign_seconds: foreign_cores * duration.as_secs_f64(),
                wall_seconds: duration.as_secs_f64(),
            };
            if let ThreadChange::Switch(threads) = controller.observe(1, duration, Some(foreign)) {
                switches.push(threads);
            }
        }
        switches
    }

    #[test]
    fn with_the_load_measured_an_idle_machine_never_probes() {
        let mut controller = ThreadController::with_load(2, 2);
        assert!(run_with_load(&mut controller, 500, idle, 0.05).is_empty());
        assert_eq!(controller.threads(), 2);
    }

    #[test]
    fn with_the_load_measured_a_busy_core_steps_down_and_its_end_steps_back_up() {
        let mut controller = ThreadController::with_load(2, 2);
        run_with_load(&mut controller, 4, idle, 0.0);
        // Another process takes a core: down at the first window, and it stays down without
        // probing up while that process runs.
        let switches = run_with_load(&mut controller, 200, contended, 1.0);
        assert_eq!(switches, vec![1]);
        // It stops: the next window sees a free core and tries it.
        let switches = run_with_load(&mut controller, 2, idle, 0.0);
        assert_eq!(switches, vec![2]);
        assert!(run_with_load(&mut controller, 100, idle, 0.0).is_empty());
        assert_eq!(controller.threads(), 2);
    }

    #[test]
    fn with_the_load_measured_a_busy_start_is_found_without_a_baseline() {
        let mut controller = ThreadController::with_load(2, 2);
        assert_eq!(run_with_load(&mut controller, 2, contended, 0.9), vec![1]);
        assert!(run_with_load(&mut controller, 100, contended, 0.9).is_empty());
    }

    #[test]
    fn with_the_load_measured_a_busy_core_is_acted_on_within_a_dozen_tokens() {
        // Issue 21: the lead under contention needs the count down early in a stream, not
        // after a long window; one step per token without drafts.
        let mut controller = ThreadController::with_load(2, 2);
        let first_switch = (1..=100).find(|_| {
            let duration = ms(contended(controller.threads()));
            let foreign = ForeignTime {
                foreign_seconds: duration.as_secs_f64(),
                wall_seconds: duration.as_secs_f64(),
            };
            controller.observe(1, duration, Some(foreign)) == ThreadChange::Switch(1)
        });
        assert!(
            first_switch.is_some_and(|step| step <= 12),
            "{first_switch:?}"
        );
    }

    #[test]
    fn with_the_load_measured_a_slow_window_on_free_cores_is_not_contention() {
        let mut controller = ThreadController::with_load(2, 2);
        run_with_load(&mut controller, 4, idle, 0.0);
        // Steps got slower (a long context) but nobody else runs.
        assert!(run_with_load(&mut controller, 10, |_| 16.0, 0.0).is_empty());
        assert_eq!(controller.threads(), 2);
    }

    #[test]
    fn with_the_load_measured_a_probe_that_does_not_pay_off_backs_off() {
        // Others use a core, but on this machine one thread is still slower (the load sits
        // on cores we hardly need): tried, dropped, and tried again ever more rarely.
        let mut controller = ThreadController::with_load(2, 2);
        let switches = run_with_load(&mut controller, 400, idle, 1.0);
        assert_eq!(controller.threads(), 2);
        let probes = switches.iter().filter(|&&threads| threads == 1).count();
        assert!((2..=8).contains(&probes), "{probes} probes: {switches:?}");
    }

    #[test]
    fn with_hyper_threads_others_count_in_physical_cores() {
        // 8 cores, 16 CPUs: others keeping 8 CPUs busy take about 4 cores.
        let mut controller = ThreadController::with_load(8, 16);
        assert_eq!(controller.free_cores(Some(8.0)), Some(4.0));
        assert_eq!(controller.free_cores(None), None);
        assert_eq!(run_with_load(&mut controller, 1, |_| 10.0, 8.0), vec![7]);
        // Under one busy CPU is under half a core: no cause to try fewer threads.
        let mut controller = ThreadController::with_load(8, 16);
        assert!(run_with_load(&mut controller, 20, |_| 10.0, 0.8).is_empty());
    }

    #[test]
    fn a_probe_without_a_comparable_window_ends_without_a_verdict() {
        let mut controller = ThreadController::with_load(2, 2);
        assert_eq!(run_with_load(&mut controller, 1, idle, 1.0), vec![1]);
        // Now only 3-sequence steps, never measured at 2 threads: the probe ends.
        let mut switches = Vec::new();
        for _ in 0..PROBE_MAX_STEPS + 1 {
            if let ThreadChange::Switch(threads) = controller.observe(3, ms(30.0), None) {
                switches.push(threads);
            }
        }
        assert_eq!(switches, vec![2]);
    }

    #[test]
    fn physical_cores_is_at_least_one() {
        assert!(physical_cores() >= 1);
    }
}
