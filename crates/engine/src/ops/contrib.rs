//! com.microsoft fusions that ONNX Runtime's transformer optimizer writes into the files
//! people ship (FastGelu, BiasGelu, Gelu, SkipLayerNormalization), lowered as the
//! standard ops they fuse: a bias add on the element-wise kernels, then the GELU kernel
//! or the layer-norm kernel. Their semantics follow ONNX Runtime's contrib-op docs.

use m2w_kernels::Kernel;
use m2w_model::{AttrValue, NodeInfo};

use super::Registry;
use super::ctx::{Ctx, R, attr_f, attr_i, ins, out0};
use crate::tensor::DT;

const MS: &str = "com.microsoft";

mod attention;

pub(super) fn register(r: &mut Registry) {
    attention::register(r);
    r.contrib(MS, "FastGelu", &[], lower_gelu);
    r.contrib(MS, "Gelu", &[], lower_gelu);
    r.contrib(MS, "BiasGelu", &[], lower_gelu);
    r.contrib(MS, "SkipLayerNormalization", &["epsilon"], lower_skip_norm);
    r.contrib(
        MS,
        "FusedMatMul",
        &["alpha", "transA", "transB", "transBatchA", "transBatchB"],
        lower_fused_matmul,
    );
    r.contrib(
        MS,
        "SkipSimplifiedLayerNormalization",
        &["epsilon"],
        lower_skip_norm,
    );
}

/// `x + bias` when the node has a bias input (`i`), else `x`.
fn with_bias(cx: &mut Ctx, n: &NodeInfo, x: &str, i: usize, name: &str) -> R<String> {
    match n.inputs.get(i).filter(|b| !b.is_empty()) {
        Some(bias) => {
            if cx.dt(x)? != DT::F32 || cx.dt(bias)? != DT::F32 {
                return Err("only float inputs".into());
            }
            cx.elementwise(n, Kernel::EwAddF32, &[x, bias], name, DT::F32, 0.0, 0.0)?;
            Ok(name.to_string())
        }
        None => Ok(x.to_string()),
    }
}

/// FastGelu: the tanh approximation of GELU of `x (+ bias)`; Gelu, BiasGelu: the exact
/// (erf) GELU of `x (+ bias)`.
fn lower_gelu(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let x = ins(n)[0];
    if cx.dt(x)? != DT::F32 {
        return Err("only float input".into());
    }
    let out = out0(n);
    let x = with_bias(cx, n, x, 1, &format!("{out}::biased"))?;
    let kernel = if n.op_type == "FastGelu" {
        Kernel::EwGeluTanhF32
    } else {
        Kernel::EwGeluF32
    };
    cx.elementwise(n, kernel, &[&x], out, DT::F32, 0.0, 0.0)
}

/// SkipLayerNormalization(input, skip, gamma, beta?, bias?) = LayerNorm over the last axis
/// of `input + skip (+ bias)`; outputs mean, inv_std_var (when named) and the sum itself
/// (output 3). The Simplified form is RMSNorm(input, skip, gamma, bias?).
fn lower_skip_norm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 3 {
        return Err("takes at least input, skip and gamma".into());
    }
    let out = out0(n);
    let simplified = n.op_type == "SkipSimplifiedLayerNormalization";
    let bias_at = if simplified { 3 } else { 4 };
    let sum = match n.outputs.get(3).filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => format!("{out}::sum"),
    };
    let skipped = if n.inputs.get(bias_at).is_some_and(|b| !b.is_empty()) {
        format!("{out}::skipped")
    } else {
        sum.clone()
    };
    if cx.dt(i[0])? != DT::F32 || cx.dt(i[1])? != DT::F32 {
        return Err("only float inputs".into());
    }
    cx.elementwise(
        n,
        Kernel::EwAddF32,
        &[i[0], i[1]],
        &skipped,
        DT::F32,
        0.0,
        0.0,
    )?;
    if skipped != sum {
        with_bias(cx, n, &skipped, bias_at, &sum)?;
    }
    let mut inputs = vec![sum, i[2].to_string()];
    if !simplified && let Some(beta) = n.inputs.get(3) {
        inputs.push(beta.clone());
    }
    let norm = NodeInfo {
        op_type: if simplified {
            "RMSNormalization"
        } else {
            "LayerNormalization"
        }
        .into(),
        domain: String::new(),
        inputs,
        outputs: n.outputs.iter().take(3).cloned().collect(),
        attributes: [
            ("axis".to_string(), AttrValue::Int(-1)),
            (
                "epsilon".to_string(),
                AttrValue::Float(attr_f(n, "epsilon", 1e-12)),
            ),
        ]
        .into(),
        ..n.clone()
    };
    super::norm::lower_layer_norm(cx, &norm)
}

/// FusedMatMul: `alpha * op(A) x op(B)`, the transposes of the last two axes as strides.
fn lower_fused_matmul(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    let out = out0(n);
    if attr_i(n, "transBatchA", 0) != 0 || attr_i(n, "transBatchB", 0) != 0 {
        return Err("transBatchA / transBatchB are not supported".into());
    }
    let (ta, tb) = (attr_i(n, "transA", 0) != 0, attr_i(n, "transB", 0) != 0);
    let alpha = attr_f(n, "alpha", 1.0);
    if alpha == 1.0 {
        return super::matmul::matmul(cx, n, i[0], i[1], out, ta, tb);
    }
    let product = format!("{out}::product");
    super::matmul::matmul(cx, n, i[0], i[1], &product, ta, tb)?;
    let k = format!("{out}::alpha");
    cx.add_const(&k, crate::tensor::HostTensor::f32(vec![], vec![alpha]));
    cx.elementwise(n, Kernel::EwMulF32, &[&product, &k], out, DT::F32, 0.0, 0.0)
}

#[cfg(test)]
mod tests;
