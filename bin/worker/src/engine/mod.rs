//! The inference engine. One dedicated OS thread owns the llama.cpp context and runs the
//! continuous-batching loop (`batching.rs`); the async HTTP side talks to it through an
//! [`EngineHandle`]: jobs go in over a channel, each with its own sender for stream events.

mod batching;
mod burst;
mod cpu_load;
mod grammar;
mod prefix_cache;
pub mod prompt;
mod sampling;
mod slot;
pub mod speculative;
pub mod template;
pub mod text;
mod threads;
mod token_sampler;

pub use self::speculative::Speculation;
pub use self::threads::physical_cores;
pub use crate::engine_error::EngineError;

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, Mutex, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use llama_cpp_2::{
    context::{params::LlamaContextParams, LlamaContext},
    llama_backend::LlamaBackend,
    model::{
        params::{LlamaModelParams, LlamaSplitMode},
        LlamaModel,
    },
    LogOptions,
};
use llorch_api::{Backend, StreamEvent};
use tokio::sync::{mpsc::UnboundedReceiver, watch, Semaphore};

use self::slot::Job;
use crate::{
    error::WorkerError,
    metrics::WorkerMetrics,
    validation::{check_prompt_length, Limits, ValidExecuteRequest},
};

/// Everything the engine needs to load its model and size its context.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Catalog id or file stem; reported in health and registration.
    pub model_id: String,
    pub backend: Backend,
    /// Main GPU for the cuda and metal backends.
    pub gpu: u32,
    /// Threads for decode steps of a single token (one busy slot, generating).
    pub threads: u32,
    /// Threads for steps of several tokens: prompt chunks, or several busy slots.
    pub threads_batch: u32,
    /// Start from `threads` and step both counts down while other processes take the CPU,
    /// back up once they stop (`threads.rs`).
    pub adapt_threads: bool,
    /// Tokens one slot can hold (prompt plus generation).
    pub ctx_size: u32,
    /// Sequences decoded together.
    pub slots: u32,
    /// Tokens per decode step; longer prompts are fed in chunks of this size.
    pub batch_size: u32,
    /// Requests that may wait for a slot beyond the running ones.
    pub queue_size: u32,
    /// The longest the engine, woken from idle, waits for requests sent together (`burst.rs`).
    pub max_burst_wait: Duration,
    /// How generating sequences draft tokens to verify in one step (`speculative.rs`).
    pub speculation: Speculation,
}

impl EngineSettings {
    pub fn limits(&self) -> Limits {
        Limits {
            ctx_size: self.ctx_size,
        }
    }

    /// Requests admitted at once: running plus waiting.
    pub fn capacity(&self) -> u32 {
        self.slots + self.queue_size
    }
}

/// Where the engine thread gets its model from.
pub enum ModelSource {
    File(PathBuf),
    /// Already loaded; tests share one model between engines this way.
    Loaded(&'static LlamaModel),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineStatus {
    Loading,
    Ready,
    /// Shutting down: running jobs finish, new ones are refused.
    Draining,
    /// Loading, the context or the engine thread failed.
    Failed(EngineError),
    /// The engine thread has ended.
    Stopped,
}

/// How busy the engine is, published after every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineLoad {
    /// Slots running a job.
    pub busy: u32,
    /// Jobs waiting inside the engine for a slot.
    pub waiting: u32,
}

enum Command {
    Run(Job),
    /// Use this many threads from the next step on, and stop adapting the count.
    SetThreads(u32),
    /// Cancel every running and waiting job with a `shutting_down` error (drain timeout).
    CancelAll,
    /// Cancel the running or waiting jobs of these ids: orcd gave them up.
    CancelGivenUp(Vec<String>),
    /// Cancel everything and end the engine thread.
    Shutdown,
}

/// The async side's view of the engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

struct Shared {
    settings: EngineSettings,
    status: watch::Sender<EngineStatus>,
    load: watch::Sender<EngineLoad>,
    /// Set once loaded; tokenization runs against it outside the engine thread
    /// (`LlamaModel` is `Sync`; only the context is tied to the engine thread).
    model: OnceLock<&'static LlamaModel>,
    commands: mpsc::Sender<Command>,
    admission: Arc<Semaphore>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Recorded on the engine thread, read by `GET /metrics`.
    metrics: WorkerMetrics,
}

