//! Convolution and transposed convolution, 1-D and 2-D, with groups, strides, dilations,
//! pads and auto_pad (`conv2d_f32_direct`, `conv_transpose2d_f32_direct`: a thread per
//! output element). `window` is the geometry shared with the pooling ops.

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_i, attr_ints, attr_s, ins, out0};
use crate::plan::{Binding, groups_1d_sym};
use crate::sym::{self, Expr};
use crate::tensor::DT;

/// The window attributes Conv, ConvInteger and QLinearConv share.
pub(super) const CONV_ATTRS: &[&str] = &[
    "auto_pad",
    "dilations",
    "group",
    "kernel_shape",
    "pads",
    "strides",
];

pub(super) fn register(r: &mut Registry) {
    r.op("Conv", 1, CONV_ATTRS, lower_conv);
    r.op(
        "ConvTranspose",
        1,
        &[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "output_padding",
            "output_shape",
            "pads",
            "strides",
        ],
        lower_conv_transpose,
    );
}

fn lower_conv(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    conv(cx, n, &ins, out0(n))
}

fn lower_conv_transpose(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    conv_transpose(cx, n, &ins, out0(n))
}

pub(super) fn window(
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

/// [`window`] over spatial sizes that may hold dims: strides, dilations and the kernel are
/// constants; explicit pads stay constants, SAME pads become expressions of the input size
/// (stride 1 keeps them constant). Ceil mode over a symbolic size is refused.
#[allow(clippy::type_complexity)]
pub(super) fn window_sym(
    n: &NodeInfo,
    s: &[Expr],
    kernel: &[usize],
    ceil_mode: bool,
) -> R<(Vec<usize>, Vec<usize>, Vec<Expr>, Vec<Expr>)> {
    if let Some(fixed) = sym::as_fixed(s) {
        let (strides, dil, pads, out, _) = window(n, &fixed, kernel, ceil_mode)?;
        return Ok((strides, dil, sym::fixed(&pads), sym::fixed(&out)));
    }
    let sp = s.len() - 2;
    if sp == 0 || sp > 2 {
        return Err(format!(
            "{sp}-D windows are not supported (1-D and 2-D are)"
        ));
    }
    if ceil_mode {
        return Err("ceil_mode over a symbolic size is not supported".into());
    }
    let ints = |k: &str, d: usize| -> Vec<usize> {
        attr_ints(n, k)
            .unwrap_or(vec![d as i64; if k == "pads" { 2 * sp } else { sp }])
            .iter()
            .map(|&v| v as usize)
            .collect()
    };
    let (strides, dil) = (ints("strides", 1), ints("dilations", 1));
    let mut pads: Vec<Expr> = ints("pads", 0).into_iter().map(Expr::from).collect();
    let auto = attr_s(n, "auto_pad", "NOTSET");
    let mut out = vec![Expr::Const(0); sp];
    for d in 0..sp {
        let ek = ((kernel[d] - 1) * dil[d] + 1) as i64;
        let st = strides[d] as i64;
        let input = s[2 + d].clone();
        match auto.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = input.clone().ceil_div(st);
                let total = ((o.clone() - Expr::Const(1)) * Expr::Const(st) + Expr::Const(ek)
                    - input)
                    .max(Expr::Const(0));
                let half = total.clone().floor_div(2);
                let rest = total - half.clone();
                let (lo, hi) = if auto == "SAME_UPPER" {
                    (half, rest)
                } else {
                    (rest, half)
                };
                pads[d] = lo;
                pads[d + sp] = hi;
                out[d] = o;
            }
            "VALID" => {
                pads[d] = Expr::Const(0);
                pads[d + sp] = Expr::Const(0);
                out[d] = (input - Expr::Const(ek)).floor_div(st) + Expr::Const(1);
            }
            _ => {
                let span = input + pads[d].clone() + pads[d + sp].clone() - Expr::Const(ek);
                out[d] = span.floor_div(st) + Expr::Const(1);
            }
        }
    }
    Ok((strides, dil, pads, out))
}

pub(super) fn conv(cx: &mut Ctx, n: &NodeInfo, ins: &[&str], out: &str) -> R<()> {
    conv_with(cx, n, ins, out, None)
}

/// A weight kept packed as the model stores it (8-bit), for ConvInteger: the kernel
/// (`conv2d_i8w_direct` / `conv2d_u8w_direct`) and its per-output-channel zero point.
pub(super) struct PackedWeight {
    pub kernel: Kernel,
    pub zero_point: String,
    /// Per output channel, for the f32 rows (a dequantized weight).
    pub scale: Option<String>,
    pub shape: Vec<usize>,
}

