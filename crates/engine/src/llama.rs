//! GGUF llama-family decoders as plans: built from the GGUF metadata (no graph), with the
//! quantized weights kept packed on the GPU (Q8_0 / Q4_0 / Q4_1 blocks dequantized in
//! registers by the matmul and embedding kernels), a KV cache per layer, and the tied
//! embedding used as the LM head without a second copy.
//!
//! Stage tensors carry the names the candle reference writes (`blk.3.q_rope`, `logits`...)
//! so every stage can be compared with it. One plan runs T tokens at positions start..;
//! the decode plan (T = 1) is reused for every step by rewriting the uniforms that hold the
//! position ([`Decoder::set_position`]).

use std::collections::HashMap;

use m2w_kernels::{Kernel, params};
use m2w_model::{DType, Model, TensorEntry};

use crate::gpu::{Gpu, Runner};
use crate::plan::{Binding, Dispatch, Plan, TensorDesc, groups_1d};
use crate::tensor::{DT, HostTensor};

/// The hyper-parameters, parsed once for every side by [`m2w_model::llama_config`].
pub type Config = m2w_model::llama_config::LlamaConfig;

/// The model's configuration, or why m2w does not run it.
pub fn config(model: &Model) -> Result<Config, String> {
    Config::from_model(model)
}

/// A weight as a constant: packed blocks as 32-bit words (stored as i32 bit patterns), or f32.
fn weight(model: &Model, t: &TensorEntry) -> Result<(HostTensor, &'static str), String> {
    let raw = || {
        model
            .read_raw(t)
            .map(|r| r.bytes)
            .map_err(|e| e.to_string())
    };
    let words = |bytes: Vec<u8>| -> HostTensor {
        let v: Vec<i64> = bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
            .collect();
        HostTensor::i64(vec![v.len()], v)
    };
    Ok(match t.dtype {
        DType::Q8_0 => (words(m2w_extract::pack_q8_0(&raw()?)), "q8_0"),
        DType::Q4_1 => (words(m2w_extract::pack_q4_1(&raw()?)), "q4_1"),
        DType::Q4_0 => (words(m2w_extract::pack_q4_0(&raw()?)), "q4_0"),
        DType::F32 | DType::F16 | DType::BF16 => (
            HostTensor::f32(
                t.shape.iter().map(|&d| d as usize).collect(),
                model.read_f32(t).map_err(|e| e.to_string())?,
            ),
            "f32",
        ),
        other => {
            return Err(format!(
                "{}: {other} weights are not supported yet (q8_0, q4_0, q4_1, f32, f16 are)",
                t.name
            ));
        }
    })
}

/// The largest top-k the plans select on the GPU (larger k reads the whole logits row).
pub const MAX_TOP_K: usize = 64;

/// Token counts up to which the quantized matmuls run as GEMV (a workgroup per output).
pub const GEMV_MAX_TOKENS: usize = 4;

struct Builder {
    plan: Plan,
    gemv_max_tokens: usize,
    kinds: HashMap<String, &'static str>,
}

/// The kernels that read projection weights of block type `kind`.
struct QuantKernels {
    matmul: Kernel,
    gemv: Kernel,
    gemv_qkv: Kernel,
    gemv_swiglu: Kernel,
}

fn quant_kernels(kind: &str) -> QuantKernels {
    let k = |matmul, gemv, gemv_qkv, gemv_swiglu| QuantKernels {
        matmul,
        gemv,
        gemv_qkv,
        gemv_swiglu,
    };
    match kind {
        "q8_0" => k(
            Kernel::MatmulQ80F32,
            Kernel::GemvQ80F32,
            Kernel::GemvQkvQ80F32,
            Kernel::GemvSwigluQ80F32,
        ),
        "q4_1" => k(
            Kernel::MatmulQ41F32,
            Kernel::GemvQ41F32,
            Kernel::GemvQkvQ41F32,
            Kernel::GemvSwigluQ41F32,
        ),
        "q4_0" => k(
            Kernel::MatmulQ40F32,
            Kernel::GemvQ40F32,
            Kernel::GemvQkvQ40F32,
            Kernel::GemvSwigluQ40F32,
        ),
        // build_with refuses projection weights of any other kind up front.
        other => unreachable!("no matmul kernels read {other} weights"),
    }
}

/// The uniform word that holds field `field` of `kernel`'s Params.
fn param_word(kernel: Kernel, field: &str) -> usize {
    kernel
        .params_layout()
        .iter()
        .find(|f| f.name == field)
        .map(|f| f.offset as usize / 4)
        .unwrap_or_else(|| panic!("{kernel} has no uniform field {field}"))
}

