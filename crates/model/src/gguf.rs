//! GGUF reader through candle-core's `quantized::gguf_file` (there is no maintained
//! standalone GGUF crate). candle bounds-checks the header against the file size; we add
//! per-tensor checks (dims, block divisibility, data range) and a panic guard, so a
//! corrupt file is always an [`InputError`].

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::Path;

use candle_core::quantized::{GgmlDType, gguf_file};

use crate::{DType, Format, InputError, Model, Source, Storage, TensorEntry};

pub struct GgufSource {
    data_offset: u64,
    infos: HashMap<String, gguf_file::TensorInfo>,
}

/// Array metadata with at most this many elements is kept in full; longer arrays
/// (token lists, merges) are only counted.
const SMALL_ARRAY: usize = 64;

fn dtype_of(t: GgmlDType) -> DType {
    match t {
        GgmlDType::F32 => DType::F32,
        GgmlDType::F16 => DType::F16,
        GgmlDType::BF16 => DType::BF16,
        GgmlDType::Q4_0 => DType::Q4_0,
        GgmlDType::Q4_1 => DType::Q4_1,
        GgmlDType::Q5_0 => DType::Q5_0,
        GgmlDType::Q5_1 => DType::Q5_1,
        GgmlDType::Q8_0 => DType::Q8_0,
        GgmlDType::Q8_1 => DType::Q8_1,
        GgmlDType::Q2K => DType::Q2K,
        GgmlDType::Q3K => DType::Q3K,
        GgmlDType::Q4K => DType::Q4K,
        GgmlDType::Q5K => DType::Q5K,
        GgmlDType::Q6K => DType::Q6K,
        GgmlDType::Q8K => DType::Q8K,
    }
}

/// A candle error as one message: without the backtrace candle attaches when
/// RUST_BACKTRACE is set (a user's error is a line, not 60), and without its path wrapper.
pub fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        candle_core::Error::WithPath { inner, .. } => candle_message(inner),
        candle_core::Error::Context { inner, context } => {
            format!("{context}: {}", candle_message(inner))
        }
        other => other.to_string(),
    }
}

/// Runs candle code, turning both its errors and any panic into an InputError.
fn guarded<T>(
    path: &Path,
    what: &str,
    f: impl FnOnce() -> candle_core::Result<T>,
) -> Result<T, InputError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(InputError::new(
            path,
            format!("{what}: {}", candle_message(&e)),
        )),
        Err(_) => Err(InputError::new(
            path,
            format!("{what}: the GGUF reader failed on corrupt data"),
        )),
    }
}

fn to_json(v: &gguf_file::Value) -> serde_json::Value {
    use gguf_file::Value as V;
    match v {
        V::U8(x) => (*x).into(),
        V::I8(x) => (*x).into(),
        V::U16(x) => (*x).into(),
        V::I16(x) => (*x).into(),
        V::U32(x) => (*x).into(),
        V::I32(x) => (*x).into(),
        V::U64(x) => (*x).into(),
        V::I64(x) => (*x).into(),
        V::F32(x) => {
            serde_json::Number::from_f64(*x as f64).map_or(serde_json::Value::Null, Into::into)
        }
        V::F64(x) => serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into),
        V::Bool(x) => (*x).into(),
        V::String(s) => s.clone().into(),
        V::Array(a) => a.iter().map(to_json).collect(),
    }
}