impl EngineHandle {
    /// Starts the engine thread; the handle reports `Loading` until the model is ready.
    pub fn start(settings: EngineSettings, source: ModelSource) -> EngineHandle {
        let (commands, receiver) = mpsc::channel();
        let handle = EngineHandle::with_commands(settings, commands);
        let shared = handle.shared.clone();
        let thread = std::thread::Builder::new()
            .name("llorch-engine".into())
            .spawn(move || engine_thread(&shared, source, receiver))
            .expect("spawning the engine thread");
        *handle.shared.thread.lock().unwrap() = Some(thread);
        handle
    }

    /// A handle with no engine behind it: it stays `Loading` forever. For router tests.
    #[cfg(test)]
    pub(crate) fn without_engine(settings: EngineSettings) -> EngineHandle {
        EngineHandle::with_commands(settings, mpsc::channel().0)
    }

    fn with_commands(settings: EngineSettings, commands: mpsc::Sender<Command>) -> EngineHandle {
        let admission = Arc::new(Semaphore::new(settings.capacity() as usize));
        EngineHandle {
            shared: Arc::new(Shared {
                settings,
                status: watch::Sender::new(EngineStatus::Loading),
                load: watch::Sender::new(EngineLoad::default()),
                model: OnceLock::new(),
                commands,
                admission,
                thread: Mutex::new(None),
                metrics: WorkerMetrics::new(),
            }),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.shared.settings
    }

    /// The model, once loaded.
    pub fn model(&self) -> Option<&'static LlamaModel> {
        self.shared.model.get().copied()
    }

