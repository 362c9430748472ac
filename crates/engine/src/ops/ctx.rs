//! The lowering context every op module writes into: the plan being built, tensor lookup,
//! constants (host values known at plan time), views, and the dispatch helpers shared by
//! many ops (element-wise over broadcast inputs, strided copy, fill). Also the small
//! geometry helpers (strides, broadcasting, axes) and typed attribute access.

use std::collections::BTreeMap;

use m2w_model::{AttrValue, DType, NodeInfo};

use m2w_kernels::{Kernel, params};

use crate::plan::{Binding, Dispatch, Plan, TensorDesc, groups_1d, groups_1d_sym};
use crate::sym::{self, Bindings, Expr};
use crate::tensor::{DT, HostTensor, numel};

pub(crate) type R<T> = Result<T, String>;

pub(crate) const MAX_RANK: usize = 8;
pub struct Ctx {
    pub plan: Plan,
    pub(crate) opset: i64,
    /// The element type the graph declares for tensors m2w stores as i32 (int8, uint8,
    /// int16...), where an op's result depends on it: QuantizeLinear saturates to its
    /// zero point's type.
    declared: BTreeMap<String, DType>,
    /// Folded f32 constants known to be `(q - zero_point) * scale` of an 8-bit constant:
    /// kernels that read weights (MatMul's B, Gather's table) bind the bytes instead, so
    /// the weight stays as small as the model stores it.
    pub(crate) dequantized: BTreeMap<String, Dequantized>,
    /// Control-flow subgraphs by scope (If branches), lowered inline when taken.
    pub(crate) subgraphs: BTreeMap<String, Subgraph>,
    /// The branches being lowered, outermost first (scope, local names): a nested
    /// branch reads its enclosing branches' locals by their renamed names.
    pub(crate) open_branches: Vec<(String, std::collections::HashSet<String>)>,
    /// Every dim of the plan at its declared maximum: symbolic words are also written
    /// as their values there, and choices made on sizes are made there.
    pub(crate) maxima: Bindings,
    /// Every dim's smallest value (input dims are at least 1; value dims at their `min`).
    pub(crate) minima: Bindings,
    /// Shape values: small integer tensors whose values hold dims (see `symbolic`).
    pub(crate) sym_values: BTreeMap<String, super::symbolic::SymInts>,
    /// Largest values of tensors that decide sizes at run time (by tensor name).
    pub value_max: BTreeMap<String, usize>,
    /// Multiply-adds per thread in one dispatch of a recurrent kernel (see `rnn_chunks`);
    /// tests lower it to cut every sequence into one-step chunks.
    pub(crate) rnn_chunk_work: usize,
    /// The graph's outputs: a Concat(input, new) that is one is appended in place.
    pub(crate) graph_outputs: std::collections::HashSet<String>,
}

/// One subgraph: its nodes, its outputs, and the names local to it (its initializers and
/// node outputs), which are renamed `scope::name` when lowered so that branches never
/// collide with the outer graph or each other.
#[derive(Clone, Debug, Default)]
pub struct Subgraph {
    pub nodes: Vec<NodeInfo>,
    pub outputs: Vec<String>,
    pub locals: std::collections::HashSet<String>,
}

/// How a folded constant was dequantized (all names of plan constants). `scale` and
/// `zero_point` broadcast against `q` (numpy rules); absent means 1 and 0.
#[derive(Clone, Debug)]
pub(crate) struct Dequantized {
    pub q: String,
    pub signed: bool,
    pub scale: Option<String>,
    pub zero_point: Option<String>,
}

/// The kernel variant `<family>_<op>_<dt>` (`ew_add_f32`, `reduce_max_i32`,
/// `ew_cast_f32_i32` as op `cast` on `f32_i32`; no `_<dt>` when `dt` is empty, as in
/// `pad_reflect`) for kernels chosen by op and dtype. No such variant refuses the node.
pub(crate) fn kernel_for(family: &str, op: &str, dt: &str) -> R<Kernel> {
    let name = if dt.is_empty() {
        format!("{family}_{op}")
    } else {
        format!("{family}_{op}_{dt}")
    };
    Kernel::by_name(&name).ok_or_else(|| {
        let on = if dt.is_empty() { "any dtype" } else { dt };
        format!("no kernel for {family} {op} on {on}")
    })
}

