//! Phase 2, extract: a model's weights as GPU-ready bytes plus a JSON manifest.
//!
//! Output folder:
//! - `weights.bin`, or `weights-00000.bin`... with `--shard-bytes` (split at tensor
//!   boundaries, for HTTP Range / per-shard loading);
//! - `manifest.json` (schema `m2w.weights/1`): per tensor its key, source tensors, shape,
//!   GPU dtype, file, byte offset and length, source dtype and the transform applied; per
//!   file its size and sha256.
//!
//! Every tensor starts at a multiple of [`ALIGN`] bytes (256: WebGPU's
//! `minStorageBufferOffsetAlignment`, so a tensor can be bound straight out of one buffer).
//! Identical tensors are stored once; later ones are aliases. The folder is written under a
//! temporary name and renamed into place, so a failure never leaves half an output, and
//! the same input always gives the same bytes (no timestamps, stable order).
//!
//! Transforms (see `docs/WEIGHTS.md` for the packed block layouts):
//! - f32 kept; f16/bf16/f64 to f32 (or to f16 with [`Precision::F16`]);
//! - ONNX in-graph dequantization (DequantizeLinear, Cast->[Sub]->Mul) folded into an f32
//!   weight stored under the graph tensor the pattern produces;
//! - integers widened/narrowed to 32-bit words (WGSL has no 8-, 16- or 64-bit integers);
//! - GGUF Q8_0 / Q4_0 / Q4_1 repacked as 32-bit words with f32 scales; other GGUF block
//!   types dequantized to f32 by candle.

mod pack;
mod verify;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use half::f16;
use m2w_model::io::AtomicFile;
use m2w_model::quant::{self, QuantizedWeight};
use m2w_model::{DType, InputError, Model, TensorEntry};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use pack::{BlockKind, pack_q4_0, pack_q4_1, pack_q8_0, unpack_q4_0, unpack_q4_1, unpack_q8_0};
pub use verify::{VerifyReport, verify};

pub const SCHEMA: &str = "m2w.weights/1";
/// Byte alignment of every tensor in a weight file.
pub const ALIGN: u64 = 256;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub shard_bytes: Option<u64>,
    pub precision: Precision,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{path}: cannot extract {} tensor(s):\n{}", items.len(), items.join("\n"))]
    Unsupported { path: PathBuf, items: Vec<String> },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    BadOutput { path: PathBuf, what: String },
}

