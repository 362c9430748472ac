//! Indexing: Gather (one axis, `gather` kernel) and GatherND (`gather_nd`); Gather also
//! folds on the host (shape subgraphs pick dims out of Shape's output). ScatterND writes
//! update rows into a copy of its data (`scatter_nd_<reduction>_f32`).

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{
    Ctx, MAX_RANK, R, attr_i, attr_s, contiguous_strides_sym, host_input as get, ins, norm_axis,
    out0, vec8_sym,
};
use super::host::{gather_along, norm};
use crate::plan::groups_1d_sym;
use crate::sym::{self, Expr};
use crate::tensor::{DT, HostTensor};

pub(super) fn register(r: &mut Registry) {
    r.op("Gather", 1, &["axis"], lower_gather).fold(fold_gather);
    r.op("GatherND", 11, &["batch_dims"], lower_gather_nd);
    r.op("ScatterND", 11, &["reduction"], lower_scatter_nd);
}

fn lower_gather(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let s = cx.sym_shape(ins[0])?;
    let is = cx.sym_shape(ins[1])?;
    if cx.dt(ins[1])? != DT::I32 {
        return Err("indices must be integers".into());
    }
    let axis = norm_axis(attr_i(n, "axis", 0), s.len())?;
    let mut oshape = s[..axis].to_vec();
    oshape.extend(is.iter().cloned());
    oshape.extend(s[axis + 1..].iter().cloned());
    cx.new_tensor_sym(out, oshape.clone(), cx.dt(ins[0])?)?;
    let total = sym::numel(&oshape);
    if total == Expr::Const(0) {
        return Ok(());
    }
    let groups = groups_1d_sym(&total, 256);
    // Rows of a table folded from 8-bit values (an embedding) stay 8-bit.
    if axis == 0
        && s.len() == 2
        && let Some((q, scale, zp, signed, per_row)) =
            super::quant::packed_8bit_with(cx, ins[0], 0, super::quant::Share::ZeroPoint)
    {
        let p = params::GatherQ8::<Expr> {
            n: total,
            rows: s[0].clone(),
            width: s[1].clone(),
            zp_stride: Expr::from(per_row as usize),
        }
        .slots();
        let kernel = if signed {
            Kernel::GatherI8RowsF32
        } else {
            Kernel::GatherU8RowsF32
        };
        let bindings = vec![
            cx.bind(&q),
            cx.bind(ins[1]),
            cx.bind(&scale),
            cx.bind(&zp),
            cx.bind(out),
        ];
        cx.dispatch_sym(n, kernel, bindings, p, groups);
        return Ok(());
    }
    let params = params::Gather::<Expr> {
        n: total,
        n_idx: sym::numel(&is),
        axis_len: s[axis].clone(),
        inner: sym::numel(&s[axis + 1..]),
    }
    .slots();
    // An 8-bit integer table (a quantized embedding dequantized after the Gather) stays
    // packed as stored, shared by every Gather of it.
    let byte_kernel = match cx.declared(ins[0]) {
        Some(m2w_model::DType::I8) => Some(Kernel::GatherI8I32),
        Some(m2w_model::DType::U8) => Some(Kernel::GatherU8I32),
        _ => None,
    };
    if let (Some(kernel), Some(table), DT::I32) = (byte_kernel, cx.konst(ins[0]), cx.dt(ins[0])?) {
        let packed = format!("{}::packed", ins[0]);
        if !cx.plan.constants.contains_key(&packed) {
            let dt = if kernel == Kernel::GatherI8I32 {
                DT::I8
            } else {
                DT::U8
            };
            cx.add_const(
                &packed,
                HostTensor::packed(dt, table.shape.clone(), &table.as_i64()),
            );
        }
        let bindings = vec![cx.bind(&packed), cx.bind(ins[1]), cx.bind(out)];
        cx.dispatch_sym(n, kernel, bindings, params, groups);
        return Ok(());
    }
    let bindings = vec![cx.bind(ins[0]), cx.bind(ins[1]), cx.bind(out)];
    cx.dispatch_sym(n, Kernel::Gather, bindings, params, groups);
    Ok(())
}

