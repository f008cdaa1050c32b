//! Tool calls in generated text: the syntaxes chat templates teach models, turned into OpenAI's
//! `tool_calls`. Recognised: Qwen 2.5 / Hermes `<tool_call>{"name": ..., "arguments": ...}
//! </tool_call>` (several in a row), Mistral `[TOOL_CALLS][{...}, ...]`, Llama 3.x
//! `<|python_tag|>{...}`, a bare `{"name": ..., "parameters": ...}` answer and a bare list of
//! calls (`[TOOL_CALLS]` and `<|python_tag|>` are control tokens, which the worker does not write
//! out as text). A call counts only when it names an offered tool and its arguments are a JSON
//! object; anything else stays text.
//!
//! [`parse_answer`] reads a whole answer; [`ToolCallStream::streaming`] reads one piece by
//! piece, streams the text before and between calls as content at once, opens a Hermes or bare
//! JSON call as soon as its name is read and streams its arguments as they are generated (other
//! calls are sent whole once complete), and holds back only what may be the
//! start of a call marker (and a whole answer that opens with `{` or `[`, until it is known
//! whether it is a call).

use serde_json::Value;

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";
const MARKERS: [&str; 3] = [HERMES_OPEN, MISTRAL, PYTHON_TAG];

/// One call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToolCall {
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// The tools a request offered, for telling calls from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTools {
    pub names: Vec<String>,
    /// `parallel_tool_calls`: when false, calls after the first are dropped.
    pub parallel: bool,
}

/// A whole answer: the text around the calls, and the calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAnswer {
    /// `None` when the answer is only calls.
    pub content: Option<String>,
    pub calls: Vec<ParsedToolCall>,
}

/// Splits a whole answer into content and calls.
pub fn parse_answer(text: &str, tools: &OfferedTools) -> ParsedAnswer {
    let mut stream = ToolCallStream::new(tools.clone());
    let mut content = String::new();
    let mut calls = Vec::new();
    for piece in stream.push(text).into_iter().chain(stream.finish()) {
        match piece {
            StreamPiece::Content(text) => content.push_str(&text),
            StreamPiece::Call(call) => calls.push(call),
            // Only a streaming reader opens calls before they are complete.
            StreamPiece::CallStart { .. } | StreamPiece::Arguments(_) => {}
        }
    }
    let content = if calls.is_empty() {
        Some(content)
    } else {
        Some(content.trim().to_owned()).filter(|text| !text.is_empty())
    };
    ParsedAnswer { content, calls }
}

/// What a piece of streamed text becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPiece {
    Content(String),
    /// A whole call.
    Call(ParsedToolCall),
    /// A call whose arguments follow as [`StreamPiece::Arguments`] fragments.
    CallStart {
        name: String,
    },
    /// The next fragment of the arguments of the call opened last.
    Arguments(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Plain text; watching for a marker.
    Text,
    /// Inside `<tool_call>`, waiting for `</tool_call>`.
    Hermes,
    /// After `[TOOL_CALLS]` or `<|python_tag|>`: calls to the end of the answer.
    ToEnd,
    /// The answer opened with `{` or `[`: bare JSON calls, or text; known at the end.
    BareJson,
}

/// Reads one choice's streamed text.
#[derive(Debug)]
pub struct ToolCallStream {
    tools: OfferedTools,
    mode: Mode,
    /// Text not yet decided on.
    buffer: String,
    /// Whitespace not yet sent: dropped around calls, sent before further text.
    held_whitespace: String,
    sent_content: bool,
    calls: usize,
    /// Open calls as soon as their name is read and stream their arguments.
    incremental: bool,
    /// The Hermes block being read does not start `{"name": ..., "arguments": {`: it is
    /// parsed whole at its end.
    whole_block: bool,
    /// The call being streamed, while its block is open.
    open_call: Option<ArgumentsScan>,
}

