//! Wire types shared by orcd, the worker and `cargo xtask jobs`: every JSON body and SSE event
//! that crosses a process boundary is defined here once.

use serde::{Deserialize, Serialize};

pub mod audit;
pub mod embeddings;
pub mod fleet;
pub mod generation;
pub mod json_schema;
pub mod log_safe;
pub mod pool;
pub mod secret;
pub mod tools;
pub mod usage;
pub mod validation;

pub use tools::{ToolCall, ToolChoice, ToolDefinition, ToolParams};

/// The response header that names the job of a `POST /v2/tasks` (and `/v1`) answer, so a client
/// knows the id before any event arrives, and after an error that ends the stream.
pub const JOB_ID_HEADER: &str = "x-llorch-job-id";

/// The compute backend a worker runs llama.cpp on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
    Metal,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Cpu, Backend::Cuda, Backend::Metal];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Metal => "metal",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Backend::Cpu),
            "cuda" => Ok(Backend::Cuda),
            "metal" => Ok(Backend::Metal),
            other => Err(format!(
                "unknown backend `{other}`: expected cpu, cuda or metal"
            )),
        }
    }
}

/// One message of a chat request; the worker renders a list of them with the model's template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// Empty (or `null` on the wire) for an assistant turn that only called tools.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// The calls an `assistant` turn made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The function a `tool` message answers (some templates show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// Sampling settings, shared by a task (client → orcd) and an execution (orcd → worker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    pub max_tokens: u32,
    /// 0 means greedy decoding.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    /// 1.0 disables top-p.
    pub top_p: f32,
    pub seed: Option<u32>,
    /// Generation ends before any of these strings; the stop string itself is not streamed.
    pub stop: Vec<String>,
    /// OpenAI's presence penalty (-2..2): subtracted once from the logit of every token that
    /// was already generated. 0 disables it.
    #[serde(skip_serializing_if = "is_zero")]
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty (-2..2): subtracted from a token's logit once per time it
    /// was already generated. 0 disables it.
    #[serde(skip_serializing_if = "is_zero")]
    pub frequency_penalty: f32,
    /// Added to the logits of these token ids (-100..100; -100 bans a token).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<TokenBias>,
    /// Report each generated token's log-probability and this many most likely alternatives
    /// (0..=20) in its `token` event. `None` reports nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Constrains the output to JSON; decoding follows a grammar, so the text always parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<OutputConstraint>,
}

fn is_zero(value: &f32) -> bool {
    *value == 0.0
}

/// One entry of [`SamplingParams::logit_bias`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenBias {
    pub token: u32,
    pub bias: f32,
}

/// What the generated text must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputConstraint {
    /// One JSON object, any keys.
    JsonObject,
    /// JSON that validates against this JSON schema.
    JsonSchema { schema: serde_json::Value },
}

/// The log-probability of one generated token, with the most likely alternatives at its
/// position (most likely first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's id in the model's vocabulary (what `logit_bias` keys name).
    pub id: u32,
    /// The token's text (lossy UTF-8; `bytes` holds the exact bytes).
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

/// One alternative in [`TokenLogprob::top`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub id: u32,
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 128,
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            seed: None,
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            logprobs: None,
            constraint: None,
        }
    }
}

/// The top-level fields of a request body that none of its parts knows. The request types
/// flatten their sampling and tool fields, which rules out `deny_unknown_fields`, so they
/// collect the rest here (last of their flattened fields: earlier ones take their own keys
/// first) and validation refuses any: a misspelt or misplaced field (`max_tokens` nested under
/// `sampling`) must not silently fall back to a default. Never serialized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnknownFields {
    /// The first one in the body's order: the one a refusal names.
    first: Option<String>,
}

impl UnknownFields {
    pub fn first(&self) -> Option<&str> {
        self.first.as_deref()
    }
}

impl<'de> Deserialize<'de> for UnknownFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FirstName;
        impl<'de> serde::de::Visitor<'de> for FirstName {
            type Value = UnknownFields;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a map of fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UnknownFields, A::Error> {
                let mut first = None;
                while let Some((name, serde::de::IgnoredAny)) = map.next_entry::<String, _>()? {
                    first.get_or_insert(name);
                }
                Ok(UnknownFields { first })
            }
        }
        deserializer.deserialize_map(FirstName)
    }
}

