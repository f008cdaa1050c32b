//! One streamed completion against the worker (`/execute`), orcd (`/v2/tasks`) or llama.cpp's
//! `llama-server` (`/completion`), timed as the client sees it.

use std::time::Instant;

use anyhow::{bail, Context as _};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use llorch_api::{ExecuteRequest, SamplingParams, StreamEvent, TaskRequest};
use serde::Deserialize;

/// Where a bench request goes.
#[derive(Debug, Clone)]
pub enum Target {
    Worker {
        url: String,
    },
    Orcd {
        url: String,
        model: String,
    },
    LlamaServer {
        url: String,
    },
    /// llama-server in router mode: the request's `model` picks (and loads) the model.
    LlamaRouter {
        url: String,
        model: String,
    },
}

/// One finished stream.
#[derive(Debug, Clone)]
pub struct Sample {
    pub sent: Instant,
    pub first_token: Instant,
    pub last_token: Instant,
    pub generated_tokens: u32,
    /// The prompt's tokens, as the server counts them.
    pub prompt_tokens: u32,
    /// Prompt tokens the server took from its cache, as it reports them.
    pub cached_tokens: u32,
    /// Tokens drafted by speculative decoding and how many of them were accepted, as the
    /// server reports them (0 where it does not speculate).
    pub draft_tokens: u32,
    pub draft_tokens_accepted: u32,
    pub text: String,
}

impl Sample {
    pub fn time_to_first_token_ms(&self) -> f64 {
        (self.first_token - self.sent).as_secs_f64() * 1000.0
    }

    /// Tokens after the first over the time between the first and the last.
    pub fn decode_rate(&self) -> f64 {
        let span = (self.last_token - self.first_token).as_secs_f64();
        match self.generated_tokens {
            0 | 1 => 0.0,
            tokens if span > 0.0 => f64::from(tokens - 1) / span,
            _ => 0.0,
        }
    }
}

/// The rate of several streams run at once, defined like the single-stream one: every
/// stream's tokens after its first, over the time from the earliest first token to the latest
/// last token.
pub fn aggregate_decode_rate(samples: &[Sample]) -> f64 {
    let Some(start) = samples.iter().map(|sample| sample.first_token).min() else {
        return 0.0;
    };
    let end = samples
        .iter()
        .map(|sample| sample.last_token)
        .max()
        .unwrap_or(start);
    let tokens: u32 = samples
        .iter()
        .map(|sample| sample.generated_tokens.saturating_sub(1))
        .sum();
    rate(tokens, start, end)
}

/// The rate of several streams sent at once as llama-batched-bench reports its own (`speed`):
/// all their tokens, prompts included, over the time from sending the first to the latest last
/// token.
pub fn end_to_end_rate(samples: &[Sample]) -> f64 {
    let (Some(start), Some(end)) = (
        samples.iter().map(|sample| sample.sent).min(),
        samples.iter().map(|sample| sample.last_token).max(),
    ) else {
        return 0.0;
    };
    let tokens: u32 = samples
        .iter()
        .map(|sample| sample.prompt_tokens + sample.generated_tokens)
        .sum();
    rate(tokens, start, end)
}

/// `tokens` over the time from `start` to `end`; 0 over no time.
fn rate(tokens: u32, start: Instant, end: Instant) -> f64 {
    let span = (end - start).as_secs_f64();
    if span > 0.0 {
        f64::from(tokens) / span
    } else {
        0.0
    }
}

/// A job id unique within this run and across concurrent bench processes.
fn next_job_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let next = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("bench-{}-{next}", std::process::id())
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature: 0.0,
        ..SamplingParams::default()
    }
}

/// Streams one greedy completion of `prompt` and times it.
pub async fn complete(
    http: &reqwest::Client,
    target: &Target,
    prompt: &str,
    max_tokens: u32,
) -> anyhow::Result<Sample> {
    complete_text(http, target, prompt, max_tokens, false).await
}

/// [`complete`] of a prompt whose special tokens (a chat template written out, such as
/// `<|im_start|>`) are parsed as such on every side, so all of them see the same tokens.
pub async fn complete_text(
    http: &reqwest::Client,
    target: &Target,
    prompt: &str,
    max_tokens: u32,
    parse_special: bool,
) -> anyhow::Result<Sample> {
    complete_with(http, target, prompt, greedy(max_tokens), parse_special).await
}