/// Where the streamed arguments object of an open call stands.
#[derive(Debug, Default)]
struct ArgumentsScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    done: bool,
}

impl ArgumentsScan {
    /// How much of `text` belongs to the arguments (all of it unless they end inside).
    fn scan(&mut self, text: &str) -> usize {
        for (at, c) in text.char_indices() {
            if self.in_string {
                match c {
                    _ if self.escaped => self.escaped = false,
                    '\\' => self.escaped = true,
                    '"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.done = true;
                        return at + 1;
                    }
                }
                _ => {}
            }
        }
        text.len()
    }
}

/// The start of a Hermes call, `{"name": "...", "arguments": ` up to the arguments' `{`.
#[derive(Debug, PartialEq, Eq)]
enum CallHeader {
    Incomplete,
    NotAHeader,
    Found { name: String, length: usize },
}

fn call_header(text: &str) -> CallHeader {
    let mut rest = text;
    // Each step: literal alternatives expected after optional whitespace.
    let expect = |rest: &mut &str, literals: &[&str]| -> Option<bool> {
        *rest = rest.trim_start();
        for literal in literals {
            if let Some(after) = rest.strip_prefix(literal) {
                *rest = after;
                return Some(true);
            }
            if literal.starts_with(*rest) {
                return None;
            }
        }
        Some(false)
    };
    for literals in [&["{"][..], &["\"name\""], &[":"]] {
        match expect(&mut rest, literals) {
            None => return CallHeader::Incomplete,
            Some(false) => return CallHeader::NotAHeader,
            Some(true) => {}
        }
    }
    rest = rest.trim_start();
    if rest.is_empty() {
        return CallHeader::Incomplete;
    }
    if !rest.starts_with('"') {
        return CallHeader::NotAHeader;
    }
    let mut escaped = false;
    let mut close = None;
    for (at, c) in rest.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                close = Some(at);
                break;
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return CallHeader::Incomplete;
    };
    let Ok(name) = serde_json::from_str::<String>(&rest[..=close]) else {
        return CallHeader::NotAHeader;
    };
    rest = &rest[close + 1..];
    for literals in [&[","][..], &["\"arguments\"", "\"parameters\""], &[":"]] {
        match expect(&mut rest, literals) {
            None => return CallHeader::Incomplete,
            Some(false) => return CallHeader::NotAHeader,
            Some(true) => {}
        }
    }
    rest = rest.trim_start();
    match rest.chars().next() {
        None => CallHeader::Incomplete,
        Some('{') => CallHeader::Found {
            name,
            length: text.len() - rest.len(),
        },
        Some(_) => CallHeader::NotAHeader,
    }
}

impl ToolCallStream {
    /// A reader that emits calls whole, once complete.
    pub fn new(tools: OfferedTools) -> ToolCallStream {
        ToolCallStream {
            tools,
            mode: Mode::Text,
            buffer: String::new(),
            held_whitespace: String::new(),
            sent_content: false,
            calls: 0,
            incremental: false,
            whole_block: false,
            open_call: None,
        }
    }

    /// A reader that opens Hermes calls as soon as their name is read and streams their
    /// arguments as they come.
    pub fn streaming(tools: OfferedTools) -> ToolCallStream {
        ToolCallStream {
            incremental: true,
            ..ToolCallStream::new(tools)
        }
    }

