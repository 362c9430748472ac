//! Softmax, LogSoftmax and Hardmax along one axis (opset < 13: over the flattened tail),
//! a thread per row (`softmax_f32`, `log_softmax_f32`, `hardmax_f32`).

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_i, ins, norm_axis, out0};
use crate::plan::groups_1d_sym;
use crate::sym::{self, Expr};
use crate::tensor::DT;

pub(super) fn register(r: &mut Registry) {
    for op in ["Softmax", "LogSoftmax", "Hardmax"] {
        r.op(op, 1, &["axis"], lower_softmax);
    }
}

fn lower_softmax(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let op = n.op_type.as_str();
    let s = cx.sym_shape(ins[0])?;
    if cx.dt(ins[0])? != DT::F32 {
        return Err("only f32".into());
    }
    let legacy = cx.opset < 13;
    let axis = norm_axis(attr_i(n, "axis", if legacy { 1 } else { -1 }), s.len())?;
    let (len, inner) = if legacy {
        (sym::numel(&s[axis..]), Expr::Const(1))
    } else {
        (s[axis].clone(), sym::numel(&s[axis + 1..]))
    };
    // Rows: every dim but the softmax axis (and, before opset 13, its tail).
    let rows = if legacy {
        sym::numel(&s[..axis])
    } else {
        sym::numel(&s[..axis]) * inner.clone()
    };
    cx.new_tensor_sym(out, s.clone(), DT::F32)?;
    let kernel = match op {
        "Softmax" => Kernel::SoftmaxF32,
        "LogSoftmax" => Kernel::LogSoftmaxF32,
        _ => Kernel::HardmaxF32,
    };
    if rows.clone() * len.clone() != Expr::Const(0) {
        let p = params::Softmax::<Expr> {
            rows: rows.clone(),
            len,
            inner,
            pad: Expr::Const(0),
        }
        .slots();
        let groups = groups_1d_sym(&rows, 256);
        cx.dispatch_sym(n, kernel, vec![cx.bind(ins[0]), cx.bind(out)], p, groups);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
