//! The one validator of the request every entry point shares: orcd's `/v2/tasks`, the requests
//! orcd's `/v1` translates, and the worker's `/execute` all go through [`validate_input`] and
//! [`validate_sampling`] with the same fixed limits, so a value one daemon accepts is never
//! refused by the next (or the reverse). A raw request becomes a `Valid*` type; nothing
//! unvalidated reaches a scheduler or an engine. Ids, JSON nesting and the JSON content type are
//! checked here too, for the same reason.
//!
//! Adding a sampling field: add it to [`SamplingParams`], check it in [`validate_sampling`] with
//! its own [`RequestError`] variant, and test the variant below.

use std::ops::Deref;

use crate::generation::{check_generation_options, GenerationOptionError};
use crate::tools::{check_message_tools, check_tool_params, ToolError};
use crate::{ChatMessage, ExecuteRequest, SamplingParams, TaskRequest, ToolParams, UnknownFields};

/// Ids are path segments and log fields: short and plain.
pub const MAX_ID_LEN: usize = 128;
/// How many stop strings one request may carry; each is searched for after every token.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string in bytes; a longer one would hold back that much streamed text.
pub const MAX_STOP_BYTES: usize = 256;
/// OpenAI's range for `temperature`, on every API: beyond 2 the distribution is noise.
pub const MAX_TEMPERATURE: f32 = 2.0;
/// A chat longer than this is abuse, not conversation; the byte limit applies as well.
pub const MAX_MESSAGES: usize = 1024;
/// Deepest `[`/`{` nesting a request body may have. Our bodies need 4 levels; the slack is for
/// extra fields clients send and we ignore. Checked before parsing, so a hostile body cannot
/// make serde recurse.
pub const MAX_JSON_DEPTH: usize = 32;
/// The roles a chat template knows (`tool`: a tool's result, answering an assistant's call).
pub const CHAT_ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

const PATH_ID_CHARS: &str = "ASCII letters, digits, `.`, `_` and `-`";
const MODEL_ID_CHARS: &str = "ASCII letters, digits, `.`, `_`, `-`, `/` and `:`";

/// The limits that depend on the deployment: orcd's flags, or the worker's context size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest `max_tokens`.
    pub max_tokens: u32,
    /// Largest prompt, or sum of message contents, in bytes.
    pub max_prompt_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_tokens: 4096,
            max_prompt_bytes: 256 * 1024,
        }
    }
}

impl RequestLimits {
    /// The largest request body accepted: room for a prompt at its limit even when JSON
    /// escapes make it up to six times longer on the wire, and never less than 2 MiB.
    pub fn max_body_bytes(&self) -> usize {
        (self
            .max_prompt_bytes
            .saturating_mul(6)
            .saturating_add(64 * 1024))
        .max(2 * 1024 * 1024)
    }
}

