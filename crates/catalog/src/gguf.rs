//! Reads the metadata at the head of a GGUF file (no tensor data) and estimates the memory a
//! worker will need for a model: the file, its KV cache and a compute margin. The pool manager
//! checks the estimate against its memory before it starts a worker.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
/// Longest key or string value accepted; real files stay far below (a chat template is a few
/// kilobytes), and a corrupt length must not make the reader allocate gigabytes.
const MAX_STRING_BYTES: u64 = 1 << 24;

/// The numbers of a model's shape the memory estimate needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    pub architecture: String,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub embedding_length: u64,
    /// Per-head key and value widths (`attention.key_length`, else embedding / heads).
    pub key_length: u64,
    pub value_length: u64,
    /// Tokens of the sliding window of the model's windowed layers, when it has any.
    pub sliding_window: Option<u64>,
    /// Entries of `tokenizer.ggml.tokens`.
    pub vocab_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a GGUF file ({reason})")]
    Format { path: String, reason: String },
}

/// Reads the shape of the model in `path` from its GGUF metadata.
pub fn read_model_shape(path: &Path) -> Result<ModelShape, GgufError> {
    let file = File::open(path).map_err(|source| GgufError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut reader = MetadataReader {
        input: BufReader::new(file),
    };
    let metadata = reader.read_metadata().map_err(|error| match error {
        ReadError::Io(source) => GgufError::Io {
            path: path.display().to_string(),
            source,
        },
        ReadError::Format(reason) => GgufError::Format {
            path: path.display().to_string(),
            reason,
        },
    })?;
    shape_of(&metadata).map_err(|reason| GgufError::Format {
        path: path.display().to_string(),
        reason,
    })
}

/// Every metadata key of a GGUF file with its value when that is text, in file order, as far
/// as the header could be read (a damaged or cut header gives its first keys; not GGUF gives
/// none).
pub fn read_text_metadata(path: &Path) -> Vec<(String, Option<String>)> {
    let mut metadata = Vec::new();
    if let Ok(file) = File::open(path) {
        let mut reader = MetadataReader {
            input: BufReader::new(file),
        };
        let _ = reader.read_metadata_into(&mut metadata);
    }
    metadata
        .into_iter()
        .map(|(key, value)| match value {
            Value::Text(text) => (key, Some(text)),
            _ => (key, None),
        })
        .collect()
}

/// A metadata value as far as the estimate cares: numbers, strings, and array lengths.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Text(String),
    /// An array: its element count, and its first element when it is a number (per-layer
    /// head counts).
    Array {
        len: u64,
        first: Option<u64>,
    },
    Other,
}

impl Value {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Unsigned(value) => Some(value),
            Value::Signed(value) => u64::try_from(value).ok(),
            Value::Float(value) if value >= 0.0 => Some(value as u64),
            // Per-layer values (some models vary head counts by layer): the first layer's.
            Value::Array { first, .. } => first,
            _ => None,
        }
    }
}

fn shape_of(metadata: &[(String, Value)]) -> Result<ModelShape, String> {
    let get = |key: &str| {
        metadata
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    };
    let architecture = match get("general.architecture") {
        Some(Value::Text(name)) => name.clone(),
        _ => return Err("no `general.architecture` key".to_owned()),
    };
    let number = |suffix: &str| get(&format!("{architecture}.{suffix}")).and_then(Value::as_u64);
    let required =
        |suffix: &str| number(suffix).ok_or_else(|| format!("no `{architecture}.{suffix}` key"));
    let n_layer = required("block_count")?;
    let n_head = required("attention.head_count")?.max(1);
    let n_head_kv = number("attention.head_count_kv").unwrap_or(n_head);
    let embedding_length = required("embedding_length")?;
    let key_length = number("attention.key_length").unwrap_or(embedding_length / n_head);
    let value_length = number("attention.value_length").unwrap_or(key_length);
    let vocab_size = match get("tokenizer.ggml.tokens") {
        Some(Value::Array { len, .. }) => *len,
        _ => number("vocab_size").unwrap_or(0),
    };
    Ok(ModelShape {
        n_layer,
        n_head,
        n_head_kv,
        embedding_length,
        key_length,
        value_length,
        sliding_window: number("attention.sliding_window"),
        vocab_size,
        architecture,
    })
}

enum ReadError {
    Io(io::Error),
    Format(String),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::UnexpectedEof => ReadError::Format("the header is cut short".into()),
            _ => ReadError::Io(error),
        }
    }
}

struct MetadataReader<R> {
    input: R,
}

impl<R: Read> MetadataReader<R> {
    fn read_metadata(&mut self) -> Result<Vec<(String, Value)>, ReadError> {
        let mut metadata = Vec::new();
        self.read_metadata_into(&mut metadata)?;
        Ok(metadata)
    }

