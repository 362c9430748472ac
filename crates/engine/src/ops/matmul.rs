//! MatMul (numpy batching, 1-D operands) and Gemm (transposes, alpha, beta, C). Products
//! with a 2-D right operand run as one [batch*M, K] x [K, N] product on the
//! register-blocked kernel (`matmul_f32_rb`, 82% of cuBLAS SGEMM on the H100,
//! bench/RESULTS.md); the rest on the general tiled kernel (`matmul_f32_tiled`).

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_f, attr_i, broadcast, broadcast_strides, ins, out0, vec4_u32};
use crate::tensor::{DT, HostTensor, numel};

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
    batch: &[usize],
    has_m: bool,
    m: usize,
    nn: usize,
) -> R<usize> {
    let mut oshape = batch.to_vec();
    if has_m {
        oshape.push(m);
    }
    oshape.push(nn);
    cx.new_tensor(out, oshape, DT::F32)?;
    Ok(numel(batch) * m)
}

/// `out = a x b` (transposed as asked) for f32, or for i32: MatMulInteger's exact product
/// of zero-point-centred integers (and ONNX MatMul of int32s).
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
    let sa = cx.shape(a)?;
    let sb = cx.shape(b)?;
    let (a2, b2) = (
        if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.clone()
        },
        if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.clone()
        },
    );
    let (m, ka) = if ta {
        (a2[a2.len() - 1], a2[a2.len() - 2])
    } else {
        (a2[a2.len() - 2], a2[a2.len() - 1])
    };
    let (kb, nn) = if tb {
        (b2[b2.len() - 1], b2[b2.len() - 2])
    } else {
        (b2[b2.len() - 2], b2[b2.len() - 1])
    };
    if ka != kb {
        return Err(format!("inner dims differ: {sa:?} x {sb:?}"));
    }
    let ba = &a2[..a2.len() - 2];
    let bb = &b2[..b2.len() - 2];
    // A weight folded from 8-bit values stays 8-bit: dequantized in registers.
    if dt == DT::F32
        && !ta
        && !tb
        && sb.len() == 2
        && let Some((q, scale, zp, signed)) = super::quant::packed_8bit(cx, b, 1)
    {
        let rows = flat_output(cx, out, ba, sa.len() > 1, m, nn)?;
        let p = params::MatmulQ8 {
            m: rows as u32,
            n: nn as u32,
            k: ka as u32,
            pad: 0,
        }
        .words();
        if rows * nn > 0 {
            cx.dispatch(
                n,
                if signed {
                    Kernel::MatmulI8F32
                } else {
                    Kernel::MatmulU8F32
                },
                vec![
                    cx.bind(a),
                    cx.bind(&q),
                    cx.bind(&scale),
                    cx.bind(&zp),
                    cx.bind(out),
                ],
                p,
                [nn.div_ceil(16) as u32, rows.div_ceil(16) as u32, 1],
            );
        }
        return Ok(());
    }
    // Plain products (B a 2-D matrix, no transposes) run as one big [batch*M, K] x [K, N]
    // product on the register-blocked kernel (82% of cuBLAS SGEMM on the H100,
    // bench/RESULTS.md); the rest use the general tiled kernel.
    if dt == DT::F32 && !ta && !tb && sb.len() == 2 && m * ka * nn >= 1 << 15 {
        let rows = flat_output(cx, out, ba, sa.len() > 1, m, nn)?;
        let p = params::MatmulF32Rb {
            m: rows as u32,
            n: nn as u32,
            k: ka as u32,
            pad: 0,
        }
        .words();
        if rows * nn > 0 {
            cx.dispatch(
                n,
                Kernel::MatmulF32Rb,
                vec![cx.bind(a), cx.bind(b), cx.bind(out)],
                p,
                [nn.div_ceil(256) as u32, rows.div_ceil(128) as u32, 1],
            );
        }
        return Ok(());
    }
    let batch = broadcast(&[ba, bb])?;
    if batch.len() > 4 {
        return Err("more than 4 batch dims".into());
    }
    let mut oshape = batch.clone();
    if sa.len() > 1 {
        oshape.push(m);
    }
    if sb.len() > 1 {
        oshape.push(nn);
    }
    cx.new_tensor(out, oshape, dt)?;
    let (a_rs, a_cs) = if ta { (1, m) } else { (ka, 1) };
    let (b_rs, b_cs) = if tb { (1, kb) } else { (nn, 1) };
    let abs: Vec<i64> = broadcast_strides(ba, &batch)
        .iter()
        .map(|s| s * (m * ka) as i64)
        .collect();
    let bbs: Vec<i64> = broadcast_strides(bb, &batch)
        .iter()
        .map(|s| s * (kb * nn) as i64)
        .collect();
    let bshape: Vec<i64> = batch.iter().map(|&d| d as i64).collect();
    let p = params::Matmul {
        m: m as u32,
        n: nn as u32,
        k: ka as u32,
        batch_rank: batch.len() as u32,
        a_rs: a_rs as u32,
        a_cs: a_cs as u32,
        b_rs: b_rs as u32,
        b_cs: b_cs as u32,
        batch_shape: vec4_u32(&bshape),
        a_batch_strides: vec4_u32(&abs),
        b_batch_strides: vec4_u32(&bbs),
    }
    .words();
    let nb = numel(&batch);
    if m * nn * nb > 0 {
        if nb > 65535 {
            return Err("batch too large".into());
        }
        cx.dispatch(
            n,
            if dt == DT::I32 {
                Kernel::MatmulI32Tiled
            } else {
                Kernel::MatmulF32Tiled
            },
            vec![cx.bind(a), cx.bind(b), cx.bind(out)],
            p,
            [nn.div_ceil(16) as u32, m.div_ceil(16) as u32, nb as u32],
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
