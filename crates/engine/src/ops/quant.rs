//! Quantization ops. Integers of every width are i32 on the GPU (see `tensor.rs`); the
//! type the graph declares decides only where QuantizeLinear saturates.
//!
//! - DequantizeLinear / QuantizeLinear, per tensor, per axis or blocked (`block_size`
//!   dividing the axis: x is viewed as [.., blocks, block, ..] and the parameters as
//!   [.., blocks, 1, ..], so one element-wise kernel serves all three). A
//!   DequantizeLinear of constants (a quantized weight) folds on the host to f32.
//! - DynamicQuantizeLinear: one workgroup finds the range, then the QuantizeLinear kernel.
//! - MatMulInteger, ConvInteger: zero points subtracted first (on the host for constant
//!   weights), then the exact i32 product on the integer rows of the matmul / conv
//!   kernels. QLinearMatMul / QLinearConv add a requantization of that product.
//!
//! - com.microsoft MatMulNBits (4 or 8 bits, blocks along K): the weight stays packed as
//!   the model stores it and `matmul_nbits*` dequantizes it in registers.
//!
//! 4-/2-bit and float8 tensor types are refused (their tensors are not read yet).

use m2w_kernels::{Kernel, params};
use m2w_model::{DType, NodeInfo};

use super::Registry;
use super::conv::CONV_ATTRS;
use super::ctx::{Ctx, R, attr_i, host_input as get, ins, norm_axis, out0};
use crate::tensor::{DT, Data, HostTensor, numel};

pub(super) fn register(r: &mut Registry) {
    r.op(
        "DequantizeLinear",
        10,
        &["axis", "block_size", "output_dtype"],
        lower_dequantize,
    )
    .fold(fold_dequantize);
    r.op(
        "QuantizeLinear",
        10,
        &[
            "axis",
            "block_size",
            "output_dtype",
            "precision",
            "saturate",
        ],
        lower_quantize,
    );
    r.op("DynamicQuantizeLinear", 11, &[], lower_dynamic_quantize);
    r.op("MatMulInteger", 10, &[], lower_matmul_integer);
    r.op("QLinearMatMul", 10, &[], lower_qlinear_matmul);
    r.op("ConvInteger", 10, CONV_ATTRS, lower_conv_integer);
    r.op("QLinearConv", 10, CONV_ATTRS, lower_qlinear_conv);
    r.contrib(
        "com.microsoft",
        "MatMulNBits",
        &["K", "N", "accuracy_level", "bits", "block_size"],
        lower_matmul_nbits,
    );
    r.contrib(
        "com.microsoft",
        "GatherBlockQuantized",
        &["bits", "block_size", "gather_axis", "quantize_axis"],
        lower_gather_block_quantized,
    );
}

/// How x lines up with its scale and zero point: x viewed as `x`, the parameters as
/// `param` (which broadcasts against it).
struct Layout {
    x: Vec<usize>,
    param: Vec<usize>,
}

fn layout(n: &NodeInfo, x: &[usize], param: &[usize]) -> R<Layout> {
    let block = attr_i(n, "block_size", 0);
    let count: usize = param.iter().product();
    if block == 0 && count == 1 && param.len() <= 1 {
        return Ok(Layout {
            x: x.to_vec(),
            param: vec![],
        });
    }
    let axis = norm_axis(attr_i(n, "axis", 1), x.len())?;
    if block == 0 {
        if param.len() != 1 || param[0] != x[axis] {
            return Err(format!(
                "scale/zero point of shape {param:?} is neither one value nor one per element of axis {axis} ({})",
                x[axis]
            ));
        }
        let mut shape = vec![1; x.len()];
        shape[axis] = x[axis];
        return Ok(Layout {
            x: x.to_vec(),
            param: shape,
        });
    }
    let b = usize::try_from(block).map_err(|_| format!("block_size {block} is negative"))?;
    let fits = param.len() == x.len()
        && (0..x.len()).all(|d| {
            if d == axis {
                param[d] == x[d].div_ceil(b)
            } else {
                param[d] == x[d]
            }
        });
    if !fits {
        return Err(format!(
            "scale/zero point of shape {param:?} does not block {x:?} by {b} along axis {axis}"
        ));
    }
    if x[axis] % b != 0 {
        return Err(format!(
            "blocks of {b} that do not divide axis {axis} ({}) are not supported",
            x[axis]
        ));
    }
    let split = |s: &[usize], inner: usize| {
        let mut v = s[..axis].to_vec();
        v.extend([x[axis] / b, inner]);
        v.extend(&s[axis + 1..]);
        v
    };
    Ok(Layout {
        x: split(x, b),
        param: split(param, 1),
    })
}

