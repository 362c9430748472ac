//! TFLite models through the one engine, checked at every operator output against LiteRT's
//! own interpreter (the reference phase's oracle): MediaPipe's palm detector and hand
//! landmark model (fixtures `palm-detection-lite`, `hand-landmark-lite`).

use m2w_engine::gpu::Gpu;
use m2w_validate::{Options, compile_for, validate};

fn fixture(name: &str) -> std::path::PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

/// LiteRT's checkpoints for `model` (inputs normal(0, 1), seed 0) in `dir/reference`.
fn litert_reference(model: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let (python, script) = m2w_setup::litert_runner().unwrap_or_else(|e| panic!("{e}"));
    let reference = dir.join("reference");
    m2w_reference::tflite_ref::reference(&python, &script, model, &reference, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    reference
}

/// End to end, f32 noise accumulates over 40-60 convolutions whose activations reach
/// 1e3 (inputs normal(0, 1)): an element near zero then carries an error set by its
/// tensor's scale (measured on the palm detector: at most 3.1e-3 where the tensor's
/// largest value is 1.1e3, 2.7e-6 of it). The bound is the default's plus 1e-5 of each
/// tensor's largest value; per layer (each op fed the oracle's inputs) the default holds.
const END_TO_END: m2w_validate::Tolerance = m2w_validate::Tolerance {
    atol: 1e-4,
    rtol: 1e-3,
    scaled: 1e-5,
};

/// Lowers one model and checks every checkpoint against LiteRT, per layer and end to end.
fn check(name: &str, expected_checkpoints: usize) {
    let path = fixture(name);
    let dir = tempfile::tempdir().unwrap();
    let reference = litert_reference(&path, dir.path());
    let index = m2w_reference::read_index(&reference).unwrap();
    assert_eq!(index.checkpoints.len(), expected_checkpoints, "{name}");
    assert!(index.determinism_checked);
    // The oracle is real: no operator output reads back as all zeros (what the XNNPACK
    // delegate gives for tensors inside its partitions).
    for c in &index.checkpoints {
        let t = m2w_reference::HostTensor::read_npy(&reference.join(&c.file)).unwrap();
        assert!(
            t.to_f64().iter().any(|&v| v != 0.0),
            "{name}: checkpoint {} is all zeros",
            c.output
        );
    }
    // Weights-only outputs (fp16 DEQUANTIZE, DENSIFY of sparse weights) are listed, not
    // compared.
    assert!(
        index
            .not_captured
            .iter()
            .all(|n| n.op_type == "DEQUANTIZE" || n.op_type == "DENSIFY"),
        "{name}: {:?}",
        index
            .not_captured
            .iter()
            .map(|n| &n.op_type)
            .collect::<Vec<_>>()
    );

    let mut model = m2w_model::Model::open(&path).unwrap();
    m2w_engine::lower_source(&mut model).unwrap_or_else(|e| panic!("{name}: {e}"));
    let graph = model.graph.as_ref().unwrap();
    assert!(graph.nodes.iter().all(|n| n.domain.is_empty()));
    assert!(
        !graph.layouts.is_empty(),
        "{name}: no feature map held as NCHW"
    );
    let gpu = Gpu::new().unwrap();
    for per_layer in [true, false] {
        let (plan, inputs) = compile_for(&model, &reference).unwrap_or_else(|e| panic!("{e}"));
        let report = validate(
            &gpu,
            &model,
            plan,
            &inputs,
            &reference,
            &Options {
                per_layer,
                f32: (!per_layer).then_some(END_TO_END),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (report.passed, report.failed),
            (expected_checkpoints, 0),
            "{name} per_layer {per_layer}: {:?}",
            report.first_failure
        );
    }
}

#[test]
fn palm_detection_lite_matches_litert_at_every_operator() {
    check("palm-detection-lite", 232 - 113);
}

#[test]
fn hand_landmark_lite_matches_litert_at_every_operator() {
    check("hand-landmark-lite", 167 - 102);
}

/// Sparse weights: 46 CSR fp16 filters behind DENSIFY, made dense by the reader.
#[test]
fn face_detection_full_range_sparse_matches_litert_at_every_operator() {
    check("face-detection-full-range-sparse", 388 - 182 - 46);
}
