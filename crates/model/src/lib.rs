//! What a model file *is*, independent of what a phase does with it.
//!
//! Each reader (ONNX through prost and the vendored `onnx.proto`, GGUF through candle's
//! `gguf_file`, safetensors) lowers a file into one [`Model`]: its weights as
//! [`TensorEntry`] values with a way to read their bytes, its graph when it has one, and
//! its metadata. `inspect` and `extract` only ever see this view.
//!
//! Every problem with the input is an [`InputError`] naming the file and what is wrong;
//! readers never panic on bad bytes (GGUF goes through candle behind a panic guard as a
//! second line of defence).

pub mod chat;
pub mod dtype;
pub mod error;
pub mod gguf;
pub mod io;
pub mod limits;
pub mod llama_config;
pub mod names;
pub mod onnx;
pub mod onnx_build;
pub mod pipeline;
pub mod quant;
pub mod safetensors_file;
pub mod tflite;
#[allow(clippy::all, unused, missing_docs)]
#[rustfmt::skip]
mod tflite_schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use dtype::DType;
pub use error::InputError;

/// The container format of a model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Onnx,
    Gguf,
    Safetensors,
    Tflite,
}

impl Format {
    /// Guesses the format from the first bytes (magic numbers) and falls back to the file
    /// extension; the reader then checks the content for real.
    pub fn detect(path: &Path, head: &[u8]) -> Result<Format, InputError> {
        if head.starts_with(b"GGUF") {
            return Ok(Format::Gguf);
        }
        if head.get(4..8) == Some(tflite::IDENTIFIER.as_slice()) {
            return Ok(Format::Tflite);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "gguf" => Ok(Format::Gguf),
            "onnx" => Ok(Format::Onnx),
            "safetensors" => Ok(Format::Safetensors),
            "tflite" => Err(InputError::new(
                path,
                "not a TFLite model (no TFL3 identifier at byte 4)",
            )),
            _ => Err(InputError::new(
                path,
                format!(
                    "unknown model format (extension {:?}); expected .onnx, .gguf, .safetensors or .tflite",
                    ext
                ),
            )),
        }
    }
}

/// Where a tensor's bytes live in the source.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Storage {
    /// ONNX graph initializer (raw_data or typed fields).
    Initializer,
    /// ONNX `Constant` node's `value` (or value_float(s) / value_int(s)) attribute.
    ConstantNode { node: String },
    /// ONNX initializer whose bytes are in an external data file.
    ExternalData { file: String, offset: u64 },
    /// GGUF tensor data section.
    Gguf { offset: u64 },
    /// safetensors data section.
    Safetensors { offset: u64 },
    /// TFLite buffer: its bytes at this offset from the file's start.
    Tflite { offset: u64 },
    /// Made in memory by a front-end's lowering (a layout's pads, a target shape), not
    /// read from the file: [`Model::add_derived`].
    Derived,
}

/// One weight tensor of a model, with its storage shape and dtype.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorEntry {
    /// Unique key. For tensors inside ONNX subgraphs this is `scope/name`, where scope
    /// names the control-flow node and branch, because branches may reuse names.
    pub name: String,
    /// Row-major (outermost first) shape. For GGUF this is the reverse of ggml's `ne`.
    pub shape: Vec<u64>,
    pub dtype: DType,
    pub storage: Storage,
    /// Bytes as stored in the source file.
    pub bytes: u64,
    /// For ONNX: the graph scope ("" for the main graph).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// How the stored integers map to real values (TFLite): None for a float tensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

/// Affine quantization of a stored tensor: real = scale * (q - zero_point), one scale per
/// tensor or, along `axis`, one per slice.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Quantization {
    pub scale: Vec<f32>,
    /// Empty means 0.
    pub zero_point: Vec<i64>,
    /// The axis of per-axis quantization (None: one scale for the tensor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub axis: Option<i64>,
}

impl TensorEntry {
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// A graph node (ONNX); attributes are kept by name with a short printable form.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Graph scope: "" for the main graph, else the enclosing control-flow path.
    pub scope: String,
    /// Every attribute, by name (subgraphs and tensors summarised).
    pub attributes: BTreeMap<String, AttrValue>,
}

