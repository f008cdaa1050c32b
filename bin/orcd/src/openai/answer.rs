//! The OpenAI objects one request's jobs become: a whole `chat.completion` /
//! `text_completion`, or the chunks of a stream, with one choice per job, log-probabilities in
//! the shape each endpoint uses, `usage` and `system_fingerprint`. When tools were offered, the
//! calls in a chat answer become `tool_calls` (`tool_calls.rs` finds them).

use llorch_api::{FinishReason, GenerationStats, TokenLogprob};
use serde_json::{json, Value};

use super::request::Shape;
use super::tool_calls::parse_answer;

/// Which OpenAI object a job's answer becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// Everything one choice's job produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceResult {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub stats: GenerationStats,
}

/// Identifies the build and the model that answered: OpenAI's `system_fingerprint` changes when
/// the backend does, and so does this one (orcd's version, the model id).
pub fn system_fingerprint(model: &str) -> String {
    format!("fp_llorch-{}_{model}", env!("CARGO_PKG_VERSION"))
}

/// OpenAI's `finish_reason`. A job cancelled through `DELETE /v2/tasks/{id}` reports `"stop"`:
/// OpenAI has no value for it, strict clients reject unknown ones, and the text so far is a
/// valid (if short) answer; whoever cancelled knows why it stopped.
pub fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "stop",
    }
}

/// The finish reason of a chat choice: `tool_calls` when the model ended its turn with calls.
pub fn chat_finish_reason(reason: FinishReason, called_tools: bool) -> &'static str {
    match reason {
        FinishReason::Stop if called_tools => "tool_calls",
        reason => finish_reason(reason),
    }
}

/// A new tool call id, in OpenAI's `call_...` form.
fn tool_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// `usage` over every choice: the prompt once, the completions summed. `cached_tokens` counts
/// the prompt tokens that no choice had to process (OpenAI's
/// `prompt_tokens_details.cached_tokens`): the fewest any choice found cached. The worker
/// decodes a shared prompt for one choice and copies it for the others; the prompt was still
/// processed once.
pub fn usage<'a>(stats: impl IntoIterator<Item = &'a GenerationStats>) -> Value {
    let mut prompt_tokens = 0;
    let mut cached_tokens = None::<u32>;
    let mut completion_tokens = 0;
    for stats in stats {
        prompt_tokens = stats.prompt_tokens;
        cached_tokens = Some(cached_tokens.map_or(stats.cached_prompt_tokens, |fewest| {
            fewest.min(stats.cached_prompt_tokens)
        }));
        completion_tokens += stats.generated_tokens;
    }
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens.unwrap_or(0)},
    })
}

/// The fixed parts of one request's OpenAI answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub endpoint: Endpoint,
    pub id: String,
    pub model: String,
    pub created: u64,
    pub shape: Shape,
}

