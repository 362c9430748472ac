//! Every block type's kernels (embedding, GEMV, fused q/k/v, fused gate/up, prefill
//! matmul) on the adapter against a CPU product over `BlockKind::unpack`, the CPU image of
//! the dequantization that extract's verify checks against candle's on every fixture block.

use std::collections::HashMap;

use m2w_extract::BlockKind;
use m2w_model::llama_config::Activation;

use super::builder::{Builder, embed_kernel};
use crate::gpu::{Gpu, Runner};
use crate::plan::groups_1d;
use crate::tensor::{DT, HostTensor};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn f(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
    }
}

/// `blocks` random GGUF blocks of `kind` whose f16 scales are finite: normal ones, and one
/// block in seven with a subnormal scale (a tiny block still dequantizes exactly).
fn random_blocks(kind: BlockKind, blocks: usize, rng: &mut Lcg) -> Vec<u8> {
    let n = kind.gguf_bytes();
    let mut raw: Vec<u8> = (0..blocks * n).map(|_| rng.next() as u8).collect();
    let scales: &[usize] = match kind {
        BlockKind::Q8_0 | BlockKind::Q4_0 | BlockKind::Q5_0 => &[0],
        BlockKind::Q4_1 | BlockKind::Q5_1 | BlockKind::Q4K | BlockKind::Q5K => &[0, 2],
        BlockKind::Q6K => &[208],
    };
    for (b, block) in raw.chunks_exact_mut(n).enumerate() {
        for &at in scales {
            let v = if b % 7 == 3 {
                half::f16::from_bits(0x0003 | (rng.next() as u16 & 0x8000))
            } else {
                half::f16::from_f32(rng.f() * 0.05)
            };
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    raw
}

fn words(bytes: &[u8]) -> HostTensor {
    let v: Vec<i64> = bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
        .collect();
    HostTensor::i64(vec![v.len()], v)
}

fn builder() -> Builder {
    Builder::new(4)
}

fn matmul_cpu(x: &[f32], w: &[f32], t: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; t * n];
    for i in 0..t {
        for j in 0..n {
            y[i * n + j] = (0..k).map(|e| x[i * k + e] * w[j * k + e]).sum();
        }
    }
    y
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 + 1e-4 * b.abs(),
            "{what}[{i}]: gpu {a} vs cpu {b}"
        );
    }
}

