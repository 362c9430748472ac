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
    ("ADD", "Add", binary),
    ("SUB", "Sub", binary),
    ("MUL", "Mul", binary),
    ("DIV", "Div", binary),
    ("MAXIMUM", "Max", binary),
    ("MINIMUM", "Min", binary),
    ("POW", "Pow", binary),
    ("PRELU", "PRelu", binary),
    ("CONV_2D", "Conv", conv),
    ("DEPTHWISE_CONV_2D", "Conv (group = channels)", conv),
    ("TRANSPOSE_CONV", "ConvTranspose", transpose_conv),
    ("MAX_POOL_2D", "MaxPool", pool),
    ("AVERAGE_POOL_2D", "AveragePool", pool),
    ("RESIZE_BILINEAR", "Resize (linear)", resize),
    ("RESIZE_NEAREST_NEIGHBOR", "Resize (nearest)", resize),
    ("CONCATENATION", "Concat", concat),
    ("RESHAPE", "Reshape", reshape),
    ("SQUEEZE", "Reshape", reshape),
    ("EXPAND_DIMS", "Reshape", reshape),
    ("PAD", "Pad", pad),
    ("PADV2", "Pad", pad),
    ("MIRROR_PAD", "Pad (reflect)", pad),
    ("FULLY_CONNECTED", "Gemm", fully_connected),
    ("MEAN", "ReduceMean", reduce),
    ("SUM", "ReduceSum", reduce),
    ("REDUCE_MAX", "ReduceMax", reduce),
    ("REDUCE_MIN", "ReduceMin", reduce),
    ("REDUCE_PROD", "ReduceProd", reduce),
    ("SOFTMAX", "Softmax", softmax),
    ("TRANSPOSE", "Transpose", transpose),
    ("STRIDED_SLICE", "Slice, Reshape", strided_slice),
    ("DEPTH_TO_SPACE", "DepthToSpace (DCR)", depth_space),
    ("SPACE_TO_DEPTH", "SpaceToDepth", depth_space),
    ("DEQUANTIZE", "Cast / DequantizeLinear", dequantize),
    (
        "DENSIFY",
        "Identity (the reader makes sparse weights dense)",
        densify,
    ),
    ("LOGISTIC", "Sigmoid", unary),
    ("TANH", "Tanh", unary),
    ("RELU", "Relu", unary),
    ("RELU6", "Clip", unary),
    ("RELU_N1_TO_1", "Clip", unary),
    ("RELU_0_TO_1", "Clip", unary),
    ("HARD_SWISH", "HardSwish", unary),
    ("LEAKY_RELU", "LeakyRelu", unary),
    ("ELU", "Elu", unary),
    ("EXP", "Exp", unary),
    ("LOG", "Log", unary),
    ("SQRT", "Sqrt", unary),
    ("RSQRT", "Sqrt, Reciprocal", unary),
    ("ABS", "Abs", unary),
    ("NEG", "Neg", unary),
    ("FLOOR", "Floor", unary),
    ("CEIL", "Ceil", unary),
    ("SIN", "Sin", unary),
    ("COS", "Cos", unary),
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

fn binary(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let op = match n.op_type.as_str() {
        "ADD" => "Add",
        "SUB" => "Sub",
        "MUL" => "Mul",
        "DIV" => "Div",
        "MAXIMUM" => "Max",
        "MINIMUM" => "Min",
        "POW" => "Pow",
        _ => "PRelu",
    };
    let (a, b) = (input(n, 0)?, input(n, 1)?);
    let out = out0(n)?;
    let feature_map = (cx.is_nchw(a) || cx.is_nchw(b)) && cx.rank(out)? == 4;
    let inputs = if feature_map {
        vec![cx.nchw_operand(a)?, cx.nchw_operand(b)?]
    } else {
        vec![cx.nhwc(a), cx.nhwc(b)]
    };
    cx.emit(n, op, inputs, Vec::new(), out, feature_map)
}

