use m2w_model::DType;

use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

#[test]
fn dequantize_per_tensor_and_per_axis_on_the_gpu_and_folded() {
    let x = HostTensor::i64(vec![2, 3], vec![0, 3, 128, 255, -128, 127]);
    // Per tensor, uint8-style zero point.
    let got = node("DequantizeLinear")
        .input("x", x.clone())
        .constant("s", HostTensor::f32(vec![], vec![0.5]))
        .constant("z", HostTensor::i64(vec![], vec![128]))
        .run()
        .unwrap();
    let want: Vec<f32> = [0, 3, 128, 255, -128, 127]
        .iter()
        .map(|&q: &i64| (q - 128) as f32 * 0.5)
        .collect();
    assert_close(&got[0], &[2, 3], &want, 0.0, 0.0);
    // Per axis 1 (one scale and zero point per column), and the same folded on the host.
    let scale = HostTensor::f32(vec![3], vec![0.1, 2.0, -1.0]);
    let zp = HostTensor::i64(vec![3], vec![1, 0, -2]);
    let want: Vec<f32> = [0i64, 3, 128, 255, -128, 127]
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let c = i % 3;
            (q - [1i64, 0, -2][c]) as f32 * [0.1f32, 2.0, -1.0][c]
        })
        .collect();
    let on_gpu = node("DequantizeLinear")
        .int("axis", 1)
        .input("x", x.clone())
        .constant("s", scale.clone())
        .constant("z", zp.clone())
        .run()
        .unwrap();
    assert_close(&on_gpu[0], &[2, 3], &want, 0.0, 0.0);
    let folded = node("DequantizeLinear")
        .int("axis", 1)
        .constant("x", x)
        .constant("s", scale)
        .constant("z", zp);
    assert!(folded.plan().unwrap().dispatches.is_empty());
    assert_close(&folded.run().unwrap()[0], &[2, 3], &want, 0.0, 0.0);
}

/// ONNX QuantizeLinear on the CPU: round half to even, then saturate.
fn quantize_ref(x: f32, scale: f32, zp: i64, lo: i64, hi: i64) -> i64 {
    let q = (x / scale).round_ties_even() as i64 + zp;
    q.clamp(lo, hi)
}

#[test]
fn quantize_rounds_half_to_even_and_saturates_to_the_zero_points_type() {
    let xs = vec![0.0, 1.0, 2.5, 3.5, -2.5, -0.5, 254.0, 1000.0, -1000.0, 0.49];
    let x = HostTensor::f32(vec![2, 5], xs.clone());
    for (dtype, zp, lo, hi) in [
        (DType::U8, 128i64, 0i64, 255i64),
        (DType::I8, -3, -128, 127),
        (DType::I16, 7, -32768, 32767),
    ] {
        let got = node("QuantizeLinear")
            .input("x", x.clone())
            .constant("s", HostTensor::f32(vec![], vec![1.0]))
            .constant("z", HostTensor::i64(vec![], vec![zp]))
            .declare("z", dtype)
            .run()
            .unwrap();
        let want: Vec<i64> = xs
            .iter()
            .map(|&v| quantize_ref(v, 1.0, zp, lo, hi))
            .collect();
        assert_eq!(got[0].as_i64(), want, "{dtype:?}");
    }
    // No zero point: uint8.
    let got = node("QuantizeLinear")
        .input("x", x)
        .constant("s", HostTensor::f32(vec![], vec![0.5]))
        .run()
        .unwrap();
    let want: Vec<i64> = xs
        .iter()
        .map(|&v| quantize_ref(v, 0.5, 0, 0, 255))
        .collect();
    assert_eq!(got[0].as_i64(), want);
}

#[test]
fn blocked_quantize_and_dequantize_round_trip_per_block() {
    // x [2, 4] in blocks of 2 along axis 1: scales [2, 2].
    let xs = values(8, 3).iter().map(|v| v * 10.0).collect::<Vec<_>>();
    let scales = vec![0.1, 0.2, 0.3, 0.05];
    let zps = vec![1i64, -2, 0, 3];
    let q = node("QuantizeLinear")
        .opset(21)
        .int("axis", 1)
        .int("block_size", 2)
        .input("x", HostTensor::f32(vec![2, 4], xs.clone()))
        .constant("s", HostTensor::f32(vec![2, 2], scales.clone()))
        .constant("z", HostTensor::i64(vec![2, 2], zps.clone()))
        .declare("z", DType::I8)
        .run()
        .unwrap();
    let block = |i: usize| (i / 4) * 2 + (i % 4) / 2;
    let want: Vec<i64> = (0..8)
        .map(|i| quantize_ref(xs[i], scales[block(i)], zps[block(i)], -128, 127))
        .collect();
    assert_eq!(q[0].as_i64(), want);
    let dq = node("DequantizeLinear")
        .opset(21)
        .int("axis", 1)
        .int("block_size", 2)
        .input("x", HostTensor::i64(vec![2, 4], want.clone()))
        .constant("s", HostTensor::f32(vec![2, 2], scales.clone()))
        .constant("z", HostTensor::i64(vec![2, 2], zps.clone()));
    let back: Vec<f32> = (0..8)
        .map(|i| (want[i] - zps[block(i)]) as f32 * scales[block(i)])
        .collect();
    assert_close(&dq.run().unwrap()[0], &[2, 4], &back, 0.0, 0.0);
}

