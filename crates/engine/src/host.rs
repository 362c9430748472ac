//! Host evaluation of cheap shape arithmetic (Shape, Gather on shapes, Concat, Cast, ...):
//! nodes whose inputs are all constants are folded at plan time, so shape subgraphs never
//! reach the GPU and ops that need constant inputs (Reshape, Slice, Expand) get them.
//! Also the shape rules shared with the GPU lowering.

use m2w_model::{AttrValue, NodeInfo};

use crate::lower::{broadcast, onnx_dt};
use crate::tensor::{DT, Data, HostTensor, numel};

type R<T> = Result<T, String>;

/// Ops folded on the host when every input is a constant.
pub fn can_fold(op: &str) -> bool {
    matches!(
        op,
        "Shape"
            | "Size"
            | "Constant"
            | "ConstantOfShape"
            | "Range"
            | "Cast"
            | "CastLike"
            | "Gather"
            | "Concat"
            | "Unsqueeze"
            | "Squeeze"
            | "Reshape"
            | "Flatten"
            | "Identity"
            | "Slice"
            | "Expand"
            | "Add"
            | "Sub"
            | "Mul"
            | "Div"
            | "Equal"
            | "Less"
            | "Greater"
            | "Where"
            | "Not"
            | "Neg"
            | "Abs"
            | "Min"
            | "Max"
            | "Mod"
            | "And"
            | "Or"
            | "ReduceProd"
            | "ReduceSum"
    )
}

/// Ops that run on the host even when inputs are not constant, because they only read
/// shapes (Shape, Size).
pub fn shape_only(op: &str) -> bool {
    matches!(op, "Shape" | "Size")
}

fn attr_i(n: &NodeInfo, k: &str, d: i64) -> i64 {
    match n.attributes.get(k) {
        Some(AttrValue::Int(v)) => *v,
        _ => d,
    }
}

fn attr_ints(n: &NodeInfo, k: &str) -> Option<Vec<i64>> {
    match n.attributes.get(k) {
        Some(AttrValue::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}

fn norm(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize > rank.saturating_sub(1).max(0) && !(rank == 0 && a == 0) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Reshape's target shape (0 copies the input dim unless allowzero, -1 is inferred).
pub fn reshape_shape(input: &[usize], spec: &[i64], allowzero: bool) -> R<Vec<usize>> {
    let total = numel(input);
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err("two -1 dims in Reshape".into());
                }
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or("0 dim past the input rank")?),
            d if d < 0 => return Err(format!("bad dim {d} in Reshape")),
            d => out.push(d as usize),
        }
    }
    if let Some(i) = infer {
        let known: usize = out
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, &d)| d)
            .product();
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    }
    if numel(&out) != total {
        return Err(format!("cannot reshape {input:?} to {spec:?}"));
    }
    Ok(out)
}

pub fn squeeze_shape(op: &str, s: &[usize], axes: Option<&[i64]>) -> R<Vec<usize>> {
    if op == "Squeeze" {
        match axes {
            None => Ok(s.iter().copied().filter(|&d| d != 1).collect()),
            Some(a) => {
                let ax: Vec<usize> = a.iter().map(|&x| norm(x, s.len())).collect::<R<_>>()?;
                for &x in &ax {
                    if s[x] != 1 {
                        return Err(format!("cannot squeeze axis {x} of size {}", s[x]));
                    }
                }
                Ok(s.iter()
                    .enumerate()
                    .filter(|(i, _)| !ax.contains(i))
                    .map(|(_, &d)| d)
                    .collect())
            }
        }
    } else {
        let a = axes.ok_or("Unsqueeze needs axes")?;
        let rank = s.len() + a.len();
        let mut ax: Vec<usize> = a.iter().map(|&x| norm(x, rank)).collect::<R<_>>()?;
        ax.sort();
        let mut out = Vec::with_capacity(rank);
        let mut it = s.iter();
        for i in 0..rank {
            if ax.contains(&i) {
                out.push(1);
            } else {
                out.push(*it.next().ok_or("bad Unsqueeze axes")?);
            }
        }
        Ok(out)
    }
}

