//! OpenAI request bodies and their translation into a [`TaskRequest`]. Every parameter of
//! OpenAI's chat and completions APIs is either honoured here or refused with a 400 whose
//! message (and so `param`) names it; the README's OpenAI section lists which is which and why.

use std::collections::BTreeMap;

use llorch_api::json_schema::pointer;
use llorch_api::tools::ToolUse;
use llorch_api::{
    ChatMessage, OutputConstraint, SamplingParams, TaskRequest, TokenBias, ToolCall, ToolChoice,
    ToolDefinition, ToolParams,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::tool_calls::OfferedTools;
use crate::validation::ValidationError;

/// OpenAI's documented default for `/v1/completions`.
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;
/// Most choices (`n`) one request may ask for. Each choice is its own job on a slot of its own
/// (the prompt is evaluated once per choice), so this bounds what one request can occupy.
pub const MAX_CHOICES: u64 = 4;
/// The legacy completions API's limit on `logprobs`.
const MAX_COMPLETION_LOGPROBS: u64 = 5;

/// OpenAI parameters orcd cannot honour, with the reason the 400 gives. Anything not listed
/// and not a field below is not an OpenAI parameter and is ignored.
const REFUSED_CHAT: [(&str, &str); 7] = [
    ("audio", ": the worker generates text only"),
    (
        "prediction",
        ": predicted outputs need speculative decoding, which the worker does not do",
    ),
    (
        "reasoning_effort",
        ": the served models are not reasoning models",
    ),
    ("verbosity", ": the served models are not reasoning models"),
    ("web_search_options", ": orcd has no web search"),
    ("functions", ": the deprecated functions API; send `tools`"),
    (
        "function_call",
        ": the deprecated functions API; send `tool_choice`",
    ),
];

/// Fields both endpoints share, as OpenAI spells them.
#[derive(Debug, Default, Deserialize)]
struct CommonParams {
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Value>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    logit_bias: Option<Map<String, Value>>,
    /// Identifies the end user to OpenAI's abuse monitoring; orcd has none (accepted, unused).
    #[allow(dead_code)]
    user: Option<Value>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    messages: Vec<OpenAiMessage>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    logprobs: Option<bool>,
    top_logprobs: Option<u64>,
    response_format: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    store: Option<bool>,
    service_tier: Option<Value>,
    modalities: Option<Value>,
    #[serde(flatten)]
    common: CommonParams,
    /// Everything else; OpenAI parameters in [`REFUSED_CHAT`] are refused from here.
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct OpenAiMessage {
    role: String,
    /// A string, a list of content parts, or null (an assistant turn that only called tools).
    #[serde(default)]
    content: Value,
    /// The calls an assistant turn made.
    #[serde(default)]
    tool_calls: Value,
    /// The call a `tool` message answers.
    tool_call_id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    prompt: Value,
    max_tokens: Option<u32>,
    echo: Option<bool>,
    suffix: Option<Value>,
    best_of: Option<u64>,
    logprobs: Option<u64>,
    #[serde(flatten)]
    common: CommonParams,
}

/// What the translation keeps beside the task: how to shape the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub include_usage: bool,
    /// Choices to generate; each runs as its own job.
    pub choices: u32,
    /// Whether the answer carries log-probabilities.
    pub logprobs: bool,
    /// The tools offered to the model, whose calls are parsed out of the text; `None` when
    /// none are (no tools, or `tool_choice: "none"`).
    pub tools: Option<OfferedTools>,
}

/// `POST /v1/chat/completions` as a task. `default_max_tokens` applies when the request names
/// no limit (OpenAI then means "as long as the context allows").
pub fn chat_task(
    request: ChatCompletionRequest,
    default_max_tokens: u32,
) -> Result<(TaskRequest, Shape), ValidationError> {
    for (field, detail) in REFUSED_CHAT {
        if request
            .other
            .get(field)
            .is_some_and(|value| !is_empty_value(value))
        {
            return Err(ValidationError::Unsupported {
                field: field.into(),
                detail,
            });
        }
    }
    let tools = tool_params(
        request.tools,
        request.tool_choice,
        request.parallel_tool_calls,
    )?;
    if request.store == Some(true) {
        return Err(ValidationError::Unsupported {
            field: "store".into(),
            detail: ": orcd keeps no completions",
        });
    }
    match request.service_tier.as_ref() {
        None | Some(Value::Null) => {}
        Some(Value::String(tier)) if tier == "auto" || tier == "default" => {}
        Some(_) => {
            return Err(ValidationError::Unsupported {
                field: "service_tier".into(),
                detail: ": only `auto` and `default` (orcd has one tier)",
            })
        }
    }
    match request.modalities.as_ref() {
        None | Some(Value::Null) => {}
        Some(Value::Array(modalities)) if modalities.iter().all(|m| m == "text") => {}
        Some(_) => {
            return Err(ValidationError::Unsupported {
                field: "modalities".into(),
                detail: ": the worker generates text only",
            })
        }
    }
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| {
            let tool_calls = match message.tool_calls {
                Value::Null => Vec::new(),
                calls => serde_json::from_value::<Vec<ToolCall>>(calls).map_err(|_| {
                    ValidationError::WrongType {
                        field: format!("messages[{index}].tool_calls"),
                        expected: "a list of `{\"id\": ..., \"type\": \"function\", \"function\": \
                                   {\"name\": ..., \"arguments\": \"<JSON text>\"}}`",
                    }
                })?,
            };
            Ok(ChatMessage {
                tool_calls,
                tool_call_id: message.tool_call_id,
                name: message.name,
                ..ChatMessage::new(
                    // OpenAI's newer name for the system role.
                    match message.role.as_str() {
                        "developer" => "system".to_owned(),
                        _ => message.role,
                    },
                    message_text(index, message.content)?,
                )
            })
        })
        .collect::<Result<Vec<_>, ValidationError>>()?;
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(default_max_tokens);
    let top_logprobs = match (request.logprobs, request.top_logprobs) {
        (Some(true), top) => Some(top.unwrap_or(0)),
        (_, None) => None,
        (_, Some(_)) => {
            return Err(ValidationError::WrongType {
                field: "top_logprobs".into(),
                expected: "sent together with `logprobs: true`",
            })
        }
    };
    let constraint = match request.response_format {
        None | Some(Value::Null) => None,
        Some(format) => response_format(format)?,
    };
    let (mut sampling, stream, mut shape) = common_params(request.common, max_tokens)?;
    sampling.logprobs = top_logprobs.map(|top| top.min(u64::from(u32::MAX)) as u32);
    sampling.constraint = constraint;
    shape.logprobs = top_logprobs.is_some();
    shape.tools = offered_tools(&tools);
    Ok((
        TaskRequest {
            model: request.model,
            prompt: None,
            messages: Some(messages),
            parse_special: false,
            sampling,
            tools,
            stream,
            unknown: Default::default(),
        },
        shape,
    ))
}

