//! A `POST /v1/responses` body and its translation into the [`TaskRequest`] chat completions
//! make: `input` (a string, or messages, `function_call` and `function_call_output` items)
//! becomes chat messages after the stored conversation of `previous_response_id` and the
//! `instructions`; `tools`, `tool_choice` and `text.format` take the chat path's checks. A
//! field orcd cannot honour is refused by name, never ignored.

use std::collections::BTreeMap;

use llorch_api::tools::{FunctionCall, ToolKind};
use llorch_api::{ChatMessage, OutputConstraint, SamplingParams, TaskRequest, ToolCall};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::openai::request::{check_schema, refuse_other_fields, tool_params};
use crate::validation::ValidationError;

/// A `POST /v1/responses` body. Fields OpenAI defines that are not here are refused unless
/// empty ([`refuse_unsupported`]).
#[derive(Debug, Clone, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Value,
    pub instructions: Option<String>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<TextOptions>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stream: Option<bool>,
    pub previous_response_id: Option<String>,
    pub store: Option<bool>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// Identifies the end user to OpenAI's abuse monitoring; kept on the response only.
    pub user: Option<String>,
    /// A hint for OpenAI's prompt cache; orcd's prefix routing caches without one.
    #[allow(dead_code)]
    pub prompt_cache_key: Option<String>,
    /// Everything else: refused by name unless empty.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    pub format: Option<Value>,
    /// Only `medium`, the one verbosity a model without that training has.
    pub verbosity: Option<String>,
}

/// Fields OpenAI's Responses API has that orcd accepts only empty (or at their one value),
/// with the reason given when they are not.
fn refuse_unsupported(other: &BTreeMap<String, Value>) -> Result<(), ValidationError> {
    let accepts = |field: &str, value: &Value| match field {
        "truncation" => value.is_null() || value == "disabled",
        "include" | "reasoning" | "stream_options" | "safety_identifier" => {
            value.is_null() || value.as_array().is_some_and(Vec::is_empty)
        }
        "service_tier" => value.is_null() || value == "auto" || value == "default",
        "background" => value.is_null() || value == false,
        "top_logprobs" => value.is_null() || value == 0,
        _ => false,
    };
    let reason = |field: &str| match field {
        "reasoning" => ": the served models are not reasoning models",
        "background" => ": responses run while the request is open",
        "include" => ": there is no extra output to include",
        "top_logprobs" => ": log-probabilities are served by `/v1/chat/completions`",
        "truncation" => ": only `disabled` (a prompt that does not fit is refused)",
        "service_tier" => ": only `auto` and `default` (orcd has one tier)",
        "conversation" | "prompt" => ": use `input` and `previous_response_id`",
        _ => ": not a field orcd knows for `/v1/responses`",
    };
    refuse_other_fields(other, accepts, reason)
}

/// What the answer needs besides the task.
#[derive(Debug, Clone)]
pub struct Translated {
    pub task: TaskRequest,
    /// The conversation up to this response's output: what a later `previous_response_id`
    /// continues (without `instructions`, which OpenAI does not carry over).
    pub conversation: Vec<ChatMessage>,
    /// `text.format` as the answer echoes it.
    pub format: Value,
}

/// Builds the task of a Responses request. `previous` is the stored conversation of
/// `previous_response_id`; `default_max_tokens` applies without `max_output_tokens`.
pub fn responses_task(
    request: &ResponsesRequest,
    previous: Vec<ChatMessage>,
    default_max_tokens: u32,
) -> Result<Translated, ValidationError> {
    refuse_unsupported(&request.other)?;
    let mut conversation = previous;
    conversation.extend(input_messages(&request.input)?);
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(instructions) = request
        .instructions
        .as_ref()
        .filter(|text| !text.is_empty())
    {
        messages.push(ChatMessage::new("system", instructions.clone()));
    }
    messages.extend(conversation.iter().cloned());
    let tools = tool_params(
        chat_tools(request.tools.as_deref())?,
        request.tool_choice.clone().map(chat_tool_choice),
        request.parallel_tool_calls,
    )?;
    let (constraint, format) = text_format(request.text.as_ref())?;
    let sampling = SamplingParams {
        max_tokens: request.max_output_tokens.unwrap_or(default_max_tokens),
        temperature: request.temperature.unwrap_or(1.0),
        top_p: request.top_p.unwrap_or(1.0),
        // OpenAI samples without top-k.
        top_k: 0,
        constraint,
        ..SamplingParams::default()
    };
    let task = TaskRequest {
        model: request.model.clone(),
        prompt: None,
        messages: Some(messages),
        parse_special: false,
        sampling,
        tools,
        stream: request.stream.unwrap_or(false),
        unknown: Default::default(),
    };
    Ok(Translated {
        task,
        conversation,
        format,
    })
}

