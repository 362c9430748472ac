//! Integer products: MatMulInteger, ConvInteger and their QLinear forms (an exact i32
//! product, then a requantization). Zero points are subtracted first, on the host for
//! constant weights; a constant 8-bit weight stays packed and its zero point is subtracted
//! in registers (`matmul_int_*8w`, `conv2d_*8w_direct`).

use m2w_kernels::{Kernel, params};
use m2w_model::{DType, NodeInfo};

use super::{int_range, opt, quantized_type};
use crate::ops::ctx::{Ctx, R, ins, out0};
use crate::sym::{self, Expr};
use crate::tensor::{DT, HostTensor, numel};

/// `x - zero_point` as i32, the zero point viewed as `zp_view` (None: x as is). Folded on
/// the host when both are constants (a weight and its zero point).
pub(in crate::ops) fn centred(
    cx: &mut Ctx,
    n: &NodeInfo,
    x: &str,
    zp: Option<&str>,
    zp_view: impl Fn(&[usize]) -> Vec<usize>,
    name: &str,
) -> R<String> {
    if cx.dt(x)? != DT::I32 {
        return Err(format!("input '{x}' must be an integer tensor"));
    }
    let Some(z) = zp else {
        return Ok(x.to_string());
    };
    if cx.dt(z)? != DT::I32 {
        return Err("the zero point must be an integer".into());
    }
    let view = zp_view(&cx.shape(z)?);
    if let (Some(xv), Some(zv)) = (cx.konst(x), cx.konst(z)) {
        let xs = xv.shape.clone();
        let zv = crate::ops::host::expand(&zv.reshaped(view), &xs)?.as_i64();
        let v = xv.as_i64().iter().zip(&zv).map(|(a, b)| a - b).collect();
        cx.add_const(name, HostTensor::i64(xs, v));
        return Ok(name.to_string());
    }
    let zname = format!("{name}::zero_point");
    cx.view(&zname, z, view)?;
    cx.elementwise(n, Kernel::EwSubI32, &[x, &zname], name, DT::I32, 0.0, 0.0)?;
    Ok(name.to_string())
}

/// A matrix operand's per-row (A) or per-column (B) zero point, 1-D in the older spec,
/// viewed so that it broadcasts against the operand; N-D ones broadcast as they are.
fn row_view(z: &[usize]) -> Vec<usize> {
    if z.len() == 1 {
        vec![z[0], 1]
    } else {
        z.to_vec()
    }
}

fn same(z: &[usize]) -> Vec<usize> {
    z.to_vec()
}

/// The exact i32 product `(a - a_zero_point) x (b - b_zero_point)`.
fn integer_product(
    cx: &mut Ctx,
    n: &NodeInfo,
    (a, a_zp): (&str, Option<&str>),
    (b, b_zp): (&str, Option<&str>),
    out: &str,
) -> R<()> {
    let a_view = if cx.sym_shape(a)?.len() == 1 {
        same
    } else {
        row_view
    };
    let a = centred(cx, n, a, a_zp, a_view, &format!("{out}::a"))?;
    times_weight(cx, n, &a, (b, b_zp), same, out)
}

/// `a x (b - b_zero_point)` exact in i32 for an already centred `a`, the zero point viewed
/// as `zp_view` against b. A constant 8-bit b (a weight) stays as the model stores it,
/// packed once and shared by every node that reads it (`matmul_int_*8w`); any other b is
/// centred (on the host when constant) and multiplied on the i32 tiled kernel.
pub(in crate::ops) fn times_weight(
    cx: &mut Ctx,
    n: &NodeInfo,
    a: &str,
    (b, b_zp): (&str, Option<&str>),
    zp_view: fn(&[usize]) -> Vec<usize>,
    out: &str,
) -> R<()> {
    if packed_product(cx, n, a, (b, b_zp), zp_view, out)? {
        return Ok(());
    }
    let bc = centred(cx, n, b, b_zp, zp_view, &format!("{out}::b"))?;
    crate::ops::matmul::matmul(cx, n, a, &bc, out, false, false)
}

