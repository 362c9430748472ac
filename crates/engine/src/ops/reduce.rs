//! Reductions over any set of axes (`reduce_<op>_<dtype>`, a thread per output element):
//! the Reduce* family, ArgMax/ArgMin and the global pools. ReduceSum and ReduceProd of 1-D
//! constants also fold on the host (element counts in shape subgraphs). CumSum, a scan
//! along one axis, runs a thread per line (`cumsum_<dtype>`).

use std::collections::HashSet;

use m2w_kernels::params;
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{
    Ctx, R, attr_i, attr_ints, contiguous_strides, contiguous_strides_sym, dims8,
    host_input as get, ins, kernel_for, norm_axis, out0, vec8_sym, vec8_u32,
};
use crate::plan::{groups_1d, groups_1d_sym};
use crate::sym::{self, Expr};
use crate::tensor::{DT, Data, HostTensor};

const REDUCE_ATTRS: &[&str] = &["axes", "keepdims", "noop_with_empty_axes"];

pub(super) fn register(r: &mut Registry) {
    for op in [
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ReduceLogSum",
        "ReduceLogSumExp",
    ] {
        let spec = r.op(op, 1, REDUCE_ATTRS, lower_reduce).shape_inputs(&[1]);
        if matches!(op, "ReduceSum" | "ReduceProd" | "ReduceMax" | "ReduceMin") {
            spec.fold(fold_reduce);
        }
    }
    for op in ["ArgMax", "ArgMin"] {
        r.op(
            op,
            1,
            &["axis", "keepdims", "select_last_index"],
            lower_reduce,
        );
    }
    for op in ["GlobalAveragePool", "GlobalMaxPool"] {
        r.op(op, 1, &[], lower_reduce);
    }
    r.op("CumSum", 11, &["exclusive", "reverse"], lower_cumsum)
        .shape_inputs(&[1]);
}

fn lower_cumsum(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    let out = out0(n);
    let dt = cx.dt(i[0])?;
    let kernel = m2w_kernels::Kernel::by_name(&format!("cumsum_{}", dt.suffix()))
        .ok_or_else(|| format!("no CumSum kernel for {}", dt.suffix()))?;
    let s = cx.sym_shape(i[0])?;
    let axis = match cx.const_ints(n, 1)?.as_deref() {
        Some([a]) => norm_axis(*a, s.len())?,
        _ => return Err("axis must be one constant value".into()),
    };
    cx.new_tensor_sym(out, s.clone(), dt)?;
    let (outer, len, inner) = (
        sym::numel(&s[..axis]),
        s[axis].clone(),
        sym::numel(&s[axis + 1..]),
    );
    let flag = |k: &str| Expr::from((attr_i(n, k, 0) != 0) as usize);
    let lines = outer.clone() * inner.clone();
    let p = params::Cumsum::<Expr> {
        outer,
        len: len.clone(),
        inner,
        exclusive: flag("exclusive"),
        reverse: flag("reverse"),
    }
    .slots();
    if lines.clone() * len != Expr::Const(0) {
        let groups = groups_1d_sym(&lines, 64);
        cx.dispatch_sym(n, kernel, vec![cx.bind(i[0]), cx.bind(out)], p, groups);
    }
    Ok(())
}

fn lower_reduce(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    reduce(cx, n, ins[0], out0(n))
}

