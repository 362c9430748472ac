//! ONNX reader: prost types generated from the vendored `onnx.proto` (onnx 1.22.0).
//!
//! Weights are graph initializers and `Constant` nodes, in the main graph and in every
//! control-flow subgraph (If/Loop/Scan bodies). Every tensor's byte size is checked against
//! its dims and dtype when the file is opened, so later reads cannot run past anything.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use prost::Message;

use crate::{
    DType, Dim, Format, GraphInfo, InputError, Model, NodeInfo, Source, Storage, TensorEntry,
    ValueInfo,
};

/// prost types for `onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::{AttributeProto, GraphProto, ModelProto, TensorProto};

/// What the ONNX reader keeps to serve tensor reads.
pub struct OnnxSource {
    tensors: HashMap<String, TensorProto>,
    dir: PathBuf,
}

/// Decodes a ModelProto, with a clear error on anything that is not one.
pub fn decode(path: &Path) -> Result<ModelProto, InputError> {
    let bytes =
        std::fs::read(path).map_err(|e| InputError::new(path, format!("cannot read: {e}")))?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| {
        InputError::new(
            path,
            format!("not a valid ONNX model (protobuf decode failed: {e})"),
        )
    })?;
    if model.graph.is_none() {
        return Err(InputError::new(
            path,
            "not a valid ONNX model: it has no graph",
        ));
    }
    if model.opset_import.is_empty() {
        return Err(InputError::new(
            path,
            "not a valid ONNX model: it has no opset_import (truncated?)",
        ));
    }
    if model.ir_version.unwrap_or(0) <= 0 {
        return Err(InputError::new(
            path,
            "not a valid ONNX model: ir_version is missing",
        ));
    }
    Ok(model)
}

/// The main graph must be a graph: every value a node reads (and every graph output) is a
/// graph input, an initializer or some node's output, and no node depends on itself
/// through others. A file that breaks either cannot run anywhere; saying so here makes
/// `inspect` and `extract` refuse it (exit 2) instead of describing it. Subgraphs (If,
/// Loop bodies) read outer-scope values and their own inputs, and are left to the phases
/// that walk them.
fn check_structure(
    info: &GraphInfo,
    initializers: &std::collections::HashSet<&str>,
) -> Result<(), String> {
    let main: Vec<&crate::NodeInfo> = info.nodes.iter().filter(|n| n.scope.is_empty()).collect();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in main.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), i);
        }
    }
    let known = |v: &str| {
        v.is_empty()
            || initializers.contains(v)
            || info.inputs.iter().any(|i| i.name == v)
            || producer.contains_key(v)
    };
    let mut missing: Vec<String> = Vec::new();
    for n in &main {
        for v in n.inputs.iter().filter(|v| !known(v)) {
            missing.push(format!("node '{}' ({}) reads '{v}'", n.label(), n.op_type));
        }
    }
    for o in info.outputs.iter().filter(|o| !known(&o.name)) {
        missing.push(format!("graph output '{}'", o.name));
    }
    if !missing.is_empty() {
        let more = missing.len().saturating_sub(5);
        missing.truncate(5);
        return Err(format!(
            "the graph reads values nothing produces (no node output, graph input or \
             initializer): {}{}",
            missing.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ));
    }
    // Kahn's algorithm over the main graph's nodes: what is left is on a cycle or behind one.
    let mut indegree = vec![0usize; main.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); main.len()];
    for (i, n) in main.iter().enumerate() {
        let mut from: Vec<usize> = n
            .inputs
            .iter()
            .filter_map(|v| producer.get(v.as_str()).copied())
            .collect();
        from.sort_unstable();
        from.dedup();
        for p in from {
            indegree[i] += 1;
            readers[p].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..main.len()).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &r in &readers[i] {
            indegree[r] -= 1;
            if indegree[r] == 0 {
                ready.push(r);
            }
        }
    }
    if done < main.len() {
        let stuck: Vec<String> = (0..main.len())
            .filter(|&i| indegree[i] > 0)
            .take(5)
            .map(|i| format!("'{}' ({})", main[i].label(), main[i].op_type))
            .collect();
        return Err(format!(
            "the graph has a cycle: {} node(s) depend on their own outputs, among them {}",
            main.len() - done,
            stuck.join(", ")
        ));
    }
    Ok(())
}

