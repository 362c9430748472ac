//! ONNX references on real models: one .npy per main-graph node output, the final outputs
//! equal a plain ONNX Runtime run of the unmodified model, and two runs are bit-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use m2w_reference::onnx_ref::{OnnxOptions, open_session, oracle_model_bytes, reference, run_once};
use m2w_reference::{HostTensor, RefError, read_index};

fn fixture(name: &str) -> PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

fn ort_lib() -> PathBuf {
    m2w_setup::onnxruntime_library().expect("ONNX Runtime library (run `cargo xtask setup`)")
}

fn check_model(name: &str, opts: OnnxOptions) {
    let model_path = fixture(name);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ref");
    let opts = OnnxOptions {
        check_determinism: true,
        ..opts
    };
    let index = reference(&ort_lib(), &model_path, &out, &opts).unwrap();
    assert_eq!(read_index(&out).unwrap(), index);

    // One checkpoint per non-empty output of every main-graph node, in node order.
    let model = m2w_model::Model::open(&model_path).unwrap();
    let graph = model.graph.as_ref().unwrap();
    let expected: Vec<&String> = graph
        .nodes
        .iter()
        .filter(|n| n.scope.is_empty())
        .flat_map(|n| n.outputs.iter())
        .filter(|o| !o.is_empty())
        .collect();
    let got: Vec<&String> = index.checkpoints.iter().map(|c| &c.output).collect();
    assert_eq!(
        got, expected,
        "{name}: checkpoints are not the node outputs in order"
    );
    for c in &index.checkpoints {
        let bytes = std::fs::read(out.join(&c.file)).unwrap();
        assert_eq!(m2w_model::io::sha256_bytes(&bytes), c.sha256, "{}", c.file);
        let t = HostTensor::from_npy(&bytes).unwrap();
        assert_eq!(t.shape(), &c.shape[..]);
        assert!(
            c.file.starts_with(&format!("{:03}_", c.index)),
            "{}",
            c.file
        );
    }
    // Inputs are realistic: never all zeros.
    for i in &index.inputs {
        let t = HostTensor::read_npy(&out.join(&i.file)).unwrap();
        assert!(
            t.to_f64().iter().any(|&v| v != 0.0),
            "input {} is all zeros",
            i.name
        );
    }

    // The final outputs equal a plain run (no output marked) of the model with the same
    // inputs: of the oracle's form of it, whose integer GEMMs are widened to ORT's exact
    // path (see `integer_gemms_are_exact_where_u8_times_s8_saturates`).
    let (bytes, _) = oracle_model_bytes(&model, false).unwrap();
    let mut session = open_session(&ort_lib(), &bytes, &model_path).unwrap();
    let inputs: Vec<(String, HostTensor)> = index
        .inputs
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                HostTensor::read_npy(&out.join(&i.file)).unwrap(),
            )
        })
        .collect();
    let plain = run_once(&mut session, &inputs).unwrap();
    assert_eq!(plain.len(), graph.outputs.len());
    for o in &graph.outputs {
        let c = index
            .checkpoints
            .iter()
            .find(|c| c.output == o.name)
            .unwrap_or_else(|| panic!("{name}: output {} not captured", o.name));
        assert!(c.graph_output);
        let ours = HostTensor::read_npy(&out.join(&c.file)).unwrap();
        assert_eq!(
            Some(&ours),
            plain[&o.name].as_ref(),
            "{name}: output {} differs from a plain ORT run",
            o.name
        );
    }
}

#[test]
fn minilm_int8_every_node_output_and_plain_outputs() {
    let index_dims = BTreeMap::from([("sequence".to_string(), 16u64)]);
    check_model(
        "minilm-int8",
        OnnxOptions {
            dims: index_dims,
            ..Default::default()
        },
    );
}

#[test]
fn silero_vad_v6_every_node_output_and_plain_outputs() {
    check_model("silero-vad-v6", OnnxOptions::default());
}

#[test]
fn ppocr_det_every_node_output_and_plain_outputs() {
    check_model("ppocr-det", OnnxOptions::default());
}