fn unary(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let nchw = cx.is_nchw(x);
    let xin = if nchw { cx.nchw(x)? } else { x.to_string() };
    let target = cx.target(out, nchw);
    let name = n.label();
    match n.op_type.as_str() {
        "RELU" | "RELU6" | "RELU_N1_TO_1" | "RELU_0_TO_1" | "TANH" => {
            cx.activation(&name, &n.op_type, false, &xin, &target)?
        }
        "RSQRT" => {
            let root = format!("{out}#sqrt");
            cx.push(
                format!("{name}#sqrt"),
                "Sqrt",
                vec![xin],
                vec![root.clone()],
            );
            cx.push(name, "Reciprocal", vec![root], vec![target.clone()]);
        }
        "LEAKY_RELU" => {
            let alpha = match n.attributes.get("alpha") {
                Some(AttrValue::Float(a)) => *a,
                _ => 0.2,
            };
            cx.push_with(
                name,
                "LeakyRelu",
                vec![xin],
                vec![target.clone()],
                vec![("alpha", AttrValue::Float(alpha))],
            );
        }
        op => {
            let onnx = match op {
                "LOGISTIC" => "Sigmoid",
                "HARD_SWISH" => "HardSwish",
                "ELU" => "Elu",
                "EXP" => "Exp",
                "LOG" => "Log",
                "SQRT" => "Sqrt",
                "ABS" => "Abs",
                "NEG" => "Neg",
                "FLOOR" => "Floor",
                "CEIL" => "Ceil",
                "SIN" => "Sin",
                "COS" => "Cos",
                other => return Err(format!("{other} is not an elementwise op")),
            };
            cx.push(name, onnx, vec![xin], vec![target.clone()]);
        }
    }
    if nchw {
        cx.hold(out, target);
    }
    Ok(())
}

fn padding_mode(n: &NodeInfo) -> Result<AttrValue, String> {
    Ok(AttrValue::String(
        match attr_s(n, "padding") {
            "SAME" => "SAME_UPPER",
            "VALID" => "VALID",
            other => return Err(format!("padding '{other}' is not supported")),
        }
        .into(),
    ))
}

/// CONV_2D (weights `[O, KH, KW, I]`) and DEPTHWISE_CONV_2D (weights `[1, KH, KW, C*M]`).
fn conv(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let (x, w) = (input(n, 0)?, input(n, 1)?);
    let out = out0(n)?;
    let xs = cx.shape(x)?;
    let ws = cx.shape(w)?;
    if xs.len() != 4 || ws.len() != 4 {
        return Err(format!("input {xs:?} and weights {ws:?} must be rank 4"));
    }
    let depthwise = n.op_type == "DEPTHWISE_CONV_2D";
    let (perm, group) = if depthwise {
        ([3, 0, 1, 2], xs[3])
    } else {
        if ws[3] <= 0 || xs[3] % ws[3] != 0 {
            return Err(format!(
                "input channels {} are not a multiple of the filter's {}",
                xs[3], ws[3]
            ));
        }
        ([0, 3, 1, 2], xs[3] / ws[3])
    };
    let xin = cx.nchw(x)?;
    let wt = cx.filter(w, if depthwise { "c1hw" } else { "oihw" }, &perm);
    let mut inputs = vec![xin, wt];
    if let Ok(b) = input(n, 2) {
        inputs.push(b.to_string());
    }
    let attrs = vec![
        ("auto_pad", padding_mode(n)?),
        (
            "strides",
            ints(&[attr_i(n, "stride_h", 1), attr_i(n, "stride_w", 1)]),
        ),
        (
            "dilations",
            ints(&[
                attr_i(n, "dilation_h_factor", 1),
                attr_i(n, "dilation_w_factor", 1),
            ]),
        ),
        ("group", AttrValue::Int(group)),
    ];
    cx.emit(n, "Conv", inputs, attrs, out, true)
}

