//! Picks a sequence's next token, with a grammar checked the way llama.cpp's own server does it
//! (`common_sampler_sample`): the rest of the chain picks a token first, and only when the
//! grammar rejects that token is the grammar applied to the whole vocabulary and the token
//! picked again. A grammar check costs one pass over the vocabulary per open parse stack, and a
//! schema's optional properties, `anyOf` branches and `enum` values each keep a stack open, so
//! checking only the chosen token makes the common case, where the model already writes what
//! the schema allows, cost one check instead of a vocabulary's worth. Greedy decoding picks the
//! same token either way.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

/// One sequence's sampler: the chain (bias, penalties, truncation, the draw) and the grammars
/// its output must follow.
pub struct TokenSampler {
    chain: LlamaSampler,
    grammar: Option<LlamaSampler>,
}

impl TokenSampler {
    pub fn new(chain: LlamaSampler, grammar: Option<LlamaSampler>) -> TokenSampler {
        TokenSampler { chain, grammar }
    }

    /// Picks the token of logits row `row` and accepts it into every sampler.
    pub fn sample(&mut self, context: &LlamaContext<'_>, row: i32) -> LlamaToken {
        let Some(grammar) = self.grammar.as_mut() else {
            // `sample` accepts the token into the chain as well.
            return self.chain.sample(context, row);
        };
        let logits = context.get_logits_ith(row);
        let mut free = LlamaTokenDataArray::from_iter(context.candidates_ith(row), false);
        self.chain.apply(&mut free);
        let (token, allowed) = match free.selected_token() {
            Some(token) if allows(grammar, token, logits) => (token, true),
            _ => {
                let mut constrained =
                    LlamaTokenDataArray::from_iter(context.candidates_ith(row), false);
                grammar.apply(&mut constrained);
                self.chain.apply(&mut constrained);
                let selected = constrained.selected.and_then(|at| constrained.data.get(at));
                match selected {
                    Some(candidate) => (candidate.id(), candidate.logit().is_finite()),
                    // Nothing to select: the chain's own choice stands.
                    None => (free.selected_token().unwrap_or(LlamaToken::new(0)), false),
                }
            }
        };
        // Only a token the grammar allows is accepted into it: llama.cpp aborts the process
        // when a grammar accepts an end-of-generation token it does not allow.
        if allowed {
            grammar.accept(token);
        }
        self.chain.accept(token);
        token
    }
}

/// Whether `grammar` lets `token` come next: applied to that one candidate, it leaves its logit
/// finite.
fn allows(grammar: &mut LlamaSampler, token: LlamaToken, logits: &[f32]) -> bool {
    let logit = usize::try_from(token.0)
        .ok()
        .and_then(|index| logits.get(index))
        .copied()
        .unwrap_or(0.0);
    let mut single = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, logit, 0.0)], false);
    grammar.apply(&mut single);
    single
        .data
        .first()
        .is_some_and(|candidate| candidate.logit().is_finite())
}
