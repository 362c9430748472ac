//! Inspect on a folder of graphs that make a generation pipeline shows how they would run:
//! which runs per step, and where each input comes from (the data flow between graphs).

use m2w_model::onnx_build::{FLOAT, INT64, model, node, value_info};

#[test]
fn a_folder_of_an_embed_graph_and_a_cached_decoder_shows_its_data_flow() {
    let dir = tempfile::tempdir().unwrap();
    let embed = model(
        vec![node(
            "Gather",
            &["table", "input_ids"],
            &["inputs_embeds"],
            vec![],
        )],
        vec![m2w_model::onnx_build::ints("table", &[0; 8])],
        vec![value_info("input_ids", INT64, &[1, 3])],
        vec![value_info("inputs_embeds", INT64, &[1, 3, 2])],
        18,
    );
    std::fs::write(dir.path().join("embed.onnx"), embed).unwrap();
    let decoder = model(
        vec![
            node("Identity", &["inputs_embeds"], &["logits"], vec![]),
            node(
                "Identity",
                &["past_key_values.0.key"],
                &["present.0.key"],
                vec![],
            ),
        ],
        vec![],
        vec![
            value_info("inputs_embeds", FLOAT, &[1, 3, 2]),
            value_info("attention_mask", INT64, &[1, 3]),
            value_info("past_key_values.0.key", FLOAT, &[1, 1, 0, 2]),
        ],
        vec![
            value_info("logits", FLOAT, &[1, 3, 2]),
            value_info("present.0.key", FLOAT, &[1, 1, 0, 2]),
        ],
        18,
    );
    std::fs::write(dir.path().join("decoder.onnx"), decoder).unwrap();
    let report = m2w_inspect::inspect_path(dir.path()).unwrap();
    let text = m2w_inspect::table(&report);
    assert!(
        text.contains("pipeline (from the names; a pipeline.json overrides): embed (per step) -> decoder (per step)"),
        "{text}"
    );
    assert!(text.contains("  embed: input_ids <- new_tokens"), "{text}");
    assert!(
        text.contains("inputs_embeds <- embed:inputs_embeds"),
        "{text}"
    );
    assert!(
        text.contains("past_key_values.0.key <- previous:present.0.key"),
        "{text}"
    );
    let md = m2w_inspect::markdown(&report);
    assert!(
        md.contains("### Pipeline\n\npipeline (from the names"),
        "{md}"
    );
    assert!(md.contains("- embed: input_ids <- new_tokens"), "{md}");
    // One graph alone is no pipeline to show.
    std::fs::remove_file(dir.path().join("decoder.onnx")).unwrap();
    let report = m2w_inspect::inspect_path(dir.path()).unwrap();
    assert!(report.pipeline.is_none());
}