pub fn open(path: &Path) -> Result<Model, InputError> {
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| InputError::new(path, format!("cannot stat: {e}")))?
        .len();
    let mut model = decode(path)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let graph = model.graph.take().expect("checked in decode");

    let mut w = Walker {
        path,
        dir: &dir,
        entries: Vec::new(),
        tensors: HashMap::new(),
        nodes: Vec::new(),
        subgraph_outputs: Default::default(),
    };
    let initializer_names: Vec<String> = graph
        .initializer
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !initializer_names.iter().any(|n| n == v.name()))
        .map(value_info)
        .collect();
    let outputs = graph.output.iter().map(value_info).collect();
    w.walk(graph, "")?;

    let info = GraphInfo {
        ir_version: model.ir_version(),
        producer: format!("{} {}", model.producer_name(), model.producer_version())
            .trim()
            .to_string(),
        opsets: model
            .opset_import
            .iter()
            .map(|o| (o.domain().to_string(), o.version()))
            .collect(),
        nodes: w.nodes,
        inputs,
        outputs,
        subgraph_outputs: w.subgraph_outputs,
        ..Default::default()
    };
    let initializers: std::collections::HashSet<&str> = w
        .entries
        .iter()
        .filter(|t| t.scope.is_empty())
        .map(|t| t.name.as_str())
        .chain(initializer_names.iter().map(String::as_str))
        .collect();
    check_structure(&info, &initializers).map_err(|e| InputError::new(path, e))?;
    Ok(Model {
        path: path.to_path_buf(),
        format: Format::Onnx,
        file_bytes,
        tensors: w.entries,
        graph: Some(info),
        metadata: model
            .metadata_props
            .iter()
            .map(|p| (p.key().to_string(), serde_json::Value::from(p.value())))
            .collect(),
        array_lengths: Default::default(),
        config: None,
        source: Source::Onnx(OnnxSource {
            tensors: w.tensors,
            dir,
        }),
        derived: Default::default(),
    })
}

fn value_info(v: &proto::ValueInfoProto) -> ValueInfo {
    use proto::tensor_shape_proto::dimension::Value as DimValue;
    use proto::type_proto::Value;
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(Value::TensorType(t)) => (
            DType::from_onnx(t.elem_type()).name(),
            t.shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(DimValue::DimValue(v)) => Dim::Fixed(*v),
                            Some(DimValue::DimParam(p)) => Dim::Symbolic(p.clone()),
                            None => Dim::Symbolic("?".into()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Some(Value::SequenceType(_)) => ("sequence".into(), vec![]),
        Some(Value::MapType(_)) => ("map".into(), vec![]),
        Some(Value::OptionalType(_)) => ("optional".into(), vec![]),
        Some(Value::SparseTensorType(_)) => ("sparse_tensor".into(), vec![]),
        None => ("unknown".into(), vec![]),
    };
    ValueInfo {
        name: v.name().to_string(),
        dtype,
        shape,
    }
}

struct Walker<'a> {
    path: &'a Path,
    dir: &'a Path,
    entries: Vec<TensorEntry>,
    tensors: HashMap<String, TensorProto>,
    nodes: Vec<NodeInfo>,
    subgraph_outputs: std::collections::BTreeMap<String, Vec<String>>,
}

