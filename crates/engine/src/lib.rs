//! Phases 4-5, engine: an ONNX graph compiled into a static plan of WGSL dispatches
//! ([`plan::Plan`]) and run natively through wgpu ([`gpu::Runner`]).
//!
//! Dims are bound before compiling, so every shape is known: shape subgraphs fold on the
//! host, view ops (Reshape, Squeeze, Unsqueeze, Flatten, Identity, Dropout) become aliases
//! of their input's buffer, and every other node becomes dispatches whose uniforms are
//! computed here. Unsupported ops, attributes or dtypes reject the whole model at once,
//! before any GPU work, with every offending node listed.

pub mod conformance;
pub mod engine_json;
pub mod gpu;
pub mod half;
pub mod limits;
pub mod llama;
pub mod ops;
pub mod plan;
pub mod profile;
pub mod sym;
pub mod tensor;
pub mod tflite;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use m2w_model::{DType, Model};

pub use engine_json::{EngineJson, EngineKind};
/// The shader variant of a dispatch ([`plan::Dispatch::kernel`]).
pub use m2w_kernels::Kernel;
pub use ops::Unsupported;
pub use plan::Plan;
pub use tensor::{DT, Data, HostTensor};

#[derive(Debug)]
pub enum CompileError {
    /// Nodes that cannot run, all of them.
    Unsupported(Vec<Unsupported>),
    /// The model itself is not usable (no graph, unreadable weights, wrong input shapes).
    Invalid(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Unsupported(v) if f.alternate() => write!(f, "{:#}", ops::Refusal(v)),
            CompileError::Unsupported(v) => write!(f, "{}", ops::Refusal(v)),
            CompileError::Invalid(s) => f.write_str(s),
        }
    }
}

/// Lowers a format's graph onto the registry's ONNX ops where the format has a
/// front-end ([`tflite`]); ONNX and GGUF models are left as they are. Run before
/// [`ops::precheck`], compile and validate; a node that cannot be lowered refuses the
/// model with every such node listed.
pub fn lower_source(model: &mut Model) -> Result<(), CompileError> {
    tflite::lower(model).map_err(CompileError::Unsupported)
}

/// A weight as a host constant.
pub fn weight_tensor(
    model: &Model,
    t: &m2w_model::TensorEntry,
) -> Result<Option<HostTensor>, String> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let raw = || {
        model
            .read_raw(t)
            .map(|r| r.bytes)
            .map_err(|e| e.to_string())
    };
    Ok(Some(match t.dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {
            HostTensor::f32(shape, model.read_f32(t).map_err(|e| e.to_string())?)
        }
        DType::I64 => HostTensor::i64(
            shape,
            raw()?
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::Bool => HostTensor::bool(shape, raw()?.iter().map(|&b| b != 0).collect()),
        d if d.sub_byte().is_some() => {
            let (bits, signed) = d.sub_byte().expect("checked");
            let count = shape.iter().product();
            let v = m2w_model::dtype::unpack_sub_byte(&raw()?, count, bits, signed);
            HostTensor::i64(shape, v)
        }
        DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::U16 | DType::U32 => {
            HostTensor::i64(
                shape,
                model
                    .read_f32(t)
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|&v| v as i64)
                    .collect(),
            )
        }
        _ => return Ok(None),
    }))
}

