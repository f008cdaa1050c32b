//! The Messages API's answer: the `message` object and the stream events, as serde structs,
//! and the builder that turns a job's text into content blocks (text, and `tool_use` for the
//! calls the tool reader finds), piece by piece, with the events that say so. A whole answer
//! runs the same builder over the whole text.

use llorch_api::{FinishReason, GenerationStats};
use serde::Serialize;
use serde_json::Value;

use crate::openai::item_writer::ItemWriter;
use crate::openai::tool_calls::ToolCallStream;

/// A `message` object: the whole answer, or (empty) what `message_start` carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageObject {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub content: Vec<ContentBlock>,
    pub model: String,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<String>,
    pub usage: Usage,
}

/// Token counts. `input_tokens` is the whole prompt, as `count_tokens` counts it; orcd reuses
/// a worker's cache without `cache_control`, so nothing is reported as a cache read or write.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cache_creation_input_tokens: u32,
    pub cache_read_input_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        /// The arguments object.
        input: Value,
    },
}

/// One event of a Messages stream; its `type` names the SSE event too.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: MessageObject,
    },
    Ping,
    ContentBlockStart {
        index: usize,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: Delta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: Usage,
    },
    MessageStop,
    Error {
        error: crate::anthropic_error::ErrorDetail,
    },
}

impl StreamEvent {
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    TextDelta { text: String },
    InputJsonDelta { partial_json: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageDelta {
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<String>,
}

/// Anthropic's `stop_reason`. A stop string ends the turn like the end-of-turn token does:
/// the worker does not say which of the two it was, so both are `end_turn`.
fn stop_reason(reason: FinishReason, called_tools: bool) -> &'static str {
    match reason {
        FinishReason::Length => "max_tokens",
        FinishReason::Stop if called_tools => "tool_use",
        FinishReason::Stop | FinishReason::Cancelled => "end_turn",
    }
}

/// A new `tool_use` id, in Anthropic's `toolu_...` form.
fn tool_use_id() -> String {
    format!("toolu_{}", uuid::Uuid::new_v4().simple())
}

/// One message being written.
#[derive(Debug)]
pub struct MessageBuilder {
    message: MessageObject,
    tools: Option<ToolCallStream>,
    /// Whether the last block is still being written.
    open: bool,
    /// The arguments text of the open `tool_use` block (its `input` is parsed at the end).
    arguments: String,
}

impl MessageBuilder {
    pub fn new(id: String, model: String, tools: Option<ToolCallStream>) -> MessageBuilder {
        MessageBuilder {
            message: MessageObject {
                id,
                kind: "message",
                role: "assistant",
                content: Vec::new(),
                model,
                stop_reason: None,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: 0,
                    output_tokens: 0,
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: 0,
                },
            },
            tools,
            open: false,
            arguments: String::new(),
        }
    }

    pub fn message(&self) -> &MessageObject {
        &self.message
    }

    /// The events a piece of generated text becomes.
    pub fn push(&mut self, text: &str) -> Vec<StreamEvent> {
        self.write(text)
    }

    /// The last blocks' events, then `message_delta` (stop reason, usage) and `message_stop`.
    pub fn finish(&mut self, stats: &GenerationStats) -> Vec<StreamEvent> {
        let mut events = self.write_end();
        let called_tools = (self.message.content.iter())
            .any(|block| matches!(block, ContentBlock::ToolUse { .. }));
        let reason = stop_reason(stats.finish_reason, called_tools);
        self.message.stop_reason = Some(reason);
        self.message.usage.input_tokens = stats.prompt_tokens;
        self.message.usage.output_tokens = stats.generated_tokens;
        events.push(StreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(reason),
                stop_sequence: None,
            },
            usage: self.message.usage,
        });
        events.push(StreamEvent::MessageStop);
        events
    }

    fn open(&mut self, block: ContentBlock) -> Vec<StreamEvent> {
        self.message.content.push(block.clone());
        self.open = true;
        vec![StreamEvent::ContentBlockStart {
            index: self.message.content.len() - 1,
            content_block: block,
        }]
    }
}

impl ItemWriter for MessageBuilder {
    type Event = StreamEvent;

    fn tool_reader(&mut self) -> Option<&mut ToolCallStream> {
        self.tools.as_mut()
    }

    fn text_open(&self) -> bool {
        self.open && matches!(self.message.content.last(), Some(ContentBlock::Text { .. }))
    }

