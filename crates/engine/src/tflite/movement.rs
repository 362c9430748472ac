//! TFLite ops whose element order is observable (RESHAPE, TRANSPOSE, STRIDED_SLICE,
//! FULLY_CONNECTED: their input goes back to NHWC) and those whose axes are remapped
//! (CONCATENATION, PAD, the reductions).

use m2w_model::{AttrValue, NodeInfo};

use super::*;

pub(super) fn concat(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let out = out0(n)?;
    let rank = cx.rank(out)?;
    let mut axis = attr_i(n, "axis", 0);
    if axis < 0 {
        axis += rank as i64;
    }
    let feature_map = rank == 4 && n.inputs.iter().any(|i| cx.is_nchw(i)) && (0..4).contains(&axis);
    let mut inputs = Vec::new();
    for i in &n.inputs {
        inputs.push(if feature_map { cx.nchw(i)? } else { cx.nhwc(i) });
    }
    let axis = if feature_map {
        nchw_axis(axis as usize) as i64
    } else {
        axis
    };
    cx.emit(
        n,
        "Concat",
        inputs,
        vec![("axis", AttrValue::Int(axis))],
        out,
        feature_map,
    )
}

/// RESHAPE, SQUEEZE, EXPAND_DIMS: a Reshape of the NHWC value to the declared output shape.
pub(super) fn reshape(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nhwc(input(n, 0)?);
    let out = out0(n)?;
    let target = cx.shape(out)?;
    let shape = cx.derived_i64(format!("{out}#shape"), &target);
    cx.push(n.label(), "Reshape", vec![x, shape], vec![out.into()]);
    Ok(())
}

/// PAD, PADV2 (a fill value) and MIRROR_PAD (REFLECT; SYMMETRIC has no ONNX mode).
pub(super) fn pad(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let paddings = cx.const_i64(input(n, 1)?)?;
    let rank = cx.rank(x)?;
    if paddings.len() != 2 * rank {
        return Err(format!("{} paddings for rank {rank}", paddings.len() / 2));
    }
    let nchw = cx.is_nchw(x) && rank == 4;
    let order: Vec<usize> = if nchw {
        TO_NCHW.to_vec()
    } else {
        (0..rank).collect()
    };
    let mut pads: Vec<i64> = order.iter().map(|&a| paddings[2 * a]).collect();
    pads.extend(order.iter().map(|&a| paddings[2 * a + 1]));
    let xin = if nchw { cx.nchw(x)? } else { cx.nhwc(x) };
    let pads = cx.derived_i64(format!("{out}#pads"), &pads);
    let mut inputs = vec![xin, pads];
    let mut attrs = Vec::new();
    match n.op_type.as_str() {
        "PADV2" => {
            if let Ok(v) = input(n, 2) {
                inputs.push(v.to_string());
            }
        }
        "MIRROR_PAD" => match attr_s(n, "mode") {
            "REFLECT" => attrs.push(("mode", AttrValue::String("reflect".into()))),
            other => {
                return Err(format!(
                    "mirror pad mode {other} is not supported (REFLECT is)"
                ));
            }
        },
        _ => {}
    }
    cx.emit(n, "Pad", inputs, attrs, out, nchw)
}

pub(super) fn transpose(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nhwc(input(n, 0)?);
    let perm = cx.const_i64(input(n, 1)?)?;
    let out = out0(n)?;
    cx.emit(
        n,
        "Transpose",
        vec![x],
        vec![("perm", ints(&perm))],
        out,
        false,
    )
}

/// STRIDED_SLICE over constant begin, end and strides: a Slice of the NHWC value (begin
/// and end masks as the whole axis, a shrunk axis as one element), then a Reshape to the
/// declared output shape, which drops the shrunk axes. Ellipsis, new axes and `offset` are
/// refused.
pub(super) fn strided_slice(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    for mask in ["ellipsis_mask", "new_axis_mask"] {
        if attr_i(n, mask, 0) != 0 {
            return Err(format!("{mask} is not supported"));
        }
    }
    if attr_i(n, "offset", 0) != 0 {
        return Err("offset is not supported".into());
    }
    let x = input(n, 0)?;
    let out = out0(n)?;
    let xs = cx.shape(x)?;
    let begin = cx.const_i64(input(n, 1)?)?;
    let end = cx.const_i64(input(n, 2)?)?;
    let strides = match input(n, 3) {
        Ok(t) => cx.const_i64(t)?,
        Err(_) => vec![1; begin.len()],
    };
    if begin.len() != end.len() || begin.len() != strides.len() || begin.len() > xs.len() {
        return Err(format!(
            "begin {begin:?}, end {end:?}, strides {strides:?} for rank {}",
            xs.len()
        ));
    }
    let bit = |mask: &str, i: usize| attr_i(n, mask, 0) >> i & 1 == 1;
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    for i in 0..begin.len() {
        let step = strides[i];
        if step == 0 {
            return Err("a stride of 0".into());
        }
        // The ends a mask means: the whole axis in the step's direction.
        let (first, past) = if step > 0 {
            (0, i64::MAX)
        } else {
            (-1, i64::MIN)
        };
        let b = if bit("begin_mask", i) {
            first
        } else {
            begin[i]
        };
        let e = if bit("shrink_axis_mask", i) {
            // One element: b, even when b is negative (-1 is the last).
            if b == -1 { i64::MAX } else { b + 1 }
        } else if bit("end_mask", i) {
            past
        } else {
            end[i]
        };
        starts.push(b);
        ends.push(e);
    }
    let xin = cx.nhwc(x);
    let axes: Vec<i64> = (0..begin.len() as i64).collect();
    let sliced = format!("{out}#slice");
    let inputs = vec![
        xin,
        cx.derived_i64(format!("{out}#starts"), &starts),
        cx.derived_i64(format!("{out}#ends"), &ends),
        cx.derived_i64(format!("{out}#axes"), &axes),
        cx.derived_i64(format!("{out}#steps"), &strides),
    ];
    cx.push(n.label(), "Slice", inputs, vec![sliced.clone()]);
    let shape = cx.derived_i64(format!("{out}#shape"), &cx.shape(out)?);
    cx.push(
        format!("{}#shape", n.label()),
        "Reshape",
        vec![sliced, shape],
        vec![out.into()],
    );
    Ok(())
}