pub(super) fn conv_with(
    cx: &mut Ctx,
    n: &NodeInfo,
    ins: &[&str],
    out: &str,
    mut packed: Option<PackedWeight>,
) -> R<()> {
    let s = cx.sym_shape(ins[0])?;
    let dt = cx.dt(ins[0])?;
    // An f32 weight folded from 8-bit values stays 8-bit, dequantized in registers.
    let mut names: Vec<String> = ins.iter().map(|s| s.to_string()).collect();
    if packed.is_none()
        && dt == DT::F32
        && let Some((q, scale, zp, signed)) = super::quant::packed_8bit(cx, &names[1], 0)
    {
        packed = Some(PackedWeight {
            kernel: if signed {
                Kernel::Conv2dF32I8wDirect
            } else {
                Kernel::Conv2dF32U8wDirect
            },
            zero_point: zp,
            scale: Some(scale),
            shape: cx.shape(ins[1])?,
        });
        names[1] = q;
    }
    let ins: Vec<&str> = names.iter().map(String::as_str).collect();
    let ws = match &packed {
        Some(p) => p.shape.clone(),
        None => cx.shape(ins[1])?,
    };
    // i32 is ConvInteger's product of zero-point-centred integers.
    let shader = match (&packed, dt) {
        (Some(p), DT::I32 | DT::F32) => p.kernel,
        (None, DT::F32) => Kernel::Conv2dF32Direct,
        (None, DT::I32) => Kernel::Conv2dI32Direct,
        _ => return Err(format!("{} convolution is not supported", dt.suffix())),
    };
    if packed.is_none() && cx.dt(ins[1])? != dt {
        return Err("the weight's type differs from the input's".into());
    }
    let group = attr_i(n, "group", 1) as usize;
    let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
        .map(|k| k.iter().map(|&v| v as usize).collect())
        .unwrap_or_else(|| ws[2..].to_vec());
    if s.len() < 3 {
        return Err("a convolution needs rank >= 3".into());
    }
    let (strides, dil, pads, osp) = window_sym(n, &s, &kernel, false)?;
    let m = ws[0];
    if s[1] != Expr::from(ws[1] * group) || m % group != 0 {
        return Err(format!(
            "channels {} do not match weight {ws:?} with group {group}",
            s[1]
        ));
    }
    let mut bound: Vec<&str> = ins.to_vec();
    if let Some(p) = &packed {
        bound.resize(3, "");
        bound.push(&p.zero_point);
        if let Some(scale) = &p.scale {
            bound.push(scale);
        }
    }
    conv_dispatch(
        cx, n, shader, &bound, out, &s, m, group, &kernel, &strides, &dil, &pads, &osp,
    )
}

/// The dispatch shared by Conv and ConvTranspose: an [N, M, OH, OW] output of a 1-D or
/// 2-D window over [N, C, H, W] (1-D runs with H = 1). Batch and spatial sizes may hold
/// dims.
#[allow(clippy::too_many_arguments)]
fn conv_dispatch(
    cx: &mut Ctx,
    n: &NodeInfo,
    shader: Kernel,
    ins: &[&str],
    out: &str,
    s: &[Expr],
    m: usize,
    group: usize,
    kernel: &[usize],
    strides: &[usize],
    dil: &[usize],
    pads: &[Expr],
    osp: &[Expr],
) -> R<()> {
    let sp = s.len() - 2;
    let mut oshape = vec![s[0].clone(), Expr::from(m)];
    oshape.extend(osp.iter().cloned());
    cx.new_tensor_sym(out, oshape.clone(), cx.dt(ins[0])?)?;
    let c = |v: usize| Expr::from(v);
    let one = Expr::Const(1);
    let (h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow) = if sp == 1 {
        (
            one.clone(),
            s[2].clone(),
            one.clone(),
            c(kernel[0]),
            one.clone(),
            c(strides[0]),
            one.clone(),
            c(dil[0]),
            Expr::Const(0),
            pads[0].clone(),
            one.clone(),
            osp[0].clone(),
        )
    } else {
        (
            s[2].clone(),
            s[3].clone(),
            c(kernel[0]),
            c(kernel[1]),
            c(strides[0]),
            c(strides[1]),
            c(dil[0]),
            c(dil[1]),
            pads[0].clone(),
            pads[1].clone(),
            osp[0].clone(),
            osp[1].clone(),
        )
    };
    let total = sym::numel(&oshape);
    let has_bias = ins.get(2).is_some_and(|b| !b.is_empty());
    // conv2d and conv_transpose2d declare the same uniform fields.
    macro_rules! geometry {
        ($params:ident) => {
            params::$params::<Expr> {
                n: s[0].clone(),
                c: s[1].clone(),
                h,
                w,
                m: c(m),
                oh,
                ow,
                groups: c(group),
                kh,
                kw,
                sh,
                sw,
                dh,
                dw,
                ph,
                pw,
                has_bias: c(has_bias as usize),
                total: total.clone(),
                ..Default::default()
            }
            .slots()
        };
    }
    let p = match shader {
        Kernel::ConvTranspose2dF32Direct => geometry!(ConvTranspose2d),
        _ => geometry!(Conv2d),
    };
    let bias = if has_bias {
        cx.bind(ins[2])
    } else {
        Binding::Dummy
    };
    let mut bindings = vec![cx.bind(ins[0]), cx.bind(ins[1]), bias, cx.bind(out)];
    // A packed weight's zero point and scale (see `PackedWeight`).
    for extra in &ins[3.min(ins.len())..] {
        bindings.push(cx.bind(extra));
    }
    if total != Expr::Const(0) {
        let groups = groups_1d_sym(&total, 256);
        cx.dispatch_sym(n, shader, bindings, p, groups);
    }
    Ok(())
}

