//! Resize and Upsample over the last two dims: nearest (four rounding modes) and linear,
//! five coordinate transformations (`resize_{nearest,linear}_f32`).

use m2w_kernels::params;
use m2w_model::{AttrValue, NodeInfo};

use super::Registry;
use super::ctx::{Ctx, R, attr_i, attr_ints, attr_s, ins, kernel_for, out0};
use crate::plan::{groups_1d, groups_1d_sym};
use crate::sym::{self, Expr};
use crate::tensor::{DT, numel};

pub(super) fn register(r: &mut Registry) {
    r.op(
        "Resize",
        10,
        &[
            "antialias",
            "axes",
            "coordinate_transformation_mode",
            "cubic_coeff_a",
            "exclude_outside",
            "extrapolation_value",
            "keep_aspect_ratio_policy",
            "mode",
            "nearest_mode",
        ],
        lower_resize,
    )
    .shape_inputs(&[1, 2, 3]);
    r.op(
        "Upsample",
        1,
        &["height_scale", "mode", "scales", "width_scale"],
        lower_resize,
    )
    .shape_inputs(&[1, 2, 3]);
}

fn lower_resize(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let op = n.op_type.as_str();
    let ss = cx.sym_shape(ins[0])?;
    let symbolic = sym::as_fixed(&ss).is_none();
    let s: Vec<usize> = ss.iter().map(|d| cx.at_max(d)).collect();
    if cx.dt(ins[0])? != DT::F32 || s.len() < 2 {
        return Err("only f32 of rank >= 2".into());
    }
    let mode = attr_s(n, "mode", "nearest");
    if !matches!(mode.as_str(), "nearest" | "linear") {
        return Err(format!(
            "mode '{mode}' is not supported (nearest, linear are)"
        ));
    }
    if attr_i(n, "antialias", 0) != 0
        || attr_ints(n, "axes").is_some()
        || attr_s(n, "keep_aspect_ratio_policy", "stretch") != "stretch"
    {
        return Err("antialias, axes and keep_aspect_ratio_policy are not supported".into());
    }
    let coord = attr_s(
        n,
        "coordinate_transformation_mode",
        if op == "Upsample" || cx.opset < 11 {
            "asymmetric"
        } else {
            "half_pixel"
        },
    );
    let coord_mode = match coord.as_str() {
        "half_pixel" => 0,
        "asymmetric" => 1,
        "align_corners" => 2,
        "pytorch_half_pixel" => 3,
        "half_pixel_symmetric" => 4,
        other => {
            return Err(format!(
                "coordinate_transformation_mode '{other}' is not supported"
            ));
        }
    };
    let nearest_mode = match attr_s(
        n,
        "nearest_mode",
        if cx.opset < 11 {
            "floor"
        } else {
            "round_prefer_floor"
        },
    )
    .as_str()
    {
        "round_prefer_floor" => 0,
        "round_prefer_ceil" => 1,
        "floor" => 2,
        _ => 3,
    };
    let rank = s.len();
    let (scales, sizes): (Option<Vec<f32>>, Option<Vec<i64>>) = if op == "Upsample" || cx.opset < 10
    {
        (
            attr_ints(n, "scales")
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .or_else(|| match n.attributes.get("scales") {
                    Some(AttrValue::Floats(f)) => Some(f.clone()),
                    _ => None,
                })
                .or(cx
                    .konst(ins.get(1).copied().unwrap_or(""))
                    .map(|t| t.as_f64().iter().map(|&v| v as f32).collect())),
            None,
        )
    } else {
        let (si, zi) = if cx.opset < 11 { (1, 99) } else { (2, 3) };
        let sc = ins
            .get(si)
            .filter(|x| !x.is_empty())
            .map(|x| cx.konst(x).ok_or("scales must be a constant"))
            .transpose()?
            .map(|t| t.as_f64().iter().map(|&v| v as f32).collect::<Vec<f32>>())
            .filter(|v| !v.is_empty());
        let sz = ins
            .get(zi)
            .filter(|x| !x.is_empty())
            .map(|x| cx.konst(x).ok_or("sizes must be a constant"))
            .transpose()?
            .map(|t| t.as_i64())
            .filter(|v| !v.is_empty());
        (sc, sz)
    };
    let (oshape, scale): (Vec<usize>, Vec<f32>) = match (sizes, scales) {
        (Some(z), _) if z.len() == rank => (
            z.iter().map(|&v| v as usize).collect(),
            z.iter()
                .zip(&s)
                .map(|(&o, &i)| o as f32 / i as f32)
                .collect(),
        ),
        (_, Some(sc)) if sc.len() == rank => (
            s.iter()
                .zip(&sc)
                .map(|(&i, &f)| (i as f32 * f).floor() as usize)
                .collect(),
            sc,
        ),
        _ => return Err("needs scales or sizes for every dim".into()),
    };
    if oshape[..rank - 2] != s[..rank - 2] {
        return Err("only the last two dims may be resized".into());
    }
    if symbolic {
        // Over a size that holds dims: output sizes by scales that are whole or simple
        // fractions (floor(x * 3/2) is exact integer arithmetic); the scales stay constants.
        let sc = scale.clone();
        if sizes_given(n, cx.opset) {
            return Err(
                "Resize to fixed sizes of a symbolic input is not supported (give scales)".into(),
            );
        }
        let mut oshape: Vec<Expr> = ss[..rank - 2].to_vec();
        for d in rank - 2..rank {
            let (p, q) = scale_fraction(sc[d], cx.at_max(&ss[d]))
                .ok_or_else(|| format!("scale {} is not a simple fraction", sc[d]))?;
            oshape.push((ss[d].clone() * Expr::Const(p)).floor_div(q));
        }
        cx.new_tensor_sym(out, oshape.clone(), DT::F32)?;
        let total = sym::numel(&oshape);
        let kernel = kernel_for("resize", &mode, "f32")?;
        let p = params::Resize::<Expr> {
            total: total.clone(),
            h: ss[rank - 2].clone(),
            w: ss[rank - 1].clone(),
            oh: oshape[rank - 2].clone(),
            ow: oshape[rank - 1].clone(),
            coord_mode: Expr::from(coord_mode as usize),
            nearest_mode: Expr::from(nearest_mode as usize),
            scale_h: sc[rank - 2],
            scale_w: sc[rank - 1],
            ..Default::default()
        }
        .slots();
        if total != Expr::Const(0) {
            let groups = groups_1d_sym(&total, 256);
            cx.dispatch_sym(n, kernel, vec![cx.bind(ins[0]), cx.bind(out)], p, groups);
        }
        return Ok(());
    }
    cx.new_tensor(out, oshape.clone(), DT::F32)?;
    let total = numel(&oshape);
    let kernel = kernel_for("resize", &mode, "f32")?;
    let p = params::Resize {
        total: total as u32,
        h: s[rank - 2] as u32,
        w: s[rank - 1] as u32,
        oh: oshape[rank - 2] as u32,
        ow: oshape[rank - 1] as u32,
        coord_mode: coord_mode as u32,
        nearest_mode: nearest_mode as u32,
        scale_h: scale[rank - 2],
        scale_w: scale[rank - 1],
        ..Default::default()
    }
    .words();
    if total > 0 {
        cx.dispatch(
            n,
            kernel,
            vec![cx.bind(ins[0]), cx.bind(out)],
            p,
            groups_1d(total, 256),
        );
    }
    Ok(())
}

