//! The limits of the generation options beyond plain sampling (penalties, logit bias,
//! log-probabilities, output constraints), checked the same way by orcd and the worker.
//! Checks that need the model (token ids against its vocabulary, the schema's grammar) are the
//! worker's.

use crate::json_schema::{check_schema, SchemaError};
use crate::{OutputConstraint, SamplingParams};

/// OpenAI's range for `presence_penalty` and `frequency_penalty`.
pub const MAX_PENALTY: f32 = 2.0;
/// OpenAI's range for one `logit_bias` value.
pub const MAX_LOGIT_BIAS: f32 = 100.0;
/// OpenAI's limit on the number of `logit_bias` entries.
pub const MAX_LOGIT_BIAS_ENTRIES: usize = 300;
/// OpenAI's limit on `top_logprobs`.
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Largest JSON schema accepted, in bytes of its JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Why a generation option was refused; every message names the field in backticks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerationOptionError {
    #[error("`{field}` must be a number between -{MAX_PENALTY} and {MAX_PENALTY}, got {value}")]
    Penalty { field: &'static str, value: f32 },
    #[error("`logit_bias` has {count} entries; the limit is {MAX_LOGIT_BIAS_ENTRIES}")]
    TooManyBiases { count: usize },
    #[error(
        "`logit_bias` of token {token} must be between -{MAX_LOGIT_BIAS} and {MAX_LOGIT_BIAS}, got {value}"
    )]
    Bias { token: u32, value: f32 },
    #[error("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {value}")]
    TopLogprobs { value: u32 },
    #[error("`response_format` schema is {bytes} bytes long; the limit is {MAX_SCHEMA_BYTES}")]
    SchemaTooLarge { bytes: usize },
    #[error("`response_format` schema must be a JSON object")]
    SchemaNotObject,
    /// Past a limit of [`crate::json_schema`], or a `pattern` the grammar cannot follow.
    #[error("`response_format` schema: {0}")]
    Schema(SchemaError),
}

/// Checks the options every entry point shares; the plain sampling fields are checked
/// separately.
pub fn check_generation_options(sampling: &SamplingParams) -> Result<(), GenerationOptionError> {
    for (field, value) in [
        ("presence_penalty", sampling.presence_penalty),
        ("frequency_penalty", sampling.frequency_penalty),
    ] {
        // `!(a <= x <= b)` so that NaN is refused too.
        if !((-MAX_PENALTY..=MAX_PENALTY).contains(&value)) {
            return Err(GenerationOptionError::Penalty { field, value });
        }
    }
    if sampling.logit_bias.len() > MAX_LOGIT_BIAS_ENTRIES {
        return Err(GenerationOptionError::TooManyBiases {
            count: sampling.logit_bias.len(),
        });
    }
    for bias in &sampling.logit_bias {
        if !((-MAX_LOGIT_BIAS..=MAX_LOGIT_BIAS).contains(&bias.bias)) {
            return Err(GenerationOptionError::Bias {
                token: bias.token,
                value: bias.bias,
            });
        }
    }
    if let Some(top) = sampling.logprobs.filter(|&top| top > MAX_TOP_LOGPROBS) {
        return Err(GenerationOptionError::TopLogprobs { value: top });
    }
    if let Some(OutputConstraint::JsonSchema { schema }) = &sampling.constraint {
        if !schema.is_object() {
            return Err(GenerationOptionError::SchemaNotObject);
        }
        let bytes = schema.to_string().len();
        if bytes > MAX_SCHEMA_BYTES {
            return Err(GenerationOptionError::SchemaTooLarge { bytes });
        }
        check_schema(schema).map_err(GenerationOptionError::Schema)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenBias;

    fn with(change: impl FnOnce(&mut SamplingParams)) -> Result<(), GenerationOptionError> {
        let mut sampling = SamplingParams::default();
        change(&mut sampling);
        check_generation_options(&sampling)
    }

    #[test]
    fn defaults_and_openai_edges_pass() {
        assert_eq!(with(|_| {}), Ok(()));
        assert_eq!(
            with(|s| {
                s.presence_penalty = -2.0;
                s.frequency_penalty = 2.0;
                s.logit_bias = vec![TokenBias {
                    token: 7,
                    bias: -100.0,
                }];
                s.logprobs = Some(20);
            }),
            Ok(())
        );
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        assert_eq!(
            with(|s| s.presence_penalty = 2.5),
            Err(GenerationOptionError::Penalty {
                field: "presence_penalty",
                value: 2.5
            })
        );
        assert!(matches!(
            with(|s| s.frequency_penalty = f32::NAN),
            Err(GenerationOptionError::Penalty {
                field: "frequency_penalty",
                ..
            })
        ));
        assert_eq!(
            with(|s| s.logit_bias = vec![TokenBias {
                token: 3,
                bias: 101.0
            }]),
            Err(GenerationOptionError::Bias {
                token: 3,
                value: 101.0
            })
        );
        assert_eq!(
            with(|s| s.logprobs = Some(21)),
            Err(GenerationOptionError::TopLogprobs { value: 21 })
        );
        assert_eq!(
            with(|s| s.constraint = Some(OutputConstraint::JsonSchema {
                schema: serde_json::json!([1])
            })),
            Err(GenerationOptionError::SchemaNotObject)
        );
        // Issue 18's schema: 6,000 optional properties in 65 KB aborted the worker.
        let huge: serde_json::Map<String, serde_json::Value> = (0..6000)
            .map(|i| (format!("p{i}"), serde_json::json!({})))
            .collect();
        let refused = with(|s| {
            s.constraint = Some(OutputConstraint::JsonSchema {
                schema: serde_json::json!({"type": "object", "properties": huge}),
            })
        });
        assert!(
            matches!(refused, Err(GenerationOptionError::Schema(_))),
            "{refused:?}"
        );
        let text = refused.unwrap_err().to_string();
        assert!(
            text.starts_with("`response_format` schema: at `/properties`"),
            "{text}"
        );
        let message = with(|s| s.presence_penalty = 3.0).unwrap_err().to_string();
        assert!(message.starts_with("`presence_penalty`"), "{message}");
    }
}
