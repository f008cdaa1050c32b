//! Checks a raw `POST /execute` body against the worker's limits and turns it into a
//! [`ValidExecuteRequest`]; nothing reaches the engine before this has passed.

use llorch_api::generation::{check_generation_options, GenerationOptionError};
use llorch_api::{ChatMessage, ExecuteRequest, OutputConstraint, TokenBias};

/// How many stop strings one request may carry; each is searched for after every token.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string in bytes; longer ones would hold back that much streamed text.
pub const MAX_STOP_BYTES: usize = 256;

/// The worker's limits that requests are validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens one sequence (slot) can hold: prompt plus generated text.
    pub ctx_size: u32,
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// A raw completion prompt.
    Text(String),
    /// Chat messages, rendered with the model's own chat template.
    Chat(Vec<ChatMessage>),
}

/// Sampling settings that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSampling {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// `None` draws a fresh seed per request.
    pub seed: Option<u32>,
    /// -2..2; 0 disables.
    pub presence_penalty: f32,
    /// -2..2; 0 disables.
    pub frequency_penalty: f32,
    /// Token ids are checked against the vocabulary once the model is known.
    pub logit_bias: Vec<TokenBias>,
    /// Alternatives reported per token (0..=20); `None` reports no log-probabilities.
    pub logprobs: Option<u32>,
    /// Turned into a grammar once the model is known.
    pub constraint: Option<OutputConstraint>,
}

/// An execute request that is safe to hand to the engine (the prompt's token count is checked
/// once it is tokenized, see [`ValidationError::PromptTooLong`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidExecuteRequest {
    pub job_id: String,
    pub input: PromptInput,
    pub max_tokens: u32,
    pub sampling: ValidSampling,
    pub stop: Vec<String>,
}

/// Why a request was refused with 400; every message names the field and the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("request body is not a valid execute request: {0}")]
    InvalidBody(String),
    #[error("`job_id` must not be empty")]
    EmptyJobId,
    #[error("send either `prompt` or `messages`, not both")]
    PromptAndMessages,
    #[error("send one of `prompt` or `messages`")]
    MissingPrompt,
    #[error("`prompt` must not be empty")]
    EmptyPrompt,
    #[error("`messages` must hold at least one message")]
    EmptyMessages,
    #[error("`max_tokens` must be at least 1")]
    MaxTokensZero,
    #[error("`max_tokens` must be at most {limit} (the context of one slot), got {got}")]
    MaxTokensTooLarge { got: u32, limit: u32 },
    #[error("`temperature` must be 0 (greedy) or positive, got {0}")]
    NegativeTemperature(f32),
    #[error("`top_p` must be in (0, 1], got {0}")]
    TopPOutOfRange(f32),
    #[error("`stop` holds {got} strings; at most {limit} are allowed")]
    TooManyStops { got: usize, limit: usize },
    #[error("`stop` strings must not be empty")]
    EmptyStop,
    #[error("`stop` strings must be at most {limit} bytes, got one of {got}")]
    StopTooLong { got: usize, limit: usize },
    #[error("`messages` must not contain NUL characters")]
    NulInMessage,
    #[error(
        "`prompt` is {tokens} tokens but one slot holds {limit}; \
         send at most {} so that generation has room",
        limit.saturating_sub(1)
    )]
    PromptTooLong { tokens: usize, limit: u32 },
    #[error(transparent)]
    Option(#[from] GenerationOptionError),
    #[error("`logit_bias` names token {token}, but the model's vocabulary has ids 0..{n_vocab}")]
    UnknownToken { token: u32, n_vocab: u32 },
    #[error("`response_format` cannot be turned into a grammar: {0}")]
    Grammar(String),
    #[error("model has no chat template; send `prompt`")]
    NoChatTemplate,
    #[error("the model's chat template cannot be rendered by llama.cpp ({0}); send `prompt`")]
    ChatTemplate(String),
}