    /// Where the engine and its helpers (the embedding thread) record their metrics.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.shared.metrics
    }

    pub fn status(&self) -> EngineStatus {
        self.shared.status.borrow().clone()
    }

    pub fn load(&self) -> EngineLoad {
        *self.shared.load.borrow()
    }

    /// The Prometheus exposition of this engine's metrics.
    pub fn metrics_text(&self) -> String {
        let load = self.load();
        self.shared
            .metrics
            .render(load.busy, load.waiting, self.shared.settings.slots)
    }

    pub fn subscribe_load(&self) -> watch::Receiver<EngineLoad> {
        self.shared.load.subscribe()
    }

    /// Waits until the model is loaded; the error says why loading failed.
    pub async fn wait_ready(&self) -> Result<(), EngineError> {
        let mut status = self.shared.status.subscribe();
        let status = status
            .wait_for(|status| *status != EngineStatus::Loading)
            .await
            .map_err(|_| EngineError::EndedWhileLoading)?;
        match &*status {
            EngineStatus::Ready | EngineStatus::Draining => Ok(()),
            EngineStatus::Failed(error) => Err(error.clone()),
            EngineStatus::Stopped => Err(EngineError::EndedWhileLoading),
            EngineStatus::Loading => unreachable!("waited for a status other than loading"),
        }
    }

    /// Waits until the engine thread has ended after being ready, and says why.
    pub async fn wait_stopped(&self) -> String {
        let mut status = self.shared.status.subscribe();
        let Ok(status) = status
            .wait_for(|status| matches!(status, EngineStatus::Failed(_) | EngineStatus::Stopped))
            .await
        else {
            return "the engine's status channel closed".into();
        };
        match &*status {
            EngineStatus::Failed(error) => error.to_string(),
            _ => "the engine thread ended".into(),
        }
    }

    /// Tokenizes a validated request and queues it; the receiver yields its stream events,
    /// ending with `done` or `error`. Dropping the receiver cancels the job.
    pub async fn submit(
        &self,
        request: ValidExecuteRequest,
        received_at: Instant,
    ) -> Result<UnboundedReceiver<StreamEvent>, WorkerError> {
        self.check_accepting()?;
        let model = *self.shared.model.get().ok_or(WorkerError::Loading)?;
        let permit = self
            .shared
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| WorkerError::QueueFull {
                capacity: self.shared.settings.capacity(),
            })?;
        let ValidExecuteRequest {
            job_id,
            input,
            parse_special,
            max_tokens,
            sampling,
            stop,
            tools,
        } = request;
        let logprobs = sampling.logprobs;
        let (prompt, sampler) = tokio::task::spawn_blocking(move || {
            let prompt = prompt::tokenize_prompt(model, &input, parse_special, tools.offered())?;
            // Built off the engine thread, and on one of its own: a grammar can take a while
            // to build and recurse deeply doing it.
            let sampler = grammar::build_off_thread(grammar::GRAMMAR_BUILD_TIMEOUT, move || {
                let tool_grammar = match tools.offered() {
                    [] => None,
                    _ => {
                        let source = prompt::chat_template_source(model)?;
                        sampling::tool_grammar(template::tool_syntax(&source), &tools)?
                    }
                };
                sampling::build_sampler(model, &sampling, max_tokens, tool_grammar.as_deref())
            })?;
            Ok::<_, crate::validation::ValidationError>((prompt, sampler))
        })
        .await
        .map_err(|error| WorkerError::EngineStopped(format!("tokenizer task: {error}")))??;
        check_prompt_length(prompt.len(), self.shared.settings.limits())?;
        let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
        let job = Job {
            job_id,
            prompt,
            max_tokens,
            sampler,
            logprobs,
            stop,
            events,
            received_at,
            _permit: permit,
        };
        self.shared
            .commands
            .send(Command::Run(job))
            .map_err(|_| WorkerError::EngineStopped("it no longer takes jobs".into()))?;
        Ok(receiver)
    }

    fn check_accepting(&self) -> Result<(), WorkerError> {
        match &*self.shared.status.borrow() {
            EngineStatus::Ready => Ok(()),
            EngineStatus::Loading => Err(WorkerError::Loading),
            EngineStatus::Draining | EngineStatus::Stopped => Err(WorkerError::ShuttingDown),
            EngineStatus::Failed(error) => Err(WorkerError::Engine(error.clone())),
        }
    }

    /// Stops accepting jobs; running and waiting ones go on.
    pub fn begin_drain(&self) {
        self.shared.status.send_if_modified(|status| {
            let accepting = matches!(status, EngineStatus::Ready | EngineStatus::Loading);
            if accepting {
                *status = EngineStatus::Draining;
            }
            accepting
        });
    }

    /// Waits until no job is admitted, running or waiting.
    pub async fn wait_idle(&self) {
        let capacity = self.shared.settings.capacity() as usize;
        // Admission permits cover every stage (tokenizing, queued, running), so polling them
        // needs no bookkeeping of its own; shutdown is the only caller.
        while self.shared.admission.available_permits() < capacity {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Fixes llama.cpp's thread count (decode and batch) from the next step on; the engine no
    /// longer adapts it to CPU contention. Running and cached sequences keep their KV cells.
    pub fn set_threads(&self, threads: u32) {
        let _ = self
            .shared
            .commands
            .send(Command::SetThreads(threads.max(1)));
    }

    /// Cancels the jobs of these ids that run or wait here, frees their slots and counts them
    /// in `jobs_total{outcome="given_up"}`: orcd ended them while it could not reach this
    /// worker (see [`crate::registration`]). Ids of jobs not here are ignored.
    pub fn cancel_given_up(&self, job_ids: Vec<String>) {
        if !job_ids.is_empty() {
            let _ = self.shared.commands.send(Command::CancelGivenUp(job_ids));
        }
    }

    /// Ends every running and waiting job with a `shutting_down` error.
    pub fn cancel_all(&self) {
        let _ = self.shared.commands.send(Command::CancelAll);
    }

    /// Cancels what is left, ends the engine thread and waits for it.
    pub async fn shutdown(&self) {
        self.begin_drain();
        let _ = self.shared.commands.send(Command::Shutdown);
        let thread = self.shared.thread.lock().unwrap().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The process-wide llama.cpp backend. llama.cpp must be initialised once per process, and its
/// logs are routed into `tracing` before anything is loaded.
pub fn llama_backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let backend = LlamaBackend::init().map_err(|error| error.to_string())?;
            llama_cpp_2::send_logs_to_tracing(LogOptions::default());
            Ok(backend)
        })
        .as_ref()
        .map_err(|error| EngineError::Backend(error.clone()))
}

/// Loads a GGUF file for the whole life of the process (the worker serves one model, and a
/// `'static` model lets the HTTP side tokenize while the engine thread decodes).
pub fn load_model(
    path: &Path,
    backend: Backend,
    gpu: u32,
) -> Result<&'static LlamaModel, EngineError> {
    let llama = llama_backend()?;
    if !path.is_file() {
        return Err(EngineError::ModelMissing {
            path: path.to_owned(),
        });
    }
    if backend != Backend::Cpu && !llama.supports_gpu_offload() {
        return Err(EngineError::NoGpu { backend });
    }
    let params = match backend {
        Backend::Cpu => LlamaModelParams::default().with_n_gpu_layers(0),
        // Every layer on the one GPU that `--gpu` names (llama.cpp caps the layer count at the
        // model's; `main_gpu` only applies in single-GPU split mode).
        Backend::Cuda | Backend::Metal => LlamaModelParams::default()
            .with_n_gpu_layers(u32::MAX)
            .with_split_mode(LlamaSplitMode::None)
            .with_main_gpu(i32::try_from(gpu).map_err(|_| EngineError::GpuOutOfRange { gpu })?),
    };
    let started = Instant::now();
    let model = LlamaModel::load_from_file(llama, path, &params).map_err(|error| {
        EngineError::ModelLoad {
            path: path.to_owned(),
            reason: error.to_string(),
        }
    })?;
    tracing::info!(
        path = %path.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(Box::leak(Box::new(model)))
}