impl Answer {
    fn object(&self, streamed: bool) -> &'static str {
        match (self.endpoint, streamed) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    fn envelope(&self, streamed: bool, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": self.object(streamed),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": system_fingerprint(&self.model),
            "choices": choices,
        })
    }

    /// `logprobs` of one choice (or one chunk of it): `null` unless the request asked.
    /// `text_offset` is where the first of `logprobs` starts in the choice's text.
    fn logprobs(&self, logprobs: &[TokenLogprob], text_offset: usize) -> Value {
        if !self.shape.logprobs {
            return Value::Null;
        }
        match self.endpoint {
            // `id` is beyond OpenAI's fields (llama.cpp's server sends it too): the token id
            // that `logit_bias` takes.
            Endpoint::Chat => json!({
                "content": logprobs.iter().map(|entry| json!({
                    "id": entry.id,
                    "token": entry.token,
                    "logprob": entry.logprob,
                    "bytes": entry.bytes,
                    "top_logprobs": entry.top.iter().map(|top| json!({
                        "id": top.id,
                        "token": top.token,
                        "logprob": top.logprob,
                        "bytes": top.bytes,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "refusal": null,
            }),
            // The legacy shape: parallel lists, alternatives as `{token: logprob}` maps.
            Endpoint::Completions => {
                let mut offsets = Vec::with_capacity(logprobs.len());
                let mut offset = text_offset;
                for entry in logprobs {
                    offsets.push(offset);
                    offset += entry.token.chars().count();
                }
                json!({
                    "tokens": logprobs.iter().map(|e| &e.token).collect::<Vec<_>>(),
                    "token_logprobs": logprobs.iter().map(|e| e.logprob).collect::<Vec<_>>(),
                    "top_logprobs": logprobs.iter().map(|entry| {
                        entry.top.iter().map(|top| (top.token.clone(), json!(top.logprob)))
                            .collect::<serde_json::Map<_, _>>()
                    }).collect::<Vec<_>>(),
                    "text_offset": offsets,
                })
            }
        }
    }

    /// A non-streaming answer with every choice.
    pub fn whole(&self, choices: &[ChoiceResult]) -> Value {
        let rendered = choices
            .iter()
            .enumerate()
            .map(|(index, choice)| {
                let logprobs = self.logprobs(&choice.logprobs, 0);
                match self.endpoint {
                    Endpoint::Chat => self.whole_chat_choice(index, choice, logprobs),
                    Endpoint::Completions => json!({
                        "index": index, "text": choice.text, "logprobs": logprobs,
                        "finish_reason": finish_reason(choice.stats.finish_reason),
                    }),
                }
            })
            .collect();
        let mut answer = self.envelope(false, rendered);
        answer["usage"] = usage(choices.iter().map(|choice| &choice.stats));
        answer
    }

    fn whole_chat_choice(&self, index: usize, choice: &ChoiceResult, logprobs: Value) -> Value {
        let (content, calls) = match &self.shape.tools {
            Some(tools) => {
                let parsed = parse_answer(&choice.text, tools);
                (json!(parsed.content), parsed.calls)
            }
            None => (json!(choice.text), Vec::new()),
        };
        let mut message = json!({"role": "assistant", "content": content, "refusal": null});
        if !calls.is_empty() {
            message["tool_calls"] = calls
                .iter()
                .map(|call| {
                    json!({
                        "id": tool_call_id(),
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    })
                })
                .collect();
        }
        json!({
            "index": index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": chat_finish_reason(choice.stats.finish_reason, !calls.is_empty()),
        })
    }

    /// The chunk that opens a tool call in a chat stream, as OpenAI streams one: `index` among
    /// the choice's calls, `id`, `type`, the function's name and empty arguments.
    pub fn tool_call_opening_chunk(
        &self,
        index: u32,
        call_index: usize,
        name: &str,
        logprobs: &[TokenLogprob],
    ) -> Value {
        let delta = json!({"tool_calls": [{
            "index": call_index,
            "id": tool_call_id(),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }]});
        self.chunk(json!({
            "index": index, "delta": delta, "logprobs": self.logprobs(logprobs, 0),
            "finish_reason": null,
        }))
    }

    /// A fragment of the arguments of the tool call `call_index`.
    pub fn tool_call_arguments_chunk(
        &self,
        index: u32,
        call_index: usize,
        fragment: &str,
        logprobs: &[TokenLogprob],
    ) -> Value {
        let delta = json!({"tool_calls": [{
            "index": call_index,
            "function": {"arguments": fragment},
        }]});
        self.chunk(json!({
            "index": index, "delta": delta, "logprobs": self.logprobs(logprobs, 0),
            "finish_reason": null,
        }))
    }

    fn chunk(&self, choice: Value) -> Value {
        let mut chunk = self.envelope(true, vec![choice]);
        if self.shape.include_usage {
            // OpenAI sends `"usage": null` on every chunk but the extra last one.
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    /// The first chunk of each choice of a chat stream announces the role.
    pub fn opening(&self) -> Vec<Value> {
        match self.endpoint {
            Endpoint::Chat => (0..self.shape.choices)
                .map(|index| {
                    self.chunk(json!({
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": null,
                        "finish_reason": null,
                    }))
                })
                .collect(),
            Endpoint::Completions => Vec::new(),
        }
    }

    /// A piece of one choice's text; `text_offset` is where it starts in that choice's text.
    pub fn text_chunk(
        &self,
        index: u32,
        text: &str,
        logprobs: &[TokenLogprob],
        text_offset: usize,
    ) -> Value {
        let logprobs = self.logprobs(logprobs, text_offset);
        self.chunk(match self.endpoint {
            Endpoint::Chat => json!({
                "index": index, "delta": {"content": text}, "logprobs": logprobs,
                "finish_reason": null,
            }),
            Endpoint::Completions => json!({
                "index": index, "text": text, "logprobs": logprobs, "finish_reason": null,
            }),
        })
    }

    /// The end of one choice; `called_tools` when a chat choice's stream held tool calls.
    pub fn finish_chunk(&self, index: u32, reason: FinishReason, called_tools: bool) -> Value {
        self.chunk(match self.endpoint {
            Endpoint::Chat => json!({
                "index": index, "delta": {}, "logprobs": null,
                "finish_reason": chat_finish_reason(reason, called_tools),
            }),
            Endpoint::Completions => json!({
                "index": index, "text": "", "logprobs": null,
                "finish_reason": finish_reason(reason),
            }),
        })
    }

    /// The extra last chunk of `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, stats: &[GenerationStats]) -> Value {
        let mut chunk = self.envelope(true, Vec::new());
        chunk["usage"] = usage(stats);
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::TopLogprob;

    fn stats(reason: FinishReason, generated_tokens: u32) -> GenerationStats {
        GenerationStats {
            finish_reason: reason,
            prompt_tokens: 5,
            cached_prompt_tokens: 2,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
            generated_tokens,
            time_to_first_token_ms: 1.0,
            tokens_per_second: 1.0,
            prompt_tokens_per_second: 1.0,
        }
    }

    fn answer(endpoint: Endpoint, logprobs: bool) -> Answer {
        Answer {
            endpoint,
            id: "chatcmpl-j".into(),
            model: "m".into(),
            created: 1,
            shape: Shape {
                include_usage: true,
                choices: 2,
                logprobs,
                tools: None,
            },
        }
    }

    fn entry(token: &str, logprob: f32) -> TokenLogprob {
        TokenLogprob {
            id: 1,
            token: token.into(),
            bytes: token.as_bytes().to_vec(),
            logprob,
            top: vec![
                TopLogprob {
                    id: 1,
                    token: token.into(),
                    bytes: token.as_bytes().to_vec(),
                    logprob,
                },
                TopLogprob {
                    id: 2,
                    token: "z".into(),
                    bytes: vec![b'z'],
                    logprob: -3.0,
                },
            ],
        }
    }

    #[test]
    fn whole_answers_carry_every_choice_usage_details_and_the_fingerprint() {
        let choices = [
            ChoiceResult {
                text: "hi".into(),
                logprobs: Vec::new(),
                stats: stats(FinishReason::Length, 3),
            },
            ChoiceResult {
                text: "yo".into(),
                logprobs: Vec::new(),
                stats: stats(FinishReason::Cancelled, 2),
            },
        ];
        let chat = answer(Endpoint::Chat, false).whole(&choices);
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["system_fingerprint"], system_fingerprint("m"));
        assert_eq!(chat["choices"][1]["index"], 1);
        assert_eq!(chat["choices"][1]["message"]["content"], "yo");
        assert_eq!(chat["choices"][0]["finish_reason"], "length");
        assert_eq!(chat["choices"][1]["finish_reason"], "stop");
        assert_eq!(chat["choices"][0]["logprobs"], Value::Null);
        assert_eq!(
            chat["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10,
                   "prompt_tokens_details": {"cached_tokens": 2}})
        );
    }

    #[test]
    fn usage_counts_the_prompt_once_and_cached_only_what_no_choice_processed() {
        let with_cached = |cached_prompt_tokens| GenerationStats {
            cached_prompt_tokens,
            ..stats(FinishReason::Stop, 2)
        };
        // One choice decoded the prompt, the other two started from a copy of its cells.
        let shared = [with_cached(4), with_cached(0), with_cached(4)];
        assert_eq!(
            usage(&shared),
            json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11,
                   "prompt_tokens_details": {"cached_tokens": 0}})
        );
        let all_cached = [with_cached(4), with_cached(4)];
        assert_eq!(
            usage(&all_cached)["prompt_tokens_details"]["cached_tokens"],
            4
        );
    }

    #[test]
    fn logprobs_take_each_endpoints_shape() {
        let choices = [ChoiceResult {
            text: "ab".into(),
            logprobs: vec![entry("a", -0.1), entry("b", -0.2)],
            stats: stats(FinishReason::Stop, 2),
        }];
        let chat = answer(Endpoint::Chat, true).whole(&choices);
        let content = &chat["choices"][0]["logprobs"]["content"];
        assert_eq!(content[1]["token"], "b");
        assert_eq!(content[1]["bytes"], json!([98]));
        assert_eq!(content[0]["top_logprobs"][1]["token"], "z");
        let text = answer(Endpoint::Completions, true).whole(&choices);
        let logprobs = &text["choices"][0]["logprobs"];
        assert_eq!(logprobs["tokens"], json!(["a", "b"]));
        assert_eq!(logprobs["text_offset"], json!([0, 1]));
        assert_eq!(logprobs["top_logprobs"][0]["z"], json!(-3.0));
        let chunk =
            answer(Endpoint::Completions, true).text_chunk(0, "b", &choices[0].logprobs[1..], 1);
        assert_eq!(chunk["choices"][0]["logprobs"]["text_offset"], json!([1]));
    }

    #[test]
    fn a_stream_opens_each_choice_and_ends_with_the_usage_chunk() {
        let chat = answer(Endpoint::Chat, false);
        let opening = chat.opening();
        assert_eq!(opening.len(), 2);
        assert_eq!(opening[1]["choices"][0]["index"], 1);
        assert_eq!(opening[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(opening[0]["usage"], Value::Null);
        let end = chat.finish_chunk(1, FinishReason::Stop, false);
        assert_eq!(end["choices"][0]["finish_reason"], "stop");
        let usage = chat.usage_chunk(&[stats(FinishReason::Stop, 1), stats(FinishReason::Stop, 2)]);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    }
}
