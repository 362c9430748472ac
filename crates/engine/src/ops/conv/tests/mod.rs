use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

/// Plain 2-D convolution: x [N, C, H, W], w [M, C/group, KH, KW], pads [top, left,
/// bottom, right].
#[allow(clippy::too_many_arguments)]
fn conv2d_ref(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    bias: Option<&[f32]>,
    group: usize,
    strides: [usize; 2],
    dil: [usize; 2],
    pads: [usize; 4],
) -> (Vec<usize>, Vec<f32>) {
    let [n, c, h, wd] = xs;
    let [m, cpg, kh, kw] = ws;
    let mpg = m / group;
    let oh = (h + pads[0] + pads[2] - ((kh - 1) * dil[0] + 1)) / strides[0] + 1;
    let ow = (wd + pads[1] + pads[3] - ((kw - 1) * dil[1] + 1)) / strides[1] + 1;
    let mut out = Vec::new();
    for b in 0..n {
        for mo in 0..m {
            let g = mo / mpg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |v| v[mo] as f64);
                    for ci in 0..cpg {
                        let cin = g * cpg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * strides[0] + ky * dil[0]) as i64 - pads[0] as i64;
                                let ix = (ox * strides[1] + kx * dil[1]) as i64 - pads[1] as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                    continue;
                                }
                                let xv = x[((b * c + cin) * h + iy as usize) * wd + ix as usize];
                                let wv = w[((mo * cpg + ci) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out.push(acc as f32);
                }
            }
        }
    }
    (vec![n, m, oh, ow], out)
}

#[test]
fn grouped_strided_dilated_padded_conv2d_with_bias() {
    let xs = [2, 6, 11, 13];
    let ws = [9, 2, 3, 3]; // group 3: 2 input and 3 output channels per group
    let x = values(xs.iter().product(), 1);
    let w = values(ws.iter().product(), 2);
    let b = values(9, 3);
    let got = node("Conv")
        .input("x", HostTensor::f32(xs.to_vec(), x.clone()))
        .constant("w", HostTensor::f32(ws.to_vec(), w.clone()))
        .constant("b", HostTensor::f32(vec![9], b.clone()))
        .int("group", 3)
        .ints("strides", &[2, 3])
        .ints("dilations", &[2, 1])
        .ints("pads", &[1, 2, 2, 0])
        .run()
        .unwrap();
    let (shape, want) = conv2d_ref(&x, xs, &w, ws, Some(&b), 3, [2, 3], [2, 1], [1, 2, 2, 0]);
    assert_eq!(shape, vec![2, 9, 5, 5]);
    assert_close(&got[0], &shape, &want, 1e-5, 1e-5);
}

#[test]
fn conv1d_without_bias() {
    // As a 2-D conv of height 1.
    let (n, c, len, m, k) = (2usize, 3usize, 17usize, 4usize, 5usize);
    let x = values(n * c * len, 4);
    let w = values(m * c * k, 5);
    let got = node("Conv")
        .input("x", HostTensor::f32(vec![n, c, len], x.clone()))
        .constant("w", HostTensor::f32(vec![m, c, k], w.clone()))
        .ints("strides", &[2])
        .ints("dilations", &[2])
        .ints("pads", &[2, 1])
        .run()
        .unwrap();
    let (shape, want) = conv2d_ref(
        &x,
        [n, c, 1, len],
        &w,
        [m, c, 1, k],
        None,
        1,
        [1, 2],
        [1, 2],
        [0, 2, 0, 1],
    );
    assert_eq!(shape, vec![n, m, 1, 6]);
    assert_close(&got[0], &[n, m, 6], &want, 1e-5, 1e-5);
}

#[test]
fn conv_transpose_stride_2_with_pads_output_padding_and_bias() {
    let (n, c, h, w, mo, k) = (1usize, 3usize, 5usize, 7usize, 2usize, 3usize);
    let x = values(n * c * h * w, 6);
    let wt = values(c * mo * k * k, 7); // [C, M, KH, KW]
    let b = values(mo, 8);
    let got = node("ConvTranspose")
        .input("x", HostTensor::f32(vec![n, c, h, w], x.clone()))
        .constant("w", HostTensor::f32(vec![c, mo, k, k], wt.clone()))
        .constant("b", HostTensor::f32(vec![mo], b.clone()))
        .ints("strides", &[2, 2])
        .ints("pads", &[1, 1, 1, 1])
        .ints("output_padding", &[1, 0])
        .run()
        .unwrap();
    // Full output (h-1)*2 + 3 + output_padding, less the pads.
    let (oh, ow) = ((h - 1) * 2 + k + 1 - 2, (w - 1) * 2 + k - 2);
    assert_eq!((oh, ow), (10, 13));
    let mut acc = vec![0.0f64; n * mo * oh * ow];
    for ci in 0..c {
        for iy in 0..h {
            for ix in 0..w {
                let xv = x[(ci * h + iy) * w + ix] as f64;
                for m in 0..mo {
                    for ky in 0..k {
                        for kx in 0..k {
                            let oy = (iy * 2 + ky) as i64 - 1;
                            let ox = (ix * 2 + kx) as i64 - 1;
                            if oy < 0 || ox < 0 || oy >= oh as i64 || ox >= ow as i64 {
                                continue;
                            }
                            let wv = wt[((ci * mo + m) * k + ky) * k + kx] as f64;
                            acc[(m * oh + oy as usize) * ow + ox as usize] += xv * wv;
                        }
                    }
                }
            }
        }
    }
    let want: Vec<f32> = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| (v + b[i / (oh * ow)] as f64) as f32)
        .collect();
    assert_close(&got[0], &[n, mo, oh, ow], &want, 1e-5, 1e-5);
}

#[test]
fn conv3d_is_refused() {
    let err = node("Conv")
        .input("x", HostTensor::f32(vec![1, 1, 3, 3, 3], values(27, 9)))
        .constant("w", HostTensor::f32(vec![1, 1, 1, 1, 1], vec![1.0]))
        .plan()
        .unwrap_err();
    assert!(err.contains("3-D windows are not supported"), "{err}");
}