#[test]
fn minilm_ids_stay_inside_the_vocabulary_and_masks_are_ones() {
    let dir = tempfile::tempdir().unwrap();
    let index = reference(
        &ort_lib(),
        &fixture("minilm-int8"),
        &dir.path().join("r"),
        &OnnxOptions {
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    let read = |n: &str| {
        HostTensor::read_npy(
            &dir.path()
                .join("r")
                .join(&index.inputs.iter().find(|i| i.name == n).unwrap().file),
        )
        .unwrap()
        .to_f64()
    };
    let ids = read("input_ids");
    assert!(
        ids.iter().all(|&v| (0.0..30522.0).contains(&v)) && ids.iter().any(|&v| v > 1000.0),
        "{ids:?}"
    );
    assert!(read("attention_mask").iter().all(|&v| v == 1.0));
    assert!(read("token_type_ids").iter().all(|&v| v == 0.0 || v == 1.0));
}

#[test]
fn control_flow_subgraphs_are_recorded_as_not_captured() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OnnxOptions {
        dims: BTreeMap::from([
            ("input.0".into(), 1),
            ("input.1".into(), 512),
            ("state.1".into(), 1),
        ]),
        fill: BTreeMap::from([("sr".into(), 16000.0)]),
        check_determinism: true,
        ..Default::default()
    };
    let index = reference(
        &ort_lib(),
        &fixture("silero-vad-if"),
        &dir.path().join("r"),
        &opts,
    )
    .unwrap();
    let ops: Vec<&str> = index
        .checkpoints
        .iter()
        .map(|c| c.op_type.as_str())
        .collect();
    assert!(ops.contains(&"If"), "{ops:?}");
    assert!(
        index
            .checkpoints
            .iter()
            .any(|c| c.output == "output" && c.shape == vec![1, 1])
    );
    let model = m2w_model::Model::open(&fixture("silero-vad-if")).unwrap();
    let inside = model
        .graph
        .as_ref()
        .unwrap()
        .nodes
        .iter()
        .filter(|n| !n.scope.is_empty())
        .count();
    assert_eq!(index.not_captured.len(), inside);
    assert!(
        index
            .not_captured
            .iter()
            .all(|n| !n.scope.is_empty() && n.reason.contains("subgraph"))
    );
}

fn expect_usage(r: Result<m2w_reference::Index, RefError>, needle: &str) {
    match r {
        Err(e @ (RefError::Usage(_) | RefError::Load(_) | RefError::Input(_))) => {
            assert!(e.to_string().contains(needle), "{e}")
        }
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("expected an error containing {needle:?}"),
    }
}

#[test]
fn bad_requests_fail_cleanly_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let lib = ort_lib();
    let silero = fixture("silero-vad-v6");
    let with = |f: &dyn Fn(&mut OnnxOptions)| {
        let mut o = OnnxOptions::default();
        f(&mut o);
        o
    };
    expect_usage(
        reference(
            &lib,
            &silero,
            &out,
            &with(&|o| {
                o.fill.insert("nope".into(), 1.0);
            }),
        ),
        "the model has no input 'nope'",
    );
    expect_usage(
        reference(
            &lib,
            &silero,
            &out,
            &with(&|o| {
                o.dims.insert("input.1".into(), 577);
            }),
        ),
        "is fixed at 576",
    );
    expect_usage(
        reference(
            &lib,
            &silero,
            &out,
            &with(&|o| {
                o.dims.insert("seq_len".into(), 0);
            }),
        ),
        "a dim of 0 does not fit",
    );
    expect_usage(
        reference(
            &lib,
            &silero,
            &out,
            &with(&|o| {
                o.dims.insert("frames".into(), 3);
            }),
        ),
        "no input has a symbolic dim",
    );

    // A model ONNX Runtime cannot load: a node of an op nobody defines.
    let mut proto = m2w_model::onnx::decode(&silero).unwrap();
    proto.graph.as_mut().unwrap().node[10].op_type = Some("NoSuchOp".into());
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, m2w_model::onnx::encode(&proto)).unwrap();
    expect_usage(
        reference(&lib, &bad, &out, &OnnxOptions::default()),
        "ONNX Runtime cannot load this model",
    );

    // An input file of the wrong dtype.
    let f = dir.path().join("ids.npy");
    std::fs::write(
        &f,
        HostTensor::I64(vec![16, 576], vec![0; 16 * 576])
            .to_npy()
            .unwrap(),
    )
    .unwrap();
    expect_usage(
        reference(
            &lib,
            &silero,
            &out,
            &with(&|o| {
                o.input_files.insert("input".into(), f.clone());
            }),
        ),
        "needs f32",
    );

    assert!(!out.exists(), "nothing written on failure");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
}

