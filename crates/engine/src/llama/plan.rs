//! Plan construction: a plan for T tokens at a start position, its caches, and the uniform
//! words that hold the position.

use m2w_kernels::{Kernel, params};
use m2w_model::Model;

use super::builder::{Builder, param_word};
use super::weights::{MAX_BINDING_BYTES, split_rows, weight};
use super::{Config, GEMV_MAX_TOKENS, MAX_TOP_K, config};
use crate::plan::{Plan, TensorDesc, groups_1d};
use crate::tensor::DT;

/// The fewest tokens whose attention runs as 16-query tiles (`attention_gqa_prefill_f32`).
const PREFILL_ATTENTION_MIN_TOKENS: usize = 8;

/// The keys one workgroup of `attention_gqa_split_f32` takes; a cache longer than this
/// splits the keys of a decode step's attention over several workgroups.
const SPLIT_KEYS: usize = 256;

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
    let opts = BuildOptions {
        gemv_max_tokens,
        ..BuildOptions::default()
    };
    build_opts(model, t, start, ctx, &opts)
}

/// How a llama plan is built for its target devices.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// GEMV kernels up to this many tokens (see [`build_with`]).
    pub gemv_max_tokens: usize,
    /// The largest storage binding the target devices allow (their
    /// `maxStorageBufferBindingSize`, at most WebGPU's default 128 MiB): a packed table
    /// past it runs as row slices that each fit.
    pub max_binding_bytes: usize,
    /// The LM head, argmax and top-k of the last position only (what generation reads; a
    /// prefill of T tokens then skips T - 1 rows of the largest matmul). Off: every
    /// position's logits, as validation against the reference's stages and the package's
    /// prefill chunks (whose last prompt token may sit on any row) read them.
    pub last_logits: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            gemv_max_tokens: GEMV_MAX_TOKENS,
            max_binding_bytes: MAX_BINDING_BYTES,
            last_logits: false,
        }
    }
}

