//! The SmolLM2 GGUF on wgpu (packed Q4_1/Q8_0 weights, KV cache on the GPU) against the
//! candle reference: every stage of every layer for the prefill and one decode step, and
//! the greedy continuation token for token.
//!
//! Tolerance: |gpu - candle| <= 2e-3 + 2e-3 * |candle| per element (the GPU sums each
//! quantized block's products in its own order; candle multiplies dequantized f32 matrices),
//! on values whose scale reaches ~1e2 in the residual stream.

use std::collections::HashMap;

use m2w_engine::gpu::Gpu;
use m2w_engine::llama::Decoder;

const ATOL: f64 = 2e-3;
const RTOL: f64 = 2e-3;

fn smollm2() -> std::path::PathBuf {
    m2w_setup::fixture("smollm2-q4_1")
        .unwrap_or_else(|e| panic!("fixture: {e} (run `cargo xtask fixtures`)"))
}

fn compare_pass(
    runner: &m2w_engine::gpu::Runner,
    dir: &std::path::Path,
) -> (usize, f64, Vec<String>) {
    let index = m2w_reference::read_index(dir).unwrap();
    let names: Vec<String> = index.checkpoints.iter().map(|c| c.output.clone()).collect();
    let got: HashMap<String, m2w_engine::HostTensor> = runner.read(&names).unwrap();
    let mut worst = 0f64;
    let mut failures = Vec::new();
    for c in &index.checkpoints {
        let g = got[&c.output].as_f64();
        let want = m2w_reference::HostTensor::read_npy(&dir.join(&c.file))
            .unwrap()
            .to_f64();
        assert_eq!(g.len(), want.len(), "{}", c.output);
        for (i, (a, b)) in g.iter().zip(&want).enumerate() {
            let e = (a - b).abs();
            worst = worst.max(e);
            if !(e <= ATOL + RTOL * b.abs()) {
                failures.push(format!("{} element {i}: {a} vs candle {b}", c.output));
                break;
            }
        }
    }
    (index.checkpoints.len(), worst, failures)
}

#[test]
fn smollm2_prefill_decode_and_greedy_match_candle() {
    let dir = tempfile::tempdir().unwrap();
    let run =
        m2w_reference::llama::reference(&smollm2(), dir.path(), "The capital of France is", 8)
            .unwrap();
    let model = m2w_model::Model::open(&smollm2()).unwrap();
    let gpu = Gpu::new().unwrap();
    let n = run.prompt_ids.len();
    let dec = Decoder::new(&gpu, &model, n, n + 40).unwrap();

    let first = dec.run_prefill(&run.prompt_ids).unwrap();
    let (count, worst, failures) = compare_pass(&dec.prefill, &dir.path().join("prefill"));
    assert!(
        failures.is_empty(),
        "prefill: {} of {count} stages differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(8)]
    );
    println!("prefill: {count} stages within tolerance, worst abs error {worst:.2e}");
    assert_eq!(first, run.generated_ids[0], "first greedy token");

    dec.step(first, n).unwrap();
    let (count, worst, failures) = compare_pass(&dec.decode, &dir.path().join("decode"));
    assert!(
        failures.is_empty(),
        "decode: {} of {count} stages differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(8)]
    );
    println!("decode step: {count} stages within tolerance, worst abs error {worst:.2e}");

    // Greedy continuation, 32 tokens (not stopping at end-of-sequence), against candle's.
    let llama = m2w_reference::llama::Llama::load(&smollm2()).unwrap();
    let want = llama.greedy_until(&run.prompt_ids, 32, None).unwrap();
    let got = dec.greedy(&run.prompt_ids, 32, None).unwrap();
    assert_eq!(got.len(), 32);
    let tok = m2w_reference::tokenizer::GgufTokenizer::from_llama(&llama).unwrap();
    let text = tok.decode(&got).unwrap();
    println!("wgpu greedy: {text:?}");
    assert_eq!(got, want, "greedy tokens differ from candle's");
    assert!(text.starts_with(" Paris."), "{text:?}");
}
