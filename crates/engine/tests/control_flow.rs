//! If on a real export (Silero VAD with `If` subgraphs, whose branches nest further Ifs):
//! with the condition's input fixed at plan time the taken branch is lowered inline; with
//! the condition computed at run time the node is refused before any GPU work, saying why
//! and what to do.

use std::collections::BTreeMap;

use m2w_engine::{CompileError, DT, HostTensor, compile, compile_specialized};

fn silero_if() -> m2w_model::Model {
    let path = m2w_setup::fixture("silero-vad-if")
        .unwrap_or_else(|e| panic!("fixture: {e} (run `cargo xtask fixtures`)"));
    m2w_model::Model::open(&path).unwrap()
}

fn shapes() -> BTreeMap<String, (Vec<usize>, DT)> {
    BTreeMap::from([
        ("input".to_string(), (vec![1, 512], DT::F32)),
        ("state".to_string(), (vec![2, 1, 128], DT::F32)),
        ("sr".to_string(), (vec![], DT::I32)),
    ])
}

#[test]
fn a_run_time_condition_is_refused_with_what_to_do() {
    let e = compile(&silero_if(), &shapes()).unwrap_err();
    let CompileError::Unsupported(list) = &e else {
        panic!("{e}")
    };
    assert_eq!(list.len(), 1, "{e}");
    assert_eq!(list[0].op_type, "If");
    assert!(list[0].reason.contains("computed at run time"), "{e}");
    assert!(list[0].reason.contains("--value"), "{e}");
}

#[test]
fn a_condition_fixed_at_plan_time_inlines_the_taken_branch() {
    let mut s = shapes();
    s.remove("sr");
    let fixed = BTreeMap::from([("sr".to_string(), HostTensor::i64(vec![], vec![16000]))]);
    let plan = compile_specialized(&silero_if(), &s, &fixed).unwrap();
    assert!(!plan.inputs.contains(&"sr".to_string()));
    // The 16 kHz branch's convolutions and LSTM run; nothing of the other branch does.
    let ops: Vec<&str> = plan.dispatches.iter().map(|d| d.op_type.as_str()).collect();
    assert!(ops.contains(&"Conv") && ops.contains(&"LSTM"), "{ops:?}");
    assert!(
        plan.dispatches
            .iter()
            .all(|d| !d.node.contains("else_branch"))
    );
}