#[test]
fn dynamic_quantize_matches_onnx_runtimes_formula() {
    let xs: Vec<f32> = values(1000, 9).iter().map(|v| v * 3.0 + 1.0).collect();
    let got = node("DynamicQuantizeLinear")
        .outputs(&["y", "y_scale", "y_zero_point"])
        .input("x", HostTensor::f32(vec![10, 100], xs.clone()))
        .run()
        .unwrap();
    let lo = xs.iter().fold(0f32, |a, &b| a.min(b));
    let hi = xs.iter().fold(0f32, |a, &b| a.max(b));
    let scale = (hi - lo) / 255.0;
    let zp = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even() as i64;
    assert_close(&got[1], &[], &[scale], 0.0, 0.0);
    assert_eq!(got[2].as_i64(), vec![zp]);
    let want: Vec<i64> = xs
        .iter()
        .map(|&v| quantize_ref(v, scale, zp, 0, 255))
        .collect();
    assert_eq!(got[0].as_i64(), want);
}

/// (a - a_zp[row]) x (b - b_zp[col]) in i64 on the CPU.
fn int_matmul_ref(
    a: &[i64],
    b: &[i64],
    azp: &[i64],
    bzp: &[i64],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<i64> {
    let mut out = vec![0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|t| (a[i * k + t] - azp[i % azp.len()]) * (b[t * n + j] - bzp[j % bzp.len()]))
                .sum();
        }
    }
    out
}

#[test]
fn matmul_integer_is_exact_with_per_row_and_per_column_zero_points() {
    let (m, k, n) = (5, 300, 7);
    let a: Vec<i64> = (0..m * k).map(|i| ((i * 37) % 256) as i64).collect();
    let b: Vec<i64> = (0..k * n).map(|i| ((i * 91) % 256) as i64 - 128).collect();
    let azp: Vec<i64> = (0..m as i64).map(|i| 100 + i).collect();
    let bzp: Vec<i64> = (0..n as i64).map(|j| j - 3).collect();
    let got = node("MatMulInteger")
        .input("a", HostTensor::i64(vec![m, k], a.clone()))
        .constant("b", HostTensor::i64(vec![k, n], b.clone()))
        .declare("b", DType::I8)
        .input("a_zp", HostTensor::i64(vec![m], azp.clone()))
        .constant("b_zp", HostTensor::i64(vec![n], bzp.clone()))
        .run()
        .unwrap();
    assert_eq!(got[0].shape, vec![m, n]);
    assert_eq!(got[0].as_i64(), int_matmul_ref(&a, &b, &azp, &bzp, m, k, n));
}

#[test]
fn qlinear_matmul_requantizes_the_exact_product() {
    let (m, k, n) = (3, 16, 4);
    let a: Vec<i64> = (0..m * k).map(|i| ((i * 13) % 256) as i64).collect();
    let b: Vec<i64> = (0..k * n).map(|i| ((i * 7) % 256) as i64).collect();
    let (sa, za, sy, zy) = (0.02f32, 120i64, 0.5f32, 10i64);
    let sb = [0.01f32, 0.03, 0.002, 0.05];
    let zb = [128i64];
    let got = node("QLinearMatMul")
        .input("a", HostTensor::i64(vec![m, k], a.clone()))
        .constant("sa", HostTensor::f32(vec![], vec![sa]))
        .constant("za", HostTensor::i64(vec![], vec![za]))
        .declare("za", DType::U8)
        .constant("b", HostTensor::i64(vec![k, n], b.clone()))
        .constant("sb", HostTensor::f32(vec![n], sb.to_vec()))
        .constant("zb", HostTensor::i64(vec![], zb.to_vec()))
        .constant("sy", HostTensor::f32(vec![], vec![sy]))
        .constant("zy", HostTensor::i64(vec![], vec![zy]))
        .declare("zy", DType::U8)
        .run()
        .unwrap();
    let acc = int_matmul_ref(&a, &b, &[za], &zb, m, k, n);
    let want: Vec<i64> = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let mult = sa * sb[i % n] / sy;
            ((v as f32 * mult).round_ties_even() as i64 + zy).clamp(0, 255)
        })
        .collect();
    assert_eq!(got[0].as_i64(), want);
}