/// Output shape, start offset and element strides (negative for negative steps) of Slice.
pub fn slice_geometry(
    s: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> R<(Vec<usize>, i64, Vec<i64>)> {
    let rank = s.len();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| norm(x, rank)).collect::<R<_>>()?,
        None => (0..starts.len()).collect(),
    };
    if starts.len() != axes.len() || ends.len() != axes.len() {
        return Err("starts/ends/axes lengths differ".into());
    }
    let mut cs = vec![1i64; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        cs[d] = cs[d + 1] * s[d + 1] as i64;
    }
    let mut shape = s.to_vec();
    let mut strides = cs.clone();
    let mut offset = 0i64;
    for (k, &a) in axes.iter().enumerate() {
        let dim = s[a] as i64;
        let step = steps.and_then(|st| st.get(k).copied()).unwrap_or(1);
        if step == 0 {
            return Err("Slice step 0".into());
        }
        let clampi = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
        let mut start = starts[k];
        let mut end = ends[k];
        if start < 0 {
            start += dim;
        }
        if end < 0 {
            end += dim;
        }
        let (start, end) = if step > 0 {
            (clampi(start, 0, dim), clampi(end, 0, dim))
        } else {
            (clampi(start, 0, dim - 1), clampi(end, -1, dim - 1))
        };
        let len = if step > 0 {
            (end - start + step - 1) / step
        } else {
            (start - end + (-step) - 1) / (-step)
        };
        shape[a] = len.max(0) as usize;
        offset += start * cs[a];
        strides[a] = cs[a] * step;
    }
    Ok((shape, offset, strides))
}

/// Equal / Less / Greater of two values of the same type.
fn compare<T: PartialOrd>(op: &str, p: T, q: T) -> bool {
    match op {
        "Equal" => p == q,
        "Less" => p < q,
        _ => p > q,
    }
}

fn binary(op: &str, a: &HostTensor, b: &HostTensor) -> R<HostTensor> {
    binary_fmod(op, a, b, false)
}

fn binary_fmod(op: &str, a: &HostTensor, b: &HostTensor, fmod: bool) -> R<HostTensor> {
    let shape = broadcast(&[&a.shape, &b.shape])?;
    let n = numel(&shape);
    let idx = |t: &HostTensor, i: usize| -> usize {
        let off = shape.len() - t.shape.len();
        let mut rem = i;
        let mut j = 0;
        let mut stride = 1;
        for d in (0..shape.len()).rev() {
            let c = rem % shape[d];
            rem /= shape[d];
            if d >= off {
                let sd = t.shape[d - off];
                if sd != 1 {
                    j += c * stride;
                }
                stride *= sd;
            }
        }
        j
    };
    let cmp = matches!(op, "Equal" | "Less" | "Greater");
    Ok(match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let f = |p: f32, q: f32| -> f32 {
                match op {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    "Div" => p / q,
                    "Min" => p.min(q),
                    "Max" => p.max(q),
                    "Mod" => p % q,
                    _ => f32::NAN,
                }
            };
            if cmp {
                HostTensor::bool(
                    shape.clone(),
                    (0..n)
                        .map(|i| compare(op, x[idx(a, i)], y[idx(b, i)]))
                        .collect(),
                )
            } else {
                HostTensor::f32(
                    shape.clone(),
                    (0..n).map(|i| f(x[idx(a, i)], y[idx(b, i)])).collect(),
                )
            }
        }
        (Data::I64(x), Data::I64(y)) => {
            if cmp {
                HostTensor::bool(
                    shape.clone(),
                    (0..n)
                        .map(|i| compare(op, x[idx(a, i)], y[idx(b, i)]))
                        .collect(),
                )
            } else {
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let (p, q) = (x[idx(a, i)], y[idx(b, i)]);
                    out.push(match op {
                        "Add" => p.wrapping_add(q),
                        "Sub" => p.wrapping_sub(q),
                        "Mul" => p.wrapping_mul(q),
                        "Div" => p.checked_div(q).ok_or("division by zero")?,
                        "Min" => p.min(q),
                        "Max" => p.max(q),
                        "Mod" => {
                            let r = p.checked_rem(q).ok_or("division by zero")?;
                            if !fmod && r != 0 && (r < 0) != (q < 0) {
                                r + q
                            } else {
                                r
                            }
                        }
                        _ => return Err(format!("{op} on integers")),
                    });
                }
                HostTensor::i64(shape.clone(), out)
            }
        }
        (Data::Bool(x), Data::Bool(y)) => HostTensor::bool(
            shape.clone(),
            (0..n)
                .map(|i| {
                    let (p, q) = (x[idx(a, i)], y[idx(b, i)]);
                    match op {
                        "And" => p && q,
                        "Or" => p || q,
                        "Equal" => p == q,
                        _ => false,
                    }
                })
                .collect(),
        ),
        _ => return Err(format!("{op}: mixed dtypes")),
    })
}