fn reduce(cx: &mut Ctx, n: &NodeInfo, x: &str, out: &str) -> R<()> {
    let op = n.op_type.as_str();
    let s = cx.sym_shape(x)?;
    let dt = cx.dt(x)?;
    let (axes, keep): (Vec<usize>, bool) = match op {
        "ArgMax" | "ArgMin" => (
            vec![norm_axis(attr_i(n, "axis", 0), s.len())?],
            attr_i(n, "keepdims", 1) != 0,
        ),
        "GlobalAveragePool" | "GlobalMaxPool" => ((2..s.len()).collect(), true),
        _ => {
            let from_input = cx.opset >= 18 || (op == "ReduceSum" && cx.opset >= 13);
            let keep = attr_i(n, "keepdims", 1) != 0;
            // An empty axes input (reduce everything, or nothing) decides no size.
            let run_time = from_input
                && n.inputs.get(1).is_some_and(|a| !a.is_empty())
                && cx.konst(&n.inputs[1]).is_none()
                && cx
                    .sym_shape(&n.inputs[1])?
                    .iter()
                    .all(|d| d.as_const() != Some(0));
            if run_time {
                return reduce_over_run_time_axes(cx, n, x, out, keep);
            }
            let empty_input = from_input
                && n.inputs.get(1).is_some_and(|a| !a.is_empty())
                && cx
                    .sym_shape(&n.inputs[1])?
                    .iter()
                    .any(|d| d.as_const() == Some(0));
            let axes = if empty_input {
                // No values to read: an empty axes list, whatever feeds it.
                Some(vec![])
            } else if from_input {
                cx.const_ints(n, 1)?
            } else {
                attr_ints(n, "axes")
            };
            match axes {
                Some(a) if !a.is_empty() => (
                    a.iter().map(|&x| norm_axis(x, s.len())).collect::<R<_>>()?,
                    keep,
                ),
                _ => {
                    if attr_i(n, "noop_with_empty_axes", 0) != 0 {
                        return cx.view_sym(out, x, s.clone());
                    }
                    ((0..s.len()).collect(), keep)
                }
            }
        }
    };
    let kop = match op {
        "ArgMax" => {
            if attr_i(n, "select_last_index", 0) != 0 && dt == DT::F32 {
                "argmax_last"
            } else {
                "argmax"
            }
        }
        "ArgMin" => {
            if attr_i(n, "select_last_index", 0) != 0 && dt == DT::F32 {
                "argmin_last"
            } else {
                "argmin"
            }
        }
        other => reduction_kernel_op(other).ok_or_else(|| format!("{other} is not a reduction"))?,
    };
    let kernel = kernel_for("reduce", kop, dt.suffix())?;
    if (op == "ArgMax" || op == "ArgMin") && attr_i(n, "select_last_index", 0) != 0 && dt != DT::F32
    {
        return Err("select_last_index on integers".into());
    }
    let axes_set: HashSet<usize> = axes.iter().copied().collect();
    let cs = contiguous_strides_sym(&s);
    let kept: Vec<usize> = (0..s.len()).filter(|d| !axes_set.contains(d)).collect();
    let mut red: Vec<usize> = axes_set.iter().copied().collect();
    red.sort();
    let oshape: Vec<Expr> = if keep {
        (0..s.len())
            .map(|d| {
                if axes_set.contains(&d) {
                    Expr::Const(1)
                } else {
                    s[d].clone()
                }
            })
            .collect()
    } else {
        kept.iter().map(|&d| s[d].clone()).collect()
    };
    let out_dt = if kop.starts_with("arg") { DT::I32 } else { dt };
    cx.new_tensor_sym(out, oshape.clone(), out_dt)?;
    let total = sym::numel(&oshape);
    let red_count = sym::numel(&red.iter().map(|&d| s[d].clone()).collect::<Vec<_>>());
    let pick = |v: &[Expr], at: &[usize]| at.iter().map(|&d| v[d].clone()).collect::<Vec<_>>();
    let sym_p = params::Reduce::<Expr> {
        n: total.clone(),
        out_rank: Expr::from(kept.len()),
        red_rank: Expr::from(red.len()),
        red_count: red_count.clone(),
        out_shape: vec8_sym(&pick(&s, &kept)),
        out_strides: vec8_sym(&pick(&cs, &kept)),
        red_shape: vec8_sym(&pick(&s, &red)),
        red_strides: vec8_sym(&pick(&cs, &red)),
    }
    .slots();
    let (Some(total), Some(red_count)) = (total.as_const(), red_count.as_const()) else {
        // Sizes that hold dims: an empty reduction is the kernel's start value.
        if total != Expr::Const(0) {
            let groups = groups_1d_sym(&total, 256);
            cx.dispatch_sym(n, kernel, vec![cx.bind(x), cx.bind(out)], sym_p, groups);
        }
        return Ok(());
    };
    let (total, red_count) = (total as usize, red_count as usize);
    let s = sym::as_fixed(&s).expect("fixed when its counts are");
    let cs = contiguous_strides(&s);
    if red_count == 0 && kop.starts_with("arg") {
        return Err("arg reduction over an empty axis".into());
    }
    if red_count == 0 && dt == DT::F32 && matches!(kop, "max" | "min") {
        // The max of an empty set is -inf and its min +inf (ONNX), which the kernel's
        // finite start value cannot give: fill the output instead.
        let inf = if kop == "max" {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        };
        cx.fill(n, out, total, inf.to_bits());
        return Ok(());
    }
    let p = params::Reduce {
        n: total as u32,
        out_rank: kept.len() as u32,
        red_rank: red.len() as u32,
        red_count: red_count as u32,
        out_shape: dims8(&kept.iter().map(|&d| s[d]).collect::<Vec<_>>()),
        out_strides: vec8_u32(&kept.iter().map(|&d| cs[d]).collect::<Vec<_>>()),
        red_shape: dims8(&red.iter().map(|&d| s[d]).collect::<Vec<_>>()),
        red_strides: vec8_u32(&red.iter().map(|&d| cs[d]).collect::<Vec<_>>()),
    }
    .words();
    if total > 0 {
        cx.dispatch(
            n,
            kernel,
            vec![cx.bind(x), cx.bind(out)],
            p,
            groups_1d(total, 256),
        );
    }
    Ok(())
}

