//! Tool calling on the wire, in OpenAI's shapes: the tools a chat offers the model, which of
//! them it must call (`tool_choice`), and the calls an assistant turn made. orcd and the worker
//! check them here alike ([`check_tool_params`], [`check_message_tools`]); the worker renders
//! them into the model's chat template and constrains decoding for `required` and a named
//! function; orcd's OpenAI layer parses the model's calls out of the generated text.

use serde::{Deserialize, Serialize};

use crate::json_schema::{check_schema, SchemaError};
use crate::ChatMessage;

/// Most tools one request may offer; each is written into the prompt.
pub const MAX_TOOLS: usize = 128;
/// OpenAI's limit on a function name.
pub const MAX_TOOL_NAME_LEN: usize = 64;
/// Largest `parameters` schema of one tool, in bytes of its JSON text.
pub const MAX_TOOL_SCHEMA_BYTES: usize = 64 * 1024;
/// Most calls one assistant message may carry.
pub const MAX_TOOL_CALLS_PER_MESSAGE: usize = 128;

/// The only kind of tool OpenAI's chat API has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    #[default]
    Function,
}

/// One entry of `tools`: `{"type": "function", "function": {name, description, parameters}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionDefinition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments object; absent means no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Accepted for OpenAI compatibility: a constrained call (`required`, a named function)
    /// follows the schema whether or not this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A call an assistant turn made, as OpenAI writes it (`arguments` is JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: ToolKind,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or `{"type": "function", "function":
/// {"name": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Function(NamedToolChoice),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoiceMode {
    /// Tools are not offered to the model; it answers in text.
    None,
    /// The model decides (the default when tools are given).
    Auto,
    /// The model must call at least one tool; decoding follows a grammar.
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: NamedFunction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// The tool fields of a task or an execution; all absent in a request without tools.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolParams {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// `false`: at most one call per answer. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

/// What the model is asked to do with the tools, once defaults are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolUse<'a> {
    /// No tools offered (none given, or `tool_choice: "none"`).
    Off,
    /// Tools offered; the model may call them or answer in text.
    Auto,
    /// Tools offered; the answer must be one or more calls.
    Required,
    /// The answer must be a call to this function.
    Function(&'a str),
}

impl ToolParams {
    pub fn tool_use(&self) -> ToolUse<'_> {
        if self.tools.is_empty() {
            return ToolUse::Off;
        }
        match &self.tool_choice {
            None | Some(ToolChoice::Mode(ToolChoiceMode::Auto)) => ToolUse::Auto,
            Some(ToolChoice::Mode(ToolChoiceMode::None)) => ToolUse::Off,
            Some(ToolChoice::Mode(ToolChoiceMode::Required)) => ToolUse::Required,
            Some(ToolChoice::Function(named)) => ToolUse::Function(&named.function.name),
        }
    }

    /// The tools the template offers the model: none when `tool_choice` is `none`.
    pub fn offered(&self) -> &[ToolDefinition] {
        match self.tool_use() {
            ToolUse::Off => &[],
            _ => &self.tools,
        }
    }

    /// Whether one answer may hold several calls.
    pub fn parallel(&self) -> bool {
        self.parallel_tool_calls.unwrap_or(true)
    }
}

