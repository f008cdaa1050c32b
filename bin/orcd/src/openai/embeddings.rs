//! `POST /v1/embeddings`: OpenAI's embeddings API, answered by a live worker of the model that
//! was started with `--embeddings` (its registration says so). The request is validated here
//! with the shared input check, sent to the worker's `POST /embed` (least busy worker first; a
//! busy or unreachable one is skipped), and the worker's normalised vectors are answered as
//! floats or, when asked, base64 (little-endian f32, what the official clients ask for).
//!
//! Embeddings are not jobs: they take no slot and do not queue in the scheduler; the worker
//! computes them on a thread and context of their own.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use llorch_api::embeddings::{validate_embedding_input, EmbedRequest, EmbedResponse};
use llorch_api::validation::validate_model_id;
use llorch_api::{ErrorBody, ErrorKind, WorkerInfo, WorkerState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::OrcdError;
use crate::extract::JsonBody;
use crate::openai_error::{error_body, openai_status_type_code};
use crate::state::AppState;
use crate::validation::{RequestLimits, ValidationError};

/// OpenAI's embeddings request, as its clients send it.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    model: String,
    input: Value,
    encoding_format: Option<Value>,
    dimensions: Option<Value>,
    /// Identifies the end user to OpenAI's abuse monitoring; orcd has none (accepted, unused).
    #[allow(dead_code)]
    user: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncodingFormat {
    Float,
    Base64,
}

/// An embeddings request that passed every check orcd can make without the tokenizer.
#[derive(Debug, Clone, PartialEq)]
struct ValidEmbeddingRequest {
    model: String,
    input: Vec<String>,
    format: EncodingFormat,
}

fn validate(
    request: EmbeddingRequest,
    limits: &RequestLimits,
) -> Result<ValidEmbeddingRequest, ValidationError> {
    validate_model_id("model", &request.model)?;
    if !matches!(request.dimensions, None | Some(Value::Null)) {
        return Err(ValidationError::Unsupported {
            field: "dimensions".into(),
            detail: ": a model's embeddings have its own size (`n_embd`); leave `dimensions` out",
        });
    }
    let format = match request.encoding_format {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(format)) if format == "float" => EncodingFormat::Float,
        Some(Value::String(format)) if format == "base64" => EncodingFormat::Base64,
        Some(_) => {
            return Err(ValidationError::WrongType {
                field: "encoding_format".into(),
                expected: "`float` or `base64`",
            })
        }
    };
    let input = match request.input {
        Value::String(text) => vec![text],
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(text) => Ok(text),
                Value::Number(_) | Value::Array(_) => Err(ValidationError::WrongType {
                    field: format!("input[{index}]"),
                    expected: "a string (token arrays are not supported; send the text)",
                }),
                _ => Err(ValidationError::WrongType {
                    field: format!("input[{index}]"),
                    expected: "a string",
                }),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ValidationError::WrongType {
                field: "input".into(),
                expected: "a string or a list of strings",
            })
        }
    };
    validate_embedding_input(&input, limits.max_prompt_bytes)?;
    Ok(ValidEmbeddingRequest {
        model: request.model,
        input,
        format,
    })
}

/// OpenAI's answer.
#[derive(Debug, Serialize)]
struct EmbeddingList {
    object: &'static str,
    data: Vec<EmbeddingObject>,
    model: String,
    usage: EmbeddingUsage,
}

#[derive(Debug, Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    /// The f32 values as little-endian bytes, base64-encoded.
    Base64(String),
}

#[derive(Debug, Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