#[test]
fn every_block_kind_runs_on_every_kernel_family() {
    let gpu = Gpu::new().unwrap();
    let mut rng = Lcg(7);
    let (n, k, rows) = (3usize, 512usize, 5usize);
    for kind in BlockKind::ALL {
        let name = kind.name();
        let per_row = k / kind.weights();
        let mut weights = HashMap::new();
        let mut b = builder();
        for w in ["w0", "w1", "w2"] {
            let raw = random_blocks(kind, n * per_row, &mut rng);
            let packed = kind.pack(&raw);
            assert_eq!(packed.len(), n * per_row * kind.packed_bytes());
            b.tensor(w, vec![packed.len() / 4], DT::I32);
            b.plan.constants.insert(w.into(), words(&packed));
            b.kinds.insert(w.into(), name);
            weights.insert(w, kind.unpack(&packed));
        }
        // w0 again as one-row slices (how a table past one binding runs).
        let w0_words = b.plan.constants["w0"].clone();
        let row_bytes = w0_words.len() * 4 / n;
        let slices = super::weights::split_rows("ws", &w0_words, n, row_bytes).unwrap();
        assert_eq!(slices.len(), n);
        let mut names = Vec::new();
        for (name, row0, rows, part) in slices {
            b.tensor(&name, part.shape.clone(), DT::I32);
            b.plan.constants.insert(name.clone(), part);
            names.push((name, row0, rows));
        }
        b.slices.insert("ws".into(), names);
        b.kinds.insert("ws".into(), name);
        b.embed("emb_sliced", "ids", "ws", 3, k, n, 0.5);
        // The embedding table is w0's rows; ids include an out-of-range one (zeros).
        let mut unit = vec![0f32; 64];
        unit[32] = 1.0;
        b.tensor("unit_vector", vec![64], DT::F32);
        b.plan
            .constants
            .insert("unit_vector".into(), HostTensor::f32(vec![64], unit));
        b.tensor("ids", vec![3], DT::I32);
        b.tensor("emb", vec![3, k], DT::F32);
        b.dispatch(
            "emb",
            "Embedding",
            embed_kernel(name),
            vec!["ids", "w0", "unit_vector", "emb"],
            m2w_kernels::params::EmbedQ {
                t: 3,
                d: k as u32,
                v: n as u32,
                scale: 0.5,
                row0: 0,
                rows: n as u32,
            }
            .words(),
            groups_1d(3 * k, 256),
        );
        for t in [1, rows] {
            let x = format!("x{t}");
            b.tensor(&x, vec![t, k], DT::F32);
            b.plan.inputs.push(x.clone());
            b.matmul(&format!("y{t}"), &x, "w0", t, n, k);
            b.matmul(&format!("ys{t}"), &x, "ws", t, n, k);
            b.qkv(
                [&format!("q{t}"), &format!("k{t}"), &format!("v{t}")],
                &x,
                ["w0", "w1", "w2"],
                t,
                n,
                n,
                k,
            );
            b.gated_ffn(
                [&format!("g{t}"), &format!("u{t}"), &format!("a{t}")],
                &x,
                ["w1", "w2"],
                t,
                n,
                k,
                Activation::GeluTanh,
            );
        }
        b.plan.inputs.push("ids".into());
        let mut plan = b.plan;
        plan.outputs = plan.tensors.keys().cloned().collect();
        plan.assign_buffers(false);
        let runner = Runner::new(&gpu, plan).unwrap();
        let mut feed = HashMap::new();
        let mut xs = HashMap::new();
        for t in [1, rows] {
            let x: Vec<f32> = (0..t * k).map(|_| rng.f()).collect();
            feed.insert(format!("x{t}"), HostTensor::f32(vec![t, k], x.clone()));
            xs.insert(t, x);
        }
        feed.insert("ids".into(), HostTensor::i64(vec![3], vec![2, 0, 3]));
        let read: Vec<String> =
            ["emb", "emb_sliced"]
                .iter()
                .map(|s| s.to_string())
                .chain([1, rows].iter().flat_map(|t| {
                    ["y", "ys", "q", "k", "v", "g", "u", "a"].map(|p| format!("{p}{t}"))
                }))
                .collect();
        let out = runner.run(&feed, &read).unwrap();
        let f = |s: &str| -> Vec<f32> { out[s].as_f64().iter().map(|&v| v as f32).collect() };
        let w0 = &weights["w0"];
        let mut want_emb: Vec<f32> = w0[2 * k..3 * k].iter().map(|v| 0.5 * v).collect();
        want_emb.extend(w0[..k].iter().map(|v| 0.5 * v));
        want_emb.extend(vec![0.0; k]);
        assert_eq!(f("emb"), want_emb, "{name}: embedding rows");
        assert_eq!(
            f("emb_sliced"),
            want_emb,
            "{name}: embedding rows, sliced table"
        );
        for t in [1, rows] {
            let x = &xs[&t];
            let mm = |w: &str| matmul_cpu(x, &weights[w], t, n, k);
            let what = |s: &str| format!("{name} {s} (T = {t})");
            assert_close(&what("matmul"), &f(&format!("y{t}")), &mm("w0"));
            assert_eq!(
                f(&format!("ys{t}")),
                f(&format!("y{t}")),
                "{name}: sliced weight"
            );
            assert_close(&what("q"), &f(&format!("q{t}")), &mm("w0"));
            assert_close(&what("k"), &f(&format!("k{t}")), &mm("w1"));
            assert_close(&what("v"), &f(&format!("v{t}")), &mm("w2"));
            let (g, u) = (mm("w1"), mm("w2"));
            assert_close(&what("gate"), &f(&format!("g{t}")), &g);
            assert_close(&what("up"), &f(&format!("u{t}")), &u);
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| {
                    0.5 * g * (1.0 + (0.797_884_6 * (g + 0.044715 * g * g * g)).tanh()) * u
                })
                .collect();
            assert_close(&what("GeGLU"), &f(&format!("a{t}")), &act);
        }
    }
}