/// `input`: a string is one user message; a list holds messages and tool-call items.
fn input_messages(input: &Value) -> Result<Vec<ChatMessage>, ValidationError> {
    match input {
        Value::String(text) => Ok(vec![ChatMessage::new("user", text.clone())]),
        Value::Array(items) => {
            let mut messages: Vec<ChatMessage> = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                add_item(&mut messages, index, item)?;
            }
            Ok(messages)
        }
        _ => Err(ValidationError::WrongType {
            field: "input".into(),
            expected: "a string or a list of input items",
        }),
    }
}

/// One input item, appended to `messages`. A `function_call` joins the assistant turn before
/// it (the model's text and its calls are one turn to a chat template).
fn add_item(
    messages: &mut Vec<ChatMessage>,
    index: usize,
    item: &Value,
) -> Result<(), ValidationError> {
    let field = |name: &str| format!("input[{index}].{name}");
    let kind = match item.get("type") {
        None => "message",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(ValidationError::WrongType {
                field: field("type"),
                expected: "a string",
            })
        }
    };
    match kind {
        "message" => {
            let role = string_field(item, index, "role")?;
            let role = match role {
                "user" | "assistant" | "system" => role,
                "developer" => "system",
                _ => {
                    return Err(ValidationError::WrongType {
                        field: field("role"),
                        expected: "`user`, `assistant`, `system` or `developer`",
                    })
                }
            };
            let text = content_text(item.get("content"), &field("content"))?;
            messages.push(ChatMessage::new(role, text));
        }
        "function_call" => {
            let call = ToolCall {
                id: string_field(item, index, "call_id")?.to_owned(),
                kind: ToolKind::Function,
                function: FunctionCall {
                    name: string_field(item, index, "name")?.to_owned(),
                    arguments: string_field(item, index, "arguments")?.to_owned(),
                },
            };
            match messages.last_mut() {
                Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                _ => messages.push(ChatMessage {
                    tool_calls: vec![call],
                    ..ChatMessage::new("assistant", "")
                }),
            }
        }
        "function_call_output" => {
            let call_id = string_field(item, index, "call_id")?;
            let output = content_text(item.get("output"), &field("output"))?;
            messages.push(ChatMessage {
                tool_call_id: Some(call_id.to_owned()),
                ..ChatMessage::new("tool", output)
            });
        }
        _ => {
            return Err(ValidationError::Unsupported {
                field: field("type"),
                detail: ": only `message`, `function_call` and `function_call_output` items",
            })
        }
    }
    Ok(())
}

fn string_field<'a>(item: &'a Value, index: usize, name: &str) -> Result<&'a str, ValidationError> {
    item.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ValidationError::WrongType {
            field: format!("input[{index}].{name}"),
            expected: "a string",
        })
}

/// A message's `content` (or a call's `output`): a string, or text parts joined.
fn content_text(content: Option<&Value>, field: &str) -> Result<String, ValidationError> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (index, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text")) {
                    (Some("input_text" | "output_text" | "text"), Some(Value::String(piece))) => {
                        text.push_str(piece)
                    }
                    (Some("input_text" | "output_text" | "text"), _) => {
                        return Err(ValidationError::WrongType {
                            field: format!("{field}[{index}].text"),
                            expected: "a string",
                        })
                    }
                    _ => {
                        return Err(ValidationError::Unsupported {
                            field: format!("{field}[{index}]"),
                            detail: ": only text parts (`input_text`, `output_text`); the \
                                     worker reads text only",
                        })
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ValidationError::WrongType {
            field: field.to_owned(),
            expected: "a string or a list of text parts",
        }),
    }
}

/// Responses tools are flat (`{"type": "function", "name", "parameters"}`); chat nests the
/// function. Other tool types (web search, files, computer use) need what orcd does not have.
fn chat_tools(tools: Option<&[Value]>) -> Result<Option<Value>, ValidationError> {
    let Some(tools) = tools else {
        return Ok(None);
    };
    let converted = tools
        .iter()
        .enumerate()
        .map(
            |(index, tool)| match tool.get("type").and_then(Value::as_str) {
                Some("function") => {
                    let mut function = tool.clone();
                    if let Some(object) = function.as_object_mut() {
                        object.remove("type");
                    }
                    Ok(json!({"type": "function", "function": function}))
                }
                _ => Err(ValidationError::Unsupported {
                    field: format!("tools[{index}].type"),
                    detail: ": only `function` tools",
                }),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Value::Array(converted)))
}

/// `{"type": "function", "name": ...}` nests the name for chat; the modes pass as they are.
fn chat_tool_choice(choice: Value) -> Value {
    match choice.get("name") {
        Some(name) if choice.get("type") == Some(&json!("function")) => {
            json!({"type": "function", "function": {"name": name}})
        }
        _ => choice,
    }
}

