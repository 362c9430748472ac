//! TFLite models (the `TFL3` flatbuffer) read into the format-neutral view, through the
//! code planus generates from `schema/tflite.fbs` (`tflite_schema.rs`): every read is
//! bounds-checked by planus, so a malformed file is an error, never a panic.
//!
//! - Weights: tensors whose buffer holds bytes, inline in the flatbuffer or, for files
//!   over 2 GiB, at an offset from the file's start (`Buffer.offset/size`), with their
//!   quantization (scale and zero point per tensor or per axis).
//! - The graph: the operators of the primary subgraph (the first), as nodes of domain
//!   `tflite` named by their builtin operator (`CONV_2D`) with their builtin options as
//!   attributes (`stride_w`, `padding` = "SAME"...); tensors are named by their TFLite
//!   names. The other subgraphs (control flow bodies) and the signature defs are listed
//!   in the metadata.

use std::collections::BTreeMap;
use std::path::Path;

use planus::ReadAsRoot;

use crate::tflite_schema::tflite;
use crate::{
    AttrValue, DType, Dim, Format, GraphInfo, InputError, Model, NodeInfo, Quantization, Source,
    Storage, TensorEntry, ValueInfo,
};

/// The flatbuffer types planus generates from `schema/tflite.fbs`, readers and owned
/// builders both: tests write small TFLite models with them.
pub use crate::tflite_schema::tflite as schema;

/// The file identifier at bytes 4..8 of every TFLite model.
pub const IDENTIFIER: &[u8; 4] = b"TFL3";

pub(crate) struct TfliteSource;

/// The TFLite tensor type as our dtype; None for types m2w has no use for.
fn dtype_of(t: tflite::TensorType) -> Option<DType> {
    use tflite::TensorType as T;
    Some(match t {
        T::Float32 => DType::F32,
        T::Float16 => DType::F16,
        T::Bfloat16 => DType::BF16,
        T::Float64 => DType::F64,
        T::Int32 => DType::I32,
        T::Int64 => DType::I64,
        T::Int16 => DType::I16,
        T::Int8 => DType::I8,
        T::Uint8 => DType::U8,
        T::Uint16 => DType::U16,
        T::Uint32 => DType::U32,
        T::Uint64 => DType::U64,
        T::Bool => DType::Bool,
        T::String => DType::String,
        _ => return None,
    })
}

/// One line for a planus error at `what`.
fn bad(path: &Path, what: &str, e: planus::Error) -> InputError {
    InputError::new(path, format!("not a valid TFLite model: {what}: {e}"))
}

