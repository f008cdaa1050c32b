//! Request validation: a raw [`TaskRequest`] becomes a [`ValidTask`], a raw
//! [`WorkerRegistration`] is checked before it enters the registry, a JSON body's nesting is
//! bounded before serde walks it, and [`log_safe`] defuses user text before it reaches a log.
//! Nothing unvalidated reaches the scheduler or a worker.

use std::borrow::Cow;

use llorch_api::{ChatMessage, ExecuteRequest, SamplingParams, TaskRequest, WorkerRegistration};

/// Ids are path segments and log fields: short and plain.
pub const MAX_ID_LEN: usize = 128;
pub const MAX_STOP_STRINGS: usize = 4;
pub const MAX_STOP_LEN: usize = 64;
pub const MAX_WORKER_SLOTS: u32 = 1024;
/// A chat longer than this is abuse, not conversation; the byte limit applies as well.
pub const MAX_MESSAGES: usize = 1024;
/// Deepest `[`/`{` nesting a request body may have. Our bodies need 4 levels; the slack is for
/// extra fields clients send and we ignore. Checked before parsing, so a hostile body cannot
/// make serde recurse.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest user-provided text written to a log line, in characters.
pub const MAX_LOGGED_CHARS: usize = 200;
const CHAT_ROLES: [&str; 3] = ["system", "user", "assistant"];

/// The limits a task must respect; the size limits come from orcd's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLimits {
    pub max_tokens: u32,
    pub max_prompt_bytes: usize,
}

impl Default for TaskLimits {
    fn default() -> Self {
        TaskLimits {
            max_tokens: 4096,
            max_prompt_bytes: 256 * 1024,
        }
    }
}

impl TaskLimits {
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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
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
    #[error("`messages[{index}].role` is `{role}`; expected `system`, `user` or `assistant`")]
    MessageRole { index: usize, role: String },
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
    #[error("`temperature` must be a finite number >= 0, got {value}")]
    Temperature { value: f32 },
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
    #[error("`url` must be http://host:port or https://host:port, got `{url}`")]
    WorkerUrl { url: String },
    #[error("`url` {url} is a loopback address, but the worker registered from {peer}: orcd would reach itself there, not the worker\nhint: start the worker with `--advertise-url http://ADDRESS:PORT` naming an address of its host that orcd can reach (`cargo xtask pool worker spawn --host H` advertises the host profile's address; override it with `--advertise-host ADDRESS`)")]
    LoopbackFromRemote { url: String, peer: std::net::IpAddr },
    #[error("`slots` must be between 1 and {limit}, got {value}")]
    Slots { value: u32, limit: u32 },
    #[error("`ctx_size` must be at least 1")]
    CtxSize,
    #[error("the request body nests `[` and `{{` deeper than {limit} levels")]
    JsonTooDeep { limit: usize },
    #[error("`seed` must be between 0 and {}, got {value}", u32::MAX)]
    Seed { value: i64 },
    #[error("`n` must be 1: orcd generates one choice per request, got {value}")]
    ChoiceCount { value: u64 },
    #[error("`prompt` must be one string (or a list holding one string), got {count} prompts")]
    PromptCount { count: usize },
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("`{field}` is not supported by orcd{detail}")]
    Unsupported { field: String, detail: &'static str },
    #[error("`{field}` must be at most {limit}, got {value}")]
    AboveMaximum {
        field: &'static str,
        value: f32,
        limit: f32,
    },
}

/// What the model is asked: raw text, or a chat the worker renders with the model's template.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskInput {
    Prompt(String),
    Messages(Vec<ChatMessage>),
}

/// A task that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTask {
    pub model: String,
    pub input: TaskInput,
    pub sampling: SamplingParams,
    pub stream: bool,
}

impl ValidTask {
    /// The body orcd sends to the worker that runs this task.
    pub fn execute_request(&self, job_id: &str) -> ExecuteRequest {
        let (prompt, messages) = match &self.input {
            TaskInput::Prompt(prompt) => (Some(prompt.clone()), None),
            TaskInput::Messages(messages) => (None, Some(messages.clone())),
        };
        ExecuteRequest {
            job_id: job_id.to_owned(),
            prompt,
            messages,
            sampling: self.sampling.clone(),
        }
    }
}

