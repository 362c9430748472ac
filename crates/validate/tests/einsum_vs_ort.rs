//! Einsum against ONNX Runtime: ONNX's own Einsum node tests are all f64 (no f64 on
//! WebGPU), so f32 models of the equations exporters write are run through ORT and the
//! engine and compared checkpoint by checkpoint.

use m2w_engine::gpu::Gpu;
use m2w_model::onnx::proto;
use m2w_model::onnx_build::{FLOAT, model, node, value_info};
use m2w_validate::{Options, compile_for, validate};

fn attr_string(name: &str, v: &str) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

#[test]
fn einsum_equations_match_onnx_runtime() {
    // (equation, operand shapes, output shape)
    type Case<'a> = (&'a str, &'a [&'a [i64]], &'a [i64]);
    let cases: &[Case] = &[
        ("bij,bjk->bik", &[&[2, 3, 5], &[2, 5, 4]], &[2, 3, 4]),
        ("...ii->...i", &[&[3, 4, 4]], &[3, 4]),
        ("i,i", &[&[7], &[7]], &[]),
        ("ij->i", &[&[3, 6]], &[3]),
        ("ij->ji", &[&[3, 6]], &[6, 3]),
        // DeepFilterNet-style grouped projection and an implicit output with broadcasting.
        (
            "btgi,gih->btgh",
            &[&[1, 5, 2, 3], &[2, 3, 4]],
            &[1, 5, 2, 4],
        ),
        ("...j,kj", &[&[2, 1, 3], &[4, 3]], &[2, 1, 4]),
    ];
    let gpu = Gpu::new().unwrap();
    let lib = m2w_setup::onnxruntime_library().unwrap();
    for (eq, ins, out) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("einsum.onnx");
        let names: Vec<String> = (0..ins.len()).map(|k| format!("x{k}")).collect();
        let operand_names: Vec<&str> = names.iter().map(String::as_str).collect();
        let inputs = names
            .iter()
            .zip(ins.iter())
            .map(|(n, s)| value_info(n, FLOAT, s))
            .collect();
        std::fs::write(
            &path,
            model(
                vec![node(
                    "Einsum",
                    &operand_names,
                    &["y"],
                    vec![attr_string("equation", eq)],
                )],
                vec![],
                inputs,
                vec![value_info("y", FLOAT, out)],
                12,
            ),
        )
        .unwrap();
        let reference = dir.path().join("reference");
        m2w_reference::onnx_ref::reference(&lib, &path, &reference, &Default::default())
            .unwrap_or_else(|e| panic!("{eq}: {e}"));
        let m = m2w_model::Model::open(&path).unwrap();
        let (plan, inputs) = compile_for(&m, &reference).unwrap_or_else(|e| panic!("{eq}: {e}"));
        let report = validate(&gpu, &m, plan, &inputs, &reference, &Options::default()).unwrap();
        assert_eq!(
            (report.passed, report.failed),
            (1, 0),
            "{eq}: {:?}",
            report.first_failure
        );
    }
}
