//! The attention fusions of onnxruntime-genai's model builder, lowered as the standard ops
//! they fuse (each through its own registered lowering, so symbolic sizes, folding and
//! kernels are the standard ops'): com.microsoft GroupQueryAttention and RotaryEmbedding,
//! and ONNX Runtime's SimplifiedLayerNormalization (RMS norm). Semantics follow ONNX
//! Runtime's contrib-op docs and CPU kernels.
//!
//! GroupQueryAttention(query [B,S,H*D], key [B,S,KV*D], value [B,S,KV*D] (or the three
//! packed in the query, [B,S,(H+2KV)*D]), past_key and
//! past_value [B,KV,P,D], seqlens_k [B] int32, total_sequence_length, cos_cache and
//! sin_cache [max positions, D/2]) -> output [B,S,H*D], present_key and present_value
//! [B,KV,P+S,D]:
//! - query head h reads key/value head h / (H/KV): the query is viewed as [B,KV,G,S,D]
//!   (G = H/KV) and multiplied against [B,KV,1,T,D], so no head is copied;
//! - with `do_rotary`, the new query and key rotate (halves, not interleaved) at positions
//!   P .. P+S;
//! - present = Concat(past, new) along the sequence;
//! - query i (position P+i) sees key j when j <= P+i and j <= seqlens_k[b] (the last valid
//!   position of its batch row); softmax over `scale` x q.k (default 1/sqrt(D)).

use m2w_model::{AttrValue, NodeInfo};

use super::super::Registry;
use super::super::ctx::{Ctx, R, attr_f, attr_i, ins};
use crate::tensor::{DT, HostTensor};

const MS: &str = "com.microsoft";
/// What masked scores add: float32's lowest (as exporters' masks), not -inf, so a row
/// with nothing visible stays finite.
const MASKED: f32 = f32::MIN;

pub(in crate::ops) fn register(r: &mut Registry) {
    r.contrib(
        MS,
        "GroupQueryAttention",
        &[
            "num_heads",
            "kv_num_heads",
            "scale",
            "do_rotary",
            "rotary_interleaved",
            "local_window_size",
            "softcap",
            "smooth_softmax",
        ],
        lower_gqa,
    );
    r.contrib(
        MS,
        "RotaryEmbedding",
        &[
            "interleaved",
            "num_heads",
            "rotary_embedding_dim",
            "scale",
            "is_packed_batching",
        ],
        lower_rotary,
    );
    r.op(
        "SimplifiedLayerNormalization",
        1,
        &["axis", "epsilon", "stash_type"],
        lower_simplified_norm,
    );
}

/// Standard nodes written in place of one fused node: each gets a name of its own under the
/// fused node's output and is lowered through its registered spec, as the fused node (so
/// its dispatches carry that node's label).
struct Expand<'a> {
    cx: &'a mut Ctx,
    node: &'a NodeInfo,
    prefix: String,
    count: usize,
}

impl<'a> Expand<'a> {
    fn new(cx: &'a mut Ctx, node: &'a NodeInfo) -> Self {
        let prefix = node
            .outputs
            .iter()
            .find(|o| !o.is_empty())
            .cloned()
            .unwrap_or_else(|| node.label());
        Expand {
            cx,
            node,
            prefix,
            count: 0,
        }
    }

    fn fresh(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{}::{what}{}", self.prefix, self.count)
    }