/// `POST /v2/tasks` on orcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Parse special-token text in `prompt` (`<|im_start|>`, `<start_of_turn>`…) as control
    /// tokens, for clients that format a model's turns themselves. Off by default: client text
    /// is text. Chat `messages` are always text; only the template writes control tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parse_special: bool,
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Tools offered to a chat, and which must be called.
    #[serde(flatten, default)]
    pub tools: ToolParams,
    /// `false` answers one JSON [`TaskResult`] instead of an SSE stream.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// Fields of the body no part of the request knows; validation refuses them.
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

fn default_true() -> bool {
    true
}

/// A `token` event without a count (from an older worker) stood for one token.
fn one_token() -> u32 {
    1
}

/// `POST /execute` on a worker: what orcd sends once it has picked the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Parse special-token text in `prompt` (`<|im_start|>`, `<start_of_turn>`…) as control
    /// tokens, for clients that format a model's turns themselves. Off by default: client text
    /// is text. Chat `messages` are always text; only the template writes control tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parse_special: bool,
    #[serde(flatten)]
    pub sampling: SamplingParams,
    /// Tools the template offers the model, and which must be called.
    #[serde(flatten, default)]
    pub tools: ToolParams,
    /// Fields of the body no part of the request knows; validation refuses them.
    #[serde(flatten, skip_serializing)]
    pub unknown: UnknownFields,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` (or the slot's context) was reached.
    Length,
    /// The client or an operator cancelled the job.
    Cancelled,
}

/// Statistics of a finished generation, sent in the `done` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// From the request's arrival at the worker to the first streamed token.
    pub time_to_first_token_ms: f64,
    /// Generated tokens per second after the first token.
    pub tokens_per_second: f64,
    /// Prompt tokens per second during prompt processing (cached ones excluded).
    #[serde(default)]
    pub prompt_tokens_per_second: f64,
    /// Prompt tokens found in the worker's KV cache (an earlier request that started the same
    /// way), not processed again; part of `prompt_tokens`.
    #[serde(default)]
    pub cached_prompt_tokens: u32,
    /// Tokens the worker drafted ahead by speculative decoding and verified (0 without it).
    #[serde(default)]
    pub draft_tokens: u32,
    /// Drafted tokens the model agreed with, emitted without a decode step of their own;
    /// part of `generated_tokens`.
    #[serde(default)]
    pub draft_tokens_accepted: u32,
}

/// Machine-readable error category, the same in JSON bodies and `error` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or out of range (4xx).
    Validation,
    /// The prompt does not fit the model's context (one slot of the worker); a 400.
    ContextLength,
    /// No live worker serves the model.
    NoWorker,
    /// The model's queue is full; retry later.
    QueueFull,
    /// Unknown job or worker id.
    NotFound,
    /// Missing or wrong credentials.
    Unauthorized,
    /// The worker failed or vanished while generating.
    Worker,
    /// The server is shutting down.
    ShuttingDown,
    /// A bug or an unexpected failure inside the server.
    Internal,
}

/// The JSON body of every non-2xx answer of orcd's and the worker's own API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_type: ErrorKind,
}

/// One server-sent event of a task or execution stream. The SSE `event:` field is
/// [`StreamEvent::name`]; the `data:` field is the variant's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// orcd: the job waits for a free slot; `position` 1 is next. While orcd loads the job's
    /// model on a host first, `state` is `loading` (with `position` 0: the job is not queued
    /// yet), `host_id` names the host once placement chose it, and `elapsed_ms` is the time
    /// since the wait began; such an event comes at once and then every second.
    Queued {
        job_id: String,
        position: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<QueuedState>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        elapsed_ms: Option<u64>,
    },
    /// orcd: the job was dispatched to a worker.
    Started { job_id: String, worker_id: String },
    /// worker: one piece of generated text (always whole UTF-8 characters), with the
    /// log-probabilities of the tokens it holds when the request asked for them. `index` counts
    /// events from 0; `tokens` is how many generated tokens this piece completes, which is
    /// more than one when a character spans several tokens, and 0 for a piece whose tokens
    /// an earlier event already counted. Summed over a stream it is the tokens generated so
    /// far (tokens whose text is never sent, such as a stop string, are counted in `done`).
    Token {
        text: String,
        index: u32,
        #[serde(default = "one_token")]
        tokens: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logprobs: Vec<TokenLogprob>,
    },
    /// worker: generation finished.
    Done(GenerationStats),
    /// Either side: the job failed; no further events follow.
    Error {
        message: String,
        error_type: ErrorKind,
    },
}

/// Why a `queued` job waits, when it is not simply for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueuedState {
    /// orcd is loading the job's model on a host (a pool manager starts its worker).
    Loading,
}

impl StreamEvent {
    /// A job's place in its model's queue.
    pub fn queued(job_id: impl Into<String>, position: u32) -> StreamEvent {
        StreamEvent::Queued {
            job_id: job_id.into(),
            position,
            state: None,
            host_id: None,
            elapsed_ms: None,
        }
    }

    /// A job that waits while its model loads (on `host_id`, once chosen) since `elapsed_ms`.
    pub fn loading(
        job_id: impl Into<String>,
        host_id: Option<String>,
        elapsed_ms: u64,
    ) -> StreamEvent {
        StreamEvent::Queued {
            job_id: job_id.into(),
            position: 0,
            state: Some(QueuedState::Loading),
            host_id,
            elapsed_ms: Some(elapsed_ms),
        }
    }

    /// The SSE `event:` name of this event.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Queued { .. } => "queued",
            StreamEvent::Started { .. } => "started",
            StreamEvent::Token { .. } => "token",
            StreamEvent::Done(_) => "done",
            StreamEvent::Error { .. } => "error",
        }
    }

    /// The SSE `data:` payload (JSON without the `event` tag).
    pub fn data_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("stream events always serialize");
        if let Some(object) = value.as_object_mut() {
            object.remove("event");
        }
        value.to_string()
    }

    /// Rebuilds an event from an SSE `event:` name and `data:` payload.
    pub fn from_sse(event: &str, data: &str) -> Result<StreamEvent, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_str(data)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("event".into(), serde_json::Value::String(event.to_owned()));
        }
        serde_json::from_value(value)
    }

    /// True for the events after which a stream ends.
    pub fn is_terminal(&self) -> bool {
        matches!(self, StreamEvent::Done(_) | StreamEvent::Error { .. })
    }
}

/// `GET /health` on a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHealth {
    pub status: WorkerStatus,
    pub model: String,
    pub slots_total: u32,
    pub slots_busy: u32,
    /// How registering with orcd goes; absent when the worker runs without an orchestrator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationStatus>,
}

/// A worker's standing with its orchestrator, as its `/health` reports it: `pool worker spawn`
/// waits for `registered` and shows `last_error` (with its hint) when registering fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationStatus {
    pub orchestrator_url: String,
    pub state: RegistrationState,
    /// The URL the worker advertised to orcd.
    pub advertised_url: String,
    /// The last failure, with a `hint:` line naming the fix; cleared once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationState {
    /// Not registered yet (model loading, or orcd unreachable so far); retrying.
    Pending,
    /// orcd accepted the registration and the heartbeats.
    Registered,
    /// orcd refused the registration (4xx): retrying cannot help until the cause is fixed.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Loading,
    Ready,
    Draining,
}

/// `POST /workers/register` on orcd, sent by a worker once its model is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    pub worker_id: String,
    /// Base URL orcd uses to reach the worker, e.g. `http://127.0.0.1:9001`.
    pub url: String,
    /// Catalog id (or file stem) of the model the worker serves.
    pub model: String,
    pub backend: Backend,
    pub slots: u32,
    pub ctx_size: u32,
    /// Serves `POST /embed` (started with `--embeddings`); absent from older workers.
    #[serde(default)]
    pub embeddings: bool,
}