/// Streams one completion of `prompt` with `sampling` and times it; llama-server gets only
/// `max_tokens` and greedy decoding.
pub async fn complete_sampled(
    http: &reqwest::Client,
    target: &Target,
    prompt: &str,
    sampling: SamplingParams,
) -> anyhow::Result<Sample> {
    complete_with(http, target, prompt, sampling, false).await
}

async fn complete_with(
    http: &reqwest::Client,
    target: &Target,
    prompt: &str,
    sampling: SamplingParams,
    parse_special: bool,
) -> anyhow::Result<Sample> {
    let max_tokens = sampling.max_tokens;
    let request = match target {
        Target::Worker { url } => http.post(format!("{url}/execute")).json(&ExecuteRequest {
            job_id: next_job_id(),
            prompt: Some(prompt.to_owned()),
            messages: None,
            parse_special,
            sampling: sampling.clone(),
            tools: Default::default(),
            unknown: Default::default(),
        }),
        Target::Orcd { url, model } => http.post(format!("{url}/v2/tasks")).json(&TaskRequest {
            model: model.clone(),
            prompt: Some(prompt.to_owned()),
            messages: None,
            parse_special,
            sampling,
            tools: Default::default(),
            stream: true,
            unknown: Default::default(),
        }),
        // llama-server's defaults otherwise (its prompt cache stays on, as a user has it); it
        // parses special tokens in a prompt string always.
        Target::LlamaServer { url } => {
            http.post(format!("{url}/completion"))
                .json(&serde_json::json!({
                    "prompt": prompt,
                    "n_predict": max_tokens,
                    "temperature": 0.0,
                    "stream": true,
                }))
        }
        Target::LlamaRouter { url, model } => {
            http.post(format!("{url}/completion"))
                .json(&serde_json::json!({
                    "model": model,
                    "prompt": prompt,
                    "n_predict": max_tokens,
                    "temperature": 0.0,
                    "stream": true,
                }))
        }
    };
    let sent = Instant::now();
    let response = request.send().await.context("sending a bench request")?;
    if !response.status().is_success() {
        bail!(
            "a bench request answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let mut events = response.bytes_stream().eventsource();
    let mut timing = Timing {
        sent,
        first: None,
        last: None,
        text: String::new(),
    };
    while let Some(event) = events.next().await {
        let event = event.context("reading a bench stream")?;
        let end = match target {
            Target::LlamaServer { .. } | Target::LlamaRouter { .. } => {
                llama_server_event(&event.data, &mut timing)?
            }
            _ => llorch_event(&event.event, &event.data, &mut timing)?,
        };
        if let Some(counts) = end {
            let first_token = timing
                .first
                .context("a bench stream finished without a token")?;
            return Ok(Sample {
                sent,
                first_token,
                last_token: timing.last.unwrap_or(first_token),
                generated_tokens: counts.generated,
                prompt_tokens: counts.prompt,
                cached_tokens: counts.cached,
                draft_tokens: counts.drafted,
                draft_tokens_accepted: counts.accepted,
                text: timing.text,
            });
        }
    }
    bail!("a bench stream ended without its final event")
}

struct Timing {
    sent: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    text: String,
}

impl Timing {
    fn token(&mut self, text: &str) {
        let now = Instant::now();
        debug_assert!(now >= self.sent);
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.text.push_str(text);
    }
}

/// A finished stream's token counts, as its server reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    generated: u32,
    prompt: u32,
    cached: u32,
    drafted: u32,
    accepted: u32,
}

/// A worker or orcd event; the token counts once the stream is done.
fn llorch_event(name: &str, data: &str, timing: &mut Timing) -> anyhow::Result<Option<Counts>> {
    match StreamEvent::from_sse(name, data)? {
        StreamEvent::Token { text, .. } => timing.token(&text),
        StreamEvent::Done(stats) => {
            return Ok(Some(Counts {
                generated: stats.generated_tokens,
                prompt: stats.prompt_tokens,
                cached: stats.cached_prompt_tokens,
                drafted: stats.draft_tokens,
                accepted: stats.draft_tokens_accepted,
            }))
        }
        StreamEvent::Error { message, .. } => bail!("a bench stream failed: {message}"),
        StreamEvent::Queued { .. } | StreamEvent::Started { .. } => {}
    }
    Ok(None)
}

#[derive(Deserialize)]
struct LlamaServerChunk {
    #[serde(default)]
    content: String,
    #[serde(default)]
    stop: bool,
    #[serde(default)]
    tokens_predicted: Option<u32>,
    #[serde(default)]
    tokens_cached: Option<u32>,
    /// The prompt's tokens, cached ones included.
    #[serde(default)]
    tokens_evaluated: Option<u32>,
    #[serde(default)]
    timings: Option<LlamaServerTimings>,
}

#[derive(Deserialize)]
struct LlamaServerTimings {
    #[serde(default)]
    predicted_n: Option<u32>,
    #[serde(default)]
    cache_n: Option<u32>,
    /// Present when it speculates.
    #[serde(default)]
    draft_n: Option<u32>,
    #[serde(default)]
    draft_n_accepted: Option<u32>,
}

/// A `llama-server` `/completion` event: one per token, the last one has `stop: true`.
fn llama_server_event(data: &str, timing: &mut Timing) -> anyhow::Result<Option<Counts>> {
    if data.trim() == "[DONE]" {
        bail!("llama-server ended its stream without a final chunk");
    }
    let chunk: LlamaServerChunk = serde_json::from_str(data)
        .with_context(|| format!("reading a llama-server event: {data}"))?;
    if !chunk.stop {
        timing.token(&chunk.content);
        return Ok(None);
    }
    if !chunk.content.is_empty() {
        timing.token(&chunk.content);
    }
    let timings = chunk.timings.as_ref();
    let generated = chunk
        .tokens_predicted
        .or(timings.and_then(|timings| timings.predicted_n))
        .unwrap_or(0);
    let cached = timings
        .and_then(|timings| timings.cache_n)
        .or(chunk.tokens_cached)
        .unwrap_or(0);
    Ok(Some(Counts {
        generated,
        prompt: chunk.tokens_evaluated.unwrap_or(0),
        cached,
        drafted: timings.and_then(|timings| timings.draft_n).unwrap_or(0),
        accepted: timings
            .and_then(|timings| timings.draft_n_accepted)
            .unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(sent: Instant, first_ms: u64, last_ms: u64, tokens: u32) -> Sample {
        Sample {
            sent,
            first_token: sent + Duration::from_millis(first_ms),
            last_token: sent + Duration::from_millis(last_ms),
            generated_tokens: tokens,
            prompt_tokens: 10,
            cached_tokens: 0,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
            text: String::new(),
        }
    }

    #[test]
    fn rates_count_tokens_after_the_first() {
        let sent = Instant::now();
        let one = sample(sent, 100, 1100, 101);
        assert_eq!(one.time_to_first_token_ms(), 100.0);
        assert!((one.decode_rate() - 100.0).abs() < 1e-9);
        // Two streams side by side over the same second: twice the rate of one.
        let two = [one.clone(), sample(sent, 100, 1100, 101)];
        assert!((aggregate_decode_rate(&two) - 200.0).abs() < 1e-9);
        // Prefill of a later stream is not decode time: the span starts at the first token.
        let staggered = [one.clone(), sample(sent, 600, 1100, 51)];
        assert!((aggregate_decode_rate(&staggered) - 150.0).abs() < 1e-9);
        assert_eq!(sample(sent, 5, 5, 1).decode_rate(), 0.0);
    }

    #[test]
    fn the_end_to_end_rate_counts_prompts_and_the_whole_time() {
        let sent = Instant::now();
        // 10 prompt and 90 generated tokens each, sent together, the last token at 1 s.
        let two = [sample(sent, 100, 1000, 90), sample(sent, 300, 1000, 90)];
        assert!((end_to_end_rate(&two) - 200.0).abs() < 1e-9);
        assert_eq!(end_to_end_rate(&[]), 0.0);
    }

    #[test]
    fn llama_server_chunks_give_tokens_then_the_counts() {
        let mut timing = Timing {
            sent: Instant::now(),
            first: None,
            last: None,
            text: String::new(),
        };
        assert_eq!(
            llama_server_event(r#"{"content":" Paris","stop":false}"#, &mut timing).unwrap(),
            None
        );
        let end = llama_server_event(
            r#"{"content":"","stop":true,"tokens_predicted":7,"tokens_evaluated":12,"timings":{"predicted_n":7,"cache_n":3,"draft_n":5,"draft_n_accepted":4}}"#,
            &mut timing,
        )
        .unwrap();
        assert_eq!(
            end,
            Some(Counts {
                generated: 7,
                prompt: 12,
                cached: 3,
                drafted: 5,
                accepted: 4
            })
        );
        assert_eq!(timing.text, " Paris");
        assert!(llama_server_event("not json", &mut timing).is_err());
    }
}
