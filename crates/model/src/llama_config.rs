//! The hyper-parameters of a GGUF llama-family decoder, read once from its metadata for
//! every side that needs them (the WebGPU engine's plans, the candle reference, the
//! package generator).
//!
//! One allow-list: "llama" and the variants that differ from it only by these numbers
//! ("mistral", "smollm"). Anything that changes the math and is not implemented (granite's
//! multipliers, RoPE scaling, per-dimension RoPE frequencies, a key width other than
//! width / heads) is refused here with one error naming every such feature, never ignored.

use std::collections::BTreeMap;

use crate::{Model, TensorEntry};

/// The architectures m2w runs.
pub const ARCHITECTURES: [&str; 3] = ["llama", "mistral", "smollm"];

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    /// `general.architecture`: one of [`ARCHITECTURES`].
    pub architecture: String,
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    /// Rows of `token_embd.weight`.
    pub vocab: usize,
    pub rope_base: f32,
    pub rope_dim: usize,
    /// RMS norm epsilon (GGUF stores it as f32).
    pub eps: f32,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
}

impl LlamaConfig {
    /// The configuration of a GGUF model (see [`LlamaConfig::from_metadata`]).
    pub fn from_model(model: &Model) -> Result<LlamaConfig, String> {
        LlamaConfig::from_metadata(&model.metadata, &model.tensors)
    }

    /// The configuration from GGUF metadata key/values and the tensor list; the error names
    /// what is missing, inconsistent or not supported.
    pub fn from_metadata(
        metadata: &BTreeMap<String, serde_json::Value>,
        tensors: &[TensorEntry],
    ) -> Result<LlamaConfig, String> {
        let md = |key: &str| metadata.get(key).and_then(|v| v.as_f64());
        let tensor = |name: &str| tensors.iter().find(|t| t.name == name);
        let arch = metadata
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        // Granite scales embeddings, residuals, attention and logits by its own multipliers:
        // not implemented, so not accepted.
        if !ARCHITECTURES.contains(&arch.as_str()) {
            return Err(format!(
                "architecture {arch:?} is not one m2w runs (llama, mistral, smollm)"
            ));
        }
        let need = |k: &str| {
            md(&format!("{arch}.{k}")).ok_or_else(|| format!("GGUF metadata lacks {arch}.{k}"))
        };
        let dim = need("embedding_length")? as usize;
        let heads = need("attention.head_count")? as usize;
        let kv_heads = md(&format!("{arch}.attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(heads);
        if heads == 0
            || kv_heads == 0
            || !dim.is_multiple_of(heads)
            || !heads.is_multiple_of(kv_heads)
            || !dim.is_multiple_of(32)
        {
            return Err(format!(
                "inconsistent heads {heads}/{kv_heads} for width {dim}"
            ));
        }
        let head_dim = dim / heads;
        // Features that change the math and are not implemented are refused, not ignored.
        let mut unsupported = Vec::new();
        if let Some(k) = md(&format!("{arch}.attention.key_length"))
            && k as usize != head_dim
        {
            unsupported.push(format!(
                "attention.key_length {k} != width / heads {head_dim}"
            ));
        }
        if let Some(t) = metadata
            .get(&format!("{arch}.rope.scaling.type"))
            .and_then(|v| v.as_str())
            && t != "none"
        {
            unsupported.push(format!("rope.scaling.type {t:?}"));
        }
        if tensor("rope_freqs.weight").is_some() {
            unsupported.push("rope_freqs.weight (per-dimension RoPE frequencies)".into());
        }
        if !unsupported.is_empty() {
            return Err(format!("not supported yet: {}", unsupported.join("; ")));
        }
        let layers = need("block_count")?;
        if layers < 1.0 {
            return Err("the GGUF declares no layers (block_count 0)".into());
        }
        if head_dim > 128 || !head_dim.is_multiple_of(16) {
            return Err(format!(
                "head dimension {head_dim}: the attention kernel takes multiples of 16 up to 128"
            ));
        }
        let emb = tensor("token_embd.weight").ok_or("no token_embd.weight")?;
        let token = |k: &str| metadata.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        Ok(LlamaConfig {
            layers: layers as usize,
            dim,
            heads,
            kv_heads,
            head_dim,
            ffn: need("feed_forward_length")? as usize,
            vocab: emb.shape[0] as usize,
            rope_base: md(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0) as f32,
            rope_dim: md(&format!("{arch}.rope.dimension_count"))
                .map(|v| v as usize)
                .unwrap_or(head_dim),
            eps: md(&format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f32,
            bos: token("tokenizer.ggml.bos_token_id"),
            eos: token("tokenizer.ggml.eos_token_id"),
            add_bos: metadata
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            architecture: arch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Storage};
    use serde_json::json;

    fn smollm_like(arch: &str) -> (BTreeMap<String, serde_json::Value>, Vec<TensorEntry>) {
        let mut md = BTreeMap::new();
        md.insert("general.architecture".into(), json!(arch));
        for (k, v) in [
            ("block_count", json!(2)),
            ("embedding_length", json!(64)),
            ("attention.head_count", json!(4)),
            ("attention.head_count_kv", json!(2)),
            ("feed_forward_length", json!(128)),
            ("rope.freq_base", json!(100000.0)),
            ("attention.layer_norm_rms_epsilon", json!(1e-5f32 as f64)),
        ] {
            md.insert(format!("{arch}.{k}"), v);
        }
        md.insert("tokenizer.ggml.bos_token_id".into(), json!(1));
        md.insert("tokenizer.ggml.eos_token_id".into(), json!(2));
        md.insert("tokenizer.ggml.add_bos_token".into(), json!(true));
        let emb = TensorEntry {
            name: "token_embd.weight".into(),
            shape: vec![100, 64],
            dtype: DType::Q8_0,
            storage: Storage::Gguf { offset: 0 },
            bytes: 0,
            scope: String::new(),
        };
        (md, vec![emb])
    }

    #[test]
    fn a_llama_family_config_is_read_once_for_every_side() {
        let (md, tensors) = smollm_like("smollm");
        let c = LlamaConfig::from_metadata(&md, &tensors).unwrap();
        assert_eq!(c.architecture, "smollm");
        assert_eq!((c.layers, c.dim, c.heads, c.kv_heads), (2, 64, 4, 2));
        assert_eq!((c.head_dim, c.ffn, c.vocab, c.rope_dim), (16, 128, 100, 16));
        assert_eq!((c.rope_base, c.eps), (100000.0, 1e-5));
        assert_eq!((c.bos, c.eos, c.add_bos), (Some(1), Some(2), true));
    }

    #[test]
    fn granite_is_refused_with_the_reason() {
        let (md, tensors) = smollm_like("granite");
        let e = LlamaConfig::from_metadata(&md, &tensors).unwrap_err();
        assert_eq!(
            e,
            "architecture \"granite\" is not one m2w runs (llama, mistral, smollm)"
        );
    }

    #[test]
    fn rope_scaling_rope_freqs_and_key_length_are_refused_together() {
        let (mut md, mut tensors) = smollm_like("llama");
        md.insert("llama.rope.scaling.type".into(), json!("linear"));
        md.insert("llama.attention.key_length".into(), json!(32));
        let mut freqs = tensors[0].clone();
        freqs.name = "rope_freqs.weight".into();
        tensors.push(freqs);
        let e = LlamaConfig::from_metadata(&md, &tensors).unwrap_err();
        assert!(e.starts_with("not supported yet: "), "{e}");
        for want in [
            "key_length 32",
            "rope.scaling.type \"linear\"",
            "rope_freqs.weight",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
    }
}
