//! The execution plan: everything the GPU does, decided ahead of time. Serializable
//! (plan.json); the native runner, the TypeScript generator and the reports consume it.
//!
//! Sizes may be symbolic ([`Expr`] over the plan's [`DimDecl`]s): shapes, uniform words
//! and workgroup counts are then evaluated per run for the bound dims, and buffers are
//! sized for the dims' declared maxima. A plan without dims is static and reads as before
//! (constants serialise as plain numbers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sym::{self, Bindings, Expr};
use crate::tensor::{DT, HostTensor};

/// A tensor of the plan. Views (Reshape, Squeeze, ...) share their base's buffer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorDesc {
    pub shape: Vec<Expr>,
    pub dt: DT,
    /// The tensor whose buffer this one uses (itself for a base tensor).
    pub base: String,
    /// Element strides when the layout is not the shape's row-major order: a KV cache
    /// appended in place keeps its rows at a pitch sized for the whole context (see
    /// `Ctx::append_in_place`). None: row-major.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strides: Option<Vec<i64>>,
    /// Elements a base tensor's buffer holds when views of it reach past its own shape
    /// (the context an in-place cache is sized for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extent: Option<u64>,
}

impl TensorDesc {
    /// The shape when it holds no dim.
    pub fn fixed_shape(&self) -> Option<Vec<usize>> {
        sym::as_fixed(&self.shape)
    }

    /// The shape for bound dims.
    pub fn shape_at(&self, dims: &Bindings) -> Result<Vec<usize>, String> {
        self.shape.iter().map(|d| d.size(dims)).collect()
    }

    /// A row-major tensor of its own buffer (`base` names itself, or the tensor it views).
    pub fn row_major(shape: Vec<Expr>, dt: DT, base: String) -> TensorDesc {
        TensorDesc {
            shape,
            dt,
            base,
            strides: None,
            extent: None,
        }
    }

    /// The buffer element of each element of a `shape` (bound) tensor, in row-major order:
    /// None when it is row-major.
    pub fn element_offsets(&self, shape: &[usize]) -> Option<Vec<usize>> {
        let strides = self.strides.as_ref()?;
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            out.push(idx.iter().zip(strides).map(|(&i, &s)| i * s as usize).sum());
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Some(out)
    }
}

/// Two sizes a node needs equal (a model that adds a feature map to an upsampled one takes
/// only images whose sizes make them agree): checked when dims are bound.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Constraint {
    pub a: Expr,
    pub b: Expr,
    pub node: String,
}

/// A named dim of a symbolic plan and the largest value it may be bound to (buffers are
/// sized for it). Input dims are bound from input shapes; a dim read from a tensor's values
/// (`value_of`) or counted by a host op is bound at its sync point during the run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DimDecl {
    pub name: String,
    pub max: usize,
    /// The smallest value the plan takes for it (sizes 0; a Reshape target 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min: i64,
    /// (tensor, element): a value computed at run time that decides sizes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_of: Option<(String, usize)>,
    /// Bound by a sync point (a value dim, or the count of a host op such as NonZero).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub at_sync: bool,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Where the run stops for the host: before dispatch `at`, `tensor` (small) is read back;
/// its values bind the dims that name it (`Values`), or a host op computes from it
/// (`NonZero`: the indices of its nonzero elements are written to `output`, and their
/// count binds `dim`). The dispatches after it run with the new dims.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SyncPoint {
    pub at: usize,
    pub tensor: String,
    pub kind: SyncKind,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    Values,
    NonZero { output: String, dim: String },
}

/// What a binding slot of a dispatch reads or writes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// A plan tensor (its base buffer).
    Tensor(String),
    /// A 4-byte placeholder for an unused optional input.
    Dummy,
    /// A scratch buffer of this many 32-bit words, private to the dispatch.
    Scratch(usize),
}

/// One compute dispatch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dispatch {
    /// The ONNX node it belongs to (its name, or `op -> output` when unnamed).
    pub node: String,
    pub op_type: String,
    /// The shader variant (serialised as its name, `ew_relu_f32`).
    pub kernel: m2w_kernels::Kernel,
    pub bindings: Vec<Binding>,
    /// The uniform block, as 32-bit words (for a symbolic dispatch: at the dims' maxima).
    pub params: Vec<u32>,
    pub workgroups: [u32; 3],
    /// Words that depend on dims: (word index, expression), evaluated per run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sym_params: Vec<(usize, Expr)>,
    /// Workgroup counts when they depend on dims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sym_workgroups: Option<[Expr; 3]>,
}