/// Why tools, a tool choice or a message's tool fields were refused; every message names the
/// field in backticks first.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    #[error("`tools` has {count} entries; the limit is {MAX_TOOLS}")]
    TooMany { count: usize },
    #[error(
        "`tools[{index}].function.name` is {name:?}; a name is 1 to {MAX_TOOL_NAME_LEN} ASCII \
         letters, digits, `_` and `-`"
    )]
    Name { index: usize, name: String },
    #[error("`tools[{index}].function.name` `{name}` is offered twice")]
    DuplicateName { index: usize, name: String },
    #[error("`tools[{index}].function.parameters` must be a JSON schema object")]
    ParametersNotObject { index: usize },
    #[error(
        "`tools[{index}].function.parameters` is {bytes} bytes long; the limit is \
         {MAX_TOOL_SCHEMA_BYTES}"
    )]
    ParametersTooLarge { index: usize, bytes: usize },
    /// A forced call decodes under the tool's schema as a grammar: past a limit of
    /// [`crate::json_schema`], or a `pattern` the grammar cannot follow.
    #[error("`tools[{index}].function.parameters`: {error}")]
    ParametersSchema { index: usize, error: SchemaError },
    #[error("`tools[{index}]` contains a NUL character")]
    NulInTool { index: usize },
    #[error("`tool_choice` asks for a tool call, but `tools` is empty")]
    ChoiceWithoutTools,
    #[error("`tool_choice.function.name` is `{name}`, which no entry of `tools` has")]
    UnknownChoice { name: String },
    #[error("`parallel_tool_calls` applies only with `tools`")]
    ParallelWithoutTools,
    #[error(
        "`tool_choice` `required` or a named function cannot be combined with \
         `response_format`: both constrain the answer"
    )]
    ChoiceWithResponseFormat,
    #[error("`messages[{index}].tool_calls` is only allowed on `assistant` messages")]
    CallsOutsideAssistant { index: usize },
    #[error(
        "`messages[{index}].tool_calls` has {count} calls; the limit is {MAX_TOOL_CALLS_PER_MESSAGE}"
    )]
    TooManyCalls { index: usize, count: usize },
    #[error("`messages[{index}].tool_calls[{call}].function.name` must not be empty")]
    CallName { index: usize, call: usize },
    #[error("`messages[{index}].tool_calls[{call}].function.arguments` must be a JSON object")]
    CallArguments { index: usize, call: usize },
    #[error("`messages[{index}].tool_call_id` is required on a `tool` message")]
    MissingToolCallId { index: usize },
    #[error("`messages[{index}]` contains a NUL character")]
    Nul { index: usize },
}

/// Checks the tools, the choice among them and `parallel_tool_calls`.
pub fn check_tool_params(params: &ToolParams, has_constraint: bool) -> Result<(), ToolError> {
    if params.tools.len() > MAX_TOOLS {
        return Err(ToolError::TooMany {
            count: params.tools.len(),
        });
    }
    let mut names: Vec<&str> = Vec::with_capacity(params.tools.len());
    for (index, tool) in params.tools.iter().enumerate() {
        let name = &tool.function.name;
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if name.is_empty() || name.len() > MAX_TOOL_NAME_LEN || !plain {
            return Err(ToolError::Name {
                index,
                name: name.clone(),
            });
        }
        if names.contains(&name.as_str()) {
            return Err(ToolError::DuplicateName {
                index,
                name: name.clone(),
            });
        }
        names.push(name);
        if let Some(parameters) = &tool.function.parameters {
            if !parameters.is_object() {
                return Err(ToolError::ParametersNotObject { index });
            }
            let bytes = parameters.to_string().len();
            if bytes > MAX_TOOL_SCHEMA_BYTES {
                return Err(ToolError::ParametersTooLarge { index, bytes });
            }
        }
        // Templates are rendered and tokenized through C strings.
        let description_nul = tool
            .function
            .description
            .as_deref()
            .is_some_and(|d| d.contains('\0'));
        if description_nul || tool.function.parameters.as_ref().is_some_and(has_nul) {
            return Err(ToolError::NulInTool { index });
        }
    }
    match &params.tool_choice {
        Some(ToolChoice::Function(named)) => {
            if params.tools.is_empty() {
                return Err(ToolError::ChoiceWithoutTools);
            }
            if !names.contains(&named.function.name.as_str()) {
                return Err(ToolError::UnknownChoice {
                    name: named.function.name.clone(),
                });
            }
        }
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) if params.tools.is_empty() => {
            return Err(ToolError::ChoiceWithoutTools);
        }
        _ => {}
    }
    if params.parallel_tool_calls.is_some() && params.tools.is_empty() {
        return Err(ToolError::ParallelWithoutTools);
    }
    if has_constraint && matches!(params.tool_use(), ToolUse::Required | ToolUse::Function(_)) {
        return Err(ToolError::ChoiceWithResponseFormat);
    }
    check_grammar_schemas(params)
}