/// Graph inputs whose values the plan needs at plan time: those read where an op's
/// output shape is decided (Reshape's target, axes, split sizes...), and those an If's
/// condition is computed from (through any main-graph nodes).
pub fn plan_time_inputs(graph: &m2w_model::GraphInfo) -> BTreeSet<String> {
    let main: Vec<&m2w_model::NodeInfo> =
        graph.nodes.iter().filter(|n| n.scope.is_empty()).collect();
    let producer: HashMap<&str, &m2w_model::NodeInfo> = main
        .iter()
        .flat_map(|n| n.outputs.iter().map(move |o| (o.as_str(), *n)))
        .collect();
    let mut wanted: Vec<&str> = main
        .iter()
        .flat_map(|n| {
            ops::shape_inputs(&n.op_type)
                .iter()
                .filter_map(|&k| n.inputs.get(k).map(String::as_str))
        })
        .collect();
    let mut found: BTreeSet<String> = wanted.iter().map(|s| s.to_string()).collect();
    // An If's condition: every graph input it is computed from.
    let mut stack: Vec<&str> = main
        .iter()
        .filter(|n| n.op_type == "If")
        .filter_map(|n| n.inputs.first().map(String::as_str))
        .collect();
    let mut seen = HashSet::new();
    while let Some(t) = stack.pop() {
        if !seen.insert(t) {
            continue;
        }
        match producer.get(t) {
            Some(n) => stack.extend(n.inputs.iter().map(String::as_str)),
            None => wanted.push(t),
        }
    }
    found.extend(wanted.iter().map(|s| s.to_string()));
    let inputs: HashSet<&str> = graph.inputs.iter().map(|i| i.name.as_str()).collect();
    found.retain(|t| inputs.contains(t.as_str()));
    found
}

/// The values to fix at plan time out of run-time inputs: the [`plan_time_inputs`] that
/// are small (at most 16 values, rank <= 1).
pub fn plan_time_values(
    graph: &m2w_model::GraphInfo,
    inputs: &HashMap<String, HostTensor>,
) -> BTreeMap<String, HostTensor> {
    let wanted = plan_time_inputs(graph);
    inputs
        .iter()
        .filter(|(k, t)| wanted.contains(*k) && t.shape.len() <= 1 && t.len() <= 16)
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect()
}

/// The element type the engine stores a graph input of this declared type as.
pub fn input_dt(dtype: &str) -> Option<DT> {
    Some(match dtype {
        "f32" | "f16" | "bf16" | "f64" => DT::F32,
        "i64" | "i32" | "i16" | "i8" | "u64" | "u32" | "u16" | "u8" => DT::I32,
        "bool" => DT::Bool,
        _ => return None,
    })
}

/// The graph's inputs with their declared shapes, named dims kept as dims: what
/// [`compile_symbolic`] takes. Each named dim needs a maximum in `maxima`; an unnamed
/// dynamic dim (no name, no size) or a missing maximum is an error that says so.
pub fn symbolic_inputs(
    graph: &m2w_model::GraphInfo,
    maxima: &BTreeMap<String, usize>,
) -> Result<(BTreeMap<String, (Vec<sym::Expr>, DT)>, Vec<(String, usize)>), String> {
    let mut inputs = BTreeMap::new();
    let mut dims: Vec<(String, usize)> = Vec::new();
    // Plain dim names, for names that are sums of them (optimum's
    // `past_sequence_length + sequence_length`).
    let plain: HashSet<&str> = graph
        .inputs
        .iter()
        .flat_map(|i| i.shape.iter())
        .filter_map(|d| match d {
            m2w_model::Dim::Symbolic(n) if !n.contains('+') => Some(n.as_str()),
            _ => None,
        })
        .collect();
    for i in &graph.inputs {
        let dt = input_dt(&i.dtype)
            .ok_or_else(|| format!("input '{}' is of type {}, not supported", i.name, i.dtype))?;
        let mut shape = Vec::new();
        for d in &i.shape {
            shape.push(match d {
                m2w_model::Dim::Fixed(v) if *v >= 0 => sym::Expr::Const(*v),
                m2w_model::Dim::Symbolic(name) if dim_sum(name, &plain).is_some() => {
                    dim_sum(name, &plain).expect("checked")
                }
                m2w_model::Dim::Symbolic(name) if name != "?" && !name.is_empty() => {
                    let max = *maxima.get(name).ok_or_else(|| {
                        format!(
                            "dim '{name}' of input '{}' needs a maximum (--max-dim {name}=N)",
                            i.name
                        )
                    })?;
                    if !dims.iter().any(|(n, _)| n == name) {
                        dims.push((name.clone(), max));
                    }
                    sym::Expr::sym(name)
                }
                _ => {
                    return Err(format!(
                        "input '{}' has a dynamic dim without a name; give its size with --dim",
                        i.name
                    ));
                }
            });
        }
        inputs.insert(i.name.clone(), (shape, dt));
    }
    Ok((inputs, dims))
}