    /// Reads key-value pairs into `metadata` until the end or the first error, so a caller
    /// that can use a damaged header's first keys keeps them.
    fn read_metadata_into(&mut self, metadata: &mut Vec<(String, Value)>) -> Result<(), ReadError> {
        let mut magic = [0u8; 4];
        self.input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(ReadError::Format("no `GGUF` magic".into()));
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(ReadError::Format(format!("unsupported version {version}")));
        }
        let _tensor_count = self.u64()?;
        let kv_count = self.u64()?;
        for _ in 0..kv_count {
            let key = self.string()?;
            let value_type = self.u32()?;
            let value = self.value(value_type)?;
            metadata.push((key, value));
        }
        Ok(())
    }

    fn value(&mut self, value_type: u32) -> Result<Value, ReadError> {
        Ok(match value_type {
            0 => Value::Unsigned(u64::from(self.bytes::<1>()?[0])),
            1 => Value::Signed(i64::from(self.bytes::<1>()?[0] as i8)),
            2 => Value::Unsigned(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => Value::Signed(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => Value::Unsigned(u64::from(self.u32()?)),
            5 => Value::Signed(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => {
                self.bytes::<1>()?;
                Value::Other
            }
            8 => Value::Text(self.string()?),
            9 => {
                let element_type = self.u32()?;
                let len = self.u64()?;
                let mut first = None;
                for index in 0..len {
                    let element = self.value(element_type)?;
                    if index == 0 {
                        first = element.as_u64();
                    }
                }
                Value::Array { len, first }
            }
            10 => Value::Unsigned(self.u64()?),
            11 => Value::Signed(i64::from_le_bytes(self.bytes()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(ReadError::Format(format!("unknown value type {other}"))),
        })
    }

    fn string(&mut self) -> Result<String, ReadError> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(ReadError::Format(format!("a string of {len} bytes")));
        }
        let mut bytes = vec![0u8; len as usize];
        self.input.read_exact(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut bytes = [0u8; N];
        self.input.read_exact(&mut bytes)?;
        Ok(bytes)
    }
}

/// Tokens per decode step of a worker started without `--batch-size` (llorch-worker's default).
pub const WORKER_BATCH_SIZE: u32 = 512;

/// What a worker is started with that changes its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextPlan {
    pub slots: u32,
    /// Tokens of context per slot.
    pub ctx_size: u32,
    /// Tokens per decode step (`llorch-worker --batch-size`, its default 512).
    pub batch_size: u32,
}

/// A memory estimate, in bytes, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The model file, mapped and read whole by the first decode.
    pub weights: u64,
    pub kv_cache: u64,
    /// llama.cpp's compute buffers, logits and the worker's own heap.
    pub compute: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.compute
    }
}

/// Bytes per KV cache element: llama.cpp's default cache type is f16.
const KV_ELEMENT_BYTES: u64 = 2;
/// The worker process without a model: runtime, llama.cpp's code, the tokenizer, thread stacks.
const BASE_PROCESS_BYTES: u64 = 48 << 20;

/// How many of a model's layers use the sliding window, for the architectures llama.cpp builds
/// with one (the rest attend to the whole context): `1 in N` layers is global.
fn global_layer_period(architecture: &str) -> Option<u64> {
    match architecture {
        "gemma2" => Some(2),
        "gemma3" => Some(6),
        "cohere2" | "llama4" => Some(4),
        _ => None,
    }
}

/// The estimate for a worker of `slots` × `ctx_size` (and the default batch) over the model
/// file at `path`, read from its GGUF metadata: what the pool manager checks before a start and
/// `fleet up` before running a worker's replacement beside it.
pub fn estimate_model_file(path: &Path, slots: u32, ctx_size: u32) -> Result<u64, GgufError> {
    let bytes = std::fs::metadata(path)
        .map_err(|source| GgufError::Io {
            path: path.display().to_string(),
            source,
        })?
        .len();
    let shape = read_model_shape(path)?;
    let plan = ContextPlan {
        slots,
        ctx_size,
        batch_size: WORKER_BATCH_SIZE,
    };
    Ok(estimate_memory(&shape, bytes, plan).total())
}

