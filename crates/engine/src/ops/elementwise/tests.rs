use m2w_model::AttrValue;

use crate::ops::testing::{assert_close, node, values};
use crate::tensor::{Data, HostTensor};

#[test]
fn leaky_relu_matches_its_cpu_definition() {
    let x = values(1000, 1);
    let alpha = 0.1f32;
    let got = node("LeakyRelu")
        .input("x", HostTensor::f32(vec![10, 100], x.clone()))
        .float("alpha", alpha)
        .run()
        .unwrap();
    let want: Vec<f32> = x
        .iter()
        .map(|&v| if v >= 0.0 { v } else { alpha * v })
        .collect();
    assert_close(&got[0], &[10, 100], &want, 0.0, 0.0);
}

#[test]
fn an_attribute_outside_the_spec_is_refused_with_its_name() {
    let err = node("LeakyRelu")
        .input("x", HostTensor::f32(vec![2], vec![1.0, -1.0]))
        .attr("slope", AttrValue::Float(0.2))
        .plan()
        .unwrap_err();
    assert!(err.contains("slope") && err.contains("LeakyRelu"), "{err}");
}

#[test]
fn integer_add_broadcasts_and_folds_on_the_host_when_constant() {
    let a = HostTensor::i64(vec![2, 3], vec![1, 2, 3, 4, 5, 6]);
    let b = HostTensor::i64(vec![3], vec![10, 20, 30]);
    let want = vec![11i64, 22, 33, 14, 25, 36];
    // On the GPU.
    let got = node("Add")
        .input("a", a.clone())
        .input("b", b.clone())
        .run()
        .unwrap();
    assert_eq!(got[0].data, Data::I64(want.clone()));
    // Folded: no dispatch at all.
    let t = node("Add").constant("a", a).constant("b", b);
    assert!(t.plan().unwrap().dispatches.is_empty());
    assert_eq!(t.run().unwrap()[0].data, Data::I64(want));
}

#[test]
fn legacy_broadcast_along_a_leading_axis_is_refused() {
    let err = node("Add")
        .opset(6)
        .input("a", HostTensor::f32(vec![2, 3, 4], vec![0.0; 24]))
        .input("b", HostTensor::f32(vec![2], vec![0.0; 2]))
        .int("broadcast", 1)
        .int("axis", 0)
        .plan()
        .unwrap_err();
    assert!(err.contains("legacy broadcast"), "{err}");
}

#[test]
fn where_picks_per_element_after_broadcasting() {
    let got = node("Where")
        .input("c", HostTensor::bool(vec![2, 1], vec![true, false]))
        .input("a", HostTensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]))
        .input("b", HostTensor::f32(vec![2], vec![-1.0, -2.0]))
        .run()
        .unwrap();
    assert_close(&got[0], &[2, 2], &[1.0, 2.0, -1.0, -2.0], 0.0, 0.0);
}