impl Dispatch {
    pub fn is_symbolic(&self) -> bool {
        !self.sym_params.is_empty() || self.sym_workgroups.is_some()
    }

    /// The uniform block for bound dims.
    pub fn params_at(&self, dims: &Bindings) -> Result<Vec<u32>, String> {
        let mut w = self.params.clone();
        for (i, e) in &self.sym_params {
            w[*i] = e.word(dims)?;
        }
        Ok(w)
    }

    /// The workgroup counts for bound dims (a zero count means nothing to do).
    pub fn workgroups_at(&self, dims: &Bindings) -> Result<[u32; 3], String> {
        match &self.sym_workgroups {
            None => Ok(self.workgroups),
            Some(g) => Ok([g[0].word(dims)?, g[1].word(dims)?, g[2].word(dims)?]),
        }
    }
}

/// A GPU buffer of the plan. Intermediate tensors whose lifetimes do not overlap share one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BufferSlot {
    pub bytes: u64,
    /// Base tensors stored in it, in order of first use.
    pub tensors: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub tensors: BTreeMap<String, TensorDesc>,
    /// Set by [`Plan::assign_buffers`]; empty means one buffer per base tensor.
    #[serde(default)]
    pub buffers: Vec<BufferSlot>,
    /// Constants uploaded once (folded values and weights), by tensor name.
    #[serde(skip)]
    pub constants: BTreeMap<String, HostTensor>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub dispatches: Vec<Dispatch>,
    /// Shape values: small integer tensors whose values are expressions of the dims
    /// (computed on the host per run; a kernel that reads one has it written by a
    /// `values` dispatch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shape_values: BTreeMap<String, Vec<Expr>>,
    /// The dims sizes are expressed in (none for a static plan).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dims: Vec<DimDecl>,
    /// Sizes that must agree for the plan to be valid (checked by [`Plan::bind`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Where the run reads values back to bind dims (in dispatch order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syncs: Vec<SyncPoint>,
}

impl Plan {
    /// What a plan read from a file (plan.json) must satisfy before anything is derived from
    /// it: every name it uses is one of its tensors, every dim an expression uses is
    /// declared, ranges are ordered, and no tensor needs more bytes at the dims' maxima than
    /// `m2w_model::limits` allows. A plan the compiler wrote always passes; a corrupted or
    /// hand-edited one is an error here instead of a panic further on.
    pub fn check(&self) -> Result<(), String> {
        let declared: std::collections::BTreeSet<&str> =
            self.dims.iter().map(|d| d.name.as_str()).collect();
        for d in &self.dims {
            if d.min < 0 || d.min as u64 > d.max as u64 {
                return Err(format!(
                    "dim '{}': min {} and max {} are not a range",
                    d.name, d.min, d.max
                ));
            }
        }
        let undeclared = |what: &str, e: &Expr| -> Result<(), String> {
            match e
                .symbols()
                .into_iter()
                .find(|s| !declared.contains(s.as_str()))
            {
                Some(s) => Err(format!(
                    "{what} uses dim '{s}', which the plan does not declare"
                )),
                None => Ok(()),
            }
        };
        let tensor = |what: &str, t: &str| -> Result<(), String> {
            if self.tensors.contains_key(t) {
                Ok(())
            } else {
                Err(format!(
                    "{what} names tensor '{t}', which the plan does not have"
                ))
            }
        };
        for (name, t) in &self.tensors {
            for e in &t.shape {
                undeclared(&format!("tensor '{name}'"), e)?;
            }
            tensor(&format!("tensor '{name}' (its base)"), &t.base)?;
            if self.tensors[&t.base].base != t.base {
                return Err(format!(
                    "tensor '{name}': its base '{}' is itself a view",
                    t.base
                ));
            }
            if let Some(st) = &t.strides
                && st.len() != t.shape.len()
            {
                return Err(format!(
                    "tensor '{name}': {} strides for rank {}",
                    st.len(),
                    t.shape.len()
                ));
            }
        }
        for t in self.inputs.iter().chain(&self.outputs) {
            tensor("an input or output", t)?;
        }
        for (i, d) in self.dispatches.iter().enumerate() {
            let what = format!("dispatch {i} ({})", d.node);
            for b in &d.bindings {
                if let Binding::Tensor(t) = b {
                    tensor(&what, t)?;
                }
            }
            for (w, e) in &d.sym_params {
                if *w >= d.params.len() {
                    return Err(format!("{what}: uniform word {w} of {}", d.params.len()));
                }
                undeclared(&what, e)?;
            }
            for e in d.sym_workgroups.iter().flatten() {
                undeclared(&what, e)?;
            }
        }
        for slot in &self.buffers {
            for t in &slot.tensors {
                tensor("a buffer slot", t)?;
            }
        }
        for (name, values) in &self.shape_values {
            tensor("a shape value", name)?;
            for e in values {
                undeclared(&format!("shape value '{name}'"), e)?;
            }
        }
        for c in &self.constraints {
            undeclared(&format!("constraint of {}", c.node), &c.a)?;
            undeclared(&format!("constraint of {}", c.node), &c.b)?;
        }
        for s in &self.syncs {
            tensor("a sync point", &s.tensor)?;
            if s.at > self.dispatches.len() {
                return Err(format!(
                    "a sync point at dispatch {} of {}",
                    s.at,
                    self.dispatches.len()
                ));
            }
            if let SyncKind::NonZero { output, dim } = &s.kind {
                tensor("a sync point", output)?;
                if !declared.contains(dim.as_str()) {
                    return Err(format!(
                        "a sync point binds dim '{dim}', which the plan does not declare"
                    ));
                }
            }
        }
        let max = self.max_bindings();
        let limit = m2w_model::limits::max_tensor_bytes();
        for (name, t) in &self.tensors {
            let n = sym::numel(&t.shape)
                .eval(&max)
                .map_err(|e| format!("tensor '{name}': {e}"))?;
            let bytes = t.dt.buffer_bytes(n.max(0) as usize) as u128;
            if n < 0
                || bytes > limit as u128
                || t.extent.is_some_and(|e| e as u128 * 8 > limit as u128)
            {
                return Err(format!(
                    "tensor '{name}' needs {n} elements at the dims' maxima, over the limit of {limit} bytes"
                ));
            }
        }
        Ok(())
    }

