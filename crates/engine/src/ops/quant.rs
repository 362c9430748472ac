//! Quantization ops. So far DequantizeLinear of integer tensors, per tensor or per axis
//! (`ew_dequantize_i32`: (x - zero_point) * scale with the scale and zero point viewed
//! along the axis); blocked quantization and 4-/2-bit and float8 types are refused. A
//! DequantizeLinear of constants (a quantized weight) folds on the host to f32.

use m2w_kernels::Kernel;
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_i, host_input as get, ins, norm_axis, out0};
use crate::tensor::{DT, Data, HostTensor};

pub(super) fn register(r: &mut Registry) {
    r.op(
        "DequantizeLinear",
        10,
        &["axis", "block_size", "output_dtype"],
        lower_dequantize,
    )
    .fold(fold_dequantize);
}

/// The shape the scale and zero point are viewed as: per tensor when they hold one value,
/// per axis (their length along `axis`, 1 elsewhere) when they are 1-D.
fn param_shape(n: &NodeInfo, x: &[usize], param: &[usize]) -> R<Vec<usize>> {
    if attr_i(n, "block_size", 0) != 0 {
        return Err("blocked quantization (block_size) is not supported yet".into());
    }
    let out_dtype = attr_i(n, "output_dtype", 0);
    if out_dtype != 0 && out_dtype != 1 {
        return Err(format!(
            "output_dtype {out_dtype} is not supported (f32 is)"
        ));
    }
    let count: usize = param.iter().product();
    if count == 1 && param.len() <= 1 {
        return Ok(vec![]);
    }
    let axis = norm_axis(attr_i(n, "axis", 1), x.len())?;
    if param.len() != 1 || param[0] != x[axis] {
        return Err(format!(
            "scale/zero point of shape {param:?} is neither one value nor one per element of axis {axis} ({})",
            x[axis]
        ));
    }
    let mut shape = vec![1; x.len()];
    shape[axis] = x[axis];
    Ok(shape)
}

fn lower_dequantize(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    if cx.dt(ins[0])? != DT::I32 || cx.dt(ins[1])? != DT::F32 {
        return Err("only integer x with an f32 scale".into());
    }
    let xs = cx.shape(ins[0])?;
    let shape = param_shape(n, &xs, &cx.shape(ins[1])?)?;
    let scale = format!("{out}::scale");
    cx.view(&scale, ins[1], shape.clone())?;
    let zp = format!("{out}::zero_point");
    match ins.get(2).filter(|z| !z.is_empty()) {
        Some(z) => {
            if cx.dt(z)? != DT::I32 {
                return Err("the zero point must be an integer".into());
            }
            cx.view(&zp, z, shape)?;
        }
        None => cx.add_const(&zp, HostTensor::i64(vec![], vec![0])),
    }
    cx.elementwise(
        n,
        Kernel::EwDequantizeI32,
        &[ins[0], &scale, &zp],
        out,
        DT::F32,
        0.0,
        0.0,
    )
}

fn fold_dequantize(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let x = get(ins, 0)?;
    let scale = get(ins, 1)?;
    let (Data::I64(xv), Data::F32(_)) = (&x.data, &scale.data) else {
        return Err("only integer x with an f32 scale".into());
    };
    let shape = param_shape(n, &x.shape, &scale.shape)?;
    let scale = super::host::expand(&scale.reshaped(shape.clone()), &x.shape)?;
    let zp = match ins.get(2).and_then(|z| z.as_ref()) {
        Some(z) => super::host::expand(&z.reshaped(shape), &x.shape)?.as_i64(),
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

#[cfg(test)]
mod tests;
