//! Phase 1, inspect: what is in a model file (or a folder of them).
//!
//! Builds a [`Report`] from the format-neutral [`m2w_model::Model`]: ops by type with
//! flags for those without an obvious kernel, every weight with its quantization, totals,
//! named components, inputs/outputs, tied weights, GGUF hyper-parameters and tokenizer,
//! and a safetensors `config.json`. Renders as a terminal table, JSON (schema
//! `m2w.inspect/1`, snapshot-tested) or Markdown for an architecture doc.

mod ops;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use m2w_model::quant::{self, QuantizedWeight};
use m2w_model::{DType, Dim, Format, InputError, Model, Storage, ValueInfo};
use serde::Serialize;

pub use ops::{OpFlag, flag_for};
pub use render::{markdown, table};

pub const SCHEMA: &str = "m2w.inspect/1";

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub models: Vec<ModelReport>,
    /// A folder of ONNX graphs that make a generation pipeline (a graph with logits or a
    /// cache): how it would run, inferred from the names (a pipeline.json overrides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineFlow>,
    /// A folder of models that is not a generation pipeline: which values pass from one
    /// model to another by name, and which inputs and outputs are left to the code around
    /// them (glue: a crop of the camera frame, decoded detections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_flow: Option<DataFlow>,
}

/// The values between a folder's models.
#[derive(Debug, Serialize)]
pub struct DataFlow {
    /// An output of one model that another model reads by name, with the same shape.
    pub edges: Vec<Edge>,
    /// Inputs no model of the folder produces: fed from outside or made by glue.
    pub external_inputs: Vec<Port>,
    /// Outputs no model of the folder reads: results, or values glue consumes.
    pub final_outputs: Vec<Port>,
}

#[derive(Debug, Serialize)]
pub struct Edge {
    pub from_model: String,
    pub output: String,
    pub to_model: String,
    pub input: String,
}

/// One model's input or output, with what its shape says it holds.
#[derive(Debug, Serialize)]
pub struct Port {
    pub model: String,
    pub name: String,
    pub shape: Vec<Dim>,
    pub holds: String,
}

/// The data flow between a folder's graphs, or why it cannot be wired.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineFlow {
    Wired(m2w_model::pipeline::Pipeline),
    Unwired(String),
}

#[derive(Debug, Serialize)]
pub struct ModelReport {
    /// File name (not the full path, so reports are the same on every machine).
    pub file: String,
    pub format: Format,
    pub bytes: u64,
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxSummary>,
    pub ops: Vec<OpCount>,
    pub weights: Vec<WeightReport>,
    pub totals: Totals,
    pub components: Vec<Component>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Groups of weights with identical dtype, shape and bytes.
    pub tied: Vec<Vec<String>>,
    pub quantization: Vec<QuantizedWeight>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gguf: Option<GgufSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct OnnxSummary {
    pub ir_version: i64,
    pub producer: String,
    pub opsets: Vec<Opset>,
    pub nodes: usize,
    pub nodes_in_subgraphs: usize,
}

#[derive(Debug, Serialize)]
pub struct Opset {
    pub domain: String,
    pub version: i64,
}

#[derive(Debug, Serialize)]
pub struct OpCount {
    pub domain: String,
    pub op_type: String,
    pub count: usize,
    pub in_subgraphs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flag: Option<OpFlag>,
}

#[derive(Debug, Serialize)]
pub struct WeightReport {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: DType,
    pub bytes: u64,
    pub storage: String,
    /// "none", or how the tensor takes part in quantization.
    pub quantization: String,
}

#[derive(Debug, Serialize, Default)]
pub struct Totals {
    pub weights: usize,
    /// Elements of every weight except integer/bool index and shape constants (i64, i32
    /// not part of a quantization, bool); quantized integers count.
    pub parameters: u64,
    pub bytes: u64,
    pub bytes_by_dtype: BTreeMap<String, u64>,
    pub tensors_by_dtype: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize)]
pub struct Component {
    pub name: String,
    pub weights: usize,
    pub parameters: u64,
    pub bytes: u64,
    pub nodes: usize,
}

#[derive(Debug, Serialize)]
pub struct GgufSummary {
    pub architecture: String,
    pub name: Option<String>,
    /// `<arch>.*` keys with the architecture prefix removed: block_count, embedding_length...
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    pub layers: Option<u64>,
    pub width: Option<u64>,
    pub heads: Option<u64>,
    pub kv_heads: Option<u64>,
    pub tokenizer: TokenizerSummary,
    pub chat_template: bool,
    /// Whether the LM head reuses the token embedding (no `output.weight` tensor).
    pub tied_embedding_head: bool,
}

