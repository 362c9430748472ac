use super::*;

#[test]
fn every_op_is_registered_once_with_its_family() {
    let r = registry();
    assert!(r.len() > 100);
    for s in r {
        assert!(!s.family.is_empty(), "{}", s.op_type);
        assert!(
            !s.reads_shape_only || s.fold.is_some(),
            "{} reads only shapes but has no fold",
            s.op_type
        );
    }
    assert_eq!(lookup("ai.onnx", "Conv").unwrap().family, "conv");
    assert_eq!(lookup("", "LSTM").unwrap().family, "rnn");
    assert!(lookup("com.microsoft", "Conv").is_none());
}

#[test]
fn flags_follow_the_registry() {
    assert_eq!(flag("", "MatMul").kind, "supported");
    assert_eq!(flag("", "LSTM").kind, "supported");
    assert_eq!(flag("com.microsoft", "MatMulNBits").kind, "supported");
    assert_eq!(flag("com.microsoft", "Attention").kind, "contrib");
    assert_eq!(flag("", "If").kind, "supported");
    assert_eq!(flag("", "Scan").kind, "control-flow");
    assert_eq!(flag("", "MatMulInteger").kind, "supported");
    assert_eq!(flag("", "FancyNewOp").kind, "missing");
}

#[test]
fn refusals_are_grouped_by_op_with_counts_reasons_and_nodes() {
    let u = |node: &str, domain: &str, op: &str, reason: &str| Unsupported {
        node: node.into(),
        domain: domain.into(),
        op_type: op.into(),
        reason: reason.into(),
    };
    let mut list: Vec<Unsupported> = (0..12)
        .map(|k| {
            u(
                &format!("q{k}"),
                "com.microsoft",
                "DynamicQuantizeLSTM",
                "contrib",
            )
        })
        .collect();
    list.push(u("r0", "", "Resize", "mode 'cubic' is not supported"));
    list.push(u("r1", "", "Resize", "antialias is not supported"));
    list.push(u("r2", "", "Resize", "mode 'cubic' is not supported"));
    let short = Refusal(&list).to_string();
    assert!(
        short.starts_with("15 node(s) in 2 op type(s) cannot run on WebGPU:"),
        "{short}"
    );
    assert!(
        short.contains("com.microsoft::DynamicQuantizeLSTM x 12: contrib"),
        "{short}"
    );
    assert!(
        short.contains("nodes: q0, q1, q2, q3, q4 and 7 more (--verbose"),
        "{short}"
    );
    assert!(
        short.contains(
            "ai.onnx::Resize x 3: mode 'cubic' is not supported (x2); antialias is not supported (x1)"
        ),
        "{short}"
    );
    let long = format!("{:#}", Refusal(&list));
    assert!(
        long.contains("q11") && !long.contains("more (--verbose"),
        "{long}"
    );
}

#[test]
fn precheck_finds_unknown_ops_and_attributes_without_shapes() {
    let node = |op: &str, attrs: &[&str]| NodeInfo {
        name: format!("{op}_0"),
        op_type: op.into(),
        domain: String::new(),
        inputs: vec!["x".into()],
        outputs: vec![format!("{op}_out")],
        scope: String::new(),
        attributes: attrs
            .iter()
            .map(|a| (a.to_string(), m2w_model::AttrValue::Int(1)))
            .collect(),
    };
    let graph = m2w_model::GraphInfo {
        nodes: vec![
            node("Relu", &[]),
            node("LeakyRelu", &["slope"]),
            node("FancyOp", &[]),
            node("Celu", &[]),
        ],
        opsets: vec![(String::new(), 11)],
        ..Default::default()
    };
    let found: Vec<(String, String)> = precheck(&graph)
        .into_iter()
        .map(|u| (u.op_type, u.reason))
        .collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].1.contains("slope"));
    assert_eq!(found[1].1, "op not supported yet");
    // Celu is opset 12: this graph declares 11.
    assert!(found[2].1.contains("opset 11"), "{found:?}");
}

#[test]
fn opset_ranges_are_enforced() {
    // Celu exists from opset 12 on.
    assert!(find("", "Celu", 11).is_err());
    assert!(find("", "Celu", 12).is_ok());
}