#[test]
fn given_input_files_are_used_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let first = reference(
        &ort_lib(),
        &fixture("silero-vad-v6"),
        &dir.path().join("a"),
        &OnnxOptions {
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let input = dir.path().join("a").join(&first.inputs[0].file);
    let opts = OnnxOptions {
        seed: 99,
        input_files: BTreeMap::from([("input".to_string(), input)]),
        ..Default::default()
    };
    let second = reference(
        &ort_lib(),
        &fixture("silero-vad-v6"),
        &dir.path().join("b"),
        &opts,
    )
    .unwrap();
    assert_eq!(first.inputs[0].sha256, second.inputs[0].sha256);
    assert!(second.inputs[0].how.starts_with("from "));
    assert_ne!(
        first.inputs[1].sha256, second.inputs[1].sha256,
        "other inputs follow the new seed"
    );
    let _ = Path::new("");
}

/// u8 x s8 integer GEMMs whose product pairs overflow an i16 (255 x 127 x 2): ORT's AVX2
/// kernel saturates them on CPUs without VNNI; the oracle's form of the model computes
/// them exactly on every CPU. Checked against integer sums made here.
#[test]
fn integer_gemms_are_exact_where_u8_times_s8_saturates() {
    use m2w_model::onnx::proto;
    use m2w_model::onnx_build::{attr_ints, model, node, value_info};
    const UINT8: i32 = 2;
    const INT8: i32 = 3;
    const INT32: i32 = 6;
    let (k, n) = (64usize, 3usize);
    // Weights near the int8 extremes, mixed signs; the zero point of the MatMul's is 0
    // (absent) and the Conv's is 2.
    let w: Vec<i8> = (0..k * n)
        .map(|i| match i % 5 {
            0..=2 => 127,
            3 => -128,
            _ => (i as i8).wrapping_mul(37),
        })
        .collect();
    let a: Vec<u8> = (0..k).map(|i| if i % 7 == 6 { 3 } else { 255 }).collect();
    let tensor = |name: &str, dims: &[i64], dt: i32, bytes: Vec<u8>| proto::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dt),
        raw_data: Some(bytes),
        ..Default::default()
    };
    let w_bytes: Vec<u8> = w.iter().map(|&v| v as u8).collect();
    // ConvInteger: the same weights as n filters of k channels, 1x1 kernel, on a 1x1 image.
    let mut conv_w = vec![0u8; n * k];
    for o in 0..n {
        for c in 0..k {
            conv_w[o * k + c] = w_bytes[c * n + o];
        }
    }
    let bytes = model(
        vec![
            node("MatMulInteger", &["a", "w"], &["y"], vec![]),
            node(
                "ConvInteger",
                &["x", "cw", "", "cw_zp"],
                &["z"],
                vec![attr_ints("kernel_shape", &[1, 1])],
            ),
        ],
        vec![
            tensor("w", &[k as i64, n as i64], INT8, w_bytes),
            tensor("cw", &[n as i64, k as i64, 1, 1], INT8, conv_w),
            tensor("cw_zp", &[], INT8, vec![2]),
        ],
        vec![
            value_info("a", UINT8, &[1, k as i64]),
            value_info("x", UINT8, &[1, k as i64, 1, 1]),
        ],
        vec![
            value_info("y", INT32, &[1, n as i64]),
            value_info("z", INT32, &[1, n as i64, 1, 1]),
        ],
        13,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("int_gemm.onnx");
    std::fs::write(&path, &bytes).unwrap();
    let m = m2w_model::Model::open(&path).unwrap();
    let (oracle, widened) = oracle_model_bytes(&m, false).unwrap();
    assert_eq!(widened.len(), 2, "{widened:?}");
    let mut session = open_session(&ort_lib(), &oracle, &path).unwrap();
    let a_t = HostTensor::U8(vec![1, k as u64], a.clone());
    let x_t = HostTensor::U8(vec![1, k as u64, 1, 1], a.clone());
    let out = run_once(
        &mut session,
        &[("a".to_string(), a_t), ("x".to_string(), x_t)],
    )
    .unwrap();
    let exact = |zp: i64| -> Vec<i32> {
        (0..n)
            .map(|j| {
                (0..k)
                    .map(|c| a[c] as i64 * (w[c * n + j] as i64 - zp))
                    .sum::<i64>() as i32
            })
            .collect()
    };
    assert_eq!(out["y"], Some(HostTensor::I32(vec![1, n as u64], exact(0))));
    assert_eq!(
        out["z"],
        Some(HostTensor::I32(vec![1, n as u64, 1, 1], exact(2)))
    );
}
