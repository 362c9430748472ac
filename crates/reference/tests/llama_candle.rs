//! The candle llama reference on the SmolLM2 GGUF, proven against what llama.cpp prints for
//! the same file: greedy decoding of "The capital of France is" gives " Paris.".

use std::path::PathBuf;

use m2w_reference::llama::{Llama, reference};
use m2w_reference::tokenizer::GgufTokenizer;
use m2w_reference::{HostTensor, read_index};

fn smollm2() -> PathBuf {
    m2w_setup::fixture("smollm2-q4_1")
        .unwrap_or_else(|e| panic!("fixture: {e} (run `cargo xtask fixtures`)"))
}

#[test]
fn greedy_continuation_is_paris_and_every_stage_is_dumped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ref");
    let run = reference(&smollm2(), &out, "The capital of France is", 8).unwrap();
    assert!(
        run.generated_text.starts_with(" Paris."),
        "{:?}",
        run.generated_text
    );

    for (pass, positions) in [("prefill", run.prompt_ids.len()), ("decode", 1)] {
        let index = read_index(&out.join(pass)).unwrap();
        // token_embd + 15 stages x 30 layers + output_norm + logits
        assert_eq!(index.checkpoints.len(), 1 + 15 * 30 + 2, "{pass}");
        let names: Vec<&str> = index
            .checkpoints
            .iter()
            .map(|c| c.output.as_str())
            .collect();
        for stage in [
            "attn_norm",
            "q",
            "k",
            "v",
            "q_rope",
            "k_rope",
            "attn_out",
            "attn_proj",
            "attn_residual",
            "ffn_norm",
            "gate",
            "up",
            "ffn_act",
            "down",
            "ffn_residual",
        ] {
            assert!(
                names.contains(&format!("blk.29.{stage}").as_str()),
                "{pass}: blk.29.{stage}"
            );
        }
        let logits = index.checkpoints.last().unwrap();
        assert_eq!(logits.shape, vec![positions as u64, 49152]);
        let k = index
            .checkpoints
            .iter()
            .find(|c| c.output == "blk.0.k")
            .unwrap();
        assert_eq!(k.shape, vec![positions as u64, 192], "3 KV heads x 64");
        for c in &index.checkpoints {
            let bytes = std::fs::read(out.join(pass).join(&c.file)).unwrap();
            assert_eq!(m2w_model::io::sha256_bytes(&bytes), c.sha256);
        }
    }
}

#[test]
fn decode_step_with_cache_equals_a_full_prefill() {
    // The KV cache must give the same last-position logits as recomputing everything.
    let llama = Llama::load(&smollm2()).unwrap();
    let tok = GgufTokenizer::from_llama(&llama).unwrap();
    let ids = tok.encode("The capital of France is").unwrap();
    let mut cache = llama.new_cache();
    let (_, logits) = llama.forward(&ids, &mut cache).unwrap();
    let next = Llama::argmax_last(&logits).unwrap();
    let (_, step) = llama.forward(&[next], &mut cache).unwrap();
    let mut all = ids.clone();
    all.push(next);
    let (_, full) = llama.forward(&all, &mut llama.new_cache()).unwrap();
    let a: Vec<f32> = step.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = full
        .narrow(0, all.len() - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-3,
        "cached decode differs from full prefill by {worst}"
    );
}

#[test]
fn tokenizer_matches_known_ids_and_round_trips() {
    let llama = Llama::load(&smollm2()).unwrap();
    let tok = GgufTokenizer::from_llama(&llama).unwrap();
    // The ids our tokenizer gives; the model continuing exactly these with " Paris." (what
    // llama.cpp prints for this file) is the end-to-end check that they are right.
    assert_eq!(
        tok.encode("The capital of France is").unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
    assert_eq!(tok.decode(&[7042, 30]).unwrap(), " Paris.");
    // Control tokens are single tokens, digits split one by one.
    let chat = tok.encode("<|im_start|>user\n2024").unwrap();
    assert_eq!(chat[0], 1, "<|im_start|> is token 1");
    assert_eq!(chat.len(), 1 + 2 + 4, "{chat:?}");
    for s in [
        "Hello, world!",
        "  leading spaces",
        "naïve café 東京 🚀",
        "tabs\tand\nnewlines",
        "x = 3.14159; y = -2e10",
    ] {
        assert_eq!(tok.decode(&tok.encode(s).unwrap()).unwrap(), s);
    }
}

#[test]
fn input_ids_are_saved_as_npy() {
    let dir = tempfile::tempdir().unwrap();
    let run = reference(&smollm2(), &dir.path().join("r"), "Hello", 2).unwrap();
    let ids = HostTensor::read_npy(&dir.path().join("r/prefill/inputs/token_ids.npy")).unwrap();
    assert_eq!(
        ids.to_f64(),
        run.prompt_ids.iter().map(|&i| i as f64).collect::<Vec<_>>()
    );
}