fn conv_transpose(cx: &mut Ctx, n: &NodeInfo, ins: &[&str], out: &str) -> R<()> {
    let ss = cx.sym_shape(ins[0])?;
    if sym::as_fixed(&ss).is_none() {
        return conv_transpose_sym(cx, n, ins, out, &ss);
    }
    let s = cx.shape(ins[0])?;
    let ws = cx.shape(ins[1])?;
    if cx.dt(ins[0])? != DT::F32 || !(s.len() == 3 || s.len() == 4) {
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
    conv_dispatch(
        cx,
        n,
        Kernel::ConvTranspose2dF32Direct,
        ins,
        out,
        &sym::fixed(&s),
        m,
        group,
        &kernel,
        &strides,
        &dil,
        &sym::fixed(&pads),
        &sym::fixed(&osp),
    )
}

/// ConvTranspose over sizes that hold dims: explicit pads only (no output_shape or SAME
/// padding, whose pads would depend on the size).
fn conv_transpose_sym(cx: &mut Ctx, n: &NodeInfo, ins: &[&str], out: &str, s: &[Expr]) -> R<()> {
    let ws = cx.shape(ins[1])?;
    if cx.dt(ins[0])? != DT::F32 || !(s.len() == 3 || s.len() == 4) {
        return Err("only f32 1-D and 2-D".into());
    }
    if attr_ints(n, "output_shape").is_some() || attr_s(n, "auto_pad", "NOTSET") != "NOTSET" {
        return Err("output_shape or auto_pad over a symbolic size is not supported".into());
    }
    let sp = s.len() - 2;
    let group = attr_i(n, "group", 1) as usize;
    let m = ws[1] * group;
    let ints = |k: &str, d: i64, len: usize| -> Vec<usize> {
        attr_ints(n, k)
            .unwrap_or(vec![d; len])
            .iter()
            .map(|&v| v as usize)
            .collect()
    };
    let kernel: Vec<usize> = attr_ints(n, "kernel_shape")
        .map(|k| k.iter().map(|&v| v as usize).collect())
        .unwrap_or_else(|| ws[2..].to_vec());
    let (strides, dil) = (ints("strides", 1, sp), ints("dilations", 1, sp));
    let out_pad = ints("output_padding", 0, sp);
    let pads = ints("pads", 0, 2 * sp);
    let osp: Vec<Expr> = (0..sp)
        .map(|d| {
            (s[2 + d].clone() - Expr::Const(1)) * Expr::from(strides[d])
                + Expr::from((kernel[d] - 1) * dil[d] + 1 + out_pad[d])
                - Expr::from(pads[d] + pads[d + sp])
        })
        .collect();
    conv_dispatch(
        cx,
        n,
        Kernel::ConvTranspose2dF32Direct,
        ins,
        out,
        s,
        m,
        group,
        &kernel,
        &strides,
        &dil,
        &sym::fixed(&pads),
        &osp,
    )
}

#[cfg(test)]
mod tests;
