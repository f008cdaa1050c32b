//! A `POST /v1/messages` (or `/v1/messages/count_tokens`) body and its translation into the
//! chat [`TaskRequest`]: `system` and the messages' `text`, `tool_use` and `tool_result`
//! blocks become chat messages, `tools` and `tool_choice` the chat path's tools, and the
//! sampling fields their task equivalents. A field orcd cannot honour is refused by name.

use std::collections::BTreeMap;

use llorch_api::tools::{FunctionCall, ToolKind};
use llorch_api::{ChatMessage, SamplingParams, TaskRequest, ToolCall, ToolParams};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::openai::request::{refuse_other_fields, tool_params};
use crate::validation::ValidationError;

/// A Messages API body; `/v1/messages/count_tokens` takes the same without `max_tokens`.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    /// Required by `/v1/messages` ([`messages_task`] says so by name).
    pub max_tokens: Option<u32>,
    pub messages: Vec<InputMessage>,
    pub system: Option<Content>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub stop_sequences: Option<Vec<String>>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    /// `user_id` identifies the end user to Anthropic's abuse monitoring; accepted, unused.
    #[allow(dead_code)]
    pub metadata: Option<Metadata>,
    pub stream: Option<bool>,
    /// Everything else: refused by name unless empty.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    #[allow(dead_code)]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputMessage {
    pub role: Role,
    pub content: Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// A string, or a list of content blocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

/// A content block. `cache_control` (a prompt-caching hint) is accepted everywhere and has
/// nothing to do: orcd's prefix routing reuses a worker's cache without being asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<Content>,
        #[serde(default)]
        is_error: Option<bool>,
    },
}

/// `{"name", "description", "input_schema"}`; `type` is absent or `custom` for client tools.
#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: bool,
    },
    None,
}

/// Fields of the Messages API orcd takes only empty, with the reason when they are not.
fn refuse_unsupported(other: &BTreeMap<String, Value>) -> Result<(), ValidationError> {
    let accepts = |field: &str, value: &Value| match field {
        "service_tier" => value.is_null() || value == "auto" || value == "standard_only",
        "thinking" => value.is_null() || value.get("type").is_some_and(|kind| kind == "disabled"),
        "container" | "mcp_servers" | "context_management" => value.is_null(),
        _ => false,
    };
    let reason = |field: &str| match field {
        "thinking" => {
            ": the served models do not think aloud; send `{\"type\": \"disabled\"}` or nothing"
        }
        "service_tier" => ": only `auto` and `standard_only` (orcd has one tier)",
        "mcp_servers" | "container" => ": orcd runs no tools itself",
        _ => ": not a field orcd knows for `/v1/messages`",
    };
    refuse_other_fields(other, accepts, reason)
}

/// The task of a Messages request. `max_tokens` is required for `/v1/messages` itself;
/// `count_tokens` passes the one token it generates.
pub fn messages_task(
    request: &MessagesRequest,
    max_tokens: Option<u32>,
) -> Result<TaskRequest, ValidationError> {
    refuse_unsupported(&request.other)?;
    let max_tokens = max_tokens.ok_or_else(|| ValidationError::Field {
        field: "max_tokens".into(),
        problem: "is required: the most tokens the answer may have".into(),
    })?;
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        let text = content_text(system, "system")?;
        if !text.is_empty() {
            messages.push(ChatMessage::new("system", text));
        }
    }
    for (index, message) in request.messages.iter().enumerate() {
        add_message(&mut messages, index, message)?;
    }
    let sampling = SamplingParams {
        max_tokens,
        // Anthropic's defaults: temperature 1, no nucleus or top-k cut.
        temperature: request.temperature.unwrap_or(1.0),
        top_p: request.top_p.unwrap_or(1.0),
        top_k: request.top_k.unwrap_or(0),
        stop: request.stop_sequences.clone().unwrap_or_default(),
        ..SamplingParams::default()
    };
    Ok(TaskRequest {
        model: request.model.clone(),
        prompt: None,
        messages: Some(messages),
        parse_special: false,
        sampling,
        tools: tools(request)?,
        stream: request.stream.unwrap_or(false),
        unknown: Default::default(),
    })
}

