//! What each slot's KV cache holds after its sequence ends, so that the next request that
//! starts the same way (the next turn of a conversation resends the whole history) skips the
//! tokens already there. The engine picks the free slot whose cache shares the longest prefix
//! with a new prompt; without a good match it overwrites an empty slot, else the least
//! recently used one. Plain bookkeeping: the batching loop applies its decisions to llama.cpp.

use llama_cpp_2::token::LlamaToken;

/// A slot's cache is chosen for a prompt only when the shared prefix is at least this share
/// of what the slot holds (llama.cpp's server uses the same 10 %): a short common system
/// prompt must not evict a long conversation that is likely to come back.
const MIN_SHARED_FRACTION: f64 = 0.1;

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

fn common_prefix(held: &[LlamaToken], prompt: &[LlamaToken]) -> usize {
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
