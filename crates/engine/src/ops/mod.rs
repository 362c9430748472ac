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

mod conv;
mod ctx;
mod elementwise;
mod gather;
mod host;
mod matmul;
mod movement;
mod norm;
mod pool;
mod reduce;
mod resize;
mod rnn;
mod shape;
mod softmax;
#[cfg(test)]
mod testing;

use std::sync::OnceLock;

use m2w_model::NodeInfo;

pub use ctx::Ctx;
pub(crate) use ctx::R;
pub use host::{reshape_shape, slice_geometry, squeeze_shape};

use crate::tensor::{DT, HostTensor};

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
}

/// Every supported op, grouped by family, in registration order.
pub fn registry() -> &'static [OpSpec] {
    static REGISTRY: OnceLock<Vec<OpSpec>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry {
            specs: Vec::new(),
            family: "",
        };
        let families: [(&'static str, fn(&mut Registry)); 12] = [
            ("elementwise", elementwise::register),
            ("shape", shape::register),
            ("movement", movement::register),
            ("gather", gather::register),
            ("matmul", matmul::register),
            ("conv", conv::register),
            ("pool", pool::register),
            ("reduce", reduce::register),
            ("softmax", softmax::register),
            ("norm", norm::register),
            ("rnn", rnn::register),
            ("resize", resize::register),
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
    if !standard(domain) {
        return OpFlag {
            kind: "contrib",
            reason: format!(
                "op from domain '{domain}': not in the ONNX standard, needs a custom kernel"
            ),
        };
    }
    let (kind, reason) = match op_type {
        "LSTM" | "GRU" | "RNN" => (
            "recurrent",
            "recurrent op without a kernel yet (sequential over time steps)",
        ),
        "If" | "Loop" | "Scan" => (
            "control-flow",
            "control flow (subgraphs) is not supported yet",
        ),
        "DynamicQuantizeLinear"
        | "MatMulInteger"
        | "ConvInteger"
        | "QLinearMatMul"
        | "QLinearConv"
        | "QuantizeLinear"
        | "DequantizeLinear" => ("quantized", "quantization op without a kernel yet"),
        "NonMaxSuppression" | "RoiAlign" | "Unique" | "StringNormalizer" | "TfIdfVectorizer"
        | "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike"
        | "Multinomial" | "Bernoulli" | "NonZero" => (
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
    pub op_type: String,
    pub reason: String,
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
        let mut unknown: Vec<&str> = n
            .attributes
            .keys()
            .map(String::as_str)
            .filter(|a| !spec.attrs.contains(a))
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            return Err(format!(
                "attribute(s) {} not in the {} spec",
                unknown.join(", "),
                spec.op_type
            ));
        }
        let first_known = n
            .inputs
            .first()
            .is_some_and(|i| self.plan.tensors.contains_key(i));
        if spec.reads_shape_only && first_known {
            // Shape and Size read only the (static) shape.
            let shape = self.plan.tensors[&n.inputs[0]].shape.clone();
            let stand_in = HostTensor::i64(shape, Vec::new());
            let fold = spec.fold.expect("shape-only ops fold");
            return self.add_outputs(n, fold(n, &[Some(stand_in)], self.opset)?);
        }
        for i in n.inputs.iter().filter(|i| !i.is_empty()) {
            self.desc(i)?;
        }
        if let Some(fold) = spec.fold {
            let consts: Vec<Option<HostTensor>> = n
                .inputs
                .iter()
                .map(|i| if i.is_empty() { None } else { self.konst(i) })
                .collect();
            let all_const = n
                .inputs
                .iter()
                .zip(&consts)
                .all(|(i, c)| i.is_empty() || c.is_some());
            if all_const {
                return self.add_outputs(n, fold(n, &consts, self.opset)?);
            }
        }
        (spec.lower)(self, n)
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
mod tests {
    use super::*;

    #[test]
    fn every_op_is_registered_once_with_its_family() {
        let r = registry();
        assert!(r.len() > 100);
        for s in r {
            assert!(!s.family.is_empty(), "{}", s.op_type);
            assert!(
                !s.reads_shape_only || s.fold.is_some(),
                "{} reads only shapes but has no fold",
                s.op_type
            );
        }
        assert_eq!(lookup("ai.onnx", "Conv").unwrap().family, "conv");
        assert_eq!(lookup("", "LSTM").unwrap().family, "rnn");
        assert!(lookup("com.microsoft", "Conv").is_none());
    }

    #[test]
    fn flags_follow_the_registry() {
        assert_eq!(flag("", "MatMul").kind, "supported");
        assert_eq!(flag("", "LSTM").kind, "supported");
        assert_eq!(flag("com.microsoft", "MatMulNBits").kind, "contrib");
        assert_eq!(flag("", "If").kind, "control-flow");
        assert_eq!(flag("", "GRU").kind, "recurrent");
        assert_eq!(flag("", "MatMulInteger").kind, "quantized");
        assert_eq!(flag("", "FancyNewOp").kind, "missing");
    }

    #[test]
    fn opset_ranges_are_enforced() {
        // Celu exists from opset 12 on.
        assert!(find("", "Celu", 11).is_err());
        assert!(find("", "Celu", 12).is_ok());
    }
}
