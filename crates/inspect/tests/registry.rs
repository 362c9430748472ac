//! The engine's op registry is the only list of what m2w runs: for every op of ONNX's node
//! tests, inspect's flag, the op rows of docs/OP_SUPPORT.md and the lowering all say the
//! same thing as the registry. (No GPU: cases are only compiled.)

use std::collections::BTreeMap;

use m2w_engine::conformance::{Outcome, plan_case};
use m2w_engine::ops;

#[test]
fn inspect_op_support_and_lowering_agree_with_the_registry_for_every_node_test_op() {
    let root = m2w_setup::fixture("onnx-node-tests").expect("node tests (cargo xtask fixtures)");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 1765);
    let mut ops_seen: BTreeMap<String, bool> = BTreeMap::new();
    let mut disagreements = Vec::new();
    for dir in &dirs {
        let mut domains: BTreeMap<String, String> = BTreeMap::new();
        if let Ok(model) = m2w_model::Model::open(&dir.join("model.onnx")) {
            for n in model.graph.iter().flat_map(|g| &g.nodes) {
                let known = ops::lookup(&n.domain, &n.op_type).is_some();
                let flagged = m2w_inspect::flag_for(&n.domain, &n.op_type).is_some();
                if known == flagged {
                    disagreements.push(format!(
                        "{}: registry {known}, inspect flag {flagged}",
                        n.op_type
                    ));
                }
                ops_seen.insert(n.op_type.clone(), known);
                domains.insert(n.op_type.clone(), n.domain.clone());
            }
        }
        let (op, planned) = plan_case(dir);
        let Some(domain) = domains.get(&op) else {
            continue;
        };
        if ops::lookup(domain, &op).is_none() {
            // An op the registry lacks never compiles; where the refusal names it (rather
            // than an input dtype), it says what inspect says.
            let reason = ops::flag(domain, &op).reason;
            match planned {
                Err(Outcome::Unsupported(msg))
                    if !msg.starts_with(&format!("{op} (")) || msg.contains(&reason) => {}
                other => disagreements.push(format!(
                    "{}: {op} is not registered but planning gave {other:?}",
                    dir.display(),
                )),
            }
        }
    }
    assert!(ops_seen.len() > 150, "{}", ops_seen.len());
    // docs/OP_SUPPORT.md's registry column is the registry's answer for each op row.
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/OP_SUPPORT.md"
    ))
    .unwrap();
    let mut rows = 0;
    for line in doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| op "))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (op, label) = (cells[1], cells[2]);
        rows += 1;
        if label != ops::registry_label(op) {
            disagreements.push(format!(
                "OP_SUPPORT.md says {op} is '{label}', the registry '{}' (run cargo xtask conformance)",
                ops::registry_label(op)
            ));
        }
    }
    assert!(rows > 150, "{rows} op rows in OP_SUPPORT.md");
    for (op, known) in &ops_seen {
        if *known && !doc.contains(&format!("| {op} | ")) {
            disagreements.push(format!("{op} is registered but has no OP_SUPPORT.md row"));
        }
    }
    disagreements.dedup();
    assert!(
        disagreements.is_empty(),
        "{} disagreement(s):\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}