/// RoPE + cache append in both pairings (ggml's normal and NEOX), with and without Llama
/// 3.x's per-pair frequency factors, on a partial rotary dimension, against the CPU formula.
#[test]
fn rope_pairs_frequency_factors_and_cache_slots() {
    let gpu = Gpu::new().unwrap();
    let (t, heads, kv, hd, rope_dim, start, ctx) =
        (2usize, 2usize, 1usize, 16usize, 12usize, 3usize, 8usize);
    let base = 500000.0f32;
    let mut rng = Lcg(3);
    for neox in [false, true] {
        for with_freqs in [false, true] {
            let mut b = builder();
            let q: Vec<f32> = (0..t * heads * hd).map(|_| rng.f()).collect();
            let k: Vec<f32> = (0..t * kv * hd).map(|_| rng.f()).collect();
            let v: Vec<f32> = (0..t * kv * hd).map(|_| rng.f()).collect();
            let freqs: Vec<f32> = (0..rope_dim / 2).map(|i| 1.0 + i as f32 * 0.75).collect();
            for (name, n) in [("q", heads * hd), ("k", kv * hd), ("v", kv * hd)] {
                b.tensor(name, vec![t, n], DT::F32);
                b.plan.inputs.push(name.into());
            }
            b.tensor("freqs", vec![rope_dim / 2], DT::F32);
            b.plan.constants.insert(
                "freqs".into(),
                HostTensor::f32(vec![rope_dim / 2], freqs.clone()),
            );
            b.tensor("q_rope", vec![t, heads * hd], DT::F32);
            b.tensor("k_rope", vec![t, kv * hd], DT::F32);
            b.tensor("k_cache", vec![kv, ctx, hd], DT::F32);
            b.tensor("v_cache", vec![kv, ctx, hd], DT::F32);
            b.dispatch(
                "q_rope",
                "RoPE",
                m2w_kernels::Kernel::RopeQkvCacheF32,
                vec![
                    "q",
                    "k",
                    "v",
                    "q_rope",
                    "k_rope",
                    "k_cache",
                    "v_cache",
                    if with_freqs { "freqs" } else { "" },
                ],
                m2w_kernels::params::RopeQkvCache {
                    t: t as u32,
                    heads: heads as u32,
                    kv_heads: kv as u32,
                    head_dim: hd as u32,
                    rope_dim: rope_dim as u32,
                    start: start as u32,
                    ctx: ctx as u32,
                    base,
                    neox: neox as u32,
                    has_freqs: with_freqs as u32,
                }
                .words(),
                groups_1d(t * (heads + kv) * hd / 2, 64),
            );
            let mut plan = b.plan;
            plan.outputs = vec![
                "q_rope".into(),
                "k_rope".into(),
                "k_cache".into(),
                "v_cache".into(),
            ];
            plan.assign_buffers(false);
            let runner = Runner::new(&gpu, plan).unwrap();
            let feed = HashMap::from([
                (
                    "q".to_string(),
                    HostTensor::f32(vec![t, heads * hd], q.clone()),
                ),
                (
                    "k".to_string(),
                    HostTensor::f32(vec![t, kv * hd], k.clone()),
                ),
                (
                    "v".to_string(),
                    HostTensor::f32(vec![t, kv * hd], v.clone()),
                ),
            ]);
            let names: Vec<String> = ["q_rope", "k_rope", "k_cache", "v_cache"]
                .map(String::from)
                .into();
            let out = runner.run(&feed, &names).unwrap();
            let f = |s: &str| -> Vec<f32> { out[s].as_f64().iter().map(|&v| v as f32).collect() };
            let rotate = |x: &[f32], n_heads: usize| -> Vec<f32> {
                let mut y = x.to_vec();
                for tt in 0..t {
                    for h in 0..n_heads {
                        let at = (tt * n_heads + h) * hd;
                        for i in 0..rope_dim / 2 {
                            let mut theta =
                                (start + tt) as f32 * base.powf(-2.0 * i as f32 / rope_dim as f32);
                            if with_freqs {
                                theta /= freqs[i];
                            }
                            let (i0, i1) = if neox {
                                (i, i + rope_dim / 2)
                            } else {
                                (2 * i, 2 * i + 1)
                            };
                            let (a, bb) = (x[at + i0], x[at + i1]);
                            y[at + i0] = a * theta.cos() - bb * theta.sin();
                            y[at + i1] = a * theta.sin() + bb * theta.cos();
                        }
                    }
                }
                y
            };
            let what = format!("neox {neox}, freqs {with_freqs}");
            assert_close(&format!("{what}: q"), &f("q_rope"), &rotate(&q, heads));
            let kr = rotate(&k, kv);
            assert_close(&format!("{what}: k"), &f("k_rope"), &kr);
            let (kc, vc) = (f("k_cache"), f("v_cache"));
            for tt in 0..t {
                let slot = (start + tt) * hd;
                assert_close(
                    &format!("{what}: k cache"),
                    &kc[slot..slot + hd],
                    &kr[tt * hd..(tt + 1) * hd],
                );
                assert_eq!(
                    &vc[slot..slot + hd],
                    &v[tt * hd..(tt + 1) * hd],
                    "{what}: v cache"
                );
            }
        }
    }
}