impl Builder {
    fn tensor(&mut self, name: &str, shape: Vec<usize>, dt: DT) {
        self.plan.tensors.insert(
            name.into(),
            TensorDesc {
                shape,
                dt,
                base: name.into(),
            },
        );
    }

    fn dispatch(
        &mut self,
        node: &str,
        op: &str,
        kernel: Kernel,
        bindings: Vec<&str>,
        params: Vec<u32>,
        workgroups: [u32; 3],
    ) {
        debug_assert_eq!(params.len(), kernel.params_words(), "{kernel}");
        self.plan.dispatches.push(Dispatch {
            node: node.into(),
            op_type: op.into(),
            kernel,
            bindings: bindings
                .into_iter()
                .map(|b| {
                    if b.is_empty() {
                        Binding::Dummy
                    } else {
                        Binding::Tensor(b.into())
                    }
                })
                .collect(),
            params,
            workgroups,
        });
    }

    /// out = RMSNorm(x) * w, a workgroup per row.
    fn rmsnorm(&mut self, out: &str, x: &str, w: &str, rows: usize, len: usize, eps: f32) {
        self.tensor(out, vec![rows, len], DT::F32);
        self.dispatch(
            out,
            "RMSNorm",
            Kernel::RmsnormRowsF32,
            vec![x, "", w, "", out],
            params::RmsnormRows {
                rows: rows as u32,
                len: len as u32,
                eps,
                add: 0,
            }
            .words(),
            groups_1d(rows, 1),
        );
        // The unused `sum` output is writable: a private word, not the shared read-only
        // dummy (one buffer may not be read-only and writable in the same dispatch).
        let d = self.plan.dispatches.last_mut().expect("just pushed");
        d.bindings[3] = Binding::Scratch(1);
    }

    /// sum = a + b (the residual stream) and out = RMSNorm(sum) * w in one dispatch.
    #[allow(clippy::too_many_arguments)]
    fn add_rmsnorm(
        &mut self,
        sum: &str,
        out: &str,
        a: &str,
        b: &str,
        w: &str,
        rows: usize,
        len: usize,
        eps: f32,
    ) {
        self.tensor(sum, vec![rows, len], DT::F32);
        self.tensor(out, vec![rows, len], DT::F32);
        self.dispatch(
            out,
            "Add+RMSNorm",
            Kernel::RmsnormRowsF32,
            vec![a, b, w, sum, out],
            params::RmsnormRows {
                rows: rows as u32,
                len: len as u32,
                eps,
                add: 1,
            }
            .words(),
            groups_1d(rows, 1),
        );
    }

