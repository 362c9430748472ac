//! inspect on real models, checked against what the `onnx` / `safetensors` Python packages
//! report for the same files (tests/expected/*.json, made by scripts/expect_inventory.py)
//! and against the GGUF facts published with the SmolLM2 fixture.

use std::collections::BTreeMap;

use m2w_inspect::inspect_path;

fn fixture(name: &str) -> std::path::PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

#[derive(serde::Deserialize)]
struct Expected {
    ops: BTreeMap<String, usize>,
    weights: Vec<(String, Vec<u64>, String)>,
}

fn check_against_python(fixture_name: &str) {
    let path = fixture(fixture_name);
    let text = std::fs::read_to_string(format!(
        "{}/tests/expected/{fixture_name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let expected: Expected = serde_json::from_str(&text).unwrap();
    let report = inspect_path(&path).unwrap();
    let m = &report.models[0];

    let ops: BTreeMap<String, usize> = m
        .ops
        .iter()
        .map(|o| (format!("{}:{}", o.domain, o.op_type), o.count))
        .collect();
    assert_eq!(
        ops, expected.ops,
        "{fixture_name}: op inventory differs from the onnx package's"
    );

    let mut ours: Vec<(String, Vec<u64>, String)> = m
        .weights
        .iter()
        .map(|w| (w.name.clone(), w.shape.clone(), w.dtype.to_string()))
        .collect();
    let mut theirs = expected.weights.clone();
    ours.sort();
    theirs.sort();
    assert_eq!(ours.len(), theirs.len(), "{fixture_name}: weight count");
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "{fixture_name}: weight differs");
    }
    let bytes: u64 = m.weights.iter().map(|w| w.bytes).sum();
    assert_eq!(m.totals.bytes, bytes);
}

#[test]
fn minilm_int8_matches_the_onnx_package() {
    check_against_python("minilm-int8");
}

#[test]
fn silero_vad_v6_matches_the_onnx_package() {
    check_against_python("silero-vad-v6");
}

#[test]
fn silero_vad_with_if_subgraphs_matches_the_onnx_package() {
    check_against_python("silero-vad-if");
}

#[test]
fn ppocr_det_constant_node_weights_match_the_onnx_package() {
    check_against_python("ppocr-det");
}

#[test]
fn minilm_safetensors_matches_the_safetensors_package() {
    check_against_python("minilm-safetensors");
    let report = inspect_path(&fixture("minilm-safetensors")).unwrap();
    let config = report.models[0]
        .config
        .as_ref()
        .expect("config.json beside the file is read");
    assert_eq!(config["hidden_size"], 384);
    assert_eq!(config["num_hidden_layers"], 6);
}

#[test]
fn minilm_int8_weights_are_recognised_as_in_graph_int8() {
    let report = inspect_path(&fixture("minilm-int8")).unwrap();
    let m = &report.models[0];
    assert_eq!(
        m.quantization.len(),
        38,
        "every int8 initializer feeds a Cast->Mul dequantization"
    );
    let emb = m
        .weights
        .iter()
        .find(|w| w.name == "inner.embeddings.word_embeddings.weight_q")
        .unwrap();
    assert!(
        emb.quantization.contains("Cast->Mul") && emb.quantization.contains("per-axis [0]"),
        "{}",
        emb.quantization
    );
    let scale = m
        .weights
        .iter()
        .find(|w| w.name == "inner.embeddings.word_embeddings.weight_scale")
        .unwrap();
    assert_eq!(
        scale.quantization,
        "scale of inner.embeddings.word_embeddings.weight_q"
    );
    assert_eq!(m.totals.tensors_by_dtype["i8"], 38);
}

#[test]
fn smollm2_gguf_reports_the_published_architecture() {
    let report = inspect_path(&fixture("smollm2-q4_1")).unwrap();
    let m = &report.models[0];
    let g = m.gguf.as_ref().unwrap();
    assert_eq!(g.architecture, "llama");
    assert_eq!(g.layers, Some(30));
    assert_eq!(g.width, Some(576));
    assert_eq!((g.heads, g.kv_heads), (Some(9), Some(3)));
    assert_eq!(g.tokenizer.model.as_deref(), Some("gpt2"));
    assert_eq!(g.tokenizer.vocab_size, Some(49152));
    assert!(g.chat_template);
    assert!(g.tied_embedding_head);
    assert_eq!(m.weights.len(), 272);
    assert_eq!(m.totals.tensors_by_dtype["q4_1"], 210);
    assert_eq!(m.totals.tensors_by_dtype["q8_0"], 1);
    assert_eq!(m.totals.tensors_by_dtype["f32"], 61);
    let emb = m
        .weights
        .iter()
        .find(|w| w.name == "token_embd.weight")
        .unwrap();
    assert_eq!(
        emb.shape,
        vec![49152, 576],
        "row-major: vocab rows of width 576"
    );
}

