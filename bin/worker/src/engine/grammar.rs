//! Runs llama.cpp's JSON-schema conversion and grammar compilation, the two steps whose cost
//! grows faster than the schema, on a thread of their own: with a stack deep enough for their
//! recursion (a schema of 6,000 optional properties overflowed a 2 MiB blocking-pool stack and
//! aborted the whole worker), a bound on the converted grammar's size, and a deadline. A schema
//! that passes the shared limits (`llorch_api::json_schema`) and still fails here is an error
//! answer for its request, never the worker's end.

use std::sync::mpsc;
use std::time::Duration;

use crate::validation::ValidationError;

/// Stack of the grammar thread. Only the pages the recursion touches are committed; the shared
/// limits keep it far below this, which is the margin for what they do not foresee.
pub const GRAMMAR_STACK_BYTES: usize = 256 * 1024 * 1024;
/// How long converting and compiling one request's grammar may take before the request is
/// refused. At the shared limits it takes well under a second.
pub const GRAMMAR_BUILD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest grammar text the converter may produce for one request.
pub const MAX_GRAMMAR_BYTES: usize = 1024 * 1024;

/// Runs `build` on a fresh thread with [`GRAMMAR_STACK_BYTES`] of stack and waits at most
/// `timeout` for it. A build past the deadline is left to finish on its own thread (C++
/// cannot be interrupted) and its result dropped; the request gets
/// [`ValidationError::GrammarTimeout`].
pub fn build_off_thread<T: Send + 'static>(
    timeout: Duration,
    build: impl FnOnce() -> Result<T, ValidationError> + Send + 'static,
) -> Result<T, ValidationError> {
    let (done, result) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("llorch-grammar".into())
        .stack_size(GRAMMAR_STACK_BYTES)
        .spawn(move || {
            let _ = done.send(build());
        })
        .map_err(|error| ValidationError::Grammar(format!("cannot start its thread: {error}")))?;
    match result.recv_timeout(timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ValidationError::GrammarTimeout {
            seconds: timeout.as_secs_f64(),
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ValidationError::Grammar(
            "its thread ended without an answer".into(),
        )),
    }
}

/// Refuses a converted grammar over [`MAX_GRAMMAR_BYTES`].
pub fn check_grammar_size(grammar: &str) -> Result<(), ValidationError> {
    if grammar.len() > MAX_GRAMMAR_BYTES {
        return Err(ValidationError::GrammarTooLarge {
            bytes: grammar.len(),
            limit: MAX_GRAMMAR_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recursion as deep as the converter's was for 6,000 optional properties, with a frame
    /// of the size a C++ `std::function` call with two `std::string`s takes.
    fn recurse(depth: u32) -> u64 {
        let frame = std::hint::black_box([depth as u8; 512]);
        if depth == 0 {
            return u64::from(frame[0]);
        }
        recurse(depth - 1) + u64::from(frame[511])
    }

    #[test]
    fn deep_recursion_that_overflows_a_default_stack_completes_here() {
        // 20,000 frames of 512+ bytes: over 10 MiB, five times a blocking-pool thread's stack.
        let sum = build_off_thread(GRAMMAR_BUILD_TIMEOUT, || Ok(recurse(20_000))).unwrap();
        assert!(sum > 0);
    }

    #[test]
    fn a_build_past_its_deadline_is_refused_and_errors_pass_through() {
        let slow = build_off_thread(Duration::from_millis(20), || {
            std::thread::sleep(Duration::from_millis(500));
            Ok(())
        });
        assert!(matches!(slow, Err(ValidationError::GrammarTimeout { .. })));
        let failed: Result<(), _> = build_off_thread(GRAMMAR_BUILD_TIMEOUT, || {
            Err(ValidationError::Grammar("bad".into()))
        });
        assert_eq!(failed, Err(ValidationError::Grammar("bad".into())));
        assert!(check_grammar_size(&"x".repeat(MAX_GRAMMAR_BYTES)).is_ok());
        assert!(matches!(
            check_grammar_size(&"x".repeat(MAX_GRAMMAR_BYTES + 1)),
            Err(ValidationError::GrammarTooLarge { .. })
        ));
    }
}
