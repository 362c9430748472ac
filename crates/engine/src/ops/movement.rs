//! Data movement: every op here is one or more `copy_strided` dispatches (a strided
//! gather over up to 8 dims) or a `fill` plus a copy — Transpose, Slice (any step),
//! Expand, Concat, Split, Pad (constant; reflect/edge/wrap have their own kernel), Tile,
//! DepthToSpace/SpaceToDepth. Slice, Concat and Expand also fold on the host.

use m2w_kernels::params;
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{
    Ctx, MAX_RANK, R, attr_f, attr_i, attr_ints, attr_s, broadcast, broadcast_sym,
    contiguous_strides, contiguous_strides_sym, host_input as get, ins, kernel_for, norm_axis,
    out0, vec8_sym,
};
use super::host::{expand, gather_strided, norm, slice_geometry};
use crate::plan::groups_1d_sym;
use crate::sym::{self, Expr};
use crate::tensor::{DT, Data, HostTensor, numel};

pub(super) fn register(r: &mut Registry) {
    r.op("Transpose", 1, &["perm"], lower_transpose)
        .fold(fold_transpose);
    r.op("Slice", 1, &["axes", "ends", "starts"], lower_slice)
        .shape_inputs(&[1, 2, 3, 4])
        .fold(fold_slice);
    r.op("Expand", 8, &[], lower_expand)
        .shape_inputs(&[1])
        .fold(fold_expand);
    r.op("Concat", 1, &["axis"], lower_concat).fold(fold_concat);
    r.op("Split", 1, &["axis", "num_outputs", "split"], lower_split)
        .shape_inputs(&[1])
        .fold(fold_split);
    r.op("Pad", 1, &["mode", "paddings", "pads", "value"], lower_pad)
        .shape_inputs(&[1, 3]);
    r.op("Tile", 1, &[], lower_tile)
        .shape_inputs(&[1])
        .fold(fold_tile);
    r.op("DepthToSpace", 1, &["blocksize", "mode"], lower_depth_space);
    r.op("SpaceToDepth", 1, &["blocksize"], lower_depth_space);
}

fn lower_transpose(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let s = cx.sym_shape(ins[0])?;
    let perm: Vec<usize> = match attr_ints(n, "perm") {
        Some(p) => p.iter().map(|&a| norm_axis(a, s.len())).collect::<R<_>>()?,
        None => (0..s.len()).rev().collect(),
    };
    if perm.len() != s.len() {
        return Err(format!("perm {perm:?} does not match rank {}", s.len()));
    }
    if cx.is_strided(ins[0]) {
        return cx.permuted_view(out0(n), ins[0], &perm);
    }
    cx.permute(n, ins[0], out0(n), &perm)
}

/// Transpose's output shape and the input strides read along each output dim.
fn transpose_geometry(n: &NodeInfo, s: &[usize]) -> R<(Vec<usize>, Vec<i64>)> {
    let perm: Vec<usize> = match attr_ints(n, "perm") {
        Some(p) => p.iter().map(|&a| norm_axis(a, s.len())).collect::<R<_>>()?,
        None => (0..s.len()).rev().collect(),
    };
    if perm.len() != s.len() {
        return Err(format!("perm {perm:?} does not match rank {}", s.len()));
    }
    let cs = contiguous_strides(s);
    Ok((
        perm.iter().map(|&p| s[p]).collect(),
        perm.iter().map(|&p| cs[p]).collect(),
    ))
}

fn lower_slice(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let shape = cx.sym_shape(ins[0])?;
    let consts = |v: &[Expr]| v.iter().map(Expr::as_const).collect::<Option<Vec<i64>>>();
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        (
            attr_ints(n, "starts").ok_or("starts")?,
            attr_ints(n, "ends").ok_or("ends")?,
            attr_ints(n, "axes"),
            None,
        )
    } else {
        let starts = cx.shape_input(n, 1, 0)?.ok_or("starts")?;
        let ends = cx.shape_input(n, 2, 0)?.ok_or("ends")?;
        let axes = cx.const_ints(n, 3)?;
        let steps = cx.const_ints(n, 4)?;
        match (sym::as_fixed(&shape), consts(&starts), consts(&ends)) {
            (Some(_), Some(st), Some(en)) => (st, en, axes, steps),
            _ => {
                let (oshape, offset, strides) =
                    slice_geometry_sym(&shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
                cx.new_tensor_sym(out, oshape.clone(), cx.dt(ins[0])?)?;
                let dst = contiguous_strides_sym(&oshape);
                return cx.copy_sym(
                    n,
                    ins[0],
                    out,
                    &oshape,
                    offset,
                    &strides,
                    Expr::Const(0),
                    &dst,
                );
            }
        }
    };
    let s = cx.shape(ins[0])?;
    let (oshape, offset, strides) =
        slice_geometry(&s, &starts, &ends, axes.as_deref(), steps.as_deref())?;
    cx.new_tensor(out, oshape.clone(), cx.dt(ins[0])?)?;
    cx.copy(
        n,
        ins[0],
        out,
        &oshape,
        offset,
        &strides,
        0,
        &contiguous_strides(&oshape),
    )
}

