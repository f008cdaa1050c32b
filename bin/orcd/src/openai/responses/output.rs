//! Builds a response's `output` from a job's text, piece by piece: text becomes an assistant
//! `message` item, tool calls `function_call` items, each opened, filled and closed with the
//! Responses stream events that say so. A whole (non-streamed) answer runs the same builder
//! over the whole text and keeps only the finished response, so both carry the same items.

use llorch_api::tools::{FunctionCall, ToolKind};
use llorch_api::{ChatMessage, FinishReason, GenerationStats, ToolCall};

use super::objects::{
    EventBody, IncompleteDetails, InputTokensDetails, OutputItem, OutputText, OutputTokensDetails,
    ResponseError, ResponseObject, ResponseUsage, Status,
};
use crate::openai::answer::tool_call_id;
use crate::openai::item_writer::ItemWriter;
use crate::openai::tool_calls::ToolCallStream;

/// One response being written.
#[derive(Debug)]
pub struct OutputBuilder {
    response: ResponseObject,
    /// Reads tool calls out of the text when tools were offered.
    tools: Option<ToolCallStream>,
    /// Whether the last item of `output` is still being written.
    open: bool,
}

impl OutputBuilder {
    /// `response` is the answer so far (`in_progress`, no output).
    pub fn new(response: ResponseObject, tools: Option<ToolCallStream>) -> OutputBuilder {
        OutputBuilder {
            response,
            tools,
            open: false,
        }
    }

    /// The response as it stands.
    pub fn response(&self) -> &ResponseObject {
        &self.response
    }

    /// The events a piece of generated text becomes.
    pub fn push(&mut self, text: &str) -> Vec<EventBody> {
        self.write(text)
    }

    /// Closes the output after the job's end: the last events, then the terminal one
    /// (`response.completed`, or `response.incomplete` when `max_output_tokens` cut it short).
    pub fn finish(&mut self, stats: &GenerationStats) -> Vec<EventBody> {
        let mut events = self.write_end();
        let cut_short = stats.finish_reason == FinishReason::Length;
        self.response.status = if cut_short {
            Status::Incomplete
        } else {
            Status::Completed
        };
        if cut_short {
            self.response.incomplete_details = Some(IncompleteDetails {
                reason: "max_output_tokens",
            });
        }
        self.response.usage = Some(ResponseUsage {
            input_tokens: stats.prompt_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: stats.cached_prompt_tokens,
            },
            output_tokens: stats.generated_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: 0,
            },
            total_tokens: stats.prompt_tokens + stats.generated_tokens,
        });
        let response = Box::new(self.response.clone());
        events.push(if cut_short {
            EventBody::Incomplete { response }
        } else {
            EventBody::Completed { response }
        });
        events
    }

    /// Ends the response as failed (the job failed after it started).
    pub fn fail(&mut self, code: &'static str, message: String) -> EventBody {
        self.response.status = Status::Failed;
        self.response.error = Some(ResponseError { code, message });
        EventBody::Failed {
            response: Box::new(self.response.clone()),
        }
    }

    /// The finished response as chat messages: the assistant's text and its calls, one turn.
    pub fn as_messages(&self) -> Vec<ChatMessage> {
        let mut turn = ChatMessage::new("assistant", "");
        for item in &self.response.output {
            match item {
                OutputItem::Message { content, .. } => {
                    for part in content {
                        turn.content.push_str(&part.text);
                    }
                }
                OutputItem::FunctionCall {
                    call_id,
                    name,
                    arguments,
                    ..
                } => turn.tool_calls.push(ToolCall {
                    id: call_id.clone(),
                    kind: ToolKind::Function,
                    function: FunctionCall {
                        name: name.clone(),
                        arguments: arguments.clone(),
                    },
                }),
            }
        }
        vec![turn]
    }

    fn open(&mut self, item: OutputItem) -> Vec<EventBody> {
        self.response.output.push(item.clone());
        self.open = true;
        vec![EventBody::OutputItemAdded {
            output_index: self.response.output.len() - 1,
            item,
        }]
    }

    fn last_item(&self) -> (String, usize) {
        let index = self.response.output.len().saturating_sub(1);
        let id = (self.response.output.last())
            .map(|item| item.id().to_owned())
            .unwrap_or_default();
        (id, index)
    }
}

impl ItemWriter for OutputBuilder {
    type Event = EventBody;

    fn tool_reader(&mut self) -> Option<&mut ToolCallStream> {
        self.tools.as_mut()
    }

    fn text_open(&self) -> bool {
        self.open
            && matches!(
                self.response.output.last(),
                Some(OutputItem::Message { .. })
            )
    }

    fn text(&mut self, text: &str) -> Vec<EventBody> {
        let mut events = Vec::new();
        if text.is_empty() {
            return events;
        }
        if !self.text_open() {
            events.extend(self.close());
            let item = OutputItem::Message {
                id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                status: Status::InProgress,
                role: "assistant",
                content: Vec::new(),
            };
            events.extend(self.open(item));
            let (item_id, output_index) = self.last_item();
            events.push(EventBody::ContentPartAdded {
                item_id,
                output_index,
                content_index: 0,
                part: OutputText::new(String::new()),
            });
            if let Some(OutputItem::Message { content, .. }) = self.response.output.last_mut() {
                content.push(OutputText::new(String::new()));
            }
        }
        let (item_id, output_index) = self.last_item();
        if let Some(OutputItem::Message { content, .. }) = self.response.output.last_mut() {
            if let Some(part) = content.last_mut() {
                part.text.push_str(text);
            }
        }
        events.push(EventBody::OutputTextDelta {
            item_id,
            output_index,
            content_index: 0,
            delta: text.to_owned(),
            logprobs: Vec::new(),
        });
        events
    }