/// A dim named as a sum of other dims and integers (`past_sequence_length + sequence_length`,
/// `past_sequence_length + 1`: how optimum states a relation between dims) as that sum;
/// None for a plain name or anything else.
fn dim_sum(name: &str, plain: &HashSet<&str>) -> Option<sym::Expr> {
    if !name.contains('+') {
        return None;
    }
    let mut acc: Option<sym::Expr> = None;
    for term in name.split('+') {
        let t = term.trim();
        let e = if let Ok(v) = t.parse::<i64>() {
            sym::Expr::Const(v)
        } else if plain.contains(t) {
            sym::Expr::sym(t)
        } else {
            return None;
        };
        acc = Some(match acc {
            None => e,
            Some(a) => a + e,
        });
    }
    acc
}

/// Compiles the main graph for inputs of the given shapes and dtypes.
pub fn compile(
    model: &Model,
    inputs: &BTreeMap<String, (Vec<usize>, DT)>,
) -> Result<Plan, CompileError> {
    compile_specialized(model, inputs, &BTreeMap::new())
}

/// Like [`compile`], with some inputs' values fixed at plan time (small integer inputs that
/// decide shapes: axes, a reshape target, split sizes). The plan is valid only for those
/// values; they are recorded as constants and the runner does not take them as inputs.
pub fn compile_specialized(
    model: &Model,
    inputs: &BTreeMap<String, (Vec<usize>, DT)>,
    fixed: &BTreeMap<String, HostTensor>,
) -> Result<Plan, CompileError> {
    let inputs = inputs
        .iter()
        .map(|(k, (s, dt))| (k.clone(), (sym::fixed(s), *dt)))
        .collect();
    compile_graph(model, &inputs, &[], fixed, &BTreeMap::new(), &[])
}

/// Compiles the main graph once for every size of its named dims: input shapes may name
/// dims (`[1, sequence]`), each declared with its maximum; the plan's sizes are
/// expressions over them, evaluated per run (see [`plan::Plan::bind`]).
pub fn compile_symbolic(
    model: &Model,
    inputs: &BTreeMap<String, (Vec<sym::Expr>, DT)>,
    dims: &[(String, usize)],
) -> Result<Plan, CompileError> {
    compile_graph(model, inputs, dims, &BTreeMap::new(), &BTreeMap::new(), &[])
}

/// [`compile_symbolic`] where small integer tensors computed at run time may decide sizes
/// (a Range's limit, a Reshape target given as an input): `value_max` gives the largest
/// value each may take (by tensor name); the plan reads them back at sync points.
pub fn compile_symbolic_with(
    model: &Model,
    inputs: &BTreeMap<String, (Vec<sym::Expr>, DT)>,
    dims: &[(String, usize)],
    value_max: &BTreeMap<String, usize>,
) -> Result<Plan, CompileError> {
    compile_graph(model, inputs, dims, &BTreeMap::new(), value_max, &[])
}

/// [`compile_symbolic_with`] where the input dims named in `empty` may be 0 (a KV cache
/// before the first token); the others are at least 1.
pub fn compile_symbolic_empty(
    model: &Model,
    inputs: &BTreeMap<String, (Vec<sym::Expr>, DT)>,
    dims: &[(String, usize)],
    value_max: &BTreeMap<String, usize>,
    empty: &[String],
) -> Result<Plan, CompileError> {
    compile_graph(model, inputs, dims, &BTreeMap::new(), value_max, empty)
}

