//! SHA-256 of model files, streamed in large blocks with progress, and a writer that hashes
//! what passes through it (assembling pip parts hashes the result while writing it).

use std::{
    fs::File,
    io::{self, Read, Write},
    path::Path,
};

use sha2::{Digest, Sha256};

use crate::Progress;

const BLOCK: usize = 1 << 20;

/// Hashes a file; returns the lowercase hex digest and the number of bytes read.
pub fn sha256_file(path: &Path, progress: &dyn Progress) -> io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; BLOCK];
    let mut total = 0;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
        progress.inc(read as u64);
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Writes through to `inner` while hashing and counting.
pub struct HashingWriter<'a, W> {
    inner: W,
    hasher: Sha256,
    written: u64,
    progress: &'a dyn Progress,
}

impl<'a, W: Write> HashingWriter<'a, W> {
    pub fn new(inner: W, progress: &'a dyn Progress) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
            progress,
        }
    }

    /// The inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            hex::encode(self.hasher.finalize()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(data)?;
        self.hasher.update(&data[..written]);
        self.written += written as u64;
        self.progress.inc(written as u64);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Silent;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn file_and_writer_agree_with_the_known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path, &Silent).unwrap(), (ABC.to_owned(), 3));
        let mut writer = HashingWriter::new(Vec::new(), &Silent);
        writer.write_all(b"ab").unwrap();
        writer.write_all(b"c").unwrap();
        let (bytes, digest, count) = writer.finish();
        assert_eq!(
            (bytes.as_slice(), digest.as_str(), count),
            (&b"abc"[..], ABC, 3)
        );
    }
}
