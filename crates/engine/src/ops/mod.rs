//! The op registry: the one list of what m2w runs.
//!
//! Every supported op has one [`OpSpec`] — (domain, op type, opset range) plus the
//! attributes its spec defines, which inputs decide output shapes, an optional host fold
//! (evaluated at plan time when every input is a constant) and its lowering to dispatches.
//! Each op family lives in its own module and adds its specs in `register` (as tract's
//! `register_all_ops`); [`registry`] collects them. Everything else is derived from this
//! table: which ops are known ([`lookup`]), which inputs must be plan-time constants
//! ([`shape_inputs`]), host folding, inspect's "needs work" flags ([`flag`]) and the op rows
//! of `docs/OP_SUPPORT.md`.
//!
//! Adding an op: write `lower_<op>(cx, node)` (and a fold if it is cheap shape arithmetic)
//! in its family module and one `r.op(..)` line in that module's `register`.

mod contrib;
mod control;
mod conv;
pub(crate) mod ctx;
mod einsum;
mod elementwise;
mod gather;
mod host;
mod matmul;
mod movement;
mod norm;
mod pool;
mod quant;
mod reduce;
mod resize;
mod rnn;
mod shape;
mod softmax;
mod spectral;
mod strided;
mod symbolic;
#[cfg(test)]
mod testing;

use std::sync::OnceLock;

use m2w_model::NodeInfo;

pub(crate) use ctx::R;
pub use ctx::{Ctx, Subgraph};
pub use host::{reshape_shape, slice_geometry, squeeze_shape};

use crate::tensor::{DT, HostTensor};

/// Host folds see constants unpacked ([`Ctx::konst`]); packed ones are GPU-only weights.
pub(crate) const PACKED: &str = "packed weights do not fold on the host";

/// Lowers one node into dispatches, views or constants of the plan; Err(reason) when this
/// node (its attributes, dtypes or shapes) cannot run.
pub type LowerFn = fn(&mut Ctx, &NodeInfo) -> R<()>;
/// Evaluates a node on the host when all its inputs are constants; returns its outputs.
pub type FoldFn = fn(&NodeInfo, &[Option<HostTensor>], i64) -> R<Vec<HostTensor>>;

/// One supported op.
#[derive(Clone)]
pub struct OpSpec {
    /// "" for the standard ONNX domain (also written "ai.onnx").
    pub domain: &'static str,
    pub op_type: &'static str,
    /// The module that implements it (elementwise, shape, matmul, ...).
    pub family: &'static str,
    /// First opset version of the domain the lowering handles.
    pub since: i64,
    /// Last opset version it handles; None: every later one seen so far.
    pub until: Option<i64>,
    /// Every attribute the op's spec defines (over all its versions); any other is refused.
    pub attrs: &'static [&'static str],
    /// Inputs whose values decide output shapes: they must be constants at plan time.
    pub shape_inputs: &'static [usize],
    /// The op reads only its input's shape (Shape, Size): folded even when the input is
    /// computed on the GPU.
    pub reads_shape_only: bool,
    pub fold: Option<FoldFn>,
    pub lower: LowerFn,
}

impl OpSpec {
    fn fold(&mut self, f: FoldFn) -> &mut Self {
        self.fold = Some(f);
        self
    }
    fn shape_inputs(&mut self, s: &'static [usize]) -> &mut Self {
        self.shape_inputs = s;
        self
    }
    fn shape_only(&mut self) -> &mut Self {
        self.reads_shape_only = true;
        self
    }
}

/// What a family's `register` writes into.
pub(crate) struct Registry {
    specs: Vec<OpSpec>,
    family: &'static str,
}

impl Registry {
    /// A standard-domain op handled from opset `since` on.
    fn op(
        &mut self,
        op_type: &'static str,
        since: i64,
        attrs: &'static [&'static str],
        lower: LowerFn,
    ) -> &mut OpSpec {
        self.specs.push(OpSpec {
            domain: "",
            op_type,
            family: self.family,
            since,
            until: None,
            attrs,
            shape_inputs: &[],
            reads_shape_only: false,
            fold: None,
            lower,
        });
        self.specs.last_mut().expect("just pushed")
    }

    /// An op of another domain (com.microsoft), from version 1 of that domain.
    fn contrib(
        &mut self,
        domain: &'static str,
        op_type: &'static str,
        attrs: &'static [&'static str],
        lower: LowerFn,
    ) -> &mut OpSpec {
        let spec = self.op(op_type, 1, attrs, lower);
        spec.domain = domain;
        spec
    }
}

