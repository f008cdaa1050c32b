//! Checks a raw `POST /execute` body with the shared validator ([`llorch_api::validation`], the
//! same checks and limits orcd applies) against the worker's context size, and turns it into a
//! [`ValidExecuteRequest`]; nothing reaches the engine before this has passed.

use llorch_api::embeddings::EmbeddingInputError;
use llorch_api::validation::{validate_execute, RequestLimits, ValidExecute};
pub use llorch_api::validation::{PromptInput, RequestError, ValidSampling};
use llorch_api::{ExecuteRequest, ToolParams};

/// The worker's limits that requests are validated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tokens one sequence (slot) can hold: prompt plus generated text.
    pub ctx_size: u32,
}

impl Limits {
    fn request_limits(self) -> RequestLimits {
        RequestLimits {
            max_tokens: self.ctx_size,
            // orcd enforces the deployment's byte limit; here the body limit and the context
            // (checked once tokenized) bound the prompt.
            max_prompt_bytes: usize::MAX,
        }
    }
}

/// An execute request that is safe to hand to the engine (the prompt's token count is checked
/// once it is tokenized, see [`ValidationError::PromptTooLong`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidExecuteRequest {
    pub job_id: String,
    pub input: PromptInput,
    /// Special-token text in a raw prompt becomes control tokens (never in chat messages).
    pub parse_special: bool,
    pub max_tokens: u32,
    pub sampling: ValidSampling,
    pub stop: Vec<String>,
    pub tools: ToolParams,
}

/// Why a request was refused with 400; every message names the field and the limit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("request body is not a valid execute request: {0}")]
    InvalidBody(String),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(
        "`prompt` is {tokens} tokens but one slot holds {limit}; \
         send at most {} so that generation has room",
        limit.saturating_sub(1)
    )]
    PromptTooLong { tokens: usize, limit: u32 },
    #[error("`logit_bias` names token {token}, but the model's vocabulary has ids 0..{n_vocab}")]
    UnknownToken { token: u32, n_vocab: u32 },
    #[error("`response_format` cannot be turned into a grammar: {0}")]
    Grammar(String),
    #[error("model has no chat template; send `prompt`")]
    NoChatTemplate,
    #[error("the model's chat template cannot be rendered ({0}); send `prompt`")]
    ChatTemplate(String),
    #[error("request body is not a valid embed request: {0}")]
    InvalidEmbedBody(String),
    #[error(transparent)]
    EmbeddingInput(#[from] EmbeddingInputError),
    #[error(
        "`input[{index}]` is {tokens} tokens; this worker embeds at most {limit} tokens per input"
    )]
    EmbeddingTooLong {
        index: usize,
        tokens: usize,
        limit: u32,
    },
    #[error(
        "`input` is {tokens} tokens in all; this worker embeds at most {limit} tokens per \
         request (`--max-embedding-tokens`): split the list over several requests"
    )]
    EmbeddingRequestTooLarge { tokens: usize, limit: u32 },
    #[error(
        "`tools` cannot be offered: the model's chat template has no tool support; send no \
         `tools` (or `tool_choice: \"none\"`)"
    )]
    ToolsUnsupported,
    #[error("`{field}` spells one of the model's control tokens, which could forge a turn")]
    ControlTokenText { field: String },
    #[error("`tool_choice` cannot be turned into a grammar: {0}")]
    ToolGrammar(String),
    #[error(
        "the grammar of `response_format` or `tool_choice` took over {seconds} s to build; \
         send a smaller schema (fewer optional properties, alternatives or enum values)"
    )]
    GrammarTimeout { seconds: f64 },
    #[error(
        "the grammar of `response_format` or `tool_choice` is {bytes} bytes; the limit is \
         {limit}; send a smaller schema"
    )]
    GrammarTooLarge { bytes: usize, limit: usize },
}

/// Checks every field that can be checked without the model.
pub fn validate(
    request: ExecuteRequest,
    limits: Limits,
) -> Result<ValidExecuteRequest, ValidationError> {
    let ValidExecute {
        job_id,
        input,
        parse_special,
        sampling,
        tools,
    } = validate_execute(request, &limits.request_limits())?;
    Ok(ValidExecuteRequest {
        job_id,
        input,
        parse_special,
        max_tokens: sampling.max_tokens,
        stop: sampling.stop.clone(),
        sampling,
        tools,
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
    use llorch_api::{ChatMessage, SamplingParams};

    use super::*;

    const LIMITS: Limits = Limits { ctx_size: 512 };

    fn request() -> ExecuteRequest {
        ExecuteRequest {
            job_id: "job-1".into(),
            prompt: Some("The capital of France is".into()),
            messages: None,
            parse_special: false,
            sampling: SamplingParams::default(),
            tools: Default::default(),
            unknown: Default::default(),
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
    fn chat_messages_pass_as_chat() {
        let mut chat = request();
        chat.prompt = None;
        chat.messages = Some(vec![ChatMessage::new("user", "hi")]);
        assert!(matches!(
            validate(chat, LIMITS).unwrap().input,
            PromptInput::Chat(_)
        ));
    }

    #[test]
    fn max_tokens_must_fit_one_slot() {
        let error = refused(|r| r.sampling.max_tokens = 513);
        assert_eq!(
            error,
            ValidationError::Request(RequestError::MaxTokens {
                value: 513,
                limit: 512
            })
        );
        let mut at_limit = request();
        at_limit.sampling.max_tokens = 512;
        assert!(validate(at_limit, LIMITS).is_ok());
    }

    #[test]
    fn the_shared_limits_apply_here_too() {
        assert_eq!(
            refused(|r| r.sampling.temperature = 1e30),
            ValidationError::Request(RequestError::Temperature {
                value: 1e30,
                limit: llorch_api::validation::MAX_TEMPERATURE
            })
        );
        let count = llorch_api::validation::MAX_STOP_STRINGS + 1;
        assert_eq!(
            refused(|r| r.sampling.stop = vec!["x".into(); count]),
            ValidationError::Request(RequestError::TooManyStops {
                count,
                limit: llorch_api::validation::MAX_STOP_STRINGS
            })
        );
    }

    #[test]
    fn job_ids_are_plain_and_short() {
        assert!(matches!(
            refused(|r| r.job_id = "j\n\u{1b}[31mforged".into()),
            ValidationError::Request(RequestError::IdCharacter {
                field: "job_id",
                character: '\n',
                ..
            })
        ));
        assert!(matches!(
            refused(|r| r.job_id = "j".repeat(129)),
            ValidationError::Request(RequestError::IdTooLong {
                field: "job_id",
                ..
            })
        ));
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

    #[test]
    fn generation_options_are_checked_with_the_shared_limits() {
        use llorch_api::generation::GenerationOptionError;
        assert_eq!(
            refused(|r| r.sampling.frequency_penalty = -2.5),
            ValidationError::Request(RequestError::Generation(GenerationOptionError::Penalty {
                field: "frequency_penalty",
                value: -2.5
            }))
        );
        assert_eq!(
            refused(|r| r.sampling.logprobs = Some(25)),
            ValidationError::Request(RequestError::Generation(
                GenerationOptionError::TopLogprobs { value: 25 }
            ))
        );
        let mut fine = request();
        fine.sampling.presence_penalty = 1.5;
        fine.sampling.logprobs = Some(3);
        let valid = validate(fine, LIMITS).unwrap();
        assert_eq!(valid.sampling.presence_penalty, 1.5);
        assert_eq!(valid.sampling.logprobs, Some(3));
    }
}