/// Refuses the first field of `other` (a body's fields beyond its typed ones) that `accepts`
/// does not take, naming it with the `reason` why.
pub(crate) fn refuse_other_fields(
    other: &BTreeMap<String, Value>,
    accepts: impl Fn(&str, &Value) -> bool,
    reason: impl Fn(&str) -> &'static str,
) -> Result<(), ValidationError> {
    match other.iter().find(|(field, value)| !accepts(field, value)) {
        Some((field, _)) => Err(ValidationError::Unsupported {
            field: field.clone(),
            detail: reason(field),
        }),
        None => Ok(()),
    }
}

/// The tools whose calls are read out of the answer: none when none are offered (no tools,
/// or `tool_choice: "none"`).
pub(crate) fn offered_tools(tools: &ToolParams) -> Option<OfferedTools> {
    match tools.tool_use() {
        ToolUse::Off => None,
        ToolUse::Auto | ToolUse::Required | ToolUse::Function(_) => Some(OfferedTools {
            names: (tools.tools.iter())
                .map(|tool| tool.function.name.clone())
                .collect(),
            parallel: tools.parallel(),
        }),
    }
}

/// `POST /v1/completions` as a task.
pub fn completion_task(
    request: CompletionRequest,
) -> Result<(TaskRequest, Shape), ValidationError> {
    if request.echo == Some(true) {
        return Err(ValidationError::Unsupported {
            field: "echo".into(),
            detail: ": the worker returns generated text only",
        });
    }
    if request
        .suffix
        .as_ref()
        .is_some_and(|suffix| !is_empty_value(suffix))
    {
        return Err(ValidationError::Unsupported {
            field: "suffix".into(),
            detail: ": fill-in-the-middle is not implemented",
        });
    }
    if request.best_of.is_some_and(|best_of| best_of != 1) {
        return Err(ValidationError::Unsupported {
            field: "best_of".into(),
            detail: ": only 1; ask for `n` choices instead",
        });
    }
    if let Some(logprobs) = request.logprobs.filter(|&l| l > MAX_COMPLETION_LOGPROBS) {
        return Err(ValidationError::AboveMaximum {
            field: "logprobs",
            value: logprobs as f32,
            limit: MAX_COMPLETION_LOGPROBS as f32,
        });
    }
    let prompt = match request.prompt {
        Value::String(prompt) => prompt,
        Value::Array(prompts) => {
            let count = prompts.len();
            match <[Value; 1]>::try_from(prompts) {
                Ok([Value::String(prompt)]) => prompt,
                Ok(_) => {
                    return Err(ValidationError::WrongType {
                        field: "prompt[0]".into(),
                        expected: "a string (token arrays are not supported)",
                    })
                }
                Err(_) => return Err(ValidationError::PromptCount { count }),
            }
        }
        _ => {
            return Err(ValidationError::WrongType {
                field: "prompt".into(),
                expected: "a string",
            })
        }
    };
    let max_tokens = request.max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS);
    let (mut sampling, stream, mut shape) = common_params(request.common, max_tokens)?;
    sampling.logprobs = request.logprobs.map(|top| top as u32);
    shape.logprobs = request.logprobs.is_some();
    Ok((
        TaskRequest {
            model: request.model,
            prompt: Some(prompt),
            messages: None,
            parse_special: false,
            sampling,
            tools: Default::default(),
            stream,
            unknown: Default::default(),
        },
        shape,
    ))
}