fn lower_gather_nd(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let s = cx.sym_shape(ins[0])?;
    let is = cx.sym_shape(ins[1])?;
    if cx.dt(ins[1])? != DT::I32 || is.is_empty() {
        return Err("indices must be integers of rank >= 1".into());
    }
    let b = attr_i(n, "batch_dims", 0) as usize;
    let k = is
        .last()
        .and_then(Expr::as_const)
        .ok_or("the last dim of GatherND's indices must be known at plan time")?
        as usize;
    if b + k > s.len() || k > MAX_RANK {
        return Err("indices reach past the data rank".into());
    }
    let mut oshape = is[..is.len() - 1].to_vec();
    oshape.extend(s[b + k..].iter().cloned());
    cx.new_tensor_sym(out, oshape.clone(), cx.dt(ins[0])?)?;
    let cs = contiguous_strides_sym(&s);
    let rows_per_batch = sym::numel(&is[b..is.len() - 1]).max(Expr::Const(1));
    let total = sym::numel(&oshape);
    let p = params::GatherNd::<Expr> {
        n: total.clone(),
        k: Expr::from(k),
        inner: sym::numel(&s[b + k..]),
        rows_per_batch,
        batch_stride: sym::numel(&s[b..]),
        dims: vec8_sym(&s[b..b + k]),
        strides: vec8_sym(&cs[b..b + k]),
        ..Default::default()
    }
    .slots();
    if total != Expr::Const(0) {
        let groups = groups_1d_sym(&total, 256);
        let bindings = vec![cx.bind(ins[0]), cx.bind(ins[1]), cx.bind(out)];
        cx.dispatch_sym(n, Kernel::GatherNd, bindings, p, groups);
    }
    Ok(())
}

fn fold_gather(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let axis = norm(attr_i(n, "axis", 0), t.shape.len())?;
    let idx = get(ins, 1)?;
    Ok(vec![gather_along(t, axis, &idx.as_i64(), &idx.shape)?])
}

#[cfg(test)]
mod tests;

/// ScatterND: `out` = a copy of data, then every update row written (or combined, by
/// `reduction`) at the position its index row names, rows in order.
fn lower_scatter_nd(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    let out = out0(n);
    let (data, indices, updates) = (i[0], i[1], i[2]);
    if cx.dt(data)? != DT::F32 || cx.dt(updates)? != DT::F32 || cx.dt(indices)? != DT::I32 {
        return Err("only float data and updates with integer indices".into());
    }
    let ds = cx.sym_shape(data)?;
    let is = cx.sym_shape(indices)?;
    let k = is
        .last()
        .ok_or("indices must have rank >= 1")?
        .as_const()
        .ok_or("the index row length must be known at plan time")? as usize;
    if k == 0 || k > ds.len() {
        return Err(format!(
            "index rows of {k} do not fit data of rank {}",
            ds.len()
        ));
    }
    let rows = sym::numel(&is[..is.len() - 1]);
    let slice = sym::numel(&ds[k..]);
    let mut want = is[..is.len() - 1].to_vec();
    want.extend(ds[k..].iter().cloned());
    let us = cx.sym_shape(updates)?;
    let fits =
        us.len() == want.len() && (0..us.len()).all(|d| cx.assume_equal(n, &us[d], &want[d]));
    if !fits {
        return Err(format!("updates must have shape {}", sym::show(&want)));
    }
    let kernel = match attr_s(n, "reduction", "none").as_str() {
        "none" => Kernel::ScatterNdNoneF32,
        "add" => Kernel::ScatterNdAddF32,
        "mul" => Kernel::ScatterNdMulF32,
        "max" => Kernel::ScatterNdMaxF32,
        "min" => Kernel::ScatterNdMinF32,
        other => return Err(format!("reduction {other:?} is not supported")),
    };
    cx.new_tensor_sym(out, ds.clone(), DT::F32)?;
    let strides = contiguous_strides_sym(&ds);
    let zero = Expr::Const(0);
    cx.copy_sym(n, data, out, &ds, zero.clone(), &strides, zero, &strides)?;
    let p = params::ScatterNd::<Expr> {
        rows: rows.clone(),
        k: Expr::from(k),
        slice: slice.clone(),
        pad: Expr::Const(0),
        dims: vec8_sym(&ds[..k]),
        strides: vec8_sym(&strides[..k]),
    }
    .slots();
    if slice.clone() * rows != Expr::Const(0) {
        let groups = groups_1d_sym(&slice, 64);
        let bindings = vec![cx.bind(indices), cx.bind(updates), cx.bind(out)];
        cx.dispatch_sym(n, kernel, bindings, p, groups);
    }
    Ok(())
}