    /// `op(inputs)` into `out` (a fresh name when None).
    fn op_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, AttrValue)],
        out: Option<&str>,
    ) -> R<String> {
        let out = match out {
            Some(o) => o.to_string(),
            None => self.fresh(op),
        };
        let n = NodeInfo {
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.clone()],
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..self.node.clone()
        };
        let spec = super::super::find("", op, self.cx.opset)?;
        self.cx.lower(spec, &n)?;
        Ok(out)
    }

    fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, AttrValue)]) -> R<String> {
        self.op_into(op, inputs, attrs, None)
    }

    fn ints(&mut self, v: &[i64]) -> String {
        let name = self.fresh("const");
        self.cx
            .add_const(&name, HostTensor::i64(vec![v.len()], v.to_vec()));
        name
    }

    fn scalar_i64(&mut self, v: i64) -> String {
        let name = self.fresh("const");
        self.cx.add_const(&name, HostTensor::i64(vec![], vec![v]));
        name
    }

    fn scalar_f32(&mut self, v: f32) -> String {
        let name = self.fresh("const");
        self.cx.add_const(&name, HostTensor::f32(vec![], vec![v]));
        name
    }

    /// Dim `axis` of `x` as a 1-element int64 tensor.
    fn dim(&mut self, x: &str, axis: i64) -> R<String> {
        let shape = self.op("Shape", &[x], &[])?;
        let at = self.ints(&[axis]);
        self.op("Gather", &[&shape, &at], &[("axis", AttrValue::Int(0))])
    }

    /// `x` with its last axis rotated by (cos, sin), halves not interleaved:
    /// [x1 cos - x2 sin, x2 cos + x1 sin]; cos and sin broadcast against the halves.
    fn rotate(&mut self, x: &str, cos: &str, sin: &str, half: i64) -> R<String> {
        let axis = self.ints(&[-1]);
        let (z, h, end) = (self.ints(&[0]), self.ints(&[half]), self.ints(&[2 * half]));
        let x1 = self.op("Slice", &[x, &z, &h, &axis], &[])?;
        let x2 = self.op("Slice", &[x, &h, &end, &axis], &[])?;
        let a = self.op("Mul", &[&x1, cos], &[])?;
        let b = self.op("Mul", &[&x2, sin], &[])?;
        let first = self.op("Sub", &[&a, &b], &[])?;
        let c = self.op("Mul", &[&x2, cos], &[])?;
        let d = self.op("Mul", &[&x1, sin], &[])?;
        let second = self.op("Add", &[&c, &d], &[])?;
        self.op(
            "Concat",
            &[&first, &second],
            &[("axis", AttrValue::Int(-1))],
        )
    }
}

fn perm(p: &[i64]) -> (&'static str, AttrValue) {
    ("perm", AttrValue::Ints(p.to_vec()))
}

fn axis(a: i64) -> (&'static str, AttrValue) {
    ("axis", AttrValue::Int(a))
}

fn input<'n>(n: &'n NodeInfo, i: usize) -> Option<&'n str> {
    n.inputs
        .get(i)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// Runs `lower` with the context at opset 18 or later at least: the standard nodes written
/// in place of a fused one take their opset-18 forms (Squeeze, Unsqueeze and Slice axes as
/// inputs) whatever the model's opset.
fn at_opset_18(cx: &mut Ctx, n: &NodeInfo, lower: fn(&mut Ctx, &NodeInfo) -> R<()>) -> R<()> {
    let saved = cx.opset;
    cx.opset = saved.max(18);
    let r = lower(cx, n);
    cx.opset = saved;
    r
}

fn lower_gqa(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    at_opset_18(cx, n, gqa)
}