impl Walker<'_> {
    fn key(scope: &str, name: &str) -> String {
        if scope.is_empty() {
            name.to_string()
        } else {
            format!("{scope}::{name}")
        }
    }

    fn walk(&mut self, graph: GraphProto, scope: &str) -> Result<(), InputError> {
        if !graph.sparse_initializer.is_empty() {
            return Err(InputError::new(
                self.path,
                format!(
                    "graph{} has {} sparse initializers; sparse tensors are not supported",
                    scope_label(scope),
                    graph.sparse_initializer.len()
                ),
            ));
        }
        if !scope.is_empty() {
            self.subgraph_outputs.insert(
                scope.to_string(),
                graph.output.iter().map(|o| o.name().to_string()).collect(),
            );
        }
        for t in graph.initializer {
            let name = t.name().to_string();
            if name.is_empty() {
                return Err(InputError::new(
                    self.path,
                    format!("an initializer{} has no name", scope_label(scope)),
                ));
            }
            self.add_tensor(Self::key(scope, &name), scope, t, None)?;
        }
        for (index, node) in graph.node.into_iter().enumerate() {
            let node_label = if node.name().is_empty() {
                format!("{}#{index}", node.op_type())
            } else {
                node.name().to_string()
            };
            self.nodes.push(NodeInfo {
                name: node.name().to_string(),
                op_type: node.op_type().to_string(),
                domain: node.domain().to_string(),
                inputs: node.input.clone(),
                outputs: node.output.clone(),
                scope: scope.to_string(),
                attributes: node
                    .attribute
                    .iter()
                    .map(|a| (a.name().to_string(), attr_value(a, scope, &node_label)))
                    .collect(),
            });
            if node.op_type() == "Constant" && node.domain().is_empty() {
                let out = node.output.first().cloned().unwrap_or_default();
                let t = constant_value(self.path, &node_label, &node.attribute)?;
                self.add_tensor(Self::key(scope, &out), scope, t, Some(node_label.clone()))?;
            }
            for attr in node.attribute {
                let attr_name = attr.name().to_string();
                let sub = format!("{}{}.{}", scope_prefix(scope), node_label, attr_name);
                if let Some(g) = attr.g {
                    self.walk(g, &sub)?;
                }
                for (i, g) in attr.graphs.into_iter().enumerate() {
                    self.walk(g, &format!("{sub}[{i}]"))?;
                }
            }
        }
        Ok(())
    }

    fn add_tensor(
        &mut self,
        key: String,
        scope: &str,
        t: TensorProto,
        constant_node: Option<String>,
    ) -> Result<(), InputError> {
        let dtype = DType::from_onnx(t.data_type());
        let mut shape = Vec::with_capacity(t.dims.len());
        for &d in &t.dims {
            if d < 0 {
                return Err(InputError::new(
                    self.path,
                    format!(
                        "tensor '{key}' has a negative dimension {d} in {:?}",
                        t.dims
                    ),
                ));
            }
            shape.push(d as u64);
        }
        let elements = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                InputError::new(
                    self.path,
                    format!(
                        "tensor '{key}' has absurd dims {:?} (element count overflows)",
                        t.dims
                    ),
                )
            })?;
        let storage;
        let bytes;
        if t.data_location() == proto::tensor_proto::DataLocation::External {
            let (file, offset, length) = self.external_location(&key, &t)?;
            let expected = dtype.storage_bytes(elements);
            if let Some(exp) = expected
                && exp != length
            {
                return Err(InputError::new(
                    self.path,
                    format!(
                        "tensor '{key}': external data holds {length} bytes but dims {:?} of {dtype} need {exp}",
                        t.dims
                    ),
                ));
            }
            storage = Storage::ExternalData { file, offset };
            bytes = length;
        } else {
            bytes = stored_bytes(&t, dtype, elements).map_err(|what| {
                InputError::new(
                    self.path,
                    format!("tensor '{key}' (dims {:?}, {dtype}): {what}", t.dims),
                )
            })?;
            storage = match constant_node {
                Some(node) => Storage::ConstantNode { node },
                None => Storage::Initializer,
            };
        }
        if self.tensors.contains_key(&key) {
            return Err(InputError::new(
                self.path,
                format!("tensor name '{key}' is defined twice"),
            ));
        }
        self.entries.push(TensorEntry {
            name: key.clone(),
            shape,
            dtype,
            storage,
            bytes,
            scope: scope.to_string(),
            quantization: None,
        });
        self.tensors.insert(key, t);
        Ok(())
    }

    /// (relative file, offset, length) of an external tensor, with the file checked.
    fn external_location(
        &self,
        key: &str,
        t: &TensorProto,
    ) -> Result<(String, u64, u64), InputError> {
        let mut location = None;
        let mut offset = 0u64;
        let mut length = None;
        for kv in &t.external_data {
            let parse = |v: &str| {
                v.parse::<u64>().map_err(|_| {
                    InputError::new(
                        self.path,
                        format!(
                            "tensor '{key}': external_data {}={v:?} is not a number",
                            kv.key()
                        ),
                    )
                })
            };
            match kv.key() {
                "location" => location = Some(kv.value().to_string()),
                "offset" => offset = parse(kv.value())?,
                "length" => length = Some(parse(kv.value())?),
                _ => {}
            }
        }
        let location = location.ok_or_else(|| {
            InputError::new(
                self.path,
                format!("tensor '{key}': external data without a location"),
            )
        })?;
        let rel = Path::new(&location);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(InputError::new(
                self.path,
                format!(
                    "tensor '{key}': external data location {location:?} must be a relative path inside the model's folder"
                ),
            ));
        }
        let file = self.dir.join(rel);
        let size = std::fs::metadata(&file)
            .map_err(|e| {
                InputError::new(
                    self.path,
                    format!(
                        "tensor '{key}': external data file {} is missing or unreadable ({e})",
                        file.display()
                    ),
                )
            })?
            .len();
        let length = match length {
            Some(l) => l,
            None => size.saturating_sub(offset),
        };
        let end = offset.checked_add(length);
        if end.is_none_or(|e| e > size) {
            return Err(InputError::new(
                self.path,
                format!(
                    "tensor '{key}': external data range {offset}+{length} runs past the end of {} ({size} bytes)",
                    file.display()
                ),
            ));
        }
        Ok((location, offset, length))
    }
}