/// The name of input `i`, when given.
fn opt<'a>(n: &'a NodeInfo, i: usize) -> Option<&'a str> {
    n.inputs
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// `out = kernel(x, scale, zero_point)` over `lay`, with the result viewed back as x's
/// shape. An absent zero point is 0.
#[allow(clippy::too_many_arguments)]
fn affine(
    cx: &mut Ctx,
    n: &NodeInfo,
    kernel: Kernel,
    (x, scale, zp): (&str, &str, Option<&str>),
    lay: &Layout,
    out: &str,
    out_dt: DT,
    range: (f32, f32),
) -> R<()> {
    let xs = cx.shape(x)?;
    let xv = format!("{out}::x");
    cx.view(&xv, x, lay.x.clone())?;
    let sv = format!("{out}::scale");
    cx.view(&sv, scale, lay.param.clone())?;
    let zv = format!("{out}::zero_point");
    match zp {
        Some(z) => {
            if cx.dt(z)? != DT::I32 {
                return Err("the zero point must be an integer".into());
            }
            cx.view(&zv, z, lay.param.clone())?;
        }
        None => cx.add_const(&zv, HostTensor::i64(vec![], vec![0])),
    }
    if lay.x == xs {
        return cx.elementwise(n, kernel, &[&xv, &sv, &zv], out, out_dt, range.0, range.1);
    }
    let blocked = format!("{out}::blocked");
    cx.elementwise(
        n,
        kernel,
        &[&xv, &sv, &zv],
        &blocked,
        out_dt,
        range.0,
        range.1,
    )?;
    cx.view(out, &blocked, xs)
}

fn lower_dequantize(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    check_float_output(n)?;
    if cx.dt(ins[0])? != DT::I32 || cx.dt(ins[1])? != DT::F32 {
        return Err("only integer x with a float scale".into());
    }
    let lay = layout(n, &cx.shape(ins[0])?, &cx.shape(ins[1])?)?;
    affine(
        cx,
        n,
        Kernel::EwDequantizeI32,
        (ins[0], ins[1], opt(n, 2)),
        &lay,
        out0(n),
        DT::F32,
        (0.0, 0.0),
    )
}

fn check_float_output(n: &NodeInfo) -> R<()> {
    match attr_i(n, "output_dtype", 0) {
        0 | 1 | 10 | 16 => Ok(()),
        other => Err(format!(
            "output_dtype {other} is not supported (float types are)"
        )),
    }
}

fn fold_dequantize(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    check_float_output(n)?;
    let x = get(ins, 0)?;
    let scale = get(ins, 1)?;
    let (Data::I64(xv), Data::F32(_)) = (&x.data, &scale.data) else {
        return Err("only integer x with a float scale".into());
    };
    let lay = layout(n, &x.shape, &scale.shape)?;
    let scale = super::host::expand(&scale.reshaped(lay.param.clone()), &lay.x)?;
    let zp = match ins.get(2).and_then(|z| z.as_ref()) {
        Some(z) => super::host::expand(&z.reshaped(lay.param.clone()), &lay.x)?.as_i64(),
        None => vec![0; xv.len()],
    };
    let Data::F32(s) = &scale.data else {
        unreachable!("expanded from f32")
    };
    Ok(vec![HostTensor::f32(
        x.shape.clone(),
        xv.iter()
            .zip(&zp)
            .zip(s)
            .map(|((&q, &z), &s)| (q - z) as f32 * s)
            .collect(),
    )])
}

