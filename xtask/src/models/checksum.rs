//! SHA-256 of model files with an indicatif bar (`models add`, `models verify`): the hashing of
//! llorch-fetch, which the downloads use, fed into the bar.

use std::{io, path::Path};

use indicatif::ProgressBar;
use llorch_fetch::Progress;

/// Writes through while hashing and counting into a [`Bar`].
pub use llorch_fetch::checksum::HashingWriter;

/// An indicatif bar as the [`Progress`] of a hash.
pub struct Bar<'a>(pub &'a ProgressBar);

impl Progress for Bar<'_> {
    fn start(&self, length: u64, message: &str) {
        self.0.set_length(length);
        self.0.set_message(message.to_owned());
    }

    fn set_length(&self, length: u64) {
        self.0.set_length(length);
    }

    fn inc(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn set_message(&self, message: &str) {
        self.0.set_message(message.to_owned());
    }

    fn finish(&self) {}

    fn status(&self, line: &str) {
        self.0.println(line);
    }
}

/// Hashes a file; returns the lowercase hex digest and the number of bytes read.
pub fn sha256_file(path: &Path, progress: &ProgressBar) -> io::Result<(String, u64)> {
    llorch_fetch::checksum::sha256_file(path, &Bar(progress))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_counts_the_bytes_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let bar = ProgressBar::hidden();
        let (digest, size) = sha256_file(&path, &bar).unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!((size, bar.position()), (3, 3));
    }
}