fn attr_value(a: &AttributeProto, scope: &str, node_label: &str) -> crate::AttrValue {
    use crate::AttrValue as A;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match a.r#type() {
        proto::attribute_proto::AttributeType::Float => A::Float(a.f()),
        proto::attribute_proto::AttributeType::Int => A::Int(a.i()),
        proto::attribute_proto::AttributeType::String => A::String(text(a.s())),
        proto::attribute_proto::AttributeType::Floats => A::Floats(a.floats.clone()),
        proto::attribute_proto::AttributeType::Ints => A::Ints(a.ints.clone()),
        proto::attribute_proto::AttributeType::Strings => {
            A::Strings(a.strings.iter().map(|s| text(s)).collect())
        }
        proto::attribute_proto::AttributeType::Tensor => {
            let t = a.t.clone().unwrap_or_default();
            let dtype = DType::from_onnx(t.data_type());
            let elements: i64 = t.dims.iter().product();
            let values = if (0..=16).contains(&elements) {
                small_values(&t, dtype).unwrap_or_default()
            } else {
                Vec::new()
            };
            A::Tensor {
                dtype: dtype.name(),
                dims: t.dims,
                values,
            }
        }
        proto::attribute_proto::AttributeType::Graph => A::Graph {
            scope: format!("{}{}.{}", scope_prefix(scope), node_label, a.name()),
        },
        proto::attribute_proto::AttributeType::Graphs => A::Graphs {
            count: a.graphs.len(),
        },
        other => A::Other {
            attribute_type: other as i32,
        },
    }
}

/// Values of a small tensor attribute as f64 (raw_data or typed fields).
fn small_values(t: &TensorProto, dtype: DType) -> Option<Vec<f64>> {
    if let Some(raw) = &t.raw_data {
        if dtype == DType::I64 {
            return Some(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
            );
        }
        return crate::dtype::to_f32(raw, dtype).map(|v| v.into_iter().map(f64::from).collect());
    }
    Some(match dtype {
        DType::F32 => t.float_data.iter().map(|&v| v as f64).collect(),
        DType::F64 => t.double_data.clone(),
        DType::I64 => t.int64_data.iter().map(|&v| v as f64).collect(),
        DType::F16 => t
            .int32_data
            .iter()
            .map(|&v| half::f16::from_bits(v as u16).to_f64())
            .collect(),
        DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::U16 | DType::Bool => {
            t.int32_data.iter().map(|&v| v as f64).collect()
        }
        _ => return None,
    })
}

fn scope_label(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!(" (in {scope})")
    }
}

fn scope_prefix(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!("{scope}/")
    }
}

/// The element field a dtype's values use when raw_data is absent.
fn typed_len(t: &TensorProto, dtype: DType) -> Option<usize> {
    use DType::*;
    Some(match dtype {
        F32 => t.float_data.len(),
        F64 => t.double_data.len(),
        I64 => t.int64_data.len(),
        U64 | U32 => t.uint64_data.len(),
        I32 | I16 | I8 | U16 | U8 | Bool | F16 | BF16 => t.int32_data.len(),
        String => t.string_data.len(),
        _ => return None,
    })
}

