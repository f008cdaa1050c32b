//! Builds one llama.cpp sampler chain per sequence from the request's sampling settings, and
//! computes the log-probabilities a request asks for. The chain is built when the request
//! arrives (off the engine thread), so a logit bias on a token the model does not have or a
//! schema that yields no grammar is a 400 before any slot is taken.

use std::hash::{BuildHasher, RandomState};

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use llorch_api::tools::ToolUse;
use llorch_api::{OutputConstraint, TokenLogprob, ToolDefinition, ToolParams, TopLogprob};

use super::grammar::check_grammar_size;
use super::template::ToolSyntax;
use super::token_sampler::TokenSampler;
use crate::validation::{ValidSampling, ValidationError};

/// The grammar's start symbol, as llama.cpp's JSON-schema converter names it.
const GRAMMAR_ROOT: &str = "root";
/// The start symbol of a forced tool call: the call syntax around the converter's `root`.
const TOOL_GRAMMAR_ROOT: &str = "llorch-tool-calls";

/// A sampler for one sequence. Each sequence needs its own: `dist` carries the RNG state,
/// penalties the tokens generated so far, the grammar its parse state. The grammar is kept
/// apart from the chain ([`TokenSampler`]), so it is applied to the whole vocabulary only when
/// the chain's choice breaks it.
pub(super) fn build_sampler(
    model: &LlamaModel,
    sampling: &ValidSampling,
    max_tokens: u32,
    tool_grammar: Option<&str>,
) -> Result<TokenSampler, ValidationError> {
    let n_vocab = model.n_vocab();
    let mut chain = Vec::with_capacity(8);
    if !sampling.logit_bias.is_empty() {
        let mut biases = Vec::with_capacity(sampling.logit_bias.len());
        for bias in &sampling.logit_bias {
            let token = i32::try_from(bias.token)
                .ok()
                .filter(|&token| token < n_vocab)
                .ok_or(ValidationError::UnknownToken {
                    token: bias.token,
                    n_vocab: n_vocab.max(0) as u32,
                })?;
            // -100 bans a token outright, as OpenAI documents; a finite bias of -100 could
            // still lose against a logit more than 100 above the rest.
            let value = if bias.bias <= -100.0 {
                f32::NEG_INFINITY
            } else {
                bias.bias
            };
            biases.push(LlamaLogitBias::new(LlamaToken::new(token), value));
        }
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if sampling.presence_penalty != 0.0 || sampling.frequency_penalty != 0.0 {
        // The window covers everything this request can generate: OpenAI penalises every
        // token of the answer so far. Prompt tokens are never accepted into the sampler.
        let window = i32::try_from(max_tokens).unwrap_or(i32::MAX);
        chain.push(LlamaSampler::penalties(
            n_vocab,
            window,
            1.0,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        ));
    }
    let mut grammars = Vec::new();
    if let Some(constraint) = &sampling.constraint {
        let grammar = grammar_for(constraint)?;
        let sampler = LlamaSampler::grammar(model, &grammar, GRAMMAR_ROOT)
            .map_err(|error| ValidationError::Grammar(error.to_string()))?;
        grammars.push(sampler);
    }
    if let Some(grammar) = tool_grammar {
        let sampler = LlamaSampler::grammar(model, grammar, TOOL_GRAMMAR_ROOT)
            .map_err(|error| ValidationError::ToolGrammar(error.to_string()))?;
        grammars.push(sampler);
    }
    if sampling.temperature == 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        // llama.cpp's own order: truncate the distribution, then scale, then draw.
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
    }
    let grammar = match grammars.len() {
        0 => None,
        1 => grammars.pop(),
        _ => Some(LlamaSampler::chain_simple(grammars)),
    };
    Ok(TokenSampler::new(
        LlamaSampler::chain_simple(chain),
        grammar,
    ))
}

/// The GBNF grammar that only admits text satisfying `constraint`, from llama.cpp's own
/// JSON-schema converter (the one llama-server uses).
pub(super) fn grammar_for(constraint: &OutputConstraint) -> Result<String, ValidationError> {
    let schema = match constraint {
        OutputConstraint::JsonObject => serde_json::json!({"type": "object"}),
        OutputConstraint::JsonSchema { schema } => schema.clone(),
    };
    let grammar = llama_cpp_2::json_schema_to_grammar(&schema.to_string())
        .map_err(|error| ValidationError::Grammar(error.to_string()))?;
    check_grammar_size(&grammar)?;
    Ok(grammar)
}