    /// The GEMV kind shared by `weights` when a fused few-token kernel can take them all.
    fn fused_kind(&self, t: usize, weights: &[&str]) -> Option<&'static str> {
        let kind = self.kinds[weights[0]];
        (t <= self.gemv_max_tokens
            && kind != "f32"
            && weights.iter().all(|w| self.kinds[*w] == kind))
        .then_some(kind)
    }

    /// q, k, v = x Wq^T, x Wk^T, x Wv^T: one dispatch for few tokens, else three matmuls.
    #[allow(clippy::too_many_arguments)]
    fn qkv(
        &mut self,
        out: [&str; 3],
        x: &str,
        w: [&str; 3],
        t: usize,
        nq: usize,
        nkv: usize,
        k: usize,
    ) {
        let Some(kind) = self.fused_kind(t, &w) else {
            self.matmul(out[0], x, w[0], t, nq, k);
            self.matmul(out[1], x, w[1], t, nkv, k);
            self.matmul(out[2], x, w[2], t, nkv, k);
            return;
        };
        self.tensor(out[0], vec![t, nq], DT::F32);
        self.tensor(out[1], vec![t, nkv], DT::F32);
        self.tensor(out[2], vec![t, nkv], DT::F32);
        self.dispatch(
            out[0],
            "MatMul q/k/v",
            quant_kernels(kind).gemv_qkv,
            vec![x, w[0], w[1], w[2], out[0], out[1], out[2]],
            params::GemvQkvQ {
                t: t as u32,
                nq: nq as u32,
                nkv: nkv as u32,
                k: k as u32,
            }
            .words(),
            groups_1d(t * (nq + 2 * nkv), 1),
        );
    }

    /// gate, up = x Wg^T, x Wu^T and act = silu(gate) * up: one dispatch for few tokens.
    #[allow(clippy::too_many_arguments)]
    fn swiglu(&mut self, out: [&str; 3], x: &str, w: [&str; 2], t: usize, n: usize, k: usize) {
        let Some(kind) = self.fused_kind(t, &w) else {
            self.matmul(out[0], x, w[0], t, n, k);
            self.matmul(out[1], x, w[1], t, n, k);
            self.ew(out[2], Kernel::EwSiluMulF32, out[0], out[1], vec![t, n]);
            return;
        };
        for o in out {
            self.tensor(o, vec![t, n], DT::F32);
        }
        self.dispatch(
            out[2],
            "MatMul gate/up + SwiGLU",
            quant_kernels(kind).gemv_swiglu,
            vec![x, w[0], w[1], out[0], out[1], out[2]],
            params::GemvSwigluQ {
                t: t as u32,
                n: n as u32,
                k: k as u32,
                pad: 0,
            }
            .words(),
            groups_1d(t * n, 1),
        );
    }

    fn matmul(&mut self, out: &str, x: &str, w: &str, t: usize, n: usize, k: usize) {
        self.tensor(out, vec![t, n], DT::F32);
        let kind = self.kinds[w];
        // A few tokens (decode): one workgroup per output, the row's blocks spread over its
        // threads; more tokens: one thread per output.
        let (pt, pn, pk) = (t as u32, n as u32, k as u32);
        let (kernel, params, groups) = if t <= self.gemv_max_tokens && kind != "f32" {
            let p = params::GemvQ {
                t: pt,
                n: pn,
                k: pk,
                pad: 0,
            };
            (quant_kernels(kind).gemv, p.words(), groups_1d(t * n, 1))
        } else {
            let p = params::Qmatmul {
                t: pt,
                n: pn,
                k: pk,
                pad: 0,
            };
            (quant_kernels(kind).matmul, p.words(), groups_1d(t * n, 64))
        };
        self.dispatch(out, "MatMul", kernel, vec![x, w, out], params, groups);
    }

    fn ew(&mut self, out: &str, kernel: Kernel, a: &str, b: &str, shape: Vec<usize>) {
        let n: usize = shape.iter().product();
        self.tensor(out, shape.clone(), DT::F32);
        // Dims and contiguous strides as array<vec4<u32>, 2>; a and b have the same shape.
        let mut dims = [[0u32; 4]; 2];
        let mut strides = [[0u32; 4]; 2];
        let mut acc = 1;
        for d in (0..shape.len()).rev() {
            dims[d / 4][d % 4] = shape[d] as u32;
            strides[d / 4][d % 4] = acc as u32;
            acc *= shape[d];
        }
        let p = params::Elementwise {
            n: n as u32,
            rank: shape.len() as u32,
            p0: 0.0,
            p1: 0.0,
            shape: dims,
            a_strides: strides,
            b_strides: strides,
            c_strides: [[0; 4]; 2],
        };
        self.dispatch(
            out,
            "Elementwise",
            kernel,
            vec![a, b, "", out],
            p.words(),
            groups_1d(n, 256),
        );
    }
}

/// The plan for `t` tokens at positions `start..start + t`, with caches of `ctx` positions.
pub fn build(model: &Model, t: usize, start: usize, ctx: usize) -> Result<(Plan, Config), String> {
    build_with(model, t, start, ctx, GEMV_MAX_TOKENS)
}

