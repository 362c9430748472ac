//! ONNX graph -> plan. Shapes are static once the inputs' dims are bound, so each node is
//! lowered with known input shapes: folded on the host when all its inputs are constants
//! and the op is cheap shape arithmetic, turned into a view when it only reshapes, or
//! turned into dispatches of named kernels with their uniforms computed here.
//!
//! `lower_node` is the single place that says which ops (and attributes and dtypes) m2w
//! supports; anything else becomes an [`Unsupported`] entry naming the node and why, and
//! the whole graph is rejected before any GPU work with all such entries at once.

use std::collections::{BTreeMap, HashSet};

use m2w_model::{AttrValue, NodeInfo};

use crate::host;
use crate::plan::{Binding, Dispatch, Plan, TensorDesc, groups_1d};
use crate::tensor::{DT, HostTensor, numel};

/// One node m2w cannot run, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Unsupported {
    pub node: String,
    pub op_type: String,
    pub reason: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.node, self.op_type, self.reason)
    }
}

type R<T> = Result<T, String>;

pub(crate) const MAX_RANK: usize = 8;

pub struct Ctx {
    pub plan: Plan,
    opset: i64,
}

/// Uniform words, packed in declaration order (every kernel's Params is laid out so that
/// scalars come in groups of four and arrays are vec4-aligned).
#[derive(Default)]
struct P(Vec<u32>);

impl P {
    fn u(mut self, v: usize) -> Self {
        self.0.push(v as u32);
        self
    }
    fn i(mut self, v: i64) -> Self {
        self.0.push(v as i32 as u32);
        self
    }
    fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
    /// An array<vec4<u32 or i32>, 2> of up to 8 values, zero-padded.
    fn arr(mut self, v: &[i64]) -> Self {
        for k in 0..MAX_RANK {
            self.0.push(v.get(k).copied().unwrap_or(0) as i32 as u32);
        }
        self
    }
    fn done(mut self) -> Vec<u32> {
        while self.0.len() % 4 != 0 || self.0.is_empty() {
            self.0.push(0);
        }
        self.0
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for d in (0..shape.len()).rev() {
        s[d] = acc;
        acc *= shape[d] as i64;
    }
    s
}

/// numpy broadcasting of several shapes.
pub(crate) fn broadcast(shapes: &[&[usize]]) -> R<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
        }
    }
    Ok(out)
}

/// Element strides of `shape` broadcast to `out` (0 on broadcast dims).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<i64> {
    let off = out.len() - shape.len();
    let cs = contiguous_strides(shape);
    let mut s = vec![0i64; out.len()];
    for (i, &d) in shape.iter().enumerate() {
        if d != 1 {
            s[off + i] = cs[i];
        }
    }
    s
}

fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn attr_i(n: &NodeInfo, k: &str, d: i64) -> i64 {
    match n.attributes.get(k) {
        Some(AttrValue::Int(v)) => *v,
        _ => d,
    }
}
fn attr_f(n: &NodeInfo, k: &str, d: f32) -> f32 {
    match n.attributes.get(k) {
        Some(AttrValue::Float(v)) => *v,
        _ => d,
    }
}
fn attr_ints(n: &NodeInfo, k: &str) -> Option<Vec<i64>> {
    match n.attributes.get(k) {
        Some(AttrValue::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}
fn attr_s(n: &NodeInfo, k: &str, d: &str) -> String {
    match n.attributes.get(k) {
        Some(AttrValue::String(v)) => v.clone(),
        _ => d.to_string(),
    }
}

/// Unary element-wise ops: (ONNX op, kernel op, p0 attribute and default, p1 ...).
fn unary_kernel(n: &NodeInfo) -> Option<(&'static str, f32, f32)> {
    Some(match n.op_type.as_str() {
        "Abs" => ("abs", 0.0, 0.0),
        "Neg" => ("neg", 0.0, 0.0),
        "Relu" => ("relu", 0.0, 0.0),
        "Sigmoid" => ("sigmoid", 0.0, 0.0),
        "Tanh" => ("tanh", 0.0, 0.0),
        "Exp" => ("exp", 0.0, 0.0),
        "Log" => ("log", 0.0, 0.0),
        "Sqrt" => ("sqrt", 0.0, 0.0),
        "Reciprocal" => ("reciprocal", 0.0, 0.0),
        "Floor" => ("floor", 0.0, 0.0),
        "Ceil" => ("ceil", 0.0, 0.0),
        "Round" => ("round", 0.0, 0.0),
        "Sin" => ("sin", 0.0, 0.0),
        "Cos" => ("cos", 0.0, 0.0),
        "Tan" => ("tan", 0.0, 0.0),
        "Asin" => ("asin", 0.0, 0.0),
        "Acos" => ("acos", 0.0, 0.0),
        "Atan" => ("atan", 0.0, 0.0),
        "Sinh" => ("sinh", 0.0, 0.0),
        "Cosh" => ("cosh", 0.0, 0.0),
        "Asinh" => ("asinh", 0.0, 0.0),
        "Acosh" => ("acosh", 0.0, 0.0),
        "Atanh" => ("atanh", 0.0, 0.0),
        "Erf" => ("erf", 0.0, 0.0),
        "Sign" => ("sign", 0.0, 0.0),
        "Softplus" => ("softplus", 0.0, 0.0),
        "Softsign" => ("softsign", 0.0, 0.0),
        "Elu" => ("elu", attr_f(n, "alpha", 1.0), 0.0),
        "Selu" => (
            "selu",
            attr_f(n, "alpha", 1.673_263_2),
            attr_f(n, "gamma", 1.050_701),
        ),
        "Celu" => ("celu", attr_f(n, "alpha", 1.0), 0.0),
        "LeakyRelu" => ("leaky_relu", attr_f(n, "alpha", 0.01), 0.0),
        "ThresholdedRelu" => ("thresholded_relu", attr_f(n, "alpha", 1.0), 0.0),
        "HardSigmoid" => (
            "hard_sigmoid",
            attr_f(n, "alpha", 0.2),
            attr_f(n, "beta", 0.5),
        ),
        "HardSwish" => ("hard_swish", 0.0, 0.0),
        "Mish" => ("mish", 0.0, 0.0),
        "Gelu" => (
            if attr_s(n, "approximate", "none") == "tanh" {
                "gelu_tanh"
            } else {
                "gelu"
            },
            0.0,
            0.0,
        ),
        "IsNaN" => ("isnan", 0.0, 0.0),
        "IsInf" => (
            "isinf",
            attr_i(n, "detect_positive", 1) as f32,
            attr_i(n, "detect_negative", 1) as f32,
        ),
        "Not" => ("not", 0.0, 0.0),
        _ => return None,
    })
}

fn binary_kernel(op: &str, fmod: bool) -> Option<&'static str> {
    Some(match op {
        "Add" | "Sum" | "Mean" => "add",
        "Sub" => "sub",
        "Mul" => "mul",
        "Div" => "div",
        "Pow" => "pow",
        "Mod" => {
            if fmod {
                "fmod"
            } else {
                "mod"
            }
        }
        "Max" => "max",
        "Min" => "min",
        "Equal" => "equal",
        "Greater" => "greater",
        "GreaterOrEqual" => "greater_or_equal",
        "Less" => "less",
        "LessOrEqual" => "less_or_equal",
        "And" => "and",
        "Or" => "or",
        "Xor" => "xor",
        "PRelu" => "prelu",
        _ => return None,
    })
}

impl Ctx {
    pub fn new(opset: i64) -> Ctx {
        Ctx {
            plan: Plan {
                tensors: BTreeMap::new(),
                buffers: vec![],
                constants: BTreeMap::new(),
                inputs: vec![],
                outputs: vec![],
                dispatches: vec![],
            },
            opset,
        }
    }

    pub fn add_input(&mut self, name: &str, shape: Vec<usize>, dt: DT) {
        self.plan.tensors.insert(
            name.into(),
            TensorDesc {
                shape,
                dt,
                base: name.into(),
            },
        );
        self.plan.inputs.push(name.into());
    }

    pub fn add_const(&mut self, name: &str, t: HostTensor) {
        self.plan.tensors.insert(
            name.into(),
            TensorDesc {
                shape: t.shape.clone(),
                dt: t.dt(),
                base: name.into(),
            },
        );
        self.plan.constants.insert(name.into(), t);
    }

    fn desc(&self, name: &str) -> R<&TensorDesc> {
        self.plan
            .tensors
            .get(name)
            .ok_or_else(|| format!("input '{name}' is unknown"))
    }

    fn shape(&self, name: &str) -> R<Vec<usize>> {
        Ok(self.desc(name)?.shape.clone())
    }

    fn dt(&self, name: &str) -> R<DT> {
        Ok(self.desc(name)?.dt)
    }

    /// The host value of a constant tensor (or a view of one).
    pub fn konst(&self, name: &str) -> Option<HostTensor> {
        let d = self.plan.tensors.get(name)?;
        let c = self
            .plan
            .constants
            .get(name)
            .or_else(|| self.plan.constants.get(&d.base))?;
        Some(c.reshaped(d.shape.clone()))
    }

    fn const_ints(&self, n: &NodeInfo, i: usize) -> R<Option<Vec<i64>>> {
        match n.inputs.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => self.konst(name).map(|t| Some(t.as_i64())).ok_or_else(|| {
                format!("input {i} ('{name}') must be a constant (it decides a shape)")
            }),
        }
    }

    fn new_tensor(&mut self, name: &str, shape: Vec<usize>, dt: DT) -> R<()> {
        if shape.len() > MAX_RANK {
            return Err(format!("rank {} exceeds {MAX_RANK}", shape.len()));
        }
        self.plan.tensors.insert(
            name.into(),
            TensorDesc {
                shape,
                dt,
                base: name.into(),
            },
        );
        Ok(())
    }

    fn view(&mut self, out: &str, of: &str, shape: Vec<usize>) -> R<()> {
        let d = self.desc(of)?.clone();
        if numel(&shape) != numel(&d.shape) {
            return Err(format!("cannot view {:?} as {:?}", d.shape, shape));
        }
        self.plan.tensors.insert(
            out.into(),
            TensorDesc {
                shape,
                dt: d.dt,
                base: d.base,
            },
        );
        Ok(())
    }

    fn dispatch(
        &mut self,
        n: &NodeInfo,
        kernel: String,
        bindings: Vec<Binding>,
        params: Vec<u32>,
        workgroups: [u32; 3],
    ) {
        self.plan.dispatches.push(Dispatch {
            node: n.label(),
            op_type: n.op_type.clone(),
            kernel,
            bindings,
            params,
            workgroups,
        });
    }

    fn bind(&self, name: &str) -> Binding {
        Binding::Tensor(name.into())
    }

    /// An element-wise dispatch over up to three broadcast inputs.
    fn elementwise(
        &mut self,
        n: &NodeInfo,
        kernel: String,
        ins: &[&str],
        out: &str,
        out_dt: DT,
        p0: f32,
        p1: f32,
    ) -> R<()> {
        let shapes: Vec<Vec<usize>> = ins.iter().map(|i| self.shape(i)).collect::<R<_>>()?;
        let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        let oshape = broadcast(&refs)?;
        if oshape.len() > MAX_RANK {
            return Err(format!("rank {} exceeds {MAX_RANK}", oshape.len()));
        }
        self.new_tensor(out, oshape.clone(), out_dt)?;
        let total = numel(&oshape);
        let strides = |k: usize| {
            shapes
                .get(k)
                .map(|s| broadcast_strides(s, &oshape))
                .unwrap_or_default()
        };
        let dims: Vec<i64> = oshape.iter().map(|&d| d as i64).collect();
        let params = P::default()
            .u(total)
            .u(oshape.len())
            .f(p0)
            .f(p1)
            .arr(&dims)
            .arr(&strides(0))
            .arr(&strides(1))
            .arr(&strides(2))
            .done();
        let mut bindings: Vec<Binding> = ins.iter().map(|i| self.bind(i)).collect();
        while bindings.len() < 3 {
            bindings.push(Binding::Dummy);
        }
        bindings.push(self.bind(out));
        if total > 0 {
            self.dispatch(
                n,
                format!("ew_{kernel}"),
                bindings,
                params,
                groups_1d(total, 256),
            );
        }
        Ok(())
    }

    /// dst[dst_off + c.dst_strides] = src[src_off + c.src_strides] over `shape`.
    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        n: &NodeInfo,
        src: &str,
        dst: &str,
        shape: &[usize],
        src_off: i64,
        src_strides: &[i64],
        dst_off: i64,
        dst_strides: &[i64],
    ) -> R<()> {
        let total = numel(shape);
        if total == 0 {
            return Ok(());
        }
        if shape.len() > MAX_RANK {
            return Err(format!("rank {} exceeds {MAX_RANK}", shape.len()));
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let params = P::default()
            .u(total)
            .u(shape.len())
            .i(src_off)
            .i(dst_off)
            .arr(&dims)
            .arr(src_strides)
            .arr(dst_strides)
            .done();
        self.dispatch(
            n,
            "copy_strided".into(),
            vec![self.bind(src), self.bind(dst)],
            params,
            groups_1d(total, 256),
        );
        Ok(())
    }

    fn fill(&mut self, n: &NodeInfo, dst: &str, count: usize, bits: u32) {
        if count > 0 {
            let params = P::default().u(count).u(bits as usize).done();
            self.dispatch(
                n,
                "fill".into(),
                vec![self.bind(dst)],
                params,
                groups_1d(count, 256),
            );
        }
    }

    /// Lowers one node; Err(reason) when it cannot run.
    pub fn lower_node(&mut self, n: &NodeInfo) -> R<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!("domain '{}' is not supported", n.domain));
        }
        let ins: Vec<&str> = n.inputs.iter().map(String::as_str).collect();
        let out = n.outputs.first().map(String::as_str).unwrap_or("");
        for i in ins.iter().filter(|i| !i.is_empty()) {
            self.desc(i)?;
        }
        let op = n.op_type.as_str();

        // Host folding: every input constant and the op is cheap shape arithmetic.
        let all_const = ins
            .iter()
            .filter(|i| !i.is_empty())
            .all(|i| self.konst(i).is_some());
        if all_const && host::can_fold(op) {
            let inputs: Vec<Option<HostTensor>> = ins
                .iter()
                .map(|i| if i.is_empty() { None } else { self.konst(i) })
                .collect();
            let outs = host::eval(n, &inputs, self.opset)?;
            for (name, t) in n.outputs.iter().zip(outs) {
                if !name.is_empty() {
                    self.add_const(name, t);
                }
            }
            return Ok(());
        }

        if let Some((k, p0, p1)) = unary_kernel(n) {
            let dt = self.dt(ins[0])?;
            let (kernel, out_dt) = match (k, dt) {
                ("isnan" | "isinf", DT::F32) => (format!("{k}_f32"), DT::Bool),
                ("not", DT::Bool) => ("not_bool".to_string(), DT::Bool),
                (_, DT::F32) if k != "not" => (format!("{k}_f32"), DT::F32),
                ("abs" | "neg" | "sign" | "relu", DT::I32) => (format!("{k}_i32"), DT::I32),
                _ => return Err(format!("dtype {dt:?} not supported")),
            };
            return self.elementwise(n, kernel, &ins[..1], out, out_dt, p0, p1);
        }

        match op {
            "Identity" | "Dropout" => {
                if n.outputs.len() > 1 && n.outputs.get(1).is_some_and(|o| !o.is_empty()) {
                    return Err("the mask output of Dropout is not supported".into());
                }
                if op == "Dropout"
                    && ins.get(2).is_some_and(|t| {
                        !t.is_empty()
                            && self
                                .konst(t)
                                .map(|k| k.as_i64().iter().any(|&v| v != 0))
                                .unwrap_or(true)
                    })
                {
                    return Err("Dropout in training mode is not supported".into());
                }
                let s = self.shape(ins[0])?;
                self.view(out, ins[0], s)
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Mod" | "Max" | "Min" | "Sum" | "Mean"
            | "Equal" | "Greater" | "GreaterOrEqual" | "Less" | "LessOrEqual" | "And" | "Or"
            | "Xor" | "PRelu" => {
                let dt = self.dt(ins[0])?;
                let fmod = attr_i(n, "fmod", 0) != 0;
                let k = binary_kernel(op, fmod).expect("listed");
                let cmp = matches!(
                    op,
                    "Equal" | "Greater" | "GreaterOrEqual" | "Less" | "LessOrEqual"
                );
                let logical = matches!(op, "And" | "Or" | "Xor");
                let supported = match dt {
                    DT::F32 => !logical && !(op == "Mod" && !fmod),
                    DT::I32 => !logical && op != "Pow",
                    DT::Bool => logical || op == "Equal",
                };
                if !supported {
                    return Err(format!("dtype {dt:?} not supported"));
                }
                for i in &ins {
                    if self.dt(i)? != dt && !(op == "Pow") {
                        return Err("inputs of different dtypes".into());
                    }
                }
                if op == "Pow" && self.dt(ins[1])? != DT::F32 {
                    return Err("Pow with an integer exponent tensor is not supported".into());
                }
                let out_dt = if cmp { DT::Bool } else { dt };
                let kernel = format!("{k}_{}", dt.suffix());
                if ins.len() == 1 {
                    let s = self.shape(ins[0])?;
                    return self.view(out, ins[0], s);
                }
                // Variadic ops chain pairwise through temporaries.
                let mut acc = ins[0].to_string();
                for (j, rhs) in ins.iter().enumerate().skip(1) {
                    let last = j == ins.len() - 1 && op != "Mean";
                    let target = if last {
                        out.to_string()
                    } else {
                        format!("{out}::{op}{j}")
                    };
                    self.elementwise(n, kernel.clone(), &[&acc, rhs], &target, out_dt, 0.0, 0.0)?;
                    acc = target;
                }
                if op == "Mean" {
                    let scale = format!("{out}::mean_scale");
                    self.add_const(
                        &scale,
                        HostTensor::f32(vec![], vec![1.0 / ins.len() as f32]),
                    );
                    self.elementwise(n, "mul_f32".into(), &[&acc, &scale], out, DT::F32, 0.0, 0.0)?;
                }
                Ok(())
            }
            "Where" => {
                let dt = self.dt(ins[1])?;
                self.elementwise(
                    n,
                    format!("where_{}", dt.suffix()),
                    &ins[..3],
                    out,
                    dt,
                    0.0,
                    0.0,
                )
            }
            "Clip" => {
                let dt = self.dt(ins[0])?;
                if dt == DT::Bool {
                    return Err("bool Clip".into());
                }
                let (lo, hi) = if self.opset < 11 {
                    (
                        Some(attr_f(n, "min", f32::MIN)),
                        Some(attr_f(n, "max", f32::MAX)),
                    )
                } else {
                    (None, None)
                };
                let mut bound = |idx: usize, attr: Option<f32>, dflt: f32, tag: &str| -> String {
                    match ins.get(idx).filter(|s| !s.is_empty()) {
                        Some(s) => s.to_string(),
                        None => {
                            let name = format!("{out}::{tag}");
                            let v = attr.unwrap_or(dflt);
                            let t = if dt == DT::F32 {
                                HostTensor::f32(vec![], vec![v])
                            } else {
                                HostTensor::i64(
                                    vec![],
                                    vec![if dflt < 0.0 {
                                        i32::MIN as i64
                                    } else {
                                        i32::MAX as i64
                                    }],
                                )
                            };
                            self.add_const(&name, t);
                            name
                        }
                    }
                };
                let lo = bound(1, lo, f32::MIN, "clip_min");
                let hi = bound(2, hi, f32::MAX, "clip_max");
                self.elementwise(
                    n,
                    format!("clip_{}", dt.suffix()),
                    &[ins[0], &lo, &hi],
                    out,
                    dt,
                    0.0,
                    0.0,
                )
            }
            "Cast" | "CastLike" => {
                let from = self.dt(ins[0])?;
                let to = if op == "Cast" {
                    onnx_dt(attr_i(n, "to", 1) as i32)?
                } else {
                    self.dt(ins[1])?
                };
                if from == to {
                    let s = self.shape(ins[0])?;
                    return self.view(out, ins[0], s);
                }
                self.elementwise(
                    n,
                    format!("cast_{}_{}", from.suffix(), to.suffix()),
                    &ins[..1],
                    out,
                    to,
                    0.0,
                    0.0,
                )
            }
            "Reshape" => {
                let input = self.shape(ins[0])?;
                let spec = self.const_ints(n, 1)?.ok_or("Reshape needs a shape")?;
                let allowzero = attr_i(n, "allowzero", 0) != 0;
                let s = host::reshape_shape(&input, &spec, allowzero)?;
                self.view(out, ins[0], s)
            }
            "Flatten" => {
                let s = self.shape(ins[0])?;
                let axis = attr_i(n, "axis", 1);
                let a = if axis < 0 {
                    axis + s.len() as i64
                } else {
                    axis
                } as usize;
                if a > s.len() {
                    return Err(format!("axis {axis} out of range"));
                }
                let shape = vec![numel(&s[..a]), numel(&s[a..])];
                self.view(out, ins[0], shape)
            }
            "Squeeze" | "Unsqueeze" => {
                let s = self.shape(ins[0])?;
                let axes = if self.opset >= 13 {
                    self.const_ints(n, 1)?
                } else {
                    attr_ints(n, "axes")
                };
                let shape = host::squeeze_shape(op, &s, axes.as_deref())?;
                self.view(out, ins[0], shape)
            }
            "Transpose" => {
                let s = self.shape(ins[0])?;
                let perm: Vec<usize> = match attr_ints(n, "perm") {
                    Some(p) => p.iter().map(|&a| norm_axis(a, s.len())).collect::<R<_>>()?,
                    None => (0..s.len()).rev().collect(),
                };
                let oshape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
                self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                let cs = contiguous_strides(&s);
                let src: Vec<i64> = perm.iter().map(|&p| cs[p]).collect();
                self.copy(
                    n,
                    ins[0],
                    out,
                    &oshape,
                    0,
                    &src,
                    0,
                    &contiguous_strides(&oshape),
                )
            }
            "Slice" => {
                let s = self.shape(ins[0])?;
                let (starts, ends, axes, steps) = if self.opset < 10 {
                    (
                        attr_ints(n, "starts").ok_or("starts")?,
                        attr_ints(n, "ends").ok_or("ends")?,
                        attr_ints(n, "axes"),
                        None,
                    )
                } else {
                    (
                        self.const_ints(n, 1)?.ok_or("starts")?,
                        self.const_ints(n, 2)?.ok_or("ends")?,
                        self.const_ints(n, 3)?,
                        self.const_ints(n, 4)?,
                    )
                };
                let (oshape, offset, strides) =
                    host::slice_geometry(&s, &starts, &ends, axes.as_deref(), steps.as_deref())?;
                self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                self.copy(
                    n,
                    ins[0],
                    out,
                    &oshape,
                    offset,
                    &strides,
                    0,
                    &contiguous_strides(&oshape),
                )
            }
            "Expand" => {
                let s = self.shape(ins[0])?;
                let target = self.const_ints(n, 1)?.ok_or("Expand needs a shape")?;
                let t: Vec<usize> = target.iter().map(|&d| d.max(0) as usize).collect();
                let oshape = broadcast(&[&s, &t])?;
                self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                self.copy(
                    n,
                    ins[0],
                    out,
                    &oshape,
                    0,
                    &broadcast_strides(&s, &oshape),
                    0,
                    &contiguous_strides(&oshape),
                )
            }
            "Concat" => {
                let parts: Vec<&str> = ins.iter().copied().filter(|i| !i.is_empty()).collect();
                let first = self.shape(parts[0])?;
                let axis = norm_axis(attr_i(n, "axis", 0), first.len())?;
                let mut oshape = first.clone();
                oshape[axis] = 0;
                for p in &parts {
                    let s = self.shape(p)?;
                    if s.len() != first.len()
                        || s.iter()
                            .enumerate()
                            .any(|(d, &v)| d != axis && v != first[d])
                    {
                        return Err(format!(
                            "Concat inputs {first:?} and {s:?} differ off the axis"
                        ));
                    }
                    oshape[axis] += s[axis];
                }
                self.new_tensor(out, oshape.clone(), self.dt(parts[0])?)?;
                let ostrides = contiguous_strides(&oshape);
                let mut at = 0i64;
                for p in parts {
                    let s = self.shape(p)?;
                    self.copy(
                        n,
                        p,
                        out,
                        &s,
                        0,
                        &contiguous_strides(&s),
                        at * ostrides[axis],
                        &ostrides,
                    )?;
                    at += s[axis] as i64;
                }
                Ok(())
            }
            "Split" => {
                let s = self.shape(ins[0])?;
                let axis = norm_axis(attr_i(n, "axis", 0), s.len())?;
                let nout = n.outputs.len();
                let split: Vec<usize> = match if self.opset >= 13 {
                    self.const_ints(n, 1)?
                } else {
                    attr_ints(n, "split")
                } {
                    Some(v) => v.iter().map(|&x| x.max(0) as usize).collect(),
                    None => {
                        let parts = attr_i(n, "num_outputs", nout as i64) as usize;
                        let chunk = s[axis].div_ceil(parts.max(1));
                        (0..parts)
                            .map(|k| chunk.min(s[axis].saturating_sub(k * chunk)))
                            .collect()
                    }
                };
                if split.len() != nout || split.iter().sum::<usize>() != s[axis] {
                    return Err(format!(
                        "split {split:?} does not cover axis of {}",
                        s[axis]
                    ));
                }
                let cs = contiguous_strides(&s);
                let mut at = 0usize;
                for (o, &len) in n.outputs.iter().zip(&split) {
                    let mut os = s.clone();
                    os[axis] = len;
                    self.new_tensor(o, os.clone(), self.dt(ins[0])?)?;
                    self.copy(
                        n,
                        ins[0],
                        o,
                        &os,
                        (at as i64) * cs[axis],
                        &cs,
                        0,
                        &contiguous_strides(&os),
                    )?;
                    at += len;
                }
                Ok(())
            }
            "Pad" => {
                let s = self.shape(ins[0])?;
                let dt = self.dt(ins[0])?;
                let mode = attr_s(n, "mode", "constant");
                if !matches!(mode.as_str(), "constant" | "reflect" | "edge" | "wrap") {
                    return Err(format!("Pad mode '{mode}' is not supported"));
                }
                let pads = if self.opset < 11 {
                    attr_ints(n, "pads").ok_or("pads")?
                } else {
                    self.const_ints(n, 1)?.ok_or("pads")?
                };
                let value = if self.opset < 11 {
                    HostTensor::f32(vec![], vec![attr_f(n, "value", 0.0)])
                } else {
                    match ins.get(2).filter(|s| !s.is_empty()) {
                        Some(v) => self.konst(v).ok_or("the pad value must be a constant")?,
                        None => HostTensor::f32(vec![], vec![0.0]),
                    }
                };
                let axes: Vec<usize> = match self.const_ints(n, 3)? {
                    Some(a) => a.iter().map(|&x| norm_axis(x, s.len())).collect::<R<_>>()?,
                    None => (0..s.len()).collect(),
                };
                if pads.len() != 2 * axes.len() {
                    return Err("pads do not match the axes".into());
                }
                let mut before = vec![0i64; s.len()];
                let mut after = vec![0i64; s.len()];
                for (k, &a) in axes.iter().enumerate() {
                    before[a] = pads[k];
                    after[a] = pads[k + axes.len()];
                }
                let oshape: Vec<usize> = (0..s.len())
                    .map(|d| (s[d] as i64 + before[d] + after[d]).max(0) as usize)
                    .collect();
                self.new_tensor(out, oshape.clone(), dt)?;
                if mode != "constant" {
                    if s.contains(&0) {
                        return Err(format!("Pad mode '{mode}' of an empty input"));
                    }
                    let total = numel(&oshape);
                    let dims = |v: &[usize]| v.iter().map(|&d| d as i64).collect::<Vec<_>>();
                    let p = P::default()
                        .u(total)
                        .u(s.len())
                        .u(0)
                        .u(0)
                        .arr(&dims(&oshape))
                        .arr(&dims(&s))
                        .arr(&before)
                        .arr(&contiguous_strides(&s))
                        .done();
                    if total > 0 {
                        self.dispatch(
                            n,
                            format!("pad_{mode}"),
                            vec![self.bind(ins[0]), self.bind(out)],
                            p,
                            groups_1d(total, 256),
                        );
                    }
                    return Ok(());
                }
                let bits = match dt {
                    DT::F32 => (value.as_f64()[0] as f32).to_bits(),
                    DT::I32 => value.as_i64()[0] as i32 as u32,
                    DT::Bool => value.as_i64()[0] as u32,
                };
                self.fill(n, out, numel(&oshape), bits);
                // The copied region: negative pads crop the input.
                let cs = contiguous_strides(&s);
                let os = contiguous_strides(&oshape);
                let mut region = Vec::new();
                let (mut src_off, mut dst_off) = (0i64, 0i64);
                for d in 0..s.len() {
                    let crop_lo = (-before[d]).max(0);
                    let crop_hi = (-after[d]).max(0);
                    region.push((s[d] as i64 - crop_lo - crop_hi).max(0) as usize);
                    src_off += crop_lo * cs[d];
                    dst_off += before[d].max(0) * os[d];
                }
                self.copy(n, ins[0], out, &region, src_off, &cs, dst_off, &os)
            }
            "Tile" => {
                let s = self.shape(ins[0])?;
                let reps = self.const_ints(n, 1)?.ok_or("repeats")?;
                if reps.len() != s.len() || reps.iter().any(|&r| r < 0) {
                    return Err("repeats do not match the rank".into());
                }
                let oshape: Vec<usize> =
                    s.iter().zip(&reps).map(|(&d, &r)| d * r as usize).collect();
                self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                // View the output as [r0, d0, r1, d1, ...]: one copy over the doubled shape.
                let os = contiguous_strides(&oshape);
                let cs = contiguous_strides(&s);
                let mut shape2 = Vec::new();
                let mut src = Vec::new();
                let mut dst = Vec::new();
                for d in 0..s.len() {
                    shape2.push(reps[d] as usize);
                    src.push(0);
                    dst.push(os[d] * s[d] as i64);
                    shape2.push(s[d]);
                    src.push(cs[d]);
                    dst.push(os[d]);
                }
                if shape2.len() > MAX_RANK {
                    return Err("Tile of rank > 4 is not supported".into());
                }
                self.copy(n, ins[0], out, &shape2, 0, &src, 0, &dst)
            }
            "DepthToSpace" | "SpaceToDepth" => {
                let s = self.shape(ins[0])?;
                if s.len() != 4 {
                    return Err("needs a 4-D input".into());
                }
                let b = attr_i(n, "blocksize", 1) as usize;
                let (nn, c, h, w) = (s[0], s[1], s[2], s[3]);
                let cs = contiguous_strides(&s);
                if op == "DepthToSpace" {
                    let dcr = attr_s(n, "mode", "DCR") == "DCR";
                    let oc = c / (b * b);
                    let oshape = vec![nn, oc, h * b, w * b];
                    self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                    let os = contiguous_strides(&oshape);
                    // Iterate [n, oc, h, b1, w, b2]; input channel = DCR: (b1*b + b2)*oc + c; CRD: c*b*b + b1*b + b2.
                    let shape6 = [nn, oc, h, b, w, b];
                    let (c_str, b1_str, b2_str) = if dcr {
                        (cs[1], (b * oc) as i64 * cs[1], oc as i64 * cs[1])
                    } else {
                        ((b * b) as i64 * cs[1], b as i64 * cs[1], cs[1])
                    };
                    let src = [cs[0], c_str, cs[2], b1_str, cs[3], b2_str];
                    let dst = [
                        os[0],
                        os[1],
                        os[2] * b as i64,
                        os[2],
                        os[3] * b as i64,
                        os[3],
                    ];
                    self.copy(n, ins[0], out, &shape6, 0, &src, 0, &dst)
                } else {
                    let oshape = vec![nn, c * b * b, h / b, w / b];
                    self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                    let os = contiguous_strides(&oshape);
                    let shape6 = [nn, c, h / b, b, w / b, b];
                    let src = [
                        cs[0],
                        cs[1],
                        cs[2] * b as i64,
                        cs[2],
                        cs[3] * b as i64,
                        cs[3],
                    ];
                    let dst = [
                        os[0],
                        os[1],
                        os[2],
                        (b * c) as i64 * os[1],
                        os[3],
                        c as i64 * os[1],
                    ];
                    self.copy(n, ins[0], out, &shape6, 0, &src, 0, &dst)
                }
            }
            "Gather" => {
                let s = self.shape(ins[0])?;
                let is = self.shape(ins[1])?;
                if self.dt(ins[1])? != DT::I32 {
                    return Err("indices must be integers".into());
                }
                let axis = norm_axis(attr_i(n, "axis", 0), s.len())?;
                let mut oshape = s[..axis].to_vec();
                oshape.extend(&is);
                oshape.extend(&s[axis + 1..]);
                self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                let total = numel(&oshape);
                let params = P::default()
                    .u(total)
                    .u(numel(&is))
                    .u(s[axis])
                    .u(numel(&s[axis + 1..]))
                    .done();
                if total > 0 {
                    self.dispatch(
                        n,
                        "gather".into(),
                        vec![self.bind(ins[0]), self.bind(ins[1]), self.bind(out)],
                        params,
                        groups_1d(total, 256),
                    );
                }
                Ok(())
            }
            "GatherND" => {
                let s = self.shape(ins[0])?;
                let is = self.shape(ins[1])?;
                if self.dt(ins[1])? != DT::I32 || is.is_empty() {
                    return Err("indices must be integers of rank >= 1".into());
                }
                let b = attr_i(n, "batch_dims", 0) as usize;
                let k = *is.last().unwrap();
                if b + k > s.len() || k > MAX_RANK {
                    return Err("indices reach past the data rank".into());
                }
                let mut oshape = is[..is.len() - 1].to_vec();
                oshape.extend(&s[b + k..]);
                self.new_tensor(out, oshape.clone(), self.dt(ins[0])?)?;
                let cs = contiguous_strides(&s);
                let rows = numel(&is[..is.len() - 1]);
                let rows_per_batch = numel(&is[b..is.len() - 1]).max(1);
                let total = numel(&oshape);
                let dims: Vec<i64> = s[b..b + k].iter().map(|&d| d as i64).collect();
                let p = P::default()
                    .u(total)
                    .u(k)
                    .u(numel(&s[b + k..]))
                    .u(rows_per_batch)
                    .u(numel(&s[b..]))
                    .u(0)
                    .u(0)
                    .u(0)
                    .arr(&dims)
                    .arr(&cs[b..b + k])
                    .done();
                let _ = rows;
                if total > 0 {
                    self.dispatch(
                        n,
                        "gather_nd".into(),
                        vec![self.bind(ins[0]), self.bind(ins[1]), self.bind(out)],
                        p,
                        groups_1d(total, 256),
                    );
                }
                Ok(())
            }
            "Resize" | "Upsample" => {
                let s = self.shape(ins[0])?;
                if self.dt(ins[0])? != DT::F32 || s.len() < 2 {
                    return Err("only f32 of rank >= 2".into());
                }
                let mode = attr_s(n, "mode", "nearest");
                if !matches!(mode.as_str(), "nearest" | "linear") {
                    return Err(format!(
                        "mode '{mode}' is not supported (nearest, linear are)"
                    ));
                }
                if attr_i(n, "antialias", 0) != 0
                    || attr_ints(n, "axes").is_some()
                    || attr_s(n, "keep_aspect_ratio_policy", "stretch") != "stretch"
                {
                    return Err(
                        "antialias, axes and keep_aspect_ratio_policy are not supported".into(),
                    );
                }
                let coord = attr_s(
                    n,
                    "coordinate_transformation_mode",
                    if op == "Upsample" || self.opset < 11 {
                        "asymmetric"
                    } else {
                        "half_pixel"
                    },
                );
                let coord_mode = match coord.as_str() {
                    "half_pixel" => 0,
                    "asymmetric" => 1,
                    "align_corners" => 2,
                    "pytorch_half_pixel" => 3,
                    "half_pixel_symmetric" => 4,
                    other => {
                        return Err(format!(
                            "coordinate_transformation_mode '{other}' is not supported"
                        ));
                    }
                };
                let nearest_mode = match attr_s(
                    n,
                    "nearest_mode",
                    if self.opset < 11 {
                        "floor"
                    } else {
                        "round_prefer_floor"
                    },
                )
                .as_str()
                {
                    "round_prefer_floor" => 0,
                    "round_prefer_ceil" => 1,
                    "floor" => 2,
                    _ => 3,
                };
                let rank = s.len();
                let (scales, sizes): (Option<Vec<f32>>, Option<Vec<i64>>) =
                    if op == "Upsample" || self.opset < 10 {
                        (
                            attr_ints(n, "scales")
                                .map(|v| v.iter().map(|&x| x as f32).collect())
                                .or_else(|| match n.attributes.get("scales") {
                                    Some(AttrValue::Floats(f)) => Some(f.clone()),
                                    _ => None,
                                })
                                .or(self
                                    .konst(ins.get(1).copied().unwrap_or(""))
                                    .map(|t| t.as_f64().iter().map(|&v| v as f32).collect())),
                            None,
                        )
                    } else {
                        let (si, zi) = if self.opset < 11 { (1, 99) } else { (2, 3) };
                        let sc = ins
                            .get(si)
                            .filter(|x| !x.is_empty())
                            .map(|x| self.konst(x).ok_or("scales must be a constant"))
                            .transpose()?
                            .map(|t| t.as_f64().iter().map(|&v| v as f32).collect::<Vec<f32>>())
                            .filter(|v| !v.is_empty());
                        let sz = ins
                            .get(zi)
                            .filter(|x| !x.is_empty())
                            .map(|x| self.konst(x).ok_or("sizes must be a constant"))
                            .transpose()?
                            .map(|t| t.as_i64())
                            .filter(|v| !v.is_empty());
                        (sc, sz)
                    };
                let (oshape, scale): (Vec<usize>, Vec<f32>) = match (sizes, scales) {
                    (Some(z), _) if z.len() == rank => (
                        z.iter().map(|&v| v as usize).collect(),
                        z.iter()
                            .zip(&s)
                            .map(|(&o, &i)| o as f32 / i as f32)
                            .collect(),
                    ),
                    (_, Some(sc)) if sc.len() == rank => (
                        s.iter()
                            .zip(&sc)
                            .map(|(&i, &f)| (i as f32 * f).floor() as usize)
                            .collect(),
                        sc,
                    ),
                    _ => return Err("needs scales or sizes for every dim".into()),
                };
                if oshape[..rank - 2] != s[..rank - 2] {
                    return Err("only the last two dims may be resized".into());
                }
                self.new_tensor(out, oshape.clone(), DT::F32)?;
                let total = numel(&oshape);
                let p = P::default()
                    .u(total)
                    .u(s[rank - 2])
                    .u(s[rank - 1])
                    .u(oshape[rank - 2])
                    .u(oshape[rank - 1])
                    .u(coord_mode)
                    .u(nearest_mode)
                    .u(0)
                    .f(scale[rank - 2])
                    .f(scale[rank - 1])
                    .f(0.0)
                    .f(0.0)
                    .done();
                if total > 0 {
                    self.dispatch(
                        n,
                        format!("resize_{mode}_f32"),
                        vec![self.bind(ins[0]), self.bind(out)],
                        p,
                        groups_1d(total, 256),
                    );
                }
                Ok(())
            }
            "ConvTranspose" => self.conv_transpose(n, &ins, out),
            "LSTM" => self.lstm(n, &ins),
            "MatMul" => self.matmul(n, ins[0], ins[1], out, false, false),
            "Gemm" => {
                let ta = attr_i(n, "transA", 0) != 0;
                let tb = attr_i(n, "transB", 0) != 0;
                let alpha = attr_f(n, "alpha", 1.0);
                let beta = attr_f(n, "beta", 1.0);
                let has_c = ins.get(2).is_some_and(|s| !s.is_empty());
                let direct = alpha == 1.0 && !has_c;
                let mm = if direct {
                    out.to_string()
                } else {
                    format!("{out}::ab")
                };
                self.matmul(n, ins[0], ins[1], &mm, ta, tb)?;
                let mut acc = mm;
                if alpha != 1.0 {
                    let k = format!("{out}::alpha");
                    self.add_const(&k, HostTensor::f32(vec![], vec![alpha]));
                    let t = if has_c {
                        format!("{out}::scaled")
                    } else {
                        out.to_string()
                    };
                    self.elementwise(n, "mul_f32".into(), &[&acc, &k], &t, DT::F32, 0.0, 0.0)?;
                    acc = t;
                }
                if has_c {
                    let mut c = ins[2].to_string();
                    if beta != 1.0 {
                        let k = format!("{out}::beta");
                        self.add_const(&k, HostTensor::f32(vec![], vec![beta]));
                        let t = format!("{out}::beta_c");
                        self.elementwise(n, "mul_f32".into(), &[&c, &k], &t, DT::F32, 0.0, 0.0)?;
                        c = t;
                    }
                    self.elementwise(n, "add_f32".into(), &[&acc, &c], out, DT::F32, 0.0, 0.0)?;
                }
                Ok(())
            }
            "Softmax" | "LogSoftmax" | "Hardmax" => {
                let s = self.shape(ins[0])?;
                if self.dt(ins[0])? != DT::F32 {
                    return Err("only f32".into());
                }
                let legacy = self.opset < 13;
                let axis = norm_axis(attr_i(n, "axis", if legacy { 1 } else { -1 }), s.len())?;
                let (len, inner) = if legacy {
                    (numel(&s[axis..]), 1)
                } else {
                    (s[axis], numel(&s[axis + 1..]))
                };
                let rows = numel(&s) / len.max(1);
                self.new_tensor(out, s.clone(), DT::F32)?;
                let kernel = match op {
                    "Softmax" => "softmax_f32",
                    "LogSoftmax" => "log_softmax_f32",
                    _ => "hardmax_f32",
                };
                if rows * len > 0 {
                    self.dispatch(
                        n,
                        kernel.into(),
                        vec![self.bind(ins[0]), self.bind(out)],
                        P::default().u(rows).u(len).u(inner).done(),
                        groups_1d(rows, 256),
                    );
                }
                Ok(())
            }
            "LayerNormalization" | "RMSNormalization" => {
                let s = self.shape(ins[0])?;
                let axis = norm_axis(attr_i(n, "axis", -1), s.len())?;
                let len = numel(&s[axis..]);
                let rows = numel(&s[..axis]);
                let eps = attr_f(n, "epsilon", 1e-5);
                self.new_tensor(out, s.clone(), DT::F32)?;
                let scale_len = numel(&self.shape(ins[1])?);
                let has_bias =
                    op == "LayerNormalization" && ins.get(2).is_some_and(|b| !b.is_empty());
                let bias_len = if has_bias {
                    numel(&self.shape(ins[2])?)
                } else {
                    1
                };
                if scale_len != len || (has_bias && bias_len != len) {
                    return Err("scale/bias must have the normalised shape".into());
                }
                let mut stat_shape = s[..axis].to_vec();
                stat_shape.extend(std::iter::repeat_n(1, s.len() - axis));
                let stats = format!("{out}::stats");
                self.new_tensor(&stats, vec![2, rows], DT::F32)?;
                let kernel = if op == "LayerNormalization" {
                    "layernorm_f32"
                } else {
                    "rmsnorm_f32"
                };
                let bias = if has_bias {
                    self.bind(ins[2])
                } else {
                    Binding::Dummy
                };
                let params = P::default()
                    .u(rows)
                    .u(len)
                    .f(eps)
                    .u(has_bias as usize)
                    .u(scale_len)
                    .u(bias_len)
                    .done();
                if rows > 0 {
                    let g = rows.div_ceil(64);
                    let groups = if g <= 65535 {
                        [g as u32, 1, 1]
                    } else {
                        [65535, g.div_ceil(65535) as u32, 1]
                    };
                    self.dispatch(
                        n,
                        kernel.into(),
                        vec![
                            self.bind(ins[0]),
                            self.bind(ins[1]),
                            bias,
                            self.bind(out),
                            self.bind(&stats),
                        ],
                        params,
                        groups,
                    );
                }
                // Optional Mean and InvStdDev outputs are views of the stats rows.
                let stats_cs = [rows as i64, 1];
                for (k, o) in n.outputs.iter().enumerate().skip(1) {
                    if o.is_empty() {
                        continue;
                    }
                    self.new_tensor(o, stat_shape.clone(), DT::F32)?;
                    self.copy(
                        n,
                        &stats,
                        o,
                        &[rows],
                        (k as i64 - 1) * stats_cs[0],
                        &[1],
                        0,
                        &[1],
                    )?;
                }
                Ok(())
            }
            "BatchNormalization" => {
                if n.outputs.iter().skip(1).any(|o| !o.is_empty())
                    || attr_i(n, "training_mode", 0) != 0
                {
                    return Err("training mode is not supported".into());
                }
                let s = self.shape(ins[0])?;
                if s.len() < 2 {
                    return Err("needs rank >= 2".into());
                }
                let eps = attr_f(n, "epsilon", 1e-5);
                let mut cshape = vec![s[1]];
                cshape.extend(std::iter::repeat_n(1, s.len() - 2));
                let v = |ctx: &mut Ctx, i: usize, tag: &str| -> R<String> {
                    let name = format!("{out}::{tag}");
                    ctx.view(&name, ins[i], cshape.clone())?;
                    Ok(name)
                };
                let (scale, bias, mean, var) = (
                    v(self, 1, "scale")?,
                    v(self, 2, "bias")?,
                    v(self, 3, "mean")?,
                    v(self, 4, "var")?,
                );
                let eps_c = format!("{out}::eps");
                self.add_const(&eps_c, HostTensor::f32(vec![], vec![eps]));
                let t = |k: &str| format!("{out}::{k}");
                self.elementwise(
                    n,
                    "add_f32".into(),
                    &[&var, &eps_c],
                    &t("ve"),
                    DT::F32,
                    0.0,
                    0.0,
                )?;
                self.elementwise(
                    n,
                    "sqrt_f32".into(),
                    &[&t("ve")],
                    &t("sd"),
                    DT::F32,
                    0.0,
                    0.0,
                )?;
                self.elementwise(
                    n,
                    "div_f32".into(),
                    &[&scale, &t("sd")],
                    &t("k"),
                    DT::F32,
                    0.0,
                    0.0,
                )?;
                self.elementwise(
                    n,
                    "sub_f32".into(),
                    &[ins[0], &mean],
                    &t("xc"),
                    DT::F32,
                    0.0,
                    0.0,
                )?;
                self.elementwise(
                    n,
                    "mul_f32".into(),
                    &[&t("xc"), &t("k")],
                    &t("xs"),
                    DT::F32,
                    0.0,
                    0.0,
                )?;
                self.elementwise(
                    n,
                    "add_f32".into(),
                    &[&t("xs"), &bias],
                    out,
                    DT::F32,
                    0.0,
                    0.0,
                )
            }
            "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
            | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" | "ArgMax"
            | "ArgMin" | "GlobalAveragePool" | "GlobalMaxPool" => self.reduce(n, ins[0], out),
            "Conv" => self.conv(n, &ins, out),
            "MaxPool" | "AveragePool" | "LpPool" => self.pool(n, ins[0], out),
            _ => Err("op not supported yet".into()),
        }
    }

    fn matmul(&mut self, n: &NodeInfo, a: &str, b: &str, out: &str, ta: bool, tb: bool) -> R<()> {
        if self.dt(a)? != DT::F32 || self.dt(b)? != DT::F32 {
            return Err("only f32 MatMul".into());
        }
        let sa = self.shape(a)?;
        let sb = self.shape(b)?;
        let (a2, b2) = (
            if sa.len() == 1 {
                vec![1, sa[0]]
            } else {
                sa.clone()
            },
            if sb.len() == 1 {
                vec![sb[0], 1]
            } else {
                sb.clone()
            },
        );
        let (m, ka) = if ta {
            (a2[a2.len() - 1], a2[a2.len() - 2])
        } else {
            (a2[a2.len() - 2], a2[a2.len() - 1])
        };
        let (kb, nn) = if tb {
            (b2[b2.len() - 1], b2[b2.len() - 2])
        } else {
            (b2[b2.len() - 2], b2[b2.len() - 1])
        };
        if ka != kb {
            return Err(format!("inner dims differ: {sa:?} x {sb:?}"));
        }
        let ba = &a2[..a2.len() - 2];
        let bb = &b2[..b2.len() - 2];
        // Plain products (B a 2-D matrix, no transposes) run as one big [batch*M, K] x [K, N]
        // product on the register-blocked kernel (82% of cuBLAS SGEMM on the H100,
        // bench/RESULTS.md); the rest use the general tiled kernel.
        if !ta && !tb && sb.len() == 2 && m * ka * nn >= 1 << 15 {
            let rows = numel(ba) * m;
            let mut oshape = ba.to_vec();
            if sa.len() > 1 {
                oshape.push(m);
            }
            oshape.push(nn);
            self.new_tensor(out, oshape, DT::F32)?;
            let p = P::default().u(rows).u(nn).u(ka).u(0).done();
            if rows * nn > 0 {
                self.dispatch(
                    n,
                    "matmul_f32_rb".into(),
                    vec![self.bind(a), self.bind(b), self.bind(out)],
                    p,
                    [nn.div_ceil(256) as u32, rows.div_ceil(128) as u32, 1],
                );
            }
            return Ok(());
        }
        let batch = broadcast(&[ba, bb])?;
        if batch.len() > 4 {
            return Err("more than 4 batch dims".into());
        }
        let mut oshape = batch.clone();
        if sa.len() > 1 {
            oshape.push(m);
        }
        if sb.len() > 1 {
            oshape.push(nn);
        }
        self.new_tensor(out, oshape, DT::F32)?;
        let (a_rs, a_cs) = if ta { (1, m) } else { (ka, 1) };
        let (b_rs, b_cs) = if tb { (1, kb) } else { (nn, 1) };
        let pad4 = |v: Vec<i64>| -> Vec<i64> {
            let mut v = v;
            v.resize(4, 0);
            v
        };
        let abs = pad4(
            broadcast_strides(ba, &batch)
                .iter()
                .map(|s| s * (m * ka) as i64)
                .collect(),
        );
        let bbs = pad4(
            broadcast_strides(bb, &batch)
                .iter()
                .map(|s| s * (kb * nn) as i64)
                .collect(),
        );
        let bshape = pad4(batch.iter().map(|&d| d as i64).collect());
        let mut p = P::default()
            .u(m)
            .u(nn)
            .u(ka)
            .u(batch.len())
            .u(a_rs)
            .u(a_cs)
            .u(b_rs)
            .u(b_cs);
        for v in [&bshape, &abs, &bbs] {
            for &x in v.iter() {
                p = p.i(x);
            }
        }
        let nb = numel(&batch);
        if m * nn * nb > 0 {
            if nb > 65535 {
                return Err("batch too large".into());
            }
            self.dispatch(
                n,
                "matmul_f32_tiled".into(),
                vec![self.bind(a), self.bind(b), self.bind(out)],
                p.done(),
                [nn.div_ceil(16) as u32, m.div_ceil(16) as u32, nb as u32],
            );
        }
        Ok(())
    }

    fn reduce(&mut self, n: &NodeInfo, x: &str, out: &str) -> R<()> {
        let op = n.op_type.as_str();
        let s = self.shape(x)?;
        let dt = self.dt(x)?;
        let (axes, keep): (Vec<usize>, bool) = match op {
            "ArgMax" | "ArgMin" => (
                vec![norm_axis(attr_i(n, "axis", 0), s.len())?],
                attr_i(n, "keepdims", 1) != 0,
            ),
            "GlobalAveragePool" | "GlobalMaxPool" => ((2..s.len()).collect(), true),
            _ => {
                let from_input = self.opset >= 18 || (op == "ReduceSum" && self.opset >= 13);
                let axes = if from_input {
                    self.const_ints(n, 1)?
                } else {
                    attr_ints(n, "axes")
                };
                let keep = attr_i(n, "keepdims", 1) != 0;
                match axes {
                    Some(a) if !a.is_empty() => (
                        a.iter().map(|&x| norm_axis(x, s.len())).collect::<R<_>>()?,
                        keep,
                    ),
                    _ => {
                        if attr_i(n, "noop_with_empty_axes", 0) != 0 {
                            return self.view(out, x, s.clone());
                        }
                        ((0..s.len()).collect(), keep)
                    }
                }
            }
        };
        let kop = match op {
            "ReduceSum" => "sum",
            "ReduceMean" | "GlobalAveragePool" => "mean",
            "ReduceMax" | "GlobalMaxPool" => "max",
            "ReduceMin" => "min",
            "ReduceProd" => "prod",
            "ReduceL1" => "l1",
            "ReduceL2" => "l2",
            "ReduceSumSquare" => "sum_square",
            "ReduceLogSum" => "log_sum",
            "ReduceLogSumExp" => "log_sum_exp",
            "ArgMax" => {
                if attr_i(n, "select_last_index", 0) != 0 && dt == DT::F32 {
                    "argmax_last"
                } else {
                    "argmax"
                }
            }
            _ => {
                if attr_i(n, "select_last_index", 0) != 0 && dt == DT::F32 {
                    "argmin_last"
                } else {
                    "argmin"
                }
            }
        };
        let kernel = format!("reduce_{kop}_{}", dt.suffix());
        if m2w_kernels::source(&kernel).is_none() {
            return Err(format!("dtype {dt:?} not supported"));
        }
        if (op == "ArgMax" || op == "ArgMin")
            && attr_i(n, "select_last_index", 0) != 0
            && dt != DT::F32
        {
            return Err("select_last_index on integers".into());
        }
        let axes_set: HashSet<usize> = axes.iter().copied().collect();
        let cs = contiguous_strides(&s);
        let kept: Vec<usize> = (0..s.len()).filter(|d| !axes_set.contains(d)).collect();
        let mut red: Vec<usize> = axes_set.iter().copied().collect();
        red.sort();
        let oshape: Vec<usize> = if keep {
            (0..s.len())
                .map(|d| if axes_set.contains(&d) { 1 } else { s[d] })
                .collect()
        } else {
            kept.iter().map(|&d| s[d]).collect()
        };
        let out_dt = if kop.starts_with("arg") { DT::I32 } else { dt };
        self.new_tensor(out, oshape.clone(), out_dt)?;
        let total = numel(&oshape);
        let red_count = red.iter().map(|&d| s[d]).product::<usize>();
        if red_count == 0 && kop.starts_with("arg") {
            return Err("arg reduction over an empty axis".into());
        }
        let p = P::default()
            .u(total)
            .u(kept.len())
            .u(red.len())
            .u(red_count)
            .arr(&kept.iter().map(|&d| s[d] as i64).collect::<Vec<_>>())
            .arr(&kept.iter().map(|&d| cs[d]).collect::<Vec<_>>())
            .arr(&red.iter().map(|&d| s[d] as i64).collect::<Vec<_>>())
            .arr(&red.iter().map(|&d| cs[d]).collect::<Vec<_>>())
            .done();
        if total > 0 {
            self.dispatch(
                n,
                kernel,
                vec![self.bind(x), self.bind(out)],
                p,
                groups_1d(total, 256),
            );
        }
        Ok(())
    }

    /// (N, C, H, W) view of a 1-D or 2-D spatial tensor, kernel dims, strides, dilations,
    /// pads (begin, end) per spatial dim, output spatial dims.
    fn window(
        &self,
        n: &NodeInfo,
        s: &[usize],
        kernel: &[usize],
        ceil_mode: bool,
    ) -> R<(Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>)> {
        let sp = s.len() - 2;
        if sp == 0 || sp > 2 {
            return Err(format!(
                "{sp}-D windows are not supported (1-D and 2-D are)"
            ));
        }
        let strides = attr_ints(n, "strides")
            .unwrap_or(vec![1; sp])
            .iter()
            .map(|&v| v as usize)
            .collect::<Vec<_>>();
        let dil = attr_ints(n, "dilations")
            .unwrap_or(vec![1; sp])
            .iter()
            .map(|&v| v as usize)
            .collect::<Vec<_>>();
        let mut pads = attr_ints(n, "pads")
            .unwrap_or(vec![0; 2 * sp])
            .iter()
            .map(|&v| v as usize)
            .collect::<Vec<_>>();
        let auto = attr_s(n, "auto_pad", "NOTSET");
        let mut out = vec![0; sp];
        for d in 0..sp {
            let ek = (kernel[d] - 1) * dil[d] + 1;
            let input = s[2 + d];
            match auto.as_str() {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let o = input.div_ceil(strides[d]);
                    let total = ((o - 1) * strides[d] + ek).saturating_sub(input);
                    let (lo, hi) = if auto == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    pads[d] = lo;
                    pads[d + sp] = hi;
                    out[d] = o;
                }
                "VALID" => {
                    pads[d] = 0;
                    pads[d + sp] = 0;
                    out[d] = (input.saturating_sub(ek)) / strides[d] + 1;
                }
                _ => {
                    let span = (input + pads[d] + pads[d + sp])
                        .checked_sub(ek)
                        .ok_or("window larger than the padded input")?;
                    out[d] = if ceil_mode {
                        let o = span.div_ceil(strides[d]) + 1;
                        // The last window must start inside the input or left padding.
                        if (o - 1) * strides[d] >= input + pads[d] {
                            o - 1
                        } else {
                            o
                        }
                    } else {
                        span / strides[d] + 1
                    };
                }
            }
        }
        Ok((strides, dil, pads, out, kernel.to_vec()))
    }

    fn conv(&mut self, n: &NodeInfo, ins: &[&str], out: &str) -> R<()> {
        let s = self.shape(ins[0])?;
        let ws = self.shape(ins[1])?;
        if self.dt(ins[0])? != DT::F32 {
            return Err("only f32".into());
        }
        let group = attr_i(n, "group", 1) as usize;
        let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
            .map(|k| k.iter().map(|&v| v as usize).collect())
            .unwrap_or_else(|| ws[2..].to_vec());
        let (strides, dil, pads, osp, _) = self.window(n, &s, &kernel, false)?;
        let m = ws[0];
        if s[1] != ws[1] * group || m % group != 0 {
            return Err(format!(
                "channels {} do not match weight {ws:?} with group {group}",
                s[1]
            ));
        }
        self.conv_dispatch(
            n,
            "conv2d_f32_direct",
            ins,
            out,
            &s,
            m,
            group,
            &kernel,
            &strides,
            &dil,
            &pads,
            &osp,
        )
    }

    /// The dispatch shared by Conv and ConvTranspose: an [N, M, OH, OW] output of a 1-D or
    /// 2-D window over [N, C, H, W] (1-D runs with H = 1).
    #[allow(clippy::too_many_arguments)]
    fn conv_dispatch(
        &mut self,
        n: &NodeInfo,
        kernel_name: &str,
        ins: &[&str],
        out: &str,
        s: &[usize],
        m: usize,
        group: usize,
        kernel: &[usize],
        strides: &[usize],
        dil: &[usize],
        pads: &[usize],
        osp: &[usize],
    ) -> R<()> {
        let sp = s.len() - 2;
        let mut oshape = vec![s[0], m];
        oshape.extend(osp);
        self.new_tensor(out, oshape.clone(), DT::F32)?;
        let (h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow) = if sp == 1 {
            (
                1, s[2], 1, kernel[0], 1, strides[0], 1, dil[0], 0, pads[0], 1, osp[0],
            )
        } else {
            (
                s[2], s[3], kernel[0], kernel[1], strides[0], strides[1], dil[0], dil[1], pads[0],
                pads[1], osp[0], osp[1],
            )
        };
        let total = numel(&oshape);
        let has_bias = ins.get(2).is_some_and(|b| !b.is_empty());
        let p = P::default()
            .u(s[0])
            .u(s[1])
            .u(h)
            .u(w)
            .u(m)
            .u(oh)
            .u(ow)
            .u(group)
            .u(kh)
            .u(kw)
            .u(sh)
            .u(sw)
            .u(dh)
            .u(dw)
            .u(ph)
            .u(pw)
            .u(has_bias as usize)
            .u(total)
            .done();
        let bias = if has_bias {
            self.bind(ins[2])
        } else {
            Binding::Dummy
        };
        if total > 0 {
            self.dispatch(
                n,
                kernel_name.into(),
                vec![self.bind(ins[0]), self.bind(ins[1]), bias, self.bind(out)],
                p,
                groups_1d(total, 256),
            );
        }
        Ok(())
    }

    fn conv_transpose(&mut self, n: &NodeInfo, ins: &[&str], out: &str) -> R<()> {
        let s = self.shape(ins[0])?;
        let ws = self.shape(ins[1])?;
        if self.dt(ins[0])? != DT::F32 || !(s.len() == 3 || s.len() == 4) {
            return Err("only f32 1-D and 2-D".into());
        }
        let sp = s.len() - 2;
        let group = attr_i(n, "group", 1) as usize;
        let m = ws[1] * group;
        let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
            .map(|k| k.iter().map(|&v| v as usize).collect())
            .unwrap_or_else(|| ws[2..].to_vec());
        let strides: Vec<usize> = attr_ints(n, "strides")
            .unwrap_or(vec![1; sp])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let dil: Vec<usize> = attr_ints(n, "dilations")
            .unwrap_or(vec![1; sp])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let out_pad: Vec<usize> = attr_ints(n, "output_padding")
            .unwrap_or(vec![0; sp])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let mut pads: Vec<usize> = attr_ints(n, "pads")
            .unwrap_or(vec![0; 2 * sp])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let auto = attr_s(n, "auto_pad", "NOTSET");
        let mut osp = vec![0usize; sp];
        for d in 0..sp {
            let full = (s[2 + d] - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1 + out_pad[d];
            if let Some(os) = attr_ints(n, "output_shape") {
                let target = os[os.len() - sp + d] as usize;
                let total = full.saturating_sub(target);
                let (lo, hi) = if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                pads[d] = lo;
                pads[d + sp] = hi;
                osp[d] = target;
            } else if auto == "SAME_UPPER" || auto == "SAME_LOWER" {
                let target = s[2 + d] * strides[d];
                let total = full.saturating_sub(target);
                let (lo, hi) = if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                };
                pads[d] = lo;
                pads[d + sp] = hi;
                osp[d] = target;
            } else {
                osp[d] = full
                    .checked_sub(pads[d] + pads[d + sp])
                    .ok_or("pads larger than the output")?;
            }
        }
        self.conv_dispatch(
            n,
            "conv_transpose2d_f32_direct",
            ins,
            out,
            &s,
            m,
            group,
            &kernel,
            &strides,
            &dil,
            &pads,
            &osp,
        )
    }

    fn lstm(&mut self, n: &NodeInfo, ins: &[&str]) -> R<()> {
        let xs = self.shape(ins[0])?;
        let ws = self.shape(ins[1])?;
        if attr_i(n, "layout", 0) != 0
            || n.attributes.contains_key("clip")
            || n.attributes.contains_key("activations")
            || attr_i(n, "input_forget", 0) != 0
        {
            return Err(
                "layout 1, clip, custom activations and input_forget are not supported".into(),
            );
        }
        if ins.get(4).is_some_and(|s| !s.is_empty()) || ins.get(7).is_some_and(|s| !s.is_empty()) {
            return Err("sequence_lens and peepholes are not supported".into());
        }
        let dirs = ws[0];
        let hidden = attr_i(n, "hidden_size", (ws[1] / 4) as i64) as usize;
        if hidden > 256 || xs.len() != 3 {
            return Err(format!(
                "hidden size {hidden} over 256 or input not [T, B, I]"
            ));
        }
        let (t, b, i) = (xs[0], xs[1], xs[2]);
        let reverse = attr_s(n, "direction", "forward") == "reverse";
        let opt = |k: usize| ins.get(k).filter(|s| !s.is_empty()).copied();
        let name = |k: usize, tag: &str| {
            n.outputs
                .get(k)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| format!("{}::{tag}", n.label()))
        };
        let y = name(0, "y");
        self.new_tensor(&y, vec![t, dirs, b, hidden], DT::F32)?;
        let state = format!("{}::state", n.label());
        self.new_tensor(&state, vec![2, dirs, b, hidden], DT::F32)?;
        let bind_opt = |ctx: &Ctx, k: usize| opt(k).map(|s| ctx.bind(s)).unwrap_or(Binding::Dummy);
        let p = P::default()
            .u(t)
            .u(b)
            .u(i)
            .u(hidden)
            .u(dirs)
            .u(opt(3).is_some() as usize)
            .u(opt(5).is_some() as usize)
            .u(opt(6).is_some() as usize)
            .u(reverse as usize)
            .done();
        let bindings = vec![
            self.bind(ins[0]),
            self.bind(ins[1]),
            self.bind(ins[2]),
            bind_opt(self, 3),
            bind_opt(self, 5),
            bind_opt(self, 6),
            self.bind(&y),
            self.bind(&state),
        ];
        self.dispatch(n, "lstm_f32".into(), bindings, p, [(dirs * b) as u32, 1, 1]);
        for (k, tag) in [(1usize, "h"), (2, "c")] {
            if let Some(o) = n.outputs.get(k).filter(|s| !s.is_empty()) {
                let o = o.clone();
                self.new_tensor(&o, vec![dirs, b, hidden], DT::F32)?;
                let len = dirs * b * hidden;
                let _ = tag;
                self.copy(n, &state, &o, &[len], ((k - 1) * len) as i64, &[1], 0, &[1])?;
            }
        }
        Ok(())
    }

    fn pool(&mut self, n: &NodeInfo, x: &str, out: &str) -> R<()> {
        let s = self.shape(x)?;
        if n.outputs.len() > 1 && !n.outputs[1].is_empty() {
            return Err("MaxPool indices output is not supported".into());
        }
        if self.dt(x)? != DT::F32 {
            return Err("only f32".into());
        }
        let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
            .ok_or("kernel_shape")?
            .iter()
            .map(|&v| v as usize)
            .collect();
        let ceil_mode = attr_i(n, "ceil_mode", 0) != 0;
        let (strides, dil, pads, osp, _) = self.window(n, &s, &kernel, ceil_mode)?;
        let sp = s.len() - 2;
        let mut oshape = vec![s[0], s[1]];
        oshape.extend(&osp);
        self.new_tensor(out, oshape.clone(), DT::F32)?;
        let (h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, peh, pew) = if sp == 1 {
            (
                1, s[2], 1, kernel[0], 1, strides[0], 1, dil[0], 0, pads[0], 1, osp[0], 0, pads[1],
            )
        } else {
            (
                s[2], s[3], kernel[0], kernel[1], strides[0], strides[1], dil[0], dil[1], pads[0],
                pads[1], osp[0], osp[1], pads[2], pads[3],
            )
        };
        let include_pad = attr_i(n, "count_include_pad", 0) as usize;
        let p_norm = attr_i(n, "p", 2) as f32;
        let kernel_name = match n.op_type.as_str() {
            "MaxPool" => "max_pool_f32",
            "AveragePool" => "avg_pool_f32",
            _ => "lp_pool_f32",
        };
        let total = numel(&oshape);
        let p = P::default()
            .u(s[0] * s[1])
            .u(h)
            .u(w)
            .u(oh)
            .u(ow)
            .u(kh)
            .u(kw)
            .u(sh)
            .u(sw)
            .u(dh)
            .u(dw)
            .u(ph)
            .u(pw)
            .u(include_pad)
            .u(total)
            .u(peh)
            .u(pew)
            .f(p_norm)
            .done();
        if total > 0 {
            self.dispatch(
                n,
                kernel_name.into(),
                vec![self.bind(x), self.bind(out)],
                p,
                groups_1d(total, 256),
            );
        }
        Ok(())
    }
}