/// Up to [`MAX_RANK`] values as an `array<vec4<u32>, 2>` uniform field, zero-padded
/// (each value keeps its low 32 bits).
pub(crate) fn vec8_u32(v: &[i64]) -> [[u32; 4]; 2] {
    let mut a = [[0u32; 4]; 2];
    for (k, &x) in v.iter().take(MAX_RANK).enumerate() {
        a[k / 4][k % 4] = x as i32 as u32;
    }
    a
}

/// Up to [`MAX_RANK`] values as an `array<vec4<i32>, 2>` uniform field, zero-padded.
pub(crate) fn vec8_i32(v: &[i64]) -> [[i32; 4]; 2] {
    let mut a = [[0i32; 4]; 2];
    for (k, &x) in v.iter().take(MAX_RANK).enumerate() {
        a[k / 4][k % 4] = x as i32;
    }
    a
}

/// Up to [`MAX_RANK`] dims as an `array<vec4<u32>, 2>` uniform field, zero-padded.
pub(crate) fn dims8(v: &[usize]) -> [[u32; 4]; 2] {
    let mut a = [[0u32; 4]; 2];
    for (k, &x) in v.iter().take(MAX_RANK).enumerate() {
        a[k / 4][k % 4] = x as u32;
    }
    a
}

/// Up to [`MAX_RANK`] expressions as an `array<vec4<_>, 2>` uniform field, zero-padded.
pub(crate) fn vec8_sym(v: &[Expr]) -> [[Expr; 4]; 2] {
    let mut a: [[Expr; 4]; 2] = Default::default();
    for (k, x) in v.iter().take(MAX_RANK).enumerate() {
        a[k / 4][k % 4] = x.clone();
    }
    a
}

/// Contiguous element strides of a symbolic shape.
pub(crate) fn contiguous_strides_sym(shape: &[Expr]) -> Vec<Expr> {
    let mut s = vec![Expr::Const(0); shape.len()];
    let mut acc = Expr::Const(1);
    for d in (0..shape.len()).rev() {
        s[d] = acc.clone();
        acc = acc * shape[d].clone();
    }
    s
}

/// numpy broadcasting of symbolic shapes: equal dims, or one of them the constant 1.
/// Two different dims that are not both constants do not broadcast at plan time.
pub(crate) fn broadcast_sym(shapes: &[&[Expr]]) -> R<Vec<Expr>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![Expr::Const(1); rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == Expr::Const(1) {
                *o = d.clone();
            } else if *d != Expr::Const(1) && d != o {
                let all: Vec<String> = shapes.iter().map(|s| sym::show(s)).collect();
                return Err(format!("shapes {} do not broadcast", all.join(", ")));
            }
        }
    }
    Ok(out)
}

/// Element strides of `shape` broadcast to `out` (0 on broadcast dims).
pub(crate) fn broadcast_strides_sym(shape: &[Expr], out: &[Expr]) -> Vec<Expr> {
    let off = out.len() - shape.len();
    let cs = contiguous_strides_sym(shape);
    let mut s = vec![Expr::Const(0); out.len()];
    for (i, d) in shape.iter().enumerate() {
        if *d != Expr::Const(1) {
            s[off + i] = cs[i].clone();
        }
    }
    s
}

pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
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
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<i64> {
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

pub(crate) fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

pub(crate) fn attr_i(n: &NodeInfo, k: &str, d: i64) -> i64 {
    match n.attributes.get(k) {
        Some(AttrValue::Int(v)) => *v,
        _ => d,
    }
}
pub(crate) fn attr_f(n: &NodeInfo, k: &str, d: f32) -> f32 {
    match n.attributes.get(k) {
        Some(AttrValue::Float(v)) => *v,
        _ => d,
    }
}
pub(crate) fn attr_ints(n: &NodeInfo, k: &str) -> Option<Vec<i64>> {
    match n.attributes.get(k) {
        Some(AttrValue::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}
pub(crate) fn attr_s(n: &NodeInfo, k: &str, d: &str) -> String {
    match n.attributes.get(k) {
        Some(AttrValue::String(v)) => v.clone(),
        _ => d.to_string(),
    }
}

impl Ctx {
    pub fn new(opset: i64) -> Ctx {
        Ctx {
            plan: Plan::default(),
            opset,
            declared: BTreeMap::new(),
            dequantized: BTreeMap::new(),
            subgraphs: BTreeMap::new(),
            open_branches: Vec::new(),
            maxima: Bindings::new(),
            minima: Bindings::new(),
            sym_values: BTreeMap::new(),
            value_max: BTreeMap::new(),
            rnn_chunk_work: 16384,
            graph_outputs: Default::default(),
        }
    }

    /// numpy broadcasting where two sizes that differ as expressions (but agree at the
    /// dims' maxima) are taken to be equal, recorded as a constraint the runner checks
    /// when dims are bound: `floor((H - 1) / 32) + 1` and `2 * (floor((H - 1) / 64) + 1)`
    /// agree for the image sizes a detector takes.
    pub(crate) fn broadcast_assuming(&mut self, n: &NodeInfo, shapes: &[&[Expr]]) -> R<Vec<Expr>> {
        let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut out = vec![Expr::Const(1); rank];
        let one = Expr::Const(1);
        for s in shapes {
            let off = rank - s.len();
            for (i, d) in s.iter().enumerate() {
                let o = &mut out[off + i];
                if *o == one {
                    *o = d.clone();
                } else if *d != one && d != o {
                    if d.as_const() == Some(1) || !self.assume_equal(n, o, d) {
                        let all: Vec<String> = shapes.iter().map(|s| sym::show(s)).collect();
                        return Err(format!("shapes {} do not broadcast", all.join(", ")));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Takes two sizes a node needs equal to be equal: true when they are, or when they
    /// differ as expressions but agree at the dims' maxima (recorded as a constraint the
    /// runner checks when dims are bound); false when they cannot be (two different
    /// constants, or different values at the maxima).
    pub(crate) fn assume_equal(&mut self, n: &NodeInfo, a: &Expr, b: &Expr) -> bool {
        if a == b {
            return true;
        }
        let both_fixed = a.as_const().is_some() && b.as_const().is_some();
        let agree_at_max = a.eval(&self.maxima).ok() == b.eval(&self.maxima).ok();
        // Values read at run time have no joint maximum to agree at: checked when bound.
        let read_at_run_time = a
            .symbols()
            .iter()
            .chain(b.symbols().iter())
            .any(|s| self.plan.dims.iter().any(|d| d.name == *s && d.at_sync));
        if both_fixed || !(agree_at_max || read_at_run_time) {
            return false;
        }
        let known = self
            .plan
            .constraints
            .iter()
            .any(|c| (c.a == *a && c.b == *b) || (c.a == *b && c.b == *a));
        if !known {
            self.plan.constraints.push(crate::plan::Constraint {
                a: a.clone(),
                b: b.clone(),
                node: n.label(),
            });
        }
        true
    }

    /// Declares a dim of the plan and its maximum.
    pub fn add_dim(&mut self, name: &str, max: usize) {
        self.maxima.insert(name.into(), max as i64);
        self.minima.insert(name.into(), 1);
        self.plan.dims.push(crate::plan::DimDecl {
            name: name.into(),
            max,
            min: 1,
            value_of: None,
            at_sync: false,
        });
    }

    /// Lets an input dim be 0 (a KV cache before the first token).
    pub fn allow_empty(&mut self, name: &str) {
        self.minima.insert(name.into(), 0);
        for d in self.plan.dims.iter_mut().filter(|d| d.name == name) {
            d.min = 0;
        }
    }

    /// Makes a subgraph available to control-flow lowerings.
    pub fn add_subgraph(&mut self, scope: &str, sub: Subgraph) {
        self.subgraphs.insert(scope.into(), sub);
    }

    /// A folded DequantizeLinear of an 8-bit constant, per tensor or per axis: its 1-D
    /// per-axis parameters are viewed [1, .., len, .., 1] so that they broadcast.
    fn dequantize_linear_origin(
        &mut self,
        n: &NodeInfo,
        x: &str,
        out: &str,
    ) -> Option<Dequantized> {
        let signed = match self.declared(x) {
            Some(DType::I8) => true,
            Some(DType::U8) => false,
            _ => return None,
        };
        let rank = self.shape(x).ok()?.len();
        let axis = attr_i(n, "axis", 1).rem_euclid(rank.max(1) as i64) as usize;
        let view = |cx: &mut Ctx, p: &str| -> Option<String> {
            let count: usize = cx.shape(p).ok()?.iter().product();
            if count == 1 || rank == 0 {
                return Some(p.to_string());
            }
            let mut shape = vec![1; rank];
            shape[axis] = count;
            let name = format!("{out}::{p}::axis_view");
            cx.view(&name, p, shape).ok()?;
            Some(name)
        };
        let scale = view(self, n.inputs.get(1)?)?;
        let zero_point = match n.inputs.get(2).filter(|z| !z.is_empty()) {
            Some(z) => Some(view(self, z)?),
            None => None,
        };
        Some(Dequantized {
            q: x.to_string(),
            signed,
            scale: Some(scale),
            zero_point,
        })
    }

    /// Records what a just-folded node computed when it is a step of dequantizing an 8-bit
    /// weight: Cast(q) to float, then Sub(zero point) and Mul(scale) by constants, or
    /// DequantizeLinear per tensor or along the last axis.
    pub(crate) fn track_dequantized(&mut self, n: &NodeInfo) {
        let (Some(out), Some(x)) = (n.outputs.first(), n.inputs.first()) else {
            return;
        };
        let eight_bit = |cx: &Ctx, t: &str| match cx.declared(t) {
            Some(DType::I8) => Some(true),
            Some(DType::U8) => Some(false),
            _ => None,
        };
        let other = n.inputs.get(1).filter(|s| !s.is_empty()).cloned();
        let found = match n.op_type.as_str() {
            "Cast" if attr_i(n, "to", 1) == 1 => eight_bit(self, x).map(|signed| Dequantized {
                q: x.clone(),
                signed,
                scale: None,
                zero_point: None,
            }),
            "Sub" => self
                .dequantized
                .get(x)
                .filter(|d| d.scale.is_none() && d.zero_point.is_none())
                .map(|d| Dequantized {
                    zero_point: other.clone(),
                    ..d.clone()
                }),
            "Mul" => {
                let y = other.clone().unwrap_or_default();
                let (d, s) = match (self.dequantized.get(x), self.dequantized.get(&y)) {
                    (Some(d), None) => (d, y),
                    (None, Some(d)) => (d, x.clone()),
                    _ => return,
                };
                (d.scale.is_none() && self.dt(&s).ok() == Some(DT::F32)).then(|| Dequantized {
                    scale: Some(s),
                    ..d.clone()
                })
            }
            "DequantizeLinear" if attr_i(n, "block_size", 0) == 0 => {
                self.dequantize_linear_origin(n, x, out)
            }
            _ => None,
        };
        if let Some(d) = found {
            self.dequantized.insert(out.clone(), d);
        }
    }

    /// Records the element type the graph declares for `name` (see [`Ctx::declared`]).
    pub fn declare(&mut self, name: &str, dtype: DType) {
        self.declared.insert(name.into(), dtype);
    }

    /// The element type the graph declares for `name`, when known.
    pub(crate) fn declared(&self, name: &str) -> Option<DType> {
        self.declared.get(name).copied()
    }

    pub fn add_input(&mut self, name: &str, shape: Vec<usize>, dt: DT) {
        self.add_input_sym(name, sym::fixed(&shape), dt)
    }

    /// An input whose dims may be named dims of the plan.
    pub fn add_input_sym(&mut self, name: &str, shape: Vec<Expr>, dt: DT) {
        self.plan
            .tensors
            .insert(name.into(), TensorDesc::row_major(shape, dt, name.into()));
        self.plan.inputs.push(name.into());
    }

    pub fn add_const(&mut self, name: &str, t: HostTensor) {
        self.plan.tensors.insert(
            name.into(),
            TensorDesc::row_major(sym::fixed(&t.shape), t.dt(), name.into()),
        );
        self.plan.constants.insert(name.into(), t);
    }

    pub(crate) fn desc(&self, name: &str) -> R<&TensorDesc> {
        self.plan
            .tensors
            .get(name)
            .ok_or_else(|| format!("input '{name}' is unknown"))
    }

    /// The shape of a tensor whose sizes are known at plan time. A lowering that has
    /// not moved to symbolic sizes reads shapes this way, so a symbolic one refuses the
    /// node with a reason instead of computing wrong.
    pub(crate) fn shape(&self, name: &str) -> R<Vec<usize>> {
        let d = self.desc(name)?;
        d.fixed_shape().ok_or_else(|| {
            format!(
                "'{name}' has symbolic shape {}; this op needs sizes known at plan time (docs/DYNAMIC_SHAPES.md)",
                sym::show(&d.shape)
            )
        })
    }

    /// The shape, symbolic or not.
    pub(crate) fn sym_shape(&self, name: &str) -> R<Vec<Expr>> {
        Ok(self.desc(name)?.shape.clone())
    }

    /// The value of a size at the dims' maxima (where choices on sizes are made).
    pub(crate) fn at_max(&self, e: &Expr) -> usize {
        e.eval(&self.maxima)
            .expect("every dim of the plan is declared")
            .max(0) as usize
    }

    pub(crate) fn dt(&self, name: &str) -> R<DT> {
        Ok(self.desc(name)?.dt)
    }

    /// The host value of a constant tensor (or a view of one), unpacked.
    pub fn konst(&self, name: &str) -> Option<HostTensor> {
        let d = self.plan.tensors.get(name)?;
        let c = self
            .plan
            .constants
            .get(name)
            .or_else(|| self.plan.constants.get(&d.base))?;
        Some(c.unpacked().reshaped(d.fixed_shape()?))
    }

    pub(crate) fn const_ints(&self, n: &NodeInfo, i: usize) -> R<Option<Vec<i64>>> {
        match n.inputs.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => self.konst(name).map(|t| Some(t.as_i64())).ok_or_else(|| {
                format!("input {i} ('{name}') must be a constant (it decides a shape)")
            }),
        }
    }

    pub(crate) fn new_tensor(&mut self, name: &str, shape: Vec<usize>, dt: DT) -> R<()> {
        self.new_tensor_sym(name, sym::fixed(&shape), dt)
    }

    pub(crate) fn new_tensor_sym(&mut self, name: &str, shape: Vec<Expr>, dt: DT) -> R<()> {
        let shape: Vec<Expr> = shape
            .iter()
            .map(|d| d.simplify_in(&self.minima, &self.maxima))
            .collect();
        if shape.len() > MAX_RANK {
            return Err(format!("rank {} exceeds {MAX_RANK}", shape.len()));
        }
        self.plan
            .tensors
            .insert(name.into(), TensorDesc::row_major(shape, dt, name.into()));
        Ok(())
    }

    pub(crate) fn view(&mut self, out: &str, of: &str, shape: Vec<usize>) -> R<()> {
        self.view_sym(out, of, sym::fixed(&shape))
    }

    /// `out` as a view of `of` with another shape of as many elements.
    pub(crate) fn view_sym(&mut self, out: &str, of: &str, shape: Vec<Expr>) -> R<()> {
        let shape: Vec<Expr> = shape
            .iter()
            .map(|d| d.simplify_in(&self.minima, &self.maxima))
            .collect();
        let d = self.desc(of)?.clone();
        if sym::numel(&shape) != sym::numel(&d.shape) {
            return Err(format!(
                "cannot view {} as {}",
                sym::show(&d.shape),
                sym::show(&shape)
            ));
        }
        // A strided view (an in-place cache) stays one when only unit dims come or go.
        let strides = match &d.strides {
            None => None,
            Some(s) => Some(
                super::strided::unit_dims_moved(&d.shape, s, &shape).ok_or_else(|| {
                    format!(
                        "cannot view {} (strided) as {}",
                        sym::show(&d.shape),
                        sym::show(&shape)
                    )
                })?,
            ),
        };
        let mut desc = TensorDesc::row_major(shape, d.dt, d.base);
        desc.strides = strides;
        self.plan.tensors.insert(out.into(), desc);
        Ok(())
    }

    pub(crate) fn dispatch(
        &mut self,
        n: &NodeInfo,
        kernel: Kernel,
        bindings: Vec<Binding>,
        params: Vec<u32>,
        workgroups: [u32; 3],
    ) {
        debug_assert_eq!(params.len(), kernel.params_words(), "{kernel}");
        self.plan.dispatches.push(Dispatch {
            node: n.label(),
            op_type: n.op_type.clone(),
            kernel,
            bindings,
            params,
            workgroups,
            sym_params: vec![],
            sym_workgroups: None,
        });
    }

    /// A dispatch whose uniform words and workgroup counts may depend on dims: stored as
    /// their values at the maxima plus the expressions of those that vary.
    pub(crate) fn dispatch_sym(
        &mut self,
        n: &NodeInfo,
        kernel: Kernel,
        bindings: Vec<Binding>,
        params: Vec<Expr>,
        workgroups: [Expr; 3],
    ) {
        debug_assert_eq!(params.len(), kernel.params_words(), "{kernel}");
        let params: Vec<Expr> = params
            .iter()
            .map(|e| e.simplify_in(&self.minima, &self.maxima))
            .collect();
        let workgroups = workgroups.map(|e| e.simplify_in(&self.minima, &self.maxima));
        let word = |e: &Expr| e.word(&self.maxima).expect("every dim is declared");
        let sym_params: Vec<(usize, Expr)> = params
            .iter()
            .enumerate()
            .filter(|(_, e)| e.as_const().is_none())
            .map(|(i, e)| (i, e.clone()))
            .collect();
        let fixed = workgroups.iter().all(|g| g.as_const().is_some());
        self.plan.dispatches.push(Dispatch {
            node: n.label(),
            op_type: n.op_type.clone(),
            kernel,
            bindings,
            params: params.iter().map(word).collect(),
            workgroups: [
                word(&workgroups[0]),
                word(&workgroups[1]),
                word(&workgroups[2]),
            ],
            sym_params,
            sym_workgroups: (!fixed).then_some(workgroups),
        });
    }

    pub(crate) fn bind(&self, name: &str) -> Binding {
        Binding::Tensor(name.into())
    }

    /// An element-wise dispatch over up to three broadcast inputs.
    pub(crate) fn elementwise(
        &mut self,
        n: &NodeInfo,
        kernel: Kernel,
        ins: &[&str],
        out: &str,
        out_dt: DT,
        p0: f32,
        p1: f32,
    ) -> R<()> {
        let shapes: Vec<Vec<Expr>> = ins.iter().map(|i| self.sym_shape(i)).collect::<R<_>>()?;
        let refs: Vec<&[Expr]> = shapes.iter().map(|s| s.as_slice()).collect();
        let oshape = self.broadcast_assuming(n, &refs)?;
        if oshape.len() > MAX_RANK {
            return Err(format!("rank {} exceeds {MAX_RANK}", oshape.len()));
        }
        self.new_tensor_sym(out, oshape.clone(), out_dt)?;
        let total = sym::numel(&oshape);
        let strides = |k: usize| {
            shapes
                .get(k)
                .map(|s| broadcast_strides_sym(s, &oshape))
                .unwrap_or_default()
        };
        let params = params::Elementwise::<Expr> {
            n: total.clone(),
            rank: Expr::from(oshape.len()),
            p0,
            p1,
            shape: vec8_sym(&oshape),
            a_strides: vec8_sym(&strides(0)),
            b_strides: vec8_sym(&strides(1)),
            c_strides: vec8_sym(&strides(2)),
        }
        .slots();
        let mut bindings: Vec<Binding> = ins.iter().map(|i| self.bind(i)).collect();
        while bindings.len() < 3 {
            bindings.push(Binding::Dummy);
        }
        bindings.push(self.bind(out));
        if total != Expr::Const(0) {
            let groups = groups_1d_sym(&total, 256);
            self.dispatch_sym(n, kernel, bindings, params, groups);
        }
        Ok(())
    }

    /// [`Ctx::copy`] over a symbolic shape with symbolic offsets and strides.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_sym(
        &mut self,
        n: &NodeInfo,
        src: &str,
        dst: &str,
        shape: &[Expr],
        src_off: Expr,
        src_strides: &[Expr],
        dst_off: Expr,
        dst_strides: &[Expr],
    ) -> R<()> {
        let total = sym::numel(shape);
        if total == Expr::Const(0) {
            return Ok(());
        }
        if shape.len() > MAX_RANK {
            return Err(format!("rank {} exceeds {MAX_RANK}", shape.len()));
        }
        let params = params::CopyStrided::<Expr, Expr> {
            n: total.clone(),
            rank: Expr::from(shape.len()),
            src_offset: src_off,
            dst_offset: dst_off,
            shape: vec8_sym(shape),
            src_strides: vec8_sym(src_strides),
            dst_strides: vec8_sym(dst_strides),
        }
        .slots();
        let groups = groups_1d_sym(&total, 256);
        self.dispatch_sym(
            n,
            Kernel::CopyStrided,
            vec![self.bind(src), self.bind(dst)],
            params,
            groups,
        );
        Ok(())
    }

    /// dst[dst_off + c.dst_strides] = src[src_off + c.src_strides] over `shape`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy(
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
        let params = params::CopyStrided {
            n: total as u32,
            rank: shape.len() as u32,
            src_offset: src_off as i32,
            dst_offset: dst_off as i32,
            shape: dims8(shape),
            src_strides: vec8_i32(src_strides),
            dst_strides: vec8_i32(dst_strides),
        }
        .words();
        self.dispatch(
            n,
            Kernel::CopyStrided,
            vec![self.bind(src), self.bind(dst)],
            params,
            groups_1d(total, 256),
        );
        Ok(())
    }

    /// `dst` = `src` with its axes permuted (`dst` axis d is `src` axis `perm[d]`).
    pub(crate) fn permute(&mut self, n: &NodeInfo, src: &str, dst: &str, perm: &[usize]) -> R<()> {
        let s = self.sym_shape(src)?;
        let strides = contiguous_strides_sym(&s);
        let shape: Vec<Expr> = perm.iter().map(|&p| s[p].clone()).collect();
        let src_strides: Vec<Expr> = perm.iter().map(|&p| strides[p].clone()).collect();
        self.new_tensor_sym(dst, shape.clone(), self.dt(src)?)?;
        self.copy_sym(
            n,
            src,
            dst,
            &shape,
            Expr::Const(0),
            &src_strides,
            Expr::Const(0),
            &contiguous_strides_sym(&shape),
        )
    }

    /// [`Ctx::fill`] of a symbolic count.
    pub(crate) fn fill_sym(&mut self, n: &NodeInfo, dst: &str, count: &Expr, bits: u32) {
        if *count != Expr::Const(0) {
            let params = params::Fill::<Expr> {
                n: count.clone(),
                value: Expr::from(bits as i64),
            }
            .slots();
            let groups = groups_1d_sym(count, 256);
            self.dispatch_sym(n, Kernel::Fill, vec![self.bind(dst)], params, groups);
        }
    }

    pub(crate) fn fill(&mut self, n: &NodeInfo, dst: &str, count: usize, bits: u32) {
        if count > 0 {
            let params = params::Fill {
                n: count as u32,
                value: bits,
            }
            .words();
            self.dispatch(
                n,
                Kernel::Fill,
                vec![self.bind(dst)],
                params,
                groups_1d(count, 256),
            );
        }
    }
}

/// A node's input names ("" for an absent optional input).
pub(crate) fn ins(n: &NodeInfo) -> Vec<&str> {
    n.inputs.iter().map(String::as_str).collect()
}

/// A node's first output name.
pub(crate) fn out0(n: &NodeInfo) -> &str {
    n.outputs.first().map(String::as_str).unwrap_or("")
}

/// Input `i` of a host fold.
pub(crate) fn host_input(ins: &[Option<HostTensor>], i: usize) -> R<&HostTensor> {
    ins.get(i)
        .and_then(|t| t.as_ref())
        .ok_or_else(|| format!("missing input {i}"))
}
