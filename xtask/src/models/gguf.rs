//! What `models add` and `models download hf:` read from a GGUF file without loading it: the
//! magic, and from the metadata the model's name, size label and whether it carries a chat
//! template (which the catalog records as `chat_template`).

use std::{fs::File, io::Read, path::Path};

use anyhow::{bail, Context as _};

pub const MAGIC: &[u8; 4] = b"GGUF";

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
    for (key, text) in llorch_catalog::read_text_metadata(path) {
        match key.as_str() {
            "general.name" => info.name = text,
            "general.size_label" => info.size_label = text,
            "tokenizer.chat_template" => info.chat_template = true,
            _ => {}
        }
    }
    info
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
