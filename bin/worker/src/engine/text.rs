//! Turns the raw bytes of sampled tokens into streamable text: only whole UTF-8 characters leave,
//! and no part of a stop string is ever streamed.

/// Incremental UTF-8 decoder. A token's piece can end in the middle of a multi-byte character
/// (Gemma's byte-fallback tokens carry single bytes 0x80..0xFF), so the incomplete tail waits for
/// the bytes of the next tokens.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Appends `bytes` and returns every character that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(complete) => {
                    text.push_str(complete);
                    self.pending.clear();
                    return text;
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    text.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked prefix"),
                    );
                    match error.error_len() {
                        // An incomplete character at the end: keep it for the next piece.
                        None => {
                            self.pending.drain(..valid);
                            return text;
                        }
                        // Bytes that can never become a character: replace them as
                        // `String::from_utf8_lossy` would and go on after them.
                        Some(invalid) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + invalid);
                        }
                    }
                }
            }
        }
    }

    /// Ends the stream: an incomplete character left over becomes U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// What [`TextStream::push`] releases.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text that is safe to stream (may be empty while text is held back).
    pub text: String,
    /// A stop string was found; generation ends and `text` is everything before it.
    pub stopped: bool,
}

/// UTF-8 decoding plus stop strings: text that could still turn out to be the start of a stop
/// string is held back until the next tokens decide it.
#[derive(Debug)]
pub struct TextStream {
    decoder: Utf8Decoder,
    held: String,
    stops: Vec<String>,
}

impl TextStream {
    /// `stops` must not contain empty strings (validation rejects them).
    pub fn new(stops: Vec<String>) -> TextStream {
        debug_assert!(stops.iter().all(|stop| !stop.is_empty()));
        TextStream {
            decoder: Utf8Decoder::default(),
            held: String::new(),
            stops,
        }
    }

    /// Feeds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Released {
        let decoded = self.decoder.push(bytes);
        self.held.push_str(&decoded);
        if let Some(at) = self.earliest_stop() {
            let text = self.held[..at].to_owned();
            self.held.clear();
            return Released {
                text,
                stopped: true,
            };
        }
        let keep = self.longest_partial_stop();
        let text = self.held.drain(..self.held.len() - keep).collect();
        Released {
            text,
            stopped: false,
        }
    }

    /// Ends the stream without a stop string (end-of-generation token or length): releases
    /// what was held back, cut at a stop string should the final bytes complete one.
    pub fn finish(&mut self) -> String {
        let tail = self.decoder.finish();
        self.held.push_str(&tail);
        if let Some(at) = self.earliest_stop() {
            self.held.truncate(at);
        }
        std::mem::take(&mut self.held)
    }

    fn earliest_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min()
    }

    /// Length in bytes of the longest suffix of the held text that is a proper prefix of a stop
    /// string. Prefixes end on character boundaries, so the cut is one too.
    fn longest_partial_stop(&self) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len())
                    .rev()
                    .filter(|&len| stop.is_char_boundary(len))
                    .find(|&len| self.held.ends_with(&stop[..len]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_all(stream: &mut TextStream, pieces: &[&[u8]]) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        for piece in pieces {
            let released = stream.push(piece);
            out.push(released.text);
            if released.stopped {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn split_multibyte_character_waits_for_its_last_byte() {
        // 日 = e6 97 a5, delivered by three byte-fallback tokens.
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.push(&[0xe6]), "");
        assert_eq!(decoder.push(&[0x97]), "");
        assert_eq!(decoder.push(&[0xa5, b'!']), "日!");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_without_losing_what_follows() {
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.push(&[b'a', 0xff, b'b', 0xe6]), "a\u{fffd}b");
        assert_eq!(decoder.push(&[0x97, 0xa5]), "日");
    }

    #[test]
    fn incomplete_tail_at_the_end_is_replaced() {
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.push(&[b'x', 0xf0, 0x9f]), "x");
        assert_eq!(decoder.finish(), "\u{fffd}");
    }

    #[test]
    fn text_without_stops_streams_immediately() {
        let mut stream = TextStream::new(Vec::new());
        let (out, stopped) = push_all(&mut stream, &[b"Hello", b" world"]);
        assert_eq!(out, ["Hello", " world"]);
        assert!(!stopped);
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn stop_string_across_tokens_is_never_streamed() {
        let mut stream = TextStream::new(vec!["\n\nQ:".into()]);
        let (out, stopped) = push_all(&mut stream, &[b"Paris.", b"\n", b"\n", b"Q:", b" next"]);
        assert!(stopped);
        assert_eq!(out, ["Paris.", "", "", ""]);
    }

    #[test]
    fn text_after_the_stop_inside_one_token_is_dropped() {
        let mut stream = TextStream::new(vec!["END".into()]);
        let released = stream.push(b"abcENDdef");
        assert_eq!(
            released,
            Released {
                text: "abc".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn held_back_prefix_is_released_when_it_stops_matching() {
        let mut stream = TextStream::new(vec!["STOP".into()]);
        let (out, stopped) = push_all(&mut stream, &[b"a ST", b"O", b"RY"]);
        assert!(!stopped);
        assert_eq!(out, ["a ", "", "STORY"]);
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut stream = TextStream::new(vec!["world".into(), "lo".into()]);
        let released = stream.push(b"hello world");
        assert_eq!(released.text, "hel");
        assert!(released.stopped);
    }

    #[test]
    fn finish_releases_a_held_partial_stop() {
        let mut stream = TextStream::new(vec!["###".into()]);
        assert_eq!(stream.push(b"done ##").text, "done ");
        assert_eq!(stream.finish(), "##");
    }

    #[test]
    fn multibyte_stop_string_is_matched_on_character_boundaries() {
        let mut stream = TextStream::new(vec!["日本".into()]);
        // "x日" then the bytes of 本 one at a time.
        let mut out = vec![stream.push("x日".as_bytes())];
        out.push(stream.push(&[0xe6]));
        out.push(stream.push(&[0x9c]));
        out.push(stream.push(&[0xac]));
        assert_eq!(out[0].text, "x");
        assert!(out[..3].iter().all(|released| !released.stopped));
        assert_eq!(
            out[3],
            Released {
                text: String::new(),
                stopped: true
            }
        );
    }

    #[test]
    fn streamed_text_concatenates_to_the_full_text() {
        let full = "The capital of France is Paris. 日本語 😀!";
        let bytes = full.as_bytes();
        let mut stream = TextStream::new(vec!["zzz".into()]);
        let mut out = String::new();
        // One byte per "token": the worst case for both the decoder and the stop matcher.
        for byte in bytes {
            let released = stream.push(std::slice::from_ref(byte));
            assert!(!released.stopped);
            out.push_str(&released.text);
        }
        out.push_str(&stream.finish());
        assert_eq!(out, full);
    }
}
