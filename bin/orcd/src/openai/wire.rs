//! OpenAI's answer objects as serde structs: what `/v1/models`, `/v1/chat/completions` and
//! `/v1/completions` send, whole or as stream chunks, and OpenAI's error body. A field's
//! presence, name and type are fixed here, once; `answer.rs` fills them in.

pub use crate::openai_error::ErrorBody;
use std::collections::BTreeMap;

use serde::Serialize;

/// A field OpenAI always sends and orcd always leaves empty (`refusal`): JSON `null`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Null;

/// `usage`: the prompt once, the completions summed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

/// A whole `chat.completion` / `text_completion`, or one chunk of a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<Choice>,
    /// Whole answers always carry usage. Chunks carry `null` when the request asked for usage
    /// (the extra last chunk carries the figures), and no `usage` field otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One choice, in the shape of its endpoint and of a whole answer or a chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Choice {
    Chat(ChatChoice),
    ChatChunk(ChatChunkChoice),
    /// `/v1/completions`, whole and streamed alike.
    Text(TextChoice),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<Logprobs>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// `null` when the answer is only tool calls.
    pub content: Option<String>,
    pub refusal: Null,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallObject {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: ToolFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolFunction {
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<Logprobs>,
    pub finish_reason: Option<&'static str>,
}

/// What a chat chunk adds to its choice; the last chunk of a choice adds nothing (`{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A streamed tool call: the opening chunk carries `id`, `type` and the name, later ones
/// fragments of the arguments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<Logprobs>,
    /// `null` on every chunk but a choice's last.
    pub finish_reason: Option<&'static str>,
}

/// Log-probabilities in the shape of each endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Logprobs {
    Chat(ChatLogprobs),
    Completions(CompletionLogprobs),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
    pub refusal: Null,
}

/// One token's log-probability. `id` is beyond OpenAI's fields (llama.cpp's server sends it
/// too): the token id that `logit_bias` takes. Log-probabilities are written as `f64`, as the
/// answers always were.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    pub id: u32,
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatTopLogprob>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTopLogprob {
    pub id: u32,
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

/// The legacy shape: parallel lists, alternatives as `{token: logprob}` maps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f64>,
    pub top_logprobs: Vec<BTreeMap<String, f64>>,
    pub text_offset: Vec<usize>,
}

/// What one event of an OpenAI stream carries: a chunk, or the error that ends the stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StreamItem {
    Chunk(Completion),
    Error(ErrorBody),
}

impl From<Completion> for StreamItem {
    fn from(chunk: Completion) -> Self {
        StreamItem::Chunk(chunk)
    }
}

impl From<ErrorBody> for StreamItem {
    fn from(error: ErrorBody) -> Self {
        StreamItem::Error(error)
    }
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    // Beyond OpenAI's fields: what a client choosing a model wants to know.
    /// `loaded` (a live worker serves it), `loading` or `unloaded` (a pool manager can load it).
    pub status: &'static str,
    pub workers: u32,
    pub slots_total: u32,
    pub slots_busy: u32,
    pub queue_depth: u32,
    /// An alias (`[aliases]` of orcd's `--config`): the model it stands for, whose figures
    /// these are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_for: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelObject>,
}

/// The JSON text of a wire object. Serializing these types cannot fail: every map key is a
/// string and every number finite or written as `null` by serde_json.
pub fn to_json(object: &impl Serialize) -> String {
    serde_json::to_string(object).expect("wire objects always serialize")
}