/// TRANSPOSE_CONV (output shape, weights `[O, KH, KW, I]`, input, bias): ConvTranspose with
/// the pads LiteRT computes from the output shape (SAME: those of the convolution it
/// inverts), the rows past the kernels' reach as output padding.
fn transpose_conv(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let (w, x) = (input(n, 1)?, input(n, 2)?);
    let out = out0(n)?;
    let xs = cx.shape(x)?;
    let ws = cx.shape(w)?;
    let os = cx.shape(out)?;
    if xs.len() != 4 || ws.len() != 4 || os.len() != 4 || ws[3] != xs[3] {
        return Err(format!(
            "input {xs:?}, weights {ws:?} and output {os:?} must be rank 4, the weights [O, H, W, I]"
        ));
    }
    let same = match attr_s(n, "padding") {
        "SAME" => true,
        "VALID" => false,
        other => return Err(format!("padding '{other}' is not supported")),
    };
    let strides = [attr_i(n, "stride_h", 1), attr_i(n, "stride_w", 1)];
    if strides.iter().any(|&s| s < 1) {
        return Err(format!("strides {strides:?}"));
    }
    let (mut lo, mut hi, mut extra) = ([0i64; 2], [0i64; 2], [0i64; 2]);
    for d in 0..2 {
        let (size, k, s, i) = (os[1 + d], ws[1 + d], strides[d], xs[1 + d]);
        if same {
            let conv_out = (size + s - 1) / s;
            lo[d] = ((conv_out - 1) * s + k - size).max(0) / 2;
        }
        let rest = (i - 1) * s + k - lo[d] - size;
        if rest >= 0 {
            hi[d] = rest;
        } else {
            extra[d] = -rest;
        }
    }
    if (0..2).any(|d| extra[d] >= strides[d]) {
        return Err(format!(
            "output {os:?} is past what the kernels reach from input {xs:?} by a stride or more"
        ));
    }
    let xin = cx.nchw(x)?;
    let wt = cx.filter(w, "iohw", &[3, 0, 1, 2]);
    let mut inputs = vec![xin, wt];
    if let Ok(b) = input(n, 3) {
        inputs.push(b.to_string());
    }
    let attrs = vec![
        ("strides", ints(&strides)),
        ("pads", ints(&[lo[0], lo[1], hi[0], hi[1]])),
        ("output_padding", ints(&extra)),
    ];
    cx.emit(n, "ConvTranspose", inputs, attrs, out, true)
}

fn pool(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nchw(input(n, 0)?)?;
    let out = out0(n)?;
    let mut attrs = vec![
        ("auto_pad", padding_mode(n)?),
        (
            "strides",
            ints(&[attr_i(n, "stride_h", 1), attr_i(n, "stride_w", 1)]),
        ),
        (
            "kernel_shape",
            ints(&[attr_i(n, "filter_height", 1), attr_i(n, "filter_width", 1)]),
        ),
    ];
    let op = if n.op_type == "MAX_POOL_2D" {
        "MaxPool"
    } else {
        // TFLite averages over the window's cells inside the input.
        attrs.push(("count_include_pad", AttrValue::Int(0)));
        "AveragePool"
    };
    cx.emit(n, op, vec![x], attrs, out, true)
}

/// RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR: TFLite's coordinate rules as ONNX's
/// coordinate transformation modes (align_corners; half_pixel_centers = half_pixel, whose
/// nearest index rounds half up as TFLite's floor((x + 0.5) * scale) does; else
/// asymmetric, nearest flooring).
fn resize(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let os = cx.shape(out)?;
    if os.len() != 4 {
        return Err(format!("output shape {os:?} is not rank 4"));
    }
    let xin = cx.nchw(x)?;
    let sizes = cx.derived_i64(format!("{out}#sizes"), &[os[0], os[3], os[1], os[2]]);
    let align = attr_i(n, "align_corners", 0) != 0;
    let half = attr_i(n, "half_pixel_centers", 0) != 0;
    let nearest = n.op_type == "RESIZE_NEAREST_NEIGHBOR";
    let coord = match (align, half) {
        (true, true) => return Err("align_corners and half_pixel_centers both set".into()),
        (true, false) => "align_corners",
        (false, true) => "half_pixel",
        (false, false) => "asymmetric",
    };
    let mut attrs = vec![
        (
            "mode",
            AttrValue::String(if nearest { "nearest" } else { "linear" }.into()),
        ),
        (
            "coordinate_transformation_mode",
            AttrValue::String(coord.into()),
        ),
    ];
    if nearest {
        attrs.push((
            "nearest_mode",
            AttrValue::String(
                if align || half {
                    "round_prefer_ceil"
                } else {
                    "floor"
                }
                .into(),
            ),
        ));
    }
    cx.emit(
        n,
        "Resize",
        vec![xin, String::new(), String::new(), sizes],
        attrs,
        out,
        true,
    )
}

fn concat(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let out = out0(n)?;
    let rank = cx.rank(out)?;
    let mut axis = attr_i(n, "axis", 0);
    if axis < 0 {
        axis += rank as i64;
    }
    let feature_map = rank == 4 && n.inputs.iter().any(|i| cx.is_nchw(i)) && (0..4).contains(&axis);
    let mut inputs = Vec::new();
    for i in &n.inputs {
        inputs.push(if feature_map { cx.nchw(i)? } else { cx.nhwc(i) });
    }
    let axis = if feature_map {
        nchw_axis(axis as usize) as i64
    } else {
        axis
    };
    cx.emit(
        n,
        "Concat",
        inputs,
        vec![("axis", AttrValue::Int(axis))],
        out,
        feature_map,
    )
}