/// Why a request was refused; every message names the field in backticks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("`{field}` must not be empty")]
    EmptyId { field: &'static str },
    #[error("`{field}` is {len} bytes long; the limit is {limit}")]
    IdTooLong {
        field: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("`{field}` contains {character:?}; allowed are {allowed}")]
    IdCharacter {
        field: &'static str,
        character: char,
        allowed: &'static str,
    },
    #[error("give exactly one of `prompt` or `messages`, not both")]
    BothPromptAndMessages,
    #[error("give one of `prompt` or `messages`")]
    MissingInput,
    #[error("`prompt` must not be empty")]
    EmptyPrompt,
    #[error("`messages` must not be empty")]
    EmptyMessages,
    #[error("`parse_special` applies to `prompt` only: chat `messages` are always text")]
    ParseSpecialWithMessages,
    #[error(
        "`messages[{index}].role` is `{role}`; expected `system`, `user`, `assistant` or `tool`"
    )]
    MessageRole { index: usize, role: String },
    #[error("`messages[{index}]` contains a NUL character")]
    NulInMessage { index: usize },
    #[error("`messages` has {count} entries; the limit is {limit}")]
    TooManyMessages { count: usize, limit: usize },
    #[error("`{field}` is {bytes} bytes long; the limit is {limit} bytes")]
    PromptTooLarge {
        field: &'static str,
        bytes: usize,
        limit: usize,
    },
    #[error("`max_tokens` must be between 1 and {limit}, got {value}")]
    MaxTokens { value: u32, limit: u32 },
    #[error("`temperature` must be a number from 0 (greedy) to {limit}, got {value}")]
    Temperature { value: f32, limit: f32 },
    #[error("`top_p` must be in (0, 1], got {value}")]
    TopP { value: f32 },
    #[error("`stop` has {count} strings; the limit is {limit}")]
    TooManyStops { count: usize, limit: usize },
    #[error("`stop[{index}]` must not be empty")]
    EmptyStop { index: usize },
    #[error("`stop[{index}]` is {len} bytes long; the limit is {limit}")]
    StopTooLong {
        index: usize,
        len: usize,
        limit: usize,
    },
    #[error("the request body nests `[` and `{{` deeper than {limit} levels")]
    JsonTooDeep { limit: usize },
    /// Penalties, logit bias, log-probabilities and output constraints ([`crate::generation`]).
    #[error(transparent)]
    Generation(#[from] GenerationOptionError),
    /// Tools, the tool choice, and the tool fields of messages ([`crate::tools`]).
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("`tools` apply to chat `messages` only, not to a raw `prompt`")]
    ToolsWithPrompt,
    #[error(
        "`{name}` is not a field of this request; sampling fields such as `max_tokens` and \
         `temperature` go at the top level of the body, not nested"
    )]
    UnknownField { name: String },
}

/// What the model is asked: raw text, or a chat the worker renders with the model's template.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    Chat(Vec<ChatMessage>),
}

impl PromptInput {
    /// Back to the wire's `(prompt, messages)` pair.
    pub fn to_wire(&self) -> (Option<String>, Option<Vec<ChatMessage>>) {
        match self {
            PromptInput::Text(prompt) => (Some(prompt.clone()), None),
            PromptInput::Chat(messages) => (None, Some(messages.clone())),
        }
    }
}

/// [`SamplingParams`] that passed [`validate_sampling`]; read them through `Deref`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSampling(SamplingParams);

impl Deref for ValidSampling {
    type Target = SamplingParams;
    fn deref(&self) -> &SamplingParams {
        &self.0
    }
}

impl ValidSampling {
    pub fn into_inner(self) -> SamplingParams {
        self.0
    }
}

/// A `POST /v2/tasks` request (or a translated `/v1` one) that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTask {
    pub model: String,
    pub input: PromptInput,
    /// Only ever true with [`PromptInput::Text`].
    pub parse_special: bool,
    pub sampling: ValidSampling,
    /// Empty unless [`PromptInput::Chat`].
    pub tools: ToolParams,
    pub stream: bool,
}

impl ValidTask {
    /// The body orcd sends to the worker that runs this task.
    pub fn execute_request(&self, job_id: &str) -> ExecuteRequest {
        let (prompt, messages) = self.input.to_wire();
        ExecuteRequest {
            job_id: job_id.to_owned(),
            prompt,
            messages,
            parse_special: self.parse_special,
            sampling: (*self.sampling).clone(),
            tools: self.tools.clone(),
            unknown: UnknownFields::default(),
        }
    }
}

/// A `POST /execute` request that passed every check the worker can make without the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidExecute {
    pub job_id: String,
    pub input: PromptInput,
    /// Only ever true with [`PromptInput::Text`].
    pub parse_special: bool,
    pub sampling: ValidSampling,
    /// Empty unless [`PromptInput::Chat`].
    pub tools: ToolParams,
}