pub fn validate_task(
    request: TaskRequest,
    limits: &TaskLimits,
) -> Result<ValidTask, ValidationError> {
    validate_model_id("model", &request.model)?;
    let input = match (request.prompt, request.messages) {
        (Some(_), Some(_)) => return Err(ValidationError::BothPromptAndMessages),
        (None, None) => return Err(ValidationError::MissingInput),
        (Some(prompt), None) => {
            if prompt.is_empty() {
                return Err(ValidationError::EmptyPrompt);
            }
            check_prompt_size("prompt", prompt.len(), limits)?;
            TaskInput::Prompt(prompt)
        }
        (None, Some(messages)) => {
            if messages.is_empty() {
                return Err(ValidationError::EmptyMessages);
            }
            if messages.len() > MAX_MESSAGES {
                return Err(ValidationError::TooManyMessages {
                    count: messages.len(),
                    limit: MAX_MESSAGES,
                });
            }
            for (index, message) in messages.iter().enumerate() {
                if !CHAT_ROLES.contains(&message.role.as_str()) {
                    return Err(ValidationError::MessageRole {
                        index,
                        role: message.role.clone(),
                    });
                }
            }
            let bytes = messages.iter().map(|message| message.content.len()).sum();
            check_prompt_size("messages", bytes, limits)?;
            TaskInput::Messages(messages)
        }
    };
    validate_sampling(&request.sampling, limits)?;
    Ok(ValidTask {
        model: request.model,
        input,
        sampling: request.sampling,
        stream: request.stream,
    })
}

fn check_prompt_size(
    field: &'static str,
    bytes: usize,
    limits: &TaskLimits,
) -> Result<(), ValidationError> {
    if bytes > limits.max_prompt_bytes {
        return Err(ValidationError::PromptTooLarge {
            field,
            bytes,
            limit: limits.max_prompt_bytes,
        });
    }
    Ok(())
}

fn validate_sampling(
    sampling: &SamplingParams,
    limits: &TaskLimits,
) -> Result<(), ValidationError> {
    if !(1..=limits.max_tokens).contains(&sampling.max_tokens) {
        return Err(ValidationError::MaxTokens {
            value: sampling.max_tokens,
            limit: limits.max_tokens,
        });
    }
    // `!(x >= 0)` rather than `x < 0` so that NaN is refused too.
    if !(sampling.temperature >= 0.0 && sampling.temperature.is_finite()) {
        return Err(ValidationError::Temperature {
            value: sampling.temperature,
        });
    }
    if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
        return Err(ValidationError::TopP {
            value: sampling.top_p,
        });
    }
    if sampling.stop.len() > MAX_STOP_STRINGS {
        return Err(ValidationError::TooManyStops {
            count: sampling.stop.len(),
            limit: MAX_STOP_STRINGS,
        });
    }
    for (index, stop) in sampling.stop.iter().enumerate() {
        if stop.is_empty() {
            return Err(ValidationError::EmptyStop { index });
        }
        if stop.len() > MAX_STOP_LEN {
            return Err(ValidationError::StopTooLong {
                index,
                len: stop.len(),
                limit: MAX_STOP_LEN,
            });
        }
    }
    Ok(())
}

/// Checks a registration and returns it with the url's trailing slash removed, so that
/// `{url}/execute` never has a double slash.
pub fn validate_registration(
    mut registration: WorkerRegistration,
) -> Result<WorkerRegistration, ValidationError> {
    validate_worker_id(&registration.worker_id)?;
    validate_model_id("model", &registration.model)?;
    registration.url = validate_worker_url(&registration.url)?;
    if !(1..=MAX_WORKER_SLOTS).contains(&registration.slots) {
        return Err(ValidationError::Slots {
            value: registration.slots,
            limit: MAX_WORKER_SLOTS,
        });
    }
    if registration.ctx_size == 0 {
        return Err(ValidationError::CtxSize);
    }
    Ok(registration)
}

/// A worker on another machine cannot be reached at a loopback URL: orcd would connect to
/// itself. Refused at registration, so the operator learns it then and not from the first
/// job failing with "connection refused". `peer` is the registration's source address.
pub fn check_advertised_url(
    url: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<(), ValidationError> {
    let Some(peer) = peer.map(|peer| peer.to_canonical()) else {
        return Ok(());
    };
    if peer.is_loopback() {
        return Ok(());
    }
    let loopback = reqwest::Url::parse(url).ok().is_some_and(|url| {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_canonical().is_loopback() || ip.is_unspecified(),
            Err(_) => {
                let host = host.to_ascii_lowercase();
                host == "localhost" || host.ends_with(".localhost")
            }
        }
    });
    if loopback {
        return Err(ValidationError::LoopbackFromRemote {
            url: url.to_owned(),
            peer,
        });
    }
    Ok(())
}