    /// The input dims that may be 0 (see `compile_symbolic_empty`).
    pub fn empty_input_dims(&self) -> Vec<String> {
        self.dims
            .iter()
            .filter(|d| d.min == 0 && !d.at_sync && d.value_of.is_none())
            .map(|d| d.name.clone())
            .collect()
    }

    /// Every dim at its maximum (what buffers are sized for).
    pub fn max_bindings(&self) -> Bindings {
        self.dims
            .iter()
            .map(|d| (d.name.clone(), d.max as i64))
            .collect()
    }

    /// The dims that inputs of these shapes bind: every input dim that is a bare dim name
    /// binds it, every other one must then evaluate to the given size, and no dim may
    /// exceed its maximum. Err says which input and dim disagree. Dims bound at sync points
    /// start at their maxima (placeholders until the run reaches them).
    pub fn bind(&self, shapes: &BTreeMap<String, Vec<usize>>) -> Result<Bindings, String> {
        let mut dims: Bindings = self
            .dims
            .iter()
            .filter(|d| d.at_sync)
            .map(|d| (d.name.clone(), d.max as i64))
            .collect();
        for name in &self.inputs {
            let want = &self.tensors[name].shape;
            let got = shapes
                .get(name)
                .ok_or_else(|| format!("input '{name}' not given"))?;
            if got.len() != want.len() {
                return Err(format!(
                    "input '{name}' has shape {got:?}, the plan takes rank {} ({})",
                    want.len(),
                    sym::show(want)
                ));
            }
            for (w, &g) in want.iter().zip(got) {
                if let Expr::Sym(d) = w {
                    match dims.get(d) {
                        Some(&v) if v != g as i64 => {
                            return Err(format!(
                                "input '{name}' has shape {got:?}: dim '{d}' is {g} there and {v} in another input"
                            ));
                        }
                        _ => {
                            dims.insert(d.clone(), g as i64);
                        }
                    }
                }
            }
        }
        for d in self.dims.iter().filter(|d| !d.at_sync) {
            match dims.get(&d.name) {
                None => return Err(format!("no input binds dim '{}'", d.name)),
                Some(&v) if v < d.min => {
                    return Err(format!(
                        "dim '{}' = {v} is below its minimum {}",
                        d.name, d.min
                    ));
                }
                Some(&v) if v as usize > d.max => {
                    return Err(format!(
                        "dim '{}' = {v} exceeds its maximum {} (the buffers are sized for it; port with --max-dim {}=N to raise it)",
                        d.name, d.max, d.name
                    ));
                }
                Some(_) => {}
            }
        }
        let pending: Vec<&str> = self
            .dims
            .iter()
            .filter(|d| d.at_sync)
            .map(|d| d.name.as_str())
            .collect();
        self.check_constraints(&dims, &pending)?;
        for name in &self.inputs {
            let want = self.tensors[name].shape_at(&dims)?;
            if &want != &shapes[name] {
                return Err(format!(
                    "input '{name}' has shape {:?}, the plan takes {} = {want:?} for these dims",
                    shapes[name],
                    sym::show(&self.tensors[name].shape)
                ));
            }
        }
        Ok(dims)
    }