fn common_params(
    common: CommonParams,
    max_tokens: u32,
) -> Result<(SamplingParams, bool, Shape), ValidationError> {
    let choices = common.n.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&choices) {
        return Err(ValidationError::ChoiceCount { value: choices });
    }
    // OpenAI's defaults: temperature 1 and top_p 1, no top-k. Ranges are checked by the shared
    // validator, as for `/v2/tasks`.
    let temperature = common.temperature.unwrap_or(1.0);
    let seed = match common.seed {
        None => None,
        Some(seed) => Some(u32::try_from(seed).map_err(|_| ValidationError::Seed { value: seed })?),
    };
    let stop = match common.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(stop)) => vec![stop],
        Some(Value::Array(stops)) => stops
            .into_iter()
            .enumerate()
            .map(|(index, stop)| match stop {
                Value::String(stop) => Ok(stop),
                _ => Err(ValidationError::WrongType {
                    field: format!("stop[{index}]"),
                    expected: "a string",
                }),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ValidationError::WrongType {
                field: "stop".into(),
                expected: "a string or a list of strings",
            })
        }
    };
    let logit_bias = match common.logit_bias {
        None => Vec::new(),
        Some(biases) => logit_bias(biases)?,
    };
    let sampling = SamplingParams {
        max_tokens,
        temperature,
        top_k: 0,
        top_p: common.top_p.unwrap_or(1.0),
        seed,
        stop,
        presence_penalty: common.presence_penalty.unwrap_or(0.0),
        frequency_penalty: common.frequency_penalty.unwrap_or(0.0),
        logit_bias,
        logprobs: None,
        constraint: None,
    };
    let shape = Shape {
        include_usage: common
            .stream_options
            .is_some_and(|options| options.include_usage),
        choices: choices as u32,
        logprobs: false,
        tools: None,
    };
    Ok((sampling, common.stream.unwrap_or(false), shape))
}