/// The tiled prefill matmuls (16- and 64-token tiles) of every block type against the CPU
/// product: T and N not multiples of the tile, a weight split into row slices that write
/// their columns of one output.
#[test]
fn tiled_prefill_matmul_matches_cpu_for_every_block_kind() {
    let gpu = Gpu::new().unwrap();
    let mut rng = Lcg(11);
    let (n, k) = (70usize, 512usize);
    for kind in BlockKind::ALL {
        let name = kind.name();
        let raw = random_blocks(kind, n * k / kind.weights(), &mut rng);
        let packed = kind.pack(&raw);
        let w = kind.unpack(&packed);
        let mut b = builder();
        b.tensor("w", vec![packed.len() / 4], DT::I32);
        b.plan.constants.insert("w".into(), words(&packed));
        b.kinds.insert("w".into(), name);
        let row_bytes = packed.len() / n;
        let slices = super::weights::split_rows("w", &words(&packed), n, row_bytes * 32).unwrap();
        assert_eq!(slices.len(), 3);
        let mut names = Vec::new();
        for (slice, row0, rows, part) in slices {
            b.tensor(&slice, part.shape.clone(), DT::I32);
            b.plan.constants.insert(slice.clone(), part);
            names.push((slice, row0, rows));
        }
        b.slices.insert("ws".into(), names);
        b.kinds.insert("ws".into(), name);
        let sizes = [20usize, 70];
        for t in sizes {
            let x = format!("x{t}");
            b.tensor(&x, vec![t, k], DT::F32);
            b.plan.inputs.push(x.clone());
            b.matmul(&format!("y{t}"), &x, "w", t, n, k);
            b.matmul(&format!("ys{t}"), &x, "ws", t, n, k);
        }
        let kernels: Vec<&str> = b.plan.dispatches.iter().map(|d| d.kernel.name()).collect();
        assert!(
            kernels.contains(&format!("matmul_tiled_t16_{name}_f32").as_str())
                && kernels.contains(&format!("matmul_tiled_{name}_f32").as_str()),
            "{name}: {kernels:?}"
        );
        let mut plan = b.plan;
        plan.outputs = sizes
            .iter()
            .flat_map(|t| [format!("y{t}"), format!("ys{t}")])
            .collect();
        plan.assign_buffers(false);
        let runner = Runner::new(&gpu, plan).unwrap();
        let mut feed = HashMap::new();
        let mut xs = HashMap::new();
        for t in sizes {
            let x: Vec<f32> = (0..t * k).map(|_| rng.f()).collect();
            feed.insert(format!("x{t}"), HostTensor::f32(vec![t, k], x.clone()));
            xs.insert(t, x);
        }
        let read: Vec<String> = sizes
            .iter()
            .flat_map(|t| [format!("y{t}"), format!("ys{t}")])
            .collect();
        let out = runner.run(&feed, &read).unwrap();
        let f = |s: &str| -> Vec<f32> { out[s].as_f64().iter().map(|&v| v as f32).collect() };
        for t in sizes {
            let want = matmul_cpu(&xs[&t], &w, t, n, k);
            assert_close(
                &format!("{name} tiled (T = {t})"),
                &f(&format!("y{t}")),
                &want,
            );
            assert_eq!(
                f(&format!("ys{t}")),
                f(&format!("y{t}")),
                "{name}: sliced (T = {t})"
            );
        }
    }
}

/// Causal grouped-query attention over a cache, as the CPU formula: query t at position
/// start + t sees positions first..=start + t (the last `window` of them when window > 0).
#[allow(clippy::too_many_arguments)]
fn attention_cpu(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    t: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    start: usize,
    ctx: usize,
    scale: f32,
    window: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; t * heads * hd];
    for ti in 0..t {
        let n = (start + ti).min(ctx - 1) + 1;
        let first = if window > 0 && n > window {
            n - window
        } else {
            0
        };
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let qv = &q[(ti * heads + h) * hd..][..hd];
            let s: Vec<f64> = (first..n)
                .map(|j| {
                    let kv = &kc[(kvh * ctx + j) * hd..][..hd];
                    qv.iter().zip(kv).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale as f64
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let p: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
            let l: f64 = p.iter().sum();
            for d in 0..hd {
                let o: f64 = (first..n)
                    .zip(&p)
                    .map(|(j, p)| p * vc[(kvh * ctx + j) * hd + d] as f64)
                    .sum();
                out[(ti * heads + h) * hd + d] = (o / l) as f32;
            }
        }
    }
    out
}

