//! Each model's queue wait over the last minute, for scale-out: how long its jobs waited from
//! admission to dispatch (0 for one dispatched at once), plus how long those still queued have
//! waited so far, so a queue that never moves counts too. Pure: every method takes `now`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How far back the waits count.
pub const QUEUE_WAIT_WINDOW: Duration = Duration::from_secs(60);

/// The waits of dispatched jobs, by model, oldest first.
#[derive(Debug, Default)]
pub struct QueueWaits {
    dispatched: HashMap<String, VecDeque<(Instant, Duration)>>,
}

impl QueueWaits {
    /// A job of `model` dispatched `now` after waiting `wait`.
    pub fn record(&mut self, model: &str, wait: Duration, now: Instant) {
        let waits = self.dispatched.entry(model.to_owned()).or_default();
        waits.push_back((now, wait));
        forget_old(waits, now);
    }

    /// The median wait per model over the window: the dispatched jobs' waits and, from
    /// `queued` (model and admission time of each job still waiting), the waits so far.
    pub fn medians<'a>(
        &mut self,
        queued: impl IntoIterator<Item = (&'a str, Instant)>,
        now: Instant,
    ) -> BTreeMap<String, Duration> {
        let mut samples: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        self.dispatched.retain(|model, waits| {
            forget_old(waits, now);
            if !waits.is_empty() {
                samples
                    .entry(model.clone())
                    .or_default()
                    .extend(waits.iter().map(|(_, wait)| *wait));
            }
            !waits.is_empty()
        });
        for (model, admitted) in queued {
            samples
                .entry(model.to_owned())
                .or_default()
                .push(now.saturating_duration_since(admitted));
        }
        samples
            .into_iter()
            .map(|(model, mut waits)| {
                waits.sort_unstable();
                (model, median(&waits))
            })
            .collect()
    }
}

fn forget_old(waits: &mut VecDeque<(Instant, Duration)>, now: Instant) {
    while waits
        .front()
        .is_some_and(|(at, _)| now.saturating_duration_since(*at) > QUEUE_WAIT_WINDOW)
    {
        waits.pop_front();
    }
}

/// The middle of sorted, non-empty `waits` (the mean of the two middle ones for an even count).
fn median(waits: &[Duration]) -> Duration {
    let middle = waits.len() / 2;
    match waits.len() % 2 {
        1 => waits[middle],
        _ => (waits[middle - 1] + waits[middle]) / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_median_of_dispatched_waits_per_model() {
        let start = Instant::now();
        let mut waits = QueueWaits::default();
        for seconds in [0, 12, 20] {
            waits.record("a", SECOND * seconds, start);
        }
        waits.record("b", SECOND * 3, start);
        waits.record("b", SECOND * 5, start);
        let medians = waits.medians([], start);
        assert_eq!(medians["a"], SECOND * 12);
        assert_eq!(medians["b"], SECOND * 4, "the mean of the middle two");
    }

    #[test]
    fn waits_older_than_a_minute_no_longer_count() {
        let start = Instant::now();
        let mut waits = QueueWaits::default();
        waits.record("a", SECOND * 30, start);
        waits.record("a", SECOND * 30, start + SECOND * 10);
        waits.record("a", Duration::ZERO, start + SECOND * 50);
        assert_eq!(waits.medians([], start + SECOND * 50)["a"], SECOND * 30);
        // The first is 61 s old: 30 s and 0 s remain.
        assert_eq!(waits.medians([], start + SECOND * 61)["a"], SECOND * 15);
        let later = start + SECOND * 200;
        assert!(waits.medians([], later).is_empty(), "all forgotten");
    }

    #[test]
    fn jobs_still_queued_count_with_their_wait_so_far() {
        let start = Instant::now();
        let mut waits = QueueWaits::default();
        waits.record("a", Duration::ZERO, start);
        let now = start + SECOND * 20;
        let queued = [
            ("a", start + SECOND * 5),
            ("a", start + SECOND * 8),
            ("c", start),
        ];
        let medians = waits.medians(queued, now);
        assert_eq!(medians["a"], SECOND * 12, "0, 12 and 15 s");
        assert_eq!(medians["c"], SECOND * 20, "a queue that never moved");
    }
}