fn gqa(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let heads = attr_i(n, "num_heads", 0);
    let kv = attr_i(n, "kv_num_heads", 0);
    if heads <= 0 || kv <= 0 || heads % kv != 0 {
        return Err(format!(
            "num_heads {heads} must be a positive multiple of kv_num_heads {kv}"
        ));
    }
    if attr_i(n, "local_window_size", -1) != -1 {
        return Err("local_window_size (sliding-window attention) is not supported".into());
    }
    if attr_f(n, "softcap", 0.0) != 0.0 || attr_i(n, "smooth_softmax", 0) != 0 {
        return Err("softcap and smooth_softmax are not supported".into());
    }
    let rotary = attr_i(n, "do_rotary", 0) != 0;
    if rotary && attr_i(n, "rotary_interleaved", 0) != 0 {
        return Err("interleaved rotary is not supported".into());
    }
    let query = input(n, 0).ok_or("takes a query")?;
    let packed = match (input(n, 1), input(n, 2)) {
        (Some(k), Some(v)) => Some((k, v)),
        (None, None) => None,
        _ => return Err("takes both key and value, or neither (packed QKV)".into()),
    };
    let (past_k, past_v, seqlens) = match (input(n, 3), input(n, 4), input(n, 5)) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => return Err("takes past_key, past_value and seqlens_k".into()),
    };
    // Packed QKV: the query holds the query heads, then the key heads, then the value heads.
    let fused = cx
        .sym_shape(query)?
        .get(2)
        .and_then(|e| e.as_const())
        .ok_or("the query's hidden size must be fixed")?;
    let parts = if packed.is_some() {
        heads
    } else {
        heads + 2 * kv
    };
    if fused % parts != 0 {
        return Err(format!(
            "hidden size {fused} is not a multiple of {parts} heads"
        ));
    }
    let d = fused / parts;
    let width = heads * d;
    let group = heads / kv;
    let scale = attr_f(n, "scale", 0.0);
    let scale = if scale == 0.0 {
        1.0 / (d as f32).sqrt()
    } else {
        scale
    };
    let (cos_cache, sin_cache) = (input(n, 7), input(n, 8));
    if rotary && (cos_cache.is_none() || sin_cache.is_none()) {
        return Err("do_rotary needs cos_cache and sin_cache".into());
    }
    let outs: Vec<Option<&str>> = (0..3)
        .map(|i| {
            n.outputs
                .get(i)
                .map(String::as_str)
                .filter(|s| !s.is_empty())
        })
        .collect();
    let mut x = Expand::new(cx, n);
    let (q, k, v) = match packed {
        Some((k, v)) => (query.to_string(), k.to_string(), v.to_string()),
        None => {
            let last = x.ints(&[-1]);
            let mut cut = |from: i64, to: i64| -> R<String> {
                let (a, b) = (x.ints(&[from]), x.ints(&[to]));
                x.op("Slice", &[query, &a, &b, &last], &[])
            };
            (
                cut(0, width)?,
                cut(width, width + kv * d)?,
                cut(width + kv * d, width + 2 * kv * d)?,
            )
        }
    };
    let (q, k, v) = (q.as_str(), k.as_str(), v.as_str());

    // Positions of the new tokens: past .. past + S.
    let past = x.dim(past_k, 2)?;
    let seq = x.dim(q, 1)?;
    let total = x.op("Add", &[&past, &seq], &[])?;
    let z = x.ints(&[0]);
    let p0 = x.op("Squeeze", &[&past, &z], &[])?;
    let t0 = x.op("Squeeze", &[&total, &z], &[])?;
    let one = x.scalar_i64(1);
    let zero = x.scalar_i64(0);
    let q_pos = x.op("Range", &[&p0, &t0, &one], &[])?;
    let k_pos = x.op("Range", &[&zero, &t0, &one], &[])?;

    // [B,S,H*D] -> [B,KV,G,S,D] and [B,S,KV*D] -> [B,KV,S,D].
    let q_shape = x.ints(&[0, 0, kv, group, d]);
    let q5 = x.op("Reshape", &[q, &q_shape], &[])?;
    let mut q5 = x.op("Transpose", &[&q5], &[perm(&[0, 2, 3, 1, 4])])?;
    let kv_shape = x.ints(&[0, 0, kv, d]);
    let k4 = x.op("Reshape", &[k, &kv_shape], &[])?;
    let mut k4 = x.op("Transpose", &[&k4], &[perm(&[0, 2, 1, 3])])?;
    let v4 = x.op("Reshape", &[v, &kv_shape], &[])?;
    let v4 = x.op("Transpose", &[&v4], &[perm(&[0, 2, 1, 3])])?;
    if rotary {
        let cos = x.op("Gather", &[cos_cache.expect("checked"), &q_pos], &[axis(0)])?;
        let sin = x.op("Gather", &[sin_cache.expect("checked"), &q_pos], &[axis(0)])?;
        q5 = x.rotate(&q5, &cos, &sin, d / 2)?;
        k4 = x.rotate(&k4, &cos, &sin, d / 2)?;
    }
    let present_k = x.op_into("Concat", &[past_k, &k4], &[axis(2)], outs[1])?;
    let present_v = x.op_into("Concat", &[past_v, &v4], &[axis(2)], outs[2])?;

    // Scores [B,KV,G,S,T].
    let two = x.ints(&[2]);
    let k5 = x.op("Unsqueeze", &[&present_k, &two], &[])?;
    let kt = x.op("Transpose", &[&k5], &[perm(&[0, 1, 2, 4, 3])])?;
    let scores = x.op("MatMul", &[&q5, &kt], &[])?;
    let s = x.scalar_f32(scale);
    let scores = x.op("Mul", &[&scores, &s], &[])?;

    // Visible: key j <= query position, and j <= seqlens_k[b].
    let at0 = x.ints(&[0]);
    let at1 = x.ints(&[1]);
    let k_row = x.op("Unsqueeze", &[&k_pos, &at0], &[])?;
    let q_col = x.op("Unsqueeze", &[&q_pos, &at1], &[])?;
    let causal = x.op("LessOrEqual", &[&k_row, &q_col], &[])?;
    let last = x.op("Cast", &[seqlens], &[("to", AttrValue::Int(7))])?;
    let last = x.op("Unsqueeze", &[&last, &at1], &[])?;
    let valid = x.op("LessOrEqual", &[&k_row, &last], &[])?;
    let axes = x.ints(&[1, 2, 3]);
    let valid = x.op("Unsqueeze", &[&valid, &axes], &[])?;
    let visible = x.op("And", &[&causal, &valid], &[])?;
    let (open, shut) = (x.scalar_f32(0.0), x.scalar_f32(MASKED));
    let mask = x.op("Where", &[&visible, &open, &shut], &[])?;
    let scores = x.op("Add", &[&scores, &mask], &[])?;
    let probs = x.op("Softmax", &[&scores], &[axis(-1)])?;

    // [B,KV,G,S,D] -> [B,S,H*D].
    let v5 = x.op("Unsqueeze", &[&present_v, &two], &[])?;
    let o = x.op("MatMul", &[&probs, &v5], &[])?;
    let o = x.op("Transpose", &[&o], &[perm(&[0, 3, 1, 2, 4])])?;
    let o_shape = x.ints(&[0, 0, width]);
    x.op_into("Reshape", &[&o, &o_shape], &[], outs[0])?;
    Ok(())
}

