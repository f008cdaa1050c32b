//! Client-provided text as it may appear in a log line, for orcd and the worker alike.

use std::borrow::Cow;

/// Longest client-provided text written to a log line, in characters.
pub const MAX_LOGGED_CHARS: usize = 200;

/// Client-provided text as it may appear in a log line: control characters (newlines, terminal
/// escape sequences), Unicode line separators and bidirectional overrides are escaped as
/// `\u{..}`, and text beyond [`MAX_LOGGED_CHARS`] is cut, so a request can neither forge log
/// lines nor hide text from whoever reads them.
pub fn log_safe(text: &str) -> Cow<'_, str> {
    let needs_escape = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let long = text.chars().nth(MAX_LOGGED_CHARS).is_some();
    if !long && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len().min(MAX_LOGGED_CHARS * 2));
    for c in text.chars().take(MAX_LOGGED_CHARS) {
        if needs_escape(c) {
            safe.extend(c.escape_unicode());
        } else {
            safe.push(c);
        }
    }
    if long {
        let kept: usize = text
            .chars()
            .take(MAX_LOGGED_CHARS)
            .map(char::len_utf8)
            .sum();
        safe.push_str(&format!("... ({} more bytes)", text.len() - kept));
    }
    Cow::Owned(safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_safe_escapes_line_breaks_escapes_and_bidi_controls() {
        assert!(matches!(
            log_safe("gemma3-270m"),
            Cow::Borrowed("gemma3-270m")
        ));
        assert_eq!(
            log_safe("a\nFAKE LOG LINE\r\u{1b}[31m\u{202e}z"),
            "a\\u{a}FAKE LOG LINE\\u{d}\\u{1b}[31m\\u{202e}z"
        );
        let long = "é".repeat(MAX_LOGGED_CHARS + 10);
        let safe = log_safe(&long);
        assert!(safe.starts_with(&"é".repeat(MAX_LOGGED_CHARS)));
        assert!(safe.ends_with("... (20 more bytes)"), "{safe}");
    }
}