/// A scale as p/q (q <= 4096) such that floor(x * scale) computed in f32, as the runtime
/// does, equals floor(x * p / q) for every x up to `max_x`: the f32 scale is the fraction
/// rounded up by less than 1 / (q * max_x), so the product never reaches the next integer.
fn scale_fraction(scale: f32, max_x: usize) -> Option<(i64, i64)> {
    let f = scale as f64;
    if f <= 0.0 {
        return None;
    }
    // Continued-fraction convergents of f.
    let (mut h0, mut h1, mut k0, mut k1) = (0i64, 1i64, 1i64, 0i64);
    let mut x = f;
    for _ in 0..32 {
        let a = x.floor() as i64;
        let (h2, k2) = (a * h1 + h0, a * k1 + k0);
        if k2 > 4096 {
            break;
        }
        (h0, h1, k0, k1) = (h1, h2, k1, k2);
        let err = f - h1 as f64 / k1 as f64;
        if (h1 as f32 / k1 as f32) == scale
            && err >= 0.0
            && err * (k1 as f64) * (max_x.max(1) as f64) < 0.5
        {
            return Some((h1, k1));
        }
        let frac = x - a as f64;
        if frac < 1e-12 {
            break;
        }
        x = 1.0 / frac;
    }
    None
}

/// Whether the node is given output sizes (not scales).
fn sizes_given(n: &NodeInfo, opset: i64) -> bool {
    n.op_type != "Upsample" && opset >= 11 && n.inputs.get(3).is_some_and(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
