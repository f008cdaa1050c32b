//! Embeddings (`--embeddings`): `POST /embed` answers one vector per input text, pooled the
//! way the model's GGUF declares (`<arch>.pooling_type`; mean when it declares none) and
//! L2-normalised, so that a dot product is a cosine similarity.
//!
//! Where they are computed: on a thread of their own (`llorch-embed`) that owns a llama.cpp
//! context of its own, created with `embeddings = true` and the model's pooling once the model
//! is loaded. Not on the engine thread between decode steps: a request is one full decode per
//! batch of inputs (up to `--batch-size` tokens each), and every generating stream would stall
//! for all of them. Not in the generation context either: an embeddings context outputs every
//! token's hidden state and pools it, which would change every generation step. On its own
//! thread an embedding request runs beside generation; the two share the CPU, and the engine's
//! thread controller steps its count down while they do.
//!
//! Sharing and giving up: the thread takes turns between the requests it holds, one input of
//! each in turn, so a one-input request waits for at most one input of every other request, not
//! for all of them; before each input it checks that the request's caller is still waiting
//! (orcd drops its connection when its client hangs up) and gives the request up if not. A
//! request may have at most `--max-embedding-tokens` tokens in all, so none holds the thread
//! (and the CPU it shares with generation) for long.
//!
//! Each input is one decode of its own, and must fit one (`min(--ctx-size, --batch-size)`
//! tokens): llama.cpp pools a sequence within one micro-batch, so a longer one would be pooled
//! over its last part only. One input per decode, not several packed as sequences of their own:
//! llama.cpp's CPU kernels sum in a different order depending on where a token's row sits in the
//! batch (tiles of rows, remainder rows), and a text packed behind another came out up to 0.006
//! different per component (measured with Gemma 3, flash attention on or off). Alone in its
//! decode, the same text always gets the bit-identical vector, whatever else the request holds.

use std::{
    collections::VecDeque,
    num::NonZeroU32,
    sync::{mpsc, Arc, OnceLock},
};

use axum::{body::Bytes, extract::State, http::HeaderMap, Json};
use llama_cpp_2::{
    context::{
        params::{LlamaContextParams, LlamaPoolingType},
        LlamaContext,
    },
    llama_batch::LlamaBatch,
    model::LlamaModel,
    token::LlamaToken,
};
use llorch_api::embeddings::{l2_normalise, validate_embedding_input, EmbedRequest, EmbedResponse};
use tokio::sync::oneshot;

use crate::{
    engine::{llama_backend, EngineHandle, EngineStatus, CONTEXT_CREATION},
    error::WorkerError,
    metrics::WorkerMetrics,
    validation::ValidationError,
};

/// Embedding requests that may wait for the embedding thread; beyond that `/embed` is a 503.
const QUEUE_SIZE: usize = 16;
/// Requests the embedding thread takes turns between; more wait in the queue.
const IN_TURN: usize = 16;

/// `--max-embedding-tokens`: 16 inputs of a full default batch (512 tokens); a second or two
/// of one core for a small model.
pub const DEFAULT_MAX_REQUEST_TOKENS: u32 = 8192;

/// How the embedding context is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingSettings {
    /// Tokens one decode takes, and so the most one input may have.
    pub batch_tokens: u32,
    /// The most tokens one request may have, all inputs together.
    pub max_request_tokens: u32,
    pub threads: u32,
}

impl EmbeddingSettings {
    /// From the worker's generation settings: an input may be as long as a slot's context,
    /// within one decode's batch.
    pub fn for_engine(
        engine: &crate::engine::EngineSettings,
        max_request_tokens: u32,
    ) -> EmbeddingSettings {
        EmbeddingSettings {
            batch_tokens: engine.ctx_size.min(engine.batch_size),
            max_request_tokens,
            threads: engine.threads_batch,
        }
    }

