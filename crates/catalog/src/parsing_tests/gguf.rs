//! GGUF headers read from files: every value type, the per-layer and fallback rules of the
//! shape, damaged files, and the estimate for each architecture with windowed layers.

use std::path::{Path, PathBuf};

use crate::{
    estimate_memory, read_model_shape, read_text_metadata, ContextPlan, GgufError, ModelShape,
};

/// GGUF value types, as llama.cpp's `gguf_type` numbers them.
const U8: u32 = 0;
const I8: u32 = 1;
const U16: u32 = 2;
const I16: u32 = 3;
const U32: u32 = 4;
const I32: u32 = 5;
const F32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;
const I64: u32 = 11;
const F64: u32 = 12;

/// A GGUF header of `version` with the given key, type and encoded value triples.
fn header_of_version(version: u32, pairs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(version.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend((pairs.len() as u64).to_le_bytes());
    for (key, value_type, value) in pairs {
        bytes.extend(text(key));
        bytes.extend(value_type.to_le_bytes());
        bytes.extend(value);
    }
    bytes
}

/// A GGUF header as llama.cpp writes it today (version 3); also used by `gguf.rs`'s own tests.
pub(crate) fn header(pairs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    header_of_version(3, pairs)
}

/// A GGUF string: its length, then its bytes.
pub(crate) fn text(value: &str) -> Vec<u8> {
    let mut bytes = (value.len() as u64).to_le_bytes().to_vec();
    bytes.extend(value.as_bytes());
    bytes
}

fn array(element_type: u32, elements: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = element_type.to_le_bytes().to_vec();
    bytes.extend((elements.len() as u64).to_le_bytes());
    for element in elements {
        bytes.extend(element);
    }
    bytes
}

fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A llama header that stores each number in a different type.
fn every_type() -> Vec<u8> {
    header_of_version(
        2,
        &[
            ("general.architecture", STRING, text("llama")),
            ("general.name", STRING, text("Every Type")),
            ("llama.block_count", U8, vec![16]),
            (
                "llama.attention.head_count",
                I16,
                32i16.to_le_bytes().to_vec(),
            ),
            (
                "llama.attention.head_count_kv",
                ARRAY,
                array(
                    U16,
                    &[8u16.to_le_bytes().to_vec(), 4u16.to_le_bytes().to_vec()],
                ),
            ),
            (
                "llama.embedding_length",
                U64,
                2048u64.to_le_bytes().to_vec(),
            ),
            (
                "llama.attention.key_length",
                I64,
                128i64.to_le_bytes().to_vec(),
            ),
            (
                "llama.attention.value_length",
                F64,
                96f64.to_le_bytes().to_vec(),
            ),
            (
                "llama.attention.sliding_window",
                I32,
                4096i32.to_le_bytes().to_vec(),
            ),
            ("llama.vocab_size", F32, 32000f32.to_le_bytes().to_vec()),
            ("llama.use_parallel_residual", BOOL, vec![1]),
            ("llama.rope.scale", I8, vec![(-2i8) as u8]),
            ("llama.context_length", U32, 8192u32.to_le_bytes().to_vec()),
        ],
    )
}

#[test]
fn every_value_type_is_read_and_per_layer_values_give_the_first_layer() {
    let dir = tempfile::tempdir().unwrap();
    let shape = read_model_shape(&write(dir.path(), &every_type())).unwrap();
    assert_eq!(
        shape,
        ModelShape {
            architecture: "llama".into(),
            n_layer: 16,
            n_head: 32,
            n_head_kv: 8,
            embedding_length: 2048,
            key_length: 128,
            value_length: 96,
            sliding_window: Some(4096),
            vocab_size: 32000,
        }
    );
}

#[test]
fn text_metadata_lists_every_key_in_order_with_text_values() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = read_text_metadata(&write(dir.path(), &every_type()));
    assert_eq!(metadata.len(), 13);
    assert_eq!(
        metadata[0],
        ("general.architecture".into(), Some("llama".into()))
    );
    assert_eq!(
        metadata[1],
        ("general.name".into(), Some("Every Type".into()))
    );
    assert_eq!(metadata[2], ("llama.block_count".into(), None));
    // A cut header gives the keys before the cut; a missing file gives none.
    let mut cut = every_type();
    let end_of_second = 4 + 4 + 8 + 8 + (8 + 20 + 4 + 8 + 5) + (8 + 12 + 4 + 8 + 10);
    cut.truncate(end_of_second + 3);
    let metadata = read_text_metadata(&write(dir.path(), &cut));
    assert_eq!(
        metadata,
        [
            ("general.architecture".to_owned(), Some("llama".to_owned())),
            ("general.name".to_owned(), Some("Every Type".to_owned()))
        ]
    );
    assert!(read_text_metadata(&dir.path().join("absent.gguf")).is_empty());
}