fn lower_expand(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let s = cx.sym_shape(ins[0])?;
    let target = cx.shape_input(n, 1, 0)?.ok_or("Expand needs a shape")?;
    let oshape = broadcast_sym(&[&s, &target])?;
    let src = super::strided::broadcast_strides_of(&s, &cx.strides_sym(ins[0])?, &oshape);
    cx.new_tensor_sym(out, oshape.clone(), cx.dt(ins[0])?)?;
    cx.copy_sym(
        n,
        ins[0],
        out,
        &oshape,
        Expr::Const(0),
        &src,
        Expr::Const(0),
        &contiguous_strides_sym(&oshape),
    )
}

fn lower_concat(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let parts: Vec<&str> = ins.iter().copied().filter(|i| !i.is_empty()).collect();
    let first = cx.sym_shape(parts[0])?;
    let axis = norm_axis(attr_i(n, "axis", 0), first.len())?;
    let mut oshape = first.clone();
    oshape[axis] = Expr::Const(0);
    for p in &parts {
        let s = cx.sym_shape(p)?;
        let off_axis_agree = s.len() == first.len()
            && (0..s.len()).all(|d| d == axis || cx.assume_equal(n, &first[d], &s[d]));
        if !off_axis_agree {
            return Err(format!(
                "Concat inputs {} and {} differ off the axis",
                sym::show(&first),
                sym::show(&s)
            ));
        }
        oshape[axis] = oshape[axis].clone() + s[axis].clone();
    }
    if cx.append_in_place(n, &parts, axis, out, &oshape)? {
        return Ok(());
    }
    cx.new_tensor_sym(out, oshape.clone(), cx.dt(parts[0])?)?;
    let ostrides = contiguous_strides_sym(&oshape);
    let mut at = Expr::Const(0);
    for p in parts {
        let s = cx.sym_shape(p)?;
        cx.copy_sym(
            n,
            p,
            out,
            &s,
            Expr::Const(0),
            &contiguous_strides_sym(&s),
            at.clone() * ostrides[axis].clone(),
            &ostrides,
        )?;
        at = at + s[axis].clone();
    }
    Ok(())
}

/// Slice over a shape or bounds that hold dims (step > 0): each bound is clamped to
/// [0, dim] with min/max, a negative constant counts from the end, and a constant past
/// 2^31 (exporters write INT64_MAX for "to the end") is the dim itself.
fn slice_geometry_sym(
    s: &[Expr],
    starts: &[Expr],
    ends: &[Expr],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> R<(Vec<Expr>, Expr, Vec<Expr>)> {
    let rank = s.len();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| norm_axis(x, rank)).collect::<R<_>>()?,
        None => (0..starts.len()).collect(),
    };
    if starts.len() != axes.len() || ends.len() != axes.len() {
        return Err("starts/ends/axes lengths differ".into());
    }
    let cs = contiguous_strides_sym(s);
    let mut shape = s.to_vec();
    let mut strides = cs.clone();
    let mut offset = Expr::Const(0);
    for (k, &a) in axes.iter().enumerate() {
        let dim = s[a].clone();
        let step = steps.and_then(|st| st.get(k).copied()).unwrap_or(1);
        if step <= 0 {
            return Err(format!(
                "Slice with step {step} over symbolic sizes is not supported"
            ));
        }
        let bound = |v: &Expr| -> Expr {
            let v = match v.as_const() {
                Some(c) if c >= 1 << 31 => dim.clone(),
                Some(c) if c <= -(1 << 31) => Expr::Const(0),
                Some(c) if c < 0 => dim.clone() + Expr::Const(c),
                _ => v.clone(),
            };
            v.min(dim.clone()).max(Expr::Const(0))
        };
        let (start, end) = (bound(&starts[k]), bound(&ends[k]));
        let len = (end - start.clone()).max(Expr::Const(0));
        shape[a] = if step == 1 { len } else { len.ceil_div(step) };
        offset = offset + start * cs[a].clone();
        strides[a] = cs[a].clone() * Expr::Const(step);
    }
    Ok((shape, offset, strides))
}