    /// Binds the dims a sync point reads: `values` are the read-back tensor's elements;
    /// `count` is a host op's result count. Each value must lie within its dim's [min, max].
    /// `pending` lists the sync dims still unbound (their constraints wait for them).
    pub fn bind_sync(
        &self,
        dims: &mut Bindings,
        sync: &SyncPoint,
        values: &[i64],
        count: Option<i64>,
        pending: &[&str],
    ) -> Result<(), String> {
        let mut set = |name: &str, v: i64| -> Result<(), String> {
            let d = self.dims.iter().find(|d| d.name == name).expect("declared");
            if v < d.min || v > d.max as i64 {
                return Err(format!(
                    "'{}' is {v} at run time; this plan takes {}..={} (buffers are sized for the maximum; port with --max-dim \"{}={}\" or more)",
                    d.name,
                    d.min,
                    d.max,
                    d.name,
                    v.max(d.max as i64)
                ));
            }
            dims.insert(name.to_string(), v);
            Ok(())
        };
        match &sync.kind {
            SyncKind::Values => {
                for d in &self.dims {
                    if let Some((t, k)) = &d.value_of
                        && *t == sync.tensor
                    {
                        set(&d.name, *values.get(*k).ok_or("too few values read back")?)?;
                    }
                }
            }
            SyncKind::NonZero { dim, .. } => set(dim, count.ok_or("no count")?)?,
        }
        self.check_constraints(dims, pending)
    }

    /// The dims a sync point binds.
    pub fn sync_dims(&self, s: &SyncPoint) -> Vec<String> {
        match &s.kind {
            SyncKind::Values => self
                .dims
                .iter()
                .filter(|d| d.value_of.as_ref().is_some_and(|(t, _)| *t == s.tensor))
                .map(|d| d.name.clone())
                .collect(),
            SyncKind::NonZero { dim, .. } => vec![dim.clone()],
        }
    }

    /// Checks every constraint whose dims are all bound (none in `pending`).
    fn check_constraints(&self, dims: &Bindings, pending: &[&str]) -> Result<(), String> {
        for c in &self.constraints {
            let syms = [c.a.symbols(), c.b.symbols()].concat();
            if syms.iter().any(|s| pending.contains(&s.as_str())) {
                continue;
            }
            let (a, b) = (c.a.eval(dims)?, c.b.eval(dims)?);
            if a != b {
                return Err(format!(
                    "the model cannot take these sizes ({}): node {} needs {} = {}, here {a} and {b}",
                    dims.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    c.node,
                    c.a,
                    c.b
                ));
            }
        }
        Ok(())
    }

    /// The kernels the plan dispatches, each once, sorted by name (the shaders/ of its
    /// engine folder).
    pub fn kernels(&self) -> Vec<m2w_kernels::Kernel> {
        let mut k: Vec<m2w_kernels::Kernel> = self.dispatches.iter().map(|d| d.kernel).collect();
        k.sort_by_key(|k| k.name());
        k.dedup();
        k
    }

