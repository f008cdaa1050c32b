//! What each slot's KV cache holds after its sequence ends, so that the next request that
//! starts the same way (the next turn of a conversation resends the whole history) skips the
//! tokens already there. The engine picks the free slot whose cache shares the longest prefix
//! with a new prompt; without a good match it overwrites an empty slot, else the least
//! recently used one. When another slot, busy or not, holds a much longer prefix, the chosen
//! slot starts from a copy of that slot's KV cells instead of decoding the prefix again; a
//! prompt whose prefix another slot is still decoding waits for it (the `n` choices of one
//! request, users sharing a long system prompt). Plain bookkeeping: the batching loop applies
//! its decisions to llama.cpp.

use llama_cpp_2::token::LlamaToken;

/// A slot's cache is chosen for a prompt only when the shared prefix is at least this share
/// of what the slot holds (llama.cpp's server uses the same 10 %): a short common system
/// prompt must not evict a long conversation that is likely to come back.
const MIN_SHARED_FRACTION: f64 = 0.1;

/// Copying another slot's KV cells pays off only past this many more prefix tokens than the
/// chosen slot holds. Each slot has KV buffers of its own (a non-unified cache), and llama.cpp
/// copies them whole, whatever part is in use. Measured by hand for the default model at 2048
/// cells per slot on 2 cores: a copy added 1–11 ms to the step after it, while a prompt token
/// cost about 4 ms to decode; 8 tokens leave a wide margin.
pub(super) const MIN_COPIED_TOKENS: usize = 8;

#[derive(Debug, Default, Clone)]
struct SlotCache {
    /// The tokens in this slot's KV cells, in position order (position = index).
    tokens: Vec<LlamaToken>,
    /// When the slot last ran a job, in ticks of [`PrefixCache::touch`]; 0 = never.
    last_used: u64,
}

#[derive(Debug, Clone)]
pub(super) struct PrefixCache {
    slots: Vec<SlotCache>,
    clock: u64,
}

impl PrefixCache {
    pub fn new(slots: usize) -> PrefixCache {
        PrefixCache {
            slots: vec![SlotCache::default(); slots],
            clock: 0,
        }
    }

    /// The tokens `slot` holds.
    pub fn tokens(&self, slot: usize) -> &[LlamaToken] {
        &self.slots[slot].tokens
    }

    /// Length of the prefix that `prompt` shares with what `slot` holds.
    pub fn common_prefix(&self, slot: usize, prompt: &[LlamaToken]) -> usize {
        common_prefix(&self.slots[slot].tokens, prompt)
    }

    /// The free slot for `prompt`: the one sharing the longest useful prefix with it, else
    /// an empty one, else the least recently used (its cache is evicted). `None` if no slot
    /// is free.
    pub fn choose_slot(
        &self,
        free: impl IntoIterator<Item = usize>,
        prompt: &[LlamaToken],
    ) -> Option<usize> {
        let free: Vec<usize> = free.into_iter().collect();
        let best_match = free
            .iter()
            .map(|&slot| (slot, self.common_prefix(slot, prompt)))
            .filter(|&(slot, shared)| self.is_useful_match(slot, shared))
            // Longest prefix; among equals the most recently used (it is the warmest).
            .max_by_key(|&(slot, shared)| (shared, self.slots[slot].last_used));
        if let Some((slot, _)) = best_match {
            return Some(slot);
        }
        free.iter().copied().min_by_key(|&slot| {
            (
                !self.slots[slot].tokens.is_empty(),
                self.slots[slot].last_used,
            )
        })
    }

    /// The slot among `others` whose KV cells `slot` should start from for `prompt`: the one
    /// holding the longest prefix of it, if that beats what `slot` holds by at least
    /// [`MIN_COPIED_TOKENS`].
    pub fn donor_for(
        &self,
        slot: usize,
        others: impl IntoIterator<Item = usize>,
        prompt: &[LlamaToken],
    ) -> Option<usize> {
        let own = self.common_prefix(slot, prompt);
        others
            .into_iter()
            .filter(|&other| other != slot)
            .map(|other| (other, self.common_prefix(other, prompt)))
            .filter(|&(_, shared)| shared >= own + MIN_COPIED_TOKENS)
            .max_by_key(|&(_, shared)| shared)
            .map(|(other, _)| other)
    }

    /// The longest prefix of `prompt` that any slot holds.
    pub fn longest_held_prefix(&self, prompt: &[LlamaToken]) -> usize {
        (0..self.slots.len())
            .map(|slot| self.common_prefix(slot, prompt))
            .max()
            .unwrap_or(0)
    }

