use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

/// Row-major [m, k] x [k, n], accumulated in f64.
fn matmul_ref(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            out[i * n + j] = acc as f32;
        }
    }
    out
}

#[test]
fn matmul_broadcasts_batch_dims_with_odd_sizes() {
    let (m, k, n) = (5usize, 7usize, 9usize);
    // [2, 1, 5, 7] x [3, 7, 9] -> [2, 3, 5, 9]
    let a = values(2 * m * k, 1);
    let b = values(3 * k * n, 2);
    let got = node("MatMul")
        .input("a", HostTensor::f32(vec![2, 1, m, k], a.clone()))
        .input("b", HostTensor::f32(vec![3, k, n], b.clone()))
        .run()
        .unwrap();
    let mut want = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            want.extend(matmul_ref(
                &a[i * m * k..(i + 1) * m * k],
                &b[j * k * n..(j + 1) * k * n],
                m,
                k,
                n,
            ));
        }
    }
    assert_close(&got[0], &[2, 3, m, n], &want, 1e-5, 1e-5);
}

#[test]
fn gemm_with_transposes_alpha_beta_and_a_broadcast_c() {
    let (m, k, n) = (5usize, 7usize, 9usize);
    let a = values(k * m, 3); // [K, M], transA
    let b = values(n * k, 4); // [N, K], transB
    let c = values(n, 5); // [N], broadcast over rows
    let (alpha, beta) = (0.5f32, -1.5f32);
    let got = node("Gemm")
        .input("a", HostTensor::f32(vec![k, m], a.clone()))
        .constant("b", HostTensor::f32(vec![n, k], b.clone()))
        .constant("c", HostTensor::f32(vec![n], c.clone()))
        .int("transA", 1)
        .int("transB", 1)
        .float("alpha", alpha)
        .float("beta", beta)
        .run()
        .unwrap();
    let mut want = Vec::new();
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += a[p * m + i] as f64 * b[j * k + p] as f64;
            }
            want.push((alpha as f64 * acc + beta as f64 * c[j] as f64) as f32);
        }
    }
    assert_close(&got[0], &[m, n], &want, 1e-5, 1e-5);
}

#[test]
fn a_large_product_with_a_2d_right_operand_takes_the_register_blocked_kernel() {
    // batch 2 x m 33 rows, k 41, n 29: m * k * n = 39237 >= 32768.
    let (bt, m, k, n) = (2usize, 33usize, 41usize, 29usize);
    let a = values(bt * m * k, 6);
    let b = values(k * n, 7);
    let t = node("MatMul")
        .input("a", HostTensor::f32(vec![bt, m, k], a.clone()))
        .constant("b", HostTensor::f32(vec![k, n], b.clone()));
    let plan = t.plan().unwrap();
    assert_eq!(plan.dispatches.len(), 1);
    assert_eq!(plan.dispatches[0].kernel, m2w_kernels::Kernel::MatmulF32Rb);
    let got = t.run().unwrap();
    let want = matmul_ref(&a, &b, bt * m, k, n);
    assert_close(&got[0], &[bt, m, n], &want, 1e-5, 1e-5);
}

#[test]
fn mismatched_inner_dims_are_refused() {
    let err = node("MatMul")
        .input("a", HostTensor::f32(vec![3, 4], values(12, 8)))
        .input("b", HostTensor::f32(vec![5, 2], values(10, 9)))
        .plan()
        .unwrap_err();
    assert!(err.contains("inner dims differ"), "{err}");
}