    fn open_call(&mut self, name: String) -> Vec<EventBody> {
        let mut events = self.close();
        let item = OutputItem::FunctionCall {
            id: format!("fc_{}", uuid::Uuid::new_v4().simple()),
            call_id: tool_call_id(),
            name,
            arguments: String::new(),
            status: Status::InProgress,
        };
        events.extend(self.open(item));
        events
    }

    fn arguments(&mut self, fragment: &str) -> Vec<EventBody> {
        let (item_id, output_index) = self.last_item();
        match self.response.output.last_mut() {
            Some(OutputItem::FunctionCall { arguments, .. }) if self.open => {
                arguments.push_str(fragment);
                vec![EventBody::FunctionCallArgumentsDelta {
                    item_id,
                    output_index,
                    delta: fragment.to_owned(),
                }]
            }
            // The tool reader sends arguments only after opening a call.
            _ => Vec::new(),
        }
    }

    /// Closes the item being written, if any, with the events that end it.
    fn close(&mut self) -> Vec<EventBody> {
        if !self.open {
            return Vec::new();
        }
        self.open = false;
        let (item_id, output_index) = self.last_item();
        let Some(item) = self.response.output.last_mut() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        match item {
            OutputItem::Message {
                status, content, ..
            } => {
                *status = Status::Completed;
                for (content_index, part) in content.iter().enumerate() {
                    events.push(EventBody::OutputTextDone {
                        item_id: item_id.clone(),
                        output_index,
                        content_index,
                        text: part.text.clone(),
                        logprobs: Vec::new(),
                    });
                    events.push(EventBody::ContentPartDone {
                        item_id: item_id.clone(),
                        output_index,
                        content_index,
                        part: part.clone(),
                    });
                }
            }
            OutputItem::FunctionCall {
                status,
                name,
                arguments,
                ..
            } => {
                *status = Status::Completed;
                events.push(EventBody::FunctionCallArgumentsDone {
                    item_id,
                    output_index,
                    name: name.clone(),
                    arguments: arguments.clone(),
                });
            }
        }
        events.push(EventBody::OutputItemDone {
            output_index,
            item: item.clone(),
        });
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::tool_calls::OfferedTools;

    fn in_progress() -> ResponseObject {
        ResponseObject::sample("resp_1", Status::InProgress)
    }

    fn stats(finish_reason: FinishReason) -> GenerationStats {
        GenerationStats {
            finish_reason,
            prompt_tokens: 7,
            generated_tokens: 3,
            time_to_first_token_ms: 1.0,
            tokens_per_second: 1.0,
            prompt_tokens_per_second: 1.0,
            cached_prompt_tokens: 4,
            draft_tokens: 0,
            draft_tokens_accepted: 0,
        }
    }

    fn names(events: &[EventBody]) -> Vec<&'static str> {
        events.iter().map(EventBody::name).collect()
    }

    #[test]
    fn text_streams_as_one_message_item_and_completes_with_usage() {
        let mut builder = OutputBuilder::new(in_progress(), None);
        let mut events = builder.push("Hel");
        events.extend(builder.push("lo"));
        events.extend(builder.finish(&stats(FinishReason::Stop)));
        assert_eq!(
            names(&events),
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let response = builder.response();
        assert_eq!(response.status, Status::Completed);
        let usage = response.usage.unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens, usage.total_tokens),
            (7, 3, 10)
        );
        assert_eq!(usage.input_tokens_details.cached_tokens, 4);
        let OutputItem::Message {
            content, status, ..
        } = &response.output[0]
        else {
            panic!("{:?}", response.output);
        };
        assert_eq!(
            (content[0].text.as_str(), *status),
            ("Hello", Status::Completed)
        );
    }

    #[test]
    fn a_tool_call_becomes_a_function_call_item_with_argument_deltas() {
        let tools = OfferedTools {
            names: vec!["get_weather".into()],
            parallel: true,
        };
        let mut builder = OutputBuilder::new(in_progress(), Some(ToolCallStream::streaming(tools)));
        let mut events = Vec::new();
        for piece in [
            "<tool_call>\n{\"name\": \"get_weather\", ",
            "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        ] {
            events.extend(builder.push(piece));
        }
        events.extend(builder.finish(&stats(FinishReason::Stop)));
        let names = names(&events);
        assert_eq!(names.first(), Some(&"response.output_item.added"));
        assert!(
            names.contains(&"response.function_call_arguments.delta"),
            "{names:?}"
        );
        assert!(
            names.contains(&"response.function_call_arguments.done"),
            "{names:?}"
        );
        assert_eq!(names.last(), Some(&"response.completed"));
        let output = &builder.response().output;
        assert_eq!(output.len(), 1, "{output:?}");
        let OutputItem::FunctionCall {
            name,
            arguments,
            call_id,
            ..
        } = &output[0]
        else {
            panic!("{output:?}");
        };
        assert_eq!(name, "get_weather");
        assert!(call_id.starts_with("call_"));
        let arguments: serde_json::Value = serde_json::from_str(arguments).unwrap();
        assert_eq!(arguments, serde_json::json!({"city": "Paris"}));
        let turn = builder.as_messages();
        assert_eq!(turn[0].tool_calls[0].id, *call_id);
    }

    #[test]
    fn a_cut_short_answer_is_incomplete() {
        let mut builder = OutputBuilder::new(in_progress(), None);
        builder.push("a");
        let events = builder.finish(&stats(FinishReason::Length));
        assert_eq!(names(&events).last(), Some(&"response.incomplete"));
        let response = builder.response();
        assert_eq!(response.status, Status::Incomplete);
        assert_eq!(
            response.incomplete_details.as_ref().map(|d| d.reason),
            Some("max_output_tokens")
        );
    }
}