/// Worker ids appear in URL paths (`/workers/{id}`), so they are plain path segments.
pub fn validate_worker_id(id: &str) -> Result<(), ValidationError> {
    validate_path_id("worker_id", id)
}

/// Job ids are uuids made by orcd; anything else in `/v2/tasks/{id}` is refused before lookup.
pub fn validate_job_id(id: &str) -> Result<(), ValidationError> {
    validate_path_id("job_id", id)
}

fn validate_path_id(field: &'static str, id: &str) -> Result<(), ValidationError> {
    validate_id(
        field,
        id,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
        "ASCII letters, digits, `.`, `_` and `-`",
    )
}

/// Model ids are catalog ids or GGUF file stems; `/` and `:` admit `org/name` and `name:tag`.
fn validate_model_id(field: &'static str, id: &str) -> Result<(), ValidationError> {
    validate_id(
        field,
        id,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'),
        "ASCII letters, digits, `.`, `_`, `-`, `/` and `:`",
    )
}

fn validate_id(
    field: &'static str,
    id: &str,
    allowed_char: impl Fn(char) -> bool,
    allowed: &'static str,
) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(ValidationError::EmptyId { field });
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::IdTooLong {
            field,
            len: id.len(),
            limit: MAX_ID_LEN,
        });
    }
    if let Some(character) = id.chars().find(|&c| !allowed_char(c)) {
        return Err(ValidationError::IdCharacter {
            field,
            character,
            allowed,
        });
    }
    Ok(())
}