pub fn open(path: &Path) -> Result<Model, InputError> {
    let bytes =
        std::fs::read(path).map_err(|e| InputError::new(path, format!("cannot read: {e}")))?;
    if bytes.len() < 8 || &bytes[4..8] != IDENTIFIER {
        return Err(InputError::new(
            path,
            "not a TFLite model (no TFL3 identifier at byte 4)",
        ));
    }
    let model = tflite::ModelRef::read_as_root(&bytes).map_err(|e| bad(path, "root", e))?;
    let err = |what: &str| {
        let what = what.to_string();
        move |e: planus::Error| bad(path, &what, e)
    };

    // Buffers: (offset in the file, bytes) of each, or None when empty.
    let mut buffers: Vec<Option<(u64, u64)>> = Vec::new();
    for b in model
        .buffers()
        .map_err(err("buffers"))?
        .into_iter()
        .flatten()
    {
        let b = b.map_err(err("buffer"))?;
        let data = b.data().map_err(err("buffer data"))?;
        let (offset, size) = (
            b.offset().map_err(err("buffer"))?,
            b.size().map_err(err("buffer"))?,
        );
        buffers.push(match data {
            Some(d) if !d.is_empty() => {
                Some(((d.as_ptr() as usize - bytes.as_ptr() as usize) as u64, d.len() as u64))
            }
            // Outside the flatbuffer (files over 2 GiB): checked against the file's end.
            _ if size > 0 => {
                if offset.checked_add(size).is_none_or(|end| end > bytes.len() as u64) {
                    return Err(InputError::new(
                        path,
                        format!("a buffer at offset {offset} of {size} bytes ends past the file ({} bytes)", bytes.len()),
                    ));
                }
                Some((offset, size))
            }
            _ => None,
        });
    }
    let codes: Vec<(i32, String)> = model
        .operator_codes()
        .map_err(err("operator codes"))?
        .into_iter()
        .flatten()
        .map(|c| -> Result<(i32, String), InputError> {
            let c = c.map_err(err("operator code"))?;
            // Codes below 127 may sit only in the deprecated byte field (older files).
            let code = c
                .builtin_code()
                .map_err(err("operator code"))?
                .max(c.deprecated_builtin_code().map_err(err("operator code"))? as i32);
            let name = match schema_name("BuiltinOperator", code as i64) {
                Some("CUSTOM") => c
                    .custom_code()
                    .map_err(err("custom code"))?
                    .unwrap_or("CUSTOM")
                    .to_string(),
                Some(op) => op.to_string(),
                None => format!("BUILTIN_{code}"),
            };
            Ok((code, name))
        })
        .collect::<Result<_, _>>()?;

    let subgraphs = model.subgraphs().map_err(err("subgraphs"))?;
    let main = subgraphs
        .as_ref()
        .and_then(|s| s.iter().next())
        .ok_or_else(|| InputError::new(path, "not a valid TFLite model: no subgraph"))?
        .map_err(err("subgraph 0"))?;

    let mut tensors = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut shapes: Vec<(Vec<i32>, DType)> = Vec::new();
    let mut value_shapes: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut derived: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (k, t) in main
        .tensors()
        .map_err(err("tensors"))?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let t = t.map_err(err("tensor"))?;
        let name = unique_name(t.name().map_err(err("tensor name"))?, k, &mut seen);
        let ty = t.type_().map_err(err(&format!("tensor '{name}' type")))?;
        let dtype = dtype_of(ty).ok_or_else(|| {
            InputError::new(
                path,
                format!("tensor '{name}': type {ty:?} is not supported"),
            )
        })?;
        let shape: Vec<i32> = t
            .shape()
            .map_err(err(&format!("tensor '{name}' shape")))?
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        let buffer = t
            .buffer()
            .map_err(err(&format!("tensor '{name}' buffer")))? as usize;
        let stored = match buffer {
            0 => None,
            b => *buffers.get(b).ok_or_else(|| {
                InputError::new(
                    path,
                    format!(
                        "tensor '{name}' names buffer {b}; the model has {}",
                        buffers.len()
                    ),
                )
            })?,
        };
        let sparsity = t
            .sparsity()
            .map_err(err(&format!("tensor '{name}' sparsity")))?;
        if let (Some((offset, size)), Some(sp)) = (stored, sparsity) {
            // Sparse weights are made dense here, once: the graph then reads a plain
            // weight (DENSIFY passes it on).
            if shape.iter().any(|&d| d < 0) {
                return Err(InputError::new(
                    path,
                    format!("weight '{name}' has a negative dim {shape:?}"),
                ));
            }
            let elem = dtype.elem_bytes().ok_or_else(|| {
                InputError::new(path, format!("sparse weight '{name}' of type {dtype}"))
            })? as usize;
            let stored_bytes = &bytes[offset as usize..(offset + size) as usize];
            let dense_shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let dense = densify(&dense_shape, &sp, stored_bytes, elem)
                .map_err(|e| InputError::new(path, format!("sparse weight '{name}': {e}")))?;
            tensors.push(TensorEntry {
                name: name.clone(),
                shape: dense_shape.iter().map(|&d| d as u64).collect(),
                dtype,
                storage: Storage::Derived,
                bytes: dense.len() as u64,
                scope: String::new(),
                quantization: quantization(path, &name, &t)?,
            });
            derived.insert(name.clone(), dense);
        } else if let Some((offset, size)) = stored {
            if shape.iter().any(|&d| d < 0) {
                return Err(InputError::new(
                    path,
                    format!("weight '{name}' has a negative dim {shape:?}"),
                ));
            }
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let want = dtype
                .elem_bytes()
                .and_then(|b| shape.iter().try_fold(b, |a, &d| a.checked_mul(d)));
            if want.is_some_and(|w| w != size) {
                return Err(InputError::new(
                    path,
                    format!(
                        "weight '{name}' of shape {shape:?} ({dtype}) needs {} bytes, its buffer holds {size}",
                        want.unwrap_or(0)
                    ),
                ));
            }
            tensors.push(TensorEntry {
                name: name.clone(),
                shape,
                dtype,
                storage: Storage::Tflite { offset },
                bytes: size,
                scope: String::new(),
                quantization: quantization(path, &name, &t)?,
            });
        }
        value_shapes.insert(name.clone(), shape.iter().map(|&d| d as i64).collect());
        names.push(name);
        shapes.push((shape, dtype));
    }
    let tensor_name = |i: i32, what: &str| -> Result<String, InputError> {
        match i {
            -1 => Ok(String::new()),
            i => names.get(i as usize).cloned().ok_or_else(|| {
                InputError::new(
                    path,
                    format!("{what} names tensor {i}; the subgraph has {}", names.len()),
                )
            }),
        }
    };
    let value = |i: i32| -> Result<ValueInfo, InputError> {
        let name = tensor_name(i, "a subgraph input or output")?;
        let (shape, dtype) = &shapes[i as usize];
        Ok(ValueInfo {
            name,
            dtype: dtype.name().to_string(),
            shape: shape.iter().map(|&d| Dim::Fixed(d as i64)).collect(),
        })
    };
    let inputs = main
        .inputs()
        .map_err(err("subgraph inputs"))?
        .map(|v| v.iter().map(value).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    let outputs = main
        .outputs()
        .map_err(err("subgraph outputs"))?
        .map(|v| v.iter().map(value).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();

    let mut nodes = Vec::new();
    for (k, op) in main
        .operators()
        .map_err(err("operators"))?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let op = op.map_err(err(&format!("operator {k}")))?;
        let index = op.opcode_index().map_err(err(&format!("operator {k}")))? as usize;
        let (_, op_type) = codes.get(index).ok_or_else(|| {
            InputError::new(
                path,
                format!(
                    "operator {k} names operator code {index}; the model has {}",
                    codes.len()
                ),
            )
        })?;
        let ids =
            |v: Option<planus::Vector<'_, i32>>, what: &str| -> Result<Vec<String>, InputError> {
                v.map(|v| v.iter().map(|i| tensor_name(i, what)).collect())
                    .transpose()
                    .map(Option::unwrap_or_default)
            };
        let what = format!("operator {k} ({op_type})");
        let node_inputs = ids(op.inputs().map_err(err(&what))?, &what)?;
        let node_outputs = ids(op.outputs().map_err(err(&what))?, &what)?;
        let options = op
            .builtin_options()
            .map_err(err(&format!("{what} options")))?;
        nodes.push(NodeInfo {
            name: node_outputs
                .first()
                .cloned()
                .unwrap_or_else(|| format!("{op_type}_{k}")),
            op_type: op_type.clone(),
            domain: "tflite".into(),
            inputs: node_inputs,
            outputs: node_outputs,
            scope: String::new(),
            attributes: options
                .map(|o| attributes(&o))
                .transpose()
                .map_err(err(&format!("{what} options")))?
                .unwrap_or_default(),
        });
    }

    let mut metadata: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    metadata.insert(
        "tflite.version".into(),
        model.version().map_err(err("version"))?.into(),
    );
    if let Some(d) = model.description().map_err(err("description"))? {
        metadata.insert("tflite.description".into(), d.into());
    }
    let count = subgraphs.as_ref().map_or(0, |s| s.len());
    metadata.insert("tflite.subgraphs".into(), count.into());
    let mut signatures = Vec::new();
    for s in model
        .signature_defs()
        .map_err(err("signature defs"))?
        .into_iter()
        .flatten()
    {
        let s = s.map_err(err("signature def"))?;
        let key = s
            .signature_key()
            .map_err(err("signature key"))?
            .unwrap_or("");
        signatures.push(serde_json::json!({
            "key": key,
            "subgraph": s.subgraph_index().map_err(err("signature def"))?,
        }));
    }
    if !signatures.is_empty() {
        metadata.insert("tflite.signatures".into(), signatures.into());
    }

    Ok(Model {
        path: path.to_path_buf(),
        format: Format::Tflite,
        file_bytes: bytes.len() as u64,
        tensors,
        graph: Some(GraphInfo {
            ir_version: 3,
            producer: "tflite".into(),
            opsets: vec![("tflite".into(), 1)],
            nodes,
            inputs,
            outputs,
            subgraph_outputs: BTreeMap::new(),
            value_shapes,
            layouts: BTreeMap::new(),
        }),
        metadata,
        array_lengths: BTreeMap::new(),
        config: None,
        source: Source::Tflite(TfliteSource),
        derived,
    })
}

