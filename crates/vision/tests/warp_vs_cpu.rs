//! The crop kernel (`warp_perspective_f32`) against a plain CPU warp written here, on a
//! random RGBA frame: a rotated, scaled region that runs past the frame's edges, with both
//! borders, with and without OpenCV's 8-bit sampling; and a projective matrix.

use std::collections::HashMap;

use m2w_engine::HostTensor;
use m2w_engine::gpu::{Gpu, Runner};
use m2w_vision::warp::{self, Border};

/// OpenCV's warpPerspective with INTER_LINEAR, in f64: output (x, y) reads the frame at
/// M (x, y, 1); neighbours outside are 0 or the edge; `eight_bit`: the point rounded to
/// 1/32 pixel and the value to an integer.
#[allow(clippy::too_many_arguments)]
fn cpu_warp(
    rgba: &[u8],
    w: usize,
    h: usize,
    m: &[f32; 9],
    ow: usize,
    oh: usize,
    border: Border,
    eight_bit: bool,
) -> Vec<f32> {
    let texel = |x: i64, y: i64, c: usize| -> f64 {
        let (x, y) = match border {
            Border::Replicate => (x.clamp(0, w as i64 - 1), y.clamp(0, h as i64 - 1)),
            Border::Zero if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 => return 0.0,
            Border::Zero => (x, y),
        };
        rgba[(y as usize * w + x as usize) * 4 + c] as f64
    };
    let mut out = Vec::with_capacity(ow * oh * 3);
    for y in 0..oh {
        for x in 0..ow {
            let (xf, yf) = (x as f64, y as f64);
            let m: Vec<f64> = m.iter().map(|&v| v as f64).collect();
            let d = m[6] * xf + m[7] * yf + m[8];
            let mut sx = (m[0] * xf + m[1] * yf + m[2]) / d;
            let mut sy = (m[3] * xf + m[4] * yf + m[5]) / d;
            if eight_bit {
                sx = (sx * 32.0).round() / 32.0;
                sy = (sy * 32.0).round() / 32.0;
            }
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (ix, iy) = (x0 as i64, y0 as i64);
            for c in 0..3 {
                let top = texel(ix, iy, c) * (1.0 - fx) + texel(ix + 1, iy, c) * fx;
                let bottom = texel(ix, iy + 1, c) * (1.0 - fx) + texel(ix + 1, iy + 1, c) * fx;
                let mut v = top * (1.0 - fy) + bottom * fy;
                if eight_bit {
                    v = (v + 0.5).floor();
                }
                out.push((v / 255.0) as f32);
            }
        }
    }
    out
}

#[test]
fn the_crop_kernel_samples_as_a_cpu_warp_does() {
    let (w, h) = (37usize, 29usize);
    let mut seed = 7u64;
    let rgba: Vec<u8> = (0..w * h * 4)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect();
    let gpu = Gpu::new().unwrap();
    let (ow, oh) = (24usize, 20usize);
    let roi = m2w_vision::Rect {
        x_center: 20.0,
        y_center: 12.0,
        width: 40.0,
        height: 30.0,
        rotation: 0.7,
    };
    let (rotated, _) = m2w_vision::image_to_tensor(roi, true, ow as u32, oh as u32);
    let projective = [0.9, 0.2, -3.0, -0.1, 1.1, 2.0, 0.004, -0.003, 1.0];
    for (name, m) in [("rotated", rotated), ("projective", projective)] {
        for border in [Border::Zero, Border::Replicate] {
            for eight_bit in [false, true] {
                let plan = warp::plan(
                    w as u32,
                    h as u32,
                    ow as u32,
                    oh as u32,
                    3,
                    border,
                    1.0 / 255.0,
                    0.0,
                    eight_bit,
                );
                let runner = Runner::new(&gpu, plan).unwrap();
                let inputs = HashMap::from([
                    (
                        warp::IMAGE.to_string(),
                        HostTensor::i64(vec![h, w], warp::rgba_words(&rgba)),
                    ),
                    (
                        warp::MATRIX.to_string(),
                        HostTensor::f32(vec![9], m.to_vec()),
                    ),
                ]);
                let got = runner.run(&inputs, &[warp::TENSOR.to_string()]).unwrap();
                let got = got[warp::TENSOR].as_f64();
                let want = cpu_warp(&rgba, w, h, &m, ow, oh, border, eight_bit);
                assert_eq!(got.len(), want.len());
                // f32 on the GPU, f64 here: a value within 1e-3 of a level; with 8-bit
                // rounding a point or value on a rounding edge may land one level off.
                let level = 1.0 / 255.0;
                let mut off = 0;
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    let d = (g - *e as f64).abs();
                    if eight_bit && (d - level).abs() < 1e-4 {
                        off += 1;
                        continue;
                    }
                    assert!(
                        d < 1e-3 * level + 1e-6,
                        "{name} {border:?} eight_bit {eight_bit}: element {i}: {g} vs {e}"
                    );
                }
                assert!(
                    off * 100 <= got.len(),
                    "{name} {border:?}: {off} of {} one level off",
                    got.len()
                );
            }
        }
    }
}