/// One message's blocks as chat messages: text and `tool_use` blocks of an assistant turn
/// are one message with calls; a user turn's `tool_result` blocks are `tool` messages, its
/// text one user message.
fn add_message(
    messages: &mut Vec<ChatMessage>,
    index: usize,
    message: &InputMessage,
) -> Result<(), ValidationError> {
    let field = format!("messages[{index}].content");
    let blocks = match &message.content {
        Content::Text(text) => vec![Block::Text { text: text.clone() }],
        Content::Blocks(blocks) => blocks.clone(),
    };
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let mut turn = ChatMessage::new(role, "");
    for (block_index, block) in blocks.into_iter().enumerate() {
        match (message.role, block) {
            (_, Block::Text { text }) => turn.content.push_str(&text),
            (Role::Assistant, Block::ToolUse { id, name, input }) => {
                if !input.is_object() {
                    return Err(ValidationError::WrongType {
                        field: format!("{field}[{block_index}].input"),
                        expected: "an object (the tool's arguments)",
                    });
                }
                turn.tool_calls.push(ToolCall {
                    id,
                    kind: ToolKind::Function,
                    function: FunctionCall {
                        name,
                        arguments: input.to_string(),
                    },
                });
            }
            (
                Role::User,
                Block::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                },
            ) => {
                let mut text = match &content {
                    Some(content) => content_text(content, &format!("{field}[{block_index}].content"))?,
                    None => String::new(),
                };
                if is_error == Some(true) {
                    text.insert_str(0, "Error: ");
                }
                messages.push(ChatMessage {
                    tool_call_id: Some(tool_use_id),
                    ..ChatMessage::new("tool", text)
                });
            }
            (_, Block::ToolUse { .. }) => {
                return Err(ValidationError::WrongType {
                    field: format!("{field}[{block_index}]"),
                    expected: "a `text` or `tool_result` block in a user message (`tool_use` is the assistant's)",
                })
            }
            (_, Block::ToolResult { .. }) => {
                return Err(ValidationError::WrongType {
                    field: format!("{field}[{block_index}]"),
                    expected: "a `text` or `tool_use` block in an assistant message (`tool_result` is the user's)",
                })
            }
        }
    }
    if !turn.content.is_empty() || !turn.tool_calls.is_empty() {
        messages.push(turn);
    }
    Ok(())
}

/// `system` or a tool result's `content`: a string, or text blocks joined.
fn content_text(content: &Content, field: &str) -> Result<String, ValidationError> {
    match content {
        Content::Text(text) => Ok(text.clone()),
        Content::Blocks(blocks) => {
            let mut text = String::new();
            for (index, block) in blocks.iter().enumerate() {
                match block {
                    Block::Text { text: piece } => text.push_str(piece),
                    _ => {
                        return Err(ValidationError::WrongType {
                            field: format!("{field}[{index}]"),
                            expected: "a `text` block",
                        })
                    }
                }
            }
            Ok(text)
        }
    }
}

