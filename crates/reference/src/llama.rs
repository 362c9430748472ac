//! GGUF llama-family reference on candle-core: a plain f32 forward pass over weights
//! dequantized by candle, dumping every stage of every layer.
//!
//! Why f32 over dequantized weights (and not candle's quantized matmul, which quantizes
//! activations to Q8 like llama.cpp does): the WebGPU kernels dequantize weights in
//! registers and accumulate in f32, so this is the computation they must match.
//!
//! The architecture is read from the GGUF metadata by the parser the engine uses too
//! ([`m2w_model::llama_config`]: block count, head counts, RoPE base and dimension, RMS
//! epsilon, the family's features), with its one allow-list and its refusals. RoPE is
//! ggml's "normal" mode (adjacent pairs, which the converter permutes llama's Q/K weights
//! for) or its NEOX mode (Gemma, Qwen: dims i and i + d/2). Gemma 3's extras follow
//! llama.cpp: embedding times sqrt(width), per-head RMS norms of q and k, norms of the
//! attention and FFN outputs before their residual adds, GELU-tanh gating, sliding-window
//! layers with their own RoPE base. The LM head is `output.weight`, or the token embedding
//! when the file has none (tied).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{D, DType, Device, Tensor};

use crate::RefError;
use crate::index::{Checkpoint, Index, InputRecord, write_index};
use crate::npy::HostTensor;

fn cerr(e: candle_core::Error) -> RefError {
    RefError::Runtime(format!("candle: {}", m2w_model::gguf::candle_message(&e)))
}

pub use m2w_model::llama_config::{Activation, LlamaConfig};

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    /// q/k/v biases (Qwen 2).
    bias: Option<[Tensor; 3]>,
    /// Per-head RMS norm weights of q and k (Gemma 3, Qwen 3).
    qk_norm: Option<[Tensor; 2]>,
    /// Norms of the attention and FFN outputs (Gemma 3).
    post_norms: Option<[Tensor; 2]>,
    wo: Tensor,
    ffn_norm: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
}

/// The model with f32 weights, ready to run.
pub struct Llama {
    pub config: LlamaConfig,
    embedding: Tensor,
    layers: Vec<Layer>,
    output_norm: Tensor,
    /// [vocab, dim]; the embedding itself when tied.
    lm_head: Tensor,
    /// Llama 3.x's per-pair RoPE frequency factors (`rope_freqs.weight`).
    rope_freqs: Option<Vec<f32>>,
    pub tied_head: bool,
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub tokenizer_model: String,
    /// `tokenizer.ggml.pre`: the byte-level BPE's pre-tokenizer ("smollm", "qwen2"...).
    pub tokenizer_pre: String,
    pub scores: Vec<f32>,
    pub unk: Option<u32>,
    pub add_space_prefix: bool,
}

/// K/V of every layer for the positions seen so far: [kv_heads, T, head_dim].
pub struct KvCache {
    k: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    pub len: usize,
}

/// Every stage's value, in pipeline order.
pub type Stages = Vec<(String, Tensor)>;

fn md_strings(c: &gguf_file::Content, key: &str) -> Vec<String> {
    c.metadata
        .get(key)
        .and_then(|v| v.to_vec().ok())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.to_string().ok().cloned())
                .collect()
        })
        .unwrap_or_default()
}