/// OpenAI's `logit_bias`: token ids as JSON object keys, biases as numbers. Whether an id
/// exists in the model's vocabulary is the worker's check.
fn logit_bias(biases: Map<String, Value>) -> Result<Vec<TokenBias>, ValidationError> {
    biases
        .into_iter()
        .map(|(key, value)| {
            let token = key.parse::<u32>().map_err(|_| ValidationError::WrongType {
                field: "logit_bias".into(),
                expected: "an object whose keys are token ids (non-negative integers)",
            })?;
            let bias = value.as_f64().ok_or(ValidationError::WrongType {
                field: "logit_bias".into(),
                expected: "an object whose values are numbers between -100 and 100",
            })?;
            Ok(TokenBias {
                token,
                bias: bias as f32,
            })
        })
        .collect()
}

/// `response_format`: `text`, `json_object` or `json_schema` (whose schema may only use what
/// the grammar converter supports).
fn response_format(format: Value) -> Result<Option<OutputConstraint>, ValidationError> {
    let kind = format.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputConstraint::JsonObject)),
        "json_schema" => {
            let schema = format
                .get("json_schema")
                .and_then(|json_schema| json_schema.get("schema"))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            if !schema.is_object() {
                return Err(ValidationError::WrongType {
                    field: "response_format.json_schema.schema".into(),
                    expected: "a JSON schema object",
                });
            }
            check_schema(&schema, "")?;
            Ok(Some(OutputConstraint::JsonSchema { schema }))
        }
        _ => Err(ValidationError::WrongType {
            field: "response_format.type".into(),
            expected: "`text`, `json_object` or `json_schema`",
        }),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` as the shared types; their contents (names,
/// schemas, the chosen tool) are checked by the shared validator.
pub(crate) fn tool_params(
    tools: Option<Value>,
    choice: Option<Value>,
    parallel: Option<bool>,
) -> Result<ToolParams, ValidationError> {
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                serde_json::from_value::<ToolDefinition>(item).map_err(|_| {
                    ValidationError::WrongType {
                        field: format!("tools[{index}]"),
                        expected: "a function tool: `{\"type\": \"function\", \"function\": \
                                   {\"name\": ..., \"parameters\": {...}}}`",
                    }
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ValidationError::WrongType {
                field: "tools".into(),
                expected: "a list of function tools",
            })
        }
    };
    let tool_choice = match choice {
        None | Some(Value::Null) => None,
        Some(choice) => Some(serde_json::from_value::<ToolChoice>(choice).map_err(|_| {
            ValidationError::WrongType {
                field: "tool_choice".into(),
                expected: "`none`, `auto`, `required` or \
                           `{\"type\": \"function\", \"function\": {\"name\": ...}}`",
            }
        })?),
    };
    if tools.is_empty() {
        // Without tools there is nothing to call: `none` and `auto` mean plain text, and
        // `parallel_tool_calls` has nothing to apply to (clients send both by default).
        return match tool_choice {
            None
            | Some(ToolChoice::Mode(llorch_api::tools::ToolChoiceMode::None))
            | Some(ToolChoice::Mode(llorch_api::tools::ToolChoiceMode::Auto)) => {
                Ok(ToolParams::default())
            }
            Some(_) => Err(ValidationError::Request(
                llorch_api::tools::ToolError::ChoiceWithoutTools.into(),
            )),
        };
    }
    Ok(ToolParams {
        tools,
        tool_choice,
        parallel_tool_calls: parallel,
    })
}

/// The schema keywords llama.cpp's JSON-schema-to-grammar converter honours, plus annotations
/// that do not constrain anything. A schema with any other keyword would be only partly
/// enforced, so it is refused.
const SCHEMA_KEYWORDS: [&str; 28] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "$defs",
    "definitions",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "title",
    "description",
    "$schema",
    "default",
];
/// Annotations accepted besides [`SCHEMA_KEYWORDS`].
const SCHEMA_ANNOTATIONS: [&str; 4] = ["$id", "$comment", "examples", "strict"];

