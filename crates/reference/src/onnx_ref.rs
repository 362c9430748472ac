//! ONNX reference activations through ONNX Runtime (the `ort` crate, library loaded at run
//! time): every node output of the main graph is marked as a graph output (Polygraphy's
//! "mark all"), graph optimizations are off, so each checkpoint is what that node computed.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use m2w_model::onnx::proto;
use m2w_model::{Dim, Model, quant};
use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use crate::index::{Checkpoint, Index, NotCaptured, write_index};
use crate::npy::HostTensor;
use crate::{RefError, sanitize};

/// What the caller chooses about inputs.
#[derive(Clone, Debug, Default)]
pub struct OnnxOptions {
    /// Values for symbolic dims (`sequence=16`) or for one axis of one input (`x.2=640`).
    pub dims: BTreeMap<String, u64>,
    /// Inputs given as `.npy` files.
    pub input_files: BTreeMap<String, PathBuf>,
    /// Inputs filled with one value (`sr=16000`).
    pub fill: BTreeMap<String, f64>,
    pub seed: u64,
    /// Run twice and require bit-identical checkpoints.
    pub check_determinism: bool,
}

static ORT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads `libonnxruntime` once per process.
fn ort_env(lib: &Path) -> Result<&'static ort::environment::Environment, RefError> {
    let r = ORT.get_or_init(|| {
        ort::init_from(lib)
            .map_err(|e| {
                format!(
                    "cannot load the ONNX Runtime library {}: {e}",
                    lib.display()
                )
            })?
            .with_name("m2w-reference")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    r.as_ref().map_err(|e| RefError::Runtime(e.clone()))
}

/// A small deterministic generator (splitmix64) so inputs depend only on the seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c909)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// The shape an input gets: declared dims, `--dim` values, or printed defaults.
fn resolve_shape(
    input: &m2w_model::ValueInfo,
    opts: &OnnxOptions,
    used: &mut BTreeMap<String, u64>,
) -> Result<Vec<u64>, RefError> {
    let rank = input.shape.len();
    let mut shape = Vec::with_capacity(rank);
    for (axis, d) in input.shape.iter().enumerate() {
        let axis_key = format!("{}.{axis}", input.name);
        let v = if let Some(&v) = opts.dims.get(&axis_key) {
            if let Dim::Fixed(f) = d
                && *f > 0
                && *f as u64 != v
            {
                return Err(RefError::Usage(format!(
                    "--dim {axis_key}={v} does not fit: input '{}' axis {axis} is fixed at {f}",
                    input.name
                )));
            }
            v
        } else {
            match d {
                Dim::Fixed(v) if *v > 0 => *v as u64,
                Dim::Symbolic(name) if name != "?" && opts.dims.contains_key(name) => {
                    opts.dims[name]
                }
                other => {
                    let name = match other {
                        Dim::Symbolic(n) if n != "?" => n.clone(),
                        _ => axis_key.clone(),
                    };
                    if let Some(&v) = used.get(&name) {
                        v
                    } else {
                        let lower = name.to_ascii_lowercase();
                        // Defaults: batch 1; image height/width 64; sequences 16.
                        let v = if lower.contains("batch") || (axis == 0 && rank >= 3) {
                            1
                        } else if rank == 4 && axis >= 2 {
                            64
                        } else {
                            16
                        };
                        used.insert(name, v);
                        v
                    }
                }
            }
        };
        if v == 0 {
            return Err(RefError::Usage(format!(
                "input '{}' axis {axis}: a dim of 0 does not fit (give a positive --dim)",
                input.name
            )));
        }
        shape.push(v);
    }
    Ok(shape)
}

/// How to fill an integer input: ids below the vocabulary size of the table it indexes,
/// masks of ones, otherwise ones.
fn integer_rule(model: &Model, input: &str) -> (Option<u64>, String) {
    let Some(g) = &model.graph else {
        return (None, "ones".into());
    };
    let folds = quant::find(model);
    for n in g.nodes.iter().filter(|n| n.scope.is_empty()) {
        if n.op_type == "Gather" && n.inputs.get(1).map(String::as_str) == Some(input) {
            let data = &n.inputs[0];
            let rows = model
                .tensor(data)
                .map(|t| t.shape.first().copied())
                .or_else(|| {
                    folds
                        .iter()
                        .find(|q| q.output.as_deref() == Some(data.as_str()))
                        .and_then(|q| model.tensor(&q.quantized))
                        .map(|t| t.shape.first().copied())
                })
                .flatten();
            if let Some(rows) = rows {
                return (
                    Some(rows),
                    format!("ids uniform in [0, {rows}) (rows of {data}, read by Gather)"),
                );
            }
        }
    }
    if input.to_ascii_lowercase().contains("mask") {
        return (None, "ones (mask)".into());
    }
    (None, "ones".into())
}

fn make_input(
    model: &Model,
    input: &m2w_model::ValueInfo,
    shape: Vec<u64>,
    opts: &OnnxOptions,
    rng: &mut Rng,
) -> Result<(HostTensor, String), RefError> {
    // A declared dim of 2^40 must be an error here, not an abort in the allocator.
    let elem_bytes = match input.dtype.as_str() {
        "f64" | "i64" => 8,
        "f16" | "bf16" => 2,
        "i8" | "u8" | "bool" => 1,
        _ => 4,
    };
    let n =
        m2w_model::limits::checked_elements(&format!("input '{}'", input.name), &shape, elem_bytes)
            .map_err(RefError::Usage)?;
    if let Some(path) = opts.input_files.get(&input.name) {
        let t = HostTensor::read_npy(path).map_err(|e| {
            RefError::Usage(format!(
                "{}: cannot read input '{}': {e}",
                path.display(),
                input.name
            ))
        })?;
        let expected = match input.dtype.as_str() {
            "f32" | "f64" | "f16" | "i64" | "i32" | "i8" | "u8" | "bool" => input.dtype.as_str(),
            other => other,
        };
        if t.dtype() != expected {
            return Err(RefError::Usage(format!(
                "{}: input '{}' needs {expected}, the file holds {}",
                path.display(),
                input.name,
                t.dtype()
            )));
        }
        for (axis, (d, s)) in input.shape.iter().zip(t.shape()).enumerate() {
            if let Dim::Fixed(v) = d
                && *v > 0
                && *v as u64 != *s
            {
                return Err(RefError::Usage(format!(
                    "{}: input '{}' axis {axis} must be {v}, the file has {s}",
                    path.display(),
                    input.name
                )));
            }
        }
        if t.shape().len() != input.shape.len() {
            return Err(RefError::Usage(format!(
                "{}: input '{}' has rank {}, the file has rank {}",
                path.display(),
                input.name,
                input.shape.len(),
                t.shape().len()
            )));
        }
        return Ok((t, format!("from {}", path.display())));
    }
    if let Some(&v) = opts.fill.get(&input.name) {
        let t = match input.dtype.as_str() {
            "f32" => HostTensor::F32(shape, vec![v as f32; n]),
            "f64" => HostTensor::F64(shape, vec![v; n]),
            "i64" => HostTensor::I64(shape, vec![v as i64; n]),
            "i32" => HostTensor::I32(shape, vec![v as i32; n]),
            "bool" => HostTensor::Bool(shape, vec![v != 0.0; n]),
            other => {
                return Err(RefError::Usage(format!(
                    "input '{}': cannot fill dtype {other}",
                    input.name
                )));
            }
        };
        return Ok((t, format!("filled with {v}")));
    }
    Ok(match input.dtype.as_str() {
        "f32" => (
            HostTensor::F32(shape, (0..n).map(|_| rng.normal() as f32).collect()),
            format!("normal(0, 1), seed {}", opts.seed),
        ),
        "f64" => (
            HostTensor::F64(shape, (0..n).map(|_| rng.normal()).collect()),
            format!("normal(0, 1), seed {}", opts.seed),
        ),
        "f16" => (
            HostTensor::F16(
                shape,
                (0..n).map(|_| half::f16::from_f64(rng.normal())).collect(),
            ),
            format!("normal(0, 1), seed {}", opts.seed),
        ),
        "i64" | "i32" => {
            let (range, how) = integer_rule(model, &input.name);
            let vals: Vec<i64> = (0..n)
                .map(|_| range.map_or(1, |r| (rng.next_u64() % r) as i64))
                .collect();
            let t = if input.dtype == "i64" {
                HostTensor::I64(shape, vals)
            } else {
                HostTensor::I32(shape, vals.iter().map(|&v| v as i32).collect())
            };
            (t, how)
        }
        "bool" => (HostTensor::Bool(shape, vec![true; n]), "true".into()),
        other => {
            return Err(RefError::Usage(format!(
                "input '{}': dtype {other} is not supported for generated inputs (give it with --input)",
                input.name
            )));
        }
    })
}

fn to_ort(t: &HostTensor) -> Result<DynValue, ort::Error> {
    let shape = |s: &[u64]| s.iter().map(|&d| d as i64).collect::<Vec<i64>>();
    Ok(match t {
        HostTensor::F32(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
        HostTensor::F64(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
        HostTensor::F16(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
        HostTensor::I64(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
        HostTensor::I32(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
        HostTensor::I8(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
        HostTensor::U8(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
        HostTensor::Bool(s, v) => Tensor::from_array((shape(s), v.clone()))?.into_dyn(),
    })
}

/// A tensor value from ORT, or None for non-tensor values (sequences, maps).
fn from_ort(v: &DynValue) -> Result<Option<HostTensor>, ort::Error> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Ok(None);
    };
    macro_rules! get {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = v.try_extract_tensor::<$t>()?;
            HostTensor::$variant(shape.iter().map(|&d| d as u64).collect(), data.to_vec())
        }};
    }
    Ok(Some(match ty {
        TensorElementType::Float32 => get!(f32, F32),
        TensorElementType::Float64 => get!(f64, F64),
        TensorElementType::Float16 => get!(half::f16, F16),
        TensorElementType::Int64 => get!(i64, I64),
        TensorElementType::Int32 => get!(i32, I32),
        TensorElementType::Int8 => get!(i8, I8),
        TensorElementType::Uint8 => get!(u8, U8),
        TensorElementType::Bool => get!(bool, Bool),
        _ => return Ok(None),
    }))
}

/// The bytes of the model ORT runs as the oracle: integer GEMMs widened to its exact
/// u8 x u8 path (`exact_int8`) and, with `mark_outputs`, every main-graph node output
/// marked as a graph output. Returns the labels of the widened nodes too.
pub fn oracle_model_bytes(
    model: &Model,
    mark_outputs: bool,
) -> Result<(Vec<u8>, Vec<String>), RefError> {
    let mut proto = m2w_model::onnx::decode(&model.path)?;
    let widened = crate::exact_int8::widen_int8_weights(model, &mut proto)?;
    if mark_outputs {
        let graph = proto.graph.as_mut().expect("decode checks the graph");
        let mut names: std::collections::HashSet<String> =
            graph.output.iter().map(|o| o.name().to_string()).collect();
        let nodes_outputs: Vec<String> = graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().cloned())
            .filter(|o| !o.is_empty())
            .collect();
        for o in nodes_outputs {
            if names.insert(o.clone()) {
                graph.output.push(proto::ValueInfoProto {
                    name: Some(o),
                    ..Default::default()
                });
            }
        }
    }
    Ok((m2w_model::onnx::encode(&proto), widened))
}

/// Runs the model once with the given inputs; returns every output by name.
pub fn run_once(
    session: &mut Session,
    inputs: &[(String, HostTensor)],
) -> Result<BTreeMap<String, Option<HostTensor>>, RefError> {
    let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
    for (name, t) in inputs {
        let v = to_ort(t).map_err(|e| RefError::Runtime(format!("input '{name}': {e}")))?;
        feed.push((Cow::Owned(name.clone()), SessionInputValue::from(v)));
    }
    let outputs = session
        .run(feed)
        .map_err(|e| RefError::Runtime(format!("ONNX Runtime failed to run the model: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, value) in outputs.iter() {
        let t = from_ort(&value).map_err(|e| RefError::Runtime(format!("output '{name}': {e}")))?;
        out.insert(name.to_string(), t);
    }
    Ok(out)
}

pub fn open_session(lib: &Path, model_bytes: &[u8], what: &Path) -> Result<Session, RefError> {
    let env = ort_env(lib)?;
    let builder = Session::builder(env).map_err(|e| RefError::Runtime(e.to_string()))?;
    let mut builder = builder
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(|e| RefError::Runtime(e.to_string()))?;
    // A model given as bytes finds its external data beside the file it came from.
    if let Some(folder) = what.parent().filter(|p| !p.as_os_str().is_empty()) {
        builder = builder
            .with_config_entry(
                "session.model_external_initializers_file_folder_path",
                folder.to_string_lossy(),
            )
            .map_err(|e| RefError::Runtime(e.to_string()))?;
    }
    builder.commit_from_memory(model_bytes).map_err(|e| {
        RefError::Load(format!(
            "{}: ONNX Runtime cannot load this model: {e}",
            what.display()
        ))
    })
}

/// Graph inputs (name, value, how it was made) and the dims used.
pub(crate) type MadeInputs = (Vec<(String, HostTensor, String)>, BTreeMap<String, u64>);

/// Every graph input's value (given, filled or generated from the seed) with how it was
/// made, and the dims used. Inputs named in `opts` that the graph lacks are an error.
pub(crate) fn graph_inputs(
    model: &Model,
    graph: &m2w_model::GraphInfo,
    model_path: &Path,
    opts: &OnnxOptions,
) -> Result<MadeInputs, RefError> {
    for name in opts.input_files.keys().chain(opts.fill.keys()) {
        if !graph.inputs.iter().any(|i| &i.name == name) {
            let known: Vec<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(RefError::Usage(format!(
                "{}: the model has no input '{name}' (inputs: {})",
                model_path.display(),
                known.join(", ")
            )));
        }
    }
    let mut used_dims = BTreeMap::new();
    let mut rng = Rng::new(opts.seed);
    let mut inputs = Vec::new();
    for input in &graph.inputs {
        let shape = resolve_shape(input, opts, &mut used_dims).map_err(|e| match e {
            RefError::Usage(m) => RefError::Usage(format!("{}: {m}", model_path.display())),
            other => other,
        })?;
        let (t, how) = make_input(model, input, shape, opts, &mut rng)?;
        inputs.push((input.name.clone(), t, how));
    }
    Ok((inputs, used_dims))
}

/// Runs `model_path` through ORT with every node output captured; writes the inputs, one
/// `.npy` per checkpoint and `index.json` into `out` (replaced atomically).
pub fn reference(
    lib: &Path,
    model_path: &Path,
    out: &Path,
    opts: &OnnxOptions,
) -> Result<Index, RefError> {
    let model = Model::open(model_path)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| RefError::Usage(format!("{}: not an ONNX model", model_path.display())))?;
    let (made, used_dims) = graph_inputs(&model, graph, model_path, opts)?;
    let inputs: Vec<(String, HostTensor)> = made
        .iter()
        .map(|(name, t, _)| (name.clone(), t.clone()))
        .collect();
    for key in opts.dims.keys() {
        let axis_form = key.rsplit_once('.').is_some_and(|(n, a)| {
            a.parse::<usize>().is_ok() && graph.inputs.iter().any(|i| i.name == n)
        });
        let named = graph.inputs.iter().any(|i| {
            i.shape
                .iter()
                .any(|d| matches!(d, Dim::Symbolic(s) if s == key))
        });
        if !axis_form && !named {
            return Err(RefError::Usage(format!(
                "{}: --dim {key}: no input has a symbolic dim of that name (or INPUT.AXIS)",
                model_path.display()
            )));
        }
    }

    let (marked, widened) = oracle_model_bytes(&model, true)?;
    let mut session = open_session(lib, &marked, model_path)?;
    let first = run_once(&mut session, &inputs)?;
    if opts.check_determinism {
        let second = run_once(&mut session, &inputs)?;
        let differing: Vec<&String> = first
            .keys()
            .filter(|k| match (first.get(*k), second.get(*k)) {
                (Some(Some(a)), Some(Some(b))) => !a.same_bits(b),
                (Some(None), Some(None)) => false,
                _ => true,
            })
            .collect();
        if !differing.is_empty() {
            return Err(RefError::NotDeterministic(
                differing.iter().map(|s| s.to_string()).collect(),
            ));
        }
    }

    let graph_outputs: std::collections::HashSet<&str> =
        graph.outputs.iter().map(|o| o.name.as_str()).collect();
    let main_nodes: Vec<_> = graph.nodes.iter().filter(|n| n.scope.is_empty()).collect();
    let total: usize = main_nodes
        .iter()
        .map(|n| n.outputs.iter().filter(|o| !o.is_empty()).count())
        .sum();
    let width = total.to_string().len().max(3);
    let mut index = Index::new(
        &model,
        "onnxruntime 1.31.1 via ort 2.0.0-rc.15, graph optimizations off",
        opts.seed,
    );
    index.dims = used_dims.clone();
    index.dims.extend(opts.dims.clone());
    if !widened.is_empty() {
        index.notes.insert(
            "exact_integer_gemm".into(),
            serde_json::json!({
                "why": crate::exact_int8::WHY,
                "nodes": widened,
            }),
        );
    }

    crate::write_dir(out, |dir| {
        crate::write_inputs(dir, &made, &mut index)?;
        let mut i = 0;
        for n in &main_nodes {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                let Some(Some(t)) = first.get(o) else {
                    index.not_captured.push(NotCaptured {
                        scope: String::new(),
                        node: n.label(),
                        op_type: n.op_type.clone(),
                        output: o.clone(),
                        reason: "not a tensor value (sequence or map)".into(),
                    });
                    continue;
                };
                let file = format!("{:0width$}_{}.npy", i, sanitize(o));
                let sha = crate::write_npy(&dir.join(&file), t)?;
                index.checkpoints.push(Checkpoint {
                    index: i,
                    node: n.label(),
                    op_type: n.op_type.clone(),
                    output: o.clone(),
                    shape: t.shape().to_vec(),
                    dtype: t.dtype().into(),
                    file,
                    sha256: sha,
                    graph_output: graph_outputs.contains(o.as_str()),
                });
                i += 1;
            }
        }
        for n in graph.nodes.iter().filter(|n| !n.scope.is_empty()) {
            index.not_captured.push(NotCaptured {
                scope: n.scope.clone(),
                node: n.label(),
                op_type: n.op_type.clone(),
                output: n.outputs.first().cloned().unwrap_or_default(),
                reason: "inside a control-flow subgraph: ONNX Runtime does not expose subgraph values; only the control-flow node's outputs are captured".into(),
            });
        }
        index.determinism_checked = opts.check_determinism;
        write_index(dir, &index)?;
        Ok(index.clone())
    })
}
