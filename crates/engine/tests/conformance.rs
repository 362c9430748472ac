//! ONNX's backend node tests on the CI's WebGPU adapter (lavapipe): every case passes or is
//! refused before any GPU work (no wrong answer, no run-time error, no panic), and the pass
//! count may not drop below docs/conformance-floor.txt (nor the count passing with a general
//! plan below docs/conformance-general-floor.txt). `cargo xtask conformance` runs the
//! same and regenerates docs/OP_SUPPORT.md.

use m2w_engine::conformance::{Outcome, PlanKind, run_all};

#[test]
fn node_tests_pass_at_least_the_floor_and_none_is_wrong() {
    let root = m2w_setup::fixture("onnx-node-tests").expect("node tests (cargo xtask fixtures)");
    let gpu = m2w_engine::gpu::Gpu::new().expect("a WebGPU adapter (cargo xtask setup)");
    let results = run_all(&gpu, &root, None);
    assert_eq!(results.len(), 1765);
    let pass = results
        .iter()
        .filter(|r| r.outcome == Outcome::Pass)
        .count();
    let floor: usize = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/conformance-floor.txt"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let wrong: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Fail(e) => Some(format!("{}: {e}", r.case)),
            _ => None,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} case(s) give a wrong answer or fail at run time:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(pass >= floor, "{pass} passes, floor {floor}");
    // Passes with a general plan (every input fed at run time) may not drop either, and
    // the general plan never answers wrong where the specialised one is right.
    let general = results
        .iter()
        .filter(|r| matches!(r.plan, PlanKind::General | PlanKind::GeneralWithSyncs))
        .count();
    let general_floor: usize = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/conformance-general-floor.txt"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let general_wrong: Vec<String> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Pass)
        .filter_map(|r| r.general_wrong.as_ref().map(|e| format!("{}: {e}", r.case)))
        .collect();
    assert!(
        general_wrong.is_empty(),
        "the general plan answers wrong: {general_wrong:?}"
    );
    assert!(
        general >= general_floor,
        "{general} passes with general plans, floor {general_floor}"
    );
    println!(
        "node tests: {pass} passed of {} ({general} with a general plan)",
        results.len()
    );
}
