//! The TFLite reader on MediaPipe's palm detector and hand landmark model (fixtures
//! `palm-detection-lite`, `hand-landmark-lite`), against what LiteRT's own interpreter
//! reports for the same files (ai-edge-litert 2.3.0, `_get_ops_details`,
//! `get_input_details`, `get_output_details`; recorded 2026-11-30): operators by type,
//! inputs and outputs with their shapes, the first operator's tensors. The weights are
//! fp16 behind DEQUANTIZE, so each DEQUANTIZE reads an f16 weight of its output's shape.

use std::collections::BTreeMap;

use m2w_model::{DType, Dim, Format, Model};

fn open(name: &str) -> Model {
    let path = m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"));
    Model::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn counts(v: &[(&str, usize)]) -> BTreeMap<String, usize> {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

fn op_counts(m: &Model) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for n in &m.graph.as_ref().unwrap().nodes {
        *c.entry(n.op_type.clone()).or_default() += 1;
    }
    c
}

fn io(v: &[m2w_model::ValueInfo]) -> Vec<(String, Vec<i64>)> {
    v.iter()
        .map(|i| {
            let shape = i
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => *v,
                    Dim::Symbolic(s) => panic!("{s}"),
                })
                .collect();
            (i.name.clone(), shape)
        })
        .collect()
}

/// Every DEQUANTIZE reads an f16 weight holding as many values as its output.
fn check_fp16_weights(m: &Model) -> usize {
    let g = m.graph.as_ref().unwrap();
    let mut n = 0;
    for node in g.nodes.iter().filter(|n| n.op_type == "DEQUANTIZE") {
        let w = m
            .tensor(&node.inputs[0])
            .unwrap_or_else(|| panic!("{}: no weight", node.name));
        assert_eq!(w.dtype, DType::F16, "{}", w.name);
        assert_eq!(w.bytes, 2 * w.elements(), "{}", w.name);
        let values = m.read_f32(w).unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{}", w.name);
        n += 1;
    }
    n
}

#[test]
fn palm_detection_lite_reads_as_litert_sees_it() {
    let m = open("palm-detection-lite");
    assert_eq!(m.format, Format::Tflite);
    let want = counts(&[
        ("ADD", 25),
        ("CONCATENATION", 2),
        ("CONV_2D", 30),
        ("DEPTHWISE_CONV_2D", 23),
        ("DEQUANTIZE", 113),
        ("MAX_POOL_2D", 4),
        ("PAD", 3),
        ("PRELU", 26),
        ("RESHAPE", 4),
        ("RESIZE_BILINEAR", 2),
    ]);
    assert_eq!(op_counts(&m), want);
    let g = m.graph.as_ref().unwrap();
    assert_eq!(
        io(&g.inputs),
        vec![("input_1".to_string(), vec![1, 192, 192, 3])]
    );
    assert_eq!(
        io(&g.outputs),
        vec![
            ("Identity".to_string(), vec![1, 2016, 18]),
            ("Identity_1".to_string(), vec![1, 2016, 1]),
        ]
    );
    let first = &g.nodes[0];
    assert_eq!(first.op_type, "DEQUANTIZE");
    assert_eq!(
        first.inputs,
        vec![
            "model_1/model/batch_normalization/FusedBatchNormV3;model_1/model/depthwise_conv2d_3/depthwise;model_1/model/conv2d/Conv2D"
        ]
    );
    assert_eq!(check_fp16_weights(&m), 113);
    // Options become attributes in the schema's spelling.
    let conv = g.nodes.iter().find(|n| n.op_type == "CONV_2D").unwrap();
    for k in [
        "padding",
        "stride_w",
        "stride_h",
        "fused_activation_function",
    ] {
        assert!(
            conv.attributes.contains_key(k),
            "{k}: {:?}",
            conv.attributes
        );
    }
    let resize = g
        .nodes
        .iter()
        .find(|n| n.op_type == "RESIZE_BILINEAR")
        .unwrap();
    assert!(resize.attributes.contains_key("half_pixel_centers"));
}

#[test]
fn hand_landmark_lite_reads_as_litert_sees_it() {
    let m = open("hand-landmark-lite");
    let want = counts(&[
        ("ADD", 10),
        ("CONV_2D", 31),
        ("DEPTHWISE_CONV_2D", 16),
        ("DEQUANTIZE", 102),
        ("FULLY_CONNECTED", 4),
        ("LOGISTIC", 2),
        ("MAX_POOL_2D", 1),
        ("MEAN", 1),
    ]);
    assert_eq!(op_counts(&m), want);
    let g = m.graph.as_ref().unwrap();
    assert_eq!(
        io(&g.inputs),
        vec![("input_1".to_string(), vec![1, 224, 224, 3])]
    );
    assert_eq!(
        io(&g.outputs),
        [
            ("Identity", 63),
            ("Identity_1", 1),
            ("Identity_2", 1),
            ("Identity_3", 63)
        ]
        .map(|(n, w)| (n.to_string(), vec![1, w]))
        .to_vec()
    );
    assert_eq!(check_fp16_weights(&m), 102);
}
