//! The Responses API's objects as serde structs: the `response` object, its output items
//! (assistant messages and function calls), `usage`, and the events of a stream.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::openai::wire::Null;

/// A `response` object, as `POST /v1/responses` answers, `GET /v1/responses/{id}` returns,
/// and the first and last events of a stream carry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub status: Status,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: Reasoning,
    pub store: bool,
    pub temperature: f32,
    pub text: TextConfig,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_p: f32,
    pub truncation: &'static str,
    pub usage: Option<ResponseUsage>,
    pub user: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[cfg(test)]
impl ResponseObject {
    /// A response of model `m` with no output and default settings, for tests.
    pub fn sample(id: &str, status: Status) -> ResponseObject {
        ResponseObject {
            id: id.into(),
            object: "response",
            created_at: 0,
            status,
            error: None,
            incomplete_details: None,
            instructions: None,
            max_output_tokens: None,
            model: "m".into(),
            output: Vec::new(),
            parallel_tool_calls: true,
            previous_response_id: None,
            reasoning: Reasoning {
                effort: Null,
                summary: Null,
            },
            store: true,
            temperature: 1.0,
            text: TextConfig {
                format: serde_json::json!({"type": "text"}),
            },
            tool_choice: serde_json::json!("auto"),
            tools: Vec::new(),
            top_p: 1.0,
            truncation: "disabled",
            usage: None,
            user: None,
            metadata: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncompleteDetails {
    pub reason: &'static str,
}

/// The served models do not reason: both fields are always `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reasoning {
    pub effort: Null,
    pub summary: Null,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextConfig {
    pub format: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResponseUsage {
    pub input_tokens: u32,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u32,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u32,
}

/// One item of `output`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: Status,
        role: &'static str,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: Status,
    },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. } | OutputItem::FunctionCall { id, .. } => id,
        }
    }
}

/// An `output_text` content part. orcd adds no annotations (citations) and no log-probabilities.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
    pub annotations: Vec<Null>,
    pub logprobs: Vec<Null>,
}

impl OutputText {
    pub fn new(text: String) -> OutputText {
        OutputText {
            kind: "output_text",
            text,
            annotations: Vec::new(),
            logprobs: Vec::new(),
        }
    }
}

/// One event of a Responses stream: its `type` names the SSE event too.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEvent {
    #[serde(flatten)]
    pub event: EventBody,
    pub sequence_number: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum EventBody {
    #[serde(rename = "response.created")]
    Created { response: Box<ResponseObject> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<ResponseObject> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Null>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Null>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: usize,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.completed")]
    Completed { response: Box<ResponseObject> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<ResponseObject> },
    #[serde(rename = "response.failed")]
    Failed { response: Box<ResponseObject> },
}

impl EventBody {
    /// The event's `type`, which is also its SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            EventBody::Created { .. } => "response.created",
            EventBody::InProgress { .. } => "response.in_progress",
            EventBody::OutputItemAdded { .. } => "response.output_item.added",
            EventBody::ContentPartAdded { .. } => "response.content_part.added",
            EventBody::OutputTextDelta { .. } => "response.output_text.delta",
            EventBody::OutputTextDone { .. } => "response.output_text.done",
            EventBody::ContentPartDone { .. } => "response.content_part.done",
            EventBody::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            EventBody::FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            EventBody::OutputItemDone { .. } => "response.output_item.done",
            EventBody::Completed { .. } => "response.completed",
            EventBody::Incomplete { .. } => "response.incomplete",
            EventBody::Failed { .. } => "response.failed",
        }
    }
}

/// `DELETE /v1/responses/{id}`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}
