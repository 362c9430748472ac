//! Quantization ops. Integers of every width are i32 on the GPU (see `tensor.rs`); the
//! type the graph declares decides only where QuantizeLinear saturates.
//!
//! - Here: DequantizeLinear / QuantizeLinear, per tensor, per axis or blocked (`block_size`
//!   dividing the axis: x is viewed as [.., blocks, block, ..] and the parameters as
//!   [.., blocks, 1, ..], so one element-wise kernel serves all three), 2- to 16-bit. A
//!   DequantizeLinear of constants (a quantized weight) folds on the host to f32, and the
//!   fold is remembered (`Ctx::dequantized`) so the weight can still be read packed.
//!   DynamicQuantizeLinear: one workgroup finds the range, then the QuantizeLinear kernel.
//! - `integer`: MatMulInteger, ConvInteger and their QLinear forms (exact i32 products).
//! - `packed`: weights kept as stored and dequantized in registers (8-bit weights behind
//!   Cast/Mul or DequantizeLinear; com.microsoft MatMulNBits and GatherBlockQuantized).
//!
//! float8 and float4 tensor types are refused (their tensors are not read).

use m2w_kernels::{Kernel, params};
use m2w_model::{DType, NodeInfo};

mod integer;
mod packed;

pub(super) use integer::{centred, times_weight};
pub(super) use packed::{Share, packed_8bit, packed_8bit_with};

use super::Registry;
use super::conv::CONV_ATTRS;
use super::ctx::{Ctx, R, attr_i, host_input as get, ins, norm_axis, out0};
use crate::sym::{self, Expr};
use crate::tensor::{DT, Data, HostTensor};

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
    r.op("MatMulInteger", 10, &[], integer::lower_matmul_integer);
    r.op("QLinearMatMul", 10, &[], integer::lower_qlinear_matmul);
    r.op("ConvInteger", 10, CONV_ATTRS, integer::lower_conv_integer);
    r.op("QLinearConv", 10, CONV_ATTRS, integer::lower_qlinear_conv);
    r.contrib(
        "com.microsoft",
        "MatMulNBits",
        &["K", "N", "accuracy_level", "bits", "block_size"],
        packed::lower_matmul_nbits,
    );
    r.contrib(
        "com.microsoft",
        "GatherBlockQuantized",
        &["bits", "block_size", "gather_axis", "quantize_axis"],
        packed::lower_gather_block_quantized,
    );
}

/// How x lines up with its scale and zero point: x viewed as `x`, the parameters as
/// `param` (which broadcasts against it).
struct Layout {
    x: Vec<Expr>,
    param: Vec<usize>,
}

/// [`layout_fixed`] where x's sizes may hold dims: one scale for all, or one per element
/// of an axis whose size is a constant; blocked layouts need every size known.
fn layout(n: &NodeInfo, xs: &[Expr], param: &[usize]) -> R<Layout> {
    let block = attr_i(n, "block_size", 0);
    let count: usize = param.iter().product();
    if block == 0 && count == 1 && param.len() <= 1 {
        return Ok(Layout {
            x: xs.to_vec(),
            param: vec![],
        });
    }
    if block == 0 {
        let axis = norm_axis(attr_i(n, "axis", 1), xs.len())?;
        if param.len() == 1 && xs[axis] == Expr::from(param[0]) {
            let mut shape = vec![1; xs.len()];
            shape[axis] = param[0];
            return Ok(Layout {
                x: xs.to_vec(),
                param: shape,
            });
        }
    }
    let x = sym::as_fixed(xs).ok_or_else(|| {
        format!(
            "quantization blocks over a symbolic shape {} are not supported",
            sym::show(xs)
        )
    })?;
    let l = layout_fixed(n, &x, param)?;
    Ok(Layout {
        x: sym::fixed(&l.0),
        param: l.1,
    })
}

fn layout_fixed(n: &NodeInfo, x: &[usize], param: &[usize]) -> R<(Vec<usize>, Vec<usize>)> {
    let block = attr_i(n, "block_size", 0);
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
        return Ok((x.to_vec(), shape));
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
    Ok((split(x, b), split(param, 1)))
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
    let xs = cx.sym_shape(x)?;
    let xv = format!("{out}::x");
    cx.view_sym(&xv, x, lay.x.clone())?;
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
    cx.view_sym(out, &blocked, xs)
}

fn lower_dequantize(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    check_float_output(n)?;
    if cx.dt(ins[0])? != DT::I32 || cx.dt(ins[1])? != DT::F32 {
        return Err("only integer x with a float scale".into());
    }
    let lay = layout(n, &cx.sym_shape(ins[0])?, &cx.shape(ins[1])?)?;
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
    let lay = layout(n, &sym::fixed(&x.shape), &scale.shape)?;
    let lx = sym::as_fixed(&lay.x).expect("a constant's shape");
    let scale = super::host::expand(&scale.reshaped(lay.param.clone()), &lx)?;
    let zp = match ins.get(2).and_then(|z| z.as_ref()) {
        Some(z) => super::host::expand(&z.reshaped(lay.param.clone()), &lx)?.as_i64(),
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
    let lay = layout(n, &cx.sym_shape(ins[0])?, &cx.shape(ins[1])?)?;
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
    let count = sym::numel(&cx.sym_shape(x)?);
    let one = Expr::Const(1);
    cx.dispatch_sym(
        n,
        Kernel::DynamicQuantizeParamsU8,
        vec![cx.bind(x), cx.bind(&scale), cx.bind(&zp)],
        params::DynamicQuantize::<Expr> { n: count }.slots(),
        [one.clone(), one.clone(), one],
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

#[cfg(test)]
mod tests;