/// RESHAPE, SQUEEZE, EXPAND_DIMS: a Reshape of the NHWC value to the declared output shape.
fn reshape(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nhwc(input(n, 0)?);
    let out = out0(n)?;
    let target = cx.shape(out)?;
    let shape = cx.derived_i64(format!("{out}#shape"), &target);
    cx.push(n.label(), "Reshape", vec![x, shape], vec![out.into()]);
    Ok(())
}

/// PAD, PADV2 (a fill value) and MIRROR_PAD (REFLECT; SYMMETRIC has no ONNX mode).
fn pad(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let paddings = cx.const_i64(input(n, 1)?)?;
    let rank = cx.rank(x)?;
    if paddings.len() != 2 * rank {
        return Err(format!("{} paddings for rank {rank}", paddings.len() / 2));
    }
    let nchw = cx.is_nchw(x) && rank == 4;
    let order: Vec<usize> = if nchw {
        TO_NCHW.to_vec()
    } else {
        (0..rank).collect()
    };
    let mut pads: Vec<i64> = order.iter().map(|&a| paddings[2 * a]).collect();
    pads.extend(order.iter().map(|&a| paddings[2 * a + 1]));
    let xin = if nchw { cx.nchw(x)? } else { cx.nhwc(x) };
    let pads = cx.derived_i64(format!("{out}#pads"), &pads);
    let mut inputs = vec![xin, pads];
    let mut attrs = Vec::new();
    match n.op_type.as_str() {
        "PADV2" => {
            if let Ok(v) = input(n, 2) {
                inputs.push(v.to_string());
            }
        }
        "MIRROR_PAD" => match attr_s(n, "mode") {
            "REFLECT" => attrs.push(("mode", AttrValue::String("reflect".into()))),
            other => {
                return Err(format!(
                    "mirror pad mode {other} is not supported (REFLECT is)"
                ));
            }
        },
        _ => {}
    }
    cx.emit(n, "Pad", inputs, attrs, out, nchw)
}

/// FULLY_CONNECTED: y = x W^T + b over the NHWC value flattened to [rows, in].
fn fully_connected(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    if attr_i(n, "weights_format", 0) != 0 {
        return Err("shuffled (packed) weights are not supported".into());
    }
    let (x, w) = (input(n, 0)?, input(n, 1)?);
    let out = out0(n)?;
    let ws = cx.shape(w)?;
    if ws.len() != 2 {
        return Err(format!("weights of shape {ws:?}, expected [out, in]"));
    }
    let xs = cx.shape(x)?;
    let mut xin = cx.nhwc(x);
    if xs.len() != 2 || xs[1] != ws[1] {
        let shape = cx.derived_i64(format!("{out}#rows_shape"), &[-1, ws[1]]);
        let rows = format!("{out}#rows");
        cx.push(
            format!("{}#rows", n.label()),
            "Reshape",
            vec![xin, shape],
            vec![rows.clone()],
        );
        xin = rows;
    }
    let mut inputs = vec![xin, w.to_string()];
    if let Ok(b) = input(n, 2) {
        inputs.push(b.to_string());
    }
    let os = cx.shape(out)?;
    let attrs = vec![("transB", AttrValue::Int(1))];
    if os.len() == 2 {
        return cx.emit(n, "Gemm", inputs, attrs, out, false);
    }
    let flat = format!("{out}#2d");
    cx.emit(n, "Gemm", inputs, attrs, &flat, false)?;
    let shape = cx.derived_i64(format!("{out}#shape"), &os);
    cx.push(
        format!("{}#shape", n.label()),
        "Reshape",
        vec![flat, shape],
        vec![out.into()],
    );
    Ok(())
}