/// Accepts `http(s)://host:port` with an explicit port and nothing after it but an optional `/`.
fn validate_worker_url(raw: &str) -> Result<String, ValidationError> {
    let invalid = || ValidationError::WorkerUrl {
        url: raw.to_owned(),
    };
    let url = reqwest::Url::parse(raw).map_err(|_| invalid())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    // `Url::port` hides a port equal to the scheme's default, so look at the text itself.
    let authority = raw
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    let explicit_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    if !plain || !explicit_port {
        return Err(invalid());
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

/// Refuses a body nested deeper than `limit`, in one pass over its bytes. Brackets inside
/// strings do not count; whether the body is valid JSON is left to serde.
pub fn check_json_depth(body: &[u8], limit: usize) -> Result<(), ValidationError> {
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
                    return Err(ValidationError::JsonTooDeep { limit });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// User-provided text as it may appear in a log line: control characters (newlines, terminal
/// escape sequences), Unicode line separators and bidirectional overrides are escaped as
/// `\u{..}`, and text beyond [`MAX_LOGGED_CHARS`] is cut, so a request can neither forge log
/// lines nor hide text from whoever reads them.
pub fn log_safe(text: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let long = text.chars().nth(MAX_LOGGED_CHARS).is_some();
    if !long && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len().min(MAX_LOGGED_CHARS * 2));
    for c in text.chars().take(MAX_LOGGED_CHARS) {
        if needs_escape(c) {
            safe.push_str(&c.escape_unicode().to_string());
        } else {
            safe.push(c);
        }
    }
    if long {
        let kept: usize = text
            .chars()
            .take(MAX_LOGGED_CHARS)
            .map(char::len_utf8)
            .sum();
        safe.push_str(&format!("... ({} more bytes)", text.len() - kept));
    }
    Cow::Owned(safe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llorch_api::Backend;

    fn task(json: serde_json::Value) -> Result<ValidTask, ValidationError> {
        let request: TaskRequest = serde_json::from_value(json).expect("test request parses");
        validate_task(request, &TaskLimits::default())
    }

    fn registration(url: &str) -> WorkerRegistration {
        WorkerRegistration {
            worker_id: "w-1".into(),
            url: url.into(),
            model: "gemma3-270m".into(),
            backend: Backend::Cpu,
            slots: 4,
            ctx_size: 4096,
        }
    }

    #[test]
    fn accepts_a_prompt_task_with_default_sampling() {
        let valid = task(serde_json::json!({"model": "gemma3-270m", "prompt": "hi"})).unwrap();
        assert_eq!(valid.input, TaskInput::Prompt("hi".into()));
        assert_eq!(valid.sampling, SamplingParams::default());
        assert!(valid.stream);
        let execute = valid.execute_request("job-1");
        assert_eq!(execute.prompt.as_deref(), Some("hi"));
        assert_eq!(execute.messages, None);
    }

    #[test]
    fn accepts_messages() {
        let valid = task(serde_json::json!({
            "model": "org/model:q4",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "stream": false,
        }))
        .unwrap();
        assert!(matches!(valid.input, TaskInput::Messages(ref m) if m.len() == 2));
        assert!(!valid.stream);
    }

    #[test]
    fn model_id_is_checked() {
        assert_eq!(
            task(serde_json::json!({"model": "", "prompt": "x"})),
            Err(ValidationError::EmptyId { field: "model" })
        );
        assert_eq!(
            task(serde_json::json!({"model": "a b", "prompt": "x"})),
            Err(ValidationError::IdCharacter {
                field: "model",
                character: ' ',
                allowed: "ASCII letters, digits, `.`, `_`, `-`, `/` and `:`",
            })
        );
        assert_eq!(
            task(serde_json::json!({"model": "m".repeat(129), "prompt": "x"})),
            Err(ValidationError::IdTooLong {
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
            Err(ValidationError::MissingInput)
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "prompt": "x", "messages": []})),
            Err(ValidationError::BothPromptAndMessages)
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "prompt": ""})),
            Err(ValidationError::EmptyPrompt)
        );
        assert_eq!(
            task(serde_json::json!({"model": "m", "messages": []})),
            Err(ValidationError::EmptyMessages)
        );
        assert_eq!(
            task(
                serde_json::json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]})
            ),
            Err(ValidationError::MessageRole {
                index: 0,
                role: "robot".into()
            })
        );
    }

    #[test]
    fn prompt_size_is_limited() {
        let limits = TaskLimits {
            max_tokens: 16,
            max_prompt_bytes: 4,
        };
        let request: TaskRequest = serde_json::from_value(
            serde_json::json!({"model": "m", "prompt": "12345", "max_tokens": 1}),
        )
        .unwrap();
        assert_eq!(
            validate_task(request, &limits),
            Err(ValidationError::PromptTooLarge {
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
            Err(ValidationError::PromptTooLarge {
                field: "messages",
                bytes: 5,
                limit: 4
            })
        );
    }

    #[test]
    fn sampling_ranges_are_checked() {
        let base = |extra: serde_json::Value| {
            let mut value = serde_json::json!({"model": "m", "prompt": "x"});
            value
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            task(value)
        };
        assert_eq!(
            base(serde_json::json!({"max_tokens": 0})),
            Err(ValidationError::MaxTokens {
                value: 0,
                limit: 4096
            })
        );
        assert_eq!(
            base(serde_json::json!({"max_tokens": 4097})),
            Err(ValidationError::MaxTokens {
                value: 4097,
                limit: 4096
            })
        );
        assert!(base(serde_json::json!({"max_tokens": 4096})).is_ok());
        assert_eq!(
            base(serde_json::json!({"temperature": -0.5})),
            Err(ValidationError::Temperature { value: -0.5 })
        );
        assert!(base(serde_json::json!({"temperature": 0.0})).is_ok());
        assert_eq!(
            base(serde_json::json!({"top_p": 0.0})),
            Err(ValidationError::TopP { value: 0.0 })
        );
        assert_eq!(
            base(serde_json::json!({"top_p": 1.5})),
            Err(ValidationError::TopP { value: 1.5 })
        );
        assert!(base(serde_json::json!({"top_p": 1.0})).is_ok());
        assert_eq!(
            base(serde_json::json!({"stop": ["a", "b", "c", "d", "e"]})),
            Err(ValidationError::TooManyStops { count: 5, limit: 4 })
        );
        assert_eq!(
            base(serde_json::json!({"stop": ["a", ""]})),
            Err(ValidationError::EmptyStop { index: 1 })
        );
        assert_eq!(
            base(serde_json::json!({"stop": ["x".repeat(65)]})),
            Err(ValidationError::StopTooLong {
                index: 0,
                len: 65,
                limit: 64
            })
        );
    }

    #[test]
    fn nan_temperature_is_refused() {
        let mut request: TaskRequest =
            serde_json::from_value(serde_json::json!({"model": "m", "prompt": "x"})).unwrap();
        request.sampling.temperature = f32::NAN;
        assert!(matches!(
            validate_task(request, &TaskLimits::default()),
            Err(ValidationError::Temperature { .. })
        ));
    }

    #[test]
    fn error_messages_name_the_field_and_the_limit() {
        let message = ValidationError::MaxTokens {
            value: 0,
            limit: 4096,
        }
        .to_string();
        assert_eq!(message, "`max_tokens` must be between 1 and 4096, got 0");
    }

    #[test]
    fn registration_url_must_be_scheme_host_port() {
        for good in [
            "http://127.0.0.1:9001",
            "https://gpu-box:443/",
            "http://[::1]:80",
        ] {
            let checked = validate_registration(registration(good)).unwrap();
            assert!(!checked.url.ends_with('/'), "{}", checked.url);
        }
        for bad in [
            "127.0.0.1:9001",
            "ftp://host:21",
            "http://host",
            "http://host:9001/v1",
            "http://user@host:9001",
            "http://host:9001?x=1",
            "http://[::1]",
        ] {
            assert_eq!(
                validate_registration(registration(bad)),
                Err(ValidationError::WorkerUrl { url: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn registration_checks_id_slots_and_context() {
        let mut bad_id = registration("http://h:1");
        bad_id.worker_id = "w/1".into();
        assert_eq!(
            validate_registration(bad_id),
            Err(ValidationError::IdCharacter {
                field: "worker_id",
                character: '/',
                allowed: "ASCII letters, digits, `.`, `_` and `-`",
            })
        );
        let mut no_slots = registration("http://h:1");
        no_slots.slots = 0;
        assert_eq!(
            validate_registration(no_slots),
            Err(ValidationError::Slots {
                value: 0,
                limit: MAX_WORKER_SLOTS
            })
        );
        let mut no_ctx = registration("http://h:1");
        no_ctx.ctx_size = 0;
        assert_eq!(validate_registration(no_ctx), Err(ValidationError::CtxSize));
    }

    #[test]
    fn too_many_messages_are_refused() {
        let message = serde_json::json!({"role": "user", "content": "x"});
        let messages = vec![message; MAX_MESSAGES + 1];
        assert_eq!(
            task(serde_json::json!({"model": "m", "messages": messages})),
            Err(ValidationError::TooManyMessages {
                count: MAX_MESSAGES + 1,
                limit: MAX_MESSAGES
            })
        );
    }

    #[test]
    fn path_ids_are_plain_segments() {
        assert!(validate_job_id("3f2a9c1e-0b6d-4e8f-9a7b-1c2d3e4f5a6b").is_ok());
        assert_eq!(
            validate_job_id("../etc"),
            Err(ValidationError::IdCharacter {
                field: "job_id",
                character: '/',
                allowed: "ASCII letters, digits, `.`, `_` and `-`",
            })
        );
        assert!(matches!(
            validate_worker_id(&"w".repeat(MAX_ID_LEN + 1)),
            Err(ValidationError::IdTooLong { .. })
        ));
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings_only() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(check_json_depth(nested(4).as_bytes(), 4), Ok(()));
        assert_eq!(
            check_json_depth(nested(5).as_bytes(), 4),
            Err(ValidationError::JsonTooDeep { limit: 4 })
        );
        let in_string = format!(r#"{{"prompt": "{}", "x": "\"[["}}"#, "[".repeat(100));
        assert_eq!(check_json_depth(in_string.as_bytes(), 1), Ok(()));
        // Unbalanced or invalid bodies pass here; serde refuses them next.
        assert_eq!(check_json_depth(b"]]]}}{", 1), Ok(()));
        assert_eq!(
            ValidationError::JsonTooDeep { limit: 32 }.to_string(),
            "the request body nests `[` and `{` deeper than 32 levels"
        );
    }

    #[test]
    fn log_safe_escapes_line_breaks_escapes_and_bidi_controls() {
        assert!(matches!(
            log_safe("gemma3-270m"),
            Cow::Borrowed("gemma3-270m")
        ));
        assert_eq!(
            log_safe("a\nFAKE LOG LINE\r\u{1b}[31m\u{202e}z"),
            "a\\u{a}FAKE LOG LINE\\u{d}\\u{1b}[31m\\u{202e}z"
        );
        let long = "é".repeat(MAX_LOGGED_CHARS + 10);
        let safe = log_safe(&long);
        assert!(safe.starts_with(&"é".repeat(MAX_LOGGED_CHARS)));
        assert!(safe.ends_with("... (20 more bytes)"), "{safe}");
    }
}