/// The GBNF grammar a `tool_choice` of `required` or a named function decodes under: the
/// model's own call syntax around JSON whose `name` is an offered tool (the named one) and whose
/// arguments follow that tool's `parameters` schema, so the answer always parses as a call.
/// `None` when the model chooses freely.
pub(super) fn tool_grammar(
    syntax: ToolSyntax,
    tools: &ToolParams,
) -> Result<Option<String>, ValidationError> {
    let chosen: Vec<&ToolDefinition> = match tools.tool_use() {
        ToolUse::Off | ToolUse::Auto => return Ok(None),
        ToolUse::Required => tools.tools.iter().collect(),
        ToolUse::Function(name) => (tools.tools.iter())
            .filter(|tool| tool.function.name == name)
            .collect(),
    };
    let arguments_key = match syntax {
        ToolSyntax::Llama3 => "parameters",
        ToolSyntax::Hermes | ToolSyntax::Mistral => "arguments",
    };
    let calls: Vec<String> = chosen
        .iter()
        .map(|tool| {
            let parameters = (tool.function.parameters.clone())
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            // Written by hand so that `name` comes first, as the template shows calls.
            format!(
                r#"{{"type": "object", "properties": {{"name": {{"const": {name}}}, "{arguments_key}": {parameters}}}, "required": ["name", "{arguments_key}"], "additionalProperties": false}}"#,
                name = serde_json::Value::from(tool.function.name.as_str()),
            )
        })
        .collect();
    let schema = match calls.as_slice() {
        [one] => one.clone(),
        many => format!(r#"{{"anyOf": [{}]}}"#, many.join(", ")),
    };
    let json = llama_cpp_2::json_schema_to_grammar(&schema)
        .map_err(|error| ValidationError::ToolGrammar(error.to_string()))?;
    check_grammar_size(&json)?;
    let more = if tools.parallel() { "*" } else { "" };
    let calls = match syntax {
        ToolSyntax::Hermes => {
            format!(
                r#""<tool_call>\n" root "\n</tool_call>" ("\n<tool_call>\n" root "\n</tool_call>"){more}"#
            )
        }
        ToolSyntax::Mistral => format!(r#""[TOOL_CALLS][" root (", " root){more} "]""#),
        // Llama 3 writes one call per answer.
        ToolSyntax::Llama3 => "root".to_owned(),
    };
    Ok(Some(format!("{json}\n{TOOL_GRAMMAR_ROOT} ::= {calls}\n")))
}

/// A seed for requests that did not ask for one. Drawn here rather than by passing llama.cpp's
/// "random" sentinel, which is also a valid seed a client could send on purpose.
fn random_seed() -> u32 {
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// The model's log-probability of `chosen` and of the `top` most likely tokens, from the raw
/// logits of one position (before penalties, bias, grammar and temperature, as OpenAI reports
/// them), most likely first.
pub(super) fn logprobs_of(
    model: &LlamaModel,
    logits: &[f32],
    chosen: LlamaToken,
    top: u32,
) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_sum = max + sum.ln() as f32;
    let logprob = |id: usize| logits[id] - log_sum;
    let mut ranked: Vec<usize> = Vec::new();
    let top = (top as usize).min(logits.len());
    if top > 0 {
        let mut ids: Vec<usize> = (0..logits.len()).collect();
        // Partition around the top-k, then sort just those.
        ids.select_nth_unstable_by(top - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        ids.truncate(top);
        ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        ranked = ids;
    }
    let describe = |id: usize| {
        let bytes = model
            .vocab()
            .token_to_piece(LlamaToken::new(id as i32), false, None);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let chosen_id = chosen.0 as usize;
    let (token, bytes) = describe(chosen_id);
    TokenLogprob {
        id: chosen_id as u32,
        token,
        bytes,
        logprob: logprob(chosen_id),
        top: ranked
            .into_iter()
            .map(|id| {
                let (token, bytes) = describe(id);
                TopLogprob {
                    id: id as u32,
                    token,
                    bytes,
                    logprob: logprob(id),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tools(choice: serde_json::Value, parallel: bool) -> ToolParams {
        serde_json::from_value(json!({
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": {
                    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time"}},
            ],
            "tool_choice": choice,
            "parallel_tool_calls": parallel,
        }))
        .unwrap()
    }

    #[test]
    fn free_choices_decode_without_a_grammar() {
        for choice in [json!("auto"), json!("none")] {
            assert_eq!(
                tool_grammar(ToolSyntax::Hermes, &tools(choice, true)),
                Ok(None)
            );
        }
    }

    #[test]
    fn a_forced_call_is_the_models_syntax_around_the_tools_schema() {
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let grammar = tool_grammar(ToolSyntax::Hermes, &tools(named, false))
            .unwrap()
            .unwrap();
        assert!(
            grammar.contains(r#"llorch-tool-calls ::= "<tool_call>\n" root "\n</tool_call>" ("\n<tool_call>\n" root "\n</tool_call>")"#),
            "{grammar}"
        );
        assert!(
            !grammar.contains("</tool_call>\")*"),
            "one call only: {grammar}"
        );
        assert!(grammar.contains("get_weather"), "{grammar}");
        assert!(!grammar.contains("get_time"), "{grammar}");
        let required = tool_grammar(ToolSyntax::Hermes, &tools(json!("required"), true))
            .unwrap()
            .unwrap();
        assert!(required.contains("get_weather") && required.contains("get_time"));
        assert!(required.contains("</tool_call>\")*"), "{required}");
        let llama = tool_grammar(ToolSyntax::Llama3, &tools(json!("required"), true))
            .unwrap()
            .unwrap();
        assert!(llama.contains("parameters") && llama.contains("llorch-tool-calls ::= root"));
    }
}
