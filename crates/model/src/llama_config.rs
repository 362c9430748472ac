//! The hyper-parameters of a GGUF decoder-only transformer, read once from its metadata
//! for every side that needs them (the WebGPU engine's plans, the candle reference, the
//! package generator).
//!
//! One builder serves every family: a family is data ([`Family`]: RoPE pairing, the FFN
//! activation, embedding scale, sliding-window pattern), and the features a file carries
//! are read from its tensors (QK-norm, post-attention / post-FFN norms, q/k/v biases).
//! Llama 3.x's per-dimension RoPE frequencies come as the `rope_freqs.weight` tensor. Anything
//! that changes the math and is not implemented (granite's multipliers, RoPE scaling types,
//! logit soft-capping) is refused here with one error naming every such feature, never
//! ignored.

use std::collections::BTreeMap;

use crate::{Model, TensorEntry};

/// The FFN's gated activation: act = f(gate) * up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (ggml's `gelu`).
    GeluTanh,
}

/// What a family does differently from llama, as data.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub architecture: &'static str,
    /// ggml's NEOX RoPE (dims i and i + rope_dim/2 turn together; the converter leaves Q/K
    /// unpermuted) instead of adjacent pairs.
    pub rope_neox: bool,
    pub activation: Activation,
    /// The embedding is multiplied by sqrt(width) (Gemma).
    pub embed_scale: bool,
    /// Every n-th layer attends globally, the others within `attention.sliding_window`
    /// keys with their own RoPE base (Gemma 3: n = 6, base 10000, as llama.cpp sets them;
    /// the GGUF does not store either).
    pub sliding_pattern: Option<(usize, f32)>,
}

const fn family(architecture: &'static str, rope_neox: bool) -> Family {
    Family {
        architecture,
        rope_neox,
        activation: Activation::Silu,
        embed_scale: false,
        sliding_pattern: None,
    }
}