pub fn validate_task(
    request: TaskRequest,
    limits: &RequestLimits,
) -> Result<ValidTask, RequestError> {
    validate_model_id("model", &request.model)?;
    refuse_unknown_fields(&request.unknown)?;
    let input = validate_input(request.prompt, request.messages, limits)?;
    check_parse_special(request.parse_special, &input)?;
    let sampling = validate_sampling(request.sampling, limits)?;
    check_tools(&request.tools, &input, &sampling)?;
    Ok(ValidTask {
        model: request.model,
        input,
        parse_special: request.parse_special,
        sampling,
        tools: request.tools,
        stream: request.stream,
    })
}

pub fn validate_execute(
    request: ExecuteRequest,
    limits: &RequestLimits,
) -> Result<ValidExecute, RequestError> {
    validate_job_id(&request.job_id)?;
    refuse_unknown_fields(&request.unknown)?;
    let input = validate_input(request.prompt, request.messages, limits)?;
    check_parse_special(request.parse_special, &input)?;
    let sampling = validate_sampling(request.sampling, limits)?;
    check_tools(&request.tools, &input, &sampling)?;
    Ok(ValidExecute {
        job_id: request.job_id,
        input,
        parse_special: request.parse_special,
        sampling,
        tools: request.tools,
    })
}

/// Longest field name repeated back to a client: the name is the client's text.
const MAX_FIELD_NAME_CHARS: usize = 64;

fn refuse_unknown_fields(unknown: &UnknownFields) -> Result<(), RequestError> {
    match unknown.first() {
        None => Ok(()),
        // Backticks would confuse OpenAI's `param`, read from the first quoted name.
        Some(name) => Err(RequestError::UnknownField {
            name: name
                .chars()
                .take(MAX_FIELD_NAME_CHARS)
                .map(|c| if c == '`' { '\'' } else { c })
                .collect(),
        }),
    }
}

/// Tools belong to a chat; their choice may not fight another output constraint.
fn check_tools(
    tools: &ToolParams,
    input: &PromptInput,
    sampling: &SamplingParams,
) -> Result<(), RequestError> {
    if matches!(input, PromptInput::Text(_)) && *tools != ToolParams::default() {
        return Err(RequestError::ToolsWithPrompt);
    }
    check_tool_params(tools, sampling.constraint.is_some())?;
    Ok(())
}

/// Special-token parsing is something a raw prompt can ask for; a chat never can.
fn check_parse_special(parse_special: bool, input: &PromptInput) -> Result<(), RequestError> {
    match input {
        PromptInput::Chat(_) if parse_special => Err(RequestError::ParseSpecialWithMessages),
        _ => Ok(()),
    }
}

/// Exactly one of `prompt` and `messages`, non-empty, within the byte limit.
pub fn validate_input(
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    limits: &RequestLimits,
) -> Result<PromptInput, RequestError> {
    match (prompt, messages) {
        (Some(_), Some(_)) => Err(RequestError::BothPromptAndMessages),
        (None, None) => Err(RequestError::MissingInput),
        (Some(prompt), None) => {
            if prompt.is_empty() {
                return Err(RequestError::EmptyPrompt);
            }
            check_prompt_size("prompt", prompt.len(), limits)?;
            Ok(PromptInput::Text(prompt))
        }
        (None, Some(messages)) => {
            if messages.is_empty() {
                return Err(RequestError::EmptyMessages);
            }
            if messages.len() > MAX_MESSAGES {
                return Err(RequestError::TooManyMessages {
                    count: messages.len(),
                    limit: MAX_MESSAGES,
                });
            }
            for (index, message) in messages.iter().enumerate() {
                if !CHAT_ROLES.contains(&message.role.as_str()) {
                    return Err(RequestError::MessageRole {
                        index,
                        role: message.role.clone(),
                    });
                }
                // Templates are rendered through C strings.
                if message.content.contains('\0') {
                    return Err(RequestError::NulInMessage { index });
                }
                check_message_tools(index, message)?;
            }
            let bytes = messages
                .iter()
                .map(|message| {
                    let calls: usize = (message.tool_calls.iter())
                        .map(|call| call.function.name.len() + call.function.arguments.len())
                        .sum();
                    message.content.len() + calls
                })
                .sum();
            check_prompt_size("messages", bytes, limits)?;
            Ok(PromptInput::Chat(messages))
        }
    }
}