fn werr(path: &Path) -> impl FnOnce(std::io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema: String,
    pub source: SourceInfo,
    pub precision: Precision,
    pub alignment: u64,
    pub files: Vec<FileInfo>,
    pub tensors: Vec<TensorInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceInfo {
    pub file: String,
    pub format: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileInfo {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorInfo {
    /// The name the engine looks the tensor up by (the graph tensor it feeds).
    pub key: String,
    /// Source tensors it was made from (one, or q/scale/zero-point of a folded pattern).
    pub source: Vec<String>,
    pub shape: Vec<u64>,
    /// f32, f16, i32, u32, or a packed block type: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k,
    /// q6_k (docs/WEIGHTS.md).
    pub gpu_dtype: String,
    pub file: String,
    pub offset: u64,
    pub length: u64,
    pub source_dtype: String,
    pub transform: String,
    /// Set when the bytes are shared with an identical earlier tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<String>,
}

/// What a tensor becomes: its GPU bytes and how they were made.
pub(crate) struct Converted {
    pub gpu_dtype: String,
    pub bytes: Vec<u8>,
    pub transform: String,
}

/// The tensors to write, in a stable order: each source tensor, except quantized inputs
/// that only feed a folded pattern, which is written (dequantized) in their place.
pub(crate) enum Item<'m> {
    Plain(&'m TensorEntry),
    Folded(QuantizedWeight),
}

impl Item<'_> {
    pub fn key(&self) -> String {
        match self {
            Item::Plain(t) => t.name.clone(),
            Item::Folded(q) => q.output.clone().expect("foldable"),
        }
    }
}

pub(crate) fn plan(model: &Model) -> Vec<Item<'_>> {
    let folds: Vec<QuantizedWeight> = quant::find(model)
        .into_iter()
        .filter(|q| q.foldable())
        .collect();
    let folded_nodes: HashSet<&str> = folds
        .iter()
        .flat_map(|q| q.folded_nodes.iter().map(String::as_str))
        .collect();
    let mut fold_inputs: HashSet<&str> = HashSet::new();
    for q in &folds {
        fold_inputs.insert(&q.quantized);
        fold_inputs.extend(q.scale.as_deref());
        fold_inputs.extend(q.zero_point.as_deref());
    }
    // Inputs of a fold that some other node reads too must still be written.
    let mut needed_elsewhere: HashSet<String> = HashSet::new();
    if let Some(g) = &model.graph {
        for n in g
            .nodes
            .iter()
            .filter(|n| !folded_nodes.contains(n.label().as_str()))
        {
            for i in &n.inputs {
                if let Some(t) = quant::resolve(model, &n.scope, i) {
                    needed_elsewhere.insert(t.name.clone());
                }
            }
        }
        for o in &g.outputs {
            needed_elsewhere.insert(o.name.clone());
        }
    }
    let mut by_q: HashMap<String, QuantizedWeight> = folds
        .iter()
        .map(|q| (q.quantized.clone(), q.clone()))
        .collect();
    let mut items = Vec::new();
    for t in &model.tensors {
        if let Some(q) = by_q.remove(&t.name) {
            items.push(Item::Folded(q));
            if needed_elsewhere.contains(&t.name) {
                items.push(Item::Plain(t));
            }
        } else if !fold_inputs.contains(t.name.as_str()) || needed_elsewhere.contains(&t.name) {
            items.push(Item::Plain(t));
        }
    }
    items
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// f32 values as the requested float precision; f16 only when every value fits.
fn float_out(values: &[f32], precision: Precision, what: &str) -> Converted {
    if precision == Precision::F16 {
        let fits = values.iter().all(|v| !v.is_finite() || v.abs() <= 65504.0);
        if fits {
            return Converted {
                gpu_dtype: "f16".into(),
                bytes: values
                    .iter()
                    .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                    .collect(),
                transform: format!("{what} -> f16"),
            };
        }
        return Converted {
            gpu_dtype: "f32".into(),
            bytes: f32_bytes(values),
            transform: format!("{what} -> f32 (kept f32: values exceed the f16 range)"),
        };
    }
    Converted {
        gpu_dtype: "f32".into(),
        bytes: f32_bytes(values),
        transform: if what == "f32" {
            "none".into()
        } else {
            format!("{what} -> f32")
        },
    }
}

pub(crate) fn convert(
    model: &Model,
    item: &Item,
    precision: Precision,
) -> Result<Converted, ExtractError> {
    let t = match item {
        Item::Folded(q) => {
            let values = quant::dequantize(model, q)?;
            return Ok(float_out(
                &values,
                precision,
                &format!("dequantize ({})", q.describe()),
            ));
        }
        Item::Plain(t) => *t,
    };
    let raw = || model.read_raw(t).map(|r| r.bytes);
    Ok(match t.dtype {
        DType::F32 => {
            if precision == Precision::F32 {
                Converted {
                    gpu_dtype: "f32".into(),
                    bytes: raw()?,
                    transform: "none".into(),
                }
            } else {
                float_out(&model.read_f32(t)?, precision, "f32")
            }
        }
        DType::F16 if precision == Precision::F16 => Converted {
            gpu_dtype: "f16".into(),
            bytes: raw()?,
            transform: "none".into(),
        },
        DType::F16 | DType::BF16 | DType::F64 => {
            float_out(&model.read_f32(t)?, precision, &t.dtype.name())
        }
        DType::I32 | DType::U32 => Converted {
            gpu_dtype: t.dtype.name(),
            bytes: raw()?,
            transform: "none".into(),
        },
        DType::I64 => {
            let b = raw()?;
            let v: Vec<i64> = b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            if v.iter().all(|&x| i32::try_from(x).is_ok()) {
                Converted {
                    gpu_dtype: "i32".into(),
                    bytes: v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                    transform: "i64 -> i32 (every value fits)".into(),
                }
            } else {
                // Values such as INT64_MAX (Slice "to the end") do not fit: clamp is the
                // engine's business, so the exact words are kept.
                Converted {
                    gpu_dtype: "i64".into(),
                    bytes: b,
                    transform: "none (i64 as pairs of u32 words; values exceed i32)".into(),
                }
            }
        }
        DType::U64 => {
            let b = raw()?;
            let v: Vec<u64> = b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            if v.iter().all(|&x| u32::try_from(x).is_ok()) {
                Converted {
                    gpu_dtype: "u32".into(),
                    bytes: v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
                    transform: "u64 -> u32 (every value fits)".into(),
                }
            } else {
                Converted {
                    gpu_dtype: "u64".into(),
                    bytes: b,
                    transform: "none (u64 as pairs of u32 words)".into(),
                }
            }
        }
        DType::I8 | DType::I16 => {
            let v = model.read_f32(t)?;
            Converted {
                gpu_dtype: "i32".into(),
                bytes: v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
                transform: format!("{} -> i32 (widened)", t.dtype),
            }
        }
        DType::U8 | DType::U16 | DType::Bool => {
            let v = model.read_f32(t)?;
            Converted {
                gpu_dtype: "u32".into(),
                bytes: v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
                transform: format!("{} -> u32 (widened)", t.dtype),
            }
        }
        d if pack::BlockKind::of(d).is_some() => {
            let kind = pack::BlockKind::of(d).expect("checked");
            Converted {
                gpu_dtype: kind.name().into(),
                bytes: kind.pack(&raw()?),
                transform: kind.transform(),
            }
        }
        d if d.is_gguf_block() => float_out(
            &model.read_f32(t)?,
            precision,
            &format!("{d} dequantized by candle"),
        ),
        other => {
            return Err(ExtractError::Unsupported {
                path: model.path.clone(),
                items: vec![format!("  {}: dtype {other} has no GPU form", t.name)],
            });
        }
    })
}

/// Tensors that cannot be extracted, all listed at once before anything is written.
fn unsupported(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Plain(t) if matches!(t.dtype, DType::String | DType::OtherOnnx(_)) => {
                Some(format!(
                    "  {} ({:?}): dtype {} has no GPU form",
                    t.name, t.shape, t.dtype
                ))
            }
            _ => None,
        })
        .collect()
}