/// The `parameters` a forced call decodes under (every tool for `required`, the named one for
/// a named choice) become a grammar, so they meet the grammar's limits; with `auto` they are
/// only written into the prompt.
fn check_grammar_schemas(params: &ToolParams) -> Result<(), ToolError> {
    let forced = |name: &str| match params.tool_use() {
        ToolUse::Required => true,
        ToolUse::Function(chosen) => chosen == name,
        ToolUse::Off | ToolUse::Auto => false,
    };
    for (index, tool) in params.tools.iter().enumerate() {
        if let Some(parameters) =
            (tool.function.parameters.as_ref()).filter(|_| forced(&tool.function.name))
        {
            check_schema(parameters)
                .map_err(|error| ToolError::ParametersSchema { index, error })?;
        }
    }
    Ok(())
}

fn has_nul(value: &serde_json::Value) -> bool {
    json_strings(value).iter().any(|text| text.contains('\0'))
}

/// Every string of a JSON value as its decoded text, object keys included: what a chat
/// template writes, whatever escapes the client spelled it with.
pub fn json_strings(value: &serde_json::Value) -> Vec<&str> {
    let mut strings = Vec::new();
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            serde_json::Value::String(text) => strings.push(text.as_str()),
            serde_json::Value::Array(items) => pending.extend(items),
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    strings.push(key.as_str());
                    pending.push(value);
                }
            }
            _ => {}
        }
    }
    strings
}

