use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

#[test]
fn layer_norm_with_bias_and_its_mean_and_inv_std_dev_outputs() {
    let (rows, len) = (15usize, 17usize);
    let x: Vec<f32> = values(rows * len, 1)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 3.0 + (i / len) as f32 * 0.25)
        .collect();
    let scale = values(len, 2);
    let bias = values(len, 3);
    let eps = 1e-5f32;
    let got = node("LayerNormalization")
        .input("x", HostTensor::f32(vec![3, 5, len], x.clone()))
        .constant("scale", HostTensor::f32(vec![len], scale.clone()))
        .constant("bias", HostTensor::f32(vec![len], bias.clone()))
        .float("epsilon", eps)
        .outputs(&["y", "mean", "inv"])
        .run()
        .unwrap();
    let (mut want, mut means, mut invs) = (Vec::new(), Vec::new(), Vec::new());
    for r in x.chunks(len) {
        let mean = r.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = r.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (j, &v) in r.iter().enumerate() {
            want.push(((v as f64 - mean) * inv * scale[j] as f64 + bias[j] as f64) as f32);
        }
        means.push(mean as f32);
        invs.push(inv as f32);
    }
    assert_close(&got[0], &[3, 5, len], &want, 1e-5, 1e-5);
    assert_close(&got[1], &[3, 5, 1], &means, 1e-6, 1e-5);
    assert_close(&got[2], &[3, 5, 1], &invs, 1e-6, 1e-5);
}

#[test]
fn rms_norm_over_the_last_two_axes() {
    let (rows, len) = (3usize, 5 * 7);
    let x = values(rows * len, 4);
    let scale = values(len, 5);
    let eps = 1e-6f32;
    let got = node("RMSNormalization")
        .opset(23)
        .input("x", HostTensor::f32(vec![rows, 5, 7], x.clone()))
        .constant("scale", HostTensor::f32(vec![5, 7], scale.clone()))
        .int("axis", 1)
        .float("epsilon", eps)
        .run()
        .unwrap();
    let mut want = Vec::new();
    for r in x.chunks(len) {
        let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for (j, &v) in r.iter().enumerate() {
            want.push((v as f64 * inv * scale[j] as f64) as f32);
        }
    }
    assert_close(&got[0], &[rows, 5, 7], &want, 1e-5, 1e-5);
}

#[test]
fn batch_norm_in_inference_mode() {
    let (n, c, h, w) = (2usize, 3usize, 5usize, 7usize);
    let x = values(n * c * h * w, 6);
    let scale = values(c, 7);
    let bias = values(c, 8);
    let mean = values(c, 9);
    let var: Vec<f32> = values(c, 10).iter().map(|v| v.abs() + 0.1).collect();
    let eps = 1e-3f32;
    let got = node("BatchNormalization")
        .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
        .constant("scale", HostTensor::f32(vec![c], scale.clone()))
        .constant("bias", HostTensor::f32(vec![c], bias.clone()))
        .constant("mean", HostTensor::f32(vec![c], mean.clone()))
        .constant("var", HostTensor::f32(vec![c], var.clone()))
        .float("epsilon", eps)
        .run()
        .unwrap();
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / (h * w)) % c;
            let sd = (var[ch] as f64 + eps as f64).sqrt();
            ((v as f64 - mean[ch] as f64) / sd * scale[ch] as f64 + bias[ch] as f64) as f32
        })
        .collect();
    assert_close(&got[0], &[n, c, h, w], &want, 1e-5, 1e-5);
}

#[test]
fn batch_norm_with_spatial_0_is_refused() {
    let c = 3;
    let p = |seed| HostTensor::f32(vec![c], values(c, seed));
    let err = node("BatchNormalization")
        .opset(7)
        .input("x", HostTensor::f32(vec![2, c, 4], values(24, 1)))
        .constant("scale", p(2))
        .constant("bias", p(3))
        .constant("mean", p(4))
        .constant("var", p(5))
        .int("spatial", 0)
        .plan()
        .unwrap_err();
    assert!(err.contains("spatial = 0"), "{err}");
}
