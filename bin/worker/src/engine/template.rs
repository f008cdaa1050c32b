//! Renders a chat with the model's own chat template, the Jinja program in its GGUF metadata,
//! through minijinja, the way Hugging Face's tokenizers do (and TGI and mistral.rs after them):
//! `messages` with their tool calls and tool results, the offered `tools`,
//! `add_generation_prompt`, and the BOS and EOS texts. llama.cpp's own template engine only
//! recognises fixed formats and cannot render tools; `prompt.rs` falls back to it only for a
//! template minijinja cannot run when no tools are involved.
//!
//! Message contents arrive here already replaced by placeholders (`prompt.rs`), so no client
//! text is ever parsed for control tokens. The template also tells which syntax the model
//! calls tools in ([`ToolSyntax`]), for the grammar of a forced call.

use llorch_api::{ChatMessage, ToolDefinition};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::json;

/// The texts a template may write for the model's BOS and EOS tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTexts {
    pub bos: String,
    pub eos: String,
}

/// How a model's template asks it to write a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolSyntax {
    /// Qwen 2.5, Hermes: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.
    Hermes,
    /// Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.
    Mistral,
    /// Llama 3.x: a bare `{"name": ..., "parameters": {...}}` object.
    Llama3,
}

/// Whether the template renders `tools` at all; without that, offered tools would silently
/// vanish from the prompt.
pub fn supports_tools(source: &str) -> bool {
    source.contains("tools")
}

/// The call syntax a template teaches, recognised by its markers; a template that mentions
/// tools without a known marker is asked for Hermes-style calls, the most common.
pub fn tool_syntax(source: &str) -> ToolSyntax {
    if source.contains("<tool_call>") {
        ToolSyntax::Hermes
    } else if source.contains("[TOOL_CALLS]") {
        ToolSyntax::Mistral
    } else if source.contains("<|python_tag|>") || source.contains("<|eom_id|>") {
        ToolSyntax::Llama3
    } else {
        ToolSyntax::Hermes
    }
}

/// Renders `messages` (contents already placeholders) with `tools` and a generation prompt.
pub fn render(
    source: &str,
    messages: &[ChatMessage],
    tools: &[ToolDefinition],
    special: &SpecialTexts,
) -> Result<String, Error> {
    let mut env = Environment::new();
    // Hugging Face renders with these two on; templates are written for them.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", python_tojson);
    env.add_template("chat", source)?;
    let template = env.get_template("chat")?;
    let messages: Vec<serde_json::Value> = messages.iter().map(template_message).collect();
    let tools = if tools.is_empty() {
        Value::from(())
    } else {
        Value::from_serialize(tools)
    };
    template.render(minijinja::context! {
        messages => Value::from_serialize(&messages),
        tools => tools,
        add_generation_prompt => true,
        bos_token => special.bos,
        eos_token => special.eos,
    })
}

/// One message as templates expect it: `content` null on a turn that only called tools, each
/// call's `arguments` an object (templates write it with `tojson`), as Hugging Face passes them.
fn template_message(message: &ChatMessage) -> serde_json::Value {
    let content = if message.content.is_empty() && !message.tool_calls.is_empty() {
        serde_json::Value::Null
    } else {
        json!(message.content)
    };
    let mut value = json!({"role": message.role, "content": content});
    if !message.tool_calls.is_empty() {
        let calls: Vec<serde_json::Value> = (message.tool_calls.iter())
            .map(|call| {
                // Validated as a JSON object; an unparsable one stays text.
                let arguments = serde_json::from_str(&call.function.arguments)
                    .unwrap_or_else(|_| json!(call.function.arguments));
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": arguments},
                })
            })
            .collect();
        value["tool_calls"] = json!(calls);
    }
    if let Some(id) = &message.tool_call_id {
        value["tool_call_id"] = json!(id);
    }
    if let Some(name) = &message.name {
        value["name"] = json!(name);
    }
    value
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `tojson` as Hugging Face defines it (Python's `json.dumps` with `ensure_ascii=False`):
/// `", "` and `": "` separators, non-ASCII as is, no HTML escaping. Models were trained on that
/// text; minijinja's own filter writes compact, HTML-escaped JSON.
fn python_tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(indent) => {
            let indentation = " ".repeat(indent);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(indentation.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out, formatter,
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonFormatter,
        )),
    };
    written.map_err(|error| {
        Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON").with_source(error)
    })?;
    let text = String::from_utf8(out)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "JSON is not UTF-8"))?;
    Ok(Value::from_safe_string(text))
}

/// Python's default JSON separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use llorch_api::tools::{FunctionCall, ToolKind};
    use llorch_api::ToolCall;

    use super::*;

    /// The chat template of Qwen2.5 (Coder) Instruct, as its GGUF carries it.
    const QWEN25: &str = include_str!("testdata/qwen2.5-instruct.jinja");

    fn weather_tool() -> ToolDefinition {
        serde_json::from_value(json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]},
        }}))
        .unwrap()
    }

    #[test]
    fn qwen_renders_tools_calls_and_results_as_its_tokenizer_does() {
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            kind: ToolKind::Function,
            function: FunctionCall {
                name: "get_weather".into(),
                arguments: r#"{"city": "Paris"}"#.into(),
            },
        }];
        let mut result = ChatMessage::new("tool", "22 C, sunny");
        result.tool_call_id = Some("call_1".into());
        let messages = [ChatMessage::new("user", "Weather in Paris?"), call, result];
        let rendered = render(
            QWEN25,
            &messages,
            &[weather_tool()],
            &SpecialTexts::default(),
        )
        .unwrap();
        let expected = concat!(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
            "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n",
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
            r#"{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}}}"#,
            "\n</tools>\n\nFor each function call, return a json object with function name and arguments ",
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, ",
            "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\nWeather in Paris?<|im_end|>\n",
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n",
            "<|im_start|>user\n<tool_response>\n22 C, sunny\n</tool_response><|im_end|>\n",
            "<|im_start|>assistant\n",
        );
        assert_eq!(rendered, expected);
    }

    #[test]
    fn without_tools_qwen_takes_its_plain_branch() {
        let rendered = render(
            QWEN25,
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "hi"),
            ],
            &[],
            &SpecialTexts::default(),
        )
        .unwrap();
        assert_eq!(
            rendered,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_exceptions_and_special_texts_work() {
        let source = "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}\
                      {{ raise_exception('no system role') }}{% endif %}\
                      {{ m.content.strip() }}|{{ {'a': [1, 'é']} | tojson }}{% endfor %}";
        let special = SpecialTexts {
            bos: "<s>".into(),
            eos: "</s>".into(),
        };
        assert_eq!(
            render(source, &[ChatMessage::new("user", "  x  ")], &[], &special).unwrap(),
            r#"<s>x|{"a": [1, "é"]}"#
        );
        let error = render(source, &[ChatMessage::new("system", "x")], &[], &special).unwrap_err();
        assert!(error.to_string().contains("no system role"), "{error}");
    }

    #[test]
    fn the_call_syntax_is_read_from_the_template() {
        assert!(supports_tools(QWEN25));
        assert_eq!(tool_syntax(QWEN25), ToolSyntax::Hermes);
        assert_eq!(
            tool_syntax("{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]"),
            ToolSyntax::Mistral
        );
        assert_eq!(
            tool_syntax("{% if tools %}Environment: ipython<|python_tag|>{% endif %}"),
            ToolSyntax::Llama3
        );
        assert!(!supports_tools(
            "{% for m in messages %}{{ m.content }}{% endfor %}"
        ));
    }
}