/// Estimates a worker's resident memory: `file_bytes` of weights, then the KV cache
/// (`2 × n_layer × slots × ctx × n_head_kv × head_dim × 2 bytes`, windowed layers keeping only
/// their window per slot), then the compute buffers of one batch and the logits.
pub fn estimate_memory(shape: &ModelShape, file_bytes: u64, plan: ContextPlan) -> MemoryEstimate {
    let slots = u64::from(plan.slots.max(1));
    let cells_full = slots * u64::from(plan.ctx_size);
    let batch = u64::from(plan.batch_size.max(1));
    let windowed_layers = match (
        global_layer_period(&shape.architecture),
        shape.sliding_window,
    ) {
        (Some(period), Some(_)) => shape.n_layer - shape.n_layer.div_ceil(period),
        _ => 0,
    };
    let cells_windowed = match shape.sliding_window {
        Some(window) => cells_full.min(slots * window + batch),
        None => cells_full,
    };
    let per_cell = shape.n_head_kv * (shape.key_length + shape.value_length) * KV_ELEMENT_BYTES;
    let kv_cache = per_cell
        * ((shape.n_layer - windowed_layers) * cells_full + windowed_layers * cells_windowed);
    // One batch's activations (a few f32 rows of the embedding width per token and layer pass,
    // reused between layers) and the f32 logits of every slot's last token.
    let activations = batch * shape.embedding_length * 4 * 8;
    let logits = batch.min(slots * 2) * shape.vocab_size * 4;
    MemoryEstimate {
        weights: file_bytes,
        kv_cache,
        compute: BASE_PROCESS_BYTES + activations + logits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parsing_tests::gguf::{header, text};

    fn read(bytes: Vec<u8>) -> Result<ModelShape, String> {
        let mut reader = MetadataReader {
            input: bytes.as_slice(),
        };
        match reader.read_metadata() {
            Ok(metadata) => shape_of(&metadata),
            Err(ReadError::Format(reason)) => Err(reason),
            Err(ReadError::Io(error)) => Err(error.to_string()),
        }
    }

    fn small_model() -> Vec<u8> {
        let mut tokens = 8u32.to_le_bytes().to_vec();
        tokens.extend(3u64.to_le_bytes());
        for token in ["a", "b", "c"] {
            tokens.extend(text(token));
        }
        header(&[
            ("general.architecture", 8, text("qwen2")),
            ("qwen2.block_count", 4, 24u32.to_le_bytes().to_vec()),
            (
                "qwen2.attention.head_count",
                4,
                14u32.to_le_bytes().to_vec(),
            ),
            (
                "qwen2.attention.head_count_kv",
                4,
                2u32.to_le_bytes().to_vec(),
            ),
            ("qwen2.embedding_length", 4, 896u32.to_le_bytes().to_vec()),
            ("general.alignment", 6, 1.5f32.to_le_bytes().to_vec()),
            ("tokenizer.ggml.tokens", 9, tokens),
        ])
    }

    #[test]
    fn reads_the_shape_and_derives_the_head_width() {
        let shape = read(small_model()).unwrap();
        assert_eq!(shape.architecture, "qwen2");
        assert_eq!((shape.n_layer, shape.n_head, shape.n_head_kv), (24, 14, 2));
        assert_eq!((shape.key_length, shape.value_length), (64, 64));
        assert_eq!(shape.vocab_size, 3);
        assert_eq!(shape.sliding_window, None);
    }

    #[test]
    fn refuses_what_is_not_gguf_or_is_cut_short() {
        assert!(read(b"GGML0000".to_vec()).unwrap_err().contains("magic"));
        let mut cut = small_model();
        cut.truncate(cut.len() - 3);
        assert!(read(cut).unwrap_err().contains("cut short"));
        let mut huge = header(&[]);
        huge.truncate(16);
        huge.extend(1u64.to_le_bytes());
        huge.extend(u64::MAX.to_le_bytes());
        assert!(read(huge).unwrap_err().contains("a string of"));
        assert!(read(header(&[("x", 4, 1u32.to_le_bytes().to_vec())]))
            .unwrap_err()
            .contains("general.architecture"));
    }

    #[test]
    fn kv_cache_follows_the_formula() {
        let shape = read(small_model()).unwrap();
        let plan = ContextPlan {
            slots: 4,
            ctx_size: 2048,
            batch_size: 512,
        };
        let estimate = estimate_memory(&shape, 1000, plan);
        // 2 × n_layer × slots × ctx × n_head_kv × head_dim × 2 bytes.
        assert_eq!(estimate.kv_cache, 2 * 24 * 4 * 2048 * 2 * 64 * 2);
        assert_eq!(estimate.weights, 1000);
        assert_eq!(
            estimate.total(),
            1000 + estimate.kv_cache + estimate.compute
        );
        let doubled = estimate_memory(&shape, 1000, ContextPlan { slots: 8, ..plan });
        assert_eq!(doubled.kv_cache, 2 * estimate.kv_cache);
    }

    #[test]
    fn windowed_layers_keep_only_their_window() {
        let shape = ModelShape {
            architecture: "gemma3".into(),
            n_layer: 18,
            n_head: 4,
            n_head_kv: 1,
            embedding_length: 640,
            key_length: 256,
            value_length: 256,
            sliding_window: Some(512),
            vocab_size: 0,
        };
        let plan = ContextPlan {
            slots: 4,
            ctx_size: 2048,
            batch_size: 512,
        };
        let per_cell = 512 * 2;
        let full = 3 * 4 * 2048 * per_cell;
        let windowed = 15 * (4 * 512 + 512) * per_cell;
        assert_eq!(estimate_memory(&shape, 0, plan).kv_cache, full + windowed);
    }
}