/// Checks every field that can be checked without the model.
pub fn validate(
    request: ExecuteRequest,
    limits: Limits,
) -> Result<ValidExecuteRequest, ValidationError> {
    let ExecuteRequest {
        job_id,
        prompt,
        messages,
        sampling,
    } = request;
    if job_id.trim().is_empty() {
        return Err(ValidationError::EmptyJobId);
    }
    let input = match (prompt, messages) {
        (Some(_), Some(_)) => return Err(ValidationError::PromptAndMessages),
        (None, None) => return Err(ValidationError::MissingPrompt),
        (Some(prompt), None) if prompt.is_empty() => return Err(ValidationError::EmptyPrompt),
        (Some(prompt), None) => PromptInput::Text(prompt),
        (None, Some(messages)) if messages.is_empty() => {
            return Err(ValidationError::EmptyMessages)
        }
        (None, Some(messages)) => {
            let has_nul = messages
                .iter()
                .any(|message| message.role.contains('\0') || message.content.contains('\0'));
            if has_nul {
                return Err(ValidationError::NulInMessage);
            }
            PromptInput::Chat(messages)
        }
    };
    if sampling.max_tokens == 0 {
        return Err(ValidationError::MaxTokensZero);
    }
    if sampling.max_tokens > limits.ctx_size {
        return Err(ValidationError::MaxTokensTooLarge {
            got: sampling.max_tokens,
            limit: limits.ctx_size,
        });
    }
    // NaN cannot come from JSON, but a Rust caller can send it.
    if sampling.temperature.is_nan() || sampling.temperature < 0.0 {
        return Err(ValidationError::NegativeTemperature(sampling.temperature));
    }
    if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
        return Err(ValidationError::TopPOutOfRange(sampling.top_p));
    }
    if sampling.stop.len() > MAX_STOP_STRINGS {
        return Err(ValidationError::TooManyStops {
            got: sampling.stop.len(),
            limit: MAX_STOP_STRINGS,
        });
    }
    for stop in &sampling.stop {
        if stop.is_empty() {
            return Err(ValidationError::EmptyStop);
        }
        if stop.len() > MAX_STOP_BYTES {
            return Err(ValidationError::StopTooLong {
                got: stop.len(),
                limit: MAX_STOP_BYTES,
            });
        }
    }
    check_generation_options(&sampling)?;
    Ok(ValidExecuteRequest {
        job_id,
        input,
        max_tokens: sampling.max_tokens,
        sampling: ValidSampling {
            temperature: sampling.temperature,
            top_k: sampling.top_k,
            top_p: sampling.top_p,
            seed: sampling.seed,
            presence_penalty: sampling.presence_penalty,
            frequency_penalty: sampling.frequency_penalty,
            logit_bias: sampling.logit_bias,
            logprobs: sampling.logprobs,
            constraint: sampling.constraint,
        },
        stop: sampling.stop,
    })
}