fn engine_thread(shared: &Shared, source: ModelSource, commands: mpsc::Receiver<Command>) {
    // A panic must not leave the handle reporting `ready` with nobody decoding: it becomes
    // `failed`, the jobs' senders drop and their streams end with an error event. Failures are
    // reported by whoever waits on the status (the lifecycle), not logged here as well.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_engine(shared, source, commands)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(EngineError::Panicked(message))
    });
    shared.status.send_replace(match result {
        Ok(()) => EngineStatus::Stopped,
        Err(error) => EngineStatus::Failed(error),
    });
    shared.load.send_replace(EngineLoad::default());
}

fn run_engine(
    shared: &Shared,
    source: ModelSource,
    commands: mpsc::Receiver<Command>,
) -> Result<(), EngineError> {
    let settings = &shared.settings;
    if settings.batch_size < settings.slots {
        return Err(EngineError::BatchSmallerThanSlots {
            batch_size: settings.batch_size,
            slots: settings.slots,
        });
    }
    let model = match source {
        ModelSource::File(path) => load_model(&path, settings.backend, settings.gpu)?,
        ModelSource::Loaded(model) => model,
    };
    let train_ctx = model.n_ctx_train();
    if settings.ctx_size > train_ctx {
        return Err(EngineError::ContextBeyondTraining {
            ctx_size: settings.ctx_size,
            train_ctx,
        });
    }
    let context = new_context(model, settings)?;
    let _ = shared.model.set(model);
    tracing::info!(
        slots = settings.slots,
        ctx_size = settings.ctx_size,
        kv_cells = context.n_ctx(),
        batch_size = settings.batch_size,
        threads = settings.threads,
        threads_batch = settings.threads_batch,
        adapt_threads = settings.adapt_threads,
        "engine ready"
    );
    shared.status.send_if_modified(|status| {
        let loading = *status == EngineStatus::Loading;
        if loading {
            *status = EngineStatus::Ready;
        }
        loading
    });
    batching::Batcher::new(model, context, shared).run(commands);
    Ok(())
}

/// llama.cpp documents creating contexts from one model in parallel as unsound; tests start
/// several engines on one shared model, and the embedding thread makes a context of its own.
pub(crate) static CONTEXT_CREATION: Mutex<()> = Mutex::new(());

fn new_context(
    model: &'static LlamaModel,
    settings: &EngineSettings,
) -> Result<LlamaContext<'static>, EngineError> {
    let total_ctx = settings
        .ctx_size
        .checked_mul(settings.slots)
        .and_then(NonZeroU32::new)
        .ok_or(EngineError::ContextTooLarge {
            ctx_size: settings.ctx_size,
            slots: settings.slots,
        })?;
    // Without a unified KV cache every sequence gets exactly n_ctx / n_seq_max cells: one
    // slot can never eat another's context.
    let params = LlamaContextParams::default()
        .with_n_ctx(Some(total_ctx))
        .with_n_seq_max(settings.slots)
        .with_n_batch(settings.batch_size)
        .with_n_ubatch(settings.batch_size)
        // Sliding-window layers only need their window: sequences are cleared whole or cut
        // back to a cached prefix (checked against the cells the window kept) or by rejected
        // draft tokens at their end (cells llama.cpp reuses are outside the window of every
        // position kept), never shifted, which is what a full-size SWA cache is for.
        .with_swa_full(false)
        .with_n_threads(settings.threads as i32)
        .with_n_threads_batch(settings.threads_batch as i32);
    let _guard = CONTEXT_CREATION
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let context = model
        .new_context(llama_backend()?, params)
        .map_err(|error| EngineError::Context(error.to_string()))?;
    let per_slot = context.n_ctx() / settings.slots;
    if per_slot < settings.ctx_size {
        return Err(EngineError::TooFewCells {
            per_slot,
            ctx_size: settings.ctx_size,
        });
    }
    Ok(context)
}