impl Llama {
    pub fn load(path: &Path) -> Result<Llama, RefError> {
        // Opening through m2w-model first gives the same checks and errors as inspect, and
        // the one parser of the llama-family hyper-parameters (the engine's).
        let model = m2w_model::Model::open(path)?;
        let config = LlamaConfig::from_model(&model)
            .map_err(|e| RefError::Usage(format!("{}: {e}", path.display())))?;
        let layers = config.layers;
        let mut f = std::fs::File::open(path).map_err(|e| RefError::Io(path.to_path_buf(), e))?;
        let content = gguf_file::Content::read(&mut f).map_err(|e| {
            RefError::Usage(format!(
                "{}: {}",
                path.display(),
                m2w_model::gguf::candle_message(&e)
            ))
        })?;
        let tokens = md_strings(&content, "tokenizer.ggml.tokens");
        let dev = Device::Cpu;
        let mut get = |name: &str| -> Result<Tensor, RefError> {
            let q = content.tensor(&mut f, name, &dev).map_err(|e| {
                RefError::Usage(format!(
                    "{}: tensor {name}: {}",
                    path.display(),
                    m2w_model::gguf::candle_message(&e)
                ))
            })?;
            q.dequantize(&dev).map_err(cerr)
        };
        let embedding = get("token_embd.weight")?;
        let mut ls = Vec::with_capacity(layers);
        for l in 0..layers {
            let p = format!("blk.{l}");
            let mut get3 = |names: &[&str]| -> Result<Vec<Tensor>, RefError> {
                names.iter().map(|n| get(&format!("{p}.{n}"))).collect()
            };
            let bias = if config.qkv_bias {
                let v = get3(&["attn_q.bias", "attn_k.bias", "attn_v.bias"])?;
                Some([v[0].clone(), v[1].clone(), v[2].clone()])
            } else {
                None
            };
            let qk_norm = if config.qk_norm {
                let v = get3(&["attn_q_norm.weight", "attn_k_norm.weight"])?;
                Some([v[0].clone(), v[1].clone()])
            } else {
                None
            };
            let post_norms = if config.post_norms {
                let v = get3(&["post_attention_norm.weight", "post_ffw_norm.weight"])?;
                Some([v[0].clone(), v[1].clone()])
            } else {
                None
            };
            ls.push(Layer {
                attn_norm: get(&format!("{p}.attn_norm.weight"))?,
                wq: get(&format!("{p}.attn_q.weight"))?,
                wk: get(&format!("{p}.attn_k.weight"))?,
                wv: get(&format!("{p}.attn_v.weight"))?,
                bias,
                qk_norm,
                post_norms,
                wo: get(&format!("{p}.attn_output.weight"))?,
                ffn_norm: get(&format!("{p}.ffn_norm.weight"))?,
                w_gate: get(&format!("{p}.ffn_gate.weight"))?,
                w_up: get(&format!("{p}.ffn_up.weight"))?,
                w_down: get(&format!("{p}.ffn_down.weight"))?,
            });
        }
        let output_norm = get("output_norm.weight")?;
        let rope_freqs = if config.rope_freqs {
            Some(
                get("rope_freqs.weight")?
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(cerr)?,
            )
        } else {
            None
        };
        let (lm_head, tied_head) = if content.tensor_infos.contains_key("output.weight") {
            (get("output.weight")?, false)
        } else {
            (embedding.clone(), true)
        };
        let merges = md_strings(&content, "tokenizer.ggml.merges");
        let token_types = content
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.to_vec().ok())
            .map(|a| a.iter().filter_map(|x| x.to_i32().ok()).collect())
            .unwrap_or_default();
        let scores = content
            .metadata
            .get("tokenizer.ggml.scores")
            .and_then(|v| v.to_vec().ok())
            .map(|a| a.iter().filter_map(|x| x.to_f32().ok()).collect())
            .unwrap_or_default();
        let tokenizer_model = content
            .metadata
            .get("tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| "gpt2".into());
        let tokenizer_pre = content
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_default();
        let unk = content
            .metadata
            .get("tokenizer.ggml.unknown_token_id")
            .and_then(|v| v.to_u32().ok());
        // SentencePiece's default is a leading space; GGUFs that differ say so.
        let add_space_prefix = content
            .metadata
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(tokenizer_model == "llama");
        Ok(Llama {
            config,
            embedding,
            layers: ls,
            output_norm,
            lm_head,
            rope_freqs,
            tied_head,
            tokens,
            merges,
            token_types,
            tokenizer_model,
            tokenizer_pre,
            scores,
            unk,
            add_space_prefix,
        })
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache {
            k: vec![None; self.config.layers],
            v: vec![None; self.config.layers],
            len: 0,
        }
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (ms + f64::from(self.config.eps))?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(w)
    }