#[derive(Debug, Serialize)]
pub struct TokenizerSummary {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub vocab_size: Option<u64>,
    pub merges: Option<u64>,
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
}

/// Inspects a model file, or every model file of a folder.
pub fn inspect_path(path: &Path) -> Result<Report, InputError> {
    let files = if path.is_dir() {
        Model::files_in(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut models = Vec::new();
    let mut graphs = Vec::new();
    for f in files {
        let model = Model::open(&f)?;
        models.push(inspect_model(&model)?);
        if let Some(g) = model.graph {
            graphs.push((m2w_model::pipeline::graph_name(&f), f, g));
        }
    }
    Ok(Report {
        schema: SCHEMA,
        models,
        pipeline: if path.is_dir() {
            pipeline_flow(path, &graphs)
        } else {
            None
        },
        data_flow: None,
    })
    .map(|mut r| {
        if path.is_dir() && r.pipeline.is_none() && r.models.len() > 1 {
            r.data_flow = Some(data_flow(&r.models));
        }
        r
    })
}

/// Edges by name and shape between the models of a folder; what is left is external.
fn data_flow(models: &[ModelReport]) -> DataFlow {
    let mut flow = DataFlow {
        edges: Vec::new(),
        external_inputs: Vec::new(),
        final_outputs: Vec::new(),
    };
    let port = |m: &ModelReport, v: &ValueInfo| Port {
        model: m.file.clone(),
        name: v.name.clone(),
        shape: v.shape.clone(),
        holds: holds(&v.shape),
    };
    for m in models {
        for i in &m.inputs {
            let from = models.iter().filter(|o| o.file != m.file).find_map(|o| {
                o.outputs
                    .iter()
                    .find(|v| v.name == i.name && v.shape == i.shape)
                    .map(|v| (o, v))
            });
            match from {
                Some((o, v)) => flow.edges.push(Edge {
                    from_model: o.file.clone(),
                    output: v.name.clone(),
                    to_model: m.file.clone(),
                    input: i.name.clone(),
                }),
                None => flow.external_inputs.push(port(m, i)),
            }
        }
    }
    for m in models {
        for o in &m.outputs {
            let read = flow
                .edges
                .iter()
                .any(|e| e.from_model == m.file && e.output == o.name);
            if !read {
                flow.final_outputs.push(port(m, o));
            }
        }
    }
    flow
}

/// What a value's shape says it holds, in a few words.
fn holds(shape: &[Dim]) -> String {
    let fixed: Option<Vec<i64>> = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        })
        .collect();
    let Some(s) = fixed else {
        return format!("{} dims, some named", shape.len());
    };
    match s.as_slice() {
        [1, h, w, c] if matches!(c, 1 | 3 | 4) && *h > 8 && *w > 8 => {
            format!("an image, {h}x{w}x{c} NHWC (a frame, or a crop of one made by glue)")
        }
        [1, c, h, w] if matches!(c, 1 | 3 | 4) && *h > 8 && *w > 8 => {
            format!("an image, {c}x{h}x{w} NCHW (a frame, or a crop of one made by glue)")
        }
        [1, n, 1] if *n >= 100 => format!("one value for each of {n} anchors or positions"),
        [1, n, k] if *n >= 100 => format!("{k} values for each of {n} anchors or positions"),
        [1, k] | [k] => format!("a vector of {k}"),
        _ => format!("a tensor {s:?}"),
    }
}

/// How a folder's graphs would run as a generation pipeline, when any of them makes logits
/// or reads a cache (`m2w_model::pipeline::infer`, as `port FOLDER` wires them).
fn pipeline_flow(
    folder: &Path,
    graphs: &[(String, std::path::PathBuf, m2w_model::GraphInfo)],
) -> Option<PipelineFlow> {
    let generates = graphs.iter().any(|(_, _, g)| {
        g.outputs.iter().any(|o| o.name == "logits")
            || g.inputs.iter().any(|i| i.name.starts_with("past_key"))
    });
    if !generates {
        return None;
    }
    let listed: Vec<(String, std::path::PathBuf, &m2w_model::GraphInfo)> = graphs
        .iter()
        .map(|(n, f, g)| (n.clone(), f.clone(), g))
        .collect();
    Some(match m2w_model::pipeline::infer(&listed, folder, None) {
        Ok(p) => PipelineFlow::Wired(p),
        Err(e) => PipelineFlow::Unwired(e.to_string()),
    })
}

fn is_parameter(dtype: DType, quantized: bool) -> bool {
    match dtype {
        DType::I64 | DType::U64 | DType::Bool | DType::String => false,
        DType::I32 | DType::U32 | DType::I16 | DType::U16 => quantized,
        _ => true,
    }
}