    /// Every input fits one decode, and all of them the request limit.
    fn check(&self, token_counts: &[usize]) -> Result<(), ValidationError> {
        let limit = self.batch_tokens;
        if let Some((index, &tokens)) = token_counts
            .iter()
            .enumerate()
            .find(|(_, &tokens)| tokens > limit as usize)
        {
            return Err(ValidationError::EmbeddingTooLong {
                index,
                tokens,
                limit,
            });
        }
        let tokens = token_counts.iter().sum::<usize>();
        if tokens > self.max_request_tokens as usize {
            return Err(ValidationError::EmbeddingRequestTooLarge {
                tokens,
                limit: self.max_request_tokens,
            });
        }
        Ok(())
    }
}

/// The HTTP side's view of the embedding thread; cheap to clone. Disabled unless the worker
/// was started with `--embeddings`; enabled but not started while the model loads.
#[derive(Clone, Default)]
pub struct Embeddings {
    enabled: bool,
    embedder: Arc<OnceLock<Embedder>>,
}

struct Embedder {
    model: &'static LlamaModel,
    jobs: mpsc::SyncSender<EmbedJob>,
    settings: EmbeddingSettings,
}

/// One request's inputs, tokenized, and where its vectors go.
struct EmbedJob {
    inputs: Vec<Vec<LlamaToken>>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, WorkerError>>,
}

/// A request the embedding thread holds, with the vectors of its inputs done so far.
struct InTurn {
    job: EmbedJob,
    vectors: Vec<Vec<f32>>,
}

impl Embeddings {
    /// `/embed` answers that this worker serves no embeddings.
    pub fn disabled() -> Embeddings {
        Embeddings::default()
    }