    /// Records that `to`'s KV cells were replaced by a copy of `from`'s.
    pub fn copy(&mut self, from: usize, to: usize) {
        self.slots[to].tokens = self.slots[from].tokens.clone();
    }

    fn is_useful_match(&self, slot: usize, shared: usize) -> bool {
        let held = self.slots[slot].tokens.len();
        // One shared token is only the BOS every prompt starts with.
        shared > 1 && shared as f64 >= MIN_SHARED_FRACTION * held as f64
    }

    /// Marks `slot` as just used (for least-recently-used eviction).
    pub fn touch(&mut self, slot: usize) {
        self.clock += 1;
        self.slots[slot].last_used = self.clock;
    }

    /// Keeps only the first `len` tokens of `slot` (the KV cells past them were removed).
    pub fn truncate(&mut self, slot: usize, len: usize) {
        self.slots[slot].tokens.truncate(len);
    }

    /// Records tokens just put into `slot`'s KV cells, in position order.
    pub fn extend(&mut self, slot: usize, tokens: &[LlamaToken]) {
        self.slots[slot].tokens.extend_from_slice(tokens);
    }

    /// Forgets what `slot` holds (its KV cells were cleared).
    pub fn clear(&mut self, slot: usize) {
        self.slots[slot].tokens.clear();
    }
}

/// Whether a prompt should wait for a slot that is decoding `pending` tokens of its prefix
/// (while the slots hold `held` of it) rather than decode them again beside it: the same rule
/// as for copying, so that the wait ends in a copy.
pub(super) fn worth_waiting_for(pending: usize, held: usize) -> bool {
    pending >= held + MIN_COPIED_TOKENS
}

pub(super) fn common_prefix(held: &[LlamaToken], prompt: &[LlamaToken]) -> usize {
    held.iter()
        .zip(prompt)
        .take_while(|(held, prompt)| held == prompt)
        .count()
}