pub fn open(path: &Path) -> Result<Model, InputError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| InputError::new(path, format!("cannot open: {e}")))?;
    let file_bytes = f
        .metadata()
        .map_err(|e| InputError::new(path, format!("cannot stat: {e}")))?
        .len();
    let mut reader = std::io::BufReader::new(&mut f);
    let content = guarded(path, "not a valid GGUF file", || {
        gguf_file::Content::read(&mut reader)
    })?;

    let mut metadata = BTreeMap::new();
    let mut array_lengths = BTreeMap::new();
    for (k, v) in &content.metadata {
        match v {
            gguf_file::Value::Array(a) if a.len() > SMALL_ARRAY => {
                array_lengths.insert(k.clone(), a.len() as u64);
            }
            _ => {
                metadata.insert(k.clone(), to_json(v));
            }
        }
    }

    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    // candle keeps tensor infos in a HashMap: checked in the file's data order (then by
    // name), so a truncated file names the same tensor, the first one cut, on every run.
    let mut infos: Vec<(&String, &gguf_file::TensorInfo)> = content.tensor_infos.iter().collect();
    infos.sort_by(|a, b| a.1.offset.cmp(&b.1.offset).then_with(|| a.0.cmp(b.0)));
    for (name, info) in infos {
        let dtype = dtype_of(info.ggml_dtype);
        let shape: Vec<u64> = info.shape.dims().iter().map(|&d| d as u64).collect();
        let elements = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = elements.and_then(|n| dtype.storage_bytes(n)).ok_or_else(|| {
            InputError::new(
                path,
                format!(
                    "tensor '{name}': dims {shape:?} of {dtype} are absurd (overflow) or not a whole number of blocks"
                ),
            )
        })?;
        let start = content.tensor_data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(bytes));
        if end.is_none_or(|e| e > file_bytes) {
            return Err(InputError::new(
                path,
                format!(
                    "tensor '{name}': data at offset {} + {bytes} bytes runs past the end of the file ({file_bytes} bytes; truncated?)",
                    content.tensor_data_offset.saturating_add(info.offset)
                ),
            ));
        }
        tensors.push(TensorEntry {
            name: name.clone(),
            shape,
            dtype,
            storage: Storage::Gguf {
                offset: info.offset,
            },
            bytes,
            scope: String::new(),
            quantization: None,
        });
    }
    // candle keeps tensors in a HashMap; the file's data order is the stable order.
    tensors.sort_by(|a, b| {
        let off = |t: &TensorEntry| match t.storage {
            Storage::Gguf { offset } => offset,
            _ => 0,
        };
        off(a).cmp(&off(b)).then_with(|| a.name.cmp(&b.name))
    });

    Ok(Model {
        path: path.to_path_buf(),
        format: Format::Gguf,
        file_bytes,
        tensors,
        graph: None,
        metadata,
        array_lengths,
        config: None,
        source: Source::Gguf(GgufSource {
            data_offset: content.tensor_data_offset,
            infos: content.tensor_infos,
        }),
        derived: Default::default(),
    })
}

impl GgufSource {
    pub(crate) fn read(&self, path: &Path, entry: &TensorEntry) -> Result<Vec<u8>, InputError> {
        let Storage::Gguf { offset } = entry.storage else {
            return Err(InputError::new(
                path,
                format!("'{}' is not a GGUF tensor", entry.name),
            ));
        };
        crate::io::read_tensor_at(path, self.data_offset + offset, entry)
    }

    /// Dequantizes with candle (our independent reference for every block layout).
    pub(crate) fn dequantize(
        &self,
        path: &Path,
        entry: &TensorEntry,
    ) -> Result<Vec<f32>, InputError> {
        let info = self
            .infos
            .get(&entry.name)
            .ok_or_else(|| InputError::new(path, format!("no tensor '{}'", entry.name)))?;
        let mut f = std::fs::File::open(path)
            .map_err(|e| InputError::new(path, format!("cannot open: {e}")))?;
        let what = format!("cannot dequantize tensor '{}'", entry.name);
        guarded(path, &what, || {
            let q = info.read(&mut f, self.data_offset, &candle_core::Device::Cpu)?;
            q.dequantize(&candle_core::Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()
        })
    }
}

/// One metadata value of a GGUF in full (long arrays included, which [`open`] only counts):
/// the tokenizer's tokens, merges and token types. `None` when the key is absent.
pub fn metadata_value(path: &Path, key: &str) -> Result<Option<serde_json::Value>, InputError> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| InputError::new(path, format!("cannot open: {e}")))?;
    let mut reader = std::io::BufReader::new(&mut f);
    let content = guarded(path, "not a valid GGUF file", || {
        gguf_file::Content::read(&mut reader)
    })?;
    Ok(content.metadata.get(key).map(to_json))
}
