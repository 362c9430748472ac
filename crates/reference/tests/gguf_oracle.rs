//! The GGUF decoder reference and tokenizer, and m2w's chat template rendering, against an
//! oracle that shares no code with m2w (`scripts/gguf_numpy_oracle.py`: the PyPI gguf
//! reader's dequantizer and a numpy forward pass, SentencePiece's own BPE encoder over the
//! file's vocabulary, jinja2 with Hugging Face's settings), on Gemma 3 270M Q4_K_M.

use m2w_model::chat::ChatTemplate;
use m2w_reference::llama::Llama;
use m2w_reference::tokenizer::GgufTokenizer;

fn oracle_dir() -> std::path::PathBuf {
    m2w_setup::fixture("gemma3-numpy-oracle")
        .unwrap_or_else(|e| panic!("fixture: {e} (run `cargo xtask fixtures`)"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn json(name: &str) -> serde_json::Value {
    let p = oracle_dir().join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

#[test]
fn gemma3_logits_greedy_tokens_and_sentencepiece_match_numpy_and_sentencepiece() {
    let model = m2w_setup::fixture("gemma3-270m-q4_k_m").unwrap();
    let llama = Llama::load(&model).unwrap();
    let tok = GgufTokenizer::from_llama(&llama).unwrap();
    let oracle = json("oracle.json");
    let ids: Vec<u32> = serde_json::from_value(oracle["prompt_ids"].clone()).unwrap();
    let mut ours = vec![llama.config.bos.unwrap()];
    ours.extend(tok.encode(oracle["prompt"].as_str().unwrap()).unwrap());
    assert_eq!(ours, ids, "prompt ids");

    // The last position's logits for numpy's 32 most likely tokens.
    let mut cache = llama.new_cache();
    let (_, logits) = llama.forward(&ids, &mut cache).unwrap();
    let row: Vec<f32> = logits.get(ids.len() - 1).unwrap().to_vec1().unwrap();
    let top = oracle["last_logits"].as_array().unwrap();
    let scale = top[0][1].as_f64().unwrap().abs().max(1.0);
    let mut worst = 0f64;
    for pair in top {
        let (id, want) = (
            pair[0].as_u64().unwrap() as usize,
            pair[1].as_f64().unwrap(),
        );
        let err = (row[id] as f64 - want).abs();
        worst = worst.max(err);
        assert!(
            err <= 2e-3 * scale,
            "logit of {id}: candle {} numpy {want}",
            row[id]
        );
    }
    println!("32 top logits within {worst:.2e} of numpy's (largest {scale:.2})");
    let greedy: Vec<u32> = serde_json::from_value(oracle["greedy"].clone()).unwrap();
    let got = llama.greedy_until(&ids, greedy.len(), None).unwrap();
    assert_eq!(got, greedy, "greedy tokens");

    // Every text of the oracle's 320 tokenizes as SentencePiece does.
    let cases = json("tokenizer-cases.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 300);
    let mut wrong = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(c["ids"].clone()).unwrap();
        if tok.encode(text).unwrap() != want {
            wrong.push(text.to_string());
        }
    }
    assert!(
        wrong.is_empty(),
        "{} texts differ: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

#[test]
fn kept_chat_templates_render_as_jinja2_does() {
    let cases = json("chat-cases.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let file = c["template"].as_str().unwrap();
        let arch = file.strip_suffix(".jinja").unwrap();
        let template = ChatTemplate::kept(arch).unwrap_or_else(|| panic!("{file} is not kept"));
        let messages = c["messages"].as_array().unwrap();
        let got = template
            .render(
                messages,
                c["add_generation_prompt"].as_bool().unwrap(),
                "<bos>",
                "<eos>",
            )
            .unwrap();
        assert_eq!(got, c["text"].as_str().unwrap(), "{file} on {messages:?}");
    }
}
