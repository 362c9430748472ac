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

#[test]
fn float_rounding_of_constants_folds_half_to_even() {
    let x = HostTensor::f32(vec![6], vec![0.5, 1.5, 2.5, -0.5, 2.4, -2.6]);
    for (op, want) in [
        ("Round", [0.0, 2.0, 2.0, -0.0, 2.0, -3.0]),
        ("Floor", [0.0, 1.0, 2.0, -1.0, 2.0, -3.0]),
        ("Ceil", [1.0, 2.0, 3.0, -0.0, 3.0, -2.0]),
    ] {
        let folded = node(op).constant("x", x.clone());
        assert!(folded.plan().unwrap().dispatches.is_empty(), "{op}");
        let got = folded.run().unwrap();
        assert_close(&got[0], &[6], &want, 0.0, 0.0);
        // The kernel agrees.
        let on_gpu = node(op).input("x", x.clone()).run().unwrap();
        assert_eq!(on_gpu, got, "{op}");
    }
}

#[test]
fn comparisons_and_xor_of_constants_fold() {
    let a = HostTensor::i64(vec![3], vec![1, 2, 3]);
    let b = HostTensor::i64(vec![3], vec![2, 2, 2]);
    for (op, want) in [
        ("GreaterOrEqual", vec![false, true, true]),
        ("LessOrEqual", vec![true, true, false]),
    ] {
        let t = node(op).constant("a", a.clone()).constant("b", b.clone());
        assert!(t.plan().unwrap().dispatches.is_empty(), "{op}");
        assert_eq!(t.run().unwrap()[0].data, Data::Bool(want), "{op}");
    }
    let p = HostTensor::bool(vec![4], vec![true, true, false, false]);
    let q = HostTensor::bool(vec![4], vec![true, false, true, false]);
    let x = node("Xor").constant("p", p).constant("q", q).run().unwrap();
    assert_eq!(x[0].data, Data::Bool(vec![false, true, true, false]));
}