    /// Calls emitted so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Takes the next piece of text; returns what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<StreamPiece> {
        self.buffer.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.mode {
                Mode::Text => {
                    if !self.sent_content && self.calls == 0 {
                        let start = self.buffer.trim_start();
                        if start.is_empty() {
                            return out;
                        }
                        if start.starts_with('{') || start.starts_with('[') {
                            self.whole_block = !self.incremental;
                            self.open_call = None;
                            self.mode = Mode::BareJson;
                            continue;
                        }
                    }
                    let found = MARKERS
                        .iter()
                        .filter_map(|marker| Some((self.buffer.find(marker)?, *marker)))
                        .min();
                    match found {
                        Some((at, marker)) => {
                            let before: String = self.buffer.drain(..at + marker.len()).collect();
                            self.content(&before[..at], &mut out);
                            self.whole_block = !self.incremental;
                            self.open_call = None;
                            self.mode = if marker == HERMES_OPEN {
                                Mode::Hermes
                            } else {
                                self.buffer.insert_str(0, marker);
                                Mode::ToEnd
                            };
                        }
                        None => {
                            let keep = marker_prefix_len(&self.buffer);
                            let sendable = self.buffer.len() - keep;
                            let text: String = self.buffer.drain(..sendable).collect();
                            self.content(&text, &mut out);
                            return out;
                        }
                    }
                }
                Mode::Hermes if !self.whole_block => {
                    if !self.read_open_call(Some(HERMES_CLOSE), &mut out) {
                        return out;
                    }
                }
                Mode::BareJson if !self.whole_block => {
                    self.read_open_call(None, &mut out);
                    return out;
                }
                Mode::Hermes => {
                    let Some(at) = self.buffer.find(HERMES_CLOSE) else {
                        return out;
                    };
                    let block: String = self.buffer.drain(..at + HERMES_CLOSE.len()).collect();
                    let body = &block[..at];
                    match parse_call(body, &self.tools) {
                        Some(call) => self.call(call, &mut out),
                        None => self.content(&format!("{HERMES_OPEN}{block}"), &mut out),
                    }
                    self.mode = Mode::Text;
                }
                Mode::ToEnd | Mode::BareJson => return out,
            }
        }
    }

    /// The end of the answer: whatever was held back.
    pub fn finish(&mut self) -> Vec<StreamPiece> {
        let mut out = Vec::new();
        let rest = std::mem::take(&mut self.buffer);
        match self.mode {
            Mode::Text => self.content(&rest, &mut out),
            // A streamed call cut short keeps the arguments sent so far, as OpenAI's do; what
            // follows a bare call's arguments (its closing brace) is not text.
            Mode::Hermes | Mode::BareJson if self.open_call.is_some() => self.open_call = None,
            // An answer cut short (or a model that never closes the block): a call if it parses.
            Mode::Hermes => match parse_call(&rest, &self.tools) {
                Some(call) => self.call(call, &mut out),
                None => self.content(&format!("{HERMES_OPEN}{rest}"), &mut out),
            },
            Mode::ToEnd | Mode::BareJson => match parse_to_end(&rest, &self.tools) {
                Some(calls) => {
                    for call in calls {
                        self.call(call, &mut out);
                    }
                }
                None => self.content(&rest, &mut out),
            },
        }
        if self.calls == 0 && !self.held_whitespace.is_empty() {
            out.push(StreamPiece::Content(std::mem::take(
                &mut self.held_whitespace,
            )));
        }
        self.mode = Mode::Text;
        out
    }

    /// Streams the call being read (a Hermes block, or a bare JSON answer when `close` is
    /// `None`): opens it once its name is known, sends its arguments as they come, and ends a
    /// block at `close`. Returns whether the block ended or turned out not to be streamable
    /// (to be parsed whole), so reading goes on.
    fn read_open_call(&mut self, close: Option<&str>, out: &mut Vec<StreamPiece>) -> bool {
        if self.open_call.is_none() {
            let closed = close.is_some_and(|close| self.buffer.contains(close));
            match call_header(&self.buffer) {
                CallHeader::Incomplete if !closed => return false,
                CallHeader::Found { name, length }
                    if self.tools.names.contains(&name)
                        && (self.calls == 0 || self.tools.parallel) =>
                {
                    self.buffer.drain(..length);
                    self.held_whitespace.clear();
                    self.calls += 1;
                    out.push(StreamPiece::CallStart { name });
                    self.open_call = Some(ArgumentsScan::default());
                }
                _ => {
                    self.whole_block = true;
                    return true;
                }
            }
        }
        let scan = self.open_call.as_mut().expect("opened above");
        if !scan.done {
            let end = scan.scan(&self.buffer);
            let fragment: String = self.buffer.drain(..end).collect();
            if !fragment.is_empty() {
                out.push(StreamPiece::Arguments(fragment));
            }
            if !scan.done {
                return false;
            }
        }
        let Some(close) = close else {
            // The rest of a bare call is its closing brace.
            self.buffer.clear();
            return false;
        };
        let Some(at) = self.buffer.find(close) else {
            return false;
        };
        self.buffer.drain(..at + close.len());
        self.open_call = None;
        self.mode = Mode::Text;
        true
    }

    fn content(&mut self, text: &str, out: &mut Vec<StreamPiece>) {
        if text.is_empty() {
            return;
        }
        if text.trim().is_empty() {
            self.held_whitespace.push_str(text);
            return;
        }
        let mut piece = std::mem::take(&mut self.held_whitespace);
        piece.push_str(text);
        self.sent_content = true;
        out.push(StreamPiece::Content(piece));
    }

    fn call(&mut self, call: ParsedToolCall, out: &mut Vec<StreamPiece>) {
        self.held_whitespace.clear();
        if self.calls > 0 && !self.tools.parallel {
            return;
        }
        self.calls += 1;
        out.push(StreamPiece::Call(call));
    }
}

