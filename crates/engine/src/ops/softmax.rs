//! Softmax, LogSoftmax and Hardmax along one axis (opset < 13: over the flattened tail),
//! a thread per row (`softmax_f32`, `log_softmax_f32`, `hardmax_f32`).

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_i, ins, norm_axis, out0};
use crate::plan::groups_1d;
use crate::tensor::{DT, numel};

pub(super) fn register(r: &mut Registry) {
    for op in ["Softmax", "LogSoftmax", "Hardmax"] {
        r.op(op, 1, &["axis"], lower_softmax);
    }
}

fn lower_softmax(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let op = n.op_type.as_str();
    let s = cx.shape(ins[0])?;
    if cx.dt(ins[0])? != DT::F32 {
        return Err("only f32".into());
    }
    let legacy = cx.opset < 13;
    let axis = norm_axis(attr_i(n, "axis", if legacy { 1 } else { -1 }), s.len())?;
    let (len, inner) = if legacy {
        (numel(&s[axis..]), 1)
    } else {
        (s[axis], numel(&s[axis + 1..]))
    };
    let rows = numel(&s) / len.max(1);
    cx.new_tensor(out, s.clone(), DT::F32)?;
    let kernel = match op {
        "Softmax" => Kernel::SoftmaxF32,
        "LogSoftmax" => Kernel::LogSoftmaxF32,
        _ => Kernel::HardmaxF32,
    };
    if rows * len > 0 {
        cx.dispatch(
            n,
            kernel,
            vec![cx.bind(ins[0]), cx.bind(out)],
            params::Softmax {
                rows: rows as u32,
                len: len as u32,
                inner: inner as u32,
                pad: 0,
            }
            .words(),
            groups_1d(rows, 256),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