/// `POST /workers/{id}/heartbeat` on orcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub slots_busy: u32,
    pub slots_total: u32,
    /// Jobs waiting in the worker's own queue for a slot; absent from older workers.
    #[serde(default)]
    pub jobs_waiting: u32,
}

/// A worker as orcd sees it (`GET /workers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub url: String,
    pub model: String,
    pub backend: Backend,
    pub slots_total: u32,
    pub slots_busy: u32,
    pub ctx_size: u32,
    /// Milliseconds since the last registration or heartbeat.
    pub last_seen_ms_ago: u64,
    pub state: WorkerState,
    /// Serves `/v1/embeddings` for its model (started with `--embeddings`).
    #[serde(default)]
    pub embeddings: bool,
}

/// orcd's answer to `POST /workers/register`: the worker as orcd now sees it, and how often orcd
/// wants its heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationAccepted {
    #[serde(flatten)]
    pub worker: WorkerInfo,
    /// A third of orcd's heartbeat timeout, so one late heartbeat does not get a worker marked
    /// dead. The worker heartbeats at most this far apart. Optional, so a worker still registers
    /// with an orcd that does not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Jobs orcd gave up on this worker while it could not reach it (see [`HeartbeatAccepted`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given_up_jobs: Vec<String>,
}