fn cast(t: &HostTensor, to: DT) -> HostTensor {
    let data = match to {
        DT::F32 => Data::F32(t.as_f64().iter().map(|&v| v as f32).collect()),
        DT::I32 => Data::I64(match &t.data {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            _ => t.as_i64(),
        }),
        DT::Bool => Data::Bool(t.as_f64().iter().map(|&v| v != 0.0).collect()),
    };
    HostTensor {
        shape: t.shape.clone(),
        data,
    }
}

fn gather_along(t: &HostTensor, axis: usize, idx: &[i64], idx_shape: &[usize]) -> R<HostTensor> {
    let outer = numel(&t.shape[..axis]);
    let len = t.shape[axis];
    let inner = numel(&t.shape[axis + 1..]);
    let mut shape = t.shape[..axis].to_vec();
    shape.extend(idx_shape);
    shape.extend(&t.shape[axis + 1..]);
    let mut picks = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &k in idx {
            let k = if k < 0 { k + len as i64 } else { k };
            if k < 0 || k as usize >= len {
                return Err(format!("index {k} out of range {len}"));
            }
            for i in 0..inner {
                picks.push((o * len + k as usize) * inner + i);
            }
        }
    }
    Ok(select(t, shape, &picks))
}

fn select(t: &HostTensor, shape: Vec<usize>, picks: &[usize]) -> HostTensor {
    let data = match &t.data {
        Data::F32(v) => Data::F32(picks.iter().map(|&i| v[i]).collect()),
        Data::I64(v) => Data::I64(picks.iter().map(|&i| v[i]).collect()),
        Data::Bool(v) => Data::Bool(picks.iter().map(|&i| v[i]).collect()),
    };
    HostTensor { shape, data }
}

