//! `llorch-worker`: serves one GGUF model through llama.cpp with continuous batching over
//! HTTP/SSE and keeps itself registered with orcd. The binary is a thin `main` over this
//! library; tests drive the same pieces (`server::app`, `engine::EngineHandle`) directly.

pub mod auth;
pub mod body;
pub mod embeddings;
pub mod engine;
pub mod engine_error;
pub mod error;
pub mod flags;
pub mod lifecycle;
pub mod metrics;
pub mod model_source;
pub mod registration;
pub mod server;
pub mod state;
pub mod validation;