    /// RoPE: pair i of the first `rope_dim` dims of each head is rotated by
    /// pos * base^(-2i/rope_dim) (divided by `rope_freqs[i]` when the file has them, Llama 3.x);
    /// the pair is dims (2i, 2i+1) in ggml's "normal" mode and (i, i + rope_dim/2) in its NEOX
    /// mode. `x`: [T, heads * head_dim].
    fn rope(
        &self,
        x: &Tensor,
        heads: usize,
        start: usize,
        rope_base: f32,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let t = x.dim(0)?;
        let mut v = x.to_vec2::<f32>()?;
        let half = c.rope_dim / 2;
        for (p, row) in v.iter_mut().enumerate() {
            let pos = (start + p) as f32;
            for h in 0..heads {
                let base = h * c.head_dim;
                for i in 0..half {
                    let mut theta = pos * rope_base.powf(-2.0 * i as f32 / c.rope_dim as f32);
                    if let Some(f) = &self.rope_freqs {
                        theta /= f[i];
                    }
                    let (s, co) = theta.sin_cos();
                    let (i0, i1) = if c.rope_neox {
                        (base + i, base + i + half)
                    } else {
                        (base + 2 * i, base + 2 * i + 1)
                    };
                    let (a, b) = (row[i0], row[i1]);
                    row[i0] = a * co - b * s;
                    row[i1] = a * s + b * co;
                }
            }
        }
        Tensor::from_vec(v.concat(), (t, heads * c.head_dim), &Device::Cpu)
    }

    /// One forward pass over `ids` at positions cache.len.., appending to the cache.
    /// Returns the stages (names without a pass prefix) and the logits [T, vocab].
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<(Stages, Tensor), RefError> {
        self.forward_inner(ids, cache).map_err(cerr)
    }