/// Evaluates a foldable node on constant inputs; returns its outputs in order.
pub fn eval(n: &NodeInfo, ins: &[Option<HostTensor>], opset: i64) -> R<Vec<HostTensor>> {
    let get = |i: usize| -> R<&HostTensor> {
        ins.get(i)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| format!("missing input {i}"))
    };
    let op = n.op_type.as_str();
    let one = |t: HostTensor| Ok(vec![t]);
    match op {
        "Shape" => {
            let s = &get(0)?.shape;
            let r = s.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(attr_i(n, "start", 0));
            let end = clampi(attr_i(n, "end", r));
            let dims: Vec<i64> = s[start..end.max(start)].iter().map(|&d| d as i64).collect();
            one(HostTensor::i64(vec![dims.len()], dims))
        }
        "Size" => one(HostTensor::i64(vec![], vec![numel(&get(0)?.shape) as i64])),
        "Identity" => one(get(0)?.clone()),
        "ConstantOfShape" => {
            let shape: Vec<usize> = get(0)?
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
            one(match dtype {
                "f32" | "f64" | "f16" => HostTensor::f32(shape, vec![v as f32; count]),
                "bool" => HostTensor::bool(shape, vec![v != 0.0; count]),
                _ => HostTensor::i64(shape, vec![v as i64; count]),
            })
        }
        "Range" => {
            let (s, l, d) = (get(0)?, get(1)?, get(2)?);
            let count = ((l.as_f64()[0] - s.as_f64()[0]) / d.as_f64()[0])
                .ceil()
                .max(0.0) as usize;
            match &s.data {
                Data::F32(_) => one(HostTensor::f32(
                    vec![count],
                    (0..count)
                        .map(|i| s.as_f64()[0] as f32 + i as f32 * d.as_f64()[0] as f32)
                        .collect(),
                )),
                _ => one(HostTensor::i64(
                    vec![count],
                    (0..count)
                        .map(|i| s.as_i64()[0] + i as i64 * d.as_i64()[0])
                        .collect(),
                )),
            }
        }
        "Cast" => one(cast(get(0)?, onnx_dt(attr_i(n, "to", 1) as i32)?)),
        "CastLike" => one(cast(get(0)?, get(1)?.dt())),
        "Gather" => {
            let t = get(0)?;
            let axis = norm(attr_i(n, "axis", 0), t.shape.len())?;
            let idx = get(1)?;
            one(gather_along(t, axis, &idx.as_i64(), &idx.shape)?)
        }
        "Concat" => {
            let parts: Vec<&HostTensor> = ins.iter().flatten().collect();
            let first = parts.first().ok_or("Concat without inputs")?;
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
                    }
                }
            }
            one(match first.data {
                Data::F32(_) => HostTensor::f32(shape, data_f),
                Data::I64(_) => HostTensor::i64(shape, data_i),
                Data::Bool(_) => HostTensor::bool(shape, data_b),
            })
        }
        "Unsqueeze" | "Squeeze" => {
            let t = get(0)?;
            let axes = if opset >= 13 {
                ins.get(1).and_then(|a| a.as_ref()).map(|a| a.as_i64())
            } else {
                attr_ints(n, "axes")
            };
            one(t.reshaped(squeeze_shape(op, &t.shape, axes.as_deref())?))
        }
        "Reshape" => {
            let t = get(0)?;
            one(t.reshaped(reshape_shape(
                &t.shape,
                &get(1)?.as_i64(),
                attr_i(n, "allowzero", 0) != 0,
            )?))
        }
        "Flatten" => {
            let t = get(0)?;
            let axis = attr_i(n, "axis", 1);
            let a = if axis < 0 {
                axis + t.shape.len() as i64
            } else {
                axis
            } as usize;
            one(t.reshaped(vec![
                numel(&t.shape[..a.min(t.shape.len())]),
                numel(&t.shape[a.min(t.shape.len())..]),
            ]))
        }
        "Slice" => {
            let t = get(0)?;
            let (starts, ends, axes, steps) = if opset < 10 {
                (
                    attr_ints(n, "starts").ok_or("starts")?,
                    attr_ints(n, "ends").ok_or("ends")?,
                    attr_ints(n, "axes"),
                    None,
                )
            } else {
                let opt = |i: usize| ins.get(i).and_then(|a| a.as_ref()).map(|a| a.as_i64());
                (get(1)?.as_i64(), get(2)?.as_i64(), opt(3), opt(4))
            };
            let (shape, offset, strides) =
                slice_geometry(&t.shape, &starts, &ends, axes.as_deref(), steps.as_deref())?;
            let total = numel(&shape);
            let mut picks = Vec::with_capacity(total);
            for i in 0..total {
                let mut rem = i;
                let mut off = offset;
                for d in (0..shape.len()).rev() {
                    off += (rem % shape[d]) as i64 * strides[d];
                    rem /= shape[d];
                }
                picks.push(off as usize);
            }
            one(select(t, shape, &picks))
        }
        "Expand" => {
            let t = get(0)?;
            let target: Vec<usize> = get(1)?
                .as_i64()
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let shape = broadcast(&[&t.shape, &target])?;
            let zeros = HostTensor {
                shape: shape.clone(),
                data: match t.data {
                    Data::F32(_) => Data::F32(vec![0.0; numel(&shape)]),
                    Data::I64(_) => Data::I64(vec![0; numel(&shape)]),
                    Data::Bool(_) => Data::Bool(vec![false; numel(&shape)]),
                },
            };
            match t.data {
                Data::Bool(_) => one(binary("Or", t, &zeros)?),
                _ => one(binary("Add", t, &zeros)?),
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Equal" | "Less" | "Greater" | "Min" | "Max" | "Mod"
        | "And" | "Or" => {
            let fmod = attr_i(n, "fmod", 0) != 0;
            let mut acc = get(0)?.clone();
            for i in 1..ins.len() {
                acc = binary_fmod(op, &acc, get(i)?, fmod)?;
            }
            one(acc)
        }
        "Where" => {
            let (c, x, y) = (get(0)?, get(1)?, get(2)?);
            let shape = broadcast(&[&c.shape, &x.shape, &y.shape])?;
            // Broadcast each to the full shape via Expand semantics, then pick.
            let full = |t: &HostTensor| -> R<HostTensor> {
                let node = NodeInfo {
                    name: String::new(),
                    op_type: "Expand".into(),
                    domain: String::new(),
                    inputs: vec![],
                    outputs: vec![],
                    scope: String::new(),
                    attributes: Default::default(),
                };
                let target =
                    HostTensor::i64(vec![shape.len()], shape.iter().map(|&d| d as i64).collect());
                Ok(eval(&node, &[Some(t.clone()), Some(target)], opset)?.remove(0))
            };
            let (c, x, y) = (full(c)?, full(x)?, full(y)?);
            let cond = c.as_i64();
            let picks_x: Vec<bool> = cond.iter().map(|&v| v != 0).collect();
            let data = match (&x.data, &y.data) {
                (Data::F32(a), Data::F32(b)) => Data::F32(
                    picks_x
                        .iter()
                        .enumerate()
                        .map(|(i, &p)| if p { a[i] } else { b[i] })
                        .collect(),
                ),
                (Data::I64(a), Data::I64(b)) => Data::I64(
                    picks_x
                        .iter()
                        .enumerate()
                        .map(|(i, &p)| if p { a[i] } else { b[i] })
                        .collect(),
                ),
                (Data::Bool(a), Data::Bool(b)) => Data::Bool(
                    picks_x
                        .iter()
                        .enumerate()
                        .map(|(i, &p)| if p { a[i] } else { b[i] })
                        .collect(),
                ),
                _ => return Err("Where: mixed dtypes".into()),
            };
            one(HostTensor { shape, data })
        }
        "Not" => {
            let t = get(0)?;
            one(HostTensor::bool(
                t.shape.clone(),
                t.as_i64().iter().map(|&v| v == 0).collect(),
            ))
        }
        "Neg" | "Abs" => {
            let t = get(0)?;
            one(match &t.data {
                Data::F32(v) => HostTensor::f32(
                    t.shape.clone(),
                    v.iter()
                        .map(|&x| if op == "Neg" { -x } else { x.abs() })
                        .collect(),
                ),
                Data::I64(v) => HostTensor::i64(
                    t.shape.clone(),
                    v.iter()
                        .map(|&x| if op == "Neg" { -x } else { x.abs() })
                        .collect(),
                ),
                Data::Bool(_) => return Err(format!("{op} on bool")),
            })
        }
        "ReduceProd" | "ReduceSum" => {
            let t = get(0)?;
            let axes = if opset >= 18 || (op == "ReduceSum" && opset >= 13) {
                ins.get(1).and_then(|a| a.as_ref()).map(|a| a.as_i64())
            } else {
                attr_ints(n, "axes")
            };
            if axes.as_ref().is_some_and(|a| !a.is_empty()) || t.shape.len() > 1 {
                return Err("only full reductions of 1-D constants fold on the host".into());
            }
            let keep = attr_i(n, "keepdims", 1) != 0;
            let shape = if keep { vec![1; t.shape.len()] } else { vec![] };
            one(match &t.data {
                Data::F32(v) => HostTensor::f32(
                    shape,
                    vec![if op == "ReduceSum" {
                        v.iter().sum()
                    } else {
                        v.iter().product()
                    }],
                ),
                Data::I64(v) => HostTensor::i64(
                    shape,
                    vec![if op == "ReduceSum" {
                        v.iter().sum()
                    } else {
                        v.iter().product()
                    }],
                ),
                Data::Bool(_) => return Err("bool reduction".into()),
            })
        }
        _ => Err(format!("{op} is not folded on the host")),
    }
}
