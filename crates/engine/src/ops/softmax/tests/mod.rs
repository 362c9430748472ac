use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

/// Softmax (or log-softmax) over `len` elements `inner` apart, for every outer row.
fn softmax_ref(x: &[f32], outer: usize, len: usize, inner: usize, log: bool) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let m = (0..len).map(|j| x[at(j)] as f64).fold(f64::MIN, f64::max);
            let sum: f64 = (0..len).map(|j| (x[at(j)] as f64 - m).exp()).sum();
            for j in 0..len {
                let v = x[at(j)] as f64 - m;
                out[at(j)] = if log { v - sum.ln() } else { v.exp() / sum } as f32;
            }
        }
    }
    out
}

#[test]
fn softmax_over_the_last_axis() {
    let s = [4usize, 5, 13];
    let x: Vec<f32> = values(260, 1).iter().map(|v| v * 8.0).collect();
    let got = node("Softmax")
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .int("axis", -1)
        .run()
        .unwrap();
    assert_close(&got[0], &s, &softmax_ref(&x, 20, 13, 1, false), 1e-6, 1e-5);
}

#[test]
fn softmax_over_a_middle_axis() {
    let s = [3usize, 5, 7];
    let x: Vec<f32> = values(105, 2).iter().map(|v| v * 8.0).collect();
    let got = node("Softmax")
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .int("axis", 1)
        .run()
        .unwrap();
    assert_close(&got[0], &s, &softmax_ref(&x, 3, 5, 7, false), 1e-6, 1e-5);
}

#[test]
fn opset_11_log_softmax_flattens_the_tail_from_the_axis() {
    let s = [3usize, 5, 7];
    let x: Vec<f32> = values(105, 3).iter().map(|v| v * 8.0).collect();
    let got = node("LogSoftmax")
        .opset(11)
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .int("axis", 1)
        .run()
        .unwrap();
    // Rows of 5 * 7 = 35 elements.
    assert_close(&got[0], &s, &softmax_ref(&x, 3, 35, 1, true), 1e-5, 1e-5);
}