/// MEAN, SUM, REDUCE_MAX/MIN/PROD over constant axes. An NCHW-held input is reduced in
/// place (axes remapped) when the kept axes come out in NHWC's order; otherwise it is
/// transposed back first.
fn reduce(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let rank = cx.rank(x)?;
    let mut axes: Vec<usize> = cx
        .const_i64(input(n, 1)?)?
        .iter()
        .map(|&a| if a < 0 { a + rank as i64 } else { a } as usize)
        .collect();
    axes.sort();
    axes.dedup();
    if axes.iter().any(|&a| a >= rank) {
        return Err(format!("axes {axes:?} out of range for rank {rank}"));
    }
    if axes.is_empty() {
        // TFLite reduces over nothing (ONNX would reduce over every axis).
        let xin = if cx.is_nchw(x) {
            cx.nchw(x)?
        } else {
            x.to_string()
        };
        let nchw = cx.is_nchw(x);
        return cx.emit(n, "Identity", vec![xin], Vec::new(), out, nchw);
    }
    let keep = attr_i(n, "keep_dims", 0) != 0;
    let kept_nhwc: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let kept_nchw: Vec<usize> = TO_NCHW
        .iter()
        .copied()
        .filter(|a| !axes.contains(a))
        .collect();
    let in_place = cx.is_nchw(x) && rank == 4 && (keep || kept_nhwc == kept_nchw);
    let (xin, axes): (String, Vec<i64>) = if in_place {
        (
            cx.nchw(x)?,
            axes.iter().map(|&a| nchw_axis(a) as i64).collect(),
        )
    } else {
        (cx.nhwc(x), axes.iter().map(|&a| a as i64).collect())
    };
    let op = match n.op_type.as_str() {
        "MEAN" => "ReduceMean",
        "SUM" => "ReduceSum",
        "REDUCE_MAX" => "ReduceMax",
        "REDUCE_MIN" => "ReduceMin",
        _ => "ReduceProd",
    };
    let mut inputs = vec![xin];
    let mut attrs = vec![("keepdims", AttrValue::Int(keep as i64))];
    if op == "ReduceSum" {
        inputs.push(cx.derived_i64(format!("{out}#axes"), &axes));
    } else {
        attrs.push(("axes", ints(&axes)));
    }
    cx.emit(n, op, inputs, attrs, out, in_place && keep)
}

fn softmax(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let nchw = cx.is_nchw(x) && cx.rank(x)? == 4;
    let mut xin = if nchw { cx.nchw(x)? } else { x.to_string() };
    let beta = match n.attributes.get("beta") {
        Some(AttrValue::Float(b)) => *b,
        _ => 1.0,
    };
    if beta != 1.0 {
        let b = cx.derived_f32(format!("{out}#beta"), vec![], &[beta]);
        let scaled = format!("{out}#scaled");
        cx.push(
            format!("{}#beta", n.label()),
            "Mul",
            vec![xin, b],
            vec![scaled.clone()],
        );
        xin = scaled;
    }
    let axis = if nchw { 1 } else { -1 };
    cx.emit(
        n,
        "Softmax",
        vec![xin],
        vec![("axis", AttrValue::Int(axis))],
        out,
        nchw,
    )
}

fn transpose(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nhwc(input(n, 0)?);
    let perm = cx.const_i64(input(n, 1)?)?;
    let out = out0(n)?;
    cx.emit(
        n,
        "Transpose",
        vec![x],
        vec![("perm", ints(&perm))],
        out,
        false,
    )
}

/// STRIDED_SLICE over constant begin, end and strides: a Slice of the NHWC value (begin
/// and end masks as the whole axis, a shrunk axis as one element), then a Reshape to the
/// declared output shape, which drops the shrunk axes. Ellipsis, new axes and `offset` are
/// refused.
fn strided_slice(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    for mask in ["ellipsis_mask", "new_axis_mask"] {
        if attr_i(n, mask, 0) != 0 {
            return Err(format!("{mask} is not supported"));
        }
    }
    if attr_i(n, "offset", 0) != 0 {
        return Err("offset is not supported".into());
    }
    let x = input(n, 0)?;
    let out = out0(n)?;
    let xs = cx.shape(x)?;
    let begin = cx.const_i64(input(n, 1)?)?;
    let end = cx.const_i64(input(n, 2)?)?;
    let strides = match input(n, 3) {
        Ok(t) => cx.const_i64(t)?,
        Err(_) => vec![1; begin.len()],
    };
    if begin.len() != end.len() || begin.len() != strides.len() || begin.len() > xs.len() {
        return Err(format!(
            "begin {begin:?}, end {end:?}, strides {strides:?} for rank {}",
            xs.len()
        ));
    }
    let bit = |mask: &str, i: usize| attr_i(n, mask, 0) >> i & 1 == 1;
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    for i in 0..begin.len() {
        let step = strides[i];
        if step == 0 {
            return Err("a stride of 0".into());
        }
        // The ends a mask means: the whole axis in the step's direction.
        let (first, past) = if step > 0 {
            (0, i64::MAX)
        } else {
            (-1, i64::MIN)
        };
        let b = if bit("begin_mask", i) {
            first
        } else {
            begin[i]
        };
        let e = if bit("shrink_axis_mask", i) {
            // One element: b, even when b is negative (-1 is the last).
            if b == -1 { i64::MAX } else { b + 1 }
        } else if bit("end_mask", i) {
            past
        } else {
            end[i]
        };
        starts.push(b);
        ends.push(e);
    }
    let xin = cx.nhwc(x);
    let axes: Vec<i64> = (0..begin.len() as i64).collect();
    let sliced = format!("{out}#slice");
    let inputs = vec![
        xin,
        cx.derived_i64(format!("{out}#starts"), &starts),
        cx.derived_i64(format!("{out}#ends"), &ends),
        cx.derived_i64(format!("{out}#axes"), &axes),
        cx.derived_i64(format!("{out}#steps"), &strides),
    ];
    cx.push(n.label(), "Slice", inputs, vec![sliced.clone()]);
    let shape = cx.derived_i64(format!("{out}#shape"), &cx.shape(out)?);
    cx.push(
        format!("{}#shape", n.label()),
        "Reshape",
        vec![sliced, shape],
        vec![out.into()],
    );
    Ok(())
}

