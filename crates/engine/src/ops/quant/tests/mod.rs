use crate::ops::testing::{assert_close, node};
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

#[test]
fn blocked_quantization_is_refused() {
    let e = node("DequantizeLinear")
        .opset(21)
        .int("block_size", 2)
        .input("x", HostTensor::i64(vec![2, 4], vec![0; 8]))
        .constant("s", HostTensor::f32(vec![2, 2], vec![1.0; 4]))
        .plan()
        .unwrap_err();
    assert!(e.contains("block_size"), "{e}");
}
