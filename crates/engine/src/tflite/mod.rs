//! The TFLite front-end: a TFLite graph lowered onto the registry's ONNX ops, so the
//! one engine (its registry, kernels, plans and runners) runs both formats.
//!
//! Layout. TFLite is NHWC; the engine's convolution, pooling and resize kernels are NCHW.
//! Rather than a second set of NHWC kernels, feature maps are held as NCHW:
//! - weights are transposed by Transpose nodes on constants, which fold at plan time, so
//!   the plan (and the package) holds them once as `[O, I, H, W]` (depthwise
//!   `[1, H, W, C]` becomes `[C, 1, H, W]`);
//! - a rank-4 value becomes NCHW where a layout-bound op (CONV_2D, pools, RESIZE...) reads
//!   it, and stays so through elementwise ops, PAD, CONCATENATION and MEAN (axes remapped);
//! - it goes back to NHWC only where element order is observable: before RESHAPE,
//!   FULLY_CONNECTED and TRANSPOSE, and at the graph's outputs.
//!
//! The lowered graph keeps TFLite's tensor names, so the reference's checkpoints (named by
//! TFLite tensors) find their values; [`GraphInfo::layouts`] records which of them the
//! engine holds as NCHW, and validate permutes the oracle the same way before comparing.
//! Values the lowering adds are named `<tensor>#<what>`.
//!
//! [`OPS`] is the front-end's table: each TFLite builtin op m2w reads, with the registry
//! ops it becomes. An op outside it, or an option it cannot map, refuses the model before
//! any GPU work, every node listed.

use std::collections::{BTreeMap, HashMap, HashSet};

use m2w_model::{AttrValue, DType, GraphInfo, Model, NodeInfo};

use crate::ops::Unsupported;

mod conv;
mod elementwise;
mod movement;
mod weights;

/// The ONNX opset the lowered graph is written in (HardSwish needs 14; ReduceMean still
/// takes its axes as an attribute there).
pub const OPSET: i64 = 14;
/// NHWC -> NCHW.
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];
/// NCHW -> NHWC.
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];

type Translate = fn(&mut Lowering, &NodeInfo) -> Result<(), String>;

/// Every TFLite builtin op the front-end lowers: (TFLite op, the registry ops it becomes,
/// its translation).
const OPS: &[(&str, &str, Translate)] = &[
    ("ADD", "Add", elementwise::binary),
    ("SUB", "Sub", elementwise::binary),
    ("MUL", "Mul", elementwise::binary),
    ("DIV", "Div", elementwise::binary),
    ("MAXIMUM", "Max", elementwise::binary),
    ("MINIMUM", "Min", elementwise::binary),
    ("POW", "Pow", elementwise::binary),
    ("PRELU", "PRelu", elementwise::binary),
    ("CONV_2D", "Conv", conv::conv),
    ("DEPTHWISE_CONV_2D", "Conv (group = channels)", conv::conv),
    ("TRANSPOSE_CONV", "ConvTranspose", conv::transpose_conv),
    ("MAX_POOL_2D", "MaxPool", conv::pool),
    ("AVERAGE_POOL_2D", "AveragePool", conv::pool),
    ("RESIZE_BILINEAR", "Resize (linear)", conv::resize),
    ("RESIZE_NEAREST_NEIGHBOR", "Resize (nearest)", conv::resize),
    ("CONCATENATION", "Concat", movement::concat),
    ("RESHAPE", "Reshape", movement::reshape),
    ("SQUEEZE", "Reshape", movement::reshape),
    ("EXPAND_DIMS", "Reshape", movement::reshape),
    ("PAD", "Pad", movement::pad),
    ("PADV2", "Pad", movement::pad),
    ("MIRROR_PAD", "Pad (reflect)", movement::pad),
    ("FULLY_CONNECTED", "Gemm", movement::fully_connected),
    ("MEAN", "ReduceMean", movement::reduce),
    ("SUM", "ReduceSum", movement::reduce),
    ("REDUCE_MAX", "ReduceMax", movement::reduce),
    ("REDUCE_MIN", "ReduceMin", movement::reduce),
    ("REDUCE_PROD", "ReduceProd", movement::reduce),
    ("SOFTMAX", "Softmax", elementwise::softmax),
    ("TRANSPOSE", "Transpose", movement::transpose),
    ("STRIDED_SLICE", "Slice, Reshape", movement::strided_slice),
    ("DEPTH_TO_SPACE", "DepthToSpace (DCR)", conv::depth_space),
    ("SPACE_TO_DEPTH", "SpaceToDepth", conv::depth_space),
    ("DEQUANTIZE", "Cast / DequantizeLinear", weights::dequantize),
    (
        "DENSIFY",
        "Identity (sparse weights made dense by the reader)",
        weights::densify,
    ),
    ("LOGISTIC", "Sigmoid", elementwise::unary),
    ("TANH", "Tanh", elementwise::unary),
    ("RELU", "Relu", elementwise::unary),
    ("RELU6", "Clip", elementwise::unary),
    ("RELU_N1_TO_1", "Clip", elementwise::unary),
    ("RELU_0_TO_1", "Clip", elementwise::unary),
    ("HARD_SWISH", "HardSwish", elementwise::unary),
    ("LEAKY_RELU", "LeakyRelu", elementwise::unary),
    ("ELU", "Elu", elementwise::unary),
    ("EXP", "Exp", elementwise::unary),
    ("LOG", "Log", elementwise::unary),
    ("SQRT", "Sqrt", elementwise::unary),
    ("RSQRT", "Sqrt, Reciprocal", elementwise::unary),
    ("ABS", "Abs", elementwise::unary),
    ("NEG", "Neg", elementwise::unary),
    ("FLOOR", "Floor", elementwise::unary),
    ("CEIL", "Ceil", elementwise::unary),
    ("SIN", "Sin", elementwise::unary),
    ("COS", "Cos", elementwise::unary),
];