/// [`build`] with the GEMV kernels (a workgroup per output, fused q/k/v and gate/up) used up
/// to `gemv_max_tokens` tokens: 0 keeps the thread-per-output matmuls, which CPU-emulated
/// adapters (SwiftShader, lavapipe) run several times faster.
pub fn build_with(
    model: &Model,
    t: usize,
    start: usize,
    ctx: usize,
    gemv_max_tokens: usize,
) -> Result<(Plan, Config), String> {
    let c = config(model)?;
    if start + t > ctx {
        return Err(format!(
            "positions {start}..{} exceed the cache of {ctx}",
            start + t
        ));
    }
    let mut b = Builder {
        plan: Plan {
            tensors: Default::default(),
            buffers: vec![],
            constants: Default::default(),
            inputs: vec![],
            outputs: vec![],
            dispatches: vec![],
        },
        kinds: HashMap::new(),
        gemv_max_tokens,
    };
    for e in &model.tensors {
        let (h, kind) = weight(model, e)?;
        b.plan.tensors.insert(
            e.name.clone(),
            TensorDesc {
                shape: h.shape.clone(),
                dt: h.dt(),
                base: e.name.clone(),
            },
        );
        b.plan.constants.insert(e.name.clone(), h);
        b.kinds.insert(e.name.clone(), kind);
    }
    if b.kinds.get("token_embd.weight") != Some(&"q8_0") {
        return Err("the embedding lookup kernel reads q8_0 token embeddings only (so far)".into());
    }
    // The matmul kernels read packed blocks: a float projection weight has no kernel yet.
    // Every such tensor is named in one error, before any GPU work.
    let mut missing = Vec::new();
    let head = if b.kinds.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let mut projections = vec![head.to_string()];
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
            projections.push(format!("blk.{l}.{w}.weight"));
        }
    }
    for w in &projections {
        match b.kinds.get(w.as_str()) {
            None => missing.push(format!("{w}: absent")),
            Some(&"f32") => missing.push(format!(
                "{w}: stored as float (the matmul kernels read q8_0, q4_0 or q4_1 blocks)"
            )),
            Some(_) => {}
        }
    }
    for l in 0..c.layers {
        for w in ["attn_norm", "ffn_norm"] {
            if !b.kinds.contains_key(format!("blk.{l}.{w}.weight").as_str()) {
                missing.push(format!("blk.{l}.{w}.weight: absent"));
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "{} weight(s) cannot be used: {}",
            missing.len(),
            missing.join("; ")
        ));
    }
    let (d, hd, kvd) = (c.dim, c.head_dim, c.kv_heads * c.head_dim);
    b.tensor("token_ids", vec![t], DT::I32);
    b.plan.inputs.push("token_ids".into());
    b.tensor("token_embd", vec![t, d], DT::F32);
    b.dispatch(
        "token_embd",
        "Embedding",
        Kernel::EmbedQ80,
        vec!["token_ids", "token_embd.weight", "token_embd"],
        params::EmbedQ80 {
            t: t as u32,
            d: d as u32,
            v: c.vocab as u32,
            pad: 0,
        }
        .words(),
        groups_1d(t * d, 256),
    );
    // The residual stream and its normalised copy: each layer's closing residual add is
    // fused with the next norm (the next layer's attn_norm, or output_norm).
    let mut x = "token_embd".to_string();
    b.rmsnorm("blk.0.attn_norm", &x, "blk.0.attn_norm.weight", t, d, c.eps);
    for l in 0..c.layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        let w = |s: &str| format!("blk.{l}.{s}.weight");
        b.qkv(
            [&p("q"), &p("k"), &p("v")],
            &p("attn_norm"),
            [&w("attn_q"), &w("attn_k"), &w("attn_v")],
            t,
            c.heads * hd,
            kvd,
            d,
        );
        // RoPE on q and k, and this step's keys and values appended to the caches
        // [kv_heads, ctx, head_dim]: one dispatch.
        b.tensor(&p("q_rope"), vec![t, c.heads * hd], DT::F32);
        b.tensor(&p("k_rope"), vec![t, kvd], DT::F32);
        b.tensor(&p("k_cache"), vec![c.kv_heads, ctx, hd], DT::F32);
        b.tensor(&p("v_cache"), vec![c.kv_heads, ctx, hd], DT::F32);
        b.dispatch(
            &p("q_rope"),
            "RoPE",
            Kernel::RopeQkvCacheF32,
            vec![
                &p("q"),
                &p("k"),
                &p("v"),
                &p("q_rope"),
                &p("k_rope"),
                &p("k_cache"),
                &p("v_cache"),
            ],
            params::RopeQkvCache {
                t: t as u32,
                heads: c.heads as u32,
                kv_heads: c.kv_heads as u32,
                head_dim: hd as u32,
                rope_dim: c.rope_dim as u32,
                start: start as u32,
                ctx: ctx as u32,
                base: c.rope_base,
            }
            .words(),
            groups_1d(t * (c.heads + c.kv_heads) * hd / 2, 64),
        );
        b.tensor(&p("attn_out"), vec![t, c.heads * hd], DT::F32);
        let scale = 1.0 / (hd as f32).sqrt();
        b.dispatch(
            &p("attn_out"),
            "Attention",
            Kernel::AttentionGqaTiledF32,
            vec![&p("q_rope"), &p("k_cache"), &p("v_cache"), &p("attn_out")],
            params::AttentionTiled {
                t: t as u32,
                heads: c.heads as u32,
                kv_heads: c.kv_heads as u32,
                head_dim: hd as u32,
                start: start as u32,
                ctx: ctx as u32,
                scale,
                pad: 0,
            }
            .words(),
            groups_1d(t * c.heads, 1),
        );
        b.matmul(
            &p("attn_proj"),
            &p("attn_out"),
            &w("attn_output"),
            t,
            d,
            c.heads * hd,
        );
        b.add_rmsnorm(
            &p("attn_residual"),
            &p("ffn_norm"),
            &x,
            &p("attn_proj"),
            &w("ffn_norm"),
            t,
            d,
            c.eps,
        );
        b.swiglu(
            [&p("gate"), &p("up"), &p("ffn_act")],
            &p("ffn_norm"),
            [&w("ffn_gate"), &w("ffn_up")],
            t,
            c.ffn,
            d,
        );
        b.matmul(&p("down"), &p("ffn_act"), &w("ffn_down"), t, d, c.ffn);
        let (next_norm, next_weight) = if l + 1 < c.layers {
            (
                format!("blk.{}.attn_norm", l + 1),
                format!("blk.{}.attn_norm.weight", l + 1),
            )
        } else {
            ("output_norm".to_string(), "output_norm.weight".to_string())
        };
        b.add_rmsnorm(
            &p("ffn_residual"),
            &next_norm,
            &p("attn_residual"),
            &p("down"),
            &next_weight,
            t,
            d,
            c.eps,
        );
        x = p("ffn_residual");
    }
    b.matmul("logits", "output_norm", head, t, c.vocab, d);
    // Greedy next token of every position (argmax over the vocabulary); the last one is used.
    b.tensor("next_token", vec![t], DT::I32);
    b.dispatch(
        "next_token",
        "ArgMax",
        Kernel::ArgmaxRowsF32,
        vec!["logits", "next_token"],
        params::ArgmaxRows {
            rows: t as u32,
            len: c.vocab as u32,
            pad0: 0,
            pad1: 0,
        }
        .words(),
        groups_1d(t, 1),
    );
    // The k most likely tokens per position for sampling (k = 0, a no-op, until
    // `Decoder::set_top_k` asks for some): k pairs read back instead of the whole row.
    b.tensor("top_values", vec![t, MAX_TOP_K], DT::F32);
    b.tensor("top_indices", vec![t, MAX_TOP_K], DT::I32);
    b.dispatch(
        "top_k",
        "TopK",
        Kernel::TopkRowsF32,
        vec!["logits", "top_values", "top_indices"],
        params::TopkRows {
            rows: t as u32,
            len: c.vocab as u32,
            k: 0,
            max_k: MAX_TOP_K as u32,
        }
        .words(),
        groups_1d(t, 1),
    );
    // The caches are outputs too: state that outlives the pass (never shares a buffer).
    b.plan.outputs = vec![
        "next_token".into(),
        "logits".into(),
        "top_values".into(),
        "top_indices".into(),
    ];
    b.plan.outputs.extend(cache_names(&c));
    let mut plan = b.plan;
    plan.assign_buffers(false);
    Ok((plan, c))
}

