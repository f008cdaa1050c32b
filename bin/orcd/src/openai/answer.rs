//! The OpenAI objects one request's jobs become: a whole `chat.completion` /
//! `text_completion`, or the chunks of a stream, with one choice per job, log-probabilities in
//! the shape each endpoint uses, `usage` and `system_fingerprint`. When tools were offered, the
//! calls in a chat answer become `tool_calls` (`tool_calls.rs` finds them). The objects are the
//! serde structs of `wire.rs`.

use llorch_api::{FinishReason, GenerationStats, TokenLogprob};

use super::request::Shape;
use super::tool_calls::parse_answer;
use super::wire::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatLogprobs, ChatTokenLogprob, ChatTopLogprob,
    Choice, Completion, CompletionLogprobs, Delta, FunctionDelta, Logprobs, Null,
    PromptTokensDetails, TextChoice, ToolCallDelta, ToolCallObject, ToolFunction, Usage,
};

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
pub fn tool_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// `usage` over every choice: the prompt once, the completions summed. `cached_tokens` counts
/// the prompt tokens that no choice had to process (OpenAI's
/// `prompt_tokens_details.cached_tokens`): the fewest any choice found cached. The worker
/// decodes a shared prompt for one choice and copies it for the others; the prompt was still
/// processed once.
pub fn usage<'a>(stats: impl IntoIterator<Item = &'a GenerationStats>) -> Usage {
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
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: cached_tokens.unwrap_or(0),
        },
    }
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

    fn envelope(&self, streamed: bool, choices: Vec<Choice>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: self.object(streamed),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: system_fingerprint(&self.model),
            choices,
            usage: None,
        }
    }

    /// `logprobs` of one choice (or one chunk of it): `None` (`null`) unless the request
    /// asked. `text_offset` is where the first of `logprobs` starts in the choice's text.
    fn logprobs(&self, logprobs: &[TokenLogprob], text_offset: usize) -> Option<Logprobs> {
        if !self.shape.logprobs {
            return None;
        }
        Some(match self.endpoint {
            Endpoint::Chat => Logprobs::Chat(ChatLogprobs {
                content: logprobs
                    .iter()
                    .map(|entry| ChatTokenLogprob {
                        id: entry.id,
                        token: entry.token.clone(),
                        logprob: f64::from(entry.logprob),
                        bytes: entry.bytes.clone(),
                        top_logprobs: (entry.top.iter())
                            .map(|top| ChatTopLogprob {
                                id: top.id,
                                token: top.token.clone(),
                                logprob: f64::from(top.logprob),
                                bytes: top.bytes.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
                refusal: Null,
            }),
            Endpoint::Completions => {
                let mut offsets = Vec::with_capacity(logprobs.len());
                let mut offset = text_offset;
                for entry in logprobs {
                    offsets.push(offset);
                    offset += entry.token.chars().count();
                }
                Logprobs::Completions(CompletionLogprobs {
                    tokens: logprobs.iter().map(|e| e.token.clone()).collect(),
                    token_logprobs: logprobs.iter().map(|e| f64::from(e.logprob)).collect(),
                    top_logprobs: (logprobs.iter())
                        .map(|entry| {
                            (entry.top.iter())
                                .map(|top| (top.token.clone(), f64::from(top.logprob)))
                                .collect()
                        })
                        .collect(),
                    text_offset: offsets,
                })
            }
        })
    }

    /// A non-streaming answer with every choice.
    pub fn whole(&self, choices: &[ChoiceResult]) -> Completion {
        let rendered = (0..)
            .zip(choices)
            .map(|(index, choice)| {
                let logprobs = self.logprobs(&choice.logprobs, 0);
                match self.endpoint {
                    Endpoint::Chat => self.whole_chat_choice(index, choice, logprobs),
                    Endpoint::Completions => Choice::Text(TextChoice {
                        index,
                        text: choice.text.clone(),
                        logprobs,
                        finish_reason: Some(finish_reason(choice.stats.finish_reason)),
                    }),
                }
            })
            .collect();
        let mut answer = self.envelope(false, rendered);
        answer.usage = Some(Some(usage(choices.iter().map(|choice| &choice.stats))));
        answer
    }

    fn whole_chat_choice(
        &self,
        index: u32,
        choice: &ChoiceResult,
        logprobs: Option<Logprobs>,
    ) -> Choice {
        let (content, calls) = match &self.shape.tools {
            Some(tools) => {
                let parsed = parse_answer(&choice.text, tools);
                (parsed.content, parsed.calls)
            }
            None => (Some(choice.text.clone()), Vec::new()),
        };
        let finish_reason = chat_finish_reason(choice.stats.finish_reason, !calls.is_empty());
        let tool_calls = calls
            .into_iter()
            .map(|call| ToolCallObject {
                id: tool_call_id(),
                kind: "function",
                function: ToolFunction {
                    name: call.name,
                    arguments: call.arguments,
                },
            })
            .collect();
        Choice::Chat(ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant",
                content,
                refusal: Null,
                tool_calls,
            },
            logprobs,
            finish_reason,
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
    ) -> Completion {
        let call = ToolCallDelta {
            index: call_index,
            id: Some(tool_call_id()),
            kind: Some("function"),
            function: FunctionDelta {
                name: Some(name.to_owned()),
                arguments: String::new(),
            },
        };
        self.tool_call_chunk(index, call, logprobs)
    }

    /// A fragment of the arguments of the tool call `call_index`.
    pub fn tool_call_arguments_chunk(
        &self,
        index: u32,
        call_index: usize,
        fragment: &str,
        logprobs: &[TokenLogprob],
    ) -> Completion {
        let call = ToolCallDelta {
            index: call_index,
            id: None,
            kind: None,
            function: FunctionDelta {
                name: None,
                arguments: fragment.to_owned(),
            },
        };
        self.tool_call_chunk(index, call, logprobs)
    }

    fn tool_call_chunk(
        &self,
        index: u32,
        call: ToolCallDelta,
        logprobs: &[TokenLogprob],
    ) -> Completion {
        self.chunk(Choice::ChatChunk(ChatChunkChoice {
            index,
            delta: Delta {
                tool_calls: Some(vec![call]),
                ..Delta::default()
            },
            logprobs: self.logprobs(logprobs, 0),
            finish_reason: None,
        }))
    }

    fn chunk(&self, choice: Choice) -> Completion {
        let mut chunk = self.envelope(true, vec![choice]);
        if self.shape.include_usage {
            // OpenAI sends `"usage": null` on every chunk but the extra last one.
            chunk.usage = Some(None);
        }
        chunk
    }

    /// The first chunk of each choice of a chat stream announces the role.
    pub fn opening(&self) -> Vec<Completion> {
        match self.endpoint {
            Endpoint::Chat => (0..self.shape.choices)
                .map(|index| {
                    self.chunk(Choice::ChatChunk(ChatChunkChoice {
                        index,
                        delta: Delta {
                            role: Some("assistant"),
                            content: Some(String::new()),
                            tool_calls: None,
                        },
                        logprobs: None,
                        finish_reason: None,
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
    ) -> Completion {
        let logprobs = self.logprobs(logprobs, text_offset);
        self.chunk(match self.endpoint {
            Endpoint::Chat => Choice::ChatChunk(ChatChunkChoice {
                index,
                delta: Delta {
                    content: Some(text.to_owned()),
                    ..Delta::default()
                },
                logprobs,
                finish_reason: None,
            }),
            Endpoint::Completions => Choice::Text(TextChoice {
                index,
                text: text.to_owned(),
                logprobs,
                finish_reason: None,
            }),
        })
    }

    /// The end of one choice; `called_tools` when a chat choice's stream held tool calls.
    pub fn finish_chunk(&self, index: u32, reason: FinishReason, called_tools: bool) -> Completion {
        self.chunk(match self.endpoint {
            Endpoint::Chat => Choice::ChatChunk(ChatChunkChoice {
                index,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(chat_finish_reason(reason, called_tools)),
            }),
            Endpoint::Completions => Choice::Text(TextChoice {
                index,
                text: String::new(),
                logprobs: None,
                finish_reason: Some(finish_reason(reason)),
            }),
        })
    }

    /// The extra last chunk of `stream_options.include_usage`: no choices, the usage.
    pub fn usage_chunk(&self, stats: &[GenerationStats]) -> Completion {
        let mut chunk = self.envelope(true, Vec::new());
        chunk.usage = Some(Some(usage(stats)));
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::TopLogprob;
    use serde_json::{json, Value};

    fn value(object: impl serde::Serialize) -> Value {
        serde_json::to_value(object).unwrap()
    }

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
        let chat = value(answer(Endpoint::Chat, false).whole(&choices));
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
            value(usage(&shared)),
            json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11,
                   "prompt_tokens_details": {"cached_tokens": 0}})
        );
        let all_cached = [with_cached(4), with_cached(4)];
        assert_eq!(
            value(usage(&all_cached))["prompt_tokens_details"]["cached_tokens"],
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
        let chat = value(answer(Endpoint::Chat, true).whole(&choices));
        let content = &chat["choices"][0]["logprobs"]["content"];
        assert_eq!(content[1]["token"], "b");
        assert_eq!(content[1]["bytes"], json!([98]));
        assert_eq!(content[0]["top_logprobs"][1]["token"], "z");
        let text = value(answer(Endpoint::Completions, true).whole(&choices));
        let logprobs = &text["choices"][0]["logprobs"];
        assert_eq!(logprobs["tokens"], json!(["a", "b"]));
        assert_eq!(logprobs["text_offset"], json!([0, 1]));
        assert_eq!(logprobs["top_logprobs"][0]["z"], json!(-3.0));
        let chunk = value(answer(Endpoint::Completions, true).text_chunk(
            0,
            "b",
            &choices[0].logprobs[1..],
            1,
        ));
        assert_eq!(chunk["choices"][0]["logprobs"]["text_offset"], json!([1]));
    }

    #[test]
    fn a_stream_opens_each_choice_and_ends_with_the_usage_chunk() {
        let chat = answer(Endpoint::Chat, false);
        let opening = value(chat.opening());
        assert_eq!(opening.as_array().unwrap().len(), 2);
        assert_eq!(opening[1]["choices"][0]["index"], 1);
        assert_eq!(opening[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(opening[0]["usage"], Value::Null);
        let end = value(chat.finish_chunk(1, FinishReason::Stop, false));
        assert_eq!(end["choices"][0]["finish_reason"], "stop");
        let usage =
            value(chat.usage_chunk(&[stats(FinishReason::Stop, 1), stats(FinishReason::Stop, 2)]));
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    }
}
