//! Request validation: a raw [`TaskRequest`] becomes a [`ValidTask`], a raw
//! [`WorkerRegistration`] is checked before it enters the registry. Nothing unvalidated reaches
//! the scheduler or a worker.

use llorch_api::{ChatMessage, ExecuteRequest, SamplingParams, TaskRequest, WorkerRegistration};

/// Ids are path segments and log fields: short and plain.
pub const MAX_ID_LEN: usize = 128;
pub const MAX_STOP_STRINGS: usize = 4;
pub const MAX_STOP_LEN: usize = 64;
pub const MAX_WORKER_SLOTS: u32 = 1024;
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
    #[error("`slots` must be between 1 and {limit}, got {value}")]
    Slots { value: u32, limit: u32 },
    #[error("`ctx_size` must be at least 1")]
    CtxSize,
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

/// Worker ids appear in URL paths (`/workers/{id}`), so they are plain path segments.
pub fn validate_worker_id(id: &str) -> Result<(), ValidationError> {
    validate_id(
        "worker_id",
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
}
