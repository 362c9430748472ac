use crate::ops::testing::{assert_close, node, values};
use crate::tensor::{Data, HostTensor};

#[test]
fn reduce_mean_over_two_axes_without_keepdims() {
    let (a, b, c) = (3usize, 5usize, 7usize);
    let x = values(a * b * c, 1);
    let got = node("ReduceMean")
        .input("x", HostTensor::f32(vec![a, b, c], x.clone()))
        .constant("axes", HostTensor::i64(vec![2], vec![-1, 0]))
        .int("keepdims", 0)
        .run()
        .unwrap();
    let want: Vec<f32> = (0..b)
        .map(|j| {
            let mut s = 0.0f64;
            for i in 0..a {
                for k in 0..c {
                    s += x[(i * b + j) * c + k] as f64;
                }
            }
            (s / (a * c) as f64) as f32
        })
        .collect();
    assert_close(&got[0], &[b], &want, 1e-6, 1e-5);
}

#[test]
fn reduce_max_over_the_middle_axis_keeps_dims() {
    let (a, b, c) = (4usize, 9usize, 3usize);
    let x = values(a * b * c, 2);
    let got = node("ReduceMax")
        .input("x", HostTensor::f32(vec![a, b, c], x.clone()))
        .constant("axes", HostTensor::i64(vec![1], vec![1]))
        .run()
        .unwrap();
    let mut want = Vec::new();
    for i in 0..a {
        for k in 0..c {
            want.push(
                (0..b)
                    .map(|j| x[(i * b + j) * c + k])
                    .fold(f32::NEG_INFINITY, f32::max),
            );
        }
    }
    assert_close(&got[0], &[a, 1, c], &want, 0.0, 0.0);
}

#[test]
fn arg_max_breaks_ties_first_or_last() {
    // Rows of 6 with the maximum repeated (and a row of all equal values).
    let x = vec![
        1.0, 3.0, 2.0, 3.0, 0.0, 3.0, //
        -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, //
        5.0, 0.0, 0.0, 0.0, 5.0, 4.0,
    ];
    let reference = |last: bool| -> Vec<i64> {
        x.chunks(6)
            .map(|row| {
                let mut best = 0;
                for (j, &v) in row.iter().enumerate() {
                    if v > row[best] || (last && v == row[best]) {
                        best = j;
                    }
                }
                best as i64
            })
            .collect()
    };
    for last in [0, 1] {
        let got = node("ArgMax")
            .input("x", HostTensor::f32(vec![3, 6], x.clone()))
            .int("axis", -1)
            .int("keepdims", 0)
            .int("select_last_index", last)
            .run()
            .unwrap();
        assert_eq!(got[0].shape, vec![3]);
        assert_eq!(got[0].data, Data::I64(reference(last == 1)), "last {last}");
    }
    // Over axis 0 of a random [5, 7], keepdims.
    let y = values(35, 3);
    let got = node("ArgMax")
        .input("x", HostTensor::f32(vec![5, 7], y.clone()))
        .run()
        .unwrap();
    let want: Vec<i64> = (0..7)
        .map(|j| {
            (0..5).fold(
                0usize,
                |b, i| if y[i * 7 + j] > y[b * 7 + j] { i } else { b },
            ) as i64
        })
        .collect();
    assert_eq!(got[0].shape, vec![1, 7]);
    assert_eq!(got[0].data, Data::I64(want));
}

#[test]
fn select_last_index_on_integers_is_refused() {
    let err = node("ArgMax")
        .input("x", HostTensor::i64(vec![2, 3], vec![1, 2, 2, 0, 0, 1]))
        .int("select_last_index", 1)
        .plan()
        .unwrap_err();
    assert!(err.contains("select_last_index on integers"), "{err}");
}

#[test]
fn reduce_max_and_min_of_1d_constants_fold_and_2d_ones_fall_back_to_the_kernel() {
    let v = HostTensor::i64(vec![4], vec![3, -7, 9, 0]);
    let max = node("ReduceMax")
        .int("keepdims", 0)
        .constant("x", v.clone());
    assert!(max.plan().unwrap().dispatches.is_empty());
    assert_eq!(max.run().unwrap()[0].data, Data::I64(vec![9]));
    let min = node("ReduceMin").int("keepdims", 0).constant("x", v);
    assert_eq!(min.run().unwrap()[0].data, Data::I64(vec![-7]));
    // A reduction the fold does not cover runs on the GPU instead of being refused.
    let m = HostTensor::f32(vec![2, 3], vec![1.0, 5.0, 2.0, -1.0, 0.5, 4.0]);
    let t = node("ReduceMax")
        .opset(13)
        .ints("axes", &[1])
        .int("keepdims", 0)
        .constant("x", m);
    assert!(!t.plan().unwrap().dispatches.is_empty());
    assert_close(&t.run().unwrap()[0], &[2], &[5.0, 4.0], 0.0, 0.0);
}

#[test]
fn cumsum_along_a_middle_axis_forward_reverse_and_exclusive() {
    let (a, b, c) = (2usize, 4usize, 3usize);
    let x = values(a * b * c, 11);
    for (exclusive, reverse) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let got = node("CumSum")
            .int("exclusive", exclusive)
            .int("reverse", reverse)
            .input("x", HostTensor::f32(vec![a, b, c], x.clone()))
            .constant("axis", HostTensor::i64(vec![], vec![-2]))
            .run()
            .unwrap();
        let mut want = vec![0f32; a * b * c];
        for o in 0..a {
            for i in 0..c {
                let mut acc = 0f32;
                for s in 0..b {
                    let t = if reverse == 1 { b - 1 - s } else { s };
                    let at = (o * b + t) * c + i;
                    if exclusive == 1 {
                        want[at] = acc;
                        acc += x[at];
                    } else {
                        acc += x[at];
                        want[at] = acc;
                    }
                }
            }
        }
        assert_close(&got[0], &[a, b, c], &want, 1e-6, 1e-6);
    }
}