/// orcd's answer to `POST /workers/{id}/heartbeat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAccepted {
    /// Jobs sent to this worker that orcd has ended without it: it marked the worker dead (no
    /// heartbeat, or the connection broke) and failed them, so nobody reads their streams any
    /// more. The worker cancels those it still runs. Each id is listed once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub given_up_jobs: Vec<String>,
}

impl RegistrationAccepted {
    /// The interval that keeps heartbeats well inside `heartbeat_timeout`.
    pub fn heartbeat_interval_for(heartbeat_timeout: std::time::Duration) -> std::time::Duration {
        heartbeat_timeout / 3
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Heartbeats arrive; the worker receives jobs.
    Live,
    /// Heartbeats stopped; no jobs are sent to it.
    Dead,
}

/// The lifecycle state of a job on orcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A job as orcd reports it (`GET /v2/tasks`, `GET /v2/tasks/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job_id: String,
    pub model: String,
    /// Fingerprint of the token that submitted the job (absent without authentication): only
    /// that token, and operator tokens, see and cancel the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub worker_id: Option<String>,
    pub state: JobState,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    /// Unix time in milliseconds when orcd accepted the job.
    pub submitted_at_ms: u64,
    pub time_to_first_token_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub finish_reason: Option<FinishReason>,
    pub error: Option<String>,
}

/// The answer to a `"stream": false` task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub job_id: String,
    pub model: String,
    pub worker_id: String,
    pub text: String,
    pub stats: GenerationStats,
}

/// `DELETE /v2/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelResult {
    pub job_id: String,
    /// The state the job was in when the cancel arrived.
    pub previous_state: JobState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_round_trip_through_sse_fields() {
        let events = [
            StreamEvent::queued("j1", 2),
            StreamEvent::loading("j1", Some("gpu-box".into()), 1500),
            StreamEvent::loading("j1", None, 0),
            StreamEvent::Started {
                job_id: "j1".into(),
                worker_id: "w".into(),
            },
            StreamEvent::Token {
                text: "日本".into(),
                index: 3,
                tokens: 2,
                logprobs: Vec::new(),
            },
            StreamEvent::Token {
                text: "a".into(),
                index: 4,
                tokens: 1,
                logprobs: vec![TokenLogprob {
                    id: 64,
                    token: "a".into(),
                    bytes: vec![b'a'],
                    logprob: -0.5,
                    top: vec![TopLogprob {
                        id: 64,
                        token: "a".into(),
                        bytes: vec![b'a'],
                        logprob: -0.5,
                    }],
                }],
            },
            StreamEvent::Done(GenerationStats {
                finish_reason: FinishReason::Length,
                prompt_tokens: 5,
                generated_tokens: 16,
                time_to_first_token_ms: 12.5,
                tokens_per_second: 70.0,
                prompt_tokens_per_second: 300.0,
                cached_prompt_tokens: 0,
                draft_tokens: 0,
                draft_tokens_accepted: 0,
            }),
            StreamEvent::Error {
                message: "boom".into(),
                error_type: ErrorKind::Worker,
            },
        ];
        for event in events {
            let data = event.data_json();
            assert!(!data.contains("\"event\""), "tag leaked into data: {data}");
            assert_eq!(StreamEvent::from_sse(event.name(), &data).unwrap(), event);
        }
    }

    #[test]
    fn task_request_defaults_to_streaming_and_default_sampling() {
        let request: TaskRequest =
            serde_json::from_str(r#"{"model":"gemma3-270m","prompt":"hi"}"#).unwrap();
        assert!(request.stream);
        assert_eq!(request.sampling, SamplingParams::default());
    }

    #[test]
    fn a_token_event_without_a_count_is_one_token() {
        let event = StreamEvent::from_sse("token", r#"{"text":"a","index":0}"#).unwrap();
        assert_eq!(
            event,
            StreamEvent::Token {
                text: "a".into(),
                index: 0,
                tokens: 1,
                logprobs: Vec::new(),
            }
        );
    }

    #[test]
    fn unknown_event_name_is_an_error() {
        assert!(StreamEvent::from_sse("bogus", "{}").is_err());
    }
}
