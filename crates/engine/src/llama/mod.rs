//! GGUF llama-family decoders as plans: built from the GGUF metadata (no graph), with the
//! quantized weights kept packed on the GPU (Q8_0 / Q4_0 / Q4_1 blocks dequantized in
//! registers by the matmul and embedding kernels), a KV cache per layer, and the tied
//! embedding used as the LM head without a second copy.
//!
//! Stage tensors carry the names the candle reference writes (`blk.3.q_rope`, `logits`...)
//! so every stage can be compared with it. One plan runs T tokens at positions start..;
//! the decode plan (T = 1) is reused for every step by rewriting the uniforms that hold the
//! position ([`Decoder::set_position`]).

mod builder;
mod decoder;
mod package;
mod plan;
mod sample;
mod weights;

pub use decoder::Decoder;
pub use package::{PackagePlans, package_plans};
pub use plan::{
    BuildOptions, PositionPatch, build, build_opts, build_with, cache_names, position_patches,
};
pub use sample::{Sampling, sample, sample_sorted};

use m2w_model::Model;

/// The hyper-parameters, parsed once for every side by [`m2w_model::llama_config`].
pub type Config = m2w_model::llama_config::LlamaConfig;

/// The model's configuration, or why m2w does not run it.
pub fn config(model: &Model) -> Result<Config, String> {
    Config::from_model(model)
}

/// The weights the matmul and embedding kernels read: the embedding, the LM head (the
/// embedding itself when tied) and every layer's seven projections.
pub(crate) fn projection_names(c: &Config, has_output: bool) -> Vec<String> {
    let mut names = vec!["token_embd.weight".to_string()];
    if has_output {
        names.push("output.weight".into());
    }
    for l in 0..c.layers {
        for w in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            names.push(format!("blk.{l}.{w}.weight"));
        }
    }
    names
}

/// Whether m2w runs this GGUF decoder, from its metadata and tensor list alone (no weight
/// is read): the family and its features, every projection weight's block type, the norms
/// the features need, and the tokenizer kind. The error lists every reason; `port` calls
/// this before extract, `inspect` prints it.
pub fn precheck(model: &Model) -> Result<(), String> {
    let mut reasons = Vec::new();
    let c = match config(model) {
        Ok(c) => Some(c),
        Err(e) => {
            reasons.push(e);
            None
        }
    };
    let tensor = |n: &str| model.tensors.iter().find(|t| t.name == n);
    if let Some(c) = &c {
        let names = projection_names(c, tensor("output.weight").is_some());
        let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for n in &names {
            match tensor(n) {
                None => by_type.entry("absent".into()).or_default().push(n.clone()),
                Some(t) if m2w_extract::BlockKind::of(t.dtype).is_none() => {
                    by_type.entry(t.dtype.name()).or_default().push(n.clone())
                }
                Some(_) => {}
            }
        }
        for (ty, list) in by_type {
            let shown: Vec<&str> = list.iter().take(3).map(String::as_str).collect();
            reasons.push(format!(
                "{} projection weight(s) {ty} ({}{}): the kernels read q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k",
                list.len(),
                shown.join(", "),
                if list.len() > 3 { ", ..." } else { "" }
            ));
        }
    }
    let md = |k: &str| model.metadata.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match (md("tokenizer.ggml.model"), md("tokenizer.ggml.pre")) {
        ("llama", _) | ("gpt2", "" | "default" | "gpt2" | "smollm" | "qwen2") => {}
        (m, p) => reasons.push(format!(
            "tokenizer {m:?} (pre {p:?}): m2w reads SentencePiece (\"llama\") and byte-level BPE (\"gpt2\" with the gpt2/smollm or qwen2 pre-tokenizer)"
        )),
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "m2w cannot run this GGUF decoder yet: {}",
            reasons.join("; ")
        ))
    }
}

/// The largest top-k the plans select on the GPU (larger k reads the whole logits row).
pub const MAX_TOP_K: usize = 64;

/// Token counts up to which the quantized matmuls run as GEMV (a workgroup per output).
pub const GEMV_MAX_TOKENS: usize = 4;

#[cfg(test)]
mod tests;