struct ShardWriter {
    dir: PathBuf,
    sharded: bool,
    limit: u64,
    files: Vec<FileInfo>,
    current: Option<(AtomicFile, Sha256, u64, String)>,
}

impl ShardWriter {
    fn file_name(&self) -> String {
        if self.sharded {
            format!("weights-{:05}.bin", self.files.len())
        } else {
            "weights.bin".into()
        }
    }

    fn finish_current(&mut self) -> Result<(), ExtractError> {
        if let Some((f, h, len, name)) = self.current.take() {
            let path = self.dir.join(&name);
            f.commit().map_err(werr(&path))?;
            self.files.push(FileInfo {
                name,
                bytes: len,
                sha256: m2w_model::io::hex(&h.finalize()),
            });
        }
        Ok(())
    }

    /// Bytes already written (to a finished shard or the one being written).
    fn read_back(&mut self, file: &str, offset: u64, length: u64) -> Result<Vec<u8>, ExtractError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut path = self.dir.join(file);
        if let Some((f, _, _, name)) = self.current.as_mut()
            && name == file
        {
            f.flush().map_err(werr(&path))?;
            path = f.temp_path().to_path_buf();
        }
        let mut r = std::fs::File::open(&path).map_err(werr(&path))?;
        r.seek(SeekFrom::Start(offset)).map_err(werr(&path))?;
        let mut buf = vec![0u8; length as usize];
        r.read_exact(&mut buf).map_err(werr(&path))?;
        Ok(buf)
    }

    /// Appends one tensor (aligned); returns (file, offset).
    fn append(&mut self, bytes: &[u8]) -> Result<(String, u64), ExtractError> {
        let padded = |len: u64| len.div_ceil(ALIGN) * ALIGN;
        if let Some((_, _, len, _)) = &self.current
            && self.sharded
            && *len > 0
            && padded(*len) + bytes.len() as u64 > self.limit
        {
            self.finish_current()?;
        }
        if self.current.is_none() {
            let name = self.file_name();
            let path = self.dir.join(&name);
            let f = AtomicFile::create(&path).map_err(werr(&path))?;
            self.current = Some((f, Sha256::new(), 0, name));
        }
        let (f, h, len, name) = self.current.as_mut().expect("just opened");
        let pad = (padded(*len) - *len) as usize;
        let path = self.dir.join(name.as_str());
        if pad > 0 {
            let zeros = vec![0u8; pad];
            f.write_all(&zeros).map_err(werr(&path))?;
            h.update(&zeros);
            *len += pad as u64;
        }
        let offset = *len;
        f.write_all(bytes).map_err(werr(&path))?;
        h.update(bytes);
        *len += bytes.len() as u64;
        Ok((name.clone(), offset))
    }
}