#[test]
fn a_folder_is_inspected_model_by_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("silero-vad-v6"), dir.path().join("a.onnx")).unwrap();
    std::fs::copy(fixture("ppocr-det"), dir.path().join("b.onnx")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a model").unwrap();
    let report = inspect_path(dir.path()).unwrap();
    let files: Vec<&str> = report.models.iter().map(|m| m.file.as_str()).collect();
    assert_eq!(files, ["a.onnx", "b.onnx"]);
}

#[test]
fn markdown_and_table_name_every_flagged_op() {
    // An op with a data-dependent output m2w has no lowering for (Unique) is flagged, in
    // the Markdown and the table, with the engine's verdict port gives before extract.
    use m2w_model::onnx_build::{FLOAT, model, node, value_info};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unique.onnx");
    let bytes = model(
        vec![node("Unique", &["x"], &["y"], vec![])],
        vec![],
        vec![value_info("x", FLOAT, &[8])],
        vec![value_info("y", FLOAT, &[-1])],
        17,
    );
    std::fs::write(&path, bytes).unwrap();
    let report = inspect_path(&path).unwrap();
    let md = m2w_inspect::markdown(&report);
    assert!(
        md.contains("| Unique | ai.onnx |") && md.contains("data-dependent"),
        "{md}"
    );
    let table = m2w_inspect::table(&report);
    assert!(table.contains("! special"), "{table}");
    assert!(
        table.contains("WebGPU: 1 node(s) in 1 op type(s) cannot run on WebGPU:")
            && table.contains("ai.onnx::Unique x 1"),
        "{table}"
    );
    // The whole Kokoro TTS runs (its NonZero at a sync point): nothing flagged.
    let kokoro = inspect_path(&fixture("kokoro-int8")).unwrap();
    assert!(
        !m2w_inspect::table(&kokoro).contains("! "),
        "{}",
        m2w_inspect::table(&kokoro)
    );
    // Silero with `If` subgraphs: the registry runs If (its condition fixed at plan time).
    let silero_if = inspect_path(&fixture("silero-vad-if")).unwrap();
    assert!(!m2w_inspect::table(&silero_if).contains("! "));
    // Silero v6 runs whole (its LSTM has a kernel): nothing flagged.
    let v6 = inspect_path(&fixture("silero-vad-v6")).unwrap();
    assert!(
        !m2w_inspect::table(&v6).contains("! "),
        "{}",
        m2w_inspect::table(&v6)
    );
}

/// A folder of MediaPipe's two TFLite models: each inspected with its operators (every one
/// lowered by the TFLite front-end, so none flagged), its fp16 weights and its inputs and
/// outputs (the counts LiteRT's interpreter gives, as in crates/model/tests/tflite.rs).
#[test]
fn a_folder_of_tflite_models_is_inspected_model_by_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("palm-detection-lite"),
        dir.path().join("a_palm.tflite"),
    )
    .unwrap();
    std::fs::copy(
        fixture("hand-landmark-lite"),
        dir.path().join("b_hand.tflite"),
    )
    .unwrap();
    let report = inspect_path(dir.path()).unwrap();
    let seen: Vec<(&str, usize, usize, usize)> = report
        .models
        .iter()
        .map(|m| {
            assert!(m.ops.iter().all(|o| o.flag.is_none()), "{:?}", m.ops);
            (
                m.file.as_str(),
                m.ops.iter().map(|o| o.count).sum(),
                m.totals.tensors_by_dtype["f16"],
                m.outputs.len(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("a_palm.tflite", 232, 113, 2),
            ("b_hand.tflite", 167, 102, 4)
        ]
    );
    // No value passes between them by name: the glue makes the landmark model's input (a
    // crop of the frame) and reads the detector's per-anchor outputs.
    let flow = report.data_flow.as_ref().expect("a folder of two models");
    assert!(flow.edges.is_empty());
    let holds = |ports: &[m2w_inspect::Port]| -> Vec<(String, String)> {
        ports
            .iter()
            .map(|p| (format!("{}:{}", p.model, p.name), p.holds.clone()))
            .collect()
    };
    let inputs = holds(&flow.external_inputs);
    assert_eq!(inputs.len(), 2);
    assert!(
        inputs[0].1.starts_with("an image, 192x192x3 NHWC"),
        "{inputs:?}"
    );
    assert!(
        inputs[1].1.starts_with("an image, 224x224x3 NHWC"),
        "{inputs:?}"
    );
    let outputs = holds(&flow.final_outputs);
    assert_eq!(
        outputs[..2],
        [
            (
                "a_palm.tflite:Identity".to_string(),
                "18 values for each of 2016 anchors or positions".to_string()
            ),
            (
                "a_palm.tflite:Identity_1".to_string(),
                "one value for each of 2016 anchors or positions".to_string()
            )
        ]
    );
    assert_eq!(outputs.len(), 6);
    let text = m2w_inspect::table(&report);
    assert!(
        text.contains("data flow between the models: 0 value(s)"),
        "{text}"
    );
}
