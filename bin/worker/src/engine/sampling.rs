//! Builds one llama.cpp sampler chain per sequence from the request's sampling settings.

use std::hash::{BuildHasher, RandomState};

use llama_cpp_2::sampling::LlamaSampler;

use crate::validation::ValidSampling;

/// A sampler for one sequence. Each sequence needs its own: `dist` carries the RNG state.
pub(super) fn build_sampler(sampling: &ValidSampling) -> LlamaSampler {
    if sampling.temperature == 0.0 {
        return LlamaSampler::greedy();
    }
    // llama.cpp's own order: truncate the distribution, then scale, then draw.
    let mut chain = Vec::with_capacity(4);
    if sampling.top_k > 0 {
        chain.push(LlamaSampler::top_k(
            i32::try_from(sampling.top_k).unwrap_or(i32::MAX),
        ));
    }
    if sampling.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(sampling.top_p, 1));
    }
    chain.push(LlamaSampler::temp(sampling.temperature));
    chain.push(LlamaSampler::dist(
        sampling.seed.unwrap_or_else(random_seed),
    ));
    LlamaSampler::chain_simple(chain)
}

/// A seed for requests that did not ask for one. Drawn here rather than by passing llama.cpp's
/// "random" sentinel, which is also a valid seed a client could send on purpose.
fn random_seed() -> u32 {
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}