/// The per-layer key and value caches of a plan, `[kv_heads, ctx, head_dim]` each.
pub fn cache_names(c: &Config) -> Vec<String> {
    (0..c.layers)
        .flat_map(|l| [format!("blk.{l}.k_cache"), format!("blk.{l}.v_cache")])
        .collect()
}

/// A uniform word that holds the pass's start position: `params[word] = start * scale`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PositionPatch {
    pub dispatch: usize,
    pub word: usize,
    pub scale: u32,
}

/// Where a llama plan keeps its start position (RoPE angle, attention span, cache slot), so
/// one plan serves every position: the native decoder and the generated package both
/// rewrite exactly these words.
pub fn position_patches(plan: &Plan) -> Vec<PositionPatch> {
    plan.dispatches
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let word = match d.kernel {
                k @ (Kernel::AttentionGqaTiledF32 | Kernel::RopeQkvCacheF32) => {
                    param_word(k, "start")
                }
                _ => return None,
            };
            Some(PositionPatch {
                dispatch: i,
                word,
                scale: 1,
            })
        })
        .collect()
}

/// The plans a generated package runs. Prompts are fed in chunks of `chunk` tokens, the last
/// one padded: padded positions are causal-masked from the real ones and their cache slots
/// are overwritten by the decode steps that follow. All are built at start 0 (see
/// [`position_patches`]), with intermediate buffers shared over lifetimes; weights and
/// caches have the same names in all of them.
pub struct PackagePlans {
    pub prefill: Plan,
    /// One token, GEMV kernels (GPUs).
    pub decode: Plan,
    /// One token, thread-per-output matmuls (CPU-emulated adapters such as SwiftShader).
    pub decode_fallback: Plan,
    pub config: Config,
}