/// Every supported op, grouped by family, in registration order.
pub fn registry() -> &'static [OpSpec] {
    static REGISTRY: OnceLock<Vec<OpSpec>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry {
            specs: Vec::new(),
            family: "",
        };
        type Register = fn(&mut Registry);
        let families: [(&'static str, Register); 17] = [
            ("elementwise", elementwise::register),
            ("shape", shape::register),
            ("movement", movement::register),
            ("gather", gather::register),
            ("matmul", matmul::register),
            ("einsum", einsum::register),
            ("conv", conv::register),
            ("pool", pool::register),
            ("reduce", reduce::register),
            ("softmax", softmax::register),
            ("norm", norm::register),
            ("rnn", rnn::register),
            ("resize", resize::register),
            ("quant", quant::register),
            ("contrib", contrib::register),
            ("control", control::register),
            ("spectral", spectral::register),
        ];
        for (name, register) in families {
            r.family = name;
            register(&mut r);
        }
        let mut seen = std::collections::HashSet::new();
        for s in &r.specs {
            assert!(
                seen.insert((s.domain, s.op_type)),
                "{} registered twice",
                s.op_type
            );
        }
        r.specs
    })
}

fn standard(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The spec of an op, whatever the opset.
pub fn lookup(domain: &str, op_type: &str) -> Option<&'static OpSpec> {
    let domain = if standard(domain) { "" } else { domain };
    registry()
        .iter()
        .find(|s| s.domain == domain && s.op_type == op_type)
}

/// The spec of an op at a model's opset of its domain, or why there is none.
pub fn find(domain: &str, op_type: &str, opset: i64) -> Result<&'static OpSpec, String> {
    let spec = lookup(domain, op_type).ok_or_else(|| flag(domain, op_type).reason)?;
    if opset < spec.since || spec.until.is_some_and(|u| opset > u) {
        return Err(format!(
            "opset {opset} is outside the versions m2w runs ({}..{})",
            spec.since,
            spec.until.map(|u| u.to_string()).unwrap_or_default()
        ));
    }
    Ok(spec)
}

/// Inputs whose values decide output shapes (empty for unknown ops).
pub fn shape_inputs(op_type: &str) -> &'static [usize] {
    lookup("", op_type).map(|s| s.shape_inputs).unwrap_or(&[])
}

/// Why an op needs work before it can run on WebGPU, derived from the registry: `kind`
/// is "supported" for registered ops, otherwise a category and a reason.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpFlag {
    pub kind: &'static str,
    pub reason: String,
}

pub fn flag(domain: &str, op_type: &str) -> OpFlag {
    if lookup(domain, op_type).is_some() {
        return OpFlag {
            kind: "supported",
            reason: String::new(),
        };
    }
    if domain == "tflite" {
        return if crate::tflite::supported(op_type) {
            OpFlag {
                kind: "supported",
                reason: String::new(),
            }
        } else {
            OpFlag {
                kind: "tflite",
                reason: "TFLite builtin op with no lowering onto the engine's ops yet (docs/TFLITE.md lists those that have one)".into(),
            }
        };
    }
    if !standard(domain) {
        return OpFlag {
            kind: "contrib",
            reason: format!(
                "op from domain '{domain}': not in the ONNX standard, needs a custom kernel"
            ),
        };
    }
    let (kind, reason) = match op_type {
        "Loop" | "Scan" => (
            "control-flow",
            "control flow (subgraphs) is not supported yet",
        ),
        "NonMaxSuppression" | "RoiAlign" | "Unique" | "StringNormalizer" | "TfIdfVectorizer"
        | "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike"
        | "Multinomial" | "Bernoulli" => (
            "special",
            "data-dependent or random output: usually runs as CPU glue between GPU stages",
        ),
        _ => ("missing", "op not supported yet"),
    };
    OpFlag {
        kind,
        reason: reason.to_string(),
    }
}