/// `text.format`: `text`, `json_object`, or `json_schema` with a schema the grammar path can
/// enforce. Returns the constraint and the format as the answer echoes it.
fn text_format(
    text: Option<&TextOptions>,
) -> Result<(Option<OutputConstraint>, Value), ValidationError> {
    let plain = json!({"type": "text"});
    let Some(text) = text else {
        return Ok((None, plain));
    };
    if text.verbosity.as_deref().is_some_and(|v| v != "medium") {
        return Err(ValidationError::Unsupported {
            field: "text.verbosity".into(),
            detail: ": only `medium`",
        });
    }
    let Some(format) = text.format.clone().filter(|format| !format.is_null()) else {
        return Ok((None, plain));
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok((None, format)),
        Some("json_object") => Ok((Some(OutputConstraint::JsonObject), format)),
        Some("json_schema") => {
            let schema = format.get("schema").cloned().unwrap_or_else(|| json!({}));
            if !schema.is_object() {
                return Err(ValidationError::WrongType {
                    field: "text.format.schema".into(),
                    expected: "a JSON schema object",
                });
            }
            check_schema(&schema, "")?;
            Ok((Some(OutputConstraint::JsonSchema { schema }), format))
        }
        _ => Err(ValidationError::WrongType {
            field: "text.format.type".into(),
            expected: "`text`, `json_object` or `json_schema`",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::from_value_naming_field;

    fn request(body: Value) -> ResponsesRequest {
        from_value_naming_field(body).unwrap()
    }

    fn translate(body: Value) -> Result<Translated, ValidationError> {
        responses_task(&request(body), Vec::new(), 64)
    }

    #[test]
    fn a_string_input_with_instructions_is_a_system_and_a_user_message() {
        let translated = translate(json!({
            "model": "m", "input": "hi", "instructions": "Be terse.",
            "max_output_tokens": 9, "temperature": 0.5
        }))
        .unwrap();
        let messages = translated.task.messages.unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(
            (messages[0].role.as_str(), messages[0].content.as_str()),
            ("system", "Be terse.")
        );
        assert_eq!(
            (messages[1].role.as_str(), messages[1].content.as_str()),
            ("user", "hi")
        );
        assert_eq!(translated.task.sampling.max_tokens, 9);
        assert_eq!(translated.task.sampling.temperature, 0.5);
        assert_eq!(
            translated.conversation.len(),
            1,
            "instructions are not carried over"
        );
    }

    #[test]
    fn tool_items_become_an_assistant_call_and_a_tool_message_after_the_stored_turns() {
        let previous = vec![ChatMessage::new("user", "weather in Paris?")];
        let body = request(json!({
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                 "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "22 C"},
                {"role": "user", "content": [{"type": "input_text", "text": "thanks"}]}
            ],
            "tools": [{"type": "function", "name": "get_weather",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "function", "name": "get_weather"}
        }));
        let translated = responses_task(&body, previous, 64).unwrap();
        let messages = translated.task.messages.unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(messages[1].role, "assistant");
        assert_eq!(messages[1].tool_calls[0].id, "call_1");
        assert_eq!(messages[1].tool_calls[0].function.name, "get_weather");
        assert_eq!(messages[2].role, "tool");
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(messages[3].content, "thanks");
        assert_eq!(translated.task.tools.tools[0].function.name, "get_weather");
        assert_eq!(
            translated.task.tools.tool_use(),
            llorch_api::tools::ToolUse::Function("get_weather")
        );
    }

    #[test]
    fn a_json_schema_format_is_the_chat_paths_schema_constraint() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let translated = translate(json!({
            "model": "m", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "t", "schema": schema, "strict": true}}
        }))
        .unwrap();
        assert_eq!(
            translated.task.sampling.constraint,
            Some(OutputConstraint::JsonSchema { schema })
        );
        assert_eq!(translated.format["name"], "t");
    }

    #[test]
    fn what_orcd_cannot_do_is_refused_by_name() {
        for (body, field) in [
            (
                json!({"model": "m", "input": "x", "reasoning": {"effort": "high"}}),
                "`reasoning`",
            ),
            (
                json!({"model": "m", "input": "x", "frobnicate": 1}),
                "`frobnicate`",
            ),
            (json!({"model": "m", "input": 3}), "`input`"),
            (
                json!({"model": "m", "input": [{"type": "reasoning"}]}),
                "`input[0].type`",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call_output"}]}),
                "`input[0].call_id`",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
                "`input[0].content[0]`",
            ),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "`tools[0].type`",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {"type": "string", "not": {}}}}}),
                "`not`",
            ),
        ] {
            let message = translate(body.clone()).unwrap_err().to_string();
            assert!(message.contains(field), "{body}: {message}");
        }
    }

    #[test]
    fn wrong_types_name_their_field() {
        for (body, field) in [
            (
                json!({"model": "m", "input": "x", "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"model": "m", "input": "x", "text": {"format": {}, "colour": 1}}),
                "text.colour",
            ),
            (json!({"input": "x"}), "model"),
        ] {
            let error = from_value_naming_field::<ResponsesRequest>(body.clone()).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("`{field}`")),
                "{body}: {message}"
            );
        }
    }
}
