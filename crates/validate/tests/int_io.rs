//! Integer inputs keep their dtype from the reference to the engine: a model whose first op
//! compares two int32 inputs compiles, runs and matches ONNX Runtime at every checkpoint,
//! end to end and per layer (where each node is fed the oracle's integers).

use m2w_engine::DT;
use m2w_engine::gpu::Gpu;
use m2w_model::onnx_build::{INT32, attr_int, model, node, value_info};
use m2w_validate::{Options, compile_for, validate};

#[test]
fn int32_inputs_compared_first_pass_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int_io.onnx");
    std::fs::write(
        &path,
        model(
            vec![
                node("Equal", &["a", "b"], &["same"], vec![]),
                node(
                    "Cast",
                    &["same"],
                    &["same_i"],
                    vec![attr_int("to", INT32 as i64)],
                ),
                node("Add", &["same_i", "a"], &["y"], vec![]),
            ],
            vec![],
            vec![
                value_info("a", INT32, &[2, 3]),
                value_info("b", INT32, &[2, 3]),
            ],
            vec![value_info("y", INT32, &[2, 3])],
            17,
        ),
    )
    .unwrap();
    // Half the elements equal: b = a where the index is even.
    let a: Vec<i32> = vec![5, -3, 7, 0, 12, 1];
    let b: Vec<i32> = a
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 2 == 0 { v } else { v + 1 })
        .collect();
    let mut opts = m2w_reference::onnx_ref::OnnxOptions::default();
    for (name, v) in [("a", &a), ("b", &b)] {
        let f = dir.path().join(format!("{name}.npy"));
        let t = m2w_reference::HostTensor::I32(vec![2, 3], v.clone());
        std::fs::write(&f, t.to_npy().unwrap()).unwrap();
        opts.input_files.insert(name.into(), f);
    }
    let reference = dir.path().join("reference");
    let lib = m2w_setup::onnxruntime_library().unwrap();
    m2w_reference::onnx_ref::reference(&lib, &path, &reference, &opts).unwrap();

    let m = m2w_model::Model::open(&path).unwrap();
    let gpu = Gpu::new().unwrap();
    for per_layer in [false, true] {
        let (plan, inputs) = compile_for(&m, &reference).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.tensors["a"].dt, DT::I32);
        assert_eq!(plan.tensors["same"].dt, DT::Bool);
        let report = validate(
            &gpu,
            &m,
            plan,
            &inputs,
            &reference,
            &Options {
                per_layer,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (report.passed, report.failed),
            (3, 0),
            "per_layer {per_layer}: {:?}",
            report.first_failure
        );
    }
}

/// ORT casts -inf to int64 as i64::MIN, which an i32 engine cannot hold: those elements are
/// left out of the comparison and said so (T5's relative-position buckets do this for the
/// positions a later Where discards); every other element, and the Where after, must match.
#[test]
fn int64_values_past_the_i32_range_are_left_out_and_said_so() {
    use m2w_model::onnx_build::{BOOL, FLOAT, INT64};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int64_range.onnx");
    std::fs::write(
        &path,
        model(
            vec![
                node("Log", &["x"], &["lx"], vec![]),
                node("Cast", &["lx"], &["li"], vec![attr_int("to", INT64 as i64)]),
                node("Cast", &["x"], &["xi"], vec![attr_int("to", INT64 as i64)]),
                node("Cast", &["x"], &["pos"], vec![attr_int("to", BOOL as i64)]),
                node("Where", &["pos", "li", "xi"], &["y"], vec![]),
            ],
            vec![],
            vec![value_info("x", FLOAT, &[6])],
            vec![value_info("y", INT64, &[6])],
            17,
        ),
    )
    .unwrap();
    let x: Vec<f32> = vec![0.0, 1.0, 20.0, 0.0, 3000.0, 0.5];
    let mut opts = m2w_reference::onnx_ref::OnnxOptions::default();
    let f = dir.path().join("x.npy");
    std::fs::write(
        &f,
        m2w_reference::HostTensor::F32(vec![6], x).to_npy().unwrap(),
    )
    .unwrap();
    opts.input_files.insert("x".into(), f);
    let reference = dir.path().join("reference");
    let lib = m2w_setup::onnxruntime_library().unwrap();
    m2w_reference::onnx_ref::reference(&lib, &path, &reference, &opts).unwrap();
    let m = m2w_model::Model::open(&path).unwrap();
    let gpu = Gpu::new().unwrap();
    for per_layer in [false, true] {
        let (plan, inputs) = compile_for(&m, &reference).unwrap_or_else(|e| panic!("{e}"));
        let report = validate(
            &gpu,
            &m,
            plan,
            &inputs,
            &reference,
            &Options {
                per_layer,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            report.failed, 0,
            "per_layer {per_layer}: {:?}",
            report.first_failure
        );
        let li = report.checkpoints.iter().find(|c| c.name == "li").unwrap();
        assert_eq!(
            li.tolerance_note.as_deref(),
            Some(
                "2 int64 value(s) past the i32 range not compared (the engine's integers are i32)"
            )
        );
        let y = report.checkpoints.iter().find(|c| c.name == "y").unwrap();
        assert!(y.compared && y.pass && y.tolerance_note.is_none());
    }
}
