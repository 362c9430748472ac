//! The derived SmolLM2 ONNX decoder (fixture `smollm2-onnx-kv`, written by
//! scripts/derive_smollm2_onnx.py) is checked against an oracle that does not read it:
//! candle's forward pass over the GGUF it came from. Its tokenizer.json gives the GGUF
//! tokenizer's ids; ONNX Runtime's loop over it (m2w's pipeline loop, with the cache fed
//! back) gives candle's logits within a stated tolerance and candle's greedy tokens.

use std::collections::BTreeMap;

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
];

#[test]
#[ignore = "heavy (651 MB of f32 weights through ONNX Runtime and candle): cargo xtask test -- --ignored smollm2_onnx"]
fn smollm2_onnx_decoder_matches_candle_on_the_gguf() {
    let gguf = m2w_setup::fixture("smollm2-q4_1").unwrap();
    let onnx = m2w_setup::fixture("smollm2-onnx-kv").unwrap();
    let folder = onnx.parent().unwrap();
    let lib = m2w_setup::onnxruntime_library().unwrap();

    let model = m2w_model::Model::open(&onnx).unwrap();
    let graph = model.graph.clone().unwrap();
    let p =
        m2w_model::pipeline::infer(&[("model".to_string(), onnx.clone(), &graph)], folder, None)
            .unwrap();
    let infos: BTreeMap<String, m2w_model::GraphInfo> =
        [("model".to_string(), graph.clone())].into_iter().collect();

    let llama = m2w_reference::llama::Llama::load(&gguf).unwrap();
    let gguf_tok = m2w_reference::tokenizer::GgufTokenizer::from_llama(&llama).unwrap();
    let tok = m2w_reference::pipeline::tokenizer(&p).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let prompts: Vec<String> = PROMPTS.iter().map(|s| s.to_string()).collect();
    let record =
        m2w_reference::pipeline::loop_reference(&lib, &p, &infos, &prompts, dir.path()).unwrap();
    for (k, r) in record.prompts.iter().enumerate() {
        let ids = m2w_reference::pipeline::encode(&tok, &r.text).unwrap();
        let gguf_ids: Vec<i64> = gguf_tok
            .encode(&r.text)
            .unwrap()
            .iter()
            .map(|&i| i as i64)
            .collect();
        assert_eq!(
            ids, gguf_ids,
            "tokenizer.json against the GGUF's: {:?}",
            r.text
        );

        // The prompt's last logits: ONNX Runtime's (row 0 of the loop) against candle's.
        let prompt: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let mut cache = llama.new_cache();
        let (_, logits) = llama.forward(&prompt, &mut cache).unwrap();
        let n = logits.dim(0).unwrap();
        let candle: Vec<f32> = logits
            .narrow(0, n - 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let ort = m2w_reference::HostTensor::read_npy(
            &dir.path().join(m2w_reference::pipeline::logits_file(k)),
        )
        .unwrap()
        .to_f64();
        let ort = &ort[..candle.len()];
        let range = candle.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let worst = ort
            .iter()
            .zip(&candle)
            .map(|(a, &b)| (a - b as f64).abs())
            .fold(0f64, f64::max);
        println!(
            "{:?}: {} prompt tokens, max |ORT - candle| {worst:.2e} over logits up to {range:.1}",
            r.text,
            ids.len()
        );
        // Both are f32 over the same dequantized weights, summed in different orders.
        assert!(worst <= 1e-3 * range, "{worst} against {range}");

        // Greedy tokens, stop token included.
        let eos = p.stop.first().map(|&e| e as u32);
        let want: Vec<i64> = llama
            .greedy_until(&prompt, p.max_new_tokens, eos)
            .unwrap()
            .iter()
            .map(|&t| t as i64)
            .collect();
        assert_eq!(r.generated.tokens, want, "{:?}", r.text);
    }
}