/// Ops `lower_node` knows (some attributes or dtypes may still be rejected there). Used to
/// report nodes that sit downstream of an earlier rejection, whose shapes are unknown.
pub fn is_known_op(op: &str) -> bool {
    const KNOWN: &[&str] = &[
        "Abs",
        "Neg",
        "Relu",
        "Sigmoid",
        "Tanh",
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Erf",
        "Sign",
        "Softplus",
        "Softsign",
        "Elu",
        "Selu",
        "Celu",
        "LeakyRelu",
        "ThresholdedRelu",
        "HardSigmoid",
        "HardSwish",
        "Mish",
        "Gelu",
        "IsNaN",
        "IsInf",
        "Not",
        "Identity",
        "Dropout",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Equal",
        "Greater",
        "GreaterOrEqual",
        "Less",
        "LessOrEqual",
        "And",
        "Or",
        "Xor",
        "PRelu",
        "Where",
        "Clip",
        "Cast",
        "CastLike",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Slice",
        "Expand",
        "Concat",
        "Split",
        "Pad",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
        "Gather",
        "MatMul",
        "Gemm",
        "Softmax",
        "LogSoftmax",
        "Hardmax",
        "LayerNormalization",
        "RMSNormalization",
        "BatchNormalization",
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ArgMax",
        "ArgMin",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Conv",
        "MaxPool",
        "AveragePool",
        "LpPool",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Range",
        "GatherND",
        "Resize",
        "Upsample",
        "ConvTranspose",
        "LSTM",
    ];
    KNOWN.contains(&op)
}

/// Input slots whose values decide output shapes (they must be constants at plan time).
pub fn shape_inputs(op: &str) -> &'static [usize] {
    match op {
        "Reshape" | "Expand" | "Tile" | "Split" | "Squeeze" | "Unsqueeze" | "TopK" | "OneHot"
        | "CenterCropPad" => &[1],
        "Slice" => &[1, 2, 3, 4],
        "Pad" => &[1, 3],
        "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => &[1],
        "ConstantOfShape" => &[0],
        "Range" => &[0, 1, 2],
        "Resize" | "Upsample" => &[1, 2, 3],
        _ => &[],
    }
}

/// ONNX dtype code to our storage type.
pub fn onnx_dt(code: i32) -> R<DT> {
    Ok(match code {
        1 => DT::F32,
        2 | 3 | 4 | 5 | 6 | 7 | 12 | 13 => DT::I32,
        9 => DT::Bool,
        other => {
            return Err(format!(
                "dtype {} is not supported (f32, integers and bool are)",
                m2w_model::DType::from_onnx(other)
            ));
        }
    })
}