/// The range of an integer type quantized values saturate to.
fn int_range(dtype: DType) -> R<(f32, f32)> {
    Ok(match dtype {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        other if other.sub_byte().is_some() => {
            let (bits, signed) = other.sub_byte().expect("checked");
            if signed {
                (
                    -(1i32 << (bits - 1)) as f32,
                    ((1i32 << (bits - 1)) - 1) as f32,
                )
            } else {
                (0.0, ((1i32 << bits) - 1) as f32)
            }
        }
        other => {
            return Err(format!(
                "quantizing to {} is not supported (int2/4/8/16, uint2/4/8/16 are)",
                other.name()
            ));
        }
    })
}

/// The type QuantizeLinear (or a requantization) produces: its zero point's, else
/// `output_dtype`, else uint8.
fn quantized_type(cx: &Ctx, n: &NodeInfo, zp: Option<&str>) -> R<DType> {
    match zp {
        Some(z) => cx
            .declared(z)
            .ok_or_else(|| format!("the type of zero point '{z}' is not known at plan time")),
        None => match attr_i(n, "output_dtype", 0) {
            0 => Ok(DType::U8),
            code => Ok(DType::from_onnx(code as i32)),
        },
    }
}

fn lower_quantize(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    if !matches!(attr_i(n, "precision", 0), 0 | 1) {
        return Err("a precision other than f32 is not supported".into());
    }
    if cx.dt(ins[0])? != DT::F32 || cx.dt(ins[1])? != DT::F32 {
        return Err("only float x with a float scale".into());
    }
    let zp = opt(n, 2);
    let ty = quantized_type(cx, n, zp)?;
    let range = int_range(ty)?;
    let lay = layout(n, &cx.shape(ins[0])?, &cx.shape(ins[1])?)?;
    affine(
        cx,
        n,
        Kernel::EwQuantizeF32,
        (ins[0], ins[1], zp),
        &lay,
        out,
        DT::I32,
        range,
    )?;
    cx.declare(out, ty);
    Ok(())
}

/// The name of output `i`, or an internal one when the graph leaves it unnamed.
fn output_or(n: &NodeInfo, i: usize, internal: &str) -> String {
    match n.outputs.get(i).filter(|s| !s.is_empty()) {
        Some(s) => s.clone(),
        None => format!("{}::{internal}", out0(n)),
    }
}

fn lower_dynamic_quantize(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let x = ins(n)[0];
    if cx.dt(x)? != DT::F32 {
        return Err("only float x".into());
    }
    let y = out0(n);
    let scale = output_or(n, 1, "scale");
    let zp = output_or(n, 2, "zero_point");
    cx.new_tensor(&scale, vec![], DT::F32)?;
    cx.new_tensor(&zp, vec![], DT::I32)?;
    let count = numel(&cx.shape(x)?);
    cx.dispatch(
        n,
        Kernel::DynamicQuantizeParamsU8,
        vec![cx.bind(x), cx.bind(&scale), cx.bind(&zp)],
        params::DynamicQuantize { n: count as u32 }.words(),
        [1, 1, 1],
    );
    cx.elementwise(
        n,
        Kernel::EwQuantizeF32,
        &[x, &scale, &zp],
        y,
        DT::I32,
        0.0,
        255.0,
    )?;
    cx.declare(y, DType::U8);
    cx.declare(&zp, DType::U8);
    Ok(())
}

