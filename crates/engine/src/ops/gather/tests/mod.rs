use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

#[test]
fn gather_along_axis_1_with_negative_indices() {
    let (a, b, c) = (3usize, 7usize, 5usize);
    let x = values(a * b * c, 1);
    let idx: Vec<i64> = vec![-1, 0, 3, -7, 6, -4];
    let got = node("Gather")
        .input("x", HostTensor::f32(vec![a, b, c], x.clone()))
        .input("i", HostTensor::i64(vec![2, 3], idx.clone()))
        .int("axis", 1)
        .run()
        .unwrap();
    let mut want = Vec::new();
    for i in 0..a {
        for &k in &idx {
            let k = if k < 0 { k + b as i64 } else { k } as usize;
            for j in 0..c {
                want.push(x[(i * b + k) * c + j]);
            }
        }
    }
    assert_close(&got[0], &[a, 2, 3, c], &want, 0.0, 0.0);
}

#[test]
fn gather_nd_with_batch_dims_0_picks_rows() {
    let s = [4usize, 3, 5];
    let x = values(60, 2);
    // Indices [2, 3, 2]: six (i0, i1) pairs, each picking a row of 5.
    let idx: Vec<i64> = vec![0, 0, 3, 2, 1, 1, 2, 0, 3, 1, 0, 2];
    let got = node("GatherND")
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .input("i", HostTensor::i64(vec![2, 3, 2], idx.clone()))
        .run()
        .unwrap();
    let mut want = Vec::new();
    for p in idx.chunks(2) {
        let (i0, i1) = (p[0] as usize, p[1] as usize);
        for j in 0..5 {
            want.push(x[(i0 * 3 + i1) * 5 + j]);
        }
    }
    assert_close(&got[0], &[2, 3, 5], &want, 0.0, 0.0);
}

#[test]
fn gather_nd_with_batch_dims_1_indexes_within_each_batch() {
    let s = [3usize, 4, 5];
    let x = values(60, 3);
    // Indices [3, 2, 1]: per batch, two rows of that batch's [4, 5] slab.
    let idx: Vec<i64> = vec![3, 0, 1, 1, 2, 3];
    let got = node("GatherND")
        .input("x", HostTensor::f32(s.to_vec(), x.clone()))
        .input("i", HostTensor::i64(vec![3, 2, 1], idx.clone()))
        .int("batch_dims", 1)
        .run()
        .unwrap();
    let mut want = Vec::new();
    for b in 0..3 {
        for r in 0..2 {
            let k = idx[b * 2 + r] as usize;
            for j in 0..5 {
                want.push(x[(b * 4 + k) * 5 + j]);
            }
        }
    }
    assert_close(&got[0], &[3, 2, 5], &want, 0.0, 0.0);
}

#[test]
fn float_indices_and_indices_past_the_rank_are_refused() {
    let err = node("Gather")
        .input("x", HostTensor::f32(vec![2, 3], values(6, 4)))
        .input("i", HostTensor::f32(vec![1], vec![0.0]))
        .plan()
        .unwrap_err();
    assert!(err.contains("indices must be integers"), "{err}");
    let err = node("GatherND")
        .input("x", HostTensor::f32(vec![2, 3], values(6, 4)))
        .input("i", HostTensor::i64(vec![1, 3], vec![0, 0, 0]))
        .plan()
        .unwrap_err();
    assert!(err.contains("past the data rank"), "{err}");
}