/// RotaryEmbedding(input, position_ids, cos_cache, sin_cache): the rotation of each head
/// at its position, halves not interleaved; input [B,S,N*D] (num_heads or D from the
/// cache) or [B,N,S,D].
fn lower_rotary(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    at_opset_18(cx, n, rotary)
}

fn rotary(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 4 {
        return Err("takes input, position_ids, cos_cache and sin_cache".into());
    }
    if attr_i(n, "interleaved", 0) != 0 || attr_i(n, "is_packed_batching", 0) != 0 {
        return Err("interleaved rotary and packed batching are not supported".into());
    }
    if attr_f(n, "scale", 1.0) != 1.0 {
        return Err("scale other than 1 is not supported".into());
    }
    let shape = cx.sym_shape(i[0])?;
    let half = cx
        .sym_shape(i[2])?
        .get(1)
        .and_then(|e| e.as_const())
        .ok_or("cos_cache's second axis must be fixed")?;
    let d = 2 * half;
    let rot = attr_i(n, "rotary_embedding_dim", 0);
    if rot != 0 && rot != d {
        return Err(
            "partial rotary (rotary_embedding_dim below the head size) is not supported".into(),
        );
    }
    if cx.dt(i[0])? != DT::F32 {
        return Err("only float input".into());
    }
    let out = n.outputs[0].clone();
    let mut x = Expand::new(cx, n);
    let cos = x.op("Gather", &[i[2], i[1]], &[axis(0)])?;
    let sin = x.op("Gather", &[i[3], i[1]], &[axis(0)])?;
    match shape.len() {
        3 => {
            let width = shape[2].as_const().ok_or("the hidden size must be fixed")?;
            if width % d != 0 {
                return Err(format!(
                    "hidden size {width} is not a multiple of head size {d}"
                ));
            }
            let split = x.ints(&[0, 0, width / d, d]);
            let heads = x.op("Reshape", &[i[0], &split], &[])?;
            // cos [B,S,D/2] -> [B,S,1,D/2].
            let at2 = x.ints(&[2]);
            let cos = x.op("Unsqueeze", &[&cos, &at2], &[])?;
            let sin = x.op("Unsqueeze", &[&sin, &at2], &[])?;
            let r = x.rotate(&heads, &cos, &sin, half)?;
            let join = x.ints(&[0, 0, width]);
            x.op_into("Reshape", &[&r, &join], &[], Some(&out))?;
        }
        4 => {
            // cos [B,S,D/2] -> [B,1,S,D/2].
            let at1 = x.ints(&[1]);
            let cos = x.op("Unsqueeze", &[&cos, &at1], &[])?;
            let sin = x.op("Unsqueeze", &[&sin, &at1], &[])?;
            let r = x.rotate(i[0], &cos, &sin, half)?;
            x.op_into("Identity", &[&r], &[], Some(&out))?;
        }
        r => {
            return Err(format!(
                "input of rank {r}: takes [B,S,hidden] or [B,N,S,D]"
            ));
        }
    }
    Ok(())
}

/// ONNX Runtime's SimplifiedLayerNormalization: RMS normalization over the last axes.
fn lower_simplified_norm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let norm = NodeInfo {
        op_type: "RMSNormalization".into(),
        outputs: n.outputs.iter().take(1).cloned().collect(),
        ..n.clone()
    };
    super::super::norm::lower_layer_norm(cx, &norm)
}