/// The name m2w gives tensor `k` of the primary subgraph. Names identify values in m2w;
/// TFLite's may repeat (a converter's DENSIFY output may share its input's name), so a
/// repeat gets its tensor index (`NAME#K`, more `#` while that is taken), an empty name
/// `tensor_K`.
fn unique_name(
    raw: Option<&str>,
    k: usize,
    seen: &mut std::collections::HashSet<String>,
) -> String {
    let mut name = match raw.unwrap_or("") {
        "" => format!("tensor_{k}"),
        n => n.to_string(),
    };
    // A generated name may itself be some later tensor's real name: extend until unused.
    if seen.contains(&name) {
        name = format!("{name}#{k}");
        while seen.contains(&name) {
            name.push('#');
        }
    }
    seen.insert(name.clone());
    name
}

/// Every tensor of the primary subgraph by index, named as [`open`] names them: what the
/// reference maps LiteRT's tensor indices through.
pub fn tensor_names(path: &Path) -> Result<Vec<String>, InputError> {
    let bytes =
        std::fs::read(path).map_err(|e| InputError::new(path, format!("cannot read: {e}")))?;
    let model = tflite::ModelRef::read_as_root(&bytes).map_err(|e| bad(path, "root", e))?;
    let main = model
        .subgraphs()
        .map_err(|e| bad(path, "subgraphs", e))?
        .and_then(|s| s.iter().next())
        .ok_or_else(|| InputError::new(path, "not a valid TFLite model: no subgraph"))?
        .map_err(|e| bad(path, "subgraph 0", e))?;
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::new();
    for (k, t) in main
        .tensors()
        .map_err(|e| bad(path, "tensors", e))?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let t = t.map_err(|e| bad(path, "tensor", e))?;
        names.push(unique_name(
            t.name().map_err(|e| bad(path, "tensor name", e))?,
            k,
            &mut seen,
        ));
    }
    Ok(names)
}