    fn text(&mut self, text: &str) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        if text.is_empty() {
            return events;
        }
        if !self.text_open() {
            events.extend(self.close());
            events.extend(self.open(ContentBlock::Text {
                text: String::new(),
            }));
        }
        if let Some(ContentBlock::Text { text: written }) = self.message.content.last_mut() {
            written.push_str(text);
        }
        events.push(StreamEvent::ContentBlockDelta {
            index: self.message.content.len() - 1,
            delta: Delta::TextDelta {
                text: text.to_owned(),
            },
        });
        events
    }

    fn open_call(&mut self, name: String) -> Vec<StreamEvent> {
        let mut events = self.close();
        self.arguments.clear();
        events.extend(self.open(ContentBlock::ToolUse {
            id: tool_use_id(),
            name,
            input: Value::Object(Default::default()),
        }));
        events
    }

    fn arguments(&mut self, fragment: &str) -> Vec<StreamEvent> {
        let call_open = self.open
            && matches!(
                self.message.content.last(),
                Some(ContentBlock::ToolUse { .. })
            );
        if !call_open {
            // The tool reader sends arguments only after opening a call.
            return Vec::new();
        }
        self.arguments.push_str(fragment);
        vec![StreamEvent::ContentBlockDelta {
            index: self.message.content.len() - 1,
            delta: Delta::InputJsonDelta {
                partial_json: fragment.to_owned(),
            },
        }]
    }

    fn close(&mut self) -> Vec<StreamEvent> {
        if !self.open {
            return Vec::new();
        }
        self.open = false;
        let index = self.message.content.len() - 1;
        if let Some(ContentBlock::ToolUse { input, .. }) = self.message.content.last_mut() {
            // The tool reader passes only calls whose arguments are a JSON object.
            if let Ok(arguments) = serde_json::from_str::<Value>(&self.arguments) {
                *input = arguments;
            }
        }
        vec![StreamEvent::ContentBlockStop { index }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::tool_calls::OfferedTools;

    fn stats(finish_reason: FinishReason) -> GenerationStats {
        GenerationStats {
            finish_reason,
            prompt_tokens: 11,
            generated_tokens: 4,
            time_to_first_token_ms: 1.0,
            tokens_per_second: 1.0,
            prompt_tokens_per_second: 1.0,
            cached_prompt_tokens: 3,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
        }
    }

    fn names(events: &[StreamEvent]) -> Vec<&'static str> {
        events.iter().map(StreamEvent::name).collect()
    }

    #[test]
    fn text_is_one_block_and_the_end_carries_the_stop_reason_and_usage() {
        let mut builder = MessageBuilder::new("msg_1".into(), "m".into(), None);
        let mut events = builder.push("Hi");
        events.extend(builder.push(" there"));
        events.extend(builder.finish(&stats(FinishReason::Length)));
        assert_eq!(
            names(&events),
            [
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let message = builder.message();
        assert_eq!(
            message.content,
            [ContentBlock::Text {
                text: "Hi there".into()
            }]
        );
        assert_eq!(message.stop_reason, Some("max_tokens"));
        assert_eq!(
            (message.usage.input_tokens, message.usage.output_tokens),
            (11, 4)
        );
        let delta = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(
            delta,
            serde_json::json!({"type": "content_block_delta", "index": 0,
                               "delta": {"type": "text_delta", "text": "Hi"}})
        );
    }

    #[test]
    fn a_tool_call_is_a_tool_use_block_with_input_json_deltas() {
        let tools = OfferedTools {
            names: vec!["get_weather".into()],
            parallel: true,
        };
        let mut builder = MessageBuilder::new(
            "msg_1".into(),
            "m".into(),
            Some(ToolCallStream::streaming(tools)),
        );
        let mut events = builder.push("<tool_call>\n{\"name\": \"get_weather\", ");
        events.extend(builder.push("\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
        events.extend(builder.finish(&stats(FinishReason::Stop)));
        let names = names(&events);
        assert_eq!(names[0], "content_block_start");
        assert!(names.contains(&"content_block_delta"), "{names:?}");
        let message = builder.message();
        assert_eq!(message.stop_reason, Some("tool_use"));
        let [ContentBlock::ToolUse { id, name, input }] = message.content.as_slice() else {
            panic!("{:?}", message.content);
        };
        assert!(id.starts_with("toolu_"));
        assert_eq!(name, "get_weather");
        assert_eq!(*input, serde_json::json!({"city": "Paris"}));
    }
}