/// FULLY_CONNECTED: y = x W^T + b over the NHWC value flattened to [rows, in].
pub(super) fn fully_connected(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    if attr_i(n, "weights_format", 0) != 0 {
        return Err("shuffled (packed) weights are not supported".into());
    }
    let (x, w) = (input(n, 0)?, input(n, 1)?);
    let out = out0(n)?;
    let ws = cx.shape(w)?;
    if ws.len() != 2 {
        return Err(format!("weights of shape {ws:?}, expected [out, in]"));
    }
    let xs = cx.shape(x)?;
    let mut xin = cx.nhwc(x);
    if xs.len() != 2 || xs[1] != ws[1] {
        let shape = cx.derived_i64(format!("{out}#rows_shape"), &[-1, ws[1]]);
        let rows = format!("{out}#rows");
        cx.push(
            format!("{}#rows", n.label()),
            "Reshape",
            vec![xin, shape],
            vec![rows.clone()],
        );
        xin = rows;
    }
    let mut inputs = vec![xin, w.to_string()];
    if let Ok(b) = input(n, 2) {
        inputs.push(b.to_string());
    }
    let os = cx.shape(out)?;
    let attrs = vec![("transB", AttrValue::Int(1))];
    if os.len() == 2 {
        return cx.emit(n, "Gemm", inputs, attrs, out, false);
    }
    let flat = format!("{out}#2d");
    cx.emit(n, "Gemm", inputs, attrs, &flat, false)?;
    let shape = cx.derived_i64(format!("{out}#shape"), &os);
    cx.push(
        format!("{}#shape", n.label()),
        "Reshape",
        vec![flat, shape],
        vec![out.into()],
    );
    Ok(())
}

/// MEAN, SUM, REDUCE_MAX/MIN/PROD over constant axes. An NCHW-held input is reduced in
/// place (axes remapped) when the kept axes come out in NHWC's order; otherwise it is
/// transposed back first.
pub(super) fn reduce(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let rank = cx.rank(x)?;
    let mut axes: Vec<usize> = cx
        .const_i64(input(n, 1)?)?
        .iter()
        .map(|&a| if a < 0 { a + rank as i64 } else { a } as usize)
        .collect();
    axes.sort();
    axes.dedup();
    if axes.iter().any(|&a| a >= rank) {
        return Err(format!("axes {axes:?} out of range for rank {rank}"));
    }
    if axes.is_empty() {
        // TFLite reduces over nothing (ONNX would reduce over every axis).
        let xin = if cx.is_nchw(x) {
            cx.nchw(x)?
        } else {
            x.to_string()
        };
        let nchw = cx.is_nchw(x);
        return cx.emit(n, "Identity", vec![xin], Vec::new(), out, nchw);
    }
    let keep = attr_i(n, "keep_dims", 0) != 0;
    let kept_nhwc: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let kept_nchw: Vec<usize> = TO_NCHW
        .iter()
        .copied()
        .filter(|a| !axes.contains(a))
        .collect();
    let in_place = cx.is_nchw(x) && rank == 4 && (keep || kept_nhwc == kept_nchw);
    let (xin, axes): (String, Vec<i64>) = if in_place {
        (
            cx.nchw(x)?,
            axes.iter().map(|&a| nchw_axis(a) as i64).collect(),
        )
    } else {
        (cx.nhwc(x), axes.iter().map(|&a| a as i64).collect())
    };
    let op = match n.op_type.as_str() {
        "MEAN" => "ReduceMean",
        "SUM" => "ReduceSum",
        "REDUCE_MAX" => "ReduceMax",
        "REDUCE_MIN" => "ReduceMin",
        _ => "ReduceProd",
    };
    let mut inputs = vec![xin];
    let mut attrs = vec![("keepdims", AttrValue::Int(keep as i64))];
    if op == "ReduceSum" {
        inputs.push(cx.derived_i64(format!("{out}#axes"), &axes));
    } else {
        attrs.push(("axes", ints(&axes)));
    }
    cx.emit(n, op, inputs, attrs, out, in_place && keep)
}
