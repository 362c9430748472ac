use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

#[test]
fn fast_gelu_adds_the_bias_then_applies_the_tanh_approximation() {
    let x = values(24, 1);
    let bias = values(6, 2);
    let got = node("FastGelu")
        .domain("com.microsoft")
        .input("x", HostTensor::f32(vec![4, 6], x.clone()))
        .constant("bias", HostTensor::f32(vec![6], bias.clone()))
        .run()
        .unwrap();
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let v = v + bias[i % 6];
            0.5 * v * (1.0 + (0.797_884_6 * (v + 0.044715 * v * v * v)).tanh())
        })
        .collect();
    assert_close(&got[0], &[4, 6], &want, 1e-6, 1e-5);
}

#[test]
fn skip_layer_norm_normalises_input_plus_skip_plus_bias_and_returns_the_sum() {
    let (rows, h) = (3, 8);
    let x = values(rows * h, 3);
    let skip = values(rows * h, 4);
    let gamma = values(h, 5);
    let beta = values(h, 6);
    let bias = values(h, 7);
    let got = node("SkipLayerNormalization")
        .domain("com.microsoft")
        .float("epsilon", 1e-5)
        .outputs(&["y", "", "", "sum"])
        .input("x", HostTensor::f32(vec![1, rows, h], x.clone()))
        .input("skip", HostTensor::f32(vec![1, rows, h], skip.clone()))
        .constant("gamma", HostTensor::f32(vec![h], gamma.clone()))
        .constant("beta", HostTensor::f32(vec![h], beta.clone()))
        .constant("bias", HostTensor::f32(vec![h], bias.clone()))
        .run()
        .unwrap();
    let sum: Vec<f32> = (0..rows * h)
        .map(|i| x[i] + skip[i] + bias[i % h])
        .collect();
    let mut want = vec![0f32; rows * h];
    for r in 0..rows {
        let row = &sum[r * h..(r + 1) * h];
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        for c in 0..h {
            want[r * h + c] = (row[c] - mean) / (var + 1e-5).sqrt() * gamma[c] + beta[c];
        }
    }
    assert_close(&got[0], &[1, rows, h], &want, 1e-5, 1e-4);
    assert_close(&got[1], &[1, rows, h], &sum, 0.0, 0.0);
}

#[test]
fn fused_matmul_transposes_and_scales() {
    // A stored [K, M] (transA), B stored [N, K] (transB), batch 2 on A.
    let (bt, m, k, n) = (2usize, 3usize, 4usize, 5usize);
    let a = values(bt * k * m, 7);
    let b = values(n * k, 8);
    let got = node("FusedMatMul")
        .domain("com.microsoft")
        .int("transA", 1)
        .int("transB", 1)
        .float("alpha", 0.5)
        .input("a", HostTensor::f32(vec![bt, k, m], a.clone()))
        .constant("b", HostTensor::f32(vec![n, k], b.clone()))
        .run()
        .unwrap();
    let mut want = vec![0f32; bt * m * n];
    for z in 0..bt {
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|t| a[(z * k + t) * m + i] * b[j * k + t]).sum();
                want[(z * m + i) * n + j] = 0.5 * s;
            }
        }
    }
    assert_close(&got[0], &[bt, m, n], &want, 1e-5, 1e-5);
}
