use crate::ops::testing::{assert_close, node, values};
use crate::tensor::{Data, HostTensor};

#[test]
fn reshape_with_a_constant_shape_and_minus_one_is_a_view_without_dispatch() {
    let x = values(3 * 5 * 7, 1);
    let t = node("Reshape")
        .input("x", HostTensor::f32(vec![3, 5, 7], x.clone()))
        .constant("shape", HostTensor::i64(vec![2], vec![7, -1]));
    let plan = t.plan().unwrap();
    assert!(plan.dispatches.is_empty(), "{:?}", plan.dispatches);
    assert_eq!(plan.tensors["y"].fixed_shape().unwrap(), vec![7, 15]);
    assert_eq!(plan.tensors["y"].base, "x");
    let got = t.run().unwrap();
    assert_close(&got[0], &[7, 15], &x, 0.0, 0.0);
}

#[test]
fn shape_with_start_and_end_folds_on_the_host() {
    let t = node("Shape")
        .input("x", HostTensor::f32(vec![2, 3, 5, 7], values(210, 2)))
        .int("start", 1)
        .int("end", -1);
    let plan = t.plan().unwrap();
    assert!(plan.dispatches.is_empty());
    assert!(plan.constants.contains_key("y"));
    let got = t.run().unwrap();
    assert_eq!(got[0].shape, vec![2]);
    assert_eq!(got[0].data, Data::I64(vec![3, 5]));
}

#[test]
fn squeeze_and_unsqueeze_with_constant_axes_at_opset_13_are_views() {
    let x = values(15, 3);
    let sq = node("Squeeze")
        .opset(13)
        .input("x", HostTensor::f32(vec![1, 3, 1, 5], x.clone()))
        .constant("axes", HostTensor::i64(vec![2], vec![0, -2]));
    assert!(sq.plan().unwrap().dispatches.is_empty());
    assert_close(&sq.run().unwrap()[0], &[3, 5], &x, 0.0, 0.0);

    let un = node("Unsqueeze")
        .opset(13)
        .input("x", HostTensor::f32(vec![3, 5], x.clone()))
        .constant("axes", HostTensor::i64(vec![2], vec![-1, 0]));
    assert!(un.plan().unwrap().dispatches.is_empty());
    assert_close(&un.run().unwrap()[0], &[1, 3, 5, 1], &x, 0.0, 0.0);

    let err = node("Squeeze")
        .opset(13)
        .input("x", HostTensor::f32(vec![1, 3, 1, 5], x))
        .constant("axes", HostTensor::i64(vec![1], vec![1]))
        .plan()
        .unwrap_err();
    assert!(err.contains("cannot squeeze axis 1"), "{err}");
}

#[test]
fn reshape_to_a_run_time_shape_is_refused() {
    let err = node("Reshape")
        .input("x", HostTensor::f32(vec![2, 3], values(6, 4)))
        .input("shape", HostTensor::i64(vec![1], vec![6]))
        .plan()
        .unwrap_err();
    assert!(err.contains("decides a shape"), "{err}");
}