/// Checks that the tensor carries exactly the data its dims need; returns its byte size.
fn stored_bytes(t: &TensorProto, dtype: DType, elements: u64) -> Result<u64, String> {
    if dtype == DType::String {
        let n = t.string_data.len() as u64;
        if n != elements {
            return Err(format!("has {n} strings for {elements} elements"));
        }
        return Ok(t.string_data.iter().map(|s| s.len() as u64).sum());
    }
    let expected = dtype
        .storage_bytes(elements)
        .ok_or_else(|| format!("dtype {dtype} is not supported or the size overflows"))?;
    if let Some(raw) = &t.raw_data {
        if raw.len() as u64 != expected {
            return Err(format!(
                "raw_data holds {} bytes, dims need {expected} (truncated or corrupt)",
                raw.len()
            ));
        }
        return Ok(expected);
    }
    // Sub-byte types keep one packed byte per int32_data entry.
    if dtype.sub_byte().is_some() {
        let n = t.int32_data.len() as u64;
        if n != expected {
            return Err(format!("holds {n} bytes, dims need {expected}"));
        }
        return Ok(expected);
    }
    let n =
        typed_len(t, dtype).ok_or_else(|| format!("dtype {dtype} has no typed data field"))? as u64;
    if n != elements {
        return Err(format!(
            "holds {n} values, dims need {elements} (truncated or corrupt)"
        ));
    }
    Ok(expected)
}

/// The tensor a Constant node produces, from whichever value attribute it has.
fn constant_value(
    path: &Path,
    node: &str,
    attrs: &[AttributeProto],
) -> Result<TensorProto, InputError> {
    for a in attrs {
        let mut t = TensorProto::default();
        match a.name() {
            "value" => {
                return a.t.clone().ok_or_else(|| {
                    InputError::new(
                        path,
                        format!("Constant node '{node}': value attribute has no tensor"),
                    )
                });
            }
            "value_float" => {
                t.data_type = Some(1);
                t.float_data = vec![a.f()];
            }
            "value_floats" => {
                t.data_type = Some(1);
                t.dims = vec![a.floats.len() as i64];
                t.float_data = a.floats.clone();
            }
            "value_int" => {
                t.data_type = Some(7);
                t.int64_data = vec![a.i()];
            }
            "value_ints" => {
                t.data_type = Some(7);
                t.dims = vec![a.ints.len() as i64];
                t.int64_data = a.ints.clone();
            }
            "value_string" => {
                t.data_type = Some(8);
                t.string_data = vec![a.s().to_vec()];
            }
            "value_strings" => {
                t.data_type = Some(8);
                t.dims = vec![a.strings.len() as i64];
                t.string_data = a.strings.clone();
            }
            "sparse_value" => {
                return Err(InputError::new(
                    path,
                    format!("Constant node '{node}': sparse_value is not supported"),
                ));
            }
            _ => continue,
        }
        return Ok(t);
    }
    Err(InputError::new(
        path,
        format!("Constant node '{node}' has no value attribute"),
    ))
}

impl OnnxSource {
    pub(crate) fn read(
        &self,
        model_path: &Path,
        entry: &TensorEntry,
    ) -> Result<Vec<u8>, InputError> {
        let t = self
            .tensors
            .get(&entry.name)
            .ok_or_else(|| InputError::new(model_path, format!("no tensor '{}'", entry.name)))?;
        if let Storage::ExternalData { file, offset } = &entry.storage {
            use std::io::{Read, Seek, SeekFrom};
            let p = self.dir.join(file);
            let mut f = std::fs::File::open(&p)
                .map_err(|e| InputError::new(&p, format!("cannot open external data: {e}")))?;
            f.seek(SeekFrom::Start(*offset))
                .map_err(|e| InputError::new(&p, format!("cannot seek: {e}")))?;
            let mut buf = vec![0u8; entry.bytes as usize];
            f.read_exact(&mut buf).map_err(|e| {
                InputError::new(
                    &p,
                    format!("external data for '{}' is short: {e}", entry.name),
                )
            })?;
            return Ok(buf);
        }
        if let Some(raw) = &t.raw_data {
            return Ok(raw.clone());
        }
        use DType::*;
        let out: Vec<u8> = match entry.dtype {
            F32 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            F64 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            U64 => t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            U32 => t
                .uint64_data
                .iter()
                .flat_map(|&v| (v as u32).to_le_bytes())
                .collect(),
            I32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            // Narrow types are widened to int32 in the typed field; F16/BF16 keep bits.
            I16 | U16 | F16 | BF16 => t
                .int32_data
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect(),
            I8 | U8 | Bool => t.int32_data.iter().map(|&v| v as u8).collect(),
            other if other.sub_byte().is_some() => t.int32_data.iter().map(|&v| v as u8).collect(),
            other => {
                return Err(InputError::new(
                    model_path,
                    format!("tensor '{}': dtype {other} has no byte view", entry.name),
                ));
            }
        };
        Ok(out)
    }
}

/// Helpers for tests and tools that need to rewrite models (e.g. move weights to external
/// data) through the same prost types.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