fn compile_graph(
    model: &Model,
    inputs: &BTreeMap<String, (Vec<sym::Expr>, DT)>,
    dims: &[(String, usize)],
    fixed: &BTreeMap<String, HostTensor>,
    value_max: &BTreeMap<String, usize>,
    empty: &[String],
) -> Result<Plan, CompileError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| CompileError::Invalid("not an ONNX model".into()))?;
    let opset = graph
        .opsets
        .iter()
        .find(|(d, _)| d.is_empty() || d == "ai.onnx")
        .map(|(_, v)| *v)
        .unwrap_or(1);
    let mut ctx = ops::Ctx::new(opset);
    ctx.value_max = value_max.clone();
    // The graph's outputs, and what reaches one unchanged through Identity (optimum's
    // decoders write `present.N.* = Identity(Concat(past, new))`).
    ctx.graph_outputs = graph.outputs.iter().map(|o| o.name.clone()).collect();
    for n in graph.nodes.iter().rev().filter(|n| n.scope.is_empty()) {
        if n.op_type == "Identity"
            && n.outputs
                .first()
                .is_some_and(|o| ctx.graph_outputs.contains(o))
            && let Some(i) = n.inputs.first()
        {
            ctx.graph_outputs.insert(i.clone());
        }
    }
    for (name, max) in dims {
        ctx.add_dim(name, *max);
        if empty.contains(name) {
            ctx.allow_empty(name);
        }
    }
    let mut unsupported = Vec::new();
    let mut poisoned: HashSet<String> = HashSet::new();
    // Subgraph initializers are keyed `scope::name`, as their lowering renames them.
    for (scope, outputs) in &graph.subgraph_outputs {
        let nodes: Vec<m2w_model::NodeInfo> = graph
            .nodes
            .iter()
            .filter(|n| &n.scope == scope)
            .cloned()
            .collect();
        let prefix = format!("{scope}::");
        let locals = nodes
            .iter()
            .flat_map(|n| n.outputs.iter().cloned())
            .chain(
                model
                    .tensors
                    .iter()
                    .filter(|t| &t.scope == scope)
                    .filter_map(|t| t.name.strip_prefix(&prefix).map(str::to_string)),
            )
            .filter(|s| !s.is_empty())
            .collect();
        ctx.add_subgraph(
            scope,
            ops::Subgraph {
                nodes,
                outputs: outputs.clone(),
                locals,
            },
        );
    }
    for t in &model.tensors {
        ctx.declare(&t.name, t.dtype);
        match weight_tensor(model, t) {
            Ok(Some(h)) => ctx.add_const(&t.name, h),
            Ok(None) => {
                poisoned.insert(t.name.clone());
            }
            Err(e) => return Err(CompileError::Invalid(e)),
        }
    }
    for i in &graph.inputs {
        if let Some(d) = [DType::I8, DType::U8, DType::I16, DType::U16]
            .into_iter()
            .chain([21, 22, 25, 26].map(DType::from_onnx))
            .find(|d| d.name() == i.dtype)
        {
            ctx.declare(&i.name, d);
        }
        if let Some(v) = fixed.get(&i.name) {
            ctx.add_const(&i.name, v.clone());
            continue;
        }
        let (shape, dt) = inputs.get(&i.name).cloned().ok_or_else(|| {
            CompileError::Invalid(format!("no shape given for input '{}'", i.name))
        })?;
        // A declared rank of 0 may also mean "no shape information": only a non-scalar
        // declaration is checked.
        if !i.shape.is_empty() && shape.len() != i.shape.len() {
            return Err(CompileError::Invalid(format!(
                "input '{}' has rank {}, the model declares {}",
                i.name,
                shape.len(),
                i.shape.len()
            )));
        }
        for d in &shape {
            for s in d.symbols() {
                if !dims.iter().any(|(n, _)| *n == s) {
                    return Err(CompileError::Invalid(format!(
                        "input '{}' names dim '{s}', which has no declared maximum",
                        i.name
                    )));
                }
            }
        }
        ctx.add_input_sym(&i.name, shape, dt);
    }
    for n in graph.nodes.iter().filter(|n| n.scope.is_empty()) {
        let spec = ops::find(&n.domain, &n.op_type, opset);
        if n.inputs.iter().any(|i| poisoned.contains(i)) {
            // Shapes are unknown past a rejected node; ops m2w has no lowering for at all
            // are still reported, so one error lists everything missing.
            if let Err(reason) = spec {
                unsupported.push(Unsupported::of(n, reason));
            }
            poisoned.extend(n.outputs.iter().cloned());
            continue;
        }
        if let Err(reason) = spec.and_then(|spec| ctx.lower(spec, n)) {
            unsupported.push(Unsupported::of(n, reason));
            poisoned.extend(n.outputs.iter().cloned());
        }
    }
    if !unsupported.is_empty() {
        return Err(CompileError::Unsupported(unsupported));
    }
    for o in &graph.outputs {
        if !ctx.plan.tensors.contains_key(&o.name) {
            return Err(CompileError::Invalid(format!(
                "output '{}' is not produced",
                o.name
            )));
        }
        ctx.plan.outputs.push(o.name.clone());
    }
    // Shape values written for kernels that turned out not to read them go.
    let plan = &mut ctx.plan;
    let bound: HashSet<String> = plan
        .dispatches
        .iter()
        .filter(|d| d.kernel != Kernel::Values)
        .flat_map(|d| d.bindings.iter())
        .filter_map(|b| match b {
            plan::Binding::Tensor(t) => Some(t.as_str()),
            _ => None,
        })
        .chain(plan.outputs.iter().map(String::as_str))
        .map(|t| plan.base_of(t).to_string())
        .collect();
    let keep: Vec<bool> = plan
        .dispatches
        .iter()
        .map(|d| {
            d.kernel != Kernel::Values
                || d.bindings
                    .iter()
                    .any(|b| matches!(b, plan::Binding::Tensor(t) if bound.contains(t)))
        })
        .collect();
    // Sync points stay before the same dispatch.
    for s in &mut plan.syncs {
        s.at = keep[..s.at].iter().filter(|&&k| k).count();
    }
    let mut k = keep.iter();
    plan.dispatches
        .retain(|_| *k.next().expect("one flag per dispatch"));
    // Constants no dispatch reads (weights folded into other constants, host-only shape
    // values) are not uploaded.
    let mut used: HashSet<String> = plan
        .outputs
        .iter()
        .map(|o| plan.base_of(o).to_string())
        .collect();
    for d in &plan.dispatches {
        for b in &d.bindings {
            if let plan::Binding::Tensor(t) = b {
                used.insert(plan.base_of(t).to_string());
            }
        }
    }
    let unused: Vec<String> = plan
        .constants
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    for k in unused {
        plan.constants.remove(&k);
        plan.tensors.retain(|_, t| t.base != k);
    }
    Ok(ctx.plan)
}

