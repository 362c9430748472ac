//! Normalisation: LayerNormalization and RMSNormalization (a row per 64-thread group,
//! optional Mean / InvStdDev outputs copied from the stats rows), and inference-mode
//! BatchNormalization as five element-wise dispatches over per-channel views.

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_f, attr_i, ins, norm_axis, out0};
use crate::plan::{Binding, groups_1d_sym};
use crate::sym::{self, Expr};
use crate::tensor::{DT, HostTensor};

pub(super) fn register(r: &mut Registry) {
    r.op(
        "LayerNormalization",
        17,
        &["axis", "epsilon", "stash_type"],
        lower_layer_norm,
    );
    r.op(
        "RMSNormalization",
        23,
        &["axis", "epsilon", "stash_type"],
        lower_layer_norm,
    );
    r.op(
        "BatchNormalization",
        1,
        &[
            "consumed_inputs",
            "epsilon",
            "is_test",
            "momentum",
            "spatial",
            "training_mode",
        ],
        lower_batch_norm,
    );
}

pub(super) fn lower_layer_norm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let op = n.op_type.as_str();
    let s = cx.sym_shape(ins[0])?;
    let axis = norm_axis(attr_i(n, "axis", -1), s.len())?;
    let len = sym::numel(&s[axis..]);
    let rows = sym::numel(&s[..axis]);
    let eps = attr_f(n, "epsilon", 1e-5);
    cx.new_tensor_sym(out, s.clone(), DT::F32)?;
    let scale_len = sym::numel(&cx.sym_shape(ins[1])?);
    let has_bias = op == "LayerNormalization" && ins.get(2).is_some_and(|b| !b.is_empty());
    let bias_len = if has_bias {
        sym::numel(&cx.sym_shape(ins[2])?)
    } else {
        Expr::Const(1)
    };
    if scale_len != len || (has_bias && bias_len != len) {
        return Err("scale/bias must have the normalised shape".into());
    }
    let mut stat_shape = s[..axis].to_vec();
    stat_shape.extend(std::iter::repeat_n(Expr::Const(1), s.len() - axis));
    let stats = format!("{out}::stats");
    cx.new_tensor_sym(&stats, vec![Expr::Const(2), rows.clone()], DT::F32)?;
    let kernel = if op == "LayerNormalization" {
        Kernel::LayernormF32
    } else {
        Kernel::RmsnormF32
    };
    let bias = if has_bias {
        cx.bind(ins[2])
    } else {
        Binding::Dummy
    };
    let params = params::Layernorm::<Expr> {
        rows: rows.clone(),
        len,
        eps,
        has_bias: Expr::from(has_bias as i64),
        scale_len,
        bias_len,
        ..Default::default()
    }
    .slots();
    if rows != Expr::Const(0) {
        let groups = groups_1d_sym(&rows, 64);
        let bindings = vec![
            cx.bind(ins[0]),
            cx.bind(ins[1]),
            bias,
            cx.bind(out),
            cx.bind(&stats),
        ];
        cx.dispatch_sym(n, kernel, bindings, params, groups);
    }
    // Optional Mean and InvStdDev outputs are views of the stats rows.
    for (k, o) in n.outputs.iter().enumerate().skip(1) {
        if o.is_empty() {
            continue;
        }
        cx.new_tensor_sym(o, stat_shape.clone(), DT::F32)?;
        cx.copy_sym(
            n,
            &stats,
            o,
            std::slice::from_ref(&rows),
            Expr::Const(k as i64 - 1) * rows.clone(),
            &[Expr::Const(1)],
            Expr::Const(0),
            &[Expr::Const(1)],
        )?;
    }
    Ok(())
}

fn lower_batch_norm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    if attr_i(n, "spatial", 1) == 0 {
        return Err("spatial = 0 (statistics per element, opset < 9) is not supported".into());
    }
    if n.outputs.iter().skip(1).any(|o| !o.is_empty()) || attr_i(n, "training_mode", 0) != 0 {
        return Err("training mode is not supported".into());
    }
    let s = cx.sym_shape(ins[0])?;
    if s.len() < 2 {
        return Err("needs rank >= 2".into());
    }
    let eps = attr_f(n, "epsilon", 1e-5);
    let channels = s[1]
        .as_const()
        .ok_or("the channel count must be known at plan time")? as usize;
    let mut cshape = vec![channels];
    cshape.extend(std::iter::repeat_n(1, s.len() - 2));
    let v = |ctx: &mut Ctx, i: usize, tag: &str| -> R<String> {
        let name = format!("{out}::{tag}");
        ctx.view(&name, ins[i], cshape.clone())?;
        Ok(name)
    };
    let (scale, bias, mean, var) = (
        v(cx, 1, "scale")?,
        v(cx, 2, "bias")?,
        v(cx, 3, "mean")?,
        v(cx, 4, "var")?,
    );
    let eps_c = format!("{out}::eps");
    cx.add_const(&eps_c, HostTensor::f32(vec![], vec![eps]));
    let t = |k: &str| format!("{out}::{k}");
    cx.elementwise(
        n,
        Kernel::EwAddF32,
        &[&var, &eps_c],
        &t("ve"),
        DT::F32,
        0.0,
        0.0,
    )?;
    cx.elementwise(
        n,
        Kernel::EwSqrtF32,
        &[&t("ve")],
        &t("sd"),
        DT::F32,
        0.0,
        0.0,
    )?;
    cx.elementwise(
        n,
        Kernel::EwDivF32,
        &[&scale, &t("sd")],
        &t("k"),
        DT::F32,
        0.0,
        0.0,
    )?;
    cx.elementwise(
        n,
        Kernel::EwSubF32,
        &[ins[0], &mean],
        &t("xc"),
        DT::F32,
        0.0,
        0.0,
    )?;
    cx.elementwise(
        n,
        Kernel::EwMulF32,
        &[&t("xc"), &t("k")],
        &t("xs"),
        DT::F32,
        0.0,
        0.0,
    )?;
    cx.elementwise(
        n,
        Kernel::EwAddF32,
        &[&t("xs"), &bias],
        out,
        DT::F32,
        0.0,
        0.0,
    )
}

#[cfg(test)]
mod tests;
