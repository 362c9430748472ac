//! Real models through the compiler: what runs is checked against ONNX Runtime elsewhere;
//! here, that unsupported models are rejected before any GPU work with every offending
//! node listed at once.

use std::collections::BTreeMap;

use m2w_engine::{CompileError, DT, compile};

fn fixture(name: &str) -> std::path::PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

fn probe(name: &str, inputs: &[(&str, Vec<usize>, DT)]) -> Result<m2w_engine::Plan, CompileError> {
    let model = m2w_model::Model::open(&fixture(name)).unwrap();
    let shapes: BTreeMap<String, (Vec<usize>, DT)> = inputs
        .iter()
        .map(|(n, s, d)| (n.to_string(), (s.clone(), *d)))
        .collect();
    compile(&model, &shapes)
}

#[test]
fn every_real_fixture_compiles() {
    for (name, inputs) in [
        (
            "minilm-int8",
            vec![
                ("input_ids", vec![1, 16], DT::I32),
                ("attention_mask", vec![1, 16], DT::I32),
                ("token_type_ids", vec![1, 16], DT::I32),
            ],
        ),
        ("ppocr-det", vec![("x", vec![1, 3, 64, 64], DT::F32)]),
        (
            "silero-vad-v6",
            vec![
                ("input", vec![4, 576], DT::F32),
                ("h", vec![1, 1, 128], DT::F32),
                ("c", vec![1, 1, 128], DT::F32),
            ],
        ),
    ] {
        let plan = probe(name, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!plan.dispatches.is_empty());
    }
}

#[test]
fn unsupported_nodes_are_all_listed_in_one_error() {
    // The real silero graph with three nodes made unsupported in three different ways.
    let path = fixture("silero-vad-v6");
    let mut proto = m2w_model::onnx::decode(&path).unwrap();
    let g = proto.graph.as_mut().unwrap();
    let pad = g.node.iter_mut().find(|n| n.op_type() == "Pad").unwrap();
    for a in &mut pad.attribute {
        if a.name() == "mode" {
            a.s = Some(b"mirror".to_vec());
        }
    }
    g.node
        .iter_mut()
        .find(|n| n.name() == "/encoder/relu_1/Relu")
        .unwrap()
        .op_type = Some("NoSuchOp".into());
    let sig = g
        .node
        .iter_mut()
        .find(|n| n.op_type() == "Sigmoid")
        .unwrap();
    sig.domain = Some("com.microsoft".into());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    std::fs::write(&bad, m2w_model::onnx::encode(&proto)).unwrap();
    let model = m2w_model::Model::open(&bad).unwrap();
    let shapes: BTreeMap<String, (Vec<usize>, DT)> = [
        ("input", vec![4, 576]),
        ("h", vec![1, 1, 128]),
        ("c", vec![1, 1, 128]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), (s, DT::F32)))
    .collect();
    let Err(CompileError::Unsupported(list)) = compile(&model, &shapes) else {
        panic!("expected a rejection")
    };
    let ops: Vec<&str> = list.iter().map(|u| u.op_type.as_str()).collect();
    assert_eq!(ops, ["Pad", "NoSuchOp", "Sigmoid"], "{list:#?}");
    assert!(list[0].reason.contains("mirror"), "{}", list[0].reason);
    assert!(
        list[2].reason.contains("com.microsoft") || list[2].reason.contains("not supported"),
        "{}",
        list[2].reason
    );
    let text = CompileError::Unsupported(list).to_string();
    assert!(
        text.starts_with("3 node(s) in 3 op type(s) cannot run on WebGPU:")
            && text.contains("com.microsoft::Sigmoid x 1")
            && text.contains("ai.onnx::NoSuchOp x 1: op not supported yet"),
        "{text}"
    );
}

#[test]
#[ignore = "diagnostic: prints what each real fixture still needs"]
fn print_what_real_models_need() {
    for (name, inputs) in [
        (
            "minilm-int8",
            vec![
                ("input_ids", vec![1, 16], DT::I32),
                ("attention_mask", vec![1, 16], DT::I32),
                ("token_type_ids", vec![1, 16], DT::I32),
            ],
        ),
        ("ppocr-det", vec![("x", vec![1, 3, 64, 64], DT::F32)]),
    ] {
        match probe(name, &inputs) {
            Ok(p) => println!("{name}: compiles to {} dispatches", p.dispatches.len()),
            Err(e) => println!("{name}: {e}"),
        }
    }
}