/// How much of a prompt can come from a slot's cache: the shared prefix, minus the prompt's
/// last token (it is decoded again: its logits give the first generated token), and nothing
/// if a sliding-window cache no longer holds the window in front of the cut.
///
/// `held_from` is the smallest position still in the slot's KV cells (`-1` when empty);
/// `sliding_window` the model's attention window, 0 when unknown: then a cut needs every
/// position from 0 on, which a model without a sliding window always has.
pub(super) fn reusable_prefix(
    shared: usize,
    prompt_len: usize,
    held_len: usize,
    held_from: i32,
    sliding_window: u32,
) -> usize {
    let reuse = shared.min(prompt_len.saturating_sub(1));
    if reuse == 0 {
        return 0;
    }
    // Cutting the cache back to `reuse` needs the `sliding_window` positions before the cut:
    // a sliding-window cache drops older positions as a sequence grows (llama.cpp's server
    // makes the same check). Continuing right where the cache ends needs nothing dropped.
    if reuse < held_len {
        let needed_from = match sliding_window {
            0 => 0,
            window => reuse.saturating_sub(window as usize),
        };
        if held_from < 0 || held_from as usize > needed_from {
            return 0;
        }
    }
    reuse
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken).collect()
    }

    fn cache_with(contents: &[&[i32]]) -> PrefixCache {
        let mut cache = PrefixCache::new(contents.len());
        for (slot, held) in contents.iter().enumerate() {
            cache.extend(slot, &tokens(held));
            if !held.is_empty() {
                cache.touch(slot);
            }
        }
        cache
    }

    #[test]
    fn the_slot_holding_the_longest_prefix_is_chosen() {
        let cache = cache_with(&[&[2, 10, 11], &[2, 10, 11, 12, 13], &[]]);
        let prompt = tokens(&[2, 10, 11, 12, 13, 14]);
        assert_eq!(cache.choose_slot([0, 1, 2], &prompt), Some(1));
        assert_eq!(cache.common_prefix(1, &prompt), 5);
        // Busy slots are not candidates, however well they match.
        assert_eq!(cache.choose_slot([0, 2], &prompt), Some(0));
    }

    #[test]
    fn without_a_useful_match_an_empty_slot_then_the_least_recently_used_is_taken() {
        // Slot 0 was used first, slot 1 later; both share only the BOS token with the prompt.
        let mut cache = cache_with(&[&[2, 10, 11], &[2, 20, 21], &[]]);
        let prompt = tokens(&[2, 30, 31]);
        assert_eq!(cache.choose_slot([0, 1, 2], &prompt), Some(2));
        assert_eq!(cache.choose_slot([0, 1], &prompt), Some(0));
        cache.touch(0);
        assert_eq!(cache.choose_slot([0, 1], &prompt), Some(1));
    }

    #[test]
    fn a_short_shared_prefix_does_not_claim_a_long_conversation() {
        // 3 shared tokens of a 40-token history is below 10 %: the empty slot is taken instead.
        let history: Vec<i32> = [2, 7, 7].into_iter().chain(100..137).collect();
        let cache = cache_with(&[&history, &[]]);
        assert_eq!(cache.choose_slot([0, 1], &tokens(&[2, 7, 7, 9])), Some(1));
        // With only that slot free it is still used, and the 3 tokens are reused.
        assert_eq!(cache.choose_slot([0], &tokens(&[2, 7, 7, 9])), Some(0));
        assert_eq!(cache.common_prefix(0, &tokens(&[2, 7, 7, 9])), 3);
    }

    #[test]
    fn a_much_longer_prefix_in_another_slot_is_copied_a_slightly_longer_one_is_not() {
        let long: Vec<i32> = (0..100).collect();
        let prompt = tokens(&long);
        let just_short = 30 - MIN_COPIED_TOKENS + 1;
        let cache = cache_with(&[&long[..just_short], &long[..90], &long[..30], &[]]);
        // Slot 3 is empty: slot 1's 90 tokens beat slot 2's 30.
        assert_eq!(cache.donor_for(3, [0, 1, 2], &prompt), Some(1));
        assert_eq!(cache.longest_held_prefix(&prompt), 90);
        // Slot 2 holds fewer than MIN_COPIED_TOKENS more than slot 0: not worth a copy.
        assert_eq!(cache.donor_for(0, [2], &prompt), None);
        assert_eq!(cache.donor_for(0, [1, 2], &prompt), Some(1));
        assert_eq!(cache.donor_for(1, [0, 1, 2, 3], &prompt), None);
        let mut cache = cache;
        cache.copy(1, 3);
        assert_eq!(cache.common_prefix(3, &prompt), 90);
    }

    #[test]
    fn a_prompt_waits_only_for_a_prefill_that_saves_a_copy_worth_of_tokens() {
        assert!(worth_waiting_for(MIN_COPIED_TOKENS + 5, 5));
        assert!(!worth_waiting_for(MIN_COPIED_TOKENS + 4, 5));
        assert!(!worth_waiting_for(0, 0));
    }

    #[test]
    fn truncate_and_clear_track_the_kv_cells() {
        let mut cache = cache_with(&[&[2, 3, 4, 5]]);
        cache.truncate(0, 2);
        assert_eq!(cache.tokens(0), tokens(&[2, 3]).as_slice());
        cache.extend(0, &tokens(&[9]));
        assert_eq!(cache.tokens(0), tokens(&[2, 3, 9]).as_slice());
        cache.clear(0);
        assert!(cache.tokens(0).is_empty());
    }

    #[test]
    fn the_prompts_last_token_is_always_decoded_again() {
        // The whole prompt is cached (a repeated request): all but its last token is reused.
        assert_eq!(reusable_prefix(10, 10, 12, 0, 0), 9);
        assert_eq!(reusable_prefix(1, 1, 5, 0, 0), 0);
        assert_eq!(reusable_prefix(0, 8, 5, 0, 0), 0);
    }

    #[test]
    fn a_sliding_window_cache_must_still_hold_the_window_before_the_cut() {
        // Window 4; the cache holds positions 10..=30 (31 tokens, older ones dropped).
        // Continuing at the end of the cache needs nothing dropped.
        assert_eq!(reusable_prefix(31, 40, 31, 10, 4), 31);
        // Cutting at 20 needs positions 16.. : present.
        assert_eq!(reusable_prefix(20, 40, 31, 10, 4), 20);
        // Cutting at 12 needs positions 8.. : dropped, so nothing is reused.
        assert_eq!(reusable_prefix(12, 40, 31, 10, 4), 0);
        // Without a known window any cut works while position 0 is still held...
        assert_eq!(reusable_prefix(12, 40, 31, 0, 0), 12);
        // ...and none once positions were dropped.
        assert_eq!(reusable_prefix(12, 40, 31, 10, 0), 0);
    }
}
