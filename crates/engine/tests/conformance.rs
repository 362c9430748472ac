//! ONNX's backend node tests on the CI's WebGPU adapter (lavapipe): every case passes or is
//! refused before any GPU work (no wrong answer, no run-time error, no panic), and the pass
//! count may not drop below docs/conformance-floor.txt. `cargo xtask conformance` runs the
//! same and regenerates docs/OP_SUPPORT.md.

use m2w_engine::conformance::{Outcome, run_all};

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
    println!("node tests: {pass} passed of {}", results.len());
}