/// Limits on what a sparse weight may claim (checked before any allocation): levels (the
/// recursion depth) and the dense size.
const MAX_SPARSE_LEVELS: usize = 16;
const MAX_DENSE_BYTES: usize = 1 << 31;

/// One level of a sparse tensor: a dense level's size, or a CSR level's segments and
/// indices.
enum Level {
    Dense(usize),
    Csr(Vec<usize>, Vec<usize>),
}

fn index_vector(v: Option<tflite::SparseIndexVectorRef<'_>>) -> planus::Result<Vec<usize>> {
    use tflite::SparseIndexVectorRef as V;
    Ok(match v {
        None => Vec::new(),
        // A negative index names nothing: usize::MAX fails every bounds check below.
        Some(V::Int32Vector(x)) => x
            .values()?
            .map(|v| {
                v.iter()
                    .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
                    .collect()
            })
            .unwrap_or_default(),
        Some(V::Uint16Vector(x)) => x
            .values()?
            .map(|v| v.iter().map(usize::from).collect())
            .unwrap_or_default(),
        Some(V::Uint8Vector(x)) => x
            .values()?
            .map(|v| v.iter().map(|&i| i as usize).collect())
            .unwrap_or_default(),
    })
}

/// LiteRT's sparse-to-dense conversion (its FormatConverter): the stored values are in
/// traversal order, each level DENSE (every index) or SPARSE_CSR (the indices of
/// `segments[parent]..segments[parent + 1]`); levels past the dense rank are blocks of
/// the dims `block_map` names. Every index is checked, so a bad file is an error.
fn densify(
    shape: &[usize],
    sp: &tflite::SparsityParametersRef<'_>,
    values: &[u8],
    elem: usize,
) -> Result<Vec<u8>, String> {
    let bad = |e: planus::Error| e.to_string();
    let non_negative = |v: Option<planus::Vector<'_, i32>>| -> Vec<usize> {
        v.map(|v| {
            v.iter()
                .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
                .collect()
        })
        .unwrap_or_default()
    };
    let order = non_negative(sp.traversal_order().map_err(bad)?);
    let block_map = non_negative(sp.block_map().map_err(bad)?);
    let mut levels = Vec::new();
    for m in sp.dim_metadata().map_err(bad)?.into_iter().flatten() {
        let m = m.map_err(bad)?;
        levels.push(match m.format().map_err(bad)? {
            tflite::DimensionType::Dense => {
                Level::Dense(m.dense_size().map_err(bad)?.max(0) as usize)
            }
            tflite::DimensionType::SparseCsr => Level::Csr(
                index_vector(m.array_segments().map_err(bad)?).map_err(bad)?,
                index_vector(m.array_indices().map_err(bad)?).map_err(bad)?,
            ),
        });
    }
    let rank = shape.len();
    // The dims come first in the traversal (a permutation of 0..rank), then the block
    // levels (a permutation of rank..levels), as LiteRT's converter assumes.
    let permutes = |part: &[usize], from: usize| {
        let mut p = part.to_vec();
        p.sort_unstable();
        p.iter().enumerate().all(|(k, &o)| o == from + k)
    };
    if levels.len() > MAX_SPARSE_LEVELS
        || order.len() != levels.len()
        || order.len() < rank
        || order.len() - rank != block_map.len()
        || !permutes(&order[..rank], 0)
        || !permutes(&order[rank..], rank)
        || block_map.iter().any(|&b| b >= rank)
    {
        return Err(format!(
            "traversal order {order:?}, block map {block_map:?} and {} levels do not fit rank {rank}",
            levels.len()
        ));
    }
    // LiteRT's converter: block b's size is the dense size of level order[rank + b].
    let block_size: Vec<usize> = (0..block_map.len())
        .map(|b| match levels[order[rank + b]] {
            Level::Dense(n) if n > 0 => Ok(n),
            _ => Err("a block level that is not dense".to_string()),
        })
        .collect::<Result<_, _>>()?;
    let bytes = shape
        .iter()
        .try_fold(elem, |a, &d| a.checked_mul(d))
        .filter(|&b| b <= MAX_DENSE_BYTES)
        .ok_or_else(|| format!("a dense shape {shape:?} past {MAX_DENSE_BYTES} bytes"))?;
    let mut dense = vec![0u8; bytes];
    let mut next = 0usize;
    let mut indices = vec![0usize; order.len()];
    struct Walk<'a> {
        shape: &'a [usize],
        order: &'a [usize],
        block_map: &'a [usize],
        block_size: &'a [usize],
        levels: &'a [Level],
        values: &'a [u8],
        elem: usize,
    }
    fn fill(
        w: &Walk<'_>,
        level: usize,
        parent: usize,
        indices: &mut [usize],
        next: &mut usize,
        dense: &mut [u8],
    ) -> Result<(), String> {
        let rank = w.shape.len();
        if level == indices.len() {
            let mut orig = vec![0usize; rank];
            for i in 0..rank {
                orig[w.order[i]] = indices[i];
            }
            for i in rank..indices.len() {
                let b = w.order[i] - rank;
                let dim = *w.block_map.get(b).ok_or("a block level without its dim")?;
                orig[dim] = orig[dim]
                    .checked_mul(w.block_size[b])
                    .and_then(|o| o.checked_add(indices[i]))
                    .ok_or("a block index past the index range")?;
            }
            let mut flat = 0usize;
            for (d, &i) in orig.iter().enumerate() {
                if i >= w.shape[d] {
                    return Err(format!("index {orig:?} outside the shape {:?}", w.shape));
                }
                flat = flat * w.shape[d] + i;
            }
            let src = w
                .values
                .get(*next * w.elem..(*next + 1) * w.elem)
                .ok_or("fewer stored values than the indices name")?;
            dense[flat * w.elem..(flat + 1) * w.elem].copy_from_slice(src);
            *next += 1;
            return Ok(());
        }
        match &w.levels[level] {
            Level::Dense(n) => {
                for i in 0..*n {
                    indices[level] = i;
                    let at = parent
                        .checked_mul(*n)
                        .and_then(|p| p.checked_add(i))
                        .ok_or("a dense level past the index range")?;
                    fill(w, level + 1, at, indices, next, dense)?;
                }
            }
            Level::Csr(segments, idx) => {
                let (lo, hi) = (
                    *segments.get(parent).ok_or("a segment past the array")?,
                    *segments.get(parent + 1).ok_or("a segment past the array")?,
                );
                for i in lo..hi {
                    indices[level] = *idx.get(i).ok_or("an index past the array")?;
                    fill(w, level + 1, i, indices, next, dense)?;
                }
            }
        }
        Ok(())
    }
    let walk = Walk {
        shape,
        order: &order,
        block_map: &block_map,
        block_size: &block_size,
        levels: &levels,
        values,
        elem,
    };
    fill(&walk, 0, 0, &mut indices, &mut next, &mut dense)?;
    if next * elem != values.len() {
        return Err(format!(
            "{} stored values, the indices name {next}",
            values.len() / elem
        ));
    }
    Ok(dense)
}