/// The families m2w runs.
pub const FAMILIES: [Family; 6] = [
    family("llama", false),
    family("mistral", false),
    family("smollm", false),
    family("qwen2", true),
    family("qwen3", true),
    Family {
        architecture: "gemma3",
        rope_neox: true,
        activation: Activation::GeluTanh,
        embed_scale: true,
        sliding_pattern: Some((6, 10000.0)),
    },
];

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    /// `general.architecture`: one of [`FAMILIES`].
    pub architecture: String,
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Width of one head (`attention.key_length`, else width / heads).
    pub head_dim: usize,
    pub ffn: usize,
    /// Rows of `token_embd.weight`.
    pub vocab: usize,
    pub rope_base: f32,
    pub rope_dim: usize,
    pub rope_neox: bool,
    /// `rope_freqs.weight` ([rope_dim / 2] f32, Llama 3.x): pair i turns by
    /// pos * base^(-2i/rope_dim) / rope_freqs[i].
    pub rope_freqs: bool,
    /// RMS norm epsilon (GGUF stores it as f32).
    pub eps: f32,
    pub activation: Activation,
    /// Multiplier of the embedding rows (1 except Gemma: sqrt(width)).
    pub embed_scale: f32,
    /// Softmax scale of the attention scores.
    pub attn_scale: f32,
    /// RMS norms of q and k per head before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// RMS norms of the attention and FFN outputs before their residual adds
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// q/k/v projection biases (`attn_q.bias`...).
    pub qkv_bias: bool,
    /// Per layer: the keys a query sees (0 = every earlier position) and the RoPE base.
    pub layer_window: Vec<usize>,
    pub layer_rope_base: Vec<f32>,
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
        let Some(fam) = FAMILIES.iter().find(|f| f.architecture == arch) else {
            let names: Vec<&str> = FAMILIES.iter().map(|f| f.architecture).collect();
            return Err(format!(
                "architecture {arch:?} is not one m2w runs ({})",
                names.join(", ")
            ));
        };
        let need = |k: &str| {
            md(&format!("{arch}.{k}")).ok_or_else(|| format!("GGUF metadata lacks {arch}.{k}"))
        };
        let dim = need("embedding_length")? as usize;
        let heads = need("attention.head_count")? as usize;
        let kv_heads = md(&format!("{arch}.attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || !dim.is_multiple_of(32)
        {
            return Err(format!(
                "inconsistent heads {heads}/{kv_heads} for width {dim}"
            ));
        }
        let key_length = md(&format!("{arch}.attention.key_length")).map(|v| v as usize);
        let head_dim = match key_length {
            Some(k) => k,
            None if dim.is_multiple_of(heads) => dim / heads,
            None => return Err(format!("width {dim} is not a multiple of {heads} heads")),
        };
        // Features that change the math and are not implemented are refused, not ignored.
        let mut unsupported = Vec::new();
        if let Some(v) = md(&format!("{arch}.attention.value_length"))
            && v as usize != head_dim
        {
            unsupported.push(format!(
                "attention.value_length {v} != key_length {head_dim}"
            ));
        }
        if let Some(t) = metadata
            .get(&format!("{arch}.rope.scaling.type"))
            .and_then(|v| v.as_str())
            && t != "none"
        {
            unsupported.push(format!("rope.scaling.type {t:?}"));
        }
        for k in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if md(&format!("{arch}.{k}")).is_some_and(|v| v != 0.0) {
                unsupported.push(format!("{k} (logit soft-capping)"));
            }
        }
        let layers = need("block_count")?;
        if layers < 1.0 {
            return Err("the GGUF declares no layers (block_count 0)".into());
        }
        let layers = layers as usize;
        if head_dim > 256 || !head_dim.is_multiple_of(16) {
            unsupported.push(format!(
                "head dimension {head_dim} (the attention kernel takes multiples of 16 up to 256)"
            ));
        }
        // Per-layer features are read from the tensors; a file has them in every layer or
        // in none.
        let every =
            |suffix: &str| (0..layers).all(|l| tensor(&format!("blk.{l}.{suffix}")).is_some());
        let some =
            |suffix: &str| (0..layers).any(|l| tensor(&format!("blk.{l}.{suffix}")).is_some());
        let mut feature = |suffixes: &[&str], what: &str| -> bool {
            let all = suffixes.iter().all(|s| every(s));
            if !all && suffixes.iter().any(|s| some(s)) {
                unsupported.push(format!("{what} in some layers only"));
            }
            all
        };
        let qk_norm = feature(&["attn_q_norm.weight", "attn_k_norm.weight"], "QK-norm");
        let post_norms = feature(
            &["post_attention_norm.weight", "post_ffw_norm.weight"],
            "post-attention and post-FFN norms",
        );
        let qkv_bias = feature(
            &["attn_q.bias", "attn_k.bias", "attn_v.bias"],
            "q/k/v biases",
        );
        if some("attn_output.bias") || some("ffn_up.bias") {
            unsupported.push("output or FFN projection biases".into());
        }
        let rope_dim = md(&format!("{arch}.rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(head_dim);
        let rope_freqs = match tensor("rope_freqs.weight") {
            None => false,
            Some(t) if t.shape.iter().product::<u64>() as usize == rope_dim / 2 => true,
            Some(t) => {
                unsupported.push(format!(
                    "rope_freqs.weight of shape {:?} (expected {} values: one per RoPE pair)",
                    t.shape,
                    rope_dim / 2
                ));
                false
            }
        };
        if !unsupported.is_empty() {
            return Err(format!("not supported yet: {}", unsupported.join("; ")));
        }
        let emb = tensor("token_embd.weight").ok_or("no token_embd.weight")?;
        let token = |k: &str| metadata.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        let rope_base = md(&format!("{arch}.rope.freq_base")).unwrap_or(10000.0) as f32;
        let window = md(&format!("{arch}.attention.sliding_window")).map(|v| v as usize);
        let (layer_window, layer_rope_base) = match (fam.sliding_pattern, window) {
            (Some((every_nth, local_base)), Some(w)) if w > 0 => (0..layers)
                .map(|l| {
                    if (l + 1) % every_nth == 0 {
                        (0, rope_base)
                    } else {
                        (w, local_base)
                    }
                })
                .unzip(),
            _ => (vec![0; layers], vec![rope_base; layers]),
        };
        // Gemma 3 scales queries by 1/sqrt(query_pre_attn_scalar), which the GGUF does not
        // store: llama.cpp takes width / heads for the 62-layer (27B) model and the head
        // width for the others; so does m2w.
        let attn_scale = if arch == "gemma3" && layers == 62 {
            1.0 / ((dim / heads) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        Ok(LlamaConfig {
            layers,
            dim,
            heads,
            kv_heads,
            head_dim,
            ffn: need("feed_forward_length")? as usize,
            vocab: emb.shape[0] as usize,
            rope_base,
            rope_dim,
            rope_neox: fam.rope_neox,
            rope_freqs,
            eps: md(&format!("{arch}.attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f32,
            activation: fam.activation,
            embed_scale: if fam.embed_scale {
                (dim as f32).sqrt()
            } else {
                1.0
            },
            attn_scale,
            qk_norm,
            post_norms,
            qkv_bias,
            layer_window,
            layer_rope_base,
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
            quantization: None,
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
            "architecture \"granite\" is not one m2w runs (llama, mistral, smollm, qwen2, qwen3, gemma3)"
        );
    }

    #[test]
    fn rope_scaling_misshapen_rope_freqs_and_key_length_are_refused_together() {
        let (mut md, mut tensors) = smollm_like("llama");
        md.insert("llama.rope.scaling.type".into(), json!("linear"));
        md.insert("llama.attention.key_length".into(), json!(40));
        let mut freqs = tensors[0].clone();
        freqs.name = "rope_freqs.weight".into();
        tensors.push(freqs);
        let e = LlamaConfig::from_metadata(&md, &tensors).unwrap_err();
        assert!(e.starts_with("not supported yet: "), "{e}");
        for want in [
            "head dimension 40",
            "rope.scaling.type \"linear\"",
            "rope_freqs.weight of shape",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
    }

    #[test]
    fn gemma3_features_come_from_the_family_and_the_tensors() {
        let (mut md, mut tensors) = smollm_like("gemma3");
        md.insert("gemma3.attention.key_length".into(), json!(32));
        md.insert("gemma3.attention.sliding_window".into(), json!(512));
        md.insert("gemma3.block_count".into(), json!(6));
        for l in 0..6 {
            for n in [
                "attn_q_norm",
                "attn_k_norm",
                "post_attention_norm",
                "post_ffw_norm",
            ] {
                let mut t = tensors[0].clone();
                t.name = format!("blk.{l}.{n}.weight");
                tensors.push(t);
            }
        }
        let c = LlamaConfig::from_metadata(&md, &tensors).unwrap();
        assert_eq!(c.head_dim, 32, "key_length, not width / heads");
        assert!(c.rope_neox && c.qk_norm && c.post_norms && !c.qkv_bias);
        assert_eq!(c.activation, Activation::GeluTanh);
        assert_eq!(c.embed_scale, 8.0);
        assert_eq!(c.attn_scale, 1.0 / 32f32.sqrt());
        // Every sixth layer global with the file's RoPE base, the others windowed.
        assert_eq!(c.layer_window, vec![512, 512, 512, 512, 512, 0]);
        assert_eq!(c.layer_rope_base[0], 10000.0);
        assert_eq!(c.layer_rope_base[5], 100000.0);
        // A QK-norm in some layers only is refused, never half-applied.
        tensors.retain(|t| t.name != "blk.3.attn_k_norm.weight");
        let e = LlamaConfig::from_metadata(&md, &tensors).unwrap_err();
        assert!(e.contains("QK-norm in some layers only"), "{e}");
    }
}
