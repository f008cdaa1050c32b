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
//! Each input is one decode of its own, and must fit one (`min(--ctx-size, --batch-size)`
//! tokens): llama.cpp pools a sequence within one micro-batch, so a longer one would be pooled
//! over its last part only. One input per decode, not several packed as sequences of their own:
//! llama.cpp's CPU kernels sum in a different order depending on where a token's row sits in the
//! batch (tiles of rows, remainder rows), and a text packed behind another came out up to 0.006
//! different per component (measured with Gemma 3, flash attention on or off). Alone in its
//! decode, the same text always gets the bit-identical vector, whatever else the request holds.

use std::{
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

/// How the embedding context is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingSettings {
    /// Tokens one decode takes, and so the most one input may have.
    pub batch_tokens: u32,
    pub threads: u32,
}

impl EmbeddingSettings {
    /// From the worker's generation settings: an input may be as long as a slot's context,
    /// within one decode's batch.
    pub fn for_engine(engine: &crate::engine::EngineSettings) -> EmbeddingSettings {
        EmbeddingSettings {
            batch_tokens: engine.ctx_size.min(engine.batch_size),
            threads: engine.threads_batch,
        }
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
        let limit = embedder.settings.batch_tokens;
        for (index, tokens) in inputs.iter().enumerate() {
            if tokens.len() > limit as usize {
                return Err(ValidationError::EmbeddingTooLong {
                    index,
                    tokens: tokens.len(),
                    limit,
                }
                .into());
            }
        }
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

/// The embedding thread: one request at a time, in arrival order.
fn run(
    mut context: LlamaContext<'static>,
    settings: EmbeddingSettings,
    jobs: mpsc::Receiver<EmbedJob>,
    metrics: &WorkerMetrics,
) {
    let mut batch = LlamaBatch::new(settings.batch_tokens as usize, 1);
    while let Ok(job) = jobs.recv() {
        if job.reply.is_closed() {
            continue; // the client went away while the request waited
        }
        let result = embed_inputs(&mut context, &mut batch, &job.inputs).map_err(|error| {
            tracing::error!(%error, "embedding failed");
            WorkerError::Generation(format!("computing embeddings: {error}"))
        });
        if result.is_ok() {
            let tokens = job.inputs.iter().map(Vec::len).sum::<usize>();
            metrics.embedded(tokens as u32);
        }
        let _ = job.reply.send(result);
    }
}

/// Decodes each input on its own and returns its normalised vector, in order.
fn embed_inputs(
    context: &mut LlamaContext<'static>,
    batch: &mut LlamaBatch<'static>,
    inputs: &[Vec<LlamaToken>],
) -> Result<Vec<Vec<f32>>, String> {
    inputs
        .iter()
        .map(|tokens| {
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
        })
        .collect()
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
}