/// An ONNX attribute value. Subgraph and tensor attributes keep a summary here; the
/// tensors themselves are weights and the subgraphs' nodes are listed with their scope.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrValue {
    Int(i64),
    Float(f32),
    String(String),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Strings(Vec<String>),
    /// A tensor attribute: its dtype, dims, and the values of small tensors (at most 16
    /// elements, as f64) so that plan-time folding can use them.
    Tensor {
        dtype: String,
        dims: Vec<i64>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        values: Vec<f64>,
    },
    Graph {
        scope: String,
    },
    Graphs {
        count: usize,
    },
    Other {
        attribute_type: i32,
    },
}

impl NodeInfo {
    pub fn attr_int(&self, name: &str) -> Option<i64> {
        match self.attributes.get(name) {
            Some(AttrValue::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// A label for messages: the node's name, or `op#index`-style output name when unnamed.
    pub fn label(&self) -> String {
        if !self.name.is_empty() {
            self.name.clone()
        } else {
            format!(
                "{} -> {}",
                self.op_type,
                self.outputs.first().map(String::as_str).unwrap_or("?")
            )
        }
    }
}

/// A graph input or output with its declared type.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: String,
    /// Each dim is a number or a symbolic name; `?` when unknown.
    pub shape: Vec<Dim>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
}

/// The graph part of a model (ONNX only for now).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GraphInfo {
    pub ir_version: i64,
    pub producer: String,
    /// (domain, version); "" is the default ONNX domain.
    pub opsets: Vec<(String, i64)>,
    pub nodes: Vec<NodeInfo>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// The outputs of each control-flow subgraph (If branches, Loop/Scan bodies), by the
    /// scope its nodes carry.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub subgraph_outputs: BTreeMap<String, Vec<String>>,
    /// The declared shape of every value, by name, where the format records one (TFLite
    /// stores a shape with each tensor; ONNX's value_info is not read).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub value_shapes: BTreeMap<String, Vec<i64>>,
    /// Values a front-end's lowering holds in another layout than the source model: the
    /// lowered value `name` is the source's tensor of that name transposed by the
    /// permutation (TFLite's NHWC feature maps held as NCHW: `[0, 3, 1, 2]`). Oracle
    /// values are permuted the same way before they are compared.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub layouts: BTreeMap<String, Vec<usize>>,
}

/// A model file read into the format-neutral view.
pub struct Model {
    pub path: PathBuf,
    pub format: Format,
    pub file_bytes: u64,
    pub tensors: Vec<TensorEntry>,
    pub graph: Option<GraphInfo>,
    /// Scalar metadata (GGUF key/values, safetensors `__metadata__`); long arrays are
    /// summarised by [`Model::array_lengths`] instead.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Lengths of array-valued metadata (GGUF tokenizer tokens, merges...).
    pub array_lengths: BTreeMap<String, u64>,
    /// `config.json` beside a safetensors file, when present.
    pub config: Option<serde_json::Value>,
    source: Source,
    /// Bytes of the [`Storage::Derived`] tensors, by name.
    derived: BTreeMap<String, Vec<u8>>,
}

enum Source {
    Onnx(onnx::OnnxSource),
    Gguf(gguf::GgufSource),
    Safetensors(safetensors_file::SafetensorsSource),
    Tflite(tflite::TfliteSource),
}

/// Raw tensor bytes in the source layout (little-endian, row-major; GGUF blocks as stored).
pub struct RawTensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

impl Model {
    /// Opens any supported model file.
    pub fn open(path: &Path) -> Result<Model, InputError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| InputError::new(path, format!("cannot read file: {e}")))?;
        if meta.is_dir() {
            return Err(InputError::new(path, "is a folder, expected a model file"));
        }
        let mut head = [0u8; 8];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path)
                .map_err(|e| InputError::new(path, format!("cannot open: {e}")))?;
            f.read(&mut head)
                .map_err(|e| InputError::new(path, format!("cannot read: {e}")))?
        };
        if n == 0 {
            return Err(InputError::new(path, "file is empty"));
        }
        match Format::detect(path, &head[..n])? {
            Format::Onnx => onnx::open(path),
            Format::Gguf => gguf::open(path),
            Format::Safetensors => safetensors_file::open(path),
            Format::Tflite => tflite::open(path),
        }
    }

    /// The model files of a folder (sorted by name), for multi-model pipelines. Files of
    /// other kinds are skipped; a folder with no model file is an error.
    pub fn files_in(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| InputError::new(dir, format!("cannot list folder: {e}")))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| InputError::new(dir, format!("cannot list: {e}")))?;
            let p = entry.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if p.is_file() && matches!(ext.as_str(), "onnx" | "gguf" | "safetensors" | "tflite") {
                out.push(p);
            }
        }
        out.sort();
        if out.is_empty() {
            return Err(InputError::new(
                dir,
                "folder holds no model file (.onnx, .gguf, .safetensors, .tflite)",
            ));
        }
        Ok(out)
    }

    /// Adds a tensor made in memory (a front-end's lowering: pads, target shapes, scales),
    /// little-endian bytes of `dtype` in row-major order; it reads back like a weight.
    pub fn add_derived(&mut self, name: &str, dtype: DType, shape: Vec<u64>, bytes: Vec<u8>) {
        self.tensors.retain(|t| t.name != name);
        self.tensors.push(TensorEntry {
            name: name.to_string(),
            shape,
            dtype,
            storage: Storage::Derived,
            bytes: bytes.len() as u64,
            scope: String::new(),
            quantization: None,
        });
        self.derived.insert(name.to_string(), bytes);
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Reads one tensor's bytes as stored (ONNX typed fields are converted to packed
    /// little-endian bytes of the declared dtype).
    pub fn read_raw(&self, entry: &TensorEntry) -> Result<RawTensor, InputError> {
        let bytes = match &self.source {
            _ if entry.storage == Storage::Derived => {
                self.derived.get(&entry.name).cloned().ok_or_else(|| {
                    InputError::new(
                        &self.path,
                        format!("derived tensor '{}' has no bytes", entry.name),
                    )
                })?
            }
            Source::Onnx(s) => s.read(&self.path, entry)?,
            Source::Gguf(s) => s.read(&self.path, entry)?,
            Source::Safetensors(s) => s.read(&self.path, entry)?,
            Source::Tflite(s) => s.read(&self.path, entry)?,
        };
        Ok(RawTensor {
            dtype: entry.dtype,
            shape: entry.shape.clone(),
            bytes,
        })
    }

    /// Reads one tensor as f32 values. Float and integer dtypes are converted; GGUF block
    /// types are dequantized by candle (the independent reference for our own packing).
    pub fn read_f32(&self, entry: &TensorEntry) -> Result<Vec<f32>, InputError> {
        if let Source::Gguf(s) = &self.source
            && entry.dtype.is_gguf_block()
        {
            return s.dequantize(&self.path, entry);
        }
        let raw = self.read_raw(entry)?;
        dtype::to_f32(&raw.bytes, raw.dtype).ok_or_else(|| {
            InputError::new(
                &self.path,
                format!(
                    "tensor '{}': dtype {} has no f32 view",
                    entry.name, entry.dtype
                ),
            )
        })
    }

    /// sha256 of the whole source file, hex.
    pub fn file_sha256(&self) -> Result<String, InputError> {
        io::sha256_file(&self.path)
    }

    /// The file's sha256, or, when tensors live in external data files, one sha256 over
    /// the file's and each data file's: what a port's stamps key on, so that new weights
    /// beside an unchanged graph make a new port.
    pub fn sources_sha256(&self) -> Result<String, InputError> {
        let mut files: Vec<&str> = self
            .tensors
            .iter()
            .filter_map(|t| match &t.storage {
                Storage::ExternalData { file, .. } => Some(file.as_str()),
                _ => None,
            })
            .collect();
        files.sort();
        files.dedup();
        let own = self.file_sha256()?;
        if files.is_empty() {
            return Ok(own);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut all = own;
        for f in files {
            all.push_str(&io::sha256_file(&dir.join(f))?);
        }
        Ok(io::sha256_bytes(all.as_bytes()))
    }
}
