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
fn unsupported_nodes_are_all_listed_in_one_error() {
    let r = probe(
        "silero-vad-v6",
        &[
            ("input", vec![4, 576], DT::F32),
            ("h", vec![1, 1, 128], DT::F32),
            ("c", vec![1, 1, 128], DT::F32),
        ],
    );
    let Err(CompileError::Unsupported(list)) = r else {
        panic!("silero v6 should be rejected (LSTM)")
    };
    assert!(
        list.iter()
            .any(|u| u.op_type == "LSTM" && u.node == "/decoder/rnn/LSTM"),
        "{list:?}"
    );
    let text = CompileError::Unsupported(list).to_string();
    assert!(text.contains("/decoder/rnn/LSTM (LSTM)"), "{text}");
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