    /// Plans GPU memory over tensor lifetimes: inputs, outputs and constants keep buffers of
    /// their own; every other base tensor lives from the dispatch that first touches it to
    /// the last one that reads it (views count for their base), and takes the smallest free
    /// buffer that fits (best fit), else a new one. A dispatch's outputs never share a
    /// buffer with its inputs: buffers are released only after the dispatch is placed.
    /// With `reuse` false every tensor keeps its own buffer (debug capture of any checkpoint).
    pub fn assign_buffers(&mut self, reuse: bool) {
        use std::collections::HashMap;
        let fixed: std::collections::HashSet<String> = self
            .inputs
            .iter()
            .chain(self.outputs.iter())
            .map(|t| self.base_of(t).to_string())
            .chain(self.constants.keys().cloned())
            .collect();
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, d) in self.dispatches.iter().enumerate() {
            for b in &d.bindings {
                if let Binding::Tensor(t) = b {
                    let base = self.base_of(t).to_string();
                    first.entry(base.clone()).or_insert(i);
                    last.insert(base, i);
                }
            }
        }
        // A sync point reads its tensor when the run reaches it, and a host op writes its
        // output there: both live across it.
        for s in &self.syncs {
            let base = self.base_of(&s.tensor).to_string();
            first.entry(base.clone()).or_insert(s.at);
            let l = last.entry(base).or_insert(s.at);
            *l = (*l).max(s.at);
            if let SyncKind::NonZero { output, .. } = &s.kind {
                let base = self.base_of(output).to_string();
                let f = first.entry(base.clone()).or_insert(s.at);
                *f = (*f).min(s.at);
                last.entry(base).or_insert(s.at);
            }
        }
        let mut slots: Vec<BufferSlot> = Vec::new();
        let max = self.max_bindings();
        let bytes_of = |p: &Plan, t: &str| p.max_bytes(t, &max);
        // Fixed tensors first, one slot each.
        let mut order: Vec<&String> = self
            .tensors
            .iter()
            .filter(|(k, v)| &v.base == *k)
            .map(|(k, _)| k)
            .collect();
        order.sort_by_key(|t| (first.get(*t).copied().unwrap_or(usize::MAX), (*t).clone()));
        let mut free: Vec<usize> = Vec::new();
        let mut releases: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut current = 0usize;
        for t in order {
            let bytes = bytes_of(self, t);
            let start = first.get(t).copied().unwrap_or(usize::MAX);
            if !reuse || fixed.contains(t) || start == usize::MAX {
                slots.push(BufferSlot {
                    bytes,
                    tensors: vec![t.clone()],
                });
                continue;
            }
            // Release everything whose last use is before this tensor's first use.
            while current < start {
                if let Some(r) = releases.remove(&current) {
                    free.extend(r);
                }
                current += 1;
            }
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, s)| slots[**s].bytes >= bytes)
                .min_by_key(|(_, s)| slots[**s].bytes)
                .map(|(k, _)| k);
            let slot = match pick {
                Some(k) => free.swap_remove(k),
                None => {
                    slots.push(BufferSlot {
                        bytes,
                        tensors: vec![],
                    });
                    slots.len() - 1
                }
            };
            slots[slot].tensors.push(t.clone());
            releases.entry(last[t]).or_default().push(slot);
        }
        self.buffers = slots;
    }

    /// Total bytes of all buffers (after `assign_buffers`).
    pub fn buffer_bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.bytes).sum()
    }

    /// Bytes a tensor may need for any binding of the dims within their ranges: the upper
    /// bound of its element count over [min, max] of every dim (its value at the maxima when
    /// the size grows with every dim, as sizes do; larger when a size picks among dims by
    /// run-time values).
    pub fn max_bytes(&self, t: &str, max: &Bindings) -> u64 {
        let d = &self.tensors[t];
        if let Some(e) = d.extent {
            return d.dt.buffer_bytes(e as usize);
        }
        let min: Bindings = self.dims.iter().map(|d| (d.name.clone(), d.min)).collect();
        let numel = sym::numel(&d.shape);
        let at_max = numel.eval(max).expect("every dim of a plan is declared");
        let bound = numel.bounds_in(&min, max).1;
        d.dt.buffer_bytes(at_max.max(bound).max(0) as usize)
    }

    /// (past input, present output) of each KV cache appended in place: the output is a
    /// view of the input's buffer (see the engine's `ops::strided`).
    pub fn in_place_caches(&self) -> Vec<(String, String)> {
        self.outputs
            .iter()
            .filter_map(|o| {
                let base = self.base_of(o);
                (base != o
                    && self.inputs.iter().any(|i| i == base)
                    && self.tensors[base].strides.is_some())
                .then(|| (base.to_string(), o.clone()))
            })
            .collect()
    }

    pub fn base_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.tensors
            .get(name)
            .map(|t| t.base.as_str())
            .unwrap_or(name)
    }
}

/// [`groups_1d`] for a symbolic thread count.
pub fn groups_1d_sym(n: &Expr, wg: usize) -> [Expr; 3] {
    if let Some(v) = n.as_const() {
        return groups_1d(v.max(0) as usize, wg).map(|g| Expr::from(g as i64));
    }
    let groups = n.clone().ceil_div(wg as i64);
    [
        groups.clone().min(Expr::Const(65535)),
        groups.ceil_div(65535),
        Expr::Const(1),
    ]
}

/// Workgroups for `n` threads of a 1-D kernel with `wg` threads per group, spilling into y
/// past the 65535-per-dimension limit (the kernels compute x + y * 65535 * wg).
pub fn groups_1d(n: usize, wg: usize) -> [u32; 3] {
    let groups = n.div_ceil(wg).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        [65535, groups.div_ceil(65535) as u32, 1]
    }
}
