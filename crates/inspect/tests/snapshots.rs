//! The JSON schema (m2w.inspect/1) is a contract with other tools: any change to it shows
//! up here as a snapshot diff. The bundled model needs no download.

#[test]
fn bundled_model_json_report() {
    let report = m2w_inspect::inspect_path(&m2w_setup::bundled_model()).unwrap();
    insta::assert_json_snapshot!("silero_vad_v6_inspect", report);
}

#[test]
fn gguf_summary_json() {
    let path = m2w_setup::fixture("smollm2-q4_1").unwrap();
    let report = m2w_inspect::inspect_path(&path).unwrap();
    let m = &report.models[0];
    insta::assert_json_snapshot!(
        "smollm2_gguf_summary",
        (&m.gguf, &m.totals, &m.notes, m.components.len())
    );
}
