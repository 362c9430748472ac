//! Host tensor arithmetic for plan-time folding (shape subgraphs: Shape -> Gather ->
//! Concat -> Reshape ...) and the shape rules shared by the host folds and the GPU
//! lowerings (Reshape, Squeeze/Unsqueeze, Slice).

use super::ctx::{R, broadcast};
use crate::tensor::{DT, Data, HostTensor, numel};

pub(crate) fn norm(axis: i64, rank: usize) -> R<usize> {
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

/// A comparison of two values of the same type.
fn compare<T: PartialOrd>(op: &str, p: T, q: T) -> bool {
    match op {
        "Equal" => p == q,
        "Less" => p < q,
        "LessOrEqual" => p <= q,
        "GreaterOrEqual" => p >= q,
        _ => p > q,
    }
}

/// The elements of `t` at `offset + sum(index[d] * strides[d])` for every index of `shape`,
/// in row-major order: the host twin of the `copy_strided` kernel (Transpose, Slice,
/// Split, Tile).
pub(crate) fn gather_strided(
    t: &HostTensor,
    shape: &[usize],
    offset: i64,
    strides: &[i64],
) -> HostTensor {
    let total = numel(shape);
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
    select(t, shape.to_vec(), &picks)
}

pub(crate) fn binary_fmod(op: &str, a: &HostTensor, b: &HostTensor, fmod: bool) -> R<HostTensor> {
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
    let cmp = matches!(
        op,
        "Equal" | "Less" | "Greater" | "LessOrEqual" | "GreaterOrEqual"
    );
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
                        "Xor" => p != q,
                        "Equal" => p == q,
                        _ => false,
                    }
                })
                .collect(),
        ),
        _ => return Err(format!("{op}: mixed dtypes")),
    })
}

pub(crate) fn cast(t: &HostTensor, to: DT) -> HostTensor {
    let data = match to {
        DT::F32 => Data::F32(t.as_f64().iter().map(|&v| v as f32).collect()),
        DT::I32 => Data::I64(match &t.data {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            _ => t.as_i64(),
        }),
        DT::Bool => Data::Bool(t.as_f64().iter().map(|&v| v != 0.0).collect()),
        // Host folds compute on f32 / i64 / bool only; onnx_dt maps nothing else here.
        DT::F16 => Data::F32(t.as_f64().iter().map(|&v| v as f32).collect()),
        DT::I8 | DT::U8 | DT::U4 => Data::I64(t.as_i64()),
    };
    HostTensor {
        shape: t.shape.clone(),
        data,
    }
}

pub(crate) fn gather_along(
    t: &HostTensor,
    axis: usize,
    idx: &[i64],
    idx_shape: &[usize],
) -> R<HostTensor> {
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

pub(crate) fn select(t: &HostTensor, shape: Vec<usize>, picks: &[usize]) -> HostTensor {
    let t = &t.unpacked();
    let data = match &t.data {
        Data::Packed { .. } => unreachable!("unpacked above"),
        Data::F32(v) => Data::F32(picks.iter().map(|&i| v[i]).collect()),
        Data::I64(v) => Data::I64(picks.iter().map(|&i| v[i]).collect()),
        Data::Bool(v) => Data::Bool(picks.iter().map(|&i| v[i]).collect()),
    };
    HostTensor { shape, data }
}

/// `t` broadcast to `shape` (numpy rules), by index selection.
pub(crate) fn expand(t: &HostTensor, shape: &[usize]) -> R<HostTensor> {
    let full = broadcast(&[&t.shape, shape])?;
    if full != shape {
        return Err(format!("cannot expand {:?} to {shape:?}", t.shape));
    }
    let strides = super::ctx::broadcast_strides(&t.shape, shape);
    Ok(gather_strided(t, shape, 0, &strides))
}
