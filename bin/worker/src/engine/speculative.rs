//! Speculative decoding by prompt lookup. A generating sequence guesses its next tokens from
//! its own history (prompt plus output): where the last few tokens occurred before, what
//! followed them then is the draft. The draft goes into the same decode step as the sequence's
//! next token, with logits on every row, and [`verify`] keeps the longest prefix of it that the
//! sequence's own sampler agrees with, plus one token sampled where they part. The batching loop
//! removes the rejected tokens' KV cells. [`DraftPolicy`] sizes each sequence's drafts from
//! what it accepted so far and stops drafting where guesses keep failing.
//!
//! Why this is exact: every emitted token is sampled by the sequence's own sampler chain from
//! the logits of the position it occupies, conditioned on the tokens emitted before it; the
//! draft only decides which positions are computed ahead. For greedy decoding the output is
//! the same as without speculation. For sampled decoding the draft is a point mass on one token
//! `d`, and sampling `t ~ p` and accepting `d` when `t == d` is speculative sampling's rule for
//! such a draft: `d` is accepted with probability `p(d)`, and on rejection `t` is distributed as
//! `p` without `d`, renormalised (the unit tests check the distribution).

/// `--speculative`: how a generating sequence drafts tokens to verify in one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Speculation {
    /// One token per step and sequence.
    Off,
    /// Drafts from the sequence's own prompt and output (prompt lookup); pauses itself where
    /// the guesses keep failing.
    #[default]
    Ngram,
}

/// The shortest repeated run of tokens a draft is looked up by: shorter matches (a single
/// common token) guess wrong too often to pay for the longer step.
const MIN_MATCH: usize = 3;
/// Matches are compared up to this many tokens back; the longest, most recent one wins.
const MAX_MATCH: usize = 12;
/// Draft length a sequence starts with, and the bounds the policy keeps it in.
const FIRST_DRAFT: usize = 16;
const MIN_DRAFT: usize = 2;
pub(super) const MAX_DRAFT: usize = 64;
/// Steps without drafting after a draft of which nothing was accepted; doubles with each such
/// draft in a row, so text without repetition pays for a handful of failed guesses at most.
const FIRST_PAUSE: u32 = 8;
const MAX_PAUSE: u32 = 1024;

/// The tokens that followed the latest earlier occurrence of the longest suffix of `history`
/// (at least [`MIN_MATCH`] tokens), at most `max_len` of them; empty when nothing repeats.
pub(super) fn lookup_draft<T: PartialEq>(history: &[T], max_len: usize) -> &[T] {
    let Some((last, earlier)) = history.split_last() else {
        return &[];
    };
    let mut best: Option<(usize, usize)> = None; // (match length, end of the match)
    for end in (0..earlier.len()).rev() {
        if earlier[end] != *last {
            continue;
        }
        let longest = MAX_MATCH.min(end + 1);
        let length = 1
            + (1..longest)
                .take_while(|&back| earlier[end - back] == history[history.len() - 1 - back])
                .count();
        if length >= MIN_MATCH && best.is_none_or(|(best_length, _)| length > best_length) {
            best = Some((length, end));
            if length == MAX_MATCH {
                break;
            }
        }
    }
    let Some((_, end)) = best else {
        return &[];
    };
    let start = end + 1;
    &history[start..history.len().min(start + max_len)]
}

/// The tokens emitted for one verified draft: the longest prefix of `draft` that `sample`
/// reproduces, then the first token where they differ (or one beyond the draft when all of it
/// was accepted). `sample(i)` samples the position after the draft's first `i` tokens, from
/// the logits computed with those tokens in place.
pub(super) fn verify<T: PartialEq + Copy>(
    draft: &[T],
    mut sample: impl FnMut(usize) -> T,
) -> Vec<T> {
    let mut emitted = Vec::with_capacity(draft.len() + 1);
    for index in 0..=draft.len() {
        let token = sample(index);
        emitted.push(token);
        if draft.get(index) != Some(&token) {
            break;
        }
    }
    emitted
}

/// One sequence's drafting: how long its next draft may be, whether it is pausing, and what
/// it drafted and had accepted so far.
#[derive(Debug, Clone)]
pub(super) struct DraftPolicy {
    limit: usize,
    pause_left: u32,
    next_pause: u32,
    pub drafted: u32,
    pub accepted: u32,
}

impl Default for DraftPolicy {
    fn default() -> Self {
        DraftPolicy {
            limit: FIRST_DRAFT,
            pause_left: 0,
            next_pause: FIRST_PAUSE,
            drafted: 0,
            accepted: 0,
        }
    }
}

impl DraftPolicy {
    /// The longest draft to look up for this step; 0 while pausing (the step counts towards
    /// the pause).
    pub fn budget(&mut self) -> usize {
        if self.pause_left > 0 {
            self.pause_left -= 1;
            return 0;
        }
        self.limit
    }