pub fn inspect_model(model: &Model) -> Result<ModelReport, InputError> {
    let quantized = quant::find(model);
    let mut roles: HashMap<&str, String> = HashMap::new();
    for q in &quantized {
        roles.insert(q.quantized.as_str(), format!("quantized: {}", q.describe()));
        if let Some(s) = &q.scale {
            roles
                .entry(s.as_str())
                .or_insert_with(|| format!("scale of {}", q.quantized));
        }
        if let Some(z) = &q.zero_point {
            roles
                .entry(z.as_str())
                .or_insert_with(|| format!("zero point of {}", q.quantized));
        }
    }

    let mut totals = Totals::default();
    let mut weights = Vec::with_capacity(model.tensors.len());
    let mut components: BTreeMap<String, Component> = BTreeMap::new();
    for t in &model.tensors {
        let role = roles.get(t.name.as_str()).cloned();
        let quantization = match (&role, t.dtype.is_gguf_block(), &t.quantization) {
            (Some(r), _, _) => r.clone(),
            (None, true, _) => format!("gguf block {}", t.dtype),
            // TFLite: the tensor's own scale and zero point.
            (None, false, Some(q)) => match q.axis {
                Some(axis) => format!(
                    "{} per-axis (axis {axis}, {} scales)",
                    t.dtype,
                    q.scale.len()
                ),
                None => format!(
                    "{} per-tensor (scale {}, zero point {})",
                    t.dtype,
                    q.scale[0],
                    q.zero_point.first().copied().unwrap_or(0)
                ),
            },
            (None, false, None) => "none".to_string(),
        };
        let param = is_parameter(t.dtype, role.is_some() || t.dtype.is_gguf_block());
        totals.weights += 1;
        totals.bytes += t.bytes;
        if param {
            totals.parameters += t.elements();
        }
        *totals.bytes_by_dtype.entry(t.dtype.name()).or_default() += t.bytes;
        *totals.tensors_by_dtype.entry(t.dtype.name()).or_default() += 1;
        let cname = m2w_model::names::component_of(&t.name);
        let c = components
            .entry(cname.clone())
            .or_insert_with(|| Component {
                name: cname,
                weights: 0,
                parameters: 0,
                bytes: 0,
                nodes: 0,
            });
        c.weights += 1;
        c.bytes += t.bytes;
        if param {
            c.parameters += t.elements();
        }
        weights.push(WeightReport {
            name: t.name.clone(),
            shape: t.shape.clone(),
            dtype: t.dtype,
            bytes: t.bytes,
            storage: match &t.storage {
                Storage::Initializer => "initializer".into(),
                Storage::ConstantNode { .. } => "constant node".into(),
                Storage::ExternalData { file, .. } => format!("external: {file}"),
                Storage::Gguf { .. } => "gguf".into(),
                Storage::Safetensors { .. } => "safetensors".into(),
                Storage::Tflite { .. } => "tflite buffer".into(),
                Storage::Derived => "derived (lowering)".into(),
            },
            quantization,
        });
    }

    let mut ops: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut onnx = None;
    let mut notes = Vec::new();
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    if let Some(g) = &model.graph {
        let default_opset = g
            .opsets
            .iter()
            .find(|(d, _)| d.is_empty() || d == "ai.onnx")
            .map(|(_, v)| *v);
        for n in &g.nodes {
            let e = ops
                .entry((n.domain.clone(), n.op_type.clone()))
                .or_default();
            e.0 += 1;
            if !n.scope.is_empty() {
                e.1 += 1;
            }
            // Constant nodes are weights; other nodes count towards their component.
            if n.op_type != "Constant" {
                let key = if n.name.is_empty() {
                    n.outputs.first().cloned().unwrap_or_default()
                } else {
                    n.name.clone()
                };
                let cname = m2w_model::names::component_of(&key);
                components
                    .entry(cname.clone())
                    .or_insert_with(|| Component {
                        name: cname,
                        weights: 0,
                        parameters: 0,
                        bytes: 0,
                        nodes: 0,
                    })
                    .nodes += 1;
            }
        }
        onnx = Some(OnnxSummary {
            ir_version: g.ir_version,
            producer: g.producer.clone(),
            opsets: g
                .opsets
                .iter()
                .map(|(d, v)| Opset {
                    domain: d.clone(),
                    version: *v,
                })
                .collect(),
            nodes: g.nodes.len(),
            nodes_in_subgraphs: g.nodes.iter().filter(|n| !n.scope.is_empty()).count(),
        });
        inputs = g.inputs.clone();
        outputs = g.outputs.clone();
        let symbolic: Vec<String> = inputs
            .iter()
            .chain(outputs.iter())
            .flat_map(|v| v.shape.iter())
            .filter_map(|d| match d {
                Dim::Symbolic(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !symbolic.is_empty() {
            notes.push(format!(
                "symbolic dims (bind with --dim name=value in later phases): {}",
                symbolic.join(", ")
            ));
        }
        if let Some(v) = default_opset {
            notes.push(format!("default-domain opset {v}"));
        }
        // The engine's verdict from the graph alone (ops at this opset, attributes), the
        // same check `port` makes before extract and the reference.
        let refused = m2w_engine::ops::precheck(g);
        notes.push(if refused.is_empty() {
            "WebGPU: every main-graph node has a lowering in m2w (shapes and dtypes are checked when the engine compiles)".to_string()
        } else {
            format!("WebGPU: {}", m2w_engine::ops::Refusal(&refused))
        });
    }
    let ops: Vec<OpCount> = ops
        .into_iter()
        .map(|((domain, op_type), (count, in_subgraphs))| OpCount {
            flag: flag_for(&domain, &op_type),
            domain,
            op_type,
            count,
            in_subgraphs,
        })
        .collect();

    // Tied weights: identical dtype, shape and bytes.
    let mut by_content: BTreeMap<(String, Vec<u64>, String), Vec<String>> = BTreeMap::new();
    for t in &model.tensors {
        if t.elements() < 2 {
            continue; // scalars coincide by accident, not by tying
        }
        let raw = model.read_raw(t)?;
        let h = m2w_model::io::sha256_bytes(&raw.bytes);
        by_content
            .entry((t.dtype.name(), t.shape.clone(), h))
            .or_default()
            .push(t.name.clone());
    }
    let mut tied: Vec<Vec<String>> = by_content.into_values().filter(|v| v.len() > 1).collect();
    tied.sort();

    let gguf = (model.format == Format::Gguf).then(|| gguf_summary(model));
    if gguf.is_some() {
        // The engine's verdict from the metadata and tensor list, as `port` checks it.
        notes.push(match m2w_engine::llama::precheck(model) {
            Ok(()) => {
                "WebGPU: m2w runs this decoder (family, block types and tokenizer known)".into()
            }
            Err(e) => format!("WebGPU: {e}"),
        });
    }
    if let Some(g) = &gguf
        && g.tied_embedding_head
    {
        notes.push(
            "no output.weight: the LM head reuses token_embd.weight (keep one GPU buffer)".into(),
        );
    }
    for q in &quantized {
        if !q.foldable() {
            notes.push(format!(
                "{} is quantized as {}; extract keeps it as stored (the kernel must dequantize)",
                q.quantized,
                q.describe()
            ));
        }
    }

    let file = model
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ModelReport {
        file,
        format: model.format,
        bytes: model.file_bytes,
        sha256: model.file_sha256()?,
        onnx,
        ops,
        weights,
        totals,
        components: components.into_values().collect(),
        inputs,
        outputs,
        tied,
        quantization: quantized,
        notes,
        gguf,
        config: model.config.clone(),
        metadata: if model.format == Format::Gguf {
            BTreeMap::new()
        } else {
            model.metadata.clone()
        },
    })
}

fn gguf_summary(model: &Model) -> GgufSummary {
    let md = &model.metadata;
    let s = |k: &str| md.get(k).and_then(|v| v.as_str()).map(String::from);
    let u = |k: &str| md.get(k).and_then(|v| v.as_u64());
    let arch = s("general.architecture").unwrap_or_else(|| "unknown".into());
    let prefix = format!("{arch}.");
    let hyperparameters: BTreeMap<String, serde_json::Value> = md
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(&prefix)
                .map(|rest| (rest.to_string(), v.clone()))
        })
        .collect();
    let hp = |k: &str| hyperparameters.get(k).and_then(|v| v.as_u64());
    let vocab = model
        .array_lengths
        .get("tokenizer.ggml.tokens")
        .copied()
        .or_else(|| {
            md.get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len() as u64)
        });
    GgufSummary {
        name: s("general.name"),
        layers: hp("block_count"),
        width: hp("embedding_length"),
        heads: hp("attention.head_count"),
        kv_heads: hp("attention.head_count_kv"),
        hyperparameters,
        tokenizer: TokenizerSummary {
            model: s("tokenizer.ggml.model"),
            pre: s("tokenizer.ggml.pre"),
            vocab_size: vocab,
            merges: model.array_lengths.get("tokenizer.ggml.merges").copied(),
            bos_token_id: u("tokenizer.ggml.bos_token_id"),
            eos_token_id: u("tokenizer.ggml.eos_token_id"),
        },
        chat_template: md.contains_key("tokenizer.chat_template"),
        tied_embedding_head: model.tensor("token_embd.weight").is_some()
            && model.tensor("output.weight").is_none(),
        architecture: arch,
    }
}