#[test]
fn unusable_numbers_fall_back_to_what_the_others_imply() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = header(&[
        ("general.architecture", STRING, text("qwen2")),
        ("qwen2.block_count", U32, 4u32.to_le_bytes().to_vec()),
        (
            "qwen2.attention.head_count",
            U32,
            0u32.to_le_bytes().to_vec(),
        ),
        ("qwen2.embedding_length", U32, 64u32.to_le_bytes().to_vec()),
        // Negative, a string, a bool and an empty per-layer list are no numbers.
        (
            "qwen2.attention.key_length",
            I32,
            (-1i32).to_le_bytes().to_vec(),
        ),
        (
            "qwen2.attention.value_length",
            F32,
            (-1f32).to_le_bytes().to_vec(),
        ),
        ("qwen2.attention.head_count_kv", ARRAY, array(U32, &[])),
        ("qwen2.attention.sliding_window", STRING, text("none")),
        ("qwen2.vocab_size", BOOL, vec![1]),
    ]);
    let shape = read_model_shape(&write(dir.path(), &bytes)).unwrap();
    assert_eq!(shape.n_head, 1, "a head count of 0 counts as 1");
    assert_eq!(
        shape.n_head_kv, 1,
        "no per-layer value: as many as the heads"
    );
    assert_eq!((shape.key_length, shape.value_length), (64, 64));
    assert_eq!(shape.sliding_window, None);
    assert_eq!(shape.vocab_size, 0);
}

/// The error `bytes` get as a model file, as the user reads it.
fn shape_error(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), bytes);
    let error = read_model_shape(&path).unwrap_err();
    assert!(matches!(error, GgufError::Format { .. }), "{error:?}");
    let text = error.to_string();
    let prefix = format!("{} is not a GGUF file (", path.display());
    assert!(text.starts_with(&prefix), "{text}");
    text[prefix.len()..text.len() - 1].to_owned()
}

#[test]
fn damaged_headers_say_what_is_wrong() {
    assert_eq!(shape_error(b"GGML"), "no `GGUF` magic");
    assert_eq!(shape_error(b"GG"), "the header is cut short");
    assert_eq!(
        shape_error(&header_of_version(1, &[])),
        "unsupported version 1"
    );
    assert_eq!(
        shape_error(&header_of_version(4, &[])),
        "unsupported version 4"
    );
    assert_eq!(
        shape_error(&header(&[("x", 13, Vec::new())])),
        "unknown value type 13"
    );
    assert_eq!(
        shape_error(&header(&[("general.architecture", U32, vec![0; 4])])),
        "no `general.architecture` key"
    );
    let no_layers = header(&[("general.architecture", STRING, text("qwen2"))]);
    assert_eq!(shape_error(&no_layers), "no `qwen2.block_count` key");
    // An array that claims more elements than the file holds ends at the file's end, without
    // reserving room for what it claims.
    let mut lying_array = header(&[("tokenizer.ggml.tokens", ARRAY, Vec::new())]);
    lying_array.extend(STRING.to_le_bytes());
    lying_array.extend(u64::MAX.to_le_bytes());
    assert_eq!(shape_error(&lying_array), "the header is cut short");
}

#[test]
fn a_file_that_cannot_be_read_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.gguf");
    let error = read_model_shape(&missing).unwrap_err();
    assert!(matches!(error, GgufError::Io { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("reading {}: ", missing.display())),
        "{error}"
    );
    // A directory opens, but reading it fails with an error that is not the end of the file.
    let error = read_model_shape(dir.path()).unwrap_err();
    assert!(matches!(error, GgufError::Io { .. }), "{error:?}");
}

fn windowed(architecture: &str, sliding_window: Option<u64>) -> u64 {
    let shape = ModelShape {
        architecture: architecture.into(),
        n_layer: 12,
        n_head: 4,
        n_head_kv: 1,
        embedding_length: 256,
        key_length: 64,
        value_length: 64,
        sliding_window,
        vocab_size: 10,
    };
    let plan = ContextPlan {
        slots: 1,
        ctx_size: 4096,
        batch_size: 0,
    };
    estimate_memory(&shape, 0, plan).kv_cache
}

#[test]
fn each_windowed_architecture_keeps_its_share_of_global_layers() {
    let per_cell = 64 * 2 * 2;
    // Window 512 plus one batch (a batch size of 0 counts as 1) per slot.
    let full = |layers: u64| layers * 4096 * per_cell;
    let window = |layers: u64| layers * 513 * per_cell;
    assert_eq!(windowed("gemma2", Some(512)), full(6) + window(6));
    assert_eq!(windowed("gemma3", Some(512)), full(2) + window(10));
    assert_eq!(windowed("cohere2", Some(512)), full(3) + window(9));
    assert_eq!(windowed("llama4", Some(512)), full(3) + window(9));
    // Other architectures attend to everything, window or not.
    assert_eq!(windowed("qwen2", Some(512)), full(12));
    assert_eq!(windowed("gemma3", None), full(12));
}
