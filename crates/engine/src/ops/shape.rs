//! Shape ops: the ones that only relabel a buffer (Reshape, Flatten, Squeeze, Unsqueeze,
//! Identity, inference-mode Dropout become views of their input), and the shape
//! arithmetic that folds on the host (Shape, Size, ConstantOfShape, Range, Constant).

use m2w_model::{AttrValue, NodeInfo};

use super::ctx::{Ctx, R, attr_i, attr_ints, host_input as get, ins, out0};
use super::host::{reshape_shape, squeeze_shape};
use super::{Registry, needs_constants};
use crate::tensor::{Data, HostTensor, numel};

pub(super) fn register(r: &mut Registry) {
    r.op("Identity", 1, &[], lower_identity).fold(fold_identity);
    r.op(
        "Dropout",
        1,
        &["consumed_inputs", "is_test", "ratio", "seed"],
        lower_identity,
    );
    r.op(
        "Reshape",
        1,
        &["allowzero", "consumed_inputs", "shape"],
        lower_reshape,
    )
    .shape_inputs(&[1])
    .fold(fold_reshape);
    r.op("Flatten", 1, &["axis"], lower_flatten)
        .fold(fold_flatten);
    r.op("Squeeze", 1, &["axes"], lower_squeeze)
        .shape_inputs(&[1])
        .fold(fold_squeeze);
    r.op("Unsqueeze", 1, &["axes"], lower_squeeze)
        .shape_inputs(&[1])
        .fold(fold_squeeze);
    r.op("Shape", 1, &["end", "start"], needs_constants)
        .shape_only()
        .fold(fold_shape);
    r.op("Size", 1, &[], needs_constants)
        .shape_only()
        .fold(fold_size);
    r.op("ConstantOfShape", 9, &["value"], needs_constants)
        .shape_inputs(&[0])
        .fold(fold_constant_of_shape);
    r.op("Range", 11, &["stash_type"], needs_constants)
        .shape_inputs(&[0, 1, 2])
        .fold(fold_range);
    r.op(
        "Constant",
        1,
        &[
            "sparse_value",
            "value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
            "value_string",
            "value_strings",
        ],
        lower_constant,
    );
}

/// Constant nodes are read as weights by the model reader; the node has nothing left to do
/// unless its value could not be read.
fn lower_constant(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let out = out0(n);
    if cx.konst(out).is_some() {
        Ok(())
    } else {
        Err("its value's dtype is not one m2w reads".into())
    }
}

fn lower_identity(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    if n.outputs.len() > 1 && n.outputs.get(1).is_some_and(|o| !o.is_empty()) {
        return Err("the mask output of Dropout is not supported".into());
    }
    if n.op_type == "Dropout"
        && ins.get(2).is_some_and(|t| {
            !t.is_empty()
                && cx
                    .konst(t)
                    .map(|k| k.as_i64().iter().any(|&v| v != 0))
                    .unwrap_or(true)
        })
    {
        return Err("Dropout in training mode is not supported".into());
    }
    let s = cx.shape(ins[0])?;
    cx.view(out, ins[0], s)
}

fn lower_reshape(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let input = cx.shape(ins[0])?;
    let spec = cx.const_ints(n, 1)?.ok_or("Reshape needs a shape")?;
    let allowzero = attr_i(n, "allowzero", 0) != 0;
    let s = reshape_shape(&input, &spec, allowzero)?;
    cx.view(out0(n), ins[0], s)
}

fn flatten_shape(s: &[usize], axis: i64) -> R<Vec<usize>> {
    let a = if axis < 0 {
        axis + s.len() as i64
    } else {
        axis
    };
    if a < 0 || a as usize > s.len() {
        return Err(format!("axis {axis} out of range"));
    }
    let a = a as usize;
    Ok(vec![numel(&s[..a]), numel(&s[a..])])
}

fn lower_flatten(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let s = cx.shape(ins[0])?;
    let shape = flatten_shape(&s, attr_i(n, "axis", 1))?;
    cx.view(out0(n), ins[0], shape)
}

fn lower_squeeze(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let s = cx.shape(ins[0])?;
    let axes = if cx.opset >= 13 {
        cx.const_ints(n, 1)?
    } else {
        attr_ints(n, "axes")
    };
    let shape = squeeze_shape(&n.op_type, &s, axes.as_deref())?;
    cx.view(out0(n), ins[0], shape)
}

fn fold_identity(_: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    Ok(vec![get(ins, 0)?.clone()])
}

fn fold_reshape(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let s = reshape_shape(
        &t.shape,
        &get(ins, 1)?.as_i64(),
        attr_i(n, "allowzero", 0) != 0,
    )?;
    Ok(vec![t.reshaped(s)])
}

fn fold_flatten(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    Ok(vec![
        t.reshaped(flatten_shape(&t.shape, attr_i(n, "axis", 1))?),
    ])
}

fn fold_squeeze(n: &NodeInfo, ins: &[Option<HostTensor>], opset: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let axes = if opset >= 13 {
        ins.get(1).and_then(|a| a.as_ref()).map(|a| a.as_i64())
    } else {
        attr_ints(n, "axes")
    };
    Ok(vec![t.reshaped(squeeze_shape(
        &n.op_type,
        &t.shape,
        axes.as_deref(),
    )?)])
}

fn fold_shape(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let s = &get(ins, 0)?.shape;
    let r = s.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(attr_i(n, "start", 0));
    let end = clampi(attr_i(n, "end", r));
    let dims: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
    Ok(vec![HostTensor::i64(vec![dims.len()], dims)])
}

fn fold_size(_: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    Ok(vec![HostTensor::i64(
        vec![],
        vec![numel(&get(ins, 0)?.shape) as i64],
    )])
}

fn fold_constant_of_shape(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let shape: Vec<usize> = get(ins, 0)?
        .as_i64()
        .iter()
        .map(|&d| d.max(0) as usize)
        .collect();
    let count = numel(&shape);
    let (dtype, v) = match n.attributes.get("value") {
        Some(AttrValue::Tensor { dtype, values, .. }) => {
            (dtype.as_str(), values.first().copied().unwrap_or(0.0))
        }
        _ => ("f32", 0.0),
    };
    Ok(vec![match dtype {
        "f32" | "f64" | "f16" => HostTensor::f32(shape, vec![v as f32; count]),
        "bool" => HostTensor::bool(shape, vec![v != 0.0; count]),
        _ => HostTensor::i64(shape, vec![v as i64; count]),
    }])
}

fn fold_range(_: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let (s, l, d) = (get(ins, 0)?, get(ins, 1)?, get(ins, 2)?);
    let count = ((l.as_f64()[0] - s.as_f64()[0]) / d.as_f64()[0])
        .ceil()
        .max(0.0) as usize;
    Ok(vec![match &s.data {
        Data::F32(_) => HostTensor::f32(
            vec![count],
            (0..count)
                .map(|i| s.as_f64()[0] as f32 + i as f32 * d.as_f64()[0] as f32)
                .collect(),
        ),
        _ => HostTensor::i64(
            vec![count],
            (0..count)
                .map(|i| s.as_i64()[0] + i as i64 * d.as_i64()[0])
                .collect(),
        ),
    }])
}

#[cfg(test)]
mod tests;
