//! What can stop the engine from serving: loading llama.cpp and the model, sizing the context,
//! or the engine thread itself failing. The HTTP layer maps each to a status
//! (`crate::error::WorkerError::status`); the lifecycle prints it and exits.

use std::path::PathBuf;

use llorch_api::Backend;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("initialising llama.cpp: {0}")]
    Backend(String),
    #[error("model file `{}` does not exist", path.display())]
    ModelMissing { path: PathBuf },
    #[error("backend `{backend}` was requested but llama.cpp found no GPU to offload to")]
    NoGpu { backend: Backend },
    #[error("`--gpu` {gpu} is out of range")]
    GpuOutOfRange { gpu: u32 },
    #[error(
        "loading model `{}`: {reason}\n\
         hint: is it a GGUF file of an architecture this llama.cpp supports? \
         llama.cpp's log lines above say what it rejected",
        path.display()
    )]
    ModelLoad { path: PathBuf, reason: String },
    /// Every generating slot puts at least one token into each step's batch.
    #[error("`--batch-size` {batch_size} must be at least `--slots` {slots}")]
    BatchSmallerThanSlots { batch_size: u32, slots: u32 },
    #[error("`--ctx-size` {ctx_size} is larger than the model's training context ({train_ctx})")]
    ContextBeyondTraining { ctx_size: u32, train_ctx: u32 },
    #[error("`--ctx-size` {ctx_size} × `--slots` {slots} does not fit a context")]
    ContextTooLarge { ctx_size: u32, slots: u32 },
    #[error("creating the llama.cpp context: {0}")]
    Context(String),
    #[error("llama.cpp gave each slot {per_slot} KV cells, fewer than `--ctx-size` {ctx_size}")]
    TooFewCells { per_slot: u32, ctx_size: u32 },
    #[error("the engine thread panicked: {0}")]
    Panicked(String),
    #[error("the engine thread ended while loading")]
    EndedWhileLoading,
}