fn lower_split(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let s = cx.shape(ins[0])?;
    let axis = norm_axis(attr_i(n, "axis", 0), s.len())?;
    let given = if cx.opset >= 13 {
        cx.const_ints(n, 1)?
    } else {
        attr_ints(n, "split")
    };
    let split = split_sizes(n, &s, axis, given)?;
    let cs = contiguous_strides(&s);
    let mut at = 0usize;
    for (o, &len) in n.outputs.iter().zip(&split) {
        let mut os = s.clone();
        os[axis] = len;
        cx.new_tensor(o, os.clone(), cx.dt(ins[0])?)?;
        cx.copy(
            n,
            ins[0],
            o,
            &os,
            (at as i64) * cs[axis],
            &cs,
            0,
            &contiguous_strides(&os),
        )?;
        at += len;
    }
    Ok(())
}

fn lower_pad(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let s = cx.sym_shape(ins[0])?;
    let dt = cx.dt(ins[0])?;
    let mode = attr_s(n, "mode", "constant");
    if !matches!(mode.as_str(), "constant" | "reflect" | "edge" | "wrap") {
        return Err(format!("Pad mode '{mode}' is not supported"));
    }
    let pads = if cx.opset < 11 {
        attr_ints(n, "pads").ok_or("pads")?
    } else {
        cx.const_ints(n, 1)?.ok_or("pads")?
    };
    let value = if cx.opset < 11 {
        HostTensor::f32(vec![], vec![attr_f(n, "value", 0.0)])
    } else {
        match ins.get(2).filter(|s| !s.is_empty()) {
            Some(v) => cx.konst(v).ok_or("the pad value must be a constant")?,
            None => HostTensor::f32(vec![], vec![0.0]),
        }
    };
    let axes: Vec<usize> = match cx.const_ints(n, 3)? {
        Some(a) => a.iter().map(|&x| norm_axis(x, s.len())).collect::<R<_>>()?,
        None => (0..s.len()).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err("pads do not match the axes".into());
    }
    let mut before = vec![0i64; s.len()];
    let mut after = vec![0i64; s.len()];
    for (k, &a) in axes.iter().enumerate() {
        before[a] = pads[k];
        after[a] = pads[k + axes.len()];
    }
    let oshape: Vec<Expr> = (0..s.len())
        .map(|d| (s[d].clone() + Expr::Const(before[d] + after[d])).max(Expr::Const(0)))
        .collect();
    cx.new_tensor_sym(out, oshape.clone(), dt)?;
    if mode != "constant" {
        if s.contains(&Expr::Const(0)) {
            return Err(format!("Pad mode '{mode}' of an empty input"));
        }
        let total = sym::numel(&oshape);
        let kernel = kernel_for("pad", &mode, "")?;
        let consts = |v: &[i64]| v.iter().map(|&x| Expr::Const(x)).collect::<Vec<_>>();
        let p = params::Pad::<Expr, Expr> {
            n: total.clone(),
            rank: Expr::from(s.len()),
            out_shape: vec8_sym(&oshape),
            in_shape: vec8_sym(&s),
            before: vec8_sym(&consts(&before)),
            in_strides: vec8_sym(&contiguous_strides_sym(&s)),
            ..Default::default()
        }
        .slots();
        if total != Expr::Const(0) {
            let groups = groups_1d_sym(&total, 256);
            cx.dispatch_sym(n, kernel, vec![cx.bind(ins[0]), cx.bind(out)], p, groups);
        }
        return Ok(());
    }
    let bits = match dt {
        DT::F32 => (value.as_f64()[0] as f32).to_bits(),
        DT::I32 => value.as_i64()[0] as i32 as u32,
        DT::Bool => value.as_i64()[0] as u32,
        other => return Err(format!("constant Pad of {other:?} is not supported")),
    };
    cx.fill_sym(n, out, &sym::numel(&oshape), bits);
    // The copied region: negative pads crop the input.
    let cs = contiguous_strides_sym(&s);
    let os = contiguous_strides_sym(&oshape);
    let mut region = Vec::new();
    let (mut src_off, mut dst_off) = (Expr::Const(0), Expr::Const(0));
    for d in 0..s.len() {
        let crop_lo = (-before[d]).max(0);
        let crop_hi = (-after[d]).max(0);
        region.push((s[d].clone() - Expr::Const(crop_lo + crop_hi)).max(Expr::Const(0)));
        src_off = src_off + Expr::Const(crop_lo) * cs[d].clone();
        dst_off = dst_off + Expr::Const(before[d].max(0)) * os[d].clone();
    }
    cx.copy_sym(n, ins[0], out, &region, src_off, &cs, dst_off, &os)
}

