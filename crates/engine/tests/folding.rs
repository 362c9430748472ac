//! Shape arithmetic as exporters write it folds on the host through every pure shape and
//! index op, so the ops that need plan-time constants get them. The case: PyTorch's
//! `F.pad` export, whose pad amounts come from ConstantOfShape -> Concat -> Reshape ->
//! Slice (negative step) -> Transpose -> Reshape -> Cast before reaching Pad.

use std::collections::{BTreeMap, HashMap};

use m2w_engine::gpu::{Gpu, Runner};
use m2w_engine::{DT, Data, HostTensor, compile};
use m2w_model::onnx_build::{
    FLOAT, INT64, attr_int, attr_ints, attr_tensor, ints, model, node, value_info,
};

#[test]
fn pytorch_pad_amounts_fold_through_concat_reshape_slice_transpose_and_cast() {
    // F.pad(x, (1, 2, 3, 0)) on [1, 2, 3, 4]: last dim +1 before / +2 after, the one
    // before it +3 before / +0 after.
    let bytes = model(
        vec![
            node(
                "ConstantOfShape",
                &["four"],
                &["zeros"],
                vec![attr_tensor("value", ints("", &[0]))],
            ),
            node(
                "Concat",
                &["torch_pads", "zeros"],
                &["cat"],
                vec![attr_int("axis", 0)],
            ),
            node("Reshape", &["cat", "pairs_shape"], &["pairs"], vec![]),
            node(
                "Slice",
                &["pairs", "start", "end", "axis0", "minus1"],
                &["reversed"],
                vec![],
            ),
            node(
                "Transpose",
                &["reversed"],
                &["t"],
                vec![attr_ints("perm", &[1, 0])],
            ),
            node("Reshape", &["t", "flat"], &["onnx_pads"], vec![]),
            node(
                "Cast",
                &["onnx_pads"],
                &["pads"],
                vec![attr_int("to", INT64 as i64)],
            ),
            node("Pad", &["x", "pads"], &["y"], vec![]),
        ],
        vec![
            ints("four", &[4]),
            ints("torch_pads", &[1, 2, 3, 0]),
            ints("pairs_shape", &[-1, 2]),
            ints("start", &[-1]),
            ints("end", &[-9223372036854775807]),
            ints("axis0", &[0]),
            ints("minus1", &[-1]),
            ints("flat", &[-1]),
        ],
        vec![value_info("x", FLOAT, &[1, 2, 3, 4])],
        vec![value_info("y", FLOAT, &[1, 2, 6, 7])],
        17,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pad.onnx");
    std::fs::write(&path, bytes).unwrap();
    let m = m2w_model::Model::open(&path).unwrap();
    let shapes: BTreeMap<String, (Vec<usize>, DT)> =
        [("x".to_string(), (vec![1, 2, 3, 4], DT::F32))].into();
    let plan = compile(&m, &shapes).unwrap_or_else(|e| panic!("{e}"));
    // Only Pad reaches the GPU (a fill and a copy).
    let ops: Vec<&str> = plan.dispatches.iter().map(|d| d.op_type.as_str()).collect();
    assert!(ops.iter().all(|&o| o == "Pad"), "{ops:?}");
    assert_eq!(plan.tensors["y"].fixed_shape().unwrap(), vec![1, 2, 6, 7]);

    let x: Vec<f32> = (0..24).map(|v| v as f32 + 1.0).collect();
    let gpu = Gpu::new().unwrap();
    let runner = Runner::new(&gpu, plan).unwrap();
    let feed: HashMap<String, HostTensor> = [(
        "x".to_string(),
        HostTensor::f32(vec![1, 2, 3, 4], x.clone()),
    )]
    .into();
    let got = runner
        .run(&feed, &["y".to_string()])
        .unwrap()
        .remove("y")
        .unwrap();
    // numpy: np.pad(x, ((0,0), (0,0), (3,0), (1,2)))
    let mut want = vec![0f32; 2 * 6 * 7];
    for c in 0..2 {
        for h in 0..3 {
            for w in 0..4 {
                want[(c * 6 + h + 3) * 7 + w + 1] = x[(c * 3 + h) * 4 + w];
            }
        }
    }
    assert_eq!(got.data, Data::F32(want));
}