pub fn package_plans(model: &Model, chunk: usize, ctx: usize) -> Result<PackagePlans, String> {
    if chunk == 0 || ctx < chunk || ctx % chunk != 0 {
        return Err(format!(
            "the context ({ctx}) must be a positive multiple of the prefill chunk ({chunk})"
        ));
    }
    let (mut prefill, config) = build(model, chunk, 0, ctx)?;
    let (mut decode, _) = build(model, 1, 0, ctx)?;
    let (mut decode_fallback, _) = build_with(model, 1, 0, ctx, 0)?;
    for p in [&mut prefill, &mut decode, &mut decode_fallback] {
        p.assign_buffers(true);
    }
    Ok(PackagePlans {
        prefill,
        decode,
        decode_fallback,
        config,
    })
}

/// Prefill + greedy decode on the GPU: a prefill runner for the prompt and one decode runner
/// (T = 1) reused for every step, sharing the weight and cache buffers.
pub struct Decoder<'g> {
    pub config: Config,
    pub prefill: Runner<'g>,
    pub decode: Runner<'g>,
    prompt_len: usize,
    ctx: usize,
}

impl<'g> Decoder<'g> {
    pub fn new(
        gpu: &'g Gpu,
        model: &Model,
        prompt_len: usize,
        ctx: usize,
    ) -> Result<Decoder<'g>, String> {
        let (pre, config) = build(model, prompt_len, 0, ctx)?;
        let (dec, _) = build(model, 1, prompt_len, ctx)?;
        // Weights and caches exist once: the decode plan uses the prefill plan's buffers.
        let mut shared: Vec<String> = pre.constants.keys().cloned().collect();
        shared.extend(cache_names(&config));
        let prefill = Runner::new(gpu, pre)?;
        let decode = Runner::sharing(gpu, dec, Some(&prefill), &shared)?;
        Ok(Decoder {
            config,
            prefill,
            decode,
            prompt_len,
            ctx,
        })
    }

    /// Points the decode plan at position `pos` (RoPE angle, cache slot, attention span).
    pub fn set_position(&self, pos: usize) {
        for patch in position_patches(&self.decode.plan) {
            let mut p = self.decode.plan.dispatches[patch.dispatch].params.clone();
            p[patch.word] = pos as u32 * patch.scale;
            self.decode.set_params(patch.dispatch, &p);
        }
    }

    /// How many candidates the plans' top-k dispatch selects per position (0: none).
    pub fn set_top_k(&self, k: usize) {
        for runner in [&self.prefill, &self.decode] {
            for (i, d) in runner.plan.dispatches.iter().enumerate() {
                if d.kernel == Kernel::TopkRowsF32 {
                    let mut p = d.params.clone();
                    p[param_word(Kernel::TopkRowsF32, "k")] = k.min(MAX_TOP_K) as u32;
                    runner.set_params(i, &p);
                }
            }
        }
    }

    /// Runs the prompt; returns the greedy next token (and leaves the caches in the decoder).
    pub fn run_prefill(&self, ids: &[u32]) -> Result<u32, String> {
        if ids.len() != self.prompt_len {
            return Err(format!(
                "the prefill plan takes {} tokens, got {}",
                self.prompt_len,
                ids.len()
            ));
        }
        let feed = HashMap::from([(
            "token_ids".to_string(),
            HostTensor::i64(vec![ids.len()], ids.iter().map(|&i| i as i64).collect()),
        )]);
        // The caches it fills are the decode plan's too (shared buffers).
        let out = self.prefill.run(&feed, &["next_token".to_string()])?;
        Ok(*out["next_token"].as_i64().last().expect("t >= 1") as u32)
    }

    /// One decode step of token `id` at position `pos`; returns the greedy next token.
    pub fn step(&self, id: u32, pos: usize) -> Result<u32, String> {
        if pos >= self.ctx {
            return Err(format!("position {pos} is past the cache of {}", self.ctx));
        }
        self.set_position(pos);
        let feed = HashMap::from([(
            "token_ids".to_string(),
            HostTensor::i64(vec![1], vec![id as i64]),
        )]);
        let out = self.decode.run(&feed, &["next_token".to_string()])?;
        Ok(out["next_token"].as_i64()[0] as u32)
    }

    /// Greedy generation of up to `max_new` tokens after the prompt (stops at `eos`).
    /// Pipelined: each decode pass copies its argmax into its own token input on the GPU,
    /// so pass n+1 is recorded and submitted before token n is read back (the CPU work of
    /// one step overlaps the GPU work of the other; at most two passes in flight).
    pub fn greedy(
        &self,
        prompt: &[u32],
        max_new: usize,
        eos: Option<u32>,
    ) -> Result<Vec<u32>, String> {
        let stop: Vec<u32> = eos.into_iter().collect();
        self.greedy_streamed(prompt, max_new, &stop, |_| {})
    }

    /// [`Decoder::greedy`] with any stop tokens and `on_token` called as each token arrives.
    pub fn greedy_streamed(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>, String> {
        if max_new == 0 {
            return Ok(vec![]);
        }
        let first = self.run_prefill(prompt)?;
        on_token(first);
        let mut out = vec![first];
        if max_new <= 1 || stop.contains(&first) {
            return Ok(out);
        }
        self.decode
            .write("token_ids", &HostTensor::i64(vec![1], vec![first as i64]))?;
        // Pass k (k = 0..) reads the token at position prompt.len() + k.
        let passes = (max_new - 1).min(self.ctx.saturating_sub(prompt.len()));
        let mut in_flight = std::collections::VecDeque::new();
        let mut sent = 0;
        while out.len() < max_new {
            if sent < passes {
                self.set_position(prompt.len() + sent);
                in_flight.push_back(
                    self.decode
                        .submit_chained(&[("next_token", "token_ids")], "next_token")?,
                );
                sent += 1;
                if in_flight.len() < 2 && sent < passes {
                    continue;
                }
            }
            let Some(p) = in_flight.pop_front() else {
                break;
            };
            let t = self.decode.wait(p)?.as_i64()[0] as u32;
            on_token(t);
            out.push(t);
            if stop.contains(&t) {
                break;
            }
        }
        // Passes already submitted past a stop finish on their own; their results are unused.
        for p in in_flight {
            self.decode.wait(p)?;
        }
        Ok(out)
    }
}