/// [`times_weight`] on the packed kernel; Ok(false) when b is not a constant 8-bit
/// [K, N] or [batch, K, N] weight with a constant zero point (or a' shape does not fit).
fn packed_product(
    cx: &mut Ctx,
    n: &NodeInfo,
    a: &str,
    (b, b_zp): (&str, Option<&str>),
    zp_view: fn(&[usize]) -> Vec<usize>,
    out: &str,
) -> R<bool> {
    let signed = match cx.declared(b) {
        Some(DType::I8) => true,
        Some(DType::U8) => false,
        _ => return Ok(false),
    };
    let (Some(q), sa) = (cx.konst(b), cx.sym_shape(a)?) else {
        return Ok(false);
    };
    let sb = q.shape.clone();
    let (batch, k, nn) = match sb.as_slice() {
        [k, nn] => (1, *k, *nn),
        [d, k, nn] if sa.len() == 2 => (*d, *k, *nn),
        _ => return Ok(false),
    };
    if sa.last() != Some(&Expr::from(k)) || cx.dt(a)? != DT::I32 {
        return Ok(false);
    }
    let mut per_column = sb.clone();
    per_column[sb.len() - 2] = 1;
    let zero_points = match b_zp {
        None => vec![0; batch * nn],
        Some(z) => match cx.konst(z) {
            Some(zv) => {
                let view = zp_view(&zv.shape);
                crate::ops::host::expand(&zv.reshaped(view), &per_column)?.as_i64()
            }
            None => return Ok(false),
        },
    };
    let rows = sym::numel(&sa[..sa.len() - 1]);
    if cx.at_max(&rows) > 65535 * 16 || batch > 65535 {
        return Ok(false);
    }
    let packed = format!("{b}::packed");
    if !cx.plan.constants.contains_key(&packed) {
        let dt = if signed { DT::I8 } else { DT::U8 };
        cx.add_const(&packed, HostTensor::packed(dt, sb.clone(), &q.as_i64()));
    }
    // One value per batch when the zero point does not vary along the columns.
    let per_column = (0..batch).any(|z| {
        let row = &zero_points[z * nn..(z + 1) * nn];
        row.iter().any(|&v| v != row[0])
    });
    let zero_points: Vec<i64> = if per_column {
        zero_points
    } else {
        zero_points.iter().step_by(nn.max(1)).copied().collect()
    };
    // Shared too: the same weight and zero point read by many nodes (tied layers).
    let zname = format!("{b}::zero_point::{}", b_zp.unwrap_or("none"));
    if !cx.plan.constants.contains_key(&zname) {
        let len = zero_points.len();
        cx.add_const(&zname, HostTensor::i64(vec![len], zero_points));
    }
    let mut oshape = if batch > 1 || sb.len() == 3 {
        vec![Expr::from(batch), rows.clone()]
    } else {
        sa[..sa.len() - 1].to_vec()
    };
    oshape.push(Expr::from(nn));
    cx.new_tensor_sym(out, oshape, DT::I32)?;
    let p = params::MatmulInt8w::<Expr> {
        m: rows.clone(),
        n: Expr::from(nn),
        k: Expr::from(k),
        a_batch_stride: Expr::Const(0),
        zp_per_column: Expr::from(per_column as usize),
    }
    .slots();
    if rows != Expr::Const(0) && nn > 0 {
        let kernel = if signed {
            Kernel::MatmulIntI8w
        } else {
            Kernel::MatmulIntU8w
        };
        let bindings = vec![cx.bind(a), cx.bind(&packed), cx.bind(&zname), cx.bind(out)];
        let groups = [
            Expr::from(nn.div_ceil(16)),
            rows.ceil_div(16),
            Expr::from(batch),
        ];
        cx.dispatch_sym(n, kernel, bindings, p, groups);
    }
    Ok(true)
}

pub(super) fn lower_matmul_integer(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    integer_product(cx, n, (ins[0], opt(n, 2)), (ins[1], opt(n, 3)), out0(n))
}

/// `y = saturate(round(acc * multiplier) + y_zero_point)`, the multiplier being
/// `x_scale * w_scale / y_scale` computed in that order in f32 (as ONNX Runtime does),
/// with `w_scale` viewed as `w_view`.
#[allow(clippy::too_many_arguments)]
fn requantize(
    cx: &mut Ctx,
    n: &NodeInfo,
    acc: &str,
    (x_scale, w_scale, y_scale): (&str, &str, &str),
    w_view: Vec<usize>,
    y_zp: Option<&str>,
    out: &str,
) -> R<()> {
    for s in [x_scale, w_scale, y_scale] {
        if cx.dt(s)? != DT::F32 {
            return Err("scales must be floats".into());
        }
    }
    let ty = quantized_type(cx, n, y_zp)?;
    let range = int_range(ty)?;
    let wv = format!("{out}::w_scale");
    cx.view(&wv, w_scale, w_view)?;
    let xw = format!("{out}::xw_scale");
    cx.elementwise(n, Kernel::EwMulF32, &[x_scale, &wv], &xw, DT::F32, 0.0, 0.0)?;
    let mult = format!("{out}::multiplier");
    cx.elementwise(
        n,
        Kernel::EwDivF32,
        &[&xw, y_scale],
        &mult,
        DT::F32,
        0.0,
        0.0,
    )?;
    let zp = match y_zp {
        Some(z) => z.to_string(),
        None => {
            let z = format!("{out}::y_zero_point");
            cx.add_const(&z, HostTensor::i64(vec![], vec![0]));
            z
        }
    };
    cx.elementwise(
        n,
        Kernel::EwRequantizeI32,
        &[acc, &mult, &zp],
        out,
        DT::I32,
        range.0,
        range.1,
    )?;
    cx.declare(out, ty);
    Ok(())
}