/// The schema's own spelling of an enum value (`CONV_2D`, `RELU6`), read from
/// `schema/tflite.fbs` (planus renames its variants: `Conv2d`).
fn schema_name(enumeration: &str, value: i64) -> Option<&'static str> {
    static ENUMS: std::sync::OnceLock<BTreeMap<(&'static str, i64), &'static str>> =
        std::sync::OnceLock::new();
    ENUMS
        .get_or_init(|| {
            let schema = include_str!("../schema/tflite.fbs");
            let mut out = BTreeMap::new();
            let mut rest = schema;
            while let Some(at) = rest.find("\nenum ") {
                rest = &rest[at + 6..];
                let name = rest.split([' ', ':']).next().unwrap_or("");
                let Some((open, close)) = rest.find('{').zip(rest.find('}')) else {
                    break;
                };
                for member in rest[open + 1..close].split(',') {
                    if let Some((k, v)) = member.split_once('=')
                        && let Ok(v) = v.trim().parse::<i64>()
                    {
                        out.insert((name, v), k.trim());
                    }
                }
            }
            out
        })
        .get(&(enumeration, value))
        .copied()
}

/// The tensor's quantization: None for a float tensor (no scale).
fn quantization(
    path: &Path,
    name: &str,
    t: &tflite::TensorRef<'_>,
) -> Result<Option<Quantization>, InputError> {
    let err = |e: planus::Error| bad(path, &format!("tensor '{name}' quantization"), e);
    let Some(q) = t.quantization().map_err(err)? else {
        return Ok(None);
    };
    let scale: Vec<f32> = q
        .scale()
        .map_err(err)?
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if scale.is_empty() {
        return Ok(None);
    }
    let zero_point: Vec<i64> = q
        .zero_point()
        .map_err(err)?
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    if !zero_point.is_empty() && zero_point.len() != scale.len() {
        return Err(InputError::new(
            path,
            format!(
                "tensor '{name}': {} scales and {} zero points",
                scale.len(),
                zero_point.len()
            ),
        ));
    }
    let axis = (scale.len() > 1).then_some(q.quantized_dimension().map_err(err)? as i64);
    Ok(Some(Quantization {
        scale,
        zero_point,
        axis,
    }))
}