    /// `/embed` answers "loading" until [`Embeddings::start`] has succeeded.
    pub fn enabled() -> Embeddings {
        Embeddings {
            enabled: true,
            embedder: Arc::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Creates the embedding context on a new thread and waits until it is ready; the error
    /// says why it could not be made (a reranker's pooling, too little memory).
    pub async fn start(
        &self,
        engine: &EngineHandle,
        settings: EmbeddingSettings,
    ) -> Result<(), String> {
        let model = engine
            .model()
            .ok_or("the model is not loaded yet; embeddings start after it")?;
        let (jobs, receiver) = mpsc::sync_channel(QUEUE_SIZE);
        let (ready_tx, ready) = oneshot::channel();
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("llorch-embed".into())
            .spawn(move || {
                let context = match embedding_context(model, settings) {
                    Ok(context) => {
                        let _ = ready_tx.send(Ok(()));
                        context
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                run(context, settings, receiver, engine.metrics());
            })
            .map_err(|error| format!("spawning the embedding thread: {error}"))?;
        ready
            .await
            .map_err(|_| "the embedding thread ended while starting".to_owned())??;
        let _ = self.embedder.set(Embedder {
            model,
            jobs,
            settings,
        });
        tracing::info!(
            batch_tokens = settings.batch_tokens,
            pooling = ?model_pooling(model)?,
            dimensions = model.n_embd_out(),
            "embeddings ready"
        );
        Ok(())
    }

    /// Tokenizes validated inputs, checks each fits one decode, and waits for their vectors.
    async fn embed(&self, input: Vec<String>) -> Result<EmbedResponse, WorkerError> {
        if !self.enabled {
            return Err(WorkerError::NoEmbeddings);
        }
        let embedder = self.embedder.get().ok_or(WorkerError::Loading)?;
        let model = embedder.model;
        let inputs = tokio::task::spawn_blocking(move || {
            let vocab = model.vocab();
            input
                .iter()
                // The model's own special tokens (BOS, and EOS where its GGUF asks for one)
                // around each text; text that looks like a control token stays text.
                .map(|text| vocab.tokenize(text.as_bytes(), true, false))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|error| WorkerError::EngineStopped(format!("tokenizer task: {error}")))?;
        let token_counts: Vec<usize> = inputs.iter().map(Vec::len).collect();
        embedder.settings.check(&token_counts)?;
        let prompt_tokens = inputs.iter().map(Vec::len).sum::<usize>() as u32;
        let (reply, vectors) = oneshot::channel();
        embedder
            .jobs
            .try_send(EmbedJob { inputs, reply })
            .map_err(|error| match error {
                mpsc::TrySendError::Full(_) => WorkerError::QueueFull {
                    capacity: QUEUE_SIZE as u32,
                },
                mpsc::TrySendError::Disconnected(_) => {
                    WorkerError::EngineStopped("the embedding thread has ended".into())
                }
            })?;
        let embeddings = vectors.await.map_err(|_| {
            WorkerError::EngineStopped("the embedding thread dropped the request".into())
        })??;
        Ok(EmbedResponse {
            embeddings,
            prompt_tokens,
        })
    }
}

/// `POST /embed`: `{"input": ["text", ...]}` → `{"embeddings": [[...], ...], "prompt_tokens"}`.
pub async fn embed(
    State(engine): State<EngineHandle>,
    State(embeddings): State<Embeddings>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EmbedResponse>, WorkerError> {
    crate::body::check_json_body(&headers, &body)?;
    let request: EmbedRequest = serde_json::from_slice(&body)
        .map_err(|error| ValidationError::InvalidEmbedBody(error.to_string()))?;
    // orcd enforces the deployment's byte limit; here the body limit bounds the input.
    validate_embedding_input(&request.input, usize::MAX).map_err(ValidationError::from)?;
    match engine.status() {
        EngineStatus::Ready => {}
        EngineStatus::Loading => return Err(WorkerError::Loading),
        EngineStatus::Draining | EngineStatus::Stopped => return Err(WorkerError::ShuttingDown),
        EngineStatus::Failed(error) => return Err(WorkerError::Engine(error)),
    }
    embeddings.embed(request.input).await.map(Json)
}

/// The pooling the model's GGUF declares (`<arch>.pooling_type`), mean when it declares none.
pub fn model_pooling(model: &LlamaModel) -> Result<LlamaPoolingType, String> {
    let declared = model
        .meta_val_str("general.architecture")
        .ok()
        .and_then(|arch| model.meta_val_str(&format!("{arch}.pooling_type")).ok())
        .and_then(|value| value.trim().parse::<i32>().ok());
    pooling_from_gguf(declared)
}

fn pooling_from_gguf(declared: Option<i32>) -> Result<LlamaPoolingType, String> {
    match declared.map(LlamaPoolingType::from) {
        // Generative models declare nothing (or "none": one vector per token); a mean over
        // the tokens is the usual sentence embedding for them.
        None | Some(LlamaPoolingType::None | LlamaPoolingType::Unspecified) => {
            Ok(LlamaPoolingType::Mean)
        }
        Some(LlamaPoolingType::Rank) => Err(
            "the model declares rank pooling: it is a reranker, which scores text pairs and has \
             no embeddings\nhint: start the worker without `--embeddings`"
                .into(),
        ),
        Some(pooling) => Ok(pooling),
    }
}

fn embedding_context(
    model: &'static LlamaModel,
    settings: EmbeddingSettings,
) -> Result<LlamaContext<'static>, String> {
    let pooling = model_pooling(model)?;
    let tokens = NonZeroU32::new(settings.batch_tokens).ok_or("an empty embedding batch")?;
    let params = LlamaContextParams::default()
        // The KV cells hold one input and are cleared after it.
        .with_n_ctx(Some(tokens))
        .with_n_batch(settings.batch_tokens)
        .with_n_ubatch(settings.batch_tokens)
        .with_n_seq_max(1)
        .with_embeddings(true)
        .with_pooling_type(pooling)
        .with_n_threads(settings.threads as i32)
        .with_n_threads_batch(settings.threads as i32);
    let _guard = CONTEXT_CREATION
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    model
        .new_context(llama_backend().map_err(|error| error.to_string())?, params)
        .map_err(|error| format!("creating the llama.cpp embedding context: {error}"))
}

/// The embedding thread: one input of each request it holds in turn, requests taken in
/// arrival order.
fn run(
    mut context: LlamaContext<'static>,
    settings: EmbeddingSettings,
    jobs: mpsc::Receiver<EmbedJob>,
    metrics: &WorkerMetrics,
) {
    let mut batch = LlamaBatch::new(settings.batch_tokens as usize, 1);
    let mut in_turn: VecDeque<InTurn> = VecDeque::new();
    loop {
        if in_turn.is_empty() {
            match jobs.recv() {
                Ok(job) => in_turn.push_back(InTurn::new(job)),
                Err(_) => return,
            }
        }
        // Taken in only up to `IN_TURN`: the rest wait in the bounded queue, which answers
        // 503 when it is full.
        while in_turn.len() < IN_TURN {
            match jobs.try_recv() {
                Ok(job) => in_turn.push_back(InTurn::new(job)),
                Err(_) => break,
            }
        }
        let Some(mut request) = in_turn.pop_front() else {
            continue;
        };
        if request.job.reply.is_closed() {
            // The caller hung up (or orcd's client did, and orcd dropped the connection).
            tracing::info!(
                embedded = request.vectors.len(),
                inputs = request.job.inputs.len(),
                "the caller went away; giving up its embedding request"
            );
            metrics.embedding_abandoned();
            continue;
        }
        let tokens = &request.job.inputs[request.vectors.len()];
        match embed_one(&mut context, &mut batch, tokens) {
            Ok(vector) => {
                metrics.embedded_input(tokens.len() as u32);
                request.vectors.push(vector);
                if request.vectors.len() == request.job.inputs.len() {
                    metrics.embedding_answered();
                    let _ = request.job.reply.send(Ok(request.vectors));
                } else {
                    in_turn.push_back(request);
                }
            }
            Err(error) => {
                tracing::error!(%error, "embedding failed");
                let error = WorkerError::Generation(format!("computing embeddings: {error}"));
                let _ = request.job.reply.send(Err(error));
            }
        }
    }
}

impl InTurn {
    fn new(job: EmbedJob) -> InTurn {
        InTurn {
            vectors: Vec::with_capacity(job.inputs.len()),
            job,
        }
    }
}

/// Decodes one input on its own and returns its normalised vector.
fn embed_one(
    context: &mut LlamaContext<'static>,
    batch: &mut LlamaBatch<'static>,
    tokens: &[LlamaToken],
) -> Result<Vec<f32>, String> {
    batch.clear();
    // Every token is an output: pooling reads them all.
    batch
        .add_sequence(tokens, 0, true)
        .map_err(|error| error.to_string())?;
    context.clear_kv_cache();
    let decoded = context.decode(batch).map_err(|error| error.to_string());
    let pooled = decoded.and_then(|()| {
        context
            .embeddings_seq_ith(0)
            .map(<[f32]>::to_vec)
            .map_err(|error| error.to_string())
    });
    context.clear_kv_cache();
    let mut vector = pooled?;
    l2_normalise(&mut vector);
    Ok(vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_is_the_declared_one_and_mean_when_none_is_declared() {
        assert_eq!(pooling_from_gguf(None), Ok(LlamaPoolingType::Mean));
        assert_eq!(pooling_from_gguf(Some(0)), Ok(LlamaPoolingType::Mean));
        assert_eq!(pooling_from_gguf(Some(1)), Ok(LlamaPoolingType::Mean));
        assert_eq!(pooling_from_gguf(Some(2)), Ok(LlamaPoolingType::Cls));
        assert_eq!(pooling_from_gguf(Some(3)), Ok(LlamaPoolingType::Last));
        let rank = pooling_from_gguf(Some(4)).unwrap_err();
        assert!(rank.contains("reranker"), "{rank}");
    }

    #[test]
    fn each_input_must_fit_one_decode_and_all_of_them_the_request_limit() {
        let settings = EmbeddingSettings {
            batch_tokens: 100,
            max_request_tokens: 250,
            threads: 1,
        };
        assert_eq!(settings.check(&[100, 100, 50]), Ok(()));
        assert_eq!(
            settings.check(&[10, 101]),
            Err(ValidationError::EmbeddingTooLong {
                index: 1,
                tokens: 101,
                limit: 100
            })
        );
        let too_large = settings.check(&[100, 100, 51]).unwrap_err();
        assert_eq!(
            too_large,
            ValidationError::EmbeddingRequestTooLarge {
                tokens: 251,
                limit: 250
            }
        );
        assert!(too_large.to_string().contains("--max-embedding-tokens"));
    }
}