/// Sampling settings; `temperature == 0` is greedy.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// Picks the next token from one row of logits (CPU side; greedy runs on the GPU).
/// The repetition penalty applies once per distinct token seen (as Hugging Face and
/// llama.cpp do). NaN logits are never picked; a row of NaN only gives token 0 (as the GPU
/// argmax does).
pub fn sample(logits: &[f32], seen: &[u32], s: &Sampling, rng: &mut u64) -> u32 {
    let mut l: Vec<f32> = logits.to_vec();
    if s.repetition_penalty != 1.0 {
        let distinct: std::collections::BTreeSet<u32> = seen.iter().copied().collect();
        for t in distinct {
            if let Some(v) = l.get_mut(t as usize) {
                *v = if *v > 0.0 {
                    *v / s.repetition_penalty
                } else {
                    *v * s.repetition_penalty
                };
            }
        }
    }
    // Largest first, ties by lower index (a stable sort): the order of the GPU's top-k.
    let mut idx: Vec<usize> = (0..l.len()).filter(|&i| !l[i].is_nan()).collect();
    if idx.is_empty() {
        return 0;
    }
    if s.temperature <= 0.0 {
        return idx
            .iter()
            .fold(idx[0], |best, &i| if l[i] > l[best] { i } else { best }) as u32;
    }
    idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
    if s.top_k > 0 {
        idx.truncate(s.top_k);
    }
    let candidates: Vec<(u32, f32)> = idx.iter().map(|&i| (i as u32, l[i])).collect();
    sample_sorted(&candidates, s, rng)
}