/// `x - zero_point` as i32, the zero point viewed as `zp_view` (None: x as is). Folded on
/// the host when both are constants (a weight and its zero point).
pub(super) fn centred(
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
    let xs = cx.shape(x)?;
    if let (Some(xv), Some(zv)) = (cx.konst(x), cx.konst(z)) {
        let zv = super::host::expand(&zv.reshaped(view), &xs)?.as_i64();
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
    let a_view = if cx.shape(a)?.len() == 1 {
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
pub(super) fn times_weight(
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
    super::matmul::matmul(cx, n, a, &bc, out, false, false)
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
    let (Some(q), sa) = (cx.konst(b), cx.shape(a)?) else {
        return Ok(false);
    };
    let sb = q.shape.clone();
    let (batch, k, nn) = match sb.as_slice() {
        [k, nn] => (1, *k, *nn),
        [d, k, nn] if sa.len() == 2 => (*d, *k, *nn),
        _ => return Ok(false),
    };
    if sa.last() != Some(&k) || cx.dt(a)? != DT::I32 {
        return Ok(false);
    }
    let mut per_column = sb.clone();
    per_column[sb.len() - 2] = 1;
    let zero_points = match b_zp {
        None => vec![0; batch * nn],
        Some(z) => match cx.konst(z) {
            Some(zv) => {
                let view = zp_view(&zv.shape);
                super::host::expand(&zv.reshaped(view), &per_column)?.as_i64()
            }
            None => return Ok(false),
        },
    };
    let rows = numel(&sa) / k.max(1);
    if rows > 65535 * 16 || batch > 65535 {
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
        vec![batch, rows]
    } else {
        sa[..sa.len() - 1].to_vec()
    };
    oshape.push(nn);
    cx.new_tensor(out, oshape, DT::I32)?;
    let p = params::MatmulInt8w {
        m: rows as u32,
        n: nn as u32,
        k: k as u32,
        a_batch_stride: 0,
        zp_per_column: per_column as u32,
    }
    .words();
    if rows * nn > 0 {
        cx.dispatch(
            n,
            if signed {
                Kernel::MatmulIntI8w
            } else {
                Kernel::MatmulIntU8w
            },
            vec![cx.bind(a), cx.bind(&packed), cx.bind(&zname), cx.bind(out)],
            p,
            [
                nn.div_ceil(16) as u32,
                rows.div_ceil(16) as u32,
                batch as u32,
            ],
        );
    }
    Ok(true)
}

fn lower_matmul_integer(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
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

fn lower_qlinear_matmul(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
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
        return super::conv::conv_with(
            cx,
            n,
            &args,
            out,
            Some(super::conv::PackedWeight {
                kernel,
                zero_point: &zname,
                shape: q.shape.clone(),
            }),
        );
    }
    let w = centred(cx, n, w, w_zp, per_channel, &format!("{out}::w"))?;
    let mut args = vec![x.as_str(), w.as_str()];
    if let Some(b) = bias {
        args.push(b);
    }
    super::conv::conv(cx, n, &args, out)
}

fn lower_conv_integer(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    integer_conv(cx, n, (i[0], opt(n, 2)), (i[1], opt(n, 3)), None, out0(n))
}

fn lower_qlinear_conv(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 8 {
        return Err("QLinearConv takes at least 8 inputs".into());
    }
    let out = out0(n);
    let acc = format!("{out}::acc");
    integer_conv(cx, n, (i[0], opt(n, 2)), (i[3], opt(n, 5)), opt(n, 8), &acc)?;
    // w_scale is per tensor or per output channel (axis 1 of the [N, M, ...] result).
    let rank = cx.shape(&acc)?.len();
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

/// A 2-D constant folded from 8-bit values (see `Ctx::dequantized`) as its packed bytes
/// (`name::packed`, uploaded instead of the f32) with its scale and zero point as one f32
/// per index of `axis`, the axis they may vary along (1: per column, for MatMul's B; 0:
/// per row, for an embedding). None when the constant has no such origin, or its
/// parameters vary along the other axis too. Returns (packed, scale, zero point, signed).
pub(super) fn packed_8bit(
    cx: &mut Ctx,
    name: &str,
    axis: usize,
) -> Option<(String, String, String, bool)> {
    let d = cx.dequantized.get(name)?.clone();
    let q = cx.konst(&d.q)?;
    if q.shape.len() != 2 {
        return None;
    }
    let len = q.shape[axis];
    let along = |t: &Option<String>, default: f32| -> Option<Vec<f32>> {
        let Some(t) = t else {
            return Some(vec![default; len]);
        };
        let v = cx.konst(t)?;
        let mut shape = v.shape.clone();
        while shape.len() < 2 {
            shape.insert(0, 1);
        }
        if shape.len() != 2 || shape[1 - axis] != 1 || (shape[axis] != 1 && shape[axis] != len) {
            return None;
        }
        let vals: Vec<f32> = v.as_f64().iter().map(|&x| x as f32).collect();
        Some(if vals.len() == 1 {
            vec![vals[0]; len]
        } else {
            vals
        })
    };
    let scale = along(&d.scale, 1.0)?;
    let zero_point = along(&d.zero_point, 0.0)?;
    let packed = format!("{}::packed", d.q);
    if !cx.plan.constants.contains_key(&packed) {
        let dt = if d.signed { DT::I8 } else { DT::U8 };
        cx.add_const(
            &packed,
            HostTensor::packed(dt, q.shape.clone(), &q.as_i64()),
        );
    }
    let (sname, zname) = (
        format!("{name}::scale{axis}"),
        format!("{name}::zero_point{axis}"),
    );
    cx.add_const(&sname, HostTensor::f32(vec![len], scale));
    cx.add_const(&zname, HostTensor::f32(vec![len], zero_point));
    Some((packed, sname, zname, d.signed))
}

/// com.microsoft MatMulNBits: `Y = A x dequantize(B)^T (+ bias)`, B [N, blocks, block *
/// bits / 8] bytes, scales and zero points per (n, block); zero points absent mean
/// 2^(bits-1), present ones are packed like B (uint8) and unpacked here to f32.
fn lower_matmul_nbits(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    let out = out0(n);
    if i.len() < 3 {
        return Err("MatMulNBits takes at least 3 inputs".into());
    }
    let (a, b, scales) = (i[0], i[1], i[2]);
    let k = usize::try_from(attr_i(n, "K", 0)).map_err(|_| "K must be positive")?;
    let nn = usize::try_from(attr_i(n, "N", 0)).map_err(|_| "N must be positive")?;
    let bits = attr_i(n, "bits", 4);
    let block = usize::try_from(attr_i(n, "block_size", 0)).unwrap_or(0);
    let kernel = match bits {
        4 => Kernel::MatmulNbits4F32,
        8 => Kernel::MatmulNbits8F32,
        _ => return Err(format!("bits = {bits} is not supported (4 and 8 are)")),
    };
    if block < 16 || !block.is_power_of_two() {
        return Err(format!(
            "block_size {block} is not supported (powers of two from 16 are)"
        ));
    }
    if opt(n, 4).is_some() {
        return Err("g_idx (act-order) is not supported".into());
    }
    if cx.dt(a)? != DT::F32 || cx.dt(scales)? != DT::F32 {
        return Err("only float A and scales".into());
    }
    let sa = cx.shape(a)?;
    if sa.last() != Some(&k) {
        return Err(format!("A {sa:?} does not end in K = {k}"));
    }
    let blocks = k.div_ceil(block);
    let bits = bits as usize;
    let row_bytes = blocks * block * bits / 8;
    let q = cx
        .konst(b)
        .ok_or("the quantized weight B must be a constant")?;
    if q.len() != nn * row_bytes {
        return Err(format!(
            "B {:?} does not hold N x blocks x block * bits / 8 = {nn} x {blocks} x {} bytes",
            q.shape,
            block * bits / 8
        ));
    }
    if numel(&cx.shape(scales)?) != nn * blocks {
        return Err(format!(
            "scales must hold N x blocks = {nn} x {blocks} values"
        ));
    }
    // Shared by every node that reads this weight.
    let qname = format!("{b}::packed");
    if !cx.plan.constants.contains_key(&qname) {
        cx.add_const(
            &qname,
            HostTensor::packed(DT::U8, vec![nn * row_bytes], &q.as_i64()),
        );
    }
    // Zero points stay as the model packs them (bits wide, whole bytes per row).
    let zrow = (blocks * bits).div_ceil(8);
    let zero_points = match opt(n, 3) {
        None => None,
        Some(z) if cx.dt(z)? == DT::I32 => {
            let packed = cx.konst(z).ok_or("zero points must be constants")?;
            if packed.len() != nn * zrow {
                return Err(format!(
                    "zero points hold {} bytes, expected N x {zrow}",
                    packed.len()
                ));
            }
            let zname = format!("{z}::packed");
            if !cx.plan.constants.contains_key(&zname) {
                cx.add_const(
                    &zname,
                    HostTensor::packed(DT::U8, vec![nn * zrow], &packed.as_i64()),
                );
            }
            Some(zname)
        }
        Some(_) => return Err("float zero points are not supported (uint8 ones are)".into()),
    };
    let bias = match opt(n, 5) {
        Some(bias) if cx.dt(bias)? == DT::F32 => cx.bind(bias),
        Some(_) => return Err("the bias must be float".into()),
        None => crate::plan::Binding::Dummy,
    };
    let rows = numel(&sa) / k.max(1);
    if rows > 65535 {
        return Err(format!("{rows} rows exceed one dispatch (65535)"));
    }
    let mut oshape = sa[..sa.len() - 1].to_vec();
    oshape.push(nn);
    cx.new_tensor(out, oshape, DT::F32)?;
    let p = params::MatmulNbits {
        m: rows as u32,
        n: nn as u32,
        k: k as u32,
        block: block as u32,
        blocks: blocks as u32,
        has_bias: opt(n, 5).is_some() as u32,
        has_zp: zero_points.is_some() as u32,
        zp_row_bytes: zrow as u32,
    }
    .words();
    if rows * nn > 0 {
        cx.dispatch(
            n,
            kernel,
            vec![
                cx.bind(a),
                cx.bind(&qname),
                cx.bind(scales),
                zero_points
                    .as_deref()
                    .map_or(crate::plan::Binding::Dummy, |z| cx.bind(z)),
                bias,
                cx.bind(out),
            ],
            p,
            [nn.div_ceil(64) as u32, rows as u32, 1],
        );
    }
    Ok(())
}

/// com.microsoft GatherBlockQuantized: rows of a constant table quantized in blocks along
/// its last axis (uint8 holding two 4-bit values, or 8-bit values; int4/uint4), gathered
/// along axis 0 and dequantized in registers; the table stays packed.
fn lower_gather_block_quantized(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 3 {
        return Err("GatherBlockQuantized takes data, indices and scales".into());
    }
    let (data, idx, scales) = (i[0], i[1], i[2]);
    let out = out0(n);
    let bits = attr_i(n, "bits", 4);
    let block = usize::try_from(attr_i(n, "block_size", 128)).unwrap_or(0);
    if attr_i(n, "gather_axis", 0) != 0 {
        return Err("gather_axis other than 0 is not supported".into());
    }
    if !matches!(attr_i(n, "quantize_axis", 1), 1 | -1) {
        return Err("quantize_axis other than the last (1) is not supported".into());
    }
    if block < 16 || !block.is_power_of_two() {
        return Err(format!("block_size {block} (powers of two from 16 run)"));
    }
    let table = cx.konst(data).ok_or("data must be a constant")?;
    if table.shape.len() != 2 || cx.dt(idx)? != DT::I32 || cx.dt(scales)? != DT::F32 {
        return Err("only a 2-D table, integer indices and float scales".into());
    }
    let rows = table.shape[0];
    let raw = table.as_i64();
    // (values [rows, K], K, kernel, default zero point, zero points packed two per byte)
    let unpack_nibbles = |bytes: &[i64]| -> Vec<i64> {
        bytes
            .iter()
            .flat_map(|&b| [b & 15, (b >> 4) & 15])
            .collect()
    };
    let (values, k, kernel, default_zp, nibble_zp) = match (cx.declared(data), bits) {
        (Some(DType::U8), 4) => (
            unpack_nibbles(&raw),
            table.shape[1] * 2,
            Kernel::GatherBlockU4F32,
            8.0,
            true,
        ),
        (Some(DType::U8), 8) => (raw, table.shape[1], Kernel::GatherBlockU8F32, 128.0, false),
        (Some(d), 4) if d == DType::from_onnx(21) => {
            (raw, table.shape[1], Kernel::GatherBlockU4F32, 8.0, false)
        }
        (Some(d), 4) if d == DType::from_onnx(22) => {
            (raw, table.shape[1], Kernel::GatherBlockI4F32, 0.0, false)
        }
        (d, b) => {
            return Err(format!(
                "data of type {} with bits = {b} is not supported (uint8 with 4 or 8 bits, int4, uint4 are)",
                d.map(|d| d.name()).unwrap_or_else(|| "unknown".into())
            ));
        }
    };
    let blocks = k.div_ceil(block);
    if numel(&cx.shape(scales)?) != rows * blocks {
        return Err(format!(
            "scales must hold rows x blocks = {rows} x {blocks} values"
        ));
    }
    let zero_points: Vec<f32> = match opt(n, 3) {
        None => vec![default_zp; rows * blocks],
        Some(z) => {
            let zv = cx.konst(z).ok_or("zero points must be constants")?.as_i64();
            let zv = if nibble_zp {
                let per_row = blocks.div_ceil(2);
                (0..rows * blocks)
                    .map(|j| {
                        let byte = zv[(j / blocks) * per_row + (j % blocks) / 2];
                        (byte >> (4 * ((j % blocks) % 2))) & 15
                    })
                    .collect()
            } else {
                zv
            };
            if zv.len() != rows * blocks {
                return Err(format!(
                    "zero points must hold rows x blocks = {rows} x {blocks}"
                ));
            }
            zv.iter().map(|&v| v as f32).collect()
        }
    };
    let packed = format!("{data}::packed");
    if !cx.plan.constants.contains_key(&packed) {
        let (dt, mask) = if bits == 4 {
            (DT::U4, 15)
        } else {
            (DT::U8, 255)
        };
        let masked: Vec<i64> = values.iter().map(|v| v & mask).collect();
        cx.add_const(&packed, HostTensor::packed(dt, vec![rows, k], &masked));
    }
    let zname = format!("{out}::zero_point");
    cx.add_const(&zname, HostTensor::f32(vec![rows * blocks], zero_points));
    let is = cx.shape(idx)?;
    let mut oshape = is.clone();
    oshape.push(k);
    cx.new_tensor(out, oshape.clone(), DT::F32)?;
    let total = numel(&oshape);
    let p = params::GatherBlock {
        n: total as u32,
        rows: rows as u32,
        k: k as u32,
        block: block as u32,
        blocks: blocks as u32,
    }
    .words();
    if total > 0 {
        cx.dispatch(
            n,
            kernel,
            vec![
                cx.bind(&packed),
                cx.bind(idx),
                cx.bind(scales),
                cx.bind(&zname),
                cx.bind(out),
            ],
            p,
            crate::plan::groups_1d(total, 256),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