/// How `docs/OP_SUPPORT.md` names an op's place in the registry: its family, or `none
/// (kind)` when no lowering exists.
pub fn registry_label(op_type: &str) -> String {
    if op_type.starts_with('(') {
        // Not an op: "(multi-op)" cases, "(unreadable)" models.
        return "—".into();
    }
    match lookup("", op_type) {
        Some(s) => s.family.to_string(),
        None => format!("none ({})", flag("", op_type).kind),
    }
}

/// One node m2w cannot run, and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Unsupported {
    pub node: String,
    /// "" for the standard domain.
    pub domain: String,
    pub op_type: String,
    pub reason: String,
}

impl Unsupported {
    pub fn of(n: &NodeInfo, reason: String) -> Unsupported {
        Unsupported {
            node: n.label(),
            domain: if standard(&n.domain) {
                String::new()
            } else {
                n.domain.clone()
            },
            op_type: n.op_type.clone(),
            reason,
        }
    }
}

/// What every node of a graph's main scope needs, known without shapes: its op at the
/// model's opset of its domain and the attributes its spec defines. Port runs it right
/// after inspect, before extract and the reference spend any time; `compile` finds the
/// same and more (dtypes, shapes, attribute values).
pub fn precheck(graph: &m2w_model::GraphInfo) -> Vec<Unsupported> {
    let opset_of = |domain: &str| {
        graph
            .opsets
            .iter()
            .find(|(d, _)| d == domain || (standard(d) && standard(domain)))
            .map(|(_, v)| *v)
            .unwrap_or(1)
    };
    graph
        .nodes
        .iter()
        .filter(|n| n.scope.is_empty())
        .filter_map(|n| {
            find(&n.domain, &n.op_type, opset_of(&n.domain))
                .and_then(|spec| check_attributes(spec, n))
                .err()
                .map(|reason| Unsupported::of(n, reason))
        })
        .collect()
}

/// Attributes outside the op's spec are refused, not ignored.
pub fn check_attributes(spec: &OpSpec, n: &NodeInfo) -> R<()> {
    let mut unknown: Vec<&str> = n
        .attributes
        .keys()
        .map(String::as_str)
        .filter(|a| !spec.attrs.contains(a))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(format!(
        "attribute(s) {} not in the {} spec",
        unknown.join(", "),
        spec.op_type
    ))
}

/// Every refused node, grouped by op: `{}` prints each op once with its count, its distinct
/// reasons and up to five node names; `{:#}` lists every node.
pub struct Refusal<'a>(pub &'a [Unsupported]);

impl std::fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::collections::BTreeMap;
        let list = self.0;
        let mut groups: BTreeMap<(&str, &str), Vec<&Unsupported>> = BTreeMap::new();
        for u in list {
            groups
                .entry((u.domain.as_str(), u.op_type.as_str()))
                .or_default()
                .push(u);
        }
        write!(
            f,
            "{} node(s) in {} op type(s) cannot run on WebGPU:",
            list.len(),
            groups.len()
        )?;
        for ((domain, op), nodes) in &groups {
            let domain = if domain.is_empty() { "ai.onnx" } else { domain };
            let mut reasons: Vec<(&str, usize)> = Vec::new();
            for u in nodes {
                match reasons.iter_mut().find(|(r, _)| *r == u.reason) {
                    Some(r) => r.1 += 1,
                    None => reasons.push((&u.reason, 1)),
                }
            }
            let reasons: Vec<String> = reasons
                .iter()
                .map(|(r, k)| {
                    if reasons.len() > 1 {
                        format!("{r} (x{k})")
                    } else {
                        r.to_string()
                    }
                })
                .collect();
            write!(
                f,
                "\n  {domain}::{op} x {}: {}",
                nodes.len(),
                reasons.join("; ")
            )?;
            let shown = if f.alternate() { nodes.len() } else { 5 };
            let names: Vec<&str> = nodes.iter().take(shown).map(|u| u.node.as_str()).collect();
            write!(f, "\n      nodes: {}", names.join(", "))?;
            if nodes.len() > shown {
                write!(
                    f,
                    " and {} more (--verbose lists every node)",
                    nodes.len() - shown
                )?;
            }
        }
        write!(
            f,
            "\nNothing ran on the GPU. Ops listed as not supported need a lowering in m2w (docs/OP_SUPPORT.md \
             lists what runs; docs/ARCHITECTURE.md says how to add one); attribute, dtype or shape \
             refusals may go away when the model is exported with other settings or input sizes."
        )
    }
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.node, self.op_type, self.reason)
    }
}