fn check_prompt_size(
    field: &'static str,
    bytes: usize,
    limits: &RequestLimits,
) -> Result<(), RequestError> {
    if bytes > limits.max_prompt_bytes {
        return Err(RequestError::PromptTooLarge {
            field,
            bytes,
            limit: limits.max_prompt_bytes,
        });
    }
    Ok(())
}

/// Every sampling field in its range.
pub fn validate_sampling(
    sampling: SamplingParams,
    limits: &RequestLimits,
) -> Result<ValidSampling, RequestError> {
    if !(1..=limits.max_tokens).contains(&sampling.max_tokens) {
        return Err(RequestError::MaxTokens {
            value: sampling.max_tokens,
            limit: limits.max_tokens,
        });
    }
    // A range test rather than `< 0 || > max` so that NaN is refused too.
    if !(0.0..=MAX_TEMPERATURE).contains(&sampling.temperature) {
        return Err(RequestError::Temperature {
            value: sampling.temperature,
            limit: MAX_TEMPERATURE,
        });
    }
    if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
        return Err(RequestError::TopP {
            value: sampling.top_p,
        });
    }
    if sampling.stop.len() > MAX_STOP_STRINGS {
        return Err(RequestError::TooManyStops {
            count: sampling.stop.len(),
            limit: MAX_STOP_STRINGS,
        });
    }
    for (index, stop) in sampling.stop.iter().enumerate() {
        if stop.is_empty() {
            return Err(RequestError::EmptyStop { index });
        }
        if stop.len() > MAX_STOP_BYTES {
            return Err(RequestError::StopTooLong {
                index,
                len: stop.len(),
                limit: MAX_STOP_BYTES,
            });
        }
    }
    check_generation_options(&sampling)?;
    Ok(ValidSampling(sampling))
}

/// Worker ids appear in URL paths (`/workers/{id}`), so they are plain path segments.
pub fn validate_worker_id(id: &str) -> Result<(), RequestError> {
    validate_id("worker_id", id, is_path_id_char, PATH_ID_CHARS)
}

/// Job ids are uuids made by orcd; they appear in paths (`/v2/tasks/{id}`) and in every log line
/// about a job, so anything else is refused before lookup or logging.
pub fn validate_job_id(id: &str) -> Result<(), RequestError> {
    validate_id("job_id", id, is_path_id_char, PATH_ID_CHARS)
}

/// Model ids are catalog ids or GGUF file stems; `/` and `:` admit `org/name` and `name:tag`.
pub fn validate_model_id(field: &'static str, id: &str) -> Result<(), RequestError> {
    validate_id(
        field,
        id,
        |c| is_path_id_char(c) || matches!(c, '/' | ':'),
        MODEL_ID_CHARS,
    )
}

fn is_path_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn validate_id(
    field: &'static str,
    id: &str,
    allowed_char: impl Fn(char) -> bool,
    allowed: &'static str,
) -> Result<(), RequestError> {
    if id.is_empty() {
        return Err(RequestError::EmptyId { field });
    }
    if id.len() > MAX_ID_LEN {
        return Err(RequestError::IdTooLong {
            field,
            len: id.len(),
            limit: MAX_ID_LEN,
        });
    }
    if let Some(character) = id.chars().find(|&c| !allowed_char(c)) {
        return Err(RequestError::IdCharacter {
            field,
            character,
            allowed,
        });
    }
    Ok(())
}

