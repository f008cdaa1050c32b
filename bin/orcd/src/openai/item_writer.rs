//! What the Responses and Messages builders share: a job's text, read for tool calls when
//! tools were offered, becomes text items and call items opened, filled and closed in order.
//! Each builder says how (its items and the events that announce them); the order is here.

use super::tool_calls::{StreamPiece, ToolCallStream};

/// An answer written item by item: text, and tool calls whose arguments arrive in fragments.
pub trait ItemWriter {
    /// What the writer emits (a stream event of its API).
    type Event;

    /// The tool reader, when tools were offered.
    fn tool_reader(&mut self) -> Option<&mut ToolCallStream>;
    /// Whether the item being written is text.
    fn text_open(&self) -> bool;
    /// Appends text, opening a text item if none is open.
    fn text(&mut self, text: &str) -> Vec<Self::Event>;
    /// Closes what is open and opens a call of `name`.
    fn open_call(&mut self, name: String) -> Vec<Self::Event>;
    /// Appends to the open call's arguments.
    fn arguments(&mut self, fragment: &str) -> Vec<Self::Event>;
    /// Closes the open item, if any.
    fn close(&mut self) -> Vec<Self::Event>;

    /// The events a piece of generated text becomes.
    fn write(&mut self, text: &str) -> Vec<Self::Event> {
        match self.tool_reader().map(|reader| reader.push(text)) {
            Some(pieces) => self.pieces(pieces),
            None => self.text(text),
        }
    }

    /// What the tool reader still held at the end, then the last item closed.
    fn write_end(&mut self) -> Vec<Self::Event> {
        let held = (self.tool_reader().map(ToolCallStream::finish)).unwrap_or_default();
        let mut events = self.pieces(held);
        events.extend(self.close());
        events
    }

    fn pieces(&mut self, pieces: Vec<StreamPiece>) -> Vec<Self::Event> {
        let mut events = Vec::new();
        for piece in pieces {
            match piece {
                // Whitespace between calls is not worth an item of its own.
                StreamPiece::Content(text) if !self.text_open() && text.trim().is_empty() => {}
                StreamPiece::Content(text) => events.extend(self.text(&text)),
                StreamPiece::CallStart { name } => events.extend(self.open_call(name)),
                StreamPiece::Arguments(fragment) => events.extend(self.arguments(&fragment)),
                StreamPiece::Call(call) => {
                    events.extend(self.open_call(call.name));
                    events.extend(self.arguments(&call.arguments));
                    events.extend(self.close());
                }
            }
        }
        events
    }
}