/// Split's part sizes: given, or `num_outputs` (else the output count) equal chunks, the
/// last one shorter.
fn split_sizes(n: &NodeInfo, s: &[usize], axis: usize, given: Option<Vec<i64>>) -> R<Vec<usize>> {
    let nout = n.outputs.len();
    let split: Vec<usize> = match given {
        Some(v) => v.iter().map(|&x| x.max(0) as usize).collect(),
        None => {
            let parts = attr_i(n, "num_outputs", nout as i64) as usize;
            let chunk = s[axis].div_ceil(parts.max(1));
            (0..parts)
                .map(|k| chunk.min(s[axis].saturating_sub(k * chunk)))
                .collect()
        }
    };
    if split.len() != nout || split.iter().sum::<usize>() != s[axis] {
        return Err(format!(
            "split {split:?} does not cover axis of {}",
            s[axis]
        ));
    }
    Ok(split)
}

fn lower_tile(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let s = cx.shape(ins[0])?;
    let reps = cx.const_ints(n, 1)?.ok_or("repeats")?;
    if reps.len() != s.len() || reps.iter().any(|&r| r < 0) {
        return Err("repeats do not match the rank".into());
    }
    let (oshape, shape2, src) = tile_geometry(&s, &reps);
    cx.new_tensor(out, oshape.clone(), cx.dt(ins[0])?)?;
    if shape2.len() > MAX_RANK {
        return Err("Tile of rank > 4 is not supported".into());
    }
    // Row-major over [r0, d0, r1, d1, ...] is row-major over the output.
    cx.copy(
        n,
        ins[0],
        out,
        &shape2,
        0,
        &src,
        0,
        &contiguous_strides(&shape2),
    )
}

/// Tile's output shape, and the doubled shape [r0, d0, r1, d1, ...] with the input strides
/// read along it (0 along the repeats).
fn tile_geometry(s: &[usize], reps: &[i64]) -> (Vec<usize>, Vec<usize>, Vec<i64>) {
    let oshape: Vec<usize> = s.iter().zip(reps).map(|(&d, &r)| d * r as usize).collect();
    let cs = contiguous_strides(s);
    let mut shape2 = Vec::new();
    let mut src = Vec::new();
    for d in 0..s.len() {
        shape2.extend([reps[d] as usize, s[d]]);
        src.extend([0, cs[d]]);
    }
    (oshape, shape2, src)
}

fn lower_depth_space(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let op = n.op_type.as_str();
    let s = cx.shape(ins[0])?;
    if s.len() != 4 {
        return Err("needs a 4-D input".into());
    }
    let b = attr_i(n, "blocksize", 1) as usize;
    let (nn, c, h, w) = (s[0], s[1], s[2], s[3]);
    let cs = contiguous_strides(&s);
    if op == "DepthToSpace" {
        let dcr = attr_s(n, "mode", "DCR") == "DCR";
        let oc = c / (b * b);
        let oshape = vec![nn, oc, h * b, w * b];
        cx.new_tensor(out, oshape.clone(), cx.dt(ins[0])?)?;
        let os = contiguous_strides(&oshape);
        // Iterate [n, oc, h, b1, w, b2]; input channel = DCR: (b1*b + b2)*oc + c; CRD: c*b*b + b1*b + b2.
        let shape6 = [nn, oc, h, b, w, b];
        let (c_str, b1_str, b2_str) = if dcr {
            (cs[1], (b * oc) as i64 * cs[1], oc as i64 * cs[1])
        } else {
            ((b * b) as i64 * cs[1], b as i64 * cs[1], cs[1])
        };
        let src = [cs[0], c_str, cs[2], b1_str, cs[3], b2_str];
        let dst = [
            os[0],
            os[1],
            os[2] * b as i64,
            os[2],
            os[3] * b as i64,
            os[3],
        ];
        cx.copy(n, ins[0], out, &shape6, 0, &src, 0, &dst)
    } else {
        let oshape = vec![nn, c * b * b, h / b, w / b];
        cx.new_tensor(out, oshape.clone(), cx.dt(ins[0])?)?;
        let os = contiguous_strides(&oshape);
        let shape6 = [nn, c, h / b, b, w / b, b];
        let src = [
            cs[0],
            cs[1],
            cs[2] * b as i64,
            cs[2],
            cs[3] * b as i64,
            cs[3],
        ];
        let dst = [
            os[0],
            os[1],
            os[2],
            (b * c) as i64 * os[1],
            os[3],
            c as i64 * os[1],
        ];
        cx.copy(n, ins[0], out, &shape6, 0, &src, 0, &dst)
    }
}

