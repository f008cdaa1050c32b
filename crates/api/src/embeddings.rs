//! Embeddings: the worker's `POST /embed` body and answer, the registration capability that
//! tells orcd a worker serves them, and the one check of an embedding request's input that
//! orcd's `/v1/embeddings` and the worker both apply, so a list one accepts the other never
//! refuses.

use serde::{Deserialize, Serialize};

/// Most inputs one request may carry. Each becomes a sequence of its own in the worker's
/// embedding context; a longer list is split over several decodes, so this bounds how long one
/// request holds the embedding thread.
pub const MAX_EMBEDDING_INPUTS: usize = 256;

/// `POST /embed` on a worker started with `--embeddings`: the texts to embed, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub input: Vec<String>,
}

/// The worker's answer to [`EmbedRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedResponse {
    /// One vector per input, in input order, pooled the way the model's GGUF declares (mean
    /// when it declares none) and L2-normalised.
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens of all inputs together.
    pub prompt_tokens: u32,
}

/// Why an embedding request's `input` was refused; every message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddingInputError {
    #[error("`input` must not be empty: give a string or a list of strings")]
    Empty,
    #[error("`input` has {count} items; the limit is {limit} per request")]
    TooMany { count: usize, limit: usize },
    #[error("`input[{index}]` must not be an empty string")]
    EmptyItem { index: usize },
    #[error("`input` is {bytes} bytes long in all; the limit is {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
}

/// A non-empty list of non-empty strings, at most [`MAX_EMBEDDING_INPUTS`] of them and
/// `max_bytes` in all. How many tokens each has is checked where the tokenizer is: the worker.
pub fn validate_embedding_input(
    input: &[String],
    max_bytes: usize,
) -> Result<(), EmbeddingInputError> {
    if input.is_empty() {
        return Err(EmbeddingInputError::Empty);
    }
    if input.len() > MAX_EMBEDDING_INPUTS {
        return Err(EmbeddingInputError::TooMany {
            count: input.len(),
            limit: MAX_EMBEDDING_INPUTS,
        });
    }
    if let Some(index) = input.iter().position(String::is_empty) {
        return Err(EmbeddingInputError::EmptyItem { index });
    }
    let bytes = input.iter().map(String::len).sum();
    if bytes > max_bytes {
        return Err(EmbeddingInputError::TooLarge {
            bytes,
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Scales `vector` to unit length (L2), so that a dot product of two embeddings is their
/// cosine similarity. A zero vector has no direction and stays zero.
pub fn l2_normalise(vector: &mut [f32]) {
    // Summed in f64: thousands of f32 squares lose precision otherwise.
    let norm = vector
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in vector.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn a_list_of_non_empty_strings_within_the_limits_is_accepted() {
        assert_eq!(validate_embedding_input(&strings(&["a", "bc"]), 3), Ok(()));
    }

    #[test]
    fn each_refusal_names_the_field() {
        assert_eq!(
            validate_embedding_input(&[], 100),
            Err(EmbeddingInputError::Empty)
        );
        assert_eq!(
            validate_embedding_input(&strings(&["a", "", "b"]), 100),
            Err(EmbeddingInputError::EmptyItem { index: 1 })
        );
        let many = vec!["x".to_owned(); MAX_EMBEDDING_INPUTS + 1];
        assert_eq!(
            validate_embedding_input(&many, usize::MAX),
            Err(EmbeddingInputError::TooMany {
                count: MAX_EMBEDDING_INPUTS + 1,
                limit: MAX_EMBEDDING_INPUTS
            })
        );
        assert_eq!(
            validate_embedding_input(&strings(&["ab", "cd"]), 3),
            Err(EmbeddingInputError::TooLarge { bytes: 4, limit: 3 })
        );
        for error in [
            EmbeddingInputError::Empty,
            EmbeddingInputError::EmptyItem { index: 1 },
            EmbeddingInputError::TooMany { count: 2, limit: 1 },
            EmbeddingInputError::TooLarge { bytes: 2, limit: 1 },
        ] {
            assert!(error.to_string().starts_with("`input"), "{error}");
        }
    }

    #[test]
    fn normalised_vectors_have_unit_length_and_keep_their_direction() {
        let mut vector = vec![3.0, -4.0, 0.0];
        l2_normalise(&mut vector);
        assert_eq!(vector, vec![0.6, -0.8, 0.0]);
        let mut long: Vec<f32> = (1..=640).map(|i| i as f32 * 0.37).collect();
        let original = long.clone();
        l2_normalise(&mut long);
        let norm: f64 = long.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>();
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
        // Same direction: every component scaled by one positive factor.
        let factor = long[0] / original[0];
        assert!(factor > 0.0);
        for (scaled, raw) in long.iter().zip(&original) {
            assert!((scaled / raw - factor).abs() < 1e-5);
        }
    }

    #[test]
    fn a_zero_vector_stays_zero() {
        let mut zero = vec![0.0; 4];
        l2_normalise(&mut zero);
        assert_eq!(zero, vec![0.0; 4]);
    }
}
