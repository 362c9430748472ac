//! MatMul (numpy batching, 1-D operands) and Gemm (transposes, alpha, beta, C). Products
//! with a 2-D right operand run as one [batch*M, K] x [K, N] product on the
//! register-blocked kernel (`matmul_f32_rb`, 82% of cuBLAS SGEMM on the H100,
//! bench/RESULTS.md); the rest on the general tiled kernel (`matmul_f32_tiled`).

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_f, attr_i, broadcast_strides_sym, broadcast_sym, ins, out0};
use super::strided;
use crate::sym::{self, Expr};
use crate::tensor::{DT, HostTensor};

pub(super) fn register(r: &mut Registry) {
    r.op("MatMul", 1, &[], lower_matmul);
    r.op(
        "Gemm",
        1,
        &["alpha", "beta", "broadcast", "transA", "transB"],
        lower_gemm,
    );
}

fn lower_matmul(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    matmul(cx, n, ins[0], ins[1], out0(n), false, false)
}

fn lower_gemm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let ta = attr_i(n, "transA", 0) != 0;
    let tb = attr_i(n, "transB", 0) != 0;
    let alpha = attr_f(n, "alpha", 1.0);
    let beta = attr_f(n, "beta", 1.0);
    let has_c = ins.get(2).is_some_and(|s| !s.is_empty());
    let direct = alpha == 1.0 && !has_c;
    let mm = if direct {
        out.to_string()
    } else {
        format!("{out}::ab")
    };
    matmul(cx, n, ins[0], ins[1], &mm, ta, tb)?;
    let mut acc = mm;
    if alpha != 1.0 {
        let k = format!("{out}::alpha");
        cx.add_const(&k, HostTensor::f32(vec![], vec![alpha]));
        let t = if has_c {
            format!("{out}::scaled")
        } else {
            out.to_string()
        };
        cx.elementwise(n, Kernel::EwMulF32, &[&acc, &k], &t, DT::F32, 0.0, 0.0)?;
        acc = t;
    }
    if has_c {
        let mut c = ins[2].to_string();
        if beta != 1.0 {
            let k = format!("{out}::beta");
            cx.add_const(&k, HostTensor::f32(vec![], vec![beta]));
            let t = format!("{out}::beta_c");
            cx.elementwise(n, Kernel::EwMulF32, &[&c, &k], &t, DT::F32, 0.0, 0.0)?;
            c = t;
        }
        cx.elementwise(n, Kernel::EwAddF32, &[&acc, &c], out, DT::F32, 0.0, 0.0)?;
    }
    Ok(())
}

/// The output of a product run as one [batch * M, K] x [K, N]: `out` made [batch.., M, N]
/// (M dropped for a 1-D `a`); returns the flattened row count.
fn flat_output(
    cx: &mut Ctx,
    out: &str,
    batch: &[Expr],
    has_m: bool,
    m: &Expr,
    nn: &Expr,
) -> R<Expr> {
    let mut oshape = batch.to_vec();
    if has_m {
        oshape.push(m.clone());
    }
    oshape.push(nn.clone());
    cx.new_tensor_sym(out, oshape, DT::F32)?;
    Ok(sym::numel(batch) * m.clone())
}