/// `tools` and `tool_choice` in chat's shape, through the chat path's checks.
fn tools(request: &MessagesRequest) -> Result<ToolParams, ValidationError> {
    let tools = match &request.tools {
        None => None,
        Some(tools) => Some(Value::Array(
            tools
                .iter()
                .enumerate()
                .map(|(index, tool)| match tool.kind.as_deref() {
                    None | Some("custom") => Ok(json!({"type": "function", "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    }})),
                    Some(_) => Err(ValidationError::Unsupported {
                        field: format!("tools[{index}].type"),
                        detail: ": only client tools (`custom`); orcd runs no tools itself",
                    }),
                })
                .collect::<Result<_, _>>()?,
        )),
    };
    let (choice, parallel) = match &request.tool_choice {
        None => (None, None),
        Some(ToolChoice::Auto {
            disable_parallel_tool_use,
        }) => (Some(json!("auto")), Some(!disable_parallel_tool_use)),
        Some(ToolChoice::Any {
            disable_parallel_tool_use,
        }) => (Some(json!("required")), Some(!disable_parallel_tool_use)),
        Some(ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        }) => (
            Some(json!({"type": "function", "function": {"name": name}})),
            Some(!disable_parallel_tool_use),
        ),
        Some(ToolChoice::None) => (Some(json!("none")), None),
    };
    tool_params(tools, choice, parallel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::from_value_naming_field;
    use llorch_api::tools::ToolUse;

    fn request(body: Value) -> MessagesRequest {
        from_value_naming_field(body).unwrap()
    }

    #[test]
    fn system_text_and_sampling_become_the_chat_task() {
        let task = messages_task(
            &request(json!({
                "model": "m", "max_tokens": 20, "system": [{"type": "text", "text": "Be terse."}],
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.2, "top_k": 5, "stop_sequences": ["\n\n"],
                "metadata": {"user_id": "u1"}
            })),
            Some(20),
        )
        .unwrap();
        let messages = task.messages.unwrap();
        assert_eq!(
            (messages[0].role.as_str(), messages[0].content.as_str()),
            ("system", "Be terse.")
        );
        assert_eq!(
            (messages[1].role.as_str(), messages[1].content.as_str()),
            ("user", "hi")
        );
        assert_eq!(task.sampling.max_tokens, 20);
        assert_eq!(task.sampling.top_k, 5);
        assert_eq!(task.sampling.stop, ["\n\n"]);
    }

    #[test]
    fn tool_use_and_tool_result_blocks_become_a_call_and_its_answer() {
        let body = request(json!({
            "model": "m", "max_tokens": 20,
            "tools": [{"name": "get_weather", "description": "d",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "22 C",
                     "cache_control": {"type": "ephemeral"}}
                ]}
            ]
        }));
        let task = messages_task(&body, Some(20)).unwrap();
        let messages = task.messages.clone().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1].content, "Let me look.");
        assert_eq!(messages[1].tool_calls[0].id, "toolu_1");
        assert_eq!(
            messages[1].tool_calls[0].function.arguments,
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            (messages[2].role.as_str(), messages[2].content.as_str()),
            ("tool", "22 C")
        );
        assert_eq!(task.tools.tool_use(), ToolUse::Function("get_weather"));
    }

    #[test]
    fn what_orcd_cannot_take_is_refused_by_name() {
        let base =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
        let with = |field: &str, value: Value| {
            let mut body = base.clone();
            body[field] = value;
            body
        };
        for (body, field) in [
            (
                with("thinking", json!({"type": "enabled", "budget_tokens": 100})),
                "`thinking`",
            ),
            (with("frobnicate", json!(1)), "`frobnicate`"),
            (
                with(
                    "tools",
                    json!([{"type": "web_search_20250305", "name": "w", "input_schema": {}}]),
                ),
                "`tools[0].type`",
            ),
        ] {
            let message = messages_task(&request(body.clone()), Some(5))
                .unwrap_err()
                .to_string();
            assert!(message.contains(field), "{body}: {message}");
        }
        let message = messages_task(&request(base.clone()), None)
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("`max_tokens`"), "{message}");
    }

    #[test]
    fn wrong_types_and_unknown_blocks_name_their_field() {
        for (body, field) in [
            (
                json!({"model": "m", "max_tokens": "many", "messages": []}),
                "`max_tokens`",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}),
                "`messages[0].role`",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}),
                "`messages[0].content`",
            ),
        ] {
            let message = from_value_naming_field::<MessagesRequest>(body.clone())
                .unwrap_err()
                .to_string();
            assert!(message.starts_with(field), "{body}: {message}");
        }
    }
}
