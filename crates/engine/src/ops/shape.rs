//! Shape ops: the ones that only relabel a buffer (Reshape, Flatten, Squeeze, Unsqueeze,
//! Identity, inference-mode Dropout become views of their input), and the shape
//! arithmetic that folds on the host (Shape, Size, ConstantOfShape, Range, Constant).

use m2w_model::{AttrValue, NodeInfo};

use m2w_kernels::{Kernel, params};

use super::ctx::{Ctx, R, attr_i, attr_ints, host_input as get, ins, norm_axis, out0};
use super::host::{reshape_shape, squeeze_shape};
use super::{Registry, needs_constants};
use crate::plan::groups_1d_sym;
use crate::sym::{self, Expr};
use crate::tensor::{DT, Data, HostTensor, numel};

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
    r.op("ConstantOfShape", 9, &["value"], lower_constant_of_shape)
        .shape_inputs(&[0])
        .fold(fold_constant_of_shape);
    r.op("NonZero", 9, &[], |cx, n| cx.lower_nonzero(n));
    r.op("Range", 11, &["stash_type"], lower_range)
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
    let s = cx.sym_shape(ins[0])?;
    cx.view_sym(out, ins[0], s)
}

fn lower_reshape(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let input = cx.sym_shape(ins[0])?;
    let allowzero = attr_i(n, "allowzero", 0) != 0;
    // A target read at run time holds sizes: no -1, and no 0 unless allowzero.
    let spec = cx
        .shape_input(n, 1, if allowzero { 0 } else { 1 })?
        .ok_or("Reshape needs a shape")?;
    let s = reshape_shape_sym(&input, &spec, allowzero, false)?;
    let (total, got) = (sym::numel(&input), sym::numel(&s));
    if !cx.assume_equal(n, &total, &got) {
        return Err(format!(
            "cannot reshape {} to {}",
            sym::show(&input),
            sym::show(&spec)
        ));
    }
    cx.view_sym(out0(n), ins[0], s)
}

/// [`reshape_shape`] over expressions: a target dim is a constant (0 copies the input's
/// dim unless `allowzero`, -1 is inferred by exact division) or an expression of dims.
pub(crate) fn reshape_shape_sym(
    input: &[Expr],
    spec: &[Expr],
    allowzero: bool,
    check: bool,
) -> R<Vec<Expr>> {
    let total = sym::numel(input);
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, d) in spec.iter().enumerate() {
        match d.as_const() {
            Some(-1) => {
                if infer.replace(i).is_some() {
                    return Err("two -1 dims in Reshape".into());
                }
                out.push(Expr::Const(1));
            }
            Some(0) if !allowzero => {
                out.push(input.get(i).ok_or("0 dim past the input rank")?.clone())
            }
            Some(d) if d < 0 => return Err(format!("bad dim {d} in Reshape")),
            _ => out.push(d.clone()),
        }
    }
    let show = |v: &[Expr]| sym::show(v);
    if let Some(i) = infer {
        let known = sym::numel(&out);
        out[i] = total.div_exact(&known).ok_or_else(|| {
            format!(
                "cannot reshape {} to {}: the inferred dim does not divide exactly",
                show(input),
                show(spec)
            )
        })?;
    }
    if check && sym::numel(&out) != total {
        return Err(format!("cannot reshape {} to {}", show(input), show(spec)));
    }
    Ok(out)
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
    let s = cx.sym_shape(ins[0])?;
    let r = s.len() as i64;
    let axis = attr_i(n, "axis", 1);
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a > r {
        return Err(format!("axis {axis} out of range"));
    }
    let a = a as usize;
    let shape = vec![sym::numel(&s[..a]), sym::numel(&s[a..])];
    cx.view_sym(out0(n), ins[0], shape)
}

fn lower_squeeze(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let s = cx.sym_shape(ins[0])?;
    let axes = if cx.opset >= 13 {
        cx.const_ints(n, 1)?
    } else {
        attr_ints(n, "axes")
    };
    let shape = squeeze_shape_sym(&n.op_type, &s, axes.as_deref())?;
    cx.view_sym(out0(n), ins[0], shape)
}