fn answer(request: &ValidEmbeddingRequest, worker: EmbedResponse) -> EmbeddingList {
    let data = worker
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: match request.format {
                EncodingFormat::Float => Vector::Float(vector),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    EmbeddingList {
        object: "list",
        data,
        model: request.model.clone(),
        usage: EmbeddingUsage {
            prompt_tokens: worker.prompt_tokens,
            total_tokens: worker.prompt_tokens,
        },
    }
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<JsonBody<EmbeddingRequest>, OrcdError>,
) -> Response {
    match embed(&state, body).await {
        Ok(list) => Json(list).into_response(),
        Err(error) => error_response(error),
    }
}

async fn embed(
    state: &AppState,
    body: Result<JsonBody<EmbeddingRequest>, OrcdError>,
) -> Result<EmbeddingList, OrcdError> {
    let JsonBody(request) = body?;
    let request = validate(request, state.limits())?;
    // Like a new task: after SIGTERM orcd only finishes what it already admitted.
    if state.is_draining() {
        return Err(OrcdError::Draining);
    }
    let workers = state.scheduler().workers().await?;
    let candidates = embedding_workers(workers, &request.model)?;
    let body = EmbedRequest {
        input: request.input.clone(),
    };
    let mut last_failure = None;
    for worker in candidates {
        match ask_worker(state.http(), &worker, &body).await {
            Ok(response) if response.embeddings.len() == request.input.len() => {
                return Ok(answer(&request, response))
            }
            Ok(response) => {
                return Err(OrcdError::WorkerFailed {
                    worker_id: worker.worker_id,
                    message: format!(
                        "answered {} embeddings for {} inputs",
                        response.embeddings.len(),
                        request.input.len()
                    ),
                })
            }
            // Busy, loading or unreachable: the next worker may answer.
            Err(WorkerAnswer::TryAnother(failure)) => {
                tracing::debug!(worker_id = %worker.worker_id, %failure, "embedding worker skipped");
                last_failure = Some((worker.worker_id, failure));
            }
            Err(WorkerAnswer::Final(error)) => return Err(error),
        }
    }
    let (worker_id, message) = last_failure.expect("there was at least one candidate");
    Err(OrcdError::WorkerFailed {
        worker_id,
        message: format!("no worker could take the request; the last said: {message}"),
    })
}

/// The live workers of `model` that serve embeddings, least busy first; the errors say whether
/// nobody serves the model at all (404 `model_not_found`) or only without embeddings (400).
fn embedding_workers(workers: Vec<WorkerInfo>, model: &str) -> Result<Vec<WorkerInfo>, OrcdError> {
    let live: Vec<WorkerInfo> = workers
        .into_iter()
        .filter(|worker| worker.model == model && worker.state == WorkerState::Live)
        .collect();
    if live.is_empty() {
        return Err(OrcdError::NoWorker {
            model: model.to_owned(),
        });
    }
    let mut serving: Vec<WorkerInfo> = live.into_iter().filter(|w| w.embeddings).collect();
    if serving.is_empty() {
        return Err(ValidationError::NoEmbeddings {
            model: model.to_owned(),
        }
        .into());
    }
    serving.sort_by_key(|worker| worker.slots_busy);
    Ok(serving)
}

enum WorkerAnswer {
    TryAnother(String),
    Final(OrcdError),
}

async fn ask_worker(
    http: &reqwest::Client,
    worker: &WorkerInfo,
    body: &EmbedRequest,
) -> Result<EmbedResponse, WorkerAnswer> {
    let response = http
        .post(format!("{}/embed", worker.url))
        .json(body)
        .send()
        .await
        .map_err(|error| WorkerAnswer::TryAnother(error.to_string()))?;
    let status = response.status();
    if status.is_success() {
        return response.json::<EmbedResponse>().await.map_err(|error| {
            WorkerAnswer::Final(OrcdError::WorkerFailed {
                worker_id: worker.worker_id.clone(),
                message: format!("unreadable embeddings: {error}"),
            })
        });
    }
    let text = response.text().await.unwrap_or_default();
    let refusal = serde_json::from_str::<ErrorBody>(&text).ok();
    let detail = refusal.as_ref().map_or_else(
        || text.chars().take(200).collect(),
        |body| body.error.clone(),
    );
    let worker_id = worker.worker_id.clone();
    Err(match refusal.map(|body| body.error_type) {
        Some(ErrorKind::ContextLength) => WorkerAnswer::Final(OrcdError::ContextLength {
            worker_id,
            message: detail,
        }),
        Some(ErrorKind::Validation) => WorkerAnswer::Final(OrcdError::WorkerRejected {
            worker_id,
            message: format!("HTTP {status}: {detail}"),
        }),
        _ if status.as_u16() == 429 || status.as_u16() == 503 || status.as_u16() == 404 => {
            WorkerAnswer::TryAnother(format!("HTTP {status}: {detail}"))
        }
        _ => WorkerAnswer::Final(OrcdError::WorkerFailed {
            worker_id,
            message: format!("HTTP {status}: {detail}"),
        }),
    })
}

/// OpenAI's error shape, with `param` pointing at `input` for an input a worker found too long
/// (or an item of it), as OpenAI names it.
fn error_response(error: OrcdError) -> Response {
    error.log();
    let (status, _, _) = openai_status_type_code(&error);
    let mut body = error_body(&error);
    let about_input = matches!(error, OrcdError::ContextLength { .. })
        || (body.error.param.as_deref()).is_some_and(|param| param.starts_with("input["));
    if about_input {
        body.error.param = Some("input".to_owned());
    }
    let mut response = (status, Json(body)).into_response();
    error.add_headers(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use llorch_api::embeddings::EmbeddingInputError;
    use serde_json::json;

    fn request(body: Value) -> EmbeddingRequest {
        serde_json::from_value(body).unwrap()
    }

    fn refused(body: Value) -> ValidationError {
        validate(request(body), &RequestLimits::default()).unwrap_err()
    }

    #[test]
    fn input_is_a_string_or_a_list_of_strings() {
        let one = validate(
            request(json!({"model": "m", "input": "hello"})),
            &RequestLimits::default(),
        )
        .unwrap();
        assert_eq!(one.input, vec!["hello".to_owned()]);
        assert_eq!(one.format, EncodingFormat::Float);
        let list = validate(
            request(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "user": "u"})),
            &RequestLimits::default(),
        )
        .unwrap();
        assert_eq!(list.input, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(list.format, EncodingFormat::Base64);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (json!({"model": "m", "input": 3}), "`input`"),
            (json!({"model": "m", "input": [1, 2]}), "`input[0]`"),
            (json!({"model": "m", "input": ["a", [1]]}), "`input[1]`"),
            (json!({"model": "m", "input": []}), "`input`"),
            (json!({"model": "m", "input": ["a", ""]}), "`input[1]`"),
            (
                json!({"model": "m", "input": "a", "dimensions": 64}),
                "`dimensions`",
            ),
            (
                json!({"model": "m", "input": "a", "encoding_format": "int8"}),
                "`encoding_format`",
            ),
            (json!({"model": "a b", "input": "a"}), "`model`"),
        ];
        for (body, field) in cases {
            let error = refused(body.clone()).to_string();
            assert!(error.starts_with(field), "{body}: {error}");
        }
        let limits = RequestLimits {
            max_prompt_bytes: 3,
            ..RequestLimits::default()
        };
        assert_eq!(
            validate(
                request(json!({"model": "m", "input": ["ab", "cd"]})),
                &limits
            ),
            Err(ValidationError::EmbeddingInput(
                EmbeddingInputError::TooLarge { bytes: 4, limit: 3 }
            ))
        );
    }

    fn worker(id: &str, model: &str, embeddings: bool, busy: u32) -> WorkerInfo {
        WorkerInfo {
            worker_id: id.into(),
            url: "http://127.0.0.1:1".into(),
            model: model.into(),
            backend: llorch_api::Backend::Cpu,
            slots_total: 4,
            slots_busy: busy,
            ctx_size: 512,
            last_seen_ms_ago: 0,
            state: WorkerState::Live,
            embeddings,
        }
    }

    #[test]
    fn only_live_workers_with_embeddings_are_asked_least_busy_first() {
        let mut dead = worker("dead", "m", true, 0);
        dead.state = WorkerState::Dead;
        let workers = vec![
            worker("busy", "m", true, 3),
            worker("plain", "m", false, 0),
            worker("idle", "m", true, 1),
            worker("other", "x", true, 0),
            dead,
        ];
        let ids: Vec<String> = embedding_workers(workers, "m")
            .unwrap()
            .into_iter()
            .map(|worker| worker.worker_id)
            .collect();
        assert_eq!(ids, vec!["idle", "busy"]);
    }

    #[test]
    fn a_model_nobody_serves_is_404_and_one_without_embeddings_is_400_naming_model() {
        let error = embedding_workers(vec![worker("w", "x", true, 0)], "m").unwrap_err();
        let response = error_response(error);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);

        let error = embedding_workers(vec![worker("w", "m", false, 0)], "m").unwrap_err();
        let body = error_body(&error).error;
        assert_eq!(body.param.as_deref(), Some("model"));
        assert!(body.message.contains("--embeddings"), "{body:?}");
        assert_eq!(error_response(error).status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let request = ValidEmbeddingRequest {
            model: "m".into(),
            input: vec!["a".into()],
            format: EncodingFormat::Base64,
        };
        let list = answer(
            &request,
            EmbedResponse {
                embeddings: vec![vec![1.0, -0.5]],
                prompt_tokens: 2,
            },
        );
        let json = serde_json::to_value(&list).unwrap();
        let encoded = json["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|chunk| f32::from_le_bytes(chunk.try_into().unwrap()))
            .collect();
        assert_eq!(floats, vec![1.0, -0.5]);
        assert_eq!(json["usage"]["prompt_tokens"], 2);
        assert_eq!(json["usage"]["total_tokens"], 2);
        assert_eq!(json["data"][0]["index"], 0);
        assert_eq!(json["object"], "list");
    }

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_too_long_input_is_context_length_exceeded_about_input() {
        let error = OrcdError::ContextLength {
            worker_id: "w".into(),
            message: "`input[2]` is 900 tokens; this worker embeds at most 512".into(),
        };
        let response = error_response(error);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_of(response).await;
        assert_eq!(body["error"]["param"], "input");
        assert_eq!(body["error"]["code"], "context_length_exceeded");
        let empty_item = OrcdError::from(ValidationError::EmbeddingInput(
            EmbeddingInputError::EmptyItem { index: 1 },
        ));
        assert_eq!(
            body_of(error_response(empty_item)).await["error"]["param"],
            "input"
        );
    }
}