/// Checks the tool fields of one chat message: calls only on assistant turns, with a name and
/// a JSON-object argument text; a `tool` result names the call it answers.
pub fn check_message_tools(index: usize, message: &ChatMessage) -> Result<(), ToolError> {
    if !message.tool_calls.is_empty() && message.role != "assistant" {
        return Err(ToolError::CallsOutsideAssistant { index });
    }
    if message.tool_calls.len() > MAX_TOOL_CALLS_PER_MESSAGE {
        return Err(ToolError::TooManyCalls {
            index,
            count: message.tool_calls.len(),
        });
    }
    for (call, tool_call) in message.tool_calls.iter().enumerate() {
        let function = &tool_call.function;
        if function.name.is_empty() {
            return Err(ToolError::CallName { index, call });
        }
        if function.name.contains('\0') || function.arguments.contains('\0') {
            return Err(ToolError::Nul { index });
        }
        let arguments: Result<serde_json::Value, _> = serde_json::from_str(&function.arguments);
        if !arguments.is_ok_and(|arguments| arguments.is_object()) {
            return Err(ToolError::CallArguments { index, call });
        }
    }
    if message.role == "tool" && message.tool_call_id.as_deref().is_none_or(str::is_empty) {
        return Err(ToolError::MissingToolCallId { index });
    }
    let fields = [message.tool_call_id.as_deref(), message.name.as_deref()];
    if fields.into_iter().flatten().any(|text| text.contains('\0')) {
        return Err(ToolError::Nul { index });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(value: serde_json::Value) -> ToolParams {
        serde_json::from_value(value).unwrap()
    }

    fn weather() -> serde_json::Value {
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }}])
    }

    #[test]
    fn openai_shapes_parse_and_choose() {
        let auto = params(json!({"tools": weather()}));
        assert_eq!(auto.tool_use(), ToolUse::Auto);
        assert!(auto.parallel());
        let none = params(json!({"tools": weather(), "tool_choice": "none"}));
        assert_eq!(none.tool_use(), ToolUse::Off);
        assert!(none.offered().is_empty());
        let required = params(json!({"tools": weather(), "tool_choice": "required"}));
        assert_eq!(required.tool_use(), ToolUse::Required);
        let named = params(json!({
            "tools": weather(), "parallel_tool_calls": false,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }));
        assert_eq!(named.tool_use(), ToolUse::Function("get_weather"));
        assert!(!named.parallel());
        assert_eq!(check_tool_params(&named, false), Ok(()));
        // Round trip in OpenAI's shape, as orcd forwards it to the worker.
        let wire = serde_json::to_value(&named).unwrap();
        assert_eq!(wire["tool_choice"]["function"]["name"], "get_weather");
        assert_eq!(wire["tools"][0]["type"], "function");
        assert_eq!(ToolParams::default().tool_use(), ToolUse::Off);
    }

    #[test]
    fn bad_tools_are_refused_by_field() {
        let refused = |value| check_tool_params(&params(value), false).unwrap_err();
        assert_eq!(
            refused(json!({"tools": [{"type": "function", "function": {"name": "a b"}}]})),
            ToolError::Name {
                index: 0,
                name: "a b".into()
            }
        );
        let twice = json!([
            {"type": "function", "function": {"name": "f"}},
            {"type": "function", "function": {"name": "f"}},
        ]);
        assert!(matches!(
            refused(json!({ "tools": twice })),
            ToolError::DuplicateName { index: 1, .. }
        ));
        assert_eq!(
            refused(
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]})
            ),
            ToolError::ParametersNotObject { index: 0 }
        );
        assert_eq!(
            refused(
                json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "nope"}}})
            ),
            ToolError::UnknownChoice {
                name: "nope".into()
            }
        );
        assert_eq!(
            refused(json!({"tool_choice": "required"})),
            ToolError::ChoiceWithoutTools
        );
        assert_eq!(
            check_tool_params(
                &params(json!({"tools": weather(), "tool_choice": "required"})),
                true
            ),
            Err(ToolError::ChoiceWithResponseFormat)
        );
        let message = refused(json!({"tool_choice": "required"})).to_string();
        assert!(message.starts_with("`tool_choice`"), "{message}");
    }

    #[test]
    fn a_forced_call_checks_the_schema_it_decodes_under() {
        let bad_pattern = json!([
            {"type": "function", "function": {"name": "ok"}},
            {"type": "function", "function": {"name": "code", "parameters": {
                "type": "object", "properties": {"c": {"type": "string", "pattern": "a{2,1}"}},
            }}},
        ]);
        let with_choice = |choice: serde_json::Value| {
            check_tool_params(
                &params(json!({"tools": bad_pattern, "tool_choice": choice})),
                false,
            )
        };
        let error = with_choice(json!("required")).unwrap_err();
        assert!(
            matches!(error, ToolError::ParametersSchema { index: 1, .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("`tools[1].function.parameters`: at `/properties/c/pattern`"),
            "{error}"
        );
        let named = |name: &str| json!({"type": "function", "function": {"name": name}});
        assert!(with_choice(named("code")).is_err());
        // Not decoded under a grammar: written into the prompt only.
        assert_eq!(with_choice(named("ok")), Ok(()));
        assert_eq!(with_choice(json!("auto")), Ok(()));
    }

    #[test]
    fn message_tool_fields_are_checked() {
        let call = |arguments: &str| ToolCall {
            id: "call_1".into(),
            kind: ToolKind::Function,
            function: FunctionCall {
                name: "get_weather".into(),
                arguments: arguments.into(),
            },
        };
        let mut assistant = ChatMessage::new("assistant", "");
        assistant.tool_calls = vec![call(r#"{"city": "Paris"}"#)];
        assert_eq!(check_message_tools(1, &assistant), Ok(()));
        assistant.tool_calls = vec![call("Paris")];
        assert_eq!(
            check_message_tools(1, &assistant),
            Err(ToolError::CallArguments { index: 1, call: 0 })
        );
        let mut user = ChatMessage::new("user", "x");
        user.tool_calls = vec![call("{}")];
        assert_eq!(
            check_message_tools(0, &user),
            Err(ToolError::CallsOutsideAssistant { index: 0 })
        );
        let mut result = ChatMessage::new("tool", "22 C");
        assert_eq!(
            check_message_tools(2, &result),
            Err(ToolError::MissingToolCallId { index: 2 })
        );
        result.tool_call_id = Some("call_1".into());
        assert_eq!(check_message_tools(2, &result), Ok(()));
    }
}