/// Length of the longest end of `text` that a marker starts with.
fn marker_prefix_len(text: &str) -> usize {
    let mut longest = 0;
    for marker in MARKERS {
        for len in 1..marker.len().min(text.len() + 1) {
            if text.is_char_boundary(text.len() - len) && text.ends_with(&marker[..len]) {
                longest = longest.max(len);
            }
        }
    }
    longest
}

/// `[TOOL_CALLS][...]`, `<|python_tag|>{...}; {...}`, or a bare `{...}` answer.
fn parse_to_end(text: &str, tools: &OfferedTools) -> Option<Vec<ParsedToolCall>> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix(MISTRAL) {
        let Value::Array(items) = serde_json::from_str(rest.trim()).ok()? else {
            return None;
        };
        let calls: Option<Vec<_>> = items.iter().map(|item| call_of(item, tools)).collect();
        return calls.filter(|calls| !calls.is_empty());
    }
    let body = text.strip_prefix(PYTHON_TAG).unwrap_or(text).trim();
    if body.starts_with('[') {
        let Value::Array(items) = serde_json::from_str(body).ok()? else {
            return None;
        };
        let calls: Option<Vec<_>> = items.iter().map(|item| call_of(item, tools)).collect();
        return calls.filter(|calls| !calls.is_empty());
    }
    // Llama 3 separates several calls with `;`; a whole object is tried first, since
    // arguments may contain `;` themselves.
    if let Some(call) = parse_call(body, tools) {
        return Some(vec![call]);
    }
    let calls: Option<Vec<_>> = body
        .split(';')
        .filter(|part| !part.trim().is_empty())
        .map(|part| parse_call(part, tools))
        .collect();
    calls.filter(|calls| !calls.is_empty())
}

/// One call object as JSON text.
fn parse_call(text: &str, tools: &OfferedTools) -> Option<ParsedToolCall> {
    call_of(&serde_json::from_str(text.trim()).ok()?, tools)
}

