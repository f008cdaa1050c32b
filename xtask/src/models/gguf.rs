//! What `models add` and `models download hf:` read from a GGUF file without loading it: the
//! magic, and from the metadata the model's name, size label and whether it carries a chat
//! template (which the catalog records as `chat_template`).

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::Path,
};

use anyhow::{bail, Context as _};

pub const MAGIC: &[u8; 4] = b"GGUF";
/// Longest metadata string read into memory; longer ones (chat templates are a few KB,
/// vocabularies are arrays of short strings) are skipped.
const MAX_KEPT_STRING: u64 = 1 << 16;
/// Keys beyond this many are not read: the three we want come first in practice.
const MAX_KEYS: u64 = 1 << 16;

/// Fails unless `path` starts with the GGUF magic.
pub fn check_magic(path: &Path) -> anyhow::Result<()> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .with_context(|| format!("reading the first bytes of {}", path.display()))?;
    if &magic != MAGIC {
        bail!(
            "{} is not a GGUF file: it starts with {:02x?}, not `GGUF`\nhint: llama.cpp loads GGUF only; convert other formats with llama.cpp's convert_hf_to_gguf.py",
            path.display(),
            magic
        );
    }
    Ok(())
}

/// The metadata the catalog can use; empty where the header cannot be read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GgufInfo {
    /// `general.name`
    pub name: Option<String>,
    /// `general.size_label` (`0.5B`)
    pub size_label: Option<String>,
    /// `tokenizer.chat_template` is present.
    pub chat_template: bool,
}

/// Reads the metadata of a GGUF file; a damaged or truncated header gives what was read so far.
pub fn read_info(path: &Path) -> GgufInfo {
    let mut info = GgufInfo::default();
    if let Ok(file) = File::open(path) {
        let _ = read_header(&mut BufReader::new(file), &mut info);
    }
    info
}

fn read_header(reader: &mut impl Read, info: &mut GgufInfo) -> io::Result<()> {
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::other("not GGUF"));
    }
    let version = read_u32(reader)?;
    if version < 2 {
        return Err(io::Error::other("GGUF v1 is not read"));
    }
    let _tensors = read_u64(reader)?;
    let keys = read_u64(reader)?;
    for _ in 0..keys.min(MAX_KEYS) {
        let key = read_string(reader)?.unwrap_or_default();
        let kind = read_u32(reader)?;
        match (key.as_str(), kind) {
            ("general.name", 8) => info.name = read_string(reader)?,
            ("general.size_label", 8) => info.size_label = read_string(reader)?,
            ("tokenizer.chat_template", _) => {
                info.chat_template = true;
                skip_value(reader, kind)?;
            }
            _ => skip_value(reader, kind)?,
        }
    }
    Ok(())
}

fn read_u32(reader: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(reader: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    reader.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// A length-prefixed string; `None` (skipped) when it is too long to keep or not UTF-8.
fn read_string(reader: &mut impl Read) -> io::Result<Option<String>> {
    let length = read_u64(reader)?;
    if length > MAX_KEPT_STRING {
        skip(reader, length)?;
        return Ok(None);
    }
    let mut bytes = vec![0u8; length as usize];
    reader.read_exact(&mut bytes)?;
    Ok(String::from_utf8(bytes).ok())
}

fn skip(reader: &mut impl Read, bytes: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(bytes), &mut io::sink())?;
    if copied < bytes {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Skips one value of GGUF type `kind`.
fn skip_value(reader: &mut impl Read, kind: u32) -> io::Result<()> {
    match kind {
        0 | 1 | 7 => skip(reader, 1),
        2 | 3 => skip(reader, 2),
        4..=6 => skip(reader, 4),
        10..=12 => skip(reader, 8),
        8 => {
            let length = read_u64(reader)?;
            skip(reader, length)
        }
        9 => {
            let item = read_u32(reader)?;
            let count = read_u64(reader)?;
            let fixed = match item {
                0 | 1 | 7 => Some(1),
                2 | 3 => Some(2),
                4..=6 => Some(4),
                10..=12 => Some(8),
                _ => None,
            };
            match fixed {
                Some(size) => skip(reader, size * count),
                None => (0..count).try_for_each(|_| skip_value(reader, item)),
            }
        }
        _ => Err(io::Error::other("unknown GGUF value type")),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A small but well-formed GGUF v3 header with the given string keys, plus `extra` bytes.
    pub fn fake_gguf(pairs: &[(&str, &str)], extra: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        bytes.extend((pairs.len() as u64 + 1).to_le_bytes());
        // An array of strings first, as a vocabulary would be, to exercise skipping.
        let key = "tokenizer.ggml.tokens";
        bytes.extend((key.len() as u64).to_le_bytes());
        bytes.extend(key.as_bytes());
        bytes.extend(9u32.to_le_bytes());
        bytes.extend(8u32.to_le_bytes());
        bytes.extend(2u64.to_le_bytes());
        for token in ["<s>", "hello"] {
            bytes.extend((token.len() as u64).to_le_bytes());
            bytes.extend(token.as_bytes());
        }
        for (key, value) in pairs {
            bytes.extend((key.len() as u64).to_le_bytes());
            bytes.extend(key.as_bytes());
            bytes.extend(8u32.to_le_bytes());
            bytes.extend((value.len() as u64).to_le_bytes());
            bytes.extend(value.as_bytes());
        }
        bytes.extend(extra);
        bytes
    }

    #[test]
    fn metadata_is_read_and_garbage_gives_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(
            &path,
            fake_gguf(
                &[
                    ("general.name", "Tiny Chat"),
                    ("general.size_label", "1M"),
                    ("tokenizer.chat_template", "{{ messages }}"),
                ],
                b"tensor bytes",
            ),
        )
        .unwrap();
        check_magic(&path).unwrap();
        assert_eq!(
            read_info(&path),
            GgufInfo {
                name: Some("Tiny Chat".into()),
                size_label: Some("1M".into()),
                chat_template: true
            }
        );

        std::fs::write(&path, b"GGUF then nothing useful").unwrap();
        check_magic(&path).unwrap();
        assert_eq!(read_info(&path), GgufInfo::default());

        std::fs::write(&path, b"PK\x03\x04zip").unwrap();
        let error = check_magic(&path).unwrap_err().to_string();
        assert!(error.contains("is not a GGUF file"), "{error}");
    }
}
