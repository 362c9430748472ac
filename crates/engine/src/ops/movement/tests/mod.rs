use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

/// The coordinates of flat index `i` in a row-major `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        c[d] = i % shape[d];
        i /= shape[d];
    }
    c
}

/// The flat row-major index of coordinates `c` in `shape`.
fn flat(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(shape).fold(0, |acc, (&v, &d)| acc * d + v)
}

#[test]
fn transpose_permutes_axes() {
    let s = [3, 5, 7];
    let x = values(105, 1);
    let got = node("Transpose")
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .ints("perm", &[2, 0, 1])
        .run()
        .unwrap();
    let os = [7, 3, 5];
    let want: Vec<f32> = (0..105)
        .map(|i| {
            let c = unravel(i, &os);
            x[flat(&[c[1], c[2], c[0]], &s)]
        })
        .collect();
    assert_close(&got[0], &os, &want, 0.0, 0.0);
}

#[test]
fn slice_with_a_negative_step_from_constant_inputs() {
    let s = [5, 9];
    let x = values(45, 2);
    // Axis 0: rows 4, 2, 0 (end -10 clamps to before the first row); axis 1: cols 1, 4, 7.
    let got = node("Slice")
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .constant("starts", HostTensor::i64(vec![2], vec![-1, 1]))
        .constant("ends", HostTensor::i64(vec![2], vec![-10, 8]))
        .constant("axes", HostTensor::i64(vec![2], vec![0, 1]))
        .constant("steps", HostTensor::i64(vec![2], vec![-2, 3]))
        .run()
        .unwrap();
    let mut want = Vec::new();
    for r in [4, 2, 0] {
        for c in [1, 4, 7] {
            want.push(x[r * 9 + c]);
        }
    }
    assert_close(&got[0], &[3, 3], &want, 0.0, 0.0);
}

#[test]
fn concat_along_axis_1_of_three_inputs() {
    let shapes = [[2, 3, 5], [2, 4, 5], [2, 1, 5]];
    let parts: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(k, s)| values(s.iter().product(), 10 + k as u64))
        .collect();
    let mut t = node("Concat").int("axis", 1);
    for (k, (s, v)) in shapes.iter().zip(&parts).enumerate() {
        t = t.input(&format!("x{k}"), HostTensor::f32(s.to_vec(), v.clone()));
    }
    let got = t.run().unwrap();
    let mut want = Vec::new();
    for b in 0..2 {
        for (s, v) in shapes.iter().zip(&parts) {
            for j in 0..s[1] {
                for c in 0..5 {
                    want.push(v[(b * s[1] + j) * 5 + c]);
                }
            }
        }
    }
    assert_close(&got[0], &[2, 8, 5], &want, 0.0, 0.0);
}

#[test]
fn pad_reflect_mirrors_without_repeating_the_edge() {
    let (h, w) = (3usize, 5usize);
    let x = values(h * w, 3);
    // Before: 1 row, 2 cols; after: 2 rows, 3 cols.
    let got = node("Pad")
        .input("x", HostTensor::f32(vec![h, w], x.clone()))
        .constant("pads", HostTensor::i64(vec![4], vec![1, 2, 2, 3]))
        .string("mode", "reflect")
        .run()
        .unwrap();
    let reflect = |i: i64, n: i64| {
        if i < 0 {
            -i
        } else if i >= n {
            2 * (n - 1) - i
        } else {
            i
        }
    };
    let (oh, ow) = (h + 3, w + 5);
    let mut want = Vec::new();
    for r in 0..oh as i64 {
        for c in 0..ow as i64 {
            let sr = reflect(r - 1, h as i64) as usize;
            let sc = reflect(c - 2, w as i64) as usize;
            want.push(x[sr * w + sc]);
        }
    }
    assert_close(&got[0], &[oh, ow], &want, 0.0, 0.0);
}

#[test]
fn tile_repeats_each_axis() {
    let s = [2, 3, 5];
    let x = values(30, 4);
    let got = node("Tile")
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .constant("repeats", HostTensor::i64(vec![3], vec![2, 1, 3]))
        .run()
        .unwrap();
    let os = [4, 3, 15];
    let want: Vec<f32> = (0..os.iter().product())
        .map(|i| {
            let c = unravel(i, &os);
            x[flat(&[c[0] % 2, c[1] % 3, c[2] % 5], &s)]
        })
        .collect();
    assert_close(&got[0], &os, &want, 0.0, 0.0);
}

/// The host folds of Transpose, Split and Tile give what their kernels give.
#[test]
fn transpose_split_and_tile_fold_to_what_their_kernels_compute() {
    let x = HostTensor::i64(vec![2, 3, 2], (0..12).collect());
    let reps = HostTensor::i64(vec![3], vec![2, 1, 3]);
    let sizes = HostTensor::i64(vec![2], vec![1, 2]);
    let pairs = [
        (
            node("Transpose")
                .ints("perm", &[2, 0, 1])
                .input("x", x.clone()),
            node("Transpose")
                .ints("perm", &[2, 0, 1])
                .constant("x", x.clone()),
        ),
        (
            node("Tile")
                .input("x", x.clone())
                .constant("r", reps.clone()),
            node("Tile").constant("x", x.clone()).constant("r", reps),
        ),
        (
            node("Split")
                .int("axis", 1)
                .outputs(&["a", "b"])
                .input("x", x.clone())
                .constant("s", sizes.clone()),
            node("Split")
                .int("axis", 1)
                .outputs(&["a", "b"])
                .constant("x", x.clone())
                .constant("s", sizes),
        ),
    ];
    for (on_gpu, folded) in pairs {
        let op = on_gpu.op().to_string();
        assert!(folded.plan().unwrap().dispatches.is_empty(), "{op} folds");
        assert!(!on_gpu.plan().unwrap().dispatches.is_empty(), "{op} runs");
        assert_eq!(on_gpu.run().unwrap(), folded.run().unwrap(), "{op}");
    }
    // By hand: Transpose [2, 3, 2] by (2, 0, 1) starts 0, 2, 4, 6, 8, 10.
    let t = node("Transpose")
        .ints("perm", &[2, 0, 1])
        .constant("x", x)
        .run()
        .unwrap();
    assert_eq!(t[0].shape, vec![2, 2, 3]);
    assert_eq!(t[0].as_i64()[..6], [0, 2, 4, 6, 8, 10]);
}