/// Whether a `content-type` header value names JSON: `application/json` or
/// `application/<something>+json`, parameters allowed. orcd and the worker both require it on
/// every JSON body: a cross-site form can POST `text/plain` to a loopback daemon without the
/// browser asking first, but not `application/json`.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Refuses a body nested deeper than `limit`, in one pass over its bytes. Brackets inside
/// strings do not count; whether the body is valid JSON is left to serde.
pub fn check_json_depth(body: &[u8], limit: usize) -> Result<(), RequestError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(RequestError::JsonTooDeep { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: serde_json::Value) -> Result<ValidTask, RequestError> {
        let request: TaskRequest = serde_json::from_value(json).expect("test request parses");
        validate_task(request, &RequestLimits::default())
    }

    /// A prompt task with `extra` fields merged in.
    fn task_with(extra: serde_json::Value) -> Result<ValidTask, RequestError> {
        let mut value = serde_json::json!({"model": "m", "prompt": "x"});
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        task(value)
    }

    fn execute(json: serde_json::Value) -> Result<ValidExecute, RequestError> {
        let request: ExecuteRequest = serde_json::from_value(json).expect("test request parses");
        validate_execute(request, &RequestLimits::default())
    }

    #[test]
    fn accepts_a_prompt_task_with_default_sampling() {
        let valid = task(serde_json::json!({"model": "gemma3-270m", "prompt": "hi"})).unwrap();
        assert_eq!(valid.input, PromptInput::Text("hi".into()));
        assert_eq!(*valid.sampling, SamplingParams::default());
        assert!(valid.stream);
        let execute = valid.execute_request("job-1");
        assert_eq!(execute.prompt.as_deref(), Some("hi"));
        assert_eq!(execute.messages, None);
        assert_eq!(execute.sampling, SamplingParams::default());
    }

    #[test]
    fn a_field_no_part_of_the_request_knows_is_refused_by_name() {
        // The mistake that prompted this: sampling nested under a key of its own fell back
        // to the default length without a word.
        let nested = task_with(serde_json::json!({"sampling": {"max_tokens": 4}}));
        assert_eq!(
            nested,
            Err(RequestError::UnknownField {
                name: "sampling".into()
            })
        );
        assert!(nested
            .unwrap_err()
            .to_string()
            .starts_with("`sampling` is not a field"));
        let typo = execute(serde_json::json!({"job_id": "j", "prompt": "x", "max_token": 4}));
        assert_eq!(
            typo,
            Err(RequestError::UnknownField {
                name: "max_token".into()
            })
        );
        let hostile = "`".repeat(1000);
        let Err(RequestError::UnknownField { name }) = task_with(serde_json::json!({&hostile: 1}))
        else {
            panic!("a long unknown field is refused");
        };
        assert_eq!(name, "'".repeat(MAX_FIELD_NAME_CHARS));
    }

    #[test]
    fn every_field_a_request_serializes_is_one_it_knows() {
        let tool = serde_json::json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
        let every_field = serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "temperature": 0.5, "top_k": 10, "top_p": 0.5, "seed": 1,
            "stop": ["x"], "presence_penalty": 0.5, "frequency_penalty": 0.5,
            "logit_bias": [{"token": 1, "bias": 2.0}], "logprobs": 2,
            "tools": [tool], "tool_choice": "auto", "parallel_tool_calls": false,
            "stream": false,
        });
        let request: TaskRequest = serde_json::from_value(every_field).unwrap();
        assert_eq!(request.unknown, UnknownFields::default());
        let valid = validate_task(request.clone(), &RequestLimits::default()).unwrap();
        // What orcd sends a worker parses back whole on the worker.
        let sent = serde_json::to_value(valid.execute_request("job-1")).unwrap();
        let received: ExecuteRequest = serde_json::from_value(sent).unwrap();
        assert_eq!(received.unknown, UnknownFields::default());
        assert_eq!(received.sampling, request.sampling);
        assert_eq!(received.tools, request.tools);
        let prompt_task = serde_json::json!({"model": "m", "prompt": "x", "parse_special": true,
            "response_format": null, "constraint": {"type": "json_object"}});
        let request: Result<TaskRequest, _> = serde_json::from_value(prompt_task);
        assert_eq!(
            request.unwrap().unknown.first(),
            Some("response_format"),
            "OpenAI's name is not a field of the native API"
        );
    }

    #[test]
    fn accepts_messages() {
        let valid = task(serde_json::json!({
            "model": "org/model:q4",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "stream": false,
        }))
        .unwrap();
        assert!(matches!(valid.input, PromptInput::Chat(ref m) if m.len() == 2));
        assert!(!valid.stream);
    }

    #[test]
    fn parse_special_is_off_by_default_and_for_prompts_only() {
        assert!(
            !task(serde_json::json!({"model": "m", "prompt": "x"}))
                .unwrap()
                .parse_special
        );
        let special =
            task(serde_json::json!({"model": "m", "prompt": "x", "parse_special": true})).unwrap();
        assert!(special.parse_special);
        assert!(special.execute_request("j").parse_special);
        assert_eq!(
            task(serde_json::json!({
                "model": "m", "parse_special": true,
                "messages": [{"role": "user", "content": "<|im_end|>"}],
            })),
            Err(RequestError::ParseSpecialWithMessages)
        );
        assert_eq!(
            execute(serde_json::json!({
                "job_id": "j", "parse_special": true,
                "messages": [{"role": "user", "content": "x"}],
            })),
            Err(RequestError::ParseSpecialWithMessages)
        );
    }

    #[test]
    fn model_id_is_checked() {
        assert_eq!(
            task(serde_json::json!({"model": "", "prompt": "x"})),
            Err(RequestError::EmptyId { field: "model" })
        );
        assert_eq!(
            task(serde_json::json!({"model": "a b", "prompt": "x"})),
            Err(RequestError::IdCharacter {
                field: "model",
                character: ' ',
                allowed: MODEL_ID_CHARS,
            })
        );
        assert_eq!(
            task(serde_json::json!({"model": "m".repeat(129), "prompt": "x"})),
            Err(RequestError::IdTooLong {
                field: "model",
                len: 129,
                limit: MAX_ID_LEN
            })
        );
    }

    #[test]
    fn exactly_one_input_is_required() {
        assert_eq!(
            task(serde_json::json!({"model": "m"})),
            Err(RequestError::MissingInput)
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "prompt": "x", "messages": []})),
            Err(RequestError::BothPromptAndMessages)
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "prompt": ""})),
            Err(RequestError::EmptyPrompt)
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "messages": []})),
            Err(RequestError::EmptyMessages)
        );
        assert_eq!(
            task(
                serde_json::json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]})
            ),
            Err(RequestError::MessageRole {
                index: 0,
                role: "robot".into()
            })
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "messages": [
                {"role": "user", "content": "fine"}, {"role": "user", "content": "a\u{0}b"}
            ]})),
            Err(RequestError::NulInMessage { index: 1 })
        );
    }

    #[test]
    fn a_tool_conversation_passes_and_its_tools_reach_the_worker() {
        let weather = serde_json::json!([{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object"},
        }}]);
        let valid = task(serde_json::json!({"model": "m", "tools": weather, "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "22 C"},
        ]}))
        .unwrap();
        let PromptInput::Chat(messages) = &valid.input else {
            panic!("a chat: {:?}", valid.input)
        };
        assert_eq!(messages[1].content, "");
        assert_eq!(messages[1].tool_calls[0].function.name, "get_weather");
        assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
        let execute = valid.execute_request("j");
        assert_eq!(execute.tools.tools.len(), 1);
        // On the wire to the worker and back, unchanged.
        let wire: ExecuteRequest =
            serde_json::from_value(serde_json::to_value(&execute).unwrap()).unwrap();
        assert_eq!(wire, execute);
        // Tools belong to a chat; a tool result names its call.
        assert_eq!(
            task_with(serde_json::json!({ "tools": weather })),
            Err(RequestError::ToolsWithPrompt)
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})),
            Err(RequestError::Tool(ToolError::MissingToolCallId {
                index: 0
            }))
        );
    }

    #[test]
    fn prompt_size_is_limited() {
        let limits = RequestLimits {
            max_tokens: 16,
            max_prompt_bytes: 4,
        };
        let request: TaskRequest = serde_json::from_value(
            serde_json::json!({"model": "m", "prompt": "12345", "max_tokens": 1}),
        )
        .unwrap();
        assert_eq!(
            validate_task(request, &limits),
            Err(RequestError::PromptTooLarge {
                field: "prompt",
                bytes: 5,
                limit: 4
            })
        );
        let request: TaskRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "max_tokens": 1,
            "messages": [{"role": "user", "content": "123"}, {"role": "user", "content": "45"}],
        }))
        .unwrap();
        assert_eq!(
            validate_task(request, &limits),
            Err(RequestError::PromptTooLarge {
                field: "messages",
                bytes: 5,
                limit: 4
            })
        );
    }

    #[test]
    fn too_many_messages_are_refused() {
        let message = serde_json::json!({"role": "user", "content": "x"});
        let messages = vec![message; MAX_MESSAGES + 1];
        assert_eq!(
            task(serde_json::json!({"model": "m", "messages": messages})),
            Err(RequestError::TooManyMessages {
                count: MAX_MESSAGES + 1,
                limit: MAX_MESSAGES
            })
        );
    }

    #[test]
    fn max_tokens_is_bounded_by_the_limit() {
        assert_eq!(
            task_with(serde_json::json!({"max_tokens": 0})),
            Err(RequestError::MaxTokens {
                value: 0,
                limit: 4096
            })
        );
        assert_eq!(
            task_with(serde_json::json!({"max_tokens": 4097})),
            Err(RequestError::MaxTokens {
                value: 4097,
                limit: 4096
            })
        );
        assert!(task_with(serde_json::json!({"max_tokens": 4096})).is_ok());
    }

    #[test]
    fn temperature_is_between_zero_and_two_on_every_api() {
        for value in [-0.5, 2.01, 1e30] {
            assert_eq!(
                task_with(serde_json::json!({ "temperature": value })),
                Err(RequestError::Temperature {
                    value,
                    limit: MAX_TEMPERATURE
                }),
                "{value}"
            );
        }
        for value in [0.0, 0.7, 2.0] {
            assert!(task_with(serde_json::json!({ "temperature": value })).is_ok());
        }
        let nan = SamplingParams {
            temperature: f32::NAN,
            ..SamplingParams::default()
        };
        assert!(matches!(
            validate_sampling(nan, &RequestLimits::default()),
            Err(RequestError::Temperature { .. })
        ));
        // The worker's entry point applies the same rule.
        assert_eq!(
            execute(serde_json::json!({"job_id": "j", "prompt": "x", "temperature": 1e30})),
            Err(RequestError::Temperature {
                value: 1e30,
                limit: MAX_TEMPERATURE
            })
        );
    }

    #[test]
    fn top_p_is_in_zero_one() {
        assert_eq!(
            task_with(serde_json::json!({"top_p": 0.0})),
            Err(RequestError::TopP { value: 0.0 })
        );
        assert_eq!(
            task_with(serde_json::json!({"top_p": 1.5})),
            Err(RequestError::TopP { value: 1.5 })
        );
        assert!(task_with(serde_json::json!({"top_p": 1.0})).is_ok());
    }

    #[test]
    fn stop_strings_are_bounded_and_non_empty() {
        let at_limit = vec!["x".repeat(MAX_STOP_BYTES); MAX_STOP_STRINGS];
        assert!(task_with(serde_json::json!({ "stop": at_limit })).is_ok());
        assert_eq!(
            task_with(serde_json::json!({ "stop": vec!["a"; MAX_STOP_STRINGS + 1] })),
            Err(RequestError::TooManyStops {
                count: MAX_STOP_STRINGS + 1,
                limit: MAX_STOP_STRINGS
            })
        );
        assert_eq!(
            task_with(serde_json::json!({"stop": ["a", ""]})),
            Err(RequestError::EmptyStop { index: 1 })
        );
        assert_eq!(
            task_with(serde_json::json!({"stop": ["x".repeat(MAX_STOP_BYTES + 1)]})),
            Err(RequestError::StopTooLong {
                index: 0,
                len: MAX_STOP_BYTES + 1,
                limit: MAX_STOP_BYTES
            })
        );
    }

    #[test]
    fn execute_requests_get_the_same_checks_and_a_plain_job_id() {
        let valid = execute(serde_json::json!({"job_id": "3f2a-9c1e", "prompt": "x"})).unwrap();
        assert_eq!(valid.job_id, "3f2a-9c1e");
        assert_eq!(
            execute(serde_json::json!({"job_id": "j\n2025 INFO forged", "prompt": "x"})),
            Err(RequestError::IdCharacter {
                field: "job_id",
                character: '\n',
                allowed: PATH_ID_CHARS,
            })
        );
        assert_eq!(
            execute(serde_json::json!({"job_id": "", "prompt": "x"})),
            Err(RequestError::EmptyId { field: "job_id" })
        );
        assert_eq!(
            execute(serde_json::json!({"job_id": "j", "prompt": "x", "stop": [""]})),
            Err(RequestError::EmptyStop { index: 0 })
        );
    }

    #[test]
    fn path_ids_are_plain_segments() {
        assert!(validate_job_id("3f2a9c1e-0b6d-4e8f-9a7b-1c2d3e4f5a6b").is_ok());
        assert_eq!(
            validate_job_id("../etc"),
            Err(RequestError::IdCharacter {
                field: "job_id",
                character: '/',
                allowed: PATH_ID_CHARS,
            })
        );
        assert!(matches!(
            validate_worker_id(&"w".repeat(MAX_ID_LEN + 1)),
            Err(RequestError::IdTooLong { .. })
        ));
    }

    #[test]
    fn error_messages_name_the_field_and_the_limit() {
        assert_eq!(
            RequestError::MaxTokens {
                value: 0,
                limit: 4096
            }
            .to_string(),
            "`max_tokens` must be between 1 and 4096, got 0"
        );
        assert_eq!(
            RequestError::Temperature {
                value: 3.0,
                limit: 2.0
            }
            .to_string(),
            "`temperature` must be a number from 0 (greedy) to 2, got 3"
        );
    }

    #[test]
    fn json_content_types_are_recognised() {
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(is_json_content_type(Some(json)), "{json}");
        }
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert!(!is_json_content_type(Some(other)), "{other}");
        }
        assert!(!is_json_content_type(None));
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings_only() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(check_json_depth(nested(4).as_bytes(), 4), Ok(()));
        assert_eq!(
            check_json_depth(nested(5).as_bytes(), 4),
            Err(RequestError::JsonTooDeep { limit: 4 })
        );
        let in_string = format!(r#"{{"prompt": "{}", "x": "\"[["}}"#, "[".repeat(100));
        assert_eq!(check_json_depth(in_string.as_bytes(), 1), Ok(()));
        // Unbalanced or invalid bodies pass here; serde refuses them next.
        assert_eq!(check_json_depth(b"]]]}}{", 1), Ok(()));
        assert_eq!(
            RequestError::JsonTooDeep { limit: 32 }.to_string(),
            "the request body nests `[` and `{` deeper than 32 levels"
        );
    }
}