/// Draws from candidates sorted largest first (the whole row, or the GPU's top k):
/// temperature, then top-p, then one xorshift64 draw.
pub fn sample_sorted(candidates: &[(u32, f32)], s: &Sampling, rng: &mut u64) -> u32 {
    let mx = candidates[0].1;
    let mut probs: Vec<f64> = candidates
        .iter()
        .map(|&(_, v)| (((v - mx) / s.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut keep = probs.len();
    let mut cum = 0.0;
    for (k, p) in probs.iter().enumerate() {
        cum += p;
        if cum >= s.top_p as f64 {
            keep = k + 1;
            break;
        }
    }
    let total: f64 = probs[..keep].iter().sum();
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let mut r = (*rng >> 11) as f64 / (1u64 << 53) as f64 * total;
    for k in 0..keep {
        r -= probs[k];
        if r <= 0.0 {
            return candidates[k].0;
        }
    }
    candidates[keep - 1].0
}

impl Decoder<'_> {
    /// Generation with sampling: calls `on_token` for each new token; stops at any of
    /// `stop` or after `max_new` tokens. Returns the tokens.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        sampling: &Sampling,
        stop: &[u32],
        mut on_token: impl FnMut(u32),
    ) -> Result<Vec<u32>, String> {
        let mut rng = sampling.seed ^ 0x9e37_79b9_7f4a_7c15;
        let last_logits = |runner: &Runner, t: usize| -> Result<Vec<f32>, String> {
            let all = runner
                .read(&["logits".to_string()])?
                .remove("logits")
                .expect("read");
            let v = match all.data {
                crate::tensor::Data::F32(v) => v,
                _ => return Err("logits are not f32".into()),
            };
            Ok(v[(t - 1) * self.config.vocab..].to_vec())
        };
        let greedy_gpu = sampling.temperature <= 0.0 && sampling.repetition_penalty == 1.0;
        if max_new == 0 {
            return Ok(vec![]);
        }
        if greedy_gpu {
            // No candidates to select: the top-k dispatch idles.
            self.set_top_k(0);
            return self.greedy_streamed(prompt, max_new, stop, on_token);
        }
        let mut seen: Vec<u32> = prompt.to_vec();
        // Top-k on the GPU (k pairs read back) when no penalty has to change the logits first.
        let gpu_top_k = sampling.temperature > 0.0
            && sampling.repetition_penalty == 1.0
            && (1..=MAX_TOP_K).contains(&sampling.top_k);
        self.set_top_k(if gpu_top_k { sampling.top_k } else { 0 });
        let pick = |runner: &Runner, t: usize, seen: &[u32], rng: &mut u64| {
            if gpu_top_k {
                let got = runner.read(&["top_values".to_string(), "top_indices".to_string()])?;
                let row = (t - 1) * MAX_TOP_K;
                let values = got["top_values"].as_f64();
                let indices = got["top_indices"].as_i64();
                let candidates: Vec<(u32, f32)> = (row..row + sampling.top_k)
                    .filter(|&i| indices[i] >= 0)
                    .map(|i| (indices[i] as u32, values[i] as f32))
                    .collect();
                if candidates.is_empty() {
                    return Ok::<u32, String>(0); // a row of NaN, as `sample` and the GPU argmax
                }
                Ok(sample_sorted(&candidates, sampling, rng))
            } else {
                Ok(sample(&last_logits(runner, t)?, seen, sampling, rng))
            }
        };
        self.run_prefill(prompt)?;
        let mut next = pick(&self.prefill, prompt.len(), &seen, &mut rng)?;
        let mut out = Vec::new();
        let mut pos = prompt.len();
        loop {
            out.push(next);
            seen.push(next);
            on_token(next);
            if out.len() >= max_new || stop.contains(&next) || pos + 1 > self.ctx {
                break;
            }
            self.step(next, pos)?;
            next = pick(&self.decode, 1, &seen, &mut rng)?;
            pos += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy_with_penalty(p: f32) -> Sampling {
        Sampling {
            repetition_penalty: p,
            ..Sampling::default()
        }
    }

    #[test]
    fn the_penalty_applies_once_per_distinct_token() {
        // Token 0 leads 2.0 to 1.5; a penalty of 1.2 once gives 1.667 (still ahead), applied
        // for each of three repeats it would give 1.157 (behind).
        let logits = [2.0f32, 1.5, -1.0];
        let mut rng = 1;
        let s = greedy_with_penalty(1.2);
        assert_eq!(sample(&logits, &[0, 0, 0], &s, &mut rng), 0);
        assert_eq!(
            sample(&logits, &[0], &greedy_with_penalty(1.5), &mut rng),
            1
        );
    }

    #[test]
    fn nan_logits_are_never_picked() {
        let logits = [f32::NAN, 1.0, f32::NAN, 3.0, 2.0];
        let mut rng = 5;
        assert_eq!(sample(&logits, &[], &Sampling::default(), &mut rng), 3);
        let s = Sampling {
            temperature: 1.0,
            top_k: 2,
            seed: 9,
            ..Sampling::default()
        };
        for _ in 0..50 {
            let t = sample(&logits, &[], &s, &mut rng);
            assert!(t == 3 || t == 4, "{t}");
        }
        assert_eq!(sample(&[f32::NAN; 4], &[], &s, &mut rng), 0);
    }
}