fn fold_slice(n: &NodeInfo, ins: &[Option<HostTensor>], opset: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let (starts, ends, axes, steps) = if opset < 10 {
        (
            attr_ints(n, "starts").ok_or("starts")?,
            attr_ints(n, "ends").ok_or("ends")?,
            attr_ints(n, "axes"),
            None,
        )
    } else {
        let opt = |i: usize| ins.get(i).and_then(|a| a.as_ref()).map(|a| a.as_i64());
        (get(ins, 1)?.as_i64(), get(ins, 2)?.as_i64(), opt(3), opt(4))
    };
    let (shape, offset, strides) =
        slice_geometry(&t.shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
    Ok(vec![gather_strided(t, &shape, offset, &strides)])
}

fn fold_transpose(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let (oshape, src) = transpose_geometry(n, &t.shape)?;
    Ok(vec![gather_strided(t, &oshape, 0, &src)])
}

fn fold_split(n: &NodeInfo, ins: &[Option<HostTensor>], opset: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let axis = norm(attr_i(n, "axis", 0), t.shape.len())?;
    let given = if opset >= 13 {
        ins.get(1).and_then(|a| a.as_ref()).map(|a| a.as_i64())
    } else {
        attr_ints(n, "split")
    };
    let split = split_sizes(n, &t.shape, axis, given)?;
    let cs = contiguous_strides(&t.shape);
    let mut at = 0usize;
    let mut outs = Vec::new();
    for len in split {
        let mut os = t.shape.clone();
        os[axis] = len;
        outs.push(gather_strided(t, &os, at as i64 * cs[axis], &cs));
        at += len;
    }
    Ok(outs)
}

fn fold_tile(_: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let reps = get(ins, 1)?.as_i64();
    if reps.len() != t.shape.len() || reps.iter().any(|&r| r < 0) {
        return Err("repeats do not match the rank".into());
    }
    let (oshape, shape2, src) = tile_geometry(&t.shape, &reps);
    Ok(vec![gather_strided(t, &shape2, 0, &src).reshaped(oshape)])
}

fn fold_expand(_: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let target: Vec<usize> = get(ins, 1)?
        .as_i64()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let shape = broadcast(&[&t.shape, &target])?;
    Ok(vec![expand(t, &shape)?])
}

fn fold_concat(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let parts: Vec<&HostTensor> = ins.iter().flatten().collect();
    let first = parts.first().ok_or("Concat without inputs")?;
    if parts.iter().any(|p| p.dt() != first.dt()) {
        return Err("Concat of constants of different dtypes".into());
    }
    let axis = norm(attr_i(n, "axis", 0), first.shape.len())?;
    let outer = numel(&first.shape[..axis]);
    let mut shape = first.shape.clone();
    shape[axis] = parts.iter().map(|p| p.shape[axis]).sum();
    let mut data_f = Vec::new();
    let mut data_i = Vec::new();
    let mut data_b = Vec::new();
    for o in 0..outer {
        for p in &parts {
            let chunk = numel(&p.shape[axis..]);
            match &p.data {
                Data::F32(v) => data_f.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                Data::I64(v) => data_i.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                Data::Bool(v) => data_b.extend_from_slice(&v[o * chunk..(o + 1) * chunk]),
                Data::Packed { .. } => return Err(super::PACKED.into()),
            }
        }
    }
    Ok(vec![match first.data {
        Data::Packed { .. } => return Err(super::PACKED.into()),
        Data::F32(_) => HostTensor::f32(shape, data_f),
        Data::I64(_) => HostTensor::i64(shape, data_i),
        Data::Bool(_) => HostTensor::bool(shape, data_b),
    }])
}

#[cfg(test)]
mod tests;
