use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

#[test]
fn nearest_2x_upsample_asymmetric_floor() {
    let (n, c, h, w) = (1usize, 2usize, 3usize, 5usize);
    let x = values(n * c * h * w, 1);
    let got = node("Resize")
        .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
        .skip_input()
        .constant("scales", HostTensor::f32(vec![4], vec![1.0, 1.0, 2.0, 2.0]))
        .string("mode", "nearest")
        .string("coordinate_transformation_mode", "asymmetric")
        .string("nearest_mode", "floor")
        .run()
        .unwrap();
    let (oh, ow) = (2 * h, 2 * w);
    let mut want = Vec::new();
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let iy = ((oy as f32 / 2.0).floor() as usize).min(h - 1);
                let ix = ((ox as f32 / 2.0).floor() as usize).min(w - 1);
                want.push(x[(p * h + iy) * w + ix]);
            }
        }
    }
    assert_close(&got[0], &[n, c, oh, ow], &want, 0.0, 0.0);
}

#[test]
fn linear_half_pixel_downsample_to_sizes() {
    let (n, c, h, w) = (2usize, 3usize, 9usize, 11usize);
    let (oh, ow) = (4usize, 5usize);
    let x = values(n * c * h * w, 2);
    let got = node("Resize")
        .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
        .skip_input()
        .skip_input()
        .constant("sizes", HostTensor::i64(vec![4], vec![2, 3, 4, 5]))
        .string("mode", "linear")
        .string("coordinate_transformation_mode", "half_pixel")
        .run()
        .unwrap();
    // Source coordinate, then the two clamped neighbours and the weight of the second.
    let taps = |o: usize, inp: usize, out: usize| {
        let scale = out as f32 / inp as f32;
        let s = ((o as f32 + 0.5) / scale - 0.5) as f64;
        let f = s.floor();
        let clampi = |v: f64| (v.max(0.0) as usize).min(inp - 1);
        (clampi(f), clampi(f + 1.0), s - f)
    };
    let mut want = Vec::new();
    for p in 0..n * c {
        for oy in 0..oh {
            let (y0, y1, fy) = taps(oy, h, oh);
            for ox in 0..ow {
                let (x0, x1, fx) = taps(ox, w, ow);
                let at = |y: usize, xx: usize| x[(p * h + y) * w + xx] as f64;
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bot = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                want.push((top * (1.0 - fy) + bot * fy) as f32);
            }
        }
    }
    assert_close(&got[0], &[n, c, oh, ow], &want, 1e-5, 1e-5);
}

#[test]
fn cubic_mode_and_resizing_the_batch_dims_are_refused() {
    let x = HostTensor::f32(vec![1, 1, 2, 2], values(4, 3));
    let err = node("Resize")
        .input("x", x.clone())
        .skip_input()
        .constant("scales", HostTensor::f32(vec![4], vec![1.0, 1.0, 2.0, 2.0]))
        .string("mode", "cubic")
        .plan()
        .unwrap_err();
    assert!(err.contains("mode 'cubic' is not supported"), "{err}");
    let err = node("Resize")
        .input("x", x)
        .skip_input()
        .constant("scales", HostTensor::f32(vec![4], vec![2.0, 1.0, 2.0, 2.0]))
        .plan()
        .unwrap_err();
    assert!(err.contains("only the last two dims"), "{err}");
}