/// [`squeeze_shape`] over expressions: only dims that are the constant 1 squeeze (a
/// dim of the plan is not known to be 1).
fn squeeze_shape_sym(op: &str, s: &[Expr], axes: Option<&[i64]>) -> R<Vec<Expr>> {
    let one = Expr::Const(1);
    if op == "Squeeze" {
        let Some(a) = axes else {
            if s.iter().any(|d| d.as_const().is_none()) {
                return Err(format!(
                    "Squeeze without axes of {}: whether a dim of the plan is 1 is known only per run",
                    sym::show(s)
                ));
            }
            return Ok(s.iter().filter(|d| **d != one).cloned().collect());
        };
        let ax: Vec<usize> = a.iter().map(|&x| norm_axis(x, s.len())).collect::<R<_>>()?;
        for &x in &ax {
            if s[x] != one {
                return Err(format!("cannot squeeze axis {x} of size {}", s[x]));
            }
        }
        Ok(s.iter()
            .enumerate()
            .filter(|(i, _)| !ax.contains(i))
            .map(|(_, d)| d.clone())
            .collect())
    } else {
        let a = axes.ok_or("Unsqueeze needs axes")?;
        let rank = s.len() + a.len();
        let ax: Vec<usize> = a.iter().map(|&x| norm_axis(x, rank)).collect::<R<_>>()?;
        let mut out = Vec::with_capacity(rank);
        let mut it = s.iter();
        for i in 0..rank {
            if ax.contains(&i) {
                out.push(one.clone());
            } else {
                out.push(it.next().ok_or("bad Unsqueeze axes")?.clone());
            }
        }
        Ok(out)
    }
}

/// ConstantOfShape of a shape value that holds dims: a fill of its count.
fn lower_constant_of_shape(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let shape = cx
        .shape_input(n, 0, 0)?
        .ok_or("ConstantOfShape needs a shape")?;
    let (dtype, v) = match n.attributes.get("value") {
        Some(AttrValue::Tensor { dtype, values, .. }) => {
            (dtype.as_str(), values.first().copied().unwrap_or(0.0))
        }
        _ => ("f32", 0.0),
    };
    let (dt, bits) = match dtype {
        "f32" | "f64" | "f16" => (DT::F32, (v as f32).to_bits()),
        "bool" => (DT::Bool, u32::from(v != 0.0)),
        _ => (DT::I32, v as i64 as i32 as u32),
    };
    let out = out0(n);
    cx.new_tensor_sym(out, shape.clone(), dt)?;
    cx.fill_sym(n, out, &sym::numel(&shape), bits);
    Ok(())
}

/// Range whose limit (or start) holds dims: out[i] = start + i * delta on the GPU, with
/// a count of ceil((limit - start) / delta) known per run. delta must be a constant.
fn lower_range(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    fn one(cx: &mut Ctx, n: &NodeInfo, i: usize) -> R<Expr> {
        let v = cx
            .shape_input(n, i, 0)?
            .ok_or("Range needs start, limit and delta")?;
        v.first()
            .cloned()
            .ok_or_else(|| "an empty Range operand".to_string())
    }
    let dt = cx.dt(ins(n)[0])?;
    if dt != DT::I32 {
        return Err("a Range over floats needs constant operands".into());
    }
    let (start, limit, delta) = (one(cx, n, 0)?, one(cx, n, 1)?, one(cx, n, 2)?);
    let d = delta
        .as_const()
        .filter(|d| *d != 0)
        .ok_or("Range's delta must be a nonzero constant")?;
    let span = limit - start.clone();
    let count = if d > 0 {
        span.ceil_div(d).max(Expr::Const(0))
    } else {
        (Expr::Const(0) - span).ceil_div(-d).max(Expr::Const(0))
    };
    let out = out0(n);
    cx.new_tensor_sym(out, vec![count.clone()], DT::I32)?;
    let p = params::Range::<Expr> {
        n: count.clone(),
        start,
        delta: Expr::Const(d as i32 as u32 as i64),
    }
    .slots();
    let groups = groups_1d_sym(&count, 256);
    cx.dispatch_sym(n, Kernel::RangeI32, vec![cx.bind(out)], p, groups);
    Ok(())
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