/// One constant in `constants.bin`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ConstantEntry {
    pub name: String,
    pub dt: DT,
    pub shape: Vec<usize>,
    /// Byte offset in the blob (4-byte words, 256-byte aligned).
    pub offset: usize,
    pub bytes: usize,
}

/// The plan's constants as GPU words in one blob (sorted by name) and their index.
pub fn constants_blob(plan: &Plan) -> (Vec<u8>, Vec<ConstantEntry>) {
    use std::hash::{Hash, Hasher};
    let mut blob = Vec::new();
    let mut index = Vec::new();
    // Constants with the same bytes are stored once (a tied embedding gathered from the
    // lm_head's packed weight): later entries point at the first one's offset.
    let mut seen: std::collections::HashMap<u64, Vec<(usize, usize)>> = Default::default();
    for (name, t) in &plan.constants {
        let words = t.to_words();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let key = h.finish();
        let stored = seen
            .get(&key)
            .into_iter()
            .flatten()
            .find(|&&(at, len)| len == bytes.len() && blob[at..at + len] == bytes[..])
            .map(|&(at, _)| at);
        let offset = match stored {
            Some(at) => at,
            None => {
                while blob.len() % 256 != 0 {
                    blob.push(0);
                }
                let at = blob.len();
                blob.extend_from_slice(&bytes);
                seen.entry(key).or_default().push((at, bytes.len()));
                at
            }
        };
        index.push(ConstantEntry {
            name: name.clone(),
            dt: t.dt(),
            shape: t.shape.clone(),
            offset,
            bytes: bytes.len(),
        });
    }
    (blob, index)
}

