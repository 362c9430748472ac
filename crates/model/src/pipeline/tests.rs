//! The wiring of encoder-decoder and cached decoders, refusals, and manifest overrides.
use super::*;
use crate::ValueInfo;
use std::path::PathBuf;

fn vi(name: &str, dtype: &str, shape: &[&str]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dtype: dtype.into(),
        shape: shape
            .iter()
            .map(|d| match d.parse::<i64>() {
                Ok(n) => Dim::Fixed(n),
                Err(_) => Dim::Symbolic(d.to_string()),
            })
            .collect(),
    }
}

fn named(file: PathBuf, g: &GraphInfo) -> (String, PathBuf, &GraphInfo) {
    (graph_name(&file), file, g)
}

fn graph(inputs: Vec<ValueInfo>, outputs: Vec<ValueInfo>) -> GraphInfo {
    GraphInfo {
        inputs,
        outputs,
        ..Default::default()
    }
}

fn t5() -> (GraphInfo, GraphInfo) {
    (
        graph(
            vec![
                vi("input_ids", "i64", &["batch", "enc"]),
                vi("attention_mask", "i64", &["batch", "enc"]),
            ],
            vec![vi("last_hidden_state", "f32", &["batch", "enc", "512"])],
        ),
        graph(
            vec![
                vi("input_ids", "i64", &["batch", "dec"]),
                vi("encoder_hidden_states", "f32", &["batch", "enc", "512"]),
                vi("encoder_attention_mask", "i64", &["batch", "enc"]),
            ],
            vec![vi("logits", "f32", &["batch", "dec", "32128"])],
        ),
    )
}

#[test]
fn an_encoder_decoder_is_wired_from_its_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"added_tokens": [{"id": 0, "content": "<pad>"}, {"id": 1, "content": "</s>"}]}"#,
    )
    .unwrap();
    let (enc, dec) = t5();
    let p = infer(
        &[
            named(dir.path().join("decoder_model.onnx"), &dec),
            named(dir.path().join("encoder_model.onnx"), &enc),
        ],
        dir.path(),
        None,
    )
    .unwrap();
    assert_eq!(p.graphs[0].name, "encoder");
    assert_eq!(p.graphs[0].run, Run::Once);
    assert_eq!(p.graphs[1].run, Run::Step);
    assert_eq!(p.graphs[1].inputs["input_ids"], Feed::Sequence);
    assert_eq!(
        p.graphs[1].inputs["encoder_hidden_states"].to_string(),
        "encoder:last_hidden_state"
    );
    assert_eq!(
        p.graphs[1].inputs["encoder_attention_mask"],
        Feed::PromptMask
    );
    assert_eq!((p.start.clone(), p.stop.clone()), (vec![0], vec![1]));
    assert_eq!(p.logits().unwrap().1, "logits");
    let infos = [
        ("encoder".to_string(), enc.clone()),
        ("decoder".to_string(), dec.clone()),
    ]
    .into_iter()
    .collect();
    let all = p.max_dims(&infos);
    let dims = &all["decoder"];
    assert_eq!(dims["batch"], 1);
    assert_eq!(dims["dec"], 1 + DEFAULT_MAX_NEW_TOKENS);
    assert_eq!(dims["enc"], DEFAULT_MAX_PROMPT);
    // Round trip through the manifest's text.
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Pipeline>(&text).unwrap(), p);
}

#[test]
fn a_decoder_with_a_cache_feeds_its_presents_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"eos_token_id": [2, 7]}"#,
    )
    .unwrap();
    let dec = graph(
        vec![
            vi("input_ids", "i64", &["batch", "seq"]),
            vi("attention_mask", "i64", &["batch", "total"]),
            vi("position_ids", "i64", &["batch", "seq"]),
            vi(
                "past_key_values.0.key",
                "f32",
                &["batch", "3", "past", "64"],
            ),
            vi(
                "past_key_values.0.value",
                "f32",
                &["batch", "3", "past", "64"],
            ),
        ],
        vec![
            vi("logits", "f32", &["batch", "seq", "100"]),
            vi("present.0.key", "f32", &["batch", "3", "total", "64"]),
            vi("present.0.value", "f32", &["batch", "3", "total", "64"]),
        ],
    );
    let p = infer(
        &[named(dir.path().join("model.onnx"), &dec)],
        dir.path(),
        None,
    )
    .unwrap();
    let g = &p.graphs[0];
    assert_eq!(g.inputs["input_ids"], Feed::NewTokens);
    assert_eq!(g.inputs["attention_mask"], Feed::ContextMask);
    assert_eq!(g.inputs["position_ids"], Feed::Positions);
    assert_eq!(
        g.inputs["past_key_values.0.value"].to_string(),
        "previous:present.0.value"
    );
    assert!(p.start.is_empty());
    assert_eq!(p.stop, vec![2, 7]);
    let infos = [("model".to_string(), dec.clone())].into_iter().collect();
    assert_eq!(p.empty_dims(&infos)["model"], vec!["past".to_string()]);
    let dims = &p.max_dims(&infos)["model"];
    assert_eq!(dims["past"], DEFAULT_MAX_PROMPT + DEFAULT_MAX_NEW_TOKENS);
}