/// `{"name": ..., "arguments"|"parameters": {...}}` naming an offered tool. Arguments sent as
/// JSON text (some models do) are accepted when that text is an object.
fn call_of(value: &Value, tools: &OfferedTools) -> Option<ParsedToolCall> {
    let object = value.as_object()?;
    // `{"type": "function", "function": {...}}` wraps the call in some outputs.
    if let Some(function) = object.get("function").filter(|f| f.is_object()) {
        return call_of(function, tools);
    }
    let name = object.get("name")?.as_str()?;
    if !tools.names.iter().any(|offered| offered == name) {
        return None;
    }
    let arguments = match object.get("arguments").or_else(|| object.get("parameters")) {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(arguments @ Value::Object(_)) => arguments.to_string(),
        Some(Value::String(text)) => {
            let parsed: Value = serde_json::from_str(text).ok()?;
            parsed.is_object().then(|| parsed.to_string())?
        }
        Some(_) => return None,
    };
    Some(ParsedToolCall {
        name: name.to_owned(),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(parallel: bool) -> OfferedTools {
        OfferedTools {
            names: vec!["get_weather".into(), "get_time".into()],
            parallel,
        }
    }

    fn call(name: &str, arguments: &str) -> ParsedToolCall {
        ParsedToolCall {
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    /// Feeds `text` in pieces of `size` bytes (on character boundaries).
    fn streamed(text: &str, size: usize, tools: &OfferedTools) -> Vec<StreamPiece> {
        let mut stream = ToolCallStream::new(tools.clone());
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(size) {
            out.extend(stream.push(&piece.iter().collect::<String>()));
        }
        out.extend(stream.finish());
        // Adjacent content pieces are one for comparison.
        let mut merged: Vec<StreamPiece> = Vec::new();
        for piece in out {
            match (merged.last_mut(), piece) {
                (Some(StreamPiece::Content(last)), StreamPiece::Content(text)) => {
                    last.push_str(&text)
                }
                (_, piece) => merged.push(piece),
            }
        }
        merged
    }

    #[test]
    fn hermes_calls_are_parsed_whole_and_streamed() {
        let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
        let expected = vec![
            call("get_weather", r#"{"city":"Paris"}"#),
            call("get_time", "{}"),
        ];
        assert_eq!(
            parse_answer(text, &tools(true)),
            ParsedAnswer {
                content: None,
                calls: expected.clone()
            }
        );
        for size in [1, 2, 5, 64] {
            assert_eq!(
                streamed(text, size, &tools(true)),
                expected
                    .iter()
                    .cloned()
                    .map(StreamPiece::Call)
                    .collect::<Vec<_>>(),
                "pieces of {size}"
            );
        }
        // `parallel_tool_calls: false` keeps the first.
        assert_eq!(parse_answer(text, &tools(false)).calls, expected[..1]);
    }

    #[test]
    fn text_before_a_call_streams_as_content_and_markers_are_held_back() {
        let text =
            "Let me check. <tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>";
        let mut stream = ToolCallStream::new(tools(true));
        assert_eq!(
            stream.push("Let me check. <tool"),
            [StreamPiece::Content("Let me check. ".into())]
        );
        assert_eq!(
            stream.push("_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>"),
            [StreamPiece::Call(call("get_time", "{}"))]
        );
        assert_eq!(stream.finish(), []);
        assert_eq!(
            parse_answer(text, &tools(true)).content.as_deref(),
            Some("Let me check.")
        );
    }

    #[test]
    fn a_streaming_reader_sends_arguments_as_they_are_generated() {
        let mut stream = ToolCallStream::streaming(tools(true));
        assert_eq!(stream.push("<tool_call>\n{\"name\": \"get_wea"), []);
        assert_eq!(
            stream.push("ther\", \"arguments\": {\"city\": \"Pa"),
            [
                StreamPiece::CallStart {
                    name: "get_weather".into()
                },
                StreamPiece::Arguments("{\"city\": \"Pa".into()),
            ]
        );
        assert_eq!(
            stream.push(
                "ris }\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}"
            ),
            [
                StreamPiece::Arguments("ris }\"}".into()),
                StreamPiece::CallStart {
                    name: "get_time".into()
                },
                StreamPiece::Arguments("{}".into()),
            ]
        );
        assert_eq!(stream.push("\n</tool_call>"), []);
        assert_eq!(stream.finish(), []);
        assert_eq!(stream.calls(), 2);
        // A block that does not start with the name is sent whole at its end.
        let mut stream = ToolCallStream::streaming(tools(true));
        assert_eq!(
            stream.push("<tool_call>{\"arguments\": {}, \"name\": \"get_time\"}"),
            []
        );
        assert_eq!(
            stream.push("</tool_call>"),
            [StreamPiece::Call(call("get_time", "{}"))]
        );
        // A bare call streams too.
        let mut stream = ToolCallStream::streaming(tools(true));
        let mut out = stream.push(" {\"name\": \"get_time\", \"arguments\": {\"z");
        out.extend(stream.push("one\": \"UTC\"}}"));
        out.extend(stream.finish());
        assert_eq!(
            out,
            [
                StreamPiece::CallStart {
                    name: "get_time".into()
                },
                StreamPiece::Arguments("{\"z".into()),
                StreamPiece::Arguments("one\": \"UTC\"}".into()),
            ]
        );
        // Unknown tools stay text.
        let mut stream = ToolCallStream::streaming(tools(true));
        let text = "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>";
        let mut out = stream.push(text);
        out.extend(stream.finish());
        assert_eq!(out, [StreamPiece::Content(text.into())]);
    }

    #[test]
    fn call_headers_are_read_as_far_as_they_go() {
        assert_eq!(call_header(" {"), CallHeader::Incomplete);
        assert_eq!(call_header("{\"na"), CallHeader::Incomplete);
        assert_eq!(call_header("{\"name\": \"a\\\"b"), CallHeader::Incomplete);
        assert_eq!(
            call_header("{\"name\": \"f\", \"argu"),
            CallHeader::Incomplete
        );
        assert_eq!(call_header("{\"city\": 1}"), CallHeader::NotAHeader);
        assert_eq!(
            call_header("{\"name\": \"f\", \"arguments\": \"{}\"}"),
            CallHeader::NotAHeader
        );
        assert_eq!(
            call_header("{ \"name\" : \"f\" , \"parameters\": {\"x\": 1}"),
            CallHeader::Found {
                name: "f".into(),
                length: 31
            }
        );
    }

    #[test]
    fn plain_text_and_look_alikes_stay_text() {
        for text in [
            "The answer is 4.",
            "  a < b and x <tool",
            "{\"name\": \"unknown_tool\", \"arguments\": {}}",
            "{\"result\": 3}",
            "<tool_call>not json</tool_call> done",
            "[TOOL_CALLS] nothing",
            "[1, 2, 3]",
            "[]",
        ] {
            let parsed = parse_answer(text, &tools(true));
            assert_eq!(parsed.calls, [], "{text}");
            assert_eq!(parsed.content.as_deref(), Some(text), "{text}");
            let merged = streamed(text, 3, &tools(true));
            assert_eq!(merged, [StreamPiece::Content(text.into())], "{text}");
        }
    }

    #[test]
    fn mistral_llama_and_bare_json_calls_are_recognised() {
        let paris = call("get_weather", r#"{"city":"Paris"}"#);
        for text in [
            "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
            "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
            "[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
            "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}",
        ] {
            assert_eq!(
                parse_answer(text, &tools(true)).calls,
                std::slice::from_ref(&paris),
                "{text}"
            );
            assert_eq!(
                streamed(text, 4, &tools(true)),
                [StreamPiece::Call(paris.clone())],
                "{text}"
            );
        }
        let two = "<|python_tag|>{\"name\": \"get_time\", \"parameters\": {}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
        assert_eq!(
            parse_answer(two, &tools(true)).calls,
            [call("get_time", "{}"), paris]
        );
    }

    #[test]
    fn an_unclosed_call_at_the_end_counts_if_it_parses() {
        let text = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n";
        assert_eq!(
            parse_answer(text, &tools(true)).calls,
            [call("get_time", "{}")]
        );
        let cut = "<tool_call>\n{\"name\": \"get_time\", \"argu";
        assert_eq!(
            parse_answer(cut, &tools(true)),
            ParsedAnswer {
                content: Some(cut.into()),
                calls: vec![]
            }
        );
    }
}