/// Writes an engine folder: plan.json, shaders/<kernel>.wgsl (each kernel the plan uses),
/// constants.bin + constants.json (the plan's constants), engine.json (model path, kernels).
/// Replaced atomically.
pub fn write_engine_dir(
    dir: &std::path::Path,
    plan: &Plan,
    model_path: &std::path::Path,
) -> Result<(), String> {
    let kernels = plan.kernels();
    let model_abs = std::fs::canonicalize(model_path).unwrap_or(model_path.to_path_buf());
    let io = |p: &std::path::Path, e: std::io::Error| format!("{}: {e}", p.display());
    m2w_model::io::replace_dir(dir, io, |d| {
        let w = |name: &str, bytes: &[u8]| {
            std::fs::write(d.join(name), bytes).map_err(|e| io(&d.join(name), e))
        };
        std::fs::create_dir_all(d.join("shaders")).map_err(|e| io(d, e))?;
        for k in &kernels {
            w(&format!("shaders/{k}.wgsl"), k.source().as_bytes())?;
        }
        w(
            "plan.json",
            (serde_json::to_string_pretty(plan).expect("plan serialises") + "\n").as_bytes(),
        )?;
        w(limits::FILE, &limits::LimitsReport::new(&[plan]).to_json())?;
        let (blob, index) = constants_blob(plan);
        w("constants.bin", &blob)?;
        w(
            "constants.json",
            (serde_json::to_string_pretty(&index).expect("index serialises") + "\n").as_bytes(),
        )?;
        let engine = EngineJson {
            model: model_abs,
            kind: None,
            kernels: Some(kernels.iter().map(|k| k.name().to_string()).collect()),
        };
        w(engine_json::FILE, engine.to_text().as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, dims: &[&str]) -> m2w_model::ValueInfo {
        m2w_model::ValueInfo {
            name: name.into(),
            dtype: "i64".into(),
            shape: dims
                .iter()
                .map(|d| m2w_model::Dim::Symbolic(d.to_string()))
                .collect(),
        }
    }

    /// optimum names a mask's length `past_sequence_length + sequence_length`: that is the
    /// sum of the two dims, not a dim of its own; a name with an unknown term stays a name.
    #[test]
    fn a_dim_named_as_a_sum_of_dims_is_that_sum() {
        let graph = m2w_model::GraphInfo {
            inputs: vec![
                input("ids", &["batch", "seq"]),
                input("past", &["batch", "past"]),
                input("mask", &["batch", "past + seq"]),
                input("next", &["batch", "past + 1"]),
                input("other", &["batch", "past + unknown"]),
            ],
            ..Default::default()
        };
        let maxima: BTreeMap<String, usize> = [
            ("batch", 1),
            ("seq", 8),
            ("past", 16),
            ("past + unknown", 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let (inputs, dims) = symbolic_inputs(&graph, &maxima).unwrap();
        let names: Vec<&str> = dims.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["batch", "seq", "past", "past + unknown"]);
        let at = |seq: i64, past: i64| -> sym::Bindings {
            [("batch", 1), ("seq", seq), ("past", past)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        };
        assert_eq!(inputs["mask"].0[1].eval(&at(3, 0)).unwrap(), 3);
        assert_eq!(inputs["mask"].0[1].eval(&at(1, 7)).unwrap(), 8);
        assert_eq!(inputs["next"].0[1].eval(&at(1, 7)).unwrap(), 8);
    }
}