/// DEPTH_TO_SPACE / SPACE_TO_DEPTH: TFLite's NHWC channel order is ONNX's DCR on NCHW.
fn depth_space(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nchw(input(n, 0)?)?;
    let out = out0(n)?;
    let mut attrs = vec![("blocksize", AttrValue::Int(attr_i(n, "block_size", 1)))];
    let op = if n.op_type == "DEPTH_TO_SPACE" {
        attrs.push(("mode", AttrValue::String("DCR".into())));
        "DepthToSpace"
    } else {
        "SpaceToDepth"
    };
    cx.emit(n, op, vec![x], attrs, out, true)
}

/// DENSIFY: the reader made the sparse weight dense already; this passes it on.
fn densify(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    if cx.model.tensor(x).is_none() {
        return Err("DENSIFY of a value computed at run time (sparse weights only)".into());
    }
    let out = out0(n)?;
    cx.passed_on.insert(out.to_string(), x.to_string());
    cx.emit(n, "Identity", vec![x.to_string()], Vec::new(), out, false)
}

/// DEQUANTIZE: fp16 weights become f32 (a Cast that folds at plan time); 8-bit ones go
/// through DequantizeLinear with their scale and zero point (per tensor or per axis).
fn dequantize(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let xin = cx.nhwc(x);
    // A weight, or a weight passed on by DENSIFY.
    let source = cx.passed_on.get(x).map(String::as_str).unwrap_or(x);
    let entry = cx.model.tensor(source);
    let dtype = entry.map(|t| t.dtype);
    if dtype == Some(DType::F16) || dtype == Some(DType::BF16) {
        return cx.emit(
            n,
            "Cast",
            vec![xin],
            vec![("to", AttrValue::Int(1))],
            out,
            false,
        );
    }
    let Some(q) = entry.and_then(|t| t.quantization.clone()) else {
        return Err(format!(
            "DEQUANTIZE of {}: only fp16 weights and quantized 8-bit weights are lowered",
            match dtype {
                Some(d) => format!("a {d} weight without quantization"),
                None => "a value computed at run time".into(),
            }
        ));
    };
    let dtype = dtype.expect("a weight");
    if !matches!(dtype, DType::I8 | DType::U8) {
        return Err(format!(
            "DEQUANTIZE of {dtype} is not supported (int8, uint8 are)"
        ));
    }
    let k = q.scale.len() as u64;
    let shape = if q.axis.is_some() { vec![k] } else { vec![] };
    let scale = cx.derived_f32(format!("{out}#scale"), shape.clone(), &q.scale);
    let zp: Vec<u8> = (0..k as usize)
        .map(|i| q.zero_point.get(i).copied().unwrap_or(0) as u8)
        .collect();
    let zero = format!("{out}#zero_point");
    cx.derived.push((zero.clone(), dtype, shape, zp));
    let mut attrs = Vec::new();
    if let Some(a) = q.axis {
        attrs.push(("axis", AttrValue::Int(a)));
    }
    cx.emit(
        n,
        "DequantizeLinear",
        vec![xin, scale, zero],
        attrs,
        out,
        false,
    )
}