/// Checks the tokenized prompt against one slot's context: at least one token must remain free
/// for generation.
pub fn check_prompt_length(tokens: usize, limits: Limits) -> Result<(), ValidationError> {
    if tokens >= limits.ctx_size as usize {
        return Err(ValidationError::PromptTooLong {
            tokens,
            limit: limits.ctx_size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use llorch_api::SamplingParams;

    use super::*;

    const LIMITS: Limits = Limits { ctx_size: 512 };

    fn request() -> ExecuteRequest {
        ExecuteRequest {
            job_id: "job-1".into(),
            prompt: Some("The capital of France is".into()),
            messages: None,
            sampling: SamplingParams::default(),
        }
    }

    fn refused(change: impl FnOnce(&mut ExecuteRequest)) -> ValidationError {
        let mut request = request();
        change(&mut request);
        validate(request, LIMITS).expect_err("request should be refused")
    }

    #[test]
    fn default_request_passes_unchanged() {
        let valid = validate(request(), LIMITS).unwrap();
        assert_eq!(
            valid.input,
            PromptInput::Text("The capital of France is".into())
        );
        assert_eq!(valid.max_tokens, 128);
        assert_eq!(valid.sampling.temperature, 0.0);
        assert!(valid.stop.is_empty());
    }

    #[test]
    fn exactly_one_of_prompt_and_messages() {
        let message = ChatMessage {
            role: "user".into(),
            content: "hi".into(),
        };
        let both = message.clone();
        assert_eq!(
            refused(|r| r.messages = Some(vec![both])),
            ValidationError::PromptAndMessages
        );
        assert_eq!(refused(|r| r.prompt = None), ValidationError::MissingPrompt);
        let mut chat = request();
        chat.prompt = None;
        chat.messages = Some(vec![message]);
        assert!(matches!(
            validate(chat, LIMITS).unwrap().input,
            PromptInput::Chat(_)
        ));
    }

    #[test]
    fn empty_inputs_are_refused() {
        assert_eq!(
            refused(|r| r.prompt = Some(String::new())),
            ValidationError::EmptyPrompt
        );
        assert_eq!(
            refused(|r| {
                r.prompt = None;
                r.messages = Some(Vec::new());
            }),
            ValidationError::EmptyMessages
        );
        assert_eq!(
            refused(|r| r.job_id = " ".into()),
            ValidationError::EmptyJobId
        );
    }

    #[test]
    fn max_tokens_must_fit_one_slot() {
        assert_eq!(
            refused(|r| r.sampling.max_tokens = 0),
            ValidationError::MaxTokensZero
        );
        let error = refused(|r| r.sampling.max_tokens = 513);
        assert_eq!(
            error,
            ValidationError::MaxTokensTooLarge {
                got: 513,
                limit: 512
            }
        );
        assert!(error
            .to_string()
            .contains("`max_tokens` must be at most 512"));
        let mut at_limit = request();
        at_limit.sampling.max_tokens = 512;
        assert!(validate(at_limit, LIMITS).is_ok());
    }

    #[test]
    fn temperature_and_top_p_ranges() {
        assert_eq!(
            refused(|r| r.sampling.temperature = -0.1),
            ValidationError::NegativeTemperature(-0.1)
        );
        assert!(matches!(
            refused(|r| r.sampling.temperature = f32::NAN),
            ValidationError::NegativeTemperature(_)
        ));
        assert_eq!(
            refused(|r| r.sampling.top_p = 0.0),
            ValidationError::TopPOutOfRange(0.0)
        );
        assert_eq!(
            refused(|r| r.sampling.top_p = 1.5),
            ValidationError::TopPOutOfRange(1.5)
        );
        let mut edge = request();
        edge.sampling.top_p = 1.0;
        edge.sampling.temperature = 2.0;
        assert!(validate(edge, LIMITS).is_ok());
    }

    #[test]
    fn stop_strings_are_bounded_and_non_empty() {
        assert_eq!(
            refused(|r| r.sampling.stop = vec![String::new()]),
            ValidationError::EmptyStop
        );
        assert_eq!(
            refused(|r| r.sampling.stop = vec!["x".into(); MAX_STOP_STRINGS + 1]),
            ValidationError::TooManyStops {
                got: MAX_STOP_STRINGS + 1,
                limit: MAX_STOP_STRINGS
            }
        );
        assert_eq!(
            refused(|r| r.sampling.stop = vec!["x".repeat(MAX_STOP_BYTES + 1)]),
            ValidationError::StopTooLong {
                got: MAX_STOP_BYTES + 1,
                limit: MAX_STOP_BYTES
            }
        );
    }

    #[test]
    fn generation_options_are_checked_with_the_shared_limits() {
        assert_eq!(
            refused(|r| r.sampling.frequency_penalty = -2.5),
            ValidationError::Option(GenerationOptionError::Penalty {
                field: "frequency_penalty",
                value: -2.5
            })
        );
        assert_eq!(
            refused(|r| r.sampling.logprobs = Some(25)),
            ValidationError::Option(GenerationOptionError::TopLogprobs { value: 25 })
        );
        let mut fine = request();
        fine.sampling.presence_penalty = 1.5;
        fine.sampling.logprobs = Some(3);
        let valid = validate(fine, LIMITS).unwrap();
        assert_eq!(valid.sampling.presence_penalty, 1.5);
        assert_eq!(valid.sampling.logprobs, Some(3));
    }

    #[test]
    fn nul_in_chat_message_is_refused() {
        let error = refused(|r| {
            r.prompt = None;
            r.messages = Some(vec![ChatMessage {
                role: "user".into(),
                content: "a\0b".into(),
            }]);
        });
        assert_eq!(error, ValidationError::NulInMessage);
    }

    #[test]
    fn prompt_must_leave_room_for_one_token() {
        assert_eq!(check_prompt_length(511, LIMITS), Ok(()));
        let error = check_prompt_length(512, LIMITS).unwrap_err();
        assert_eq!(
            error,
            ValidationError::PromptTooLong {
                tokens: 512,
                limit: 512
            }
        );
        assert!(error.to_string().contains("send at most 511"), "{error}");
    }
}