    fn forward_inner(
        &self,
        ids: &[u32],
        cache: &mut KvCache,
    ) -> candle_core::Result<(Stages, Tensor)> {
        let c = &self.config;
        let dev = Device::Cpu;
        let t = ids.len();
        let start = cache.len;
        let mut stages: Stages = Vec::new();
        let idx = Tensor::from_vec(ids.to_vec(), t, &dev)?;
        let mut x = self.embedding.index_select(&idx, 0)?;
        if c.embed_scale != 1.0 {
            x = (x * f64::from(c.embed_scale))?;
        }
        stages.push(("token_embd".into(), x.clone()));
        let group = c.heads / c.kv_heads;
        let scale = f64::from(c.attn_scale);
        for (l, w) in self.layers.iter().enumerate() {
            let p = format!("blk.{l}");
            let h = self.rms_norm(&x, &w.attn_norm)?;
            stages.push((format!("{p}.attn_norm"), h.clone()));
            let mut q = h.matmul(&w.wq.t()?)?;
            let mut k = h.matmul(&w.wk.t()?)?;
            let mut v = h.matmul(&w.wv.t()?)?;
            if let Some([bq, bk, bv]) = &w.bias {
                q = q.broadcast_add(bq)?;
                k = k.broadcast_add(bk)?;
                v = v.broadcast_add(bv)?;
            }
            stages.push((format!("{p}.q"), q.clone()));
            stages.push((format!("{p}.k"), k.clone()));
            stages.push((format!("{p}.v"), v.clone()));
            if let Some([nq, nk]) = &w.qk_norm {
                // Per head: [T, heads * head_dim] as [T * heads, head_dim].
                q = self
                    .rms_norm(&q.reshape((t * c.heads, c.head_dim))?, nq)?
                    .reshape((t, c.heads * c.head_dim))?;
                k = self
                    .rms_norm(&k.reshape((t * c.kv_heads, c.head_dim))?, nk)?
                    .reshape((t, c.kv_heads * c.head_dim))?;
                stages.push((format!("{p}.q_normed"), q.clone()));
                stages.push((format!("{p}.k_normed"), k.clone()));
            }
            let q = self.rope(&q, c.heads, start, c.layer_rope_base[l])?;
            let k = self.rope(&k, c.kv_heads, start, c.layer_rope_base[l])?;
            stages.push((format!("{p}.q_rope"), q.clone()));
            stages.push((format!("{p}.k_rope"), k.clone()));
            // [heads, T, head_dim]
            let q = q
                .reshape((t, c.heads, c.head_dim))?
                .transpose(0, 1)?
                .contiguous()?;
            let k_new = k
                .reshape((t, c.kv_heads, c.head_dim))?
                .transpose(0, 1)?
                .contiguous()?;
            let v_new = v
                .reshape((t, c.kv_heads, c.head_dim))?
                .transpose(0, 1)?
                .contiguous()?;
            let k_all = match &cache.k[l] {
                Some(prev) => Tensor::cat(&[prev, &k_new], 1)?,
                None => k_new,
            };
            let v_all = match &cache.v[l] {
                Some(prev) => Tensor::cat(&[prev, &v_new], 1)?,
                None => v_new,
            };
            cache.k[l] = Some(k_all.clone());
            cache.v[l] = Some(v_all.clone());
            let total = start + t;
            // Grouped-query attention: query head h reads kv head h / group.
            let mut heads_out = Vec::with_capacity(c.heads);
            // Causal, and within the layer's sliding window when it has one: query i sees
            // keys j with pos - window < j <= pos.
            let window = c.layer_window[l];
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| {
                    let pos = start + i;
                    (0..total).map(move |j| {
                        if j > pos || (window > 0 && j + window <= pos) {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (t, total), &dev)?;
            for hh in 0..c.heads {
                let kv = hh / group;
                let qh = q.narrow(0, hh, 1)?.squeeze(0)?;
                let kh = k_all.narrow(0, kv, 1)?.squeeze(0)?;
                let vh = v_all.narrow(0, kv, 1)?.squeeze(0)?;
                let scores = (qh.matmul(&kh.t()?)? * scale)?.broadcast_add(&mask)?;
                let max = scores.max_keepdim(D::Minus1)?;
                let e = scores.broadcast_sub(&max)?.exp()?;
                let probs = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
                heads_out.push(probs.matmul(&vh)?);
            }
            let attn = Tensor::cat(&heads_out, 1)?; // [T, heads * head_dim]
            stages.push((format!("{p}.attn_out"), attn.clone()));
            let mut proj = attn.matmul(&w.wo.t()?)?;
            stages.push((format!("{p}.attn_proj"), proj.clone()));
            if let Some([post_attn, _]) = &w.post_norms {
                proj = self.rms_norm(&proj, post_attn)?;
                stages.push((format!("{p}.attn_post_norm"), proj.clone()));
            }
            x = (x + proj)?;
            stages.push((format!("{p}.attn_residual"), x.clone()));
            let h = self.rms_norm(&x, &w.ffn_norm)?;
            stages.push((format!("{p}.ffn_norm"), h.clone()));
            let gate = h.matmul(&w.w_gate.t()?)?;
            let up = h.matmul(&w.w_up.t()?)?;
            stages.push((format!("{p}.gate"), gate.clone()));
            stages.push((format!("{p}.up"), up.clone()));
            let gated = match c.activation {
                Activation::Silu => gate.silu()?,
                // ggml's gelu: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
                Activation::GeluTanh => gate.gelu()?,
            };
            let act = (gated * up)?;
            stages.push((format!("{p}.ffn_act"), act.clone()));
            let mut down = act.matmul(&w.w_down.t()?)?;
            stages.push((format!("{p}.down"), down.clone()));
            if let Some([_, post_ffw]) = &w.post_norms {
                down = self.rms_norm(&down, post_ffw)?;
                stages.push((format!("{p}.ffn_post_norm"), down.clone()));
            }
            x = (x + down)?;
            stages.push((format!("{p}.ffn_residual"), x.clone()));
        }
        cache.len += t;
        let h = self.rms_norm(&x, &self.output_norm)?;
        stages.push(("output_norm".into(), h.clone()));
        let logits = h.matmul(&self.lm_head.t()?)?;
        stages.push(("logits".into(), logits.clone()));
        Ok((stages, logits))
    }

    /// Index of the largest logit of the last position (first one on ties).
    pub fn argmax_last(logits: &Tensor) -> Result<u32, RefError> {
        let t = logits.dim(0).map_err(cerr)?;
        let row = logits
            .narrow(0, t - 1, 1)
            .and_then(|r| r.flatten_all())
            .and_then(|r| r.to_vec1::<f32>())
            .map_err(cerr)?;
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        Ok(best as u32)
    }

    /// Greedy decoding: prefill the prompt, then one token at a time with the cache, until
    /// the GGUF's end-of-sequence token.
    pub fn greedy(&self, prompt: &[u32], max_new: usize) -> Result<Vec<u32>, RefError> {
        self.greedy_until(prompt, max_new, self.config.eos)
    }

    /// Greedy decoding that stops at `eos` (None: exactly `max_new` tokens).
    pub fn greedy_until(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>, RefError> {
        let mut cache = self.new_cache();
        let (_, logits) = self.forward(prompt, &mut cache)?;
        let mut next = Self::argmax_last(&logits)?;
        let mut out = vec![next];
        while out.len() < max_new && Some(next) != eos {
            let (_, logits) = self.forward(&[next], &mut cache)?;
            next = Self::argmax_last(&logits)?;
            out.push(next);
        }
        Ok(out)
    }
}

fn stage_tensor(t: &Tensor) -> Result<HostTensor, RefError> {
    let shape: Vec<u64> = t.dims().iter().map(|&d| d as u64).collect();
    let v = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(cerr)?;
    Ok(HostTensor::F32(shape, v))
}

/// Writes one pass's stages as a reference folder.
fn write_pass(
    dir: &Path,
    model: &m2w_model::Model,
    ids: &[u32],
    start: usize,
    stages: &Stages,
    notes: BTreeMap<String, serde_json::Value>,
) -> Result<Index, RefError> {
    let mut index = Index::new(
        model,
        "candle-core 0.11 llama forward (f32 over dequantized weights)",
        0,
    );
    index.notes = notes;
    index.notes.insert(
        "positions".into(),
        serde_json::json!([start, start + ids.len()]),
    );
    std::fs::create_dir_all(dir.join("inputs")).map_err(|e| RefError::Io(dir.join("inputs"), e))?;
    let ids_t = HostTensor::I64(
        vec![ids.len() as u64],
        ids.iter().map(|&i| i as i64).collect(),
    );
    let sha = crate::write_npy(&dir.join("inputs/token_ids.npy"), &ids_t)?;
    index.inputs.push(InputRecord {
        name: "token_ids".into(),
        shape: vec![ids.len() as u64],
        dtype: "i64".into(),
        file: "inputs/token_ids.npy".into(),
        sha256: sha,
        how: "tokenized prompt (prefill) or the greedy token (decode)".into(),
    });
    let width = stages.len().to_string().len().max(3);
    for (i, (name, t)) in stages.iter().enumerate() {
        let host = stage_tensor(t)?;
        let file = format!("{:0width$}_{}.npy", i, crate::sanitize(name));
        let sha = crate::write_npy(&dir.join(&file), &host)?;
        let op = name.rsplit('.').next().unwrap_or(name).to_string();
        index.checkpoints.push(Checkpoint {
            index: i,
            node: name.clone(),
            op_type: op,
            output: name.clone(),
            shape: host.shape().to_vec(),
            dtype: "f32".into(),
            file,
            sha256: sha,
            graph_output: name == "logits",
        });
    }
    index.determinism_checked = true;
    write_index(dir, &index)?;
    Ok(index)
}

/// Result of the GGUF reference run, as `generation.json` holds it (field order and names
/// are the file's). Written and read only through [`GenerationJson::write`] and
/// [`GenerationJson::read`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerationJson {
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    pub generated_text: String,
    pub prefill_checkpoints: usize,
    pub decode_checkpoints: usize,
}

/// The reference run's result is its `generation.json`.
pub type LlamaRun = GenerationJson;

impl GenerationJson {
    /// The file name inside a GGUF reference folder.
    pub const FILE: &'static str = "generation.json";

    /// Writes `dir/generation.json` (pretty JSON, final newline).
    pub fn write(&self, dir: &Path) -> Result<(), RefError> {
        let p = dir.join(Self::FILE);
        let text = serde_json::to_string_pretty(self).expect("serialises") + "\n";
        std::fs::write(&p, text).map_err(|e| RefError::Io(p, e))
    }

    /// Reads `dir/generation.json`; the error names the file.
    pub fn read(dir: &Path) -> Result<GenerationJson, RefError> {
        let p = dir.join(Self::FILE);
        let bytes = std::fs::read(&p).map_err(|e| RefError::Io(p.clone(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| RefError::Usage(format!("{}: {e}", p.display())))
    }
}

/// Conversations a chat template is rendered on: one turn, a system prompt, several turns,
/// content as parts, whitespace the templates trim.
pub fn chat_conversations() -> Vec<Vec<serde_json::Value>> {
    use serde_json::json;
    vec![
        vec![json!({"role": "user", "content": "Hi"})],
        vec![json!({"role": "user", "content": "  What is the capital of France?  \n"})],
        vec![
            json!({"role": "system", "content": "You are terse."}),
            json!({"role": "user", "content": "Name a colour."}),
        ],
        vec![
            json!({"role": "user", "content": "One"}),
            json!({"role": "assistant", "content": "Two"}),
            json!({"role": "user", "content": "Three"}),
        ],
        vec![
            json!({"role": "system", "content": "Answer in French."}),
            json!({"role": "user", "content": "Hello"}),
            json!({"role": "assistant", "content": "Bonjour"}),
            json!({"role": "user", "content": "Thanks\n"}),
        ],
    ]
}

/// Prefill + one decode step dumped under `out/prefill` and `out/decode`, plus a greedy
/// continuation of `max_new` tokens in `out/generation.json`. Each pass runs twice and must
/// give bit-identical stages.
pub fn reference(
    model_path: &Path,
    out: &Path,
    prompt: &str,
    max_new: usize,
) -> Result<LlamaRun, RefError> {
    let llama = Llama::load(model_path)?;
    let tok = crate::tokenizer::GgufTokenizer::from_llama(&llama)?;
    let mut prompt_ids = Vec::new();
    if llama.config.add_bos
        && let Some(b) = llama.config.bos
    {
        prompt_ids.push(b);
    }
    prompt_ids.extend(tok.encode(prompt)?);
    let model = m2w_model::Model::open(model_path)?;

    let run_passes = || -> Result<(Stages, Stages, u32), RefError> {
        let mut cache = llama.new_cache();
        let (pre, logits) = llama.forward(&prompt_ids, &mut cache)?;
        let next = Llama::argmax_last(&logits)?;
        let (dec, _) = llama.forward(&[next], &mut cache)?;
        Ok((pre, dec, next))
    };
    let (pre, dec, next) = run_passes()?;
    let (pre2, dec2, _) = run_passes()?;
    for (a, b) in pre
        .iter()
        .chain(dec.iter())
        .zip(pre2.iter().chain(dec2.iter()))
    {
        if !stage_tensor(&a.1)?.same_bits(&stage_tensor(&b.1)?) {
            return Err(RefError::NotDeterministic(vec![a.0.clone()]));
        }
    }
    let generated_ids = llama.greedy(&prompt_ids, max_new)?;
    let generated_text = tok.decode(&generated_ids)?;
    let run = LlamaRun {
        prompt: prompt.into(),
        prompt_ids: prompt_ids.clone(),
        generated_ids: generated_ids.clone(),
        generated_text,
        prefill_checkpoints: pre.len(),
        decode_checkpoints: dec.len(),
    };
    crate::write_dir(out, |dir| {
        let mut notes = BTreeMap::new();
        notes.insert("prompt".into(), serde_json::json!(prompt));
        notes.insert(
            "config".into(),
            serde_json::to_value(&llama.config).unwrap_or_default(),
        );
        write_pass(
            &dir.join("prefill"),
            &model,
            &prompt_ids,
            0,
            &pre,
            notes.clone(),
        )?;
        write_pass(
            &dir.join("decode"),
            &model,
            &[next],
            prompt_ids.len(),
            &dec,
            notes,
        )?;
        let p = dir.join("tokenizer-cases.json");
        let cases = crate::tokenizer::cases_json(&tok, 300)?;
        let text = serde_json::to_string_pretty(&cases).expect("serialises") + "\n";
        std::fs::write(&p, text).map_err(|e| RefError::Io(p, e))?;
        // The chat template (the model's, or the family's that m2w keeps) rendered by
        // minijinja: the oracle of the package's TypeScript Jinja.
        if let Some(template) = m2w_model::chat::ChatTemplate::of_model(&model) {
            let text_of = |id: Option<u32>| {
                id.and_then(|i| llama.tokens.get(i as usize))
                    .cloned()
                    .unwrap_or_default()
            };
            let (bos, eos) = (text_of(llama.config.bos), text_of(llama.config.eos));
            let mut cases = Vec::new();
            for messages in chat_conversations() {
                for generation_prompt in [true, false] {
                    let text = template
                        .render(&messages, generation_prompt, &bos, &eos)
                        .map_err(RefError::Usage)?;
                    cases.push(serde_json::json!({
                        "messages": messages, "add_generation_prompt": generation_prompt,
                        "bos_token": bos, "eos_token": eos, "text": text,
                    }));
                }
            }
            let doc = serde_json::json!({"origin": template.origin, "cases": cases});
            let p = dir.join("chat-cases.json");
            let text = serde_json::to_string_pretty(&doc).expect("serialises") + "\n";
            std::fs::write(&p, text).map_err(|e| RefError::Io(p, e))?;
        }
        run.write(dir)
    })?;
    Ok(run)
}
