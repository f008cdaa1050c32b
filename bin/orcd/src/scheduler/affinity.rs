//! Cache-aware routing: which worker most likely still holds a request's prompt prefix in its
//! KV cache. orcd does not tokenize, so a prompt is summarised as hashes of its growing
//! prefixes (chat: one per message; raw text: one per block of bytes), and orcd remembers the
//! hashes of what it sent to each worker. The next turn of a conversation resends the same
//! history, so its prefixes match the worker that ran the turn before.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use llorch_api::ChatMessage;

use crate::validation::PromptInput;

/// Raw prompts are hashed in blocks of this many bytes: a conversation that grows by one turn
/// shares every complete block of the previous turn's prompt.
const TEXT_BLOCK_BYTES: usize = 64;

/// Prefix hashes remembered per worker; a worker holds a few slots of a few thousand tokens,
/// so older prefixes are long evicted there anyway.
const REMEMBERED_PER_WORKER: usize = 4096;

/// Hashes of a task's growing prompt prefixes, shortest first.
pub fn task_prefixes(input: &PromptInput) -> Vec<u64> {
    match input {
        PromptInput::Text(prompt) => text_prefixes(prompt),
        PromptInput::Chat(messages) => chat_prefixes(messages),
    }
}

/// Hashes of a raw prompt's growing prefixes: one per complete block, then the whole prompt.
pub fn text_prefixes(prompt: &str) -> Vec<u64> {
    let bytes = prompt.as_bytes();
    let mut hasher = DefaultHasher::new();
    let mut hashes = Vec::with_capacity(bytes.len() / TEXT_BLOCK_BYTES + 1);
    for block in bytes.chunks(TEXT_BLOCK_BYTES) {
        hasher.write(block);
        if block.len() == TEXT_BLOCK_BYTES {
            hashes.push(hasher.finish());
        }
    }
    if bytes.len() % TEXT_BLOCK_BYTES != 0 {
        hashes.push(hasher.finish());
    }
    hashes
}

/// Hashes of a chat's growing prefixes: one per message (role and content).
pub fn chat_prefixes(messages: &[ChatMessage]) -> Vec<u64> {
    let mut hasher = DefaultHasher::new();
    messages
        .iter()
        .map(|message| {
            message.role.hash(&mut hasher);
            message.content.hash(&mut hasher);
            hasher.finish()
        })
        .collect()
}

/// The prefix hashes one worker was sent, least recently used evicted first.
#[derive(Debug, Default)]
pub struct PrefixMemory {
    /// Hash -> tick of its last use.
    seen: HashMap<u64, u64>,
    clock: u64,
}

impl PrefixMemory {
    /// How many of `prefixes` (a chain, shortest first) lead up to the longest one this worker
    /// was sent: 0 when it has none.
    pub fn matched(&self, prefixes: &[u64]) -> usize {
        prefixes
            .iter()
            .rposition(|hash| self.seen.contains_key(hash))
            .map_or(0, |index| index + 1)
    }

    /// Remembers that a job with these prefixes went to this worker.
    pub fn record(&mut self, prefixes: &[u64]) {
        if prefixes.is_empty() {
            return;
        }
        self.clock += 1;
        for hash in prefixes {
            self.seen.insert(*hash, self.clock);
        }
        if self.seen.len() > REMEMBERED_PER_WORKER + REMEMBERED_PER_WORKER / 4 {
            // Evict in bulk so that each insert stays O(1) on average.
            let mut ticks: Vec<u64> = self.seen.values().copied().collect();
            ticks.sort_unstable();
            let cutoff = ticks[ticks.len() - REMEMBERED_PER_WORKER];
            self.seen.retain(|_, tick| *tick >= cutoff);
        }
    }

    /// Forgets everything (the worker restarted with empty caches).
    pub fn clear(&mut self) {
        self.seen.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, content: &str) -> ChatMessage {
        serde_json::from_value(serde_json::json!({"role": role, "content": content}))
            .expect("a chat message")
    }

    #[test]
    fn a_grown_prompt_shares_the_prefixes_of_the_earlier_one() {
        let turn1 = "x".repeat(150);
        let turn2 = format!("{turn1} and then some more text of the next turn");
        let (first, second) = (text_prefixes(&turn1), text_prefixes(&turn2));
        // 2 complete blocks and the tail; the tail differs once the prompt grows.
        assert_eq!(first.len(), 3);
        assert_eq!(first[..2], second[..2]);
        assert_ne!(first[2], second[2]);
        assert_ne!(text_prefixes("y")[0], text_prefixes("z")[0]);
        assert!(text_prefixes("").is_empty());
    }

    #[test]
    fn chat_prefixes_follow_the_messages() {
        let turn1 = [message("user", "hi")];
        let turn2 = [
            message("user", "hi"),
            message("assistant", "hello"),
            message("user", "how are you"),
        ];
        assert_eq!(chat_prefixes(&turn1)[0], chat_prefixes(&turn2)[0]);
        assert_ne!(
            chat_prefixes(&[message("system", "hi")])[0],
            chat_prefixes(&turn1)[0]
        );
    }

    #[test]
    fn the_longest_remembered_prefix_counts() {
        let mut memory = PrefixMemory::default();
        memory.record(&[1, 2]);
        assert_eq!(memory.matched(&[1, 2, 3, 4]), 2);
        assert_eq!(memory.matched(&[9]), 0);
        memory.record(&[1, 2, 3]);
        assert_eq!(memory.matched(&[1, 2, 3, 4]), 3);
        memory.clear();
        assert_eq!(memory.matched(&[1, 2, 3, 4]), 0);
    }

    #[test]
    fn the_least_recently_used_prefixes_are_evicted_first() {
        let mut memory = PrefixMemory::default();
        memory.record(&[u64::MAX]);
        // Enough chains of 100 to pass the bound once.
        let chains = (REMEMBERED_PER_WORKER * 5 / 4 / 100 + 2) as u64;
        for start in 0..chains {
            let chain: Vec<u64> = (start * 100..start * 100 + 100).collect();
            memory.record(&chain);
        }
        assert!(memory.len() <= REMEMBERED_PER_WORKER + REMEMBERED_PER_WORKER / 4);
        assert_eq!(memory.matched(&[u64::MAX]), 0, "the oldest prefix is gone");
        assert_eq!(memory.matched(&[(chains - 1) * 100]), 1);
    }
}
