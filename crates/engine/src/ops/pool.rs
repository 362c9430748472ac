//! Windowed pooling, 1-D and 2-D: MaxPool, AveragePool (count_include_pad), LpPool
//! (`max_pool_f32`, `avg_pool_f32`, `lp_pool_f32`: a thread per output element).

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::conv::window;
use super::ctx::{Ctx, R, attr_i, attr_ints, ins, out0};
use crate::plan::groups_1d;
use crate::tensor::{DT, numel};

pub(super) fn register(r: &mut Registry) {
    r.op(
        "MaxPool",
        1,
        &[
            "auto_pad",
            "ceil_mode",
            "dilations",
            "kernel_shape",
            "pads",
            "storage_order",
            "strides",
        ],
        lower_pool,
    );
    r.op(
        "AveragePool",
        1,
        &[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "strides",
        ],
        lower_pool,
    );
    r.op(
        "LpPool",
        1,
        &[
            "auto_pad",
            "ceil_mode",
            "dilations",
            "kernel_shape",
            "p",
            "pads",
            "strides",
        ],
        lower_pool,
    );
}

fn lower_pool(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    pool(cx, n, ins[0], out0(n))
}

fn pool(cx: &mut Ctx, n: &NodeInfo, x: &str, out: &str) -> R<()> {
    let s = cx.shape(x)?;
    if n.outputs.len() > 1 && !n.outputs[1].is_empty() {
        return Err("MaxPool indices output is not supported".into());
    }
    if cx.dt(x)? != DT::F32 {
        return Err("only f32".into());
    }
    let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
        .ok_or("kernel_shape")?
        .iter()
        .map(|&v| v as usize)
        .collect();
    let ceil_mode = attr_i(n, "ceil_mode", 0) != 0;
    let (strides, dil, pads, osp, _) = window(n, &s, &kernel, ceil_mode)?;
    let sp = s.len() - 2;
    let mut oshape = vec![s[0], s[1]];
    oshape.extend(&osp);
    cx.new_tensor(out, oshape.clone(), DT::F32)?;
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
        "MaxPool" => Kernel::MaxPoolF32,
        "AveragePool" => Kernel::AvgPoolF32,
        _ => Kernel::LpPoolF32,
    };
    let total = numel(&oshape);
    let p = params::Pool2d {
        nc: (s[0] * s[1]) as u32,
        h: h as u32,
        w: w as u32,
        oh: oh as u32,
        ow: ow as u32,
        kh: kh as u32,
        kw: kw as u32,
        sh: sh as u32,
        sw: sw as u32,
        dh: dh as u32,
        dw: dw as u32,
        ph: ph as u32,
        pw: pw as u32,
        include_pad: include_pad as u32,
        total: total as u32,
        pad_h_end: peh as u32,
        pad_w_end: pew as u32,
        p: p_norm,
        ..Default::default()
    }
    .words();
    if total > 0 {
        cx.dispatch(
            n,
            kernel_name,
            vec![cx.bind(x), cx.bind(out)],
            p,
            groups_1d(total, 256),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