/// [`build`] with `opts`.
pub fn build_opts(
    model: &Model,
    t: usize,
    start: usize,
    ctx: usize,
    opts: &BuildOptions,
) -> Result<(Plan, Config), String> {
    let gemv_max_tokens = opts.gemv_max_tokens;
    let c = config(model)?;
    if start + t > ctx {
        return Err(format!(
            "positions {start}..{} exceed the cache of {ctx}",
            start + t
        ));
    }
    let mut b = Builder::new(gemv_max_tokens);
    for e in &model.tensors {
        let (h, kind) = weight(model, e)?;
        b.plan.tensors.insert(
            e.name.clone(),
            TensorDesc::row_major(crate::sym::fixed(&h.shape), h.dt(), e.name.clone()),
        );
        b.kinds.insert(e.name.clone(), kind);
        // A packed table past the binding size every WebGPU device allows (a large
        // vocabulary's embedding / LM head) is kept as row slices, each its own constant.
        let rows = e.shape.first().map_or(1, |&r| r as usize);
        match split_rows(
            &e.name,
            &h,
            rows,
            opts.max_binding_bytes.min(MAX_BINDING_BYTES),
        ) {
            Some(slices) if kind != "f32" => {
                let mut names = Vec::new();
                for (name, row0, n, part) in slices {
                    b.tensor(&name, part.shape.clone(), part.dt());
                    b.plan.constants.insert(name.clone(), part);
                    names.push((name, row0, n));
                }
                b.plan.tensors.remove(&e.name);
                b.slices.insert(e.name.clone(), names);
            }
            _ => {
                b.plan.constants.insert(e.name.clone(), h);
            }
        }
    }
    // The matmul kernels read packed blocks: a float projection weight has no kernel yet.
    // Every such tensor is named in one error, before any GPU work.
    let mut missing = Vec::new();
    let head = if b.kinds.contains_key("output.weight") {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let projections = super::projection_names(&c, b.kinds.contains_key("output.weight"));
    for w in &projections {
        match b.kinds.get(w.as_str()) {
            None => missing.push(format!("{w}: absent")),
            Some(&"f32") => missing.push(format!(
                "{w}: stored as float (the matmul and embedding kernels read packed blocks)"
            )),
            Some(_) => {}
        }
    }
    let mut norms = vec!["attn_norm", "ffn_norm"];
    if c.qk_norm {
        norms.extend(["attn_q_norm", "attn_k_norm"]);
    }
    if c.post_norms {
        norms.extend(["post_attention_norm", "post_ffw_norm"]);
    }
    for l in 0..c.layers {
        for w in &norms {
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
    let qd = c.heads * hd;
    b.tensor("token_ids", vec![t], DT::I32);
    b.plan.inputs.push("token_ids".into());
    b.embed(
        "token_embd",
        "token_ids",
        "token_embd.weight",
        t,
        d,
        c.vocab,
        c.embed_scale,
    );
    // The residual stream and its normalised copy: each layer's closing residual add is
    // fused with the next norm (the next layer's attn_norm, or output_norm).
    let mut x = "token_embd".to_string();
    b.rmsnorm("blk.0.attn_norm", &x, "blk.0.attn_norm.weight", t, d, c.eps);
    for l in 0..c.layers {
        let p = |s: &str| format!("blk.{l}.{s}");
        let w = |s: &str| format!("blk.{l}.{s}.weight");
        // Stages as the reference names them: q/k/v are the projections with their biases,
        // q_normed/k_normed the per-head QK-norm (what RoPE turns).
        let raw = |s: &str| {
            if c.qkv_bias {
                p(&format!("{s}_nobias"))
            } else {
                p(s)
            }
        };
        b.qkv(
            [&raw("q"), &raw("k"), &raw("v")],
            &p("attn_norm"),
            [&w("attn_q"), &w("attn_k"), &w("attn_v")],
            t,
            qd,
            kvd,
            d,
        );
        if c.qkv_bias {
            for (s, n) in [("q", qd), ("k", kvd), ("v", kvd)] {
                b.add_rows(&p(s), &raw(s), &format!("blk.{l}.attn_{s}.bias"), t, n);
            }
        }
        let (q_in, k_in) = if c.qk_norm {
            b.rmsnorm(
                &p("q_normed"),
                &p("q"),
                &w("attn_q_norm"),
                t * c.heads,
                hd,
                c.eps,
            );
            b.rmsnorm(
                &p("k_normed"),
                &p("k"),
                &w("attn_k_norm"),
                t * c.kv_heads,
                hd,
                c.eps,
            );
            (p("q_normed"), p("k_normed"))
        } else {
            (p("q"), p("k"))
        };
        // RoPE on q and k, and this step's keys and values appended to the caches
        // [kv_heads, ctx, head_dim]: one dispatch.
        b.tensor(&p("q_rope"), vec![t, qd], DT::F32);
        b.tensor(&p("k_rope"), vec![t, kvd], DT::F32);
        b.tensor(&p("k_cache"), vec![c.kv_heads, ctx, hd], DT::F32);
        b.tensor(&p("v_cache"), vec![c.kv_heads, ctx, hd], DT::F32);
        b.dispatch(
            &p("q_rope"),
            "RoPE",
            Kernel::RopeQkvCacheF32,
            vec![
                &q_in,
                &k_in,
                &p("v"),
                &p("q_rope"),
                &p("k_rope"),
                &p("k_cache"),
                &p("v_cache"),
                if c.rope_freqs {
                    "rope_freqs.weight"
                } else {
                    ""
                },
            ],
            params::RopeQkvCache {
                t: t as u32,
                heads: c.heads as u32,
                kv_heads: c.kv_heads as u32,
                head_dim: hd as u32,
                rope_dim: c.rope_dim as u32,
                start: start as u32,
                ctx: ctx as u32,
                base: c.layer_rope_base[l],
                neox: c.rope_neox as u32,
                has_freqs: c.rope_freqs as u32,
            }
            .words(),
            groups_1d(t * (c.heads + c.kv_heads) * hd / 2, 64),
        );
        b.tensor(&p("attn_out"), vec![t, qd], DT::F32);
        let attention = params::AttentionTiled {
            t: t as u32,
            heads: c.heads as u32,
            kv_heads: c.kv_heads as u32,
            head_dim: hd as u32,
            start: start as u32,
            ctx: ctx as u32,
            scale: c.attn_scale,
            window: c.layer_window[l] as u32,
        }
        .words();
        let cache = [&p("q_rope"), &p("k_cache"), &p("v_cache")];
        if t >= PREFILL_ATTENTION_MIN_TOKENS {
            // Many queries: a workgroup per 16 queries of a head, so a key or value read
            // serves 16 of them.
            b.dispatch(
                &p("attn_out"),
                "Attention",
                Kernel::AttentionGqaPrefillF32,
                vec![cache[0], cache[1], cache[2], &p("attn_out")],
                attention,
                [t.div_ceil(16) as u32, c.heads as u32, 1],
            );
        } else if ctx > SPLIT_KEYS {
            // A few queries over a long cache (decoding): the keys of each (query, head)
            // split over ceil(ctx / 256) workgroups, then merged (flash-decoding).
            let splits = ctx.div_ceil(SPLIT_KEYS);
            b.tensor(
                &p("attn_part"),
                vec![t * c.heads * splits * (hd + 2)],
                DT::F32,
            );
            b.dispatch(
                &p("attn_part"),
                "Attention (key splits)",
                Kernel::AttentionGqaSplitF32,
                vec![cache[0], cache[1], cache[2], &p("attn_part")],
                attention,
                [(t * c.heads) as u32, splits as u32, 1],
            );
            b.dispatch(
                &p("attn_out"),
                "Attention (merge)",
                Kernel::AttentionMergeF32,
                vec![&p("attn_part"), &p("attn_out")],
                params::AttentionMerge {
                    rows: (t * c.heads) as u32,
                    head_dim: hd as u32,
                    splits: splits as u32,
                    pad: 0,
                }
                .words(),
                [(t * c.heads) as u32, 1, 1],
            );
        } else {
            // A few queries over a short cache: a workgroup per (query, head).
            b.dispatch(
                &p("attn_out"),
                "Attention",
                Kernel::AttentionGqaTiledF32,
                vec![cache[0], cache[1], cache[2], &p("attn_out")],
                attention,
                groups_1d(t * c.heads, 1),
            );
        }
        b.matmul(&p("attn_proj"), &p("attn_out"), &w("attn_output"), t, d, qd);
        let attn_branch = if c.post_norms {
            b.rmsnorm(
                &p("attn_post_norm"),
                &p("attn_proj"),
                &w("post_attention_norm"),
                t,
                d,
                c.eps,
            );
            p("attn_post_norm")
        } else {
            p("attn_proj")
        };
        b.add_rmsnorm(
            &p("attn_residual"),
            &p("ffn_norm"),
            &x,
            &attn_branch,
            &w("ffn_norm"),
            t,
            d,
            c.eps,
        );
        b.gated_ffn(
            [&p("gate"), &p("up"), &p("ffn_act")],
            &p("ffn_norm"),
            [&w("ffn_gate"), &w("ffn_up")],
            t,
            c.ffn,
            d,
            c.activation,
        );
        b.matmul(&p("down"), &p("ffn_act"), &w("ffn_down"), t, d, c.ffn);
        let ffn_branch = if c.post_norms {
            b.rmsnorm(
                &p("ffn_post_norm"),
                &p("down"),
                &w("post_ffw_norm"),
                t,
                d,
                c.eps,
            );
            p("ffn_post_norm")
        } else {
            p("down")
        };
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
            &ffn_branch,
            &next_weight,
            t,
            d,
            c.eps,
        );
        x = p("ffn_residual");
    }
    // The rows the head reads: every position, or (last_logits) a copy of the last one.
    let (head_in, rows) = if opts.last_logits && t > 1 {
        b.tensor("last_norm", vec![1, d], DT::F32);
        b.dispatch(
            "last_norm",
            "Slice",
            Kernel::CopyStrided,
            vec!["output_norm", "last_norm"],
            params::CopyStrided {
                n: d as u32,
                rank: 1,
                src_offset: ((t - 1) * d) as i32,
                dst_offset: 0,
                shape: crate::ops::ctx::dims8(&[d]),
                src_strides: crate::ops::ctx::vec8_i32(&[1]),
                dst_strides: crate::ops::ctx::vec8_i32(&[1]),
            }
            .words(),
            groups_1d(d, 256),
        );
        ("last_norm", 1)
    } else {
        ("output_norm", t)
    };
    b.matmul("logits", head_in, head, rows, c.vocab, d);
    // Greedy next token of every row (argmax over the vocabulary); the last one is used.
    b.tensor("next_token", vec![rows], DT::I32);
    b.dispatch(
        "next_token",
        "ArgMax",
        Kernel::ArgmaxRowsF32,
        vec!["logits", "next_token"],
        params::ArgmaxRows {
            rows: rows as u32,
            len: c.vocab as u32,
            pad0: 0,
            pad1: 0,
        }
        .words(),
        groups_1d(rows, 1),
    );
    // The k most likely tokens per position for sampling (k = 0, a no-op, until
    // `Decoder::set_top_k` asks for some): k pairs read back instead of the whole row.
    b.tensor("top_values", vec![rows, MAX_TOP_K], DT::F32);
    b.tensor("top_indices", vec![rows, MAX_TOP_K], DT::I32);
    b.dispatch(
        "top_k",
        "TopK",
        Kernel::TopkRowsF32,
        vec!["logits", "top_values", "top_indices"],
        params::TopkRows {
            rows: rows as u32,
            len: c.vocab as u32,
            k: 0,
            max_k: MAX_TOP_K as u32,
        }
        .words(),
        groups_1d(rows, 1),
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
                k @ (Kernel::AttentionGqaTiledF32
                | Kernel::AttentionGqaPrefillF32
                | Kernel::AttentionGqaSplitF32
                | Kernel::RopeQkvCacheF32) => param_word(k, "start"),
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