/// Every TFLite builtin op the front-end lowers, with the registry ops it becomes.
pub fn ops() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPS.iter().map(|(op, onnx, _)| (*op, *onnx))
}

/// Whether the front-end lowers this TFLite builtin op.
pub fn supported(op: &str) -> bool {
    OPS.iter().any(|(o, _, _)| *o == op)
}

/// Rewrites a TFLite model's graph into the registry's ONNX ops (in place: the graph, and
/// the small constants the lowering makes, as derived tensors). Other formats are left as
/// they are. Every node that cannot be lowered is returned at once.
pub fn lower(model: &mut Model) -> Result<(), Vec<Unsupported>> {
    let Some(graph) = &model.graph else {
        return Ok(());
    };
    if !graph.nodes.iter().any(|n| n.domain == "tflite") {
        return Ok(());
    }
    let mut cx = Lowering {
        model,
        graph,
        outputs: graph.outputs.iter().map(|o| o.name.clone()).collect(),
        held: HashMap::new(),
        copies: HashMap::new(),
        nodes: Vec::new(),
        derived: Vec::new(),
        layouts: BTreeMap::new(),
        passed_on: HashMap::new(),
        filters: HashMap::new(),
    };
    let mut refused = Vec::new();
    for n in &graph.nodes {
        let translate = OPS.iter().find(|(o, _, _)| *o == n.op_type).map(|x| x.2);
        let result = match translate {
            Some(t) if n.domain == "tflite" => t(&mut cx, n),
            Some(_) | None => Err(format!(
                "TFLite op {} has no lowering onto the engine's ops (docs/TFLITE.md lists those that do)",
                n.op_type
            )),
        };
        if let Err(reason) = result {
            refused.push(Unsupported {
                node: n.label(),
                domain: "tflite".into(),
                op_type: n.op_type.clone(),
                reason,
            });
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    let lowered = GraphInfo {
        ir_version: 8,
        producer: format!("{} (lowered by m2w's TFLite front-end)", graph.producer),
        opsets: vec![(String::new(), OPSET)],
        nodes: std::mem::take(&mut cx.nodes),
        inputs: graph.inputs.clone(),
        outputs: graph.outputs.clone(),
        subgraph_outputs: BTreeMap::new(),
        value_shapes: graph.value_shapes.clone(),
        layouts: std::mem::take(&mut cx.layouts),
    };
    let derived = std::mem::take(&mut cx.derived);
    for (name, dtype, shape, bytes) in derived {
        model.add_derived(&name, dtype, shape, bytes);
    }
    model.graph = Some(lowered);
    Ok(())
}

struct Lowering<'m> {
    model: &'m Model,
    graph: &'m GraphInfo,
    outputs: HashSet<String>,
    /// Source values held as NCHW: the engine name of that value.
    held: HashMap<String, String>,
    /// Transposed copies made so far, by (engine name, target layout is NCHW).
    copies: HashMap<(String, bool), String>,
    nodes: Vec<NodeInfo>,
    derived: Vec<(String, DType, Vec<u64>, Vec<u8>)>,
    layouts: BTreeMap<String, Vec<usize>>,
    /// Values that are a weight passed on unchanged (DENSIFY's output), by the weight.
    passed_on: HashMap<String, String>,
    /// Filters transposed for a kernel, by (weight, layout).
    filters: HashMap<(String, &'static str), String>,
}

fn attr_s<'a>(n: &'a NodeInfo, k: &str) -> &'a str {
    match n.attributes.get(k) {
        Some(AttrValue::String(s)) => s,
        _ => "",
    }
}