pub(super) fn lower_qlinear_matmul(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 8 {
        return Err("QLinearMatMul takes 8 inputs".into());
    }
    let out = out0(n);
    let acc = format!("{out}::acc");
    integer_product(cx, n, (i[0], opt(n, 2)), (i[3], opt(n, 5)), &acc)?;
    // a_scale is per tensor or per row of a; b_scale per tensor or per column of b.
    let a_scale = format!("{out}::a_scale");
    let sa = cx.shape(i[1])?;
    cx.view(&a_scale, i[1], row_view(&sa))?;
    let sb = cx.shape(i[4])?;
    requantize(cx, n, &acc, (&a_scale, i[4], i[6]), sb, opt(n, 7), out)
}

/// ConvInteger's exact i32 convolution of zero-point-centred x and w (w's zero point per
/// tensor or per output channel), with an optional i32 bias.
fn integer_conv(
    cx: &mut Ctx,
    n: &NodeInfo,
    (x, x_zp): (&str, Option<&str>),
    (w, w_zp): (&str, Option<&str>),
    bias: Option<&str>,
    out: &str,
) -> R<()> {
    // w's zero point is per tensor or one per output channel (w's first axis).
    let wrank = cx.shape(w)?.len();
    let per_channel = move |z: &[usize]| {
        if z.len() == 1 && z[0] > 1 {
            let mut v = vec![1; wrank];
            v[0] = z[0];
            v
        } else {
            z.to_vec()
        }
    };
    let x = centred(cx, n, x, x_zp, same, &format!("{out}::x"))?;
    if let Some(b) = bias
        && cx.dt(b)? != DT::I32
    {
        return Err("the bias must be int32".into());
    }
    // A constant 8-bit weight stays packed (shared), its zero point per output channel.
    let signed = match cx.declared(w) {
        Some(DType::I8) => Some(true),
        Some(DType::U8) => Some(false),
        _ => None,
    };
    let zero_points = match w_zp {
        None => Some(None),
        Some(z) => cx.konst(z).map(Some),
    };
    if let (Some(signed), Some(q), Some(zp)) = (signed, cx.konst(w), zero_points) {
        let m = q.shape[0];
        let zp = match zp {
            Some(z) if z.len() == m => z.as_i64(),
            Some(z) if z.len() == 1 => vec![z.as_i64()[0]; m],
            Some(z) => return Err(format!("weight zero point of shape {:?}", z.shape)),
            None => vec![0; m],
        };
        let packed = format!("{w}::packed");
        if !cx.plan.constants.contains_key(&packed) {
            let dt = if signed { DT::I8 } else { DT::U8 };
            cx.add_const(
                &packed,
                HostTensor::packed(dt, q.shape.clone(), &q.as_i64()),
            );
        }
        let zname = format!("{out}::w_zero_point");
        cx.add_const(&zname, HostTensor::i64(vec![m], zp));
        let args = [x.as_str(), packed.as_str(), bias.unwrap_or("")];
        let kernel = if signed {
            Kernel::Conv2dI8wDirect
        } else {
            Kernel::Conv2dU8wDirect
        };
        return crate::ops::conv::conv_with(
            cx,
            n,
            &args,
            out,
            Some(crate::ops::conv::PackedWeight {
                kernel,
                zero_point: zname,
                scale: None,
                shape: q.shape.clone(),
            }),
        );
    }
    let w = centred(cx, n, w, w_zp, per_channel, &format!("{out}::w"))?;
    let mut args = vec![x.as_str(), w.as_str()];
    if let Some(b) = bias {
        args.push(b);
    }
    crate::ops::conv::conv(cx, n, &args, out)
}

pub(super) fn lower_conv_integer(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    integer_conv(cx, n, (i[0], opt(n, 2)), (i[1], opt(n, 3)), None, out0(n))
}

pub(super) fn lower_qlinear_conv(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 8 {
        return Err("QLinearConv takes at least 8 inputs".into());
    }
    let out = out0(n);
    let acc = format!("{out}::acc");
    integer_conv(cx, n, (i[0], opt(n, 2)), (i[3], opt(n, 5)), opt(n, 8), &acc)?;
    // w_scale is per tensor or per output channel (axis 1 of the [N, M, ...] result).
    let rank = cx.sym_shape(&acc)?.len();
    let ws = cx.shape(i[4])?;
    let w_view = if numel(&ws) > 1 {
        let mut v = vec![1; rank - 1];
        v[0] = numel(&ws);
        v
    } else {
        ws
    };
    requantize(cx, n, &acc, (i[1], i[4], i[6]), w_view, opt(n, 7), out)
}