/// The `reduce_<op>` kernel of a reduction op (not the arg ops).
fn reduction_kernel_op(op: &str) -> Option<&'static str> {
    Some(match op {
        "ReduceSum" => "sum",
        "ReduceMean" | "GlobalAveragePool" => "mean",
        "ReduceMax" | "GlobalMaxPool" => "max",
        "ReduceMin" => "min",
        "ReduceProd" => "prod",
        "ReduceL1" => "l1",
        "ReduceL2" => "l2",
        "ReduceSumSquare" => "sum_square",
        "ReduceLogSum" => "log_sum",
        "ReduceLogSumExp" => "log_sum_exp",
        _ => return None,
    })
}

/// A reduction whose axes arrive at run time (an input, read back at a sync point): every
/// dim takes part in both the kept and the reduced index spaces, with size 1 where it does
/// not belong, decided per dim by `reduced_d = min(1, sum_k [axes_k == d])` over the
/// value dims. Only keepdims = 1 (the output rank then does not depend on the values);
/// negative axes are refused when read.
fn reduce_over_run_time_axes(cx: &mut Ctx, n: &NodeInfo, x: &str, out: &str, keep: bool) -> R<()> {
    let s = cx.sym_shape(x)?;
    let dt = cx.dt(x)?;
    let rank = s.len() as i64;
    let axes = cx.shape_input(n, 1, -rank)?.ok_or("axes")?;
    let one = Expr::Const(1);
    // A negative axis counts from the end: a + rank * [a < 0], [a < 0] = min(max(-a, 0), 1).
    let axes: Vec<Expr> = axes
        .into_iter()
        .map(|a| {
            let negative = (Expr::Const(0) - a.clone())
                .max(Expr::Const(0))
                .min(one.clone());
            a + Expr::Const(rank) * negative
        })
        .collect();
    // [a == b] for integers: 1 - min(|a - b|, 1).
    let eq = |a: &Expr, b: i64| {
        let d = a.clone() - Expr::Const(b);
        one.clone() - (d.clone().max(Expr::Const(0) - d)).min(one.clone())
    };
    let reduced: Vec<Expr> = (0..s.len())
        .map(|d| {
            axes.iter()
                .fold(Expr::Const(0), |acc, a| acc + eq(a, d as i64))
                .min(one.clone())
        })
        .collect();
    let kept: Vec<Expr> = (0..s.len())
        .map(|d| s[d].clone() - reduced[d].clone() * (s[d].clone() - one.clone()))
        .collect();
    let red: Vec<Expr> = (0..s.len())
        .map(|d| one.clone() + reduced[d].clone() * (s[d].clone() - one.clone()))
        .collect();
    let kop = reduction_kernel_op(&n.op_type)
        .ok_or_else(|| format!("{} over run-time axes is not supported", n.op_type))?;
    // The max or min of an empty set is -inf / +inf (ONNX), which the kernel's finite
    // start value cannot give: refused where a reduced dim may be empty.
    if matches!(kop, "max" | "min") && s.iter().any(|d| d.bounds_in(&cx.minima, &cx.maxima).0 <= 0)
    {
        return Err("a max or min over run-time axes of a dim that may be empty".into());
    }
    let kernel = kernel_for("reduce", kop, dt.suffix())?;
    // keepdims = 0 drops as many dims as there are axes (a fixed count); the j-th dim left
    // is the dim d not reduced with j dims left before it. The element order is the same
    // as with the reduced dims kept as 1.
    let shape = if keep {
        kept.clone()
    } else {
        let left = s
            .len()
            .checked_sub(axes.len())
            .ok_or("more axes than dims")?;
        (0..left)
            .map(|j| {
                let mut before = Expr::Const(0);
                let mut dim = Expr::Const(0);
                for d in 0..s.len() {
                    let stays = one.clone() - reduced[d].clone();
                    dim = dim + stays.clone() * eq(&before, j as i64) * s[d].clone();
                    before = before + stays;
                }
                dim
            })
            .collect()
    };
    cx.new_tensor_sym(out, shape, dt)?;
    let cs = contiguous_strides_sym(&s);
    let total = sym::numel(&kept);
    let p = params::Reduce::<Expr> {
        n: total.clone(),
        out_rank: Expr::from(s.len()),
        red_rank: Expr::from(s.len()),
        red_count: sym::numel(&red),
        out_shape: vec8_sym(&kept),
        out_strides: vec8_sym(&cs),
        red_shape: vec8_sym(&red),
        red_strides: vec8_sym(&cs),
    }
    .slots();
    if total != Expr::Const(0) {
        let groups = groups_1d_sym(&total, 256);
        cx.dispatch_sym(n, kernel, vec![cx.bind(x), cx.bind(out)], p, groups);
    }
    Ok(())
}

/// (N, C, H, W) view of a 1-D or 2-D spatial tensor, kernel dims, strides, dilations,
fn fold_reduce(n: &NodeInfo, ins: &[Option<HostTensor>], opset: i64) -> R<Vec<HostTensor>> {
    let op = n.op_type.as_str();
    let t = get(ins, 0)?;
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
    Ok(vec![match &t.data {
        Data::Packed { .. } => return Err(super::PACKED.into()),
        Data::F32(v) => HostTensor::f32(
            shape,
            vec![match op {
                "ReduceSum" => v.iter().sum(),
                "ReduceProd" => v.iter().product(),
                "ReduceMax" => v.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                _ => v.iter().copied().fold(f32::INFINITY, f32::min),
            }],
        ),
        Data::I64(v) => HostTensor::i64(
            shape,
            vec![match op {
                "ReduceSum" => v.iter().sum(),
                "ReduceProd" => v.iter().product(),
                "ReduceMax" => *v.iter().max().ok_or("max of an empty set of integers")?,
                _ => *v.iter().min().ok_or("min of an empty set of integers")?,
            }],
        ),
        Data::Bool(_) => return Err("bool reduction".into()),
    }])
}

#[cfg(test)]
mod tests;
