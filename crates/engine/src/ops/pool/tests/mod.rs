use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

/// A 2-D pool over x [N*C, H, W]: `out` rows of windows starting at `oy * stride - pad`,
/// each window reduced by `f(valid values, window size clipped to the padded input)`.
#[allow(clippy::too_many_arguments)]
fn pool_ref(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    k: [usize; 2],
    s: [usize; 2],
    pads: [usize; 4],
    f: impl Fn(&[f32], usize) -> f32,
) -> Vec<f32> {
    let mut out = Vec::new();
    for p in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let y0 = (oy * s[0]) as i64 - pads[0] as i64;
                let x0 = (ox * s[1]) as i64 - pads[1] as i64;
                let mut vals = Vec::new();
                let mut padded = 0;
                for ky in 0..k[0] as i64 {
                    for kx in 0..k[1] as i64 {
                        let (iy, ix) = (y0 + ky, x0 + kx);
                        if iy < (h + pads[2]) as i64 && ix < (w + pads[3]) as i64 {
                            padded += 1;
                        }
                        if iy >= 0 && ix >= 0 && iy < h as i64 && ix < w as i64 {
                            vals.push(x[(p * h + iy as usize) * w + ix as usize]);
                        }
                    }
                }
                out.push(f(&vals, padded));
            }
        }
    }
    out
}

fn max(v: &[f32], _: usize) -> f32 {
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

#[test]
fn max_pool_3x3_stride_2_with_pads() {
    let (n, c, h, w) = (2usize, 3usize, 11usize, 9usize);
    let x = values(n * c * h * w, 1);
    let got = node("MaxPool")
        .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
        .ints("kernel_shape", &[3, 3])
        .ints("strides", &[2, 2])
        .ints("pads", &[1, 1, 1, 1])
        .run()
        .unwrap();
    let (oh, ow) = (6, 5);
    let want = pool_ref(
        &x,
        n * c,
        (h, w),
        (oh, ow),
        [3, 3],
        [2, 2],
        [1, 1, 1, 1],
        max,
    );
    assert_close(&got[0], &[n, c, oh, ow], &want, 0.0, 0.0);
}

#[test]
fn average_pool_with_and_without_counting_the_pads() {
    let (n, c, h, w) = (1usize, 2usize, 7usize, 10usize);
    let x = values(n * c * h * w, 2);
    let (k, s, pads) = ([3usize, 2], [2usize, 3], [1usize, 0, 1, 2]);
    // H: (7 + 2 - 3) / 2 + 1 = 4; W: (10 + 2 - 2) / 3 + 1 = 4 (the last window half pad).
    let (oh, ow) = (4, 4);
    for include in [0, 1] {
        let got = node("AveragePool")
            .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
            .ints("kernel_shape", &[3, 2])
            .ints("strides", &[2, 3])
            .ints("pads", &[1, 0, 1, 2])
            .int("count_include_pad", include)
            .run()
            .unwrap();
        let want = pool_ref(&x, n * c, (h, w), (oh, ow), k, s, pads, |v, padded| {
            let div = if include == 1 { padded } else { v.len() };
            v.iter().sum::<f32>() / div as f32
        });
        assert_close(&got[0], &[n, c, oh, ow], &want, 1e-6, 1e-5);
    }
}

#[test]
fn ceil_mode_adds_a_clipped_last_window() {
    let (n, c, h, w) = (1usize, 2usize, 8usize, 10usize);
    let x = values(n * c * h * w, 3);
    // H: ceil((8 - 3) / 2) + 1 = 4; W: ceil((10 - 3) / 2) + 1 = 5; last windows clipped.
    let (oh, ow) = (4, 5);
    let got = node("MaxPool")
        .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
        .ints("kernel_shape", &[3, 3])
        .ints("strides", &[2, 2])
        .int("ceil_mode", 1)
        .run()
        .unwrap();
    let want = pool_ref(&x, n * c, (h, w), (oh, ow), [3, 3], [2, 2], [0; 4], max);
    assert_close(&got[0], &[n, c, oh, ow], &want, 0.0, 0.0);
    let got = node("AveragePool")
        .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
        .ints("kernel_shape", &[3, 3])
        .ints("strides", &[2, 2])
        .int("ceil_mode", 1)
        .run()
        .unwrap();
    let want = pool_ref(
        &x,
        n * c,
        (h, w),
        (oh, ow),
        [3, 3],
        [2, 2],
        [0; 4],
        |v, _| v.iter().sum::<f32>() / v.len() as f32,
    );
    assert_close(&got[0], &[n, c, oh, ow], &want, 1e-6, 1e-5);
}

#[test]
fn max_pool_indices_output_is_refused() {
    let err = node("MaxPool")
        .input("x", HostTensor::f32(vec![1, 1, 4, 4], values(16, 4)))
        .ints("kernel_shape", &[2, 2])
        .outputs(&["y", "indices"])
        .plan()
        .unwrap_err();
    assert!(err.contains("indices output is not supported"), "{err}");
}