/// `out = a x b` (transposed as asked) for f32, or for i32: MatMulInteger's exact product
/// of zero-point-centred integers (and ONNX MatMul of int32s). Sizes may hold dims; the
/// kernel is chosen at their maxima (every kernel bound-checks).
pub(super) fn matmul(
    cx: &mut Ctx,
    n: &NodeInfo,
    a: &str,
    b: &str,
    out: &str,
    ta: bool,
    tb: bool,
) -> R<()> {
    let dt = cx.dt(a)?;
    if cx.dt(b)? != dt || !matches!(dt, DT::F32 | DT::I32) {
        return Err(format!(
            "MatMul of {} x {} (f32 x f32 and integer x integer are supported)",
            dt.suffix(),
            cx.dt(b)?.suffix()
        ));
    }
    let sa = cx.sym_shape(a)?;
    let sb = cx.sym_shape(b)?;
    let one = Expr::Const(1);
    let (a2, b2) = (
        if sa.len() == 1 {
            vec![one.clone(), sa[0].clone()]
        } else {
            sa.clone()
        },
        if sb.len() == 1 {
            vec![sb[0].clone(), one.clone()]
        } else {
            sb.clone()
        },
    );
    let (m, ka) = if ta {
        (a2[a2.len() - 1].clone(), a2[a2.len() - 2].clone())
    } else {
        (a2[a2.len() - 2].clone(), a2[a2.len() - 1].clone())
    };
    let (kb, nn) = if tb {
        (b2[b2.len() - 1].clone(), b2[b2.len() - 2].clone())
    } else {
        (b2[b2.len() - 2].clone(), b2[b2.len() - 1].clone())
    };
    if ka != kb {
        return Err(format!(
            "inner dims differ: {} x {}",
            sym::show(&sa),
            sym::show(&sb)
        ));
    }
    let ba = &a2[..a2.len() - 2];
    let bb = &b2[..b2.len() - 2];
    let div = |e: &Expr, d: i64| e.clone().ceil_div(d);
    // A weight folded from 8-bit values stays 8-bit: dequantized in registers.
    // An in-place KV cache (strided) is read by the general kernel, which takes strides.
    let strided = cx.is_strided(a) || cx.is_strided(b);
    if dt == DT::F32
        && !strided
        && !ta
        && !tb
        && sb.len() == 2
        && let Some((q, scale, zp, signed, per_column)) =
            super::quant::packed_8bit_with(cx, b, 1, super::quant::Share::Both)
    {
        let rows = flat_output(cx, out, ba, sa.len() > 1, &m, &nn)?;
        let p = params::MatmulQ8::<Expr> {
            m: rows.clone(),
            n: nn.clone(),
            k: ka.clone(),
            per_column: Expr::from(per_column as usize),
        }
        .slots();
        if rows.clone() * nn.clone() != Expr::Const(0) {
            let kernel = if signed {
                Kernel::MatmulI8F32
            } else {
                Kernel::MatmulU8F32
            };
            let bindings = vec![
                cx.bind(a),
                cx.bind(&q),
                cx.bind(&scale),
                cx.bind(&zp),
                cx.bind(out),
            ];
            cx.dispatch_sym(n, kernel, bindings, p, [div(&nn, 16), div(&rows, 16), one]);
        }
        return Ok(());
    }
    // Plain products (B a 2-D matrix, no transposes) run as one big [batch*M, K] x [K, N]
    // product on the register-blocked kernel (82% of cuBLAS SGEMM on the H100,
    // bench/RESULTS.md); the rest use the general tiled kernel.
    let work = cx.at_max(&(m.clone() * ka.clone() * nn.clone()));
    if dt == DT::F32 && !strided && !ta && !tb && sb.len() == 2 && work >= 1 << 15 {
        let rows = flat_output(cx, out, ba, sa.len() > 1, &m, &nn)?;
        let p = params::MatmulF32Rb::<Expr> {
            m: rows.clone(),
            n: nn.clone(),
            k: ka.clone(),
            pad: Expr::Const(0),
        }
        .slots();
        if rows.clone() * nn.clone() != Expr::Const(0) {
            let bindings = vec![cx.bind(a), cx.bind(b), cx.bind(out)];
            let groups = [div(&nn, 256), div(&rows, 128), one];
            cx.dispatch_sym(n, Kernel::MatmulF32Rb, bindings, p, groups);
        }
        return Ok(());
    }
    let batch = broadcast_sym(&[ba, bb])?;
    if batch.len() > 4 {
        return Err("more than 4 batch dims".into());
    }
    let mut oshape = batch.clone();
    if sa.len() > 1 {
        oshape.push(m.clone());
    }
    if sb.len() > 1 {
        oshape.push(nn.clone());
    }
    cx.new_tensor_sym(out, oshape, dt)?;
    let (mut a_rs, mut a_cs) = if ta {
        (one.clone(), m.clone())
    } else {
        (ka.clone(), one.clone())
    };
    let (mut b_rs, mut b_cs) = if tb {
        (one.clone(), kb.clone())
    } else {
        (nn.clone(), one.clone())
    };
    let mut abs: Vec<Expr> = broadcast_strides_sym(ba, &batch)
        .into_iter()
        .map(|s| s * m.clone() * ka.clone())
        .collect();
    let mut bbs: Vec<Expr> = broadcast_strides_sym(bb, &batch)
        .into_iter()
        .map(|s| s * kb.clone() * nn.clone())
        .collect();
    // A strided operand (rank >= 2, see `reads_strided`): its own strides.
    let own = |cx: &Ctx, x: &str, batch_dims: &[Expr], t: bool| -> R<(Expr, Expr, Vec<Expr>)> {
        let s = cx.strides_sym(x)?;
        let r = s.len();
        let (rows, cols) = (s[r - 2].clone(), s[r - 1].clone());
        let (rs, cs) = if t { (cols, rows) } else { (rows, cols) };
        Ok((
            rs,
            cs,
            strided::broadcast_strides_of(batch_dims, &s[..r - 2], &batch),
        ))
    };
    if cx.is_strided(a) {
        (a_rs, a_cs, abs) = own(cx, a, ba, ta)?;
    }
    if cx.is_strided(b) {
        (b_rs, b_cs, bbs) = own(cx, b, bb, tb)?;
    }
    let vec4 = |v: &[Expr]| {
        let mut a: [Expr; 4] = Default::default();
        for (k, x) in v.iter().take(4).enumerate() {
            a[k] = x.clone();
        }
        a
    };
    let p = params::Matmul::<Expr> {
        m: m.clone(),
        n: nn.clone(),
        k: ka.clone(),
        batch_rank: Expr::from(batch.len()),
        a_rs,
        a_cs,
        b_rs,
        b_cs,
        batch_shape: vec4(&batch),
        a_batch_strides: vec4(&abs),
        b_batch_strides: vec4(&bbs),
    }
    .slots();
    let nb = sym::numel(&batch);
    if m.clone() * nn.clone() * nb.clone() != Expr::Const(0) {
        if cx.at_max(&nb) > 65535 {
            return Err("batch too large".into());
        }
        let kernel = if dt == DT::I32 {
            Kernel::MatmulI32Tiled
        } else {
            Kernel::MatmulF32Tiled
        };
        let bindings = vec![cx.bind(a), cx.bind(b), cx.bind(out)];
        cx.dispatch_sym(n, kernel, bindings, p, [div(&nn, 16), div(&m, 16), nb]);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
