//! SSE framing of task streams: each [`StreamEvent`] becomes `event: <name>` + `data: <json>`,
//! an [`OrcdError`] becomes the `error` event that ends the stream.

use std::convert::Infallible;

use axum::http::HeaderName;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use llorch_api::StreamEvent;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::dispatch::JobItem;

/// Names the job of a `POST /v2/tasks` answer, so a client can cancel it before any event.
pub const JOB_ID_HEADER: HeaderName = HeaderName::from_static(llorch_api::JOB_ID_HEADER);

/// Tells reverse proxies (nginx) not to buffer the stream, or tokens arrive in bursts.
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub fn to_sse_event(event: &StreamEvent) -> Event {
    // `data_json` is compact JSON: one line, so one `data:` field.
    Event::default().event(event.name()).data(event.data_json())
}

/// The wire form of one item of a job's stream.
pub fn frame(item: JobItem) -> Event {
    match item {
        Ok(event) => to_sse_event(&event),
        Err(error) => {
            error.log();
            to_sse_event(&error.to_stream_event())
        }
    }
}

/// An SSE response that relays a job's items until its task closes the channel. Dropping the
/// response (client gone) drops the receiver, which the job's task notices and cancels.
pub fn sse_response(items: mpsc::Receiver<JobItem>) -> Response {
    let events = ReceiverStream::new(items).map(|item| Ok::<_, Infallible>(frame(item)));
    (
        [(X_ACCEL_BUFFERING, "no")],
        Sse::new(events).keep_alive(KeepAlive::default()),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OrcdError;
    use eventsource_stream::Eventsource;
    use llorch_api::{ErrorKind, FinishReason, GenerationStats};

    async fn body_of(items: Vec<JobItem>) -> (Response, String) {
        let (sender, receiver) = mpsc::channel(items.len().max(1));
        for item in items {
            sender.try_send(item).unwrap();
        }
        drop(sender);
        let response = sse_response(receiver);
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            Response::from_parts(parts, axum::body::Body::empty()),
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn events_are_framed_as_name_and_one_json_data_line() {
        let started = StreamEvent::Started {
            job_id: "j".into(),
            worker_id: "w".into(),
        };
        // A newline inside the text must stay escaped inside the one `data:` line.
        let token = StreamEvent::Token {
            text: "a\nb".into(),
            index: 0,
            logprobs: Vec::new(),
            tokens: 1,
        };
        let (response, body) = body_of(vec![Ok(started.clone()), Ok(token.clone())]).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        assert_eq!(
            body,
            format!(
                "event: started\ndata: {}\n\nevent: token\ndata: {}\n\n",
                started.data_json(),
                token.data_json()
            )
        );
        assert!(token.data_json().contains("a\\nb"));
    }

    #[tokio::test]
    async fn errors_become_error_events_and_everything_parses_back() {
        let done = StreamEvent::Done(GenerationStats {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 2,
            generated_tokens: 1,
            time_to_first_token_ms: 3.0,
            tokens_per_second: 4.0,
            prompt_tokens_per_second: 5.0,
            cached_prompt_tokens: 0,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
        });
        let items = vec![
            Ok(StreamEvent::queued("j", 2)),
            Ok(done.clone()),
            Err(OrcdError::ShuttingDown),
        ];
        let (_, body) = body_of(items).await;
        let parsed: Vec<StreamEvent> =
            futures::stream::iter([Ok::<_, Infallible>(body.into_bytes())])
                .eventsource()
                .map(|event| {
                    let event = event.unwrap();
                    StreamEvent::from_sse(&event.event, &event.data).unwrap()
                })
                .collect()
                .await;
        assert_eq!(
            parsed,
            vec![
                StreamEvent::queued("j", 2),
                done,
                StreamEvent::Error {
                    message: "orcd is shutting down; the job was not finished".into(),
                    error_type: ErrorKind::ShuttingDown,
                },
            ]
        );
    }
}
