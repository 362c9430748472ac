//! ONNX's backend node tests on the CI's WebGPU adapter (lavapipe): the pass count may not
//! drop below docs/conformance-floor.txt, and no case may panic. `cargo xtask conformance`
//! runs the same and regenerates docs/OP_SUPPORT.md.

use m2w_engine::conformance::{Outcome, run_all};

#[test]
fn node_tests_pass_at_least_the_floor() {
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
    let panics: Vec<_> = results
        .iter()
        .filter(|r| matches!(&r.outcome, Outcome::Fail(e) if e.contains("panicked")))
        .map(|r| &r.case)
        .collect();
    assert!(panics.is_empty(), "cases that panicked: {panics:?}");
    assert!(pass >= floor, "{pass} passes, floor {floor}");
    println!("node tests: {pass} passed of {}", results.len());
}