impl Ctx {
    /// Lowers one node through its spec: attributes checked against the spec, host fold
    /// when the op has one and every input is a constant, else the family's lowering.
    pub fn lower(&mut self, spec: &OpSpec, n: &NodeInfo) -> R<()> {
        check_attributes(spec, n)?;
        let first_known = n
            .inputs
            .first()
            .is_some_and(|i| self.plan.tensors.contains_key(i));
        if spec.reads_shape_only && first_known {
            // Shape and Size read only the shape; a symbolic one folds to expressions.
            let desc = &self.plan.tensors[&n.inputs[0]];
            let Some(shape) = desc.fixed_shape() else {
                let shape = desc.shape.clone();
                return self.fold_shape_of(n, &shape);
            };
            let stand_in = HostTensor::i64(shape, Vec::new());
            let fold = spec.fold.expect("shape-only ops fold");
            return self.add_outputs(n, fold(n, &[Some(stand_in)], self.opset)?);
        }
        for i in n.inputs.iter().filter(|i| !i.is_empty()) {
            self.desc(i)?;
        }
        // Ops that cannot read an in-place cache's strided layout read a row-major copy.
        let row_major = self.row_major_inputs(n)?;
        let n = row_major.as_ref().unwrap_or(n);
        if let Some(done) = self.try_sym_fold(n) {
            done?;
            self.declare_outputs(n);
            return Ok(());
        }
        // Checked before any constant is copied out (weights can be large).
        let is_const = |i: &String| {
            i.is_empty()
                || self.plan.tensors.get(i).is_some_and(|d| {
                    self.plan.constants.contains_key(i) || self.plan.constants.contains_key(&d.base)
                })
        };
        if let Some(fold) = spec.fold
            && n.inputs.iter().all(is_const)
        {
            let consts: Vec<Option<HostTensor>> = n
                .inputs
                .iter()
                .map(|i| if i.is_empty() { None } else { self.konst(i) })
                .collect();
            // A fold that does not cover this case (say a reduction over axes of a 2-D
            // constant) leaves the node to its GPU lowering; when there is none, the
            // fold's reason is the one to report.
            match fold(n, &consts, self.opset) {
                Ok(outs) => {
                    self.add_outputs(n, outs)?;
                    self.track_dequantized(n);
                }
                Err(fold_err) => (spec.lower)(self, n).map_err(|_| fold_err)?,
            };
        } else {
            (spec.lower)(self, n)?;
        }
        self.declare_outputs(n);
        Ok(())
    }

    /// Carries the graph's integer element type (int8, uint8...) through Cast and the ops
    /// that only view their input, so a QuantizeLinear downstream saturates right.
    fn declare_outputs(&mut self, n: &NodeInfo) {
        let (Some(out), Some(x)) = (n.outputs.first(), n.inputs.first()) else {
            return;
        };
        let declared = match n.op_type.as_str() {
            "Cast" => Some(m2w_model::DType::from_onnx(ctx::attr_i(n, "to", 1) as i32)),
            "CastLike" => n.inputs.get(1).and_then(|t| self.declared(t)),
            "Identity" | "Reshape" | "Squeeze" | "Unsqueeze" | "Flatten" => self.declared(x),
            _ => None,
        };
        if let Some(d) = declared {
            self.declare(out, d);
        }
    }

    fn add_outputs(&mut self, n: &NodeInfo, outs: Vec<HostTensor>) -> R<()> {
        for (name, t) in n.outputs.iter().zip(outs) {
            if !name.is_empty() {
                self.add_const(name, t);
            }
        }
        Ok(())
    }
}

/// Lowering for ops that only fold: their inputs must be plan-time constants.
fn needs_constants(_: &mut Ctx, n: &NodeInfo) -> R<()> {
    Err(format!(
        "{} needs constant inputs at plan time (its output shape depends on their values)",
        n.op_type
    ))
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

#[cfg(test)]
mod tests;