fn padding(p: tflite::Padding) -> AttrValue {
    AttrValue::String(schema_name("Padding", p as i64).unwrap_or("?").into())
}

fn activation(a: tflite::ActivationFunctionType) -> AttrValue {
    AttrValue::String(
        schema_name("ActivationFunctionType", a as i64)
            .unwrap_or("?")
            .into(),
    )
}

/// The builtin options m2w reads, as attributes by their schema names.
fn attributes(o: &tflite::BuiltinOptionsRef<'_>) -> planus::Result<BTreeMap<String, AttrValue>> {
    use tflite::BuiltinOptionsRef as O;
    let int = |v: i32| AttrValue::Int(v as i64);
    let boolean = |v: bool| AttrValue::Int(v as i64);
    let ints = |v: Option<planus::Vector<'_, i32>>| {
        AttrValue::Ints(
            v.map(|v| v.iter().map(i64::from).collect())
                .unwrap_or_default(),
        )
    };
    let mut a: Vec<(&str, AttrValue)> = Vec::new();
    match o {
        O::Conv2DOptions(x) => {
            a.push(("padding", padding(x.padding()?)));
            a.push(("stride_w", int(x.stride_w()?)));
            a.push(("stride_h", int(x.stride_h()?)));
            a.push(("dilation_w_factor", int(x.dilation_w_factor()?)));
            a.push(("dilation_h_factor", int(x.dilation_h_factor()?)));
            a.push((
                "fused_activation_function",
                activation(x.fused_activation_function()?),
            ));
        }
        O::DepthwiseConv2DOptions(x) => {
            a.push(("padding", padding(x.padding()?)));
            a.push(("stride_w", int(x.stride_w()?)));
            a.push(("stride_h", int(x.stride_h()?)));
            a.push(("depth_multiplier", int(x.depth_multiplier()?)));
            a.push(("dilation_w_factor", int(x.dilation_w_factor()?)));
            a.push(("dilation_h_factor", int(x.dilation_h_factor()?)));
            a.push((
                "fused_activation_function",
                activation(x.fused_activation_function()?),
            ));
        }
        O::TransposeConvOptions(x) => {
            a.push(("padding", padding(x.padding()?)));
            a.push(("stride_w", int(x.stride_w()?)));
            a.push(("stride_h", int(x.stride_h()?)));
            a.push((
                "fused_activation_function",
                activation(x.fused_activation_function()?),
            ));
        }
        O::Pool2DOptions(x) => {
            a.push(("padding", padding(x.padding()?)));
            a.push(("stride_w", int(x.stride_w()?)));
            a.push(("stride_h", int(x.stride_h()?)));
            a.push(("filter_width", int(x.filter_width()?)));
            a.push(("filter_height", int(x.filter_height()?)));
            a.push((
                "fused_activation_function",
                activation(x.fused_activation_function()?),
            ));
        }
        O::FullyConnectedOptions(x) => {
            a.push((
                "fused_activation_function",
                activation(x.fused_activation_function()?),
            ));
            a.push(("weights_format", int(x.weights_format()? as i32)));
            a.push(("keep_num_dims", boolean(x.keep_num_dims()?)));
        }
        O::SoftmaxOptions(x) => a.push(("beta", AttrValue::Float(x.beta()?))),
        O::ConcatenationOptions(x) => {
            a.push(("axis", int(x.axis()?)));
            a.push((
                "fused_activation_function",
                activation(x.fused_activation_function()?),
            ));
        }
        O::AddOptions(x) => a.push((
            "fused_activation_function",
            activation(x.fused_activation_function()?),
        )),
        O::SubOptions(x) => a.push((
            "fused_activation_function",
            activation(x.fused_activation_function()?),
        )),
        O::MulOptions(x) => a.push((
            "fused_activation_function",
            activation(x.fused_activation_function()?),
        )),
        O::DivOptions(x) => a.push((
            "fused_activation_function",
            activation(x.fused_activation_function()?),
        )),
        O::L2NormOptions(x) => a.push((
            "fused_activation_function",
            activation(x.fused_activation_function()?),
        )),
        O::ResizeBilinearOptions(x) => {
            a.push(("align_corners", boolean(x.align_corners()?)));
            a.push(("half_pixel_centers", boolean(x.half_pixel_centers()?)));
        }
        O::ResizeNearestNeighborOptions(x) => {
            a.push(("align_corners", boolean(x.align_corners()?)));
            a.push(("half_pixel_centers", boolean(x.half_pixel_centers()?)));
        }
        O::ReshapeOptions(x) => a.push(("new_shape", ints(x.new_shape()?))),
        O::SqueezeOptions(x) => a.push(("squeeze_dims", ints(x.squeeze_dims()?))),
        O::ReducerOptions(x) => a.push(("keep_dims", boolean(x.keep_dims()?))),
        O::StridedSliceOptions(x) => {
            a.push(("begin_mask", int(x.begin_mask()?)));
            a.push(("end_mask", int(x.end_mask()?)));
            a.push(("ellipsis_mask", int(x.ellipsis_mask()?)));
            a.push(("new_axis_mask", int(x.new_axis_mask()?)));
            a.push(("shrink_axis_mask", int(x.shrink_axis_mask()?)));
            a.push(("offset", boolean(x.offset()?)));
        }
        O::SplitOptions(x) => a.push(("num_splits", int(x.num_splits()?))),
        O::SplitVOptions(x) => a.push(("num_splits", int(x.num_splits()?))),
        O::GatherOptions(x) => {
            a.push(("axis", int(x.axis()?)));
            a.push(("batch_dims", int(x.batch_dims()?)));
        }
        O::PackOptions(x) => {
            a.push(("values_count", int(x.values_count()?)));
            a.push(("axis", int(x.axis()?)));
        }
        O::UnpackOptions(x) => {
            a.push(("num", int(x.num()?)));
            a.push(("axis", int(x.axis()?)));
        }
        O::LeakyReluOptions(x) => a.push(("alpha", AttrValue::Float(x.alpha()?))),
        O::MirrorPadOptions(x) => a.push((
            "mode",
            AttrValue::String(
                schema_name("MirrorPadMode", x.mode()? as i64)
                    .unwrap_or("?")
                    .into(),
            ),
        )),
        O::SpaceToDepthOptions(x) => a.push(("block_size", int(x.block_size()?))),
        O::DepthToSpaceOptions(x) => a.push(("block_size", int(x.block_size()?))),
        O::BatchMatMulOptions(x) => {
            a.push(("adj_x", boolean(x.adj_x()?)));
            a.push(("adj_y", boolean(x.adj_y()?)));
        }
        _ => {}
    }
    Ok(a.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl TfliteSource {
    pub(crate) fn read(&self, path: &Path, entry: &TensorEntry) -> Result<Vec<u8>, InputError> {
        let Storage::Tflite { offset } = entry.storage else {
            return Err(InputError::new(
                path,
                format!("'{}' is not a TFLite tensor", entry.name),
            ));
        };
        crate::io::read_tensor_at(path, offset, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_read_back_in_the_schemas_spelling() {
        assert_eq!(schema_name("BuiltinOperator", 3), Some("CONV_2D"));
        assert_eq!(schema_name("BuiltinOperator", 4), Some("DEPTHWISE_CONV_2D"));
        assert_eq!(schema_name("BuiltinOperator", 17), Some("MAX_POOL_2D"));
        assert_eq!(schema_name("BuiltinOperator", 32), Some("CUSTOM"));
        assert_eq!(
            schema_name("ActivationFunctionType", 2),
            Some("RELU_N1_TO_1")
        );
        assert_eq!(schema_name("Padding", 1), Some("VALID"));
        assert_eq!(schema_name("BuiltinOperator", 100_000), None);
    }
}