    /// Learns from one verified draft: all of it accepted doubles the next one; part of it
    /// halves it; none of it also pauses drafting for a while, longer each time in a row.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        self.drafted += drafted as u32;
        self.accepted += accepted as u32;
        if accepted == drafted {
            self.limit = (self.limit * 2).min(MAX_DRAFT);
            self.next_pause = FIRST_PAUSE;
            return;
        }
        self.limit = (self.limit / 2).max(MIN_DRAFT);
        if accepted == 0 {
            self.pause_left = self.next_pause;
            self.next_pause = (self.next_pause * 2).min(MAX_PAUSE);
        } else if accepted * 2 >= drafted {
            self.next_pause = FIRST_PAUSE;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_longest_latest_match_gives_the_draft() {
        // "a b c d | x b c e | b c" — the suffix `b c` matches twice, but only `x b c` and
        // `a b c` are three tokens long; the suffix is `y b c`, matched by neither, so nothing.
        let history = [1, 2, 3, 4, 9, 2, 3, 5, 8, 2, 3];
        assert!(lookup_draft(&history, 4).is_empty());
        // `9 2 3` occurred once: what followed it is the draft.
        let history = [1, 2, 3, 4, 9, 2, 3, 5, 6, 7, 9, 2, 3];
        assert_eq!(lookup_draft(&history, 3), &[5, 6, 7]);
        // Both `1 2 3` occurrences match three tokens; `0 1 2 3` only the first, so it wins.
        let history = [0, 1, 2, 3, 4, 4, 7, 1, 2, 3, 8, 0, 1, 2, 3];
        assert_eq!(lookup_draft(&history, 2), &[4, 4]);
        // Equal lengths: the most recent occurrence.
        let history = [1, 2, 3, 4, 1, 2, 3, 5, 6, 1, 2, 3];
        assert_eq!(lookup_draft(&history, 8), &[5, 6, 1, 2, 3]);
    }

    #[test]
    fn a_draft_never_exceeds_its_budget_or_the_history() {
        let history = [1, 2, 3, 1, 2, 3];
        assert_eq!(lookup_draft(&history, 0), &[] as &[i32]);
        assert_eq!(lookup_draft(&history, 100), &[1, 2, 3]);
        assert!(lookup_draft::<i32>(&[], 4).is_empty());
        assert!(lookup_draft(&[7], 4).is_empty());
    }

    #[test]
    fn verification_keeps_the_agreeing_prefix_and_the_token_where_they_part() {
        let draft = [10, 11, 12, 13];
        let model = [10, 11, 99, 13, 14];
        let mut asked = Vec::new();
        let emitted = verify(&draft, |index| {
            asked.push(index);
            model[index]
        });
        assert_eq!(emitted, [10, 11, 99]);
        assert_eq!(
            asked,
            [0, 1, 2],
            "nothing is sampled past the first disagreement"
        );
        // Everything accepted: one more token from the last row.
        assert_eq!(
            verify(&draft, |index| [10, 11, 12, 13, 14][index]),
            [10, 11, 12, 13, 14]
        );
        // No draft: one token, as a step without speculation.
        assert_eq!(verify(&[] as &[i32], |_| 5), [5]);
    }

    #[test]
    fn the_policy_grows_on_success_and_pauses_longer_after_each_failure_in_a_row() {
        let first = FIRST_DRAFT as u32;
        let mut policy = DraftPolicy::default();
        assert_eq!(policy.budget(), FIRST_DRAFT);
        policy.record(FIRST_DRAFT, FIRST_DRAFT);
        assert_eq!(policy.budget(), 2 * FIRST_DRAFT);
        for _ in 0..8 {
            policy.record(MAX_DRAFT, MAX_DRAFT);
        }
        assert_eq!(policy.budget(), MAX_DRAFT);
        let pauses: Vec<u32> = (0..3)
            .map(|_| {
                policy.record(4, 0);
                let mut paused = 0;
                while policy.budget() == 0 {
                    paused += 1;
                }
                paused
            })
            .collect();
        assert_eq!(pauses, [FIRST_PAUSE, 2 * FIRST_PAUSE, 4 * FIRST_PAUSE]);
        // A good draft ends the run of failures: the next failure pauses briefly again.
        policy.record(4, 3);
        policy.record(4, 0);
        assert_eq!(
            (0..).take_while(|_| policy.budget() == 0).count() as u32,
            FIRST_PAUSE
        );
        assert_eq!(
            (policy.drafted, policy.accepted),
            (
                first + 8 * MAX_DRAFT as u32 + 20,
                first + 8 * MAX_DRAFT as u32 + 3
            )
        );
    }

    /// A deterministic generator for the distribution tests (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn pick(&mut self, probabilities: &[f64]) -> usize {
            let mut left = self.unit();
            for (token, &p) in probabilities.iter().enumerate() {
                if left < p {
                    return token;
                }
                left -= p;
            }
            probabilities.len() - 1
        }
    }

    /// A toy language model over three tokens: the next token depends on the last two.
    fn next_distribution(history: &[usize]) -> [f64; 3] {
        let [.., a, b] = history else {
            unreachable!("histories start with a prompt")
        };
        match (a + 2 * b) % 4 {
            0 => [0.7, 0.2, 0.1],
            1 => [0.1, 0.6, 0.3],
            2 => [0.25, 0.25, 0.5],
            _ => [0.05, 0.15, 0.8],
        }
    }

    const PROMPT: [usize; 7] = [0, 1, 2, 0, 1, 2, 0];
    const GENERATED: usize = 5;

    /// `GENERATED` tokens after `PROMPT`, drafting by prompt lookup and verifying as the engine
    /// does; the draft counters say how much speculation happened.
    fn speculative_continuation(rng: &mut Rng, drafted: &mut usize) -> Vec<usize> {
        let mut history = PROMPT.to_vec();
        while history.len() < PROMPT.len() + GENERATED {
            let room = PROMPT.len() + GENERATED - history.len() - 1;
            let draft = lookup_draft(&history, room).to_vec();
            *drafted += draft.len();
            let emitted = verify(&draft, |index| {
                // The row after the draft's first `index` tokens sees exactly those tokens.
                let mut context = history.clone();
                context.extend_from_slice(&draft[..index]);
                rng.pick(&next_distribution(&context))
            });
            history.extend(emitted);
        }
        history.split_off(PROMPT.len())
    }

    /// The exact probability of a continuation under the toy model.
    fn probability(continuation: &[usize]) -> f64 {
        let mut history = PROMPT.to_vec();
        let mut p = 1.0;
        for &token in continuation {
            p *= next_distribution(&history)[token];
            history.push(token);
        }
        p
    }

    #[test]
    fn sampled_speculation_keeps_the_models_distribution() {
        let samples = 200_000;
        let mut rng = Rng(42);
        let mut drafted = 0;
        let mut counts: HashMap<Vec<usize>, usize> = HashMap::new();
        for _ in 0..samples {
            *counts
                .entry(speculative_continuation(&mut rng, &mut drafted))
                .or_default() += 1;
        }
        assert!(
            drafted > samples,
            "the prompt repeats, so drafts were verified: {drafted}"
        );
        // Total variation distance between the observed and the exact distribution over all
        // 3^5 continuations. Sampling noise alone keeps it near 0.01 at this sample size;
        // accepting drafts without sampling (or sampling rejected positions from p unchanged
        // and keeping the draft token's row) moves it far above.
        let mut distance = 0.0;
        for index in 0..3usize.pow(GENERATED as u32) {
            let continuation: Vec<usize> = (0..GENERATED)
                .map(|position| index / 3usize.pow(position as u32) % 3)
                .collect();
            let observed = counts.get(&continuation).copied().unwrap_or(0) as f64 / samples as f64;
            distance += (observed - probability(&continuation)).abs() / 2.0;
        }
        assert!(distance < 0.02, "total variation distance {distance}");
    }

    #[test]
    fn one_drafted_token_is_accepted_with_its_probability_and_replaced_from_the_rest() {
        // The single-position rule spelled out: draft `d`, model `p`. Accepted with p(d); on
        // rejection the emitted token follows p without d, renormalised.
        let p = [0.5, 0.3, 0.2];
        let draft = 1;
        let mut rng = Rng(7);
        let samples = 100_000;
        let mut accepted = 0;
        let mut replaced = [0usize; 3];
        for _ in 0..samples {
            let emitted = verify(&[draft], |index| match index {
                0 => rng.pick(&p),
                // After an accepted draft the next row is sampled; its value does not matter.
                _ => 0,
            });
            if emitted.len() == 2 {
                accepted += 1;
            } else {
                replaced[emitted[0]] += 1;
            }
        }
        let acceptance = accepted as f64 / samples as f64;
        assert!(
            (acceptance - p[draft]).abs() < 0.01,
            "acceptance {acceptance}"
        );
        let rejected = (samples - accepted) as f64;
        assert_eq!(
            replaced[draft], 0,
            "a rejected draft token is never emitted in its place"
        );
        for token in [0, 2] {
            let share = replaced[token] as f64 / rejected;
            let renormalised = p[token] / (1.0 - p[draft]);
            assert!(
                (share - renormalised).abs() < 0.01,
                "token {token}: {share}"
            );
        }
    }
}