/// The split-graph runtime's structure: an embed graph whose inputs_embeds a decoder with a
/// cache reads runs per step before it, on the same new tokens.
#[test]
fn an_embed_graph_runs_per_step_on_the_tokens_its_cached_decoder_takes() {
    let dir = tempfile::tempdir().unwrap();
    let embed = graph(
        vec![vi("input_ids", "i64", &["batch", "seq"])],
        vec![vi("inputs_embeds", "f32", &["batch", "seq", "8"])],
    );
    let dec = graph(
        vec![
            vi("inputs_embeds", "f32", &["batch", "seq", "8"]),
            vi("attention_mask", "i64", &["batch", "total"]),
            vi("past_key_values.0.key", "f32", &["batch", "1", "past", "8"]),
        ],
        vec![
            vi("logits", "f32", &["batch", "seq", "100"]),
            vi("present.0.key", "f32", &["batch", "1", "total", "8"]),
        ],
    );
    let p = infer(
        &[
            named(dir.path().join("decoder.onnx"), &dec),
            named(dir.path().join("embed.onnx"), &embed),
        ],
        dir.path(),
        None,
    )
    .unwrap();
    let names: Vec<&str> = p.graphs.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["embed", "decoder"]);
    assert!(p.graphs.iter().all(|g| g.run == Run::Step));
    assert_eq!(p.graphs[0].inputs["input_ids"], Feed::NewTokens);
    assert_eq!(
        p.graphs[1].inputs["inputs_embeds"].to_string(),
        "embed:inputs_embeds"
    );
    assert_eq!(p.graphs[1].logits.as_deref(), Some("logits"));
}

#[test]
fn what_cannot_be_wired_is_listed_in_one_error_and_a_manifest_fills_it() {
    let dir = tempfile::tempdir().unwrap();
    let dec = graph(
        vec![
            vi("input_ids", "i64", &["batch", "seq"]),
            vi("pixel_values", "f32", &["batch", "3", "224", "224"]),
            vi("encoder_hidden_states", "f32", &["batch", "enc", "8"]),
        ],
        vec![vi("scores", "f32", &["batch", "seq", "100"])],
    );
    let e = infer(
        &[named(dir.path().join("decoder.onnx"), &dec)],
        dir.path(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no feed known for input(s) pixel_values, encoder_hidden_states"),
        "{e}"
    );
    assert!(e.contains("no step graph has a logits output"), "{e}");
    assert!(e.contains("pipeline.json"), "{e}");
    let vision = graph(
        vec![vi("pixel_values", "f32", &["batch", "3", "224", "224"])],
        vec![vi("image_features", "f32", &["batch", "enc", "8"])],
    );
    std::fs::write(
        dir.path().join(MANIFEST),
        r#"{"graphs": [
            {"name": "vision", "run": "once", "inputs": {"pixel_values": "prompt"}},
            {"name": "decoder", "logits": "scores",
             "inputs": {"pixel_values": "prompt", "encoder_hidden_states": "vision:image_features"}}
        ], "start": [5], "stop": [6]}"#,
    )
    .unwrap();
    let p = infer(
        &[
            named(dir.path().join("decoder.onnx"), &dec),
            named(dir.path().join("vision.onnx"), &vision),
        ],
        dir.path(),
        None,
    )
    .unwrap();
    assert_eq!(p.graphs[0].name, "vision");
    assert_eq!(p.logits().unwrap().1, "scores");
    assert_eq!((p.start.clone(), p.stop.clone()), (vec![5], vec![6]));
    // A feed that names a missing graph, or a step value fed to a once graph.
    std::fs::write(
        dir.path().join(MANIFEST),
        r#"{"graphs": [{"name": "vision", "run": "once", "inputs": {"pixel_values": "sequence"}},
            {"name": "decoder", "logits": "scores", "inputs": {"pixel_values": "prompt",
             "encoder_hidden_states": "nowhere:x"}}], "start": [5]}"#,
    )
    .unwrap();
    let e = infer(
        &[
            named(dir.path().join("decoder.onnx"), &dec),
            named(dir.path().join("vision.onnx"), &vision),
        ],
        dir.path(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("'sequence' changes every step, but 'vision' runs once"),
        "{e}"
    );
    assert!(e.contains("feed 'nowhere:x' names no graph"), "{e}");
}

#[test]
fn feeds_parse_and_print() {
    for s in [
        "prompt",
        "new_tokens",
        "previous:present.3.value",
        "encoder:last_hidden_state",
    ] {
        assert_eq!(s.parse::<Feed>().unwrap().to_string(), s);
    }
    assert!("bogus".parse::<Feed>().is_err());
    assert!(":x".parse::<Feed>().is_err());
}