fn attr_i(n: &NodeInfo, k: &str, default: i64) -> i64 {
    n.attr_int(k).unwrap_or(default)
}

fn ints(v: &[i64]) -> AttrValue {
    AttrValue::Ints(v.to_vec())
}

fn perm_ints(p: &[usize]) -> AttrValue {
    AttrValue::Ints(p.iter().map(|&v| v as i64).collect())
}

/// Where NHWC axis `a` sits in NCHW.
fn nchw_axis(a: usize) -> usize {
    TO_NCHW.iter().position(|&s| s == a).expect("axis < 4")
}

impl Lowering<'_> {
    fn shape(&self, v: &str) -> Result<Vec<i64>, String> {
        self.graph
            .value_shapes
            .get(v)
            .cloned()
            .ok_or_else(|| format!("tensor '{v}' has no declared shape"))
    }

    fn rank(&self, v: &str) -> Result<usize, String> {
        Ok(self.shape(v)?.len())
    }

    /// The values of a small constant input (a shape, axes, paddings).
    fn const_i64(&self, v: &str) -> Result<Vec<i64>, String> {
        let t = self
            .model
            .tensor(v)
            .ok_or_else(|| format!("input '{v}' must be a constant"))?;
        let raw = self.model.read_raw(t).map_err(|e| e.to_string())?;
        Ok(match t.dtype {
            DType::I64 => raw
                .bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            _ => self
                .model
                .read_f32(t)
                .map_err(|e| e.to_string())?
                .iter()
                .map(|&x| x as i64)
                .collect(),
        })
    }

    fn push(&mut self, name: String, op: &str, inputs: Vec<String>, outputs: Vec<String>) {
        self.push_with(name, op, inputs, outputs, Vec::new());
    }

    fn push_with(
        &mut self,
        name: String,
        op: &str,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attrs: Vec<(&str, AttrValue)>,
    ) {
        self.nodes.push(NodeInfo {
            name,
            op_type: op.into(),
            domain: String::new(),
            inputs,
            outputs,
            scope: String::new(),
            attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
    }

    /// A constant made by the lowering.
    fn derived_i64(&mut self, name: String, v: &[i64]) -> String {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.derived
            .push((name.clone(), DType::I64, vec![v.len() as u64], bytes));
        name
    }

    fn derived_f32(&mut self, name: String, shape: Vec<u64>, v: &[f32]) -> String {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.derived.push((name.clone(), DType::F32, shape, bytes));
        name
    }

    fn is_nchw(&self, v: &str) -> bool {
        self.held.contains_key(v)
    }

    /// `v` as an NCHW value (a rank-4 source value is transposed once).
    fn nchw(&mut self, v: &str) -> Result<String, String> {
        if let Some(h) = self.held.get(v) {
            return Ok(h.clone());
        }
        if self.rank(v)? != 4 {
            return Err(format!(
                "'{v}' has rank {}, a feature map needs 4 (NHWC)",
                self.rank(v)?
            ));
        }
        Ok(self.copy(v, true))
    }

    /// `v` in the source's layout (an NCHW-held value is transposed back once).
    fn nhwc(&mut self, v: &str) -> String {
        match self.held.get(v).cloned() {
            // A graph output held as NCHW is also written under its own name, in NHWC.
            Some(_) if self.outputs.contains(v) => v.to_string(),
            Some(h) => self.copy(&h, false),
            None => v.to_string(),
        }
    }

    /// A filter transposed into the layout `tag` names (once per filter and layout: a
    /// Transpose of a constant, folded at plan time).
    fn filter(&mut self, w: &str, tag: &'static str, perm: &[usize]) -> String {
        if let Some(f) = self.filters.get(&(w.to_string(), tag)) {
            return f.clone();
        }
        let name = format!("{w}#{tag}");
        self.push_with(
            name.clone(),
            "Transpose",
            vec![w.into()],
            vec![name.clone()],
            vec![("perm", perm_ints(perm))],
        );
        self.filters.insert((w.to_string(), tag), name.clone());
        name
    }

    fn copy(&mut self, from: &str, to_nchw: bool) -> String {
        if let Some(c) = self.copies.get(&(from.to_string(), to_nchw)) {
            return c.clone();
        }
        let base = from.strip_suffix("#nchw").unwrap_or(from);
        let name = format!("{base}#{}", if to_nchw { "nchw" } else { "nhwc" });
        let perm = if to_nchw { TO_NCHW } else { TO_NHWC };
        self.push_with(
            name.clone(),
            "Transpose",
            vec![from.into()],
            vec![name.clone()],
            vec![("perm", perm_ints(&perm))],
        );
        self.copies
            .insert((from.to_string(), to_nchw), name.clone());
        name
    }

    /// An operand of an elementwise op whose result is NCHW: NCHW-held values as they
    /// are, one-element values as they are, lower ranks (which broadcast from NHWC's
    /// right) reshaped to rank 4 first.
    fn nchw_operand(&mut self, v: &str) -> Result<String, String> {
        if let Some(h) = self.held.get(v) {
            return Ok(h.clone());
        }
        let s = self.shape(v)?;
        if s.iter().product::<i64>() == 1 && s.len() <= 4 {
            return Ok(v.to_string());
        }
        match s.len() {
            4 => self.nchw(v),
            r if r < 4 => {
                let mut four = vec![1i64; 4 - r];
                four.extend(&s);
                let target = self.derived_i64(format!("{v}#4d_shape"), &four);
                let name = format!("{v}#4d");
                self.push(
                    name.clone(),
                    "Reshape",
                    vec![v.into(), target],
                    vec![name.clone()],
                );
                Ok(self.copy(&name, true))
            }
            r => Err(format!("'{v}' of rank {r} cannot meet an NHWC feature map")),
        }
    }

    /// Emits the node for `n`'s (first) output `out`, computed as `op` over `inputs`, then
    /// its fused activation. `nchw`: the result is held as NCHW.
    fn emit(
        &mut self,
        n: &NodeInfo,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<(&str, AttrValue)>,
        out: &str,
        nchw: bool,
    ) -> Result<(), String> {
        let target = self.target(out, nchw);
        let act = attr_s(n, "fused_activation_function");
        let act = if act.is_empty() { "NONE" } else { act };
        let core = if act == "NONE" {
            target.clone()
        } else {
            format!("{out}#linear")
        };
        self.push_with(n.label(), op, inputs, vec![core.clone()], attrs);
        if act != "NONE" {
            self.activation(&format!("{}#act", n.label()), act, true, &core, &target)?;
        }
        if nchw {
            self.hold(out, target);
        }
        Ok(())
    }

    /// The name an op writes its result `out` under: `out` itself, or, for a graph output
    /// the engine computes as NCHW, `out#nchw` (`out` is then its NHWC copy).
    fn target(&self, out: &str, nchw: bool) -> String {
        if nchw && self.outputs.contains(out) {
            format!("{out}#nchw")
        } else {
            out.to_string()
        }
    }

    /// Records that `out` is held as NCHW in `target` ([`Lowering::target`]): a checkpoint
    /// layout, or the transpose back of a graph output.
    fn hold(&mut self, out: &str, target: String) {
        self.held.insert(out.to_string(), target.clone());
        if target == out {
            self.layouts.insert(out.to_string(), TO_NCHW.to_vec());
        } else {
            self.push_with(
                format!("{out}#nhwc"),
                "Transpose",
                vec![target],
                vec![out.to_string()],
                vec![("perm", perm_ints(&TO_NHWC))],
            );
        }
    }

    /// TFLite's activation functions (fused or as ops) as registry ops.
    fn activation(
        &mut self,
        name: &str,
        act: &str,
        fused: bool,
        x: &str,
        out: &str,
    ) -> Result<(), String> {
        let clip = |cx: &mut Self, lo: f32, hi: f32| {
            let lo = cx.derived_f32(format!("{name}#min"), vec![], &[lo]);
            let hi = cx.derived_f32(format!("{name}#max"), vec![], &[hi]);
            cx.push(
                name.into(),
                "Clip",
                vec![x.into(), lo, hi],
                vec![out.into()],
            );
        };
        match act {
            "RELU" => self.push(name.into(), "Relu", vec![x.into()], vec![out.into()]),
            "RELU6" => clip(self, 0.0, 6.0),
            "RELU_N1_TO_1" => clip(self, -1.0, 1.0),
            "RELU_0_TO_1" => clip(self, 0.0, 1.0),
            // As an op; fused into another op LiteRT's float kernels ignore it (they
            // clamp to the RELU family's ranges only), so a fused TANH is refused below
            // rather than given a meaning the reference does not have.
            "TANH" if !fused => self.push(name.into(), "Tanh", vec![x.into()], vec![out.into()]),
            other => {
                return Err(format!(
                    "fused activation {other} is not supported (LiteRT's kernels apply only NONE, RELU, RELU_N1_TO_1, RELU6 and RELU_0_TO_1 when fused)"
                ));
            }
        }
        Ok(())
    }
}

fn out0(n: &NodeInfo) -> Result<&str, String> {
    n.outputs
        .first()
        .map(String::as_str)
        .filter(|o| !o.is_empty())
        .ok_or_else(|| format!("{} has no output", n.op_type))
}

fn input(n: &NodeInfo, k: usize) -> Result<&str, String> {
    n.inputs
        .get(k)
        .map(String::as_str)
        .filter(|o| !o.is_empty())
        .ok_or_else(|| format!("{} needs input {k}", n.op_type))
}