/// Walks a schema and refuses the first keyword the grammar cannot enforce, naming it and
/// where it is (a JSON pointer into the schema).
pub(crate) fn check_schema(schema: &Value, at: &str) -> Result<(), ValidationError> {
    let Some(object) = schema.as_object() else {
        // `true`/`false` schemas (e.g. `additionalProperties: false`) are fine.
        return match schema {
            Value::Bool(_) => Ok(()),
            _ => Err(ValidationError::SchemaFeature {
                feature: "a schema that is not an object".into(),
                at: pointer(at),
            }),
        };
    };
    for (keyword, value) in object {
        let known = SCHEMA_KEYWORDS.contains(&keyword.as_str())
            || SCHEMA_ANNOTATIONS.contains(&keyword.as_str());
        if !known {
            return Err(ValidationError::SchemaFeature {
                feature: keyword.clone(),
                at: pointer(at),
            });
        }
        let here = format!("{at}/{keyword}");
        match keyword.as_str() {
            "properties" | "$defs" | "definitions" => {
                if let Some(map) = value.as_object() {
                    for (name, sub) in map {
                        check_schema(sub, &format!("{here}/{name}"))?;
                    }
                }
            }
            "items" | "additionalProperties" => check_schema(value, &here)?,
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => {
                if let Some(list) = value.as_array() {
                    for (index, sub) in list.iter().enumerate() {
                        check_schema(sub, &format!("{here}/{index}"))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A message's `content` as plain text: a string, or the `text` parts of a list joined.
fn message_text(index: usize, content: Value) -> Result<String, ValidationError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text),
        Value::Array(parts) => {
            let mut text = String::new();
            for (part_index, part) in parts.into_iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(piece))) => text.push_str(piece),
                    (Some("text"), _) => {
                        return Err(ValidationError::WrongType {
                            field: format!("messages[{index}].content[{part_index}].text"),
                            expected: "a string",
                        })
                    }
                    _ => {
                        return Err(ValidationError::Unsupported {
                            field: format!("messages[{index}].content[{part_index}]"),
                            detail: ": only `text` parts are accepted",
                        })
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ValidationError::WrongType {
            field: format!("messages[{index}].content"),
            expected: "a string or a list of content parts",
        }),
    }
}

fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat(body: Value) -> Result<(TaskRequest, Shape), ValidationError> {
        chat_task(serde_json::from_value(body).unwrap(), 512)
    }

    fn completion(body: Value) -> Result<(TaskRequest, Shape), ValidationError> {
        completion_task(serde_json::from_value(body).unwrap())
    }

    fn user() -> Value {
        json!([{"role": "user", "content": "x"}])
    }

    #[test]
    fn a_chat_request_becomes_a_messages_task_with_openai_defaults() {
        let (task, shape) = chat(json!({
            "model": "qwen2.5-coder-0.5b",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "seed": 7,
            "stop": "\n",
            "user": "someone",
        }))
        .unwrap();
        assert_eq!(task.model, "qwen2.5-coder-0.5b");
        let messages = task.messages.unwrap();
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant"]);
        assert_eq!(messages[1].content, "hi there");
        assert_eq!(
            task.sampling,
            SamplingParams {
                max_tokens: 512,
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: Some(7),
                stop: vec!["\n".into()],
                ..SamplingParams::default()
            }
        );
        assert!(task.stream);
        assert_eq!(
            shape,
            Shape {
                include_usage: true,
                choices: 1,
                logprobs: false,
                tools: None,
            }
        );
    }

    #[test]
    fn ranges_are_the_shared_validators_as_on_v2() {
        let (task, _) =
            chat(json!({"model": "m", "messages": user(), "temperature": 2.5})).unwrap();
        assert_eq!(
            crate::validation::validate_task(task, &crate::validation::RequestLimits::default()),
            Err(crate::validation::RequestError::Temperature {
                value: 2.5,
                limit: llorch_api::validation::MAX_TEMPERATURE
            })
        );
        let (task, _) =
            chat(json!({"model": "m", "messages": user(), "presence_penalty": 2.5})).unwrap();
        let error =
            crate::validation::validate_task(task, &crate::validation::RequestLimits::default())
                .unwrap_err();
        assert!(
            error.to_string().starts_with("`presence_penalty`"),
            "{error}"
        );
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let (task, _) = chat(json!({
            "model": "m", "messages": user(),
            "max_tokens": 10, "max_completion_tokens": 20, "stop": ["a", "b"],
        }))
        .unwrap();
        assert_eq!(task.sampling.max_tokens, 20);
        assert_eq!(task.sampling.stop, ["a", "b"]);
        assert!(!task.stream);
    }

    #[test]
    fn sampling_parameters_are_carried_into_the_task() {
        let (task, shape) = chat(json!({
            "model": "m", "messages": user(), "n": 3,
            "presence_penalty": 0.5, "frequency_penalty": -1.0,
            "logit_bias": {"42": -100, "7": 2.5},
            "logprobs": true, "top_logprobs": 5,
            "response_format": {"type": "json_object"},
        }))
        .unwrap();
        let sampling = task.sampling;
        assert_eq!(sampling.presence_penalty, 0.5);
        assert_eq!(sampling.frequency_penalty, -1.0);
        assert_eq!(
            sampling.logit_bias,
            [
                TokenBias {
                    token: 42,
                    bias: -100.0
                },
                TokenBias {
                    token: 7,
                    bias: 2.5
                }
            ]
        );
        assert_eq!(sampling.logprobs, Some(5));
        assert_eq!(sampling.constraint, Some(OutputConstraint::JsonObject));
        assert_eq!(shape.choices, 3);
        assert!(shape.logprobs);
        let (task, shape) =
            chat(json!({"model": "m", "messages": user(), "logprobs": true})).unwrap();
        assert_eq!(task.sampling.logprobs, Some(0));
        assert!(shape.logprobs);
    }

    #[test]
    fn a_json_schema_becomes_a_schema_constraint() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "who"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
            },
            "required": ["name"],
            "additionalProperties": false,
        });
        let (task, _) = chat(json!({
            "model": "m", "messages": user(),
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": schema}},
        }))
        .unwrap();
        assert_eq!(
            task.sampling.constraint,
            Some(OutputConstraint::JsonSchema { schema })
        );
        let (task, _) = chat(json!({
            "model": "m", "messages": user(), "response_format": {"type": "text"},
        }))
        .unwrap();
        assert_eq!(task.sampling.constraint, None);
    }

    #[test]
    fn schema_features_the_grammar_cannot_enforce_are_named() {
        let error = chat(json!({
            "model": "m", "messages": user(),
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                "type": "object",
                "properties": {"tags": {"type": "array", "uniqueItems": true}},
            }}},
        }))
        .unwrap_err();
        assert_eq!(
            error,
            ValidationError::SchemaFeature {
                feature: "uniqueItems".into(),
                at: "/properties/tags".into()
            }
        );
        assert!(error
            .to_string()
            .starts_with("`response_format.json_schema.schema` uses `uniqueItems`"));
    }

    #[test]
    fn tools_and_tool_messages_are_carried_into_the_task() {
        let weather = json!([{"type": "function", "function": {"name": "get_weather"}}]);
        let messages = json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "22 C"}]},
        ]);
        let (task, shape) = chat(json!({
            "model": "m", "messages": messages, "tools": weather,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
        }))
        .unwrap();
        let sent = task.messages.unwrap();
        assert_eq!(sent[1].tool_calls[0].id, "call_1");
        assert_eq!(sent[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(sent[2].content, "22 C");
        assert_eq!(task.tools.tool_use(), ToolUse::Function("get_weather"));
        assert_eq!(
            shape.tools,
            Some(OfferedTools {
                names: vec!["get_weather".into()],
                parallel: false
            })
        );
        // `none`: the tools are kept on the task (the worker leaves them out of the prompt)
        // but no calls are read from the answer.
        let (task, shape) = chat(
            json!({"model": "m", "messages": user(), "tools": weather, "tool_choice": "none"}),
        )
        .unwrap();
        assert_eq!(task.tools.tool_use(), ToolUse::Off);
        assert_eq!(shape.tools, None);
        // What clients send by default without tools is accepted and means nothing.
        let (task, _) = chat(json!({
            "model": "m", "messages": user(), "tool_choice": "auto", "parallel_tool_calls": true,
        }))
        .unwrap();
        assert_eq!(task.tools, ToolParams::default());
    }

    #[test]
    fn a_completion_request_becomes_a_prompt_task() {
        let (task, shape) = completion(
            json!({"model": "m", "prompt": ["Once"], "temperature": 0, "logprobs": 2, "best_of": 1}),
        )
        .unwrap();
        assert_eq!(task.prompt.as_deref(), Some("Once"));
        assert_eq!(task.sampling.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS);
        assert_eq!(task.sampling.temperature, 0.0);
        assert_eq!(task.sampling.logprobs, Some(2));
        assert!(shape.logprobs);
    }

    #[test]
    fn what_orcd_cannot_do_is_refused_by_name() {
        let refused = |body: Value| chat(body).unwrap_err().to_string();
        let cases = [
            (json!({"n": 5}), "`n` must be between 1 and 4"),
            (json!({"n": 0}), "`n`"),
            (json!({"seed": -1}), "`seed`"),
            (json!({"stop": 5}), "`stop` must be"),
            (json!({"stop": ["a", 1]}), "`stop[1]`"),
            (json!({"tools": [{"type": "function"}]}), "`tools[0]`"),
            (json!({"tools": {"a": 1}}), "`tools`"),
            (json!({"tool_choice": "required"}), "`tool_choice`"),
            (json!({"tool_choice": "sometimes"}), "`tool_choice`"),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": 1}]}]}),
                "`messages[0].tool_calls`",
            ),
            (json!({"audio": {"voice": "x"}}), "`audio`"),
            (json!({"prediction": {"type": "content"}}), "`prediction`"),
            (json!({"store": true}), "`store`"),
            (json!({"service_tier": "flex"}), "`service_tier`"),
            (json!({"modalities": ["text", "audio"]}), "`modalities`"),
            (json!({"reasoning_effort": "low"}), "`reasoning_effort`"),
            (json!({"top_logprobs": 3}), "`top_logprobs`"),
            (json!({"logit_bias": {"abc": 1}}), "`logit_bias`"),
            (json!({"logit_bias": {"1": "x"}}), "`logit_bias`"),
            (
                json!({"response_format": {"type": "yaml"}}),
                "`response_format.type`",
            ),
        ];
        for (extra, needle) in cases {
            let mut body = json!({"model": "m", "messages": user()});
            for (key, value) in extra.as_object().unwrap() {
                body[key] = value.clone();
            }
            let message = refused(body.clone());
            assert!(message.contains(needle), "{body}: {message}");
        }
        // Not OpenAI parameters: ignored.
        assert!(chat(json!({"model": "m", "messages": user(), "top_k": 3, "x_custom": 1})).is_ok());
        let image = json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]);
        assert!(
            refused(json!({"model": "m", "messages": image})).contains("`messages[0].content[0]`")
        );
        let completion_refused = |body: Value| completion(body).unwrap_err().to_string();
        assert!(
            completion_refused(json!({"model": "m", "prompt": ["a", "b"]})).contains("2 prompts")
        );
        assert!(
            completion_refused(json!({"model": "m", "prompt": [[1, 2]]})).contains("`prompt[0]`")
        );
        assert!(
            completion_refused(json!({"model": "m", "prompt": "x", "echo": true}))
                .contains("`echo`")
        );
        assert!(
            completion_refused(json!({"model": "m", "prompt": "x", "best_of": 2}))
                .contains("`best_of`")
        );
        assert!(
            completion_refused(json!({"model": "m", "prompt": "x", "logprobs": 6}))
                .contains("`logprobs`")
        );
    }
}
