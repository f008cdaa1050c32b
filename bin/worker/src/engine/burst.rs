//! Requests sent together (a client's parallel calls, several users at once) reach the engine
//! a few milliseconds apart. Woken from idle by the first, the engine would prefill it alone and
//! make the others wait through that whole step before theirs begins: by hand, four streams of
//! ~100-token prompts sent within 17 ms of each other got their first tokens at 0.4 s and at
//! 1.7 s on this project's 2-core machine, where llama-server answered all four at about 1.5 s.
//! So before a step that starts from idle the engine waits for company, for a small share of
//! the prefill it is about to run: a lone request pays at most that share of its time to first
//! token, and where prefill is quick (a GPU) the wait all but vanishes.

use std::time::Duration;

/// The share of the expected prefill the engine waits for more requests.
const WAIT_SHARE: f64 = 0.01;
/// Shorter waits are not worth a timed wake-up: a split costs about as little.
const MIN_WAIT: Duration = Duration::from_micros(200);
/// Steps with fewer prompt tokens say little about what one costs.
const MIN_SAMPLE_TOKENS: usize = 8;
/// Weight of the newest step in the running estimate.
const SMOOTHING: f64 = 0.3;

/// What one prompt token costs to decode, learnt from steps that decoded prompt tokens only.
#[derive(Debug, Default)]
pub(super) struct PrefillCost {
    /// Seconds per prompt token; `None` until a step has been measured.
    per_token: Option<f64>,
}

impl PrefillCost {
    /// A step that decoded `prompt_tokens` prompt tokens and nothing else took `step`.
    pub fn record(&mut self, prompt_tokens: usize, step: Duration) {
        if prompt_tokens < MIN_SAMPLE_TOKENS {
            return;
        }
        let sample = step.as_secs_f64() / prompt_tokens as f64;
        self.per_token = Some(match self.per_token {
            Some(estimate) => estimate + SMOOTHING * (sample - estimate),
            None => sample,
        });
    }

    /// How long to wait, at most `max`, for more requests before prefilling `uncached_tokens`
    /// from idle; `None`: start at once (nothing measured yet, or too little to prefill to
    /// matter).
    pub fn burst_wait(&self, uncached_tokens: usize, max: Duration) -> Option<Duration> {
        let expected = self.per_token? * uncached_tokens as f64;
        let wait = Duration::from_secs_f64(expected * WAIT_SHARE).min(max);
        (wait >= MIN_WAIT).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_WAIT: Duration = Duration::from_millis(5);

    fn measured(per_token_ms: u64) -> PrefillCost {
        let mut cost = PrefillCost::default();
        cost.record(100, Duration::from_millis(100 * per_token_ms));
        cost
    }

    #[test]
    fn nothing_measured_means_no_wait() {
        assert_eq!(PrefillCost::default().burst_wait(1000, MAX_WAIT), None);
    }

    #[test]
    fn the_wait_is_a_share_of_the_expected_prefill_and_capped() {
        // 4 ms per token (2 CPU cores): 100 tokens take 400 ms, so wait 4 ms.
        let cpu = measured(4);
        assert_eq!(
            cpu.burst_wait(100, MAX_WAIT),
            Some(Duration::from_millis(4))
        );
        // A long prompt's wait stops at the cap.
        assert_eq!(cpu.burst_wait(10_000, MAX_WAIT), Some(MAX_WAIT));
        // A prompt served almost whole from the cache leaves little to prefill: no wait.
        assert_eq!(cpu.burst_wait(4, MAX_WAIT), None);
        // `--max-burst-wait-ms 0` turns it off.
        assert_eq!(cpu.burst_wait(100, Duration::ZERO), None);
    }

    #[test]
    fn fast_prefill_does_not_wait() {
        let mut gpu = PrefillCost::default();
        // 100 tokens in 5 ms: a split would cost 5 ms, not worth waiting for.
        gpu.record(100, Duration::from_millis(5));
        assert_eq!(gpu.burst_wait(100, MAX_WAIT), None);
    }

    #[test]
    fn small_steps_are_not_samples_and_the_estimate_follows_new_ones() {
        let mut cost = measured(4);
        cost.record(2, Duration::from_secs(10));
        assert_eq!(
            cost.burst_wait(100, MAX_WAIT),
            Some(Duration::from_millis(4))
        );
        for _ in 0..30 {
            cost.record(100, Duration::from_millis(200));
        }
        let wait = cost.burst_wait(100, MAX_WAIT).unwrap();
        assert!(
            (wait.as_secs_f64() - 0.002).abs() < 0.0001,
            "after many 2 ms-per-token steps: {wait:?}"
        );
    }
}
