use super::contraction;
use crate::ops::testing::{assert_close, node, values};
use crate::tensor::HostTensor;

#[test]
fn equations_parse_into_output_and_summed_letters() {
    // Matmul: i, k out; j summed.
    let c = contraction("ij,jk->ik", &[vec![2, 3], vec![3, 4]]).unwrap();
    assert_eq!(
        (c.out_shape.clone(), c.red_shape.clone()),
        (vec![2, 4], vec![3])
    );
    assert_eq!(c.out_strides, vec![vec![3, 0], vec![0, 1]]);
    assert_eq!(c.red_strides, vec![vec![1], vec![4]]);
    // Implicit output: letters seen once, sorted.
    let c = contraction("ba", &[vec![2, 3]]).unwrap();
    assert_eq!(c.out_shape, vec![3, 2]);
    // A diagonal adds the strides of its repeated letter.
    let c = contraction("...ii->...i", &[vec![5, 3, 3]]).unwrap();
    assert_eq!(c.out_shape, vec![5, 3]);
    assert_eq!(c.out_strides, vec![vec![9, 4]]);
    assert!(contraction("ij,jk->ik", &[vec![2, 3], vec![4, 4]]).is_err());
    assert!(contraction("ij->iz", &[vec![2, 3]]).is_err());
}

#[test]
fn batch_matmul_and_a_diagonal_match_loops() {
    let (b, i, j, k) = (3, 5, 7, 4);
    let x = values(b * i * j, 1);
    let y = values(b * j * k, 2);
    let got = node("Einsum")
        .string("equation", "bij,bjk->bik")
        .input("x", HostTensor::f32(vec![b, i, j], x.clone()))
        .input("w", HostTensor::f32(vec![b, j, k], y.clone()))
        .run()
        .unwrap();
    let mut want = vec![0f32; b * i * k];
    for bb in 0..b {
        for ii in 0..i {
            for kk in 0..k {
                want[(bb * i + ii) * k + kk] = (0..j)
                    .map(|jj| x[(bb * i + ii) * j + jj] as f64 * y[(bb * j + jj) * k + kk] as f64)
                    .sum::<f64>() as f32;
            }
        }
    }
    assert_close(&got[0], &[b, i, k], &want, 1e-5, 1e-5);
    // Trace of each matrix of a batch.
    let m = values(2 * 4 * 4, 3);
    let got = node("Einsum")
        .string("equation", "bii")
        .input("m", HostTensor::f32(vec![2, 4, 4], m.clone()))
        .run()
        .unwrap();
    let trace: Vec<f32> = (0..2)
        .map(|bb| (0..4).map(|d| m[bb * 16 + d * 5]).sum())
        .collect();
    assert_close(&got[0], &[2], &trace, 1e-6, 1e-6);
}