/// Extracts every weight of `model_path` into the folder `out` (replaced atomically).
pub fn extract(model_path: &Path, out: &Path, opts: &Options) -> Result<Manifest, ExtractError> {
    let model = Model::open(model_path)?;
    let items = plan(&model);
    let bad = unsupported(&items);
    if !bad.is_empty() {
        return Err(ExtractError::Unsupported {
            path: model.path.clone(),
            items: bad,
        });
    }
    if opts.shard_bytes == Some(0) {
        return Err(ExtractError::BadOutput {
            path: out.to_path_buf(),
            what: "--shard-bytes must be positive".into(),
        });
    }

    if out.file_name().is_none() {
        return Err(ExtractError::BadOutput {
            path: out.to_path_buf(),
            what: "output must name a folder".into(),
        });
    }
    m2w_model::io::replace_dir(
        out,
        |p, source| ExtractError::Write {
            path: p.to_path_buf(),
            source,
        },
        |staging| {
            // The source's sha256 (a full read of the file) overlaps with the conversion.
            std::thread::scope(|scope| {
                let sha = scope.spawn(|| model.file_sha256());
                let written = write_all(&model, &items, staging, opts);
                let sha = sha
                    .join()
                    .unwrap_or_else(|_| Err(InputError::new(&model.path, "hashing failed")));
                let (files, tensors) = written?;
                let manifest = Manifest {
                    schema: SCHEMA.into(),
                    source: SourceInfo {
                        file: model
                            .path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        format: format!("{:?}", model.format).to_lowercase(),
                        sha256: sha?,
                    },
                    precision: opts.precision,
                    alignment: ALIGN,
                    files,
                    tensors,
                };
                let text =
                    serde_json::to_string_pretty(&manifest).expect("manifest serialises") + "\n";
                let mpath = staging.join("manifest.json");
                m2w_model::io::write_atomic(&mpath, text.as_bytes()).map_err(werr(&mpath))?;
                Ok(manifest)
            })
        },
    )
}

/// A fast 64-bit fingerprint used only to find dedup candidates; equal fingerprints are
/// confirmed by comparing the bytes.
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap()))
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn write_all(
    model: &Model,
    items: &[Item],
    dir: &Path,
    opts: &Options,
) -> Result<(Vec<FileInfo>, Vec<TensorInfo>), ExtractError> {
    let mut w = ShardWriter {
        dir: dir.to_path_buf(),
        sharded: opts.shard_bytes.is_some(),
        limit: opts.shard_bytes.unwrap_or(u64::MAX),
        files: Vec::new(),
        current: None,
    };
    let mut seen: HashMap<(String, usize, u64), Vec<usize>> = HashMap::new();
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(items.len());
    'items: for item in items {
        let c = convert(model, item, opts.precision)?;
        let (source, shape, source_dtype) = match item {
            Item::Plain(t) => (vec![t.name.clone()], t.shape.clone(), t.dtype.name()),
            Item::Folded(q) => {
                let qt = model.tensor(&q.quantized).expect("fold input exists");
                let mut s = vec![q.quantized.clone()];
                s.extend(q.scale.clone());
                s.extend(q.zero_point.clone());
                (s, qt.shape.clone(), qt.dtype.name())
            }
        };
        let key = item.key();
        let dedup_key = (c.gpu_dtype.clone(), c.bytes.len(), fingerprint(&c.bytes));
        for &earlier in seen.get(&dedup_key).map(Vec::as_slice).unwrap_or(&[]) {
            let canon = tensors[earlier].clone();
            if w.read_back(&canon.file, canon.offset, canon.length)? == c.bytes {
                tensors.push(TensorInfo {
                    key,
                    source,
                    shape,
                    gpu_dtype: c.gpu_dtype,
                    file: canon.file,
                    offset: canon.offset,
                    length: canon.length,
                    source_dtype,
                    transform: c.transform,
                    alias_of: Some(canon.key),
                });
                continue 'items;
            }
        }
        let (file, offset) = w.append(&c.bytes)?;
        seen.entry(dedup_key).or_default().push(tensors.len());
        tensors.push(TensorInfo {
            key,
            source,
            shape,
            gpu_dtype: c.gpu_dtype,
            file,
            offset,
            length: c.bytes.len() as u64,
            source_dtype,
            transform: c.transform,
            alias_of: None,
        });
    }
    if w.current.is_none() && w.files.is_empty() {
        // A model without weights still gets its (empty) blob, so loaders need no special case.
        w.append(&[])?;
    }
    w.finish_current()?;
    Ok((w.files, tensors))
}

pub fn read_manifest(dir: &Path) -> Result<Manifest, ExtractError> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).map_err(|e| ExtractError::BadOutput {
        path: p.clone(),
        what: format!("cannot read: {e}"),
    })?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| ExtractError::BadOutput {
        path: p.clone(),
        what: format!("not a weights manifest: {e}"),
    })?;
    if m.schema != SCHEMA {
        return Err(ExtractError::BadOutput {
            path: p,
            what: format!("schema {:?}, expected {SCHEMA:?}", m.schema),
        });
    }
    Ok(m)
}