/// The 16-query prefill attention, the per-query kernel and the key-split (flash-decoding)
/// kernel with its merge against the CPU formula: a partial last tile, a start past 0, a
/// sliding window, grouped heads, head widths 16 to 256, spans over several 256-key splits.
#[test]
fn attention_kernels_match_cpu() {
    use m2w_kernels::Kernel;
    let gpu = Gpu::new().unwrap();
    let mut rng = Lcg(5);
    for (t, heads, kv_heads, hd, start, window) in [
        (37usize, 6usize, 2usize, 64usize, 5usize, 0usize),
        (21, 4, 4, 256, 0, 0),
        (70, 3, 1, 16, 3, 20),
        (9, 2, 1, 128, 100, 0),
        (2, 6, 2, 64, 600, 0),
        (1, 4, 1, 256, 300, 100),
        (3, 2, 2, 48, 700, 300),
    ] {
        let ctx = start + t + 7;
        let scale = 1.0 / (hd as f32).sqrt();
        let q: Vec<f32> = (0..t * heads * hd).map(|_| rng.f()).collect();
        let kc: Vec<f32> = (0..kv_heads * ctx * hd).map(|_| rng.f() * 2.0).collect();
        let vc: Vec<f32> = (0..kv_heads * ctx * hd).map(|_| rng.f()).collect();
        let mut b = builder();
        for (name, shape) in [
            ("q", vec![t, heads * hd]),
            ("kc", vec![kv_heads, ctx, hd]),
            ("vc", vec![kv_heads, ctx, hd]),
            ("tiles", vec![t, heads * hd]),
            ("rows", vec![t, heads * hd]),
            ("split", vec![t, heads * hd]),
        ] {
            b.tensor(name, shape, DT::F32);
        }
        b.plan.inputs = vec!["q".into(), "kc".into(), "vc".into()];
        let params = m2w_kernels::params::AttentionTiled {
            t: t as u32,
            heads: heads as u32,
            kv_heads: kv_heads as u32,
            head_dim: hd as u32,
            start: start as u32,
            ctx: ctx as u32,
            scale,
            window: window as u32,
        }
        .words();
        b.dispatch(
            "tiles",
            "Attention",
            Kernel::AttentionGqaPrefillF32,
            vec!["q", "kc", "vc", "tiles"],
            params.clone(),
            [t.div_ceil(16) as u32, heads as u32, 1],
        );
        b.dispatch(
            "rows",
            "Attention",
            Kernel::AttentionGqaTiledF32,
            vec!["q", "kc", "vc", "rows"],
            params.clone(),
            groups_1d(t * heads, 1),
        );
        let splits = ctx.div_ceil(256);
        b.tensor("part", vec![t * heads * splits * (hd + 2)], DT::F32);
        b.dispatch(
            "part",
            "Attention",
            Kernel::AttentionGqaSplitF32,
            vec!["q", "kc", "vc", "part"],
            params.clone(),
            [(t * heads) as u32, splits as u32, 1],
        );
        b.dispatch(
            "split",
            "Attention",
            Kernel::AttentionMergeF32,
            vec!["part", "split"],
            m2w_kernels::params::AttentionMerge {
                rows: (t * heads) as u32,
                head_dim: hd as u32,
                splits: splits as u32,
                pad: 0,
            }
            .words(),
            [(t * heads) as u32, 1, 1],
        );
        let mut plan = b.plan;
        plan.outputs = vec!["tiles".into(), "rows".into(), "split".into()];
        plan.assign_buffers(false);
        let runner = Runner::new(&gpu, plan).unwrap();
        let feed = HashMap::from([
            (
                "q".to_string(),
                HostTensor::f32(vec![t, heads * hd], q.clone()),
            ),
            (
                "kc".to_string(),
                HostTensor::f32(vec![kv_heads, ctx, hd], kc.clone()),
            ),
            (
                "vc".to_string(),
                HostTensor::f32(vec![kv_heads, ctx, hd], vc.clone()),
            ),
        ]);
        let out = runner
            .run(
                &feed,
                &["tiles".to_string(), "rows".to_string(), "split".to_string()],
            )
            .unwrap();
        let f = |s: &str| -> Vec<f32> { out[s].as_f64().iter().map(|&v| v as f32).collect() };
        let want = attention_cpu(
            &q, &kc, &vc, t, heads, kv_heads, hd, start, ctx, scale, window,
        );
        let what = format!(
            "T {t}, heads {heads}/{kv_heads}, head_dim {hd}, start {start}, window {window}"
        );
        assert_close(&format!("prefill attention, {what}"), &f("tiles"), &want);
        assert_close(&format!("per-query attention, {what}"), &f("rows"), &want);
        assert_close(&format!("key-split attention, {what}"), &f("split"), &want);
    }
}