#[test]
fn conv_integer_subtracts_per_channel_weight_zero_points() {
    // x [1, 2, 4, 4], w [3, 2, 3, 3], pads 1.
    let x: Vec<i64> = (0..32).map(|i| (i * 11 % 256) as i64).collect();
    let w: Vec<i64> = (0..54).map(|i| (i * 5 % 256) as i64 - 128).collect();
    let (xz, wz) = (17i64, [1i64, -2, 5]);
    let got = node("ConvInteger")
        .ints("pads", &[1, 1, 1, 1])
        .input("x", HostTensor::i64(vec![1, 2, 4, 4], x.clone()))
        .constant("w", HostTensor::i64(vec![3, 2, 3, 3], w.clone()))
        .declare("w", DType::I8)
        .constant("xz", HostTensor::i64(vec![], vec![xz]))
        .constant("wz", HostTensor::i64(vec![3], wz.to_vec()))
        .run()
        .unwrap();
    let mut want = vec![0i64; 48];
    for oc in 0..3 {
        for oy in 0..4i64 {
            for ox in 0..4i64 {
                let mut acc = 0;
                for c in 0..2 {
                    for ky in 0..3i64 {
                        for kx in 0..3i64 {
                            let (iy, ix) = (oy + ky - 1, ox + kx - 1);
                            if (0..4).contains(&iy) && (0..4).contains(&ix) {
                                let xv = x[(c * 16 + iy * 4 + ix) as usize] - xz;
                                let wv =
                                    w[oc * 18 + c as usize * 9 + (ky * 3 + kx) as usize] - wz[oc];
                                acc += xv * wv;
                            }
                        }
                    }
                }
                want[oc * 16 + (oy * 4 + ox) as usize] = acc;
            }
        }
    }
    assert_eq!(got[0].shape, vec![1, 3, 4, 4]);
    assert_eq!(got[0].as_i64(), want);
}

/// MatMulNBits on the CPU from the packed bytes, as ONNX Runtime documents the layout.
#[allow(clippy::too_many_arguments)]
fn nbits_ref(
    a: &[f32],
    bytes: &[i64],
    scales: &[f32],
    zps: Option<&[f32]>,
    bias: Option<&[f32]>,
    (m, k, n): (usize, usize, usize),
    bits: usize,
    block: usize,
) -> Vec<f32> {
    let blocks = k.div_ceil(block);
    let row_bytes = blocks * block * bits / 8;
    let mut out = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let mut acc = 0f32;
            for kk in 0..k {
                let byte = bytes[c * row_bytes + kk * bits / 8] as u32;
                let q = (byte >> ((kk * bits) % 8)) & ((1 << bits) - 1);
                let blk = c * blocks + kk / block;
                let z = zps.map_or((1 << (bits - 1)) as f32, |z| z[blk]);
                acc += a[r * k + kk] * (q as f32 - z) * scales[blk];
            }
            out[r * n + c] = acc + bias.map_or(0.0, |b| b[c]);
        }
    }
    out
}

#[test]
fn matmul_nbits_keeps_the_weight_packed_and_matches_the_cpu() {
    let (m, k, n) = (3, 40, 5);
    let a = values(m * k, 21);
    for (bits, block, with_zp) in [(4usize, 16usize, false), (4, 32, true), (8, 16, true)] {
        let blocks = k.div_ceil(block);
        let row_bytes = blocks * block * bits / 8;
        let bytes: Vec<i64> = (0..n * row_bytes)
            .map(|i| ((i * 73 + 11) % 256) as i64)
            .collect();
        let scales: Vec<f32> = values(n * blocks, 5).iter().map(|v| v * 0.1).collect();
        let zrow = (blocks * bits).div_ceil(8);
        let zbytes: Vec<i64> = (0..n * zrow).map(|i| ((i * 29 + 3) % 256) as i64).collect();
        let zps: Vec<f32> = (0..n * blocks)
            .map(|j| {
                let (row, blk) = (j / blocks, j % blocks);
                let byte = zbytes[row * zrow + blk * bits / 8] as u32;
                ((byte >> ((blk * bits) % 8)) & ((1 << bits) - 1)) as f32
            })
            .collect();
        let bias = values(n, 8);
        let mut t = node("MatMulNBits")
            .domain("com.microsoft")
            .int("K", k as i64)
            .int("N", n as i64)
            .int("bits", bits as i64)
            .int("block_size", block as i64)
            .input("a", HostTensor::f32(vec![m, k], a.clone()))
            .constant(
                "b",
                HostTensor::i64(vec![n, blocks, block * bits / 8], bytes.clone()),
            )
            .constant("s", HostTensor::f32(vec![n * blocks], scales.clone()));
        t = if with_zp {
            t.constant("z", HostTensor::i64(vec![n * zrow], zbytes.clone()))
        } else {
            t.skip_input()
        };
        let got = t
            .skip_input()
            .input("bias", HostTensor::f32(vec![n], bias.clone()))
            .run()
            .unwrap();
        let want = nbits_ref(
            &a,
            &bytes,
            &scales,
            with_zp.then_some(zps.as_slice()),
            Some(&bias),
            (m, k, n),
            bits,
            block,
        );
        assert_close(&got[0], &[m, n], &want, 1e-4, 1e-4);
    }
}
