//! Quantization as it appears in model graphs, and its exact dequantization.
//!
//! ONNX exporters quantize weights in several shapes; each is recognised from the graph:
//! - `DequantizeLinear(q, scale[, zero_point])` with constant inputs (QDQ), per-tensor,
//!   per-axis or blocked;
//! - in-graph dequantization `Cast(q) [-> Sub(zero_point)] -> Mul(scale)` with constant
//!   int8/uint8 `q` (what the MiniLM int8 fixture does), any broadcastable scale;
//! - `MatMulInteger` / `DynamicQuantizeLinear` (int8 weights, activations quantized at run
//!   time), `MatMulNBits` (com.microsoft blocked 2-8 bit), `QLinearMatMul`/`QLinearConv`.
//!
//! The first two are folded into f32 weights by `extract` (the methodology's advice:
//! dequantize at load time, run f32 kernels); the others are reported and kept as stored.

use std::collections::HashMap;

use crate::{DType, InputError, Model, NodeInfo, TensorEntry};

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    DequantizeLinear,
    CastMul,
    MatMulInteger,
    MatMulNBits,
    QLinear,
    GgufBlock,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    PerTensor,
    /// Axes (of the quantized tensor) along which the scale varies.
    PerAxis {
        axes: Vec<usize>,
    },
    Blocked {
        axis: usize,
        block_size: u64,
    },
}

/// One recognised quantized weight.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuantizedWeight {
    pub scheme: Scheme,
    /// Key of the integer tensor.
    pub quantized: String,
    pub scale: Option<String>,
    pub zero_point: Option<String>,
    pub granularity: Option<Granularity>,
    /// For foldable schemes: the graph tensor that holds the dequantized value (the last
    /// folded node's output). `extract` stores the f32 weight under this key.
    pub output: Option<String>,
    /// Labels of the nodes that fold into the weight.
    pub folded_nodes: Vec<String>,
    /// Free text for reports (bits, op).
    pub detail: String,
}

impl QuantizedWeight {
    pub fn foldable(&self) -> bool {
        self.output.is_some()
    }

    pub fn describe(&self) -> String {
        let g = match &self.granularity {
            Some(Granularity::PerTensor) => " per-tensor".to_string(),
            Some(Granularity::PerAxis { axes }) => format!(" per-axis {axes:?}"),
            Some(Granularity::Blocked { axis, block_size }) => {
                format!(" blocked axis {axis} size {block_size}")
            }
            None => String::new(),
        };
        format!(
            "{}{}{}",
            self.detail,
            g,
            if self.zero_point.is_some() {
                " with zero point"
            } else {
                ""
            }
        )
    }
}

/// Resolves a node input name to a weight, searching the node's scope then its parents
/// (ONNX subgraphs may read outer-scope tensors).
pub fn resolve<'m>(model: &'m Model, scope: &str, name: &str) -> Option<&'m TensorEntry> {
    if name.is_empty() {
        return None;
    }
    let mut s = scope.to_string();
    loop {
        let key = if s.is_empty() {
            name.to_string()
        } else {
            format!("{s}::{name}")
        };
        if let Some(t) = model.tensor(&key) {
            return Some(t);
        }
        if s.is_empty() {
            return None;
        }
        s = match s.rfind('/') {
            Some(i) => s[..i].to_string(),
            None => String::new(),
        };
    }
}

fn key_in_scope(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}::{name}")
    }
}

fn is_int_weight(t: &TensorEntry) -> bool {
    matches!(
        t.dtype,
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32
    )
}

/// Finds every quantized weight in an ONNX model's graph (empty for other formats).
pub fn find(model: &Model) -> Vec<QuantizedWeight> {
    let Some(graph) = &model.graph else {
        return Vec::new();
    };
    // How often each name is read anywhere; a folded intermediate must have one reader
    // and must not be a graph output.
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in &graph.nodes {
        for i in &n.inputs {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.outputs {
        *readers.entry(o.name.as_str()).or_default() += 2;
    }
    let mut by_input: HashMap<(&str, &str), Vec<&NodeInfo>> = HashMap::new();
    for n in &graph.nodes {
        for i in &n.inputs {
            by_input
                .entry((n.scope.as_str(), i.as_str()))
                .or_default()
                .push(n);
        }
    }
    let single_reader = |scope: &str, name: &str| -> Option<&NodeInfo> {
        if readers.get(name).copied() != Some(1) {
            return None;
        }
        by_input
            .get(&(scope, name))
            .and_then(|v| (v.len() == 1).then(|| v[0]))
    };
    let weight = |n: &NodeInfo, i: usize| n.inputs.get(i).and_then(|x| resolve(model, &n.scope, x));

    let mut out = Vec::new();
    for n in &graph.nodes {
        let standard = n.domain.is_empty() || n.domain == "ai.onnx";
        match (n.op_type.as_str(), standard) {
            ("DequantizeLinear", _) => {
                let (Some(q), Some(scale)) = (weight(n, 0), weight(n, 1)) else {
                    continue;
                };
                if !is_int_weight(q) {
                    continue;
                }
                let zp = weight(n, 2);
                let rank = q.shape.len() as i64;
                let mut axis = n.attr_int("axis").unwrap_or(1);
                if axis < 0 {
                    axis += rank;
                }
                let block = n.attr_int("block_size").unwrap_or(0);
                let granularity = if scale.elements() == 1 {
                    Granularity::PerTensor
                } else if block > 0 {
                    Granularity::Blocked {
                        axis: axis.max(0) as usize,
                        block_size: block as u64,
                    }
                } else {
                    Granularity::PerAxis {
                        axes: vec![axis.max(0) as usize],
                    }
                };
                out.push(QuantizedWeight {
                    scheme: Scheme::DequantizeLinear,
                    quantized: q.name.clone(),
                    scale: Some(scale.name.clone()),
                    zero_point: zp.map(|z| z.name.clone()),
                    granularity: Some(granularity),
                    output: n.outputs.first().map(|o| key_in_scope(&n.scope, o)),
                    folded_nodes: vec![n.label()],
                    detail: format!("{} DequantizeLinear", q.dtype),
                });
            }
            ("Cast", true) => {
                let Some(q) = weight(n, 0) else { continue };
                let to = n.attr_int("to").unwrap_or(0);
                if !matches!(q.dtype, DType::I8 | DType::U8) || !matches!(to, 1 | 10 | 16) {
                    continue;
                }
                let Some(cast_out) = n.outputs.first() else {
                    continue;
                };
                let Some(mut next) = single_reader(&n.scope, cast_out) else {
                    continue;
                };
                let mut folded = vec![n.label()];
                let mut zero_point = None;
                let mut prev_out = cast_out.clone();
                if next.op_type == "Sub" && next.inputs.first() == Some(cast_out) {
                    let Some(zp) = weight(next, 1) else { continue };
                    zero_point = Some(zp.name.clone());
                    folded.push(next.label());
                    let Some(sub_out) = next.outputs.first() else {
                        continue;
                    };
                    prev_out = sub_out.clone();
                    match single_reader(&next.scope, sub_out) {
                        Some(m) => next = m,
                        None => continue,
                    }
                }
                if next.op_type != "Mul" {
                    continue;
                }
                let other = if next.inputs.first() == Some(&prev_out) {
                    1
                } else {
                    0
                };
                let Some(scale) = weight(next, other) else {
                    continue;
                };
                if !scale.dtype.is_float() || scale.shape.len() > q.shape.len() {
                    continue;
                }
                folded.push(next.label());
                let granularity = broadcast_granularity(&q.shape, &scale.shape);
                out.push(QuantizedWeight {
                    scheme: Scheme::CastMul,
                    quantized: q.name.clone(),
                    scale: Some(scale.name.clone()),
                    zero_point,
                    granularity,
                    output: next.outputs.first().map(|o| key_in_scope(&next.scope, o)),
                    folded_nodes: folded,
                    detail: format!("{} in-graph Cast->Mul", q.dtype),
                });
            }
            ("MatMulInteger", true) | ("ConvInteger", true) => {
                if let Some(q) = weight(n, 1).filter(|q| is_int_weight(q)) {
                    out.push(QuantizedWeight {
                        scheme: Scheme::MatMulInteger,
                        quantized: q.name.clone(),
                        scale: None,
                        zero_point: weight(n, 3).map(|z| z.name.clone()),
                        granularity: None,
                        output: None,
                        folded_nodes: vec![],
                        detail: format!(
                            "{} {} (activations quantized at run time)",
                            q.dtype, n.op_type
                        ),
                    });
                }
            }
            ("QLinearMatMul", true) | ("QLinearConv", true) => {
                // Both ops take (w, w_scale, w_zero_point) as inputs 3, 4, 5.
                let (wi, si, zi) = (3, 4, 5);
                if let Some(q) = weight(n, wi).filter(|q| is_int_weight(q)) {
                    out.push(QuantizedWeight {
                        scheme: Scheme::QLinear,
                        quantized: q.name.clone(),
                        scale: weight(n, si).map(|s| s.name.clone()),
                        zero_point: weight(n, zi).map(|z| z.name.clone()),
                        granularity: None,
                        output: None,
                        folded_nodes: vec![],
                        detail: format!("{} {}", q.dtype, n.op_type),
                    });
                }
            }
            ("MatMulNBits", false) => {
                if let Some(q) = weight(n, 1) {
                    out.push(QuantizedWeight {
                        scheme: Scheme::MatMulNBits,
                        quantized: q.name.clone(),
                        scale: weight(n, 2).map(|s| s.name.clone()),
                        zero_point: weight(n, 3).map(|z| z.name.clone()),
                        granularity: Some(Granularity::Blocked {
                            axis: 1,
                            block_size: n.attr_int("block_size").unwrap_or(0).max(0) as u64,
                        }),
                        output: None,
                        folded_nodes: vec![],
                        detail: format!(
                            "{}-bit MatMulNBits ({})",
                            n.attr_int("bits").unwrap_or(4),
                            n.domain
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Granularity of a scale broadcast (numpy rules, right-aligned) against `shape`.
fn broadcast_granularity(shape: &[u64], scale: &[u64]) -> Option<Granularity> {
    let off = shape.len() - scale.len();
    let mut axes = Vec::new();
    for (i, &s) in scale.iter().enumerate() {
        let d = shape[off + i];
        if s == d && s > 1 {
            axes.push(off + i);
        } else if s != 1 {
            return None;
        }
    }
    Some(if axes.is_empty() {
        Granularity::PerTensor
    } else {
        Granularity::PerAxis { axes }
    })
}

/// Maps each flat index of `shape` to the flat index of a tensor of shape `small`
/// broadcast against it (numpy rules, right-aligned; `small` dims are 1 or equal).
fn broadcast_strides(shape: &[u64], small: &[u64]) -> Vec<u64> {
    let off = shape.len() - small.len();
    let mut strides = vec![0u64; shape.len()];
    let mut acc = 1u64;
    for i in (0..small.len()).rev() {
        if small[i] != 1 {
            strides[off + i] = acc;
        }
        acc *= small[i];
    }
    strides
}

fn gather_index(flat: u64, shape: &[u64], strides: &[u64]) -> usize {
    let mut rem = flat;
    let mut idx = 0u64;
    for d in (0..shape.len()).rev() {
        let c = rem % shape[d];
        rem /= shape[d];
        idx += c * strides[d];
    }
    idx as usize
}

/// Dequantizes a foldable weight exactly as ONNX defines it, in f32:
/// `(q - zero_point) * scale`, the subtraction done in f32 like the graph's Sub would.
pub fn dequantize(model: &Model, w: &QuantizedWeight) -> Result<Vec<f32>, InputError> {
    let err = |what: String| {
        InputError::new(
            &model.path,
            format!("quantized weight '{}': {what}", w.quantized),
        )
    };
    let q_entry = model
        .tensor(&w.quantized)
        .ok_or_else(|| err("missing".into()))?;
    let q = model.read_f32(q_entry)?;
    let s_entry = w
        .scale
        .as_ref()
        .and_then(|s| model.tensor(s))
        .ok_or_else(|| err("no scale".into()))?;
    let scale = model.read_f32(s_entry)?;
    let zp = match &w.zero_point {
        Some(z) => {
            let e = model
                .tensor(z)
                .ok_or_else(|| err("zero point missing".into()))?;
            Some((model.read_f32(e)?, e.shape.clone()))
        }
        None => None,
    };
    let shape = &q_entry.shape;
    // Shape of scale/zero-point as seen by the broadcast.
    let expand = |small: &[u64]| -> Result<Vec<u64>, InputError> {
        match (&w.scheme, &w.granularity) {
            (_, Some(Granularity::PerTensor)) => Ok(vec![1; shape.len()]),
            (Scheme::DequantizeLinear, Some(Granularity::PerAxis { axes })) => {
                let mut s = vec![1; shape.len()];
                s[axes[0]] = small.iter().product();
                if s[axes[0]] != shape[axes[0]] {
                    return Err(err(format!(
                        "scale has {} values for axis of {}",
                        s[axes[0]], shape[axes[0]]
                    )));
                }
                Ok(s)
            }
            (Scheme::CastMul, Some(Granularity::PerAxis { .. })) => Ok(small.to_vec()),
            (_, Some(Granularity::Blocked { .. })) => Ok(small.to_vec()),
            _ => Err(err("granularity not recognised".into())),
        }
    };
    let s_shape = expand(&s_entry.shape)?;
    let scale_index: Box<dyn Fn(u64) -> usize> = match &w.granularity {
        Some(Granularity::Blocked { axis, block_size }) => {
            let axis = *axis;
            let bs = *block_size;
            if s_shape.len() != shape.len() {
                return Err(err("blocked scale rank differs".into()));
            }
            let mut sstrides = vec![0u64; shape.len()];
            let mut acc = 1;
            for d in (0..shape.len()).rev() {
                sstrides[d] = acc;
                acc *= s_shape[d];
            }
            let shape = shape.clone();
            Box::new(move |flat| {
                let mut rem = flat;
                let mut idx = 0u64;
                for d in (0..shape.len()).rev() {
                    let mut c = rem % shape[d];
                    rem /= shape[d];
                    if d == axis {
                        c /= bs;
                    }
                    idx += c * sstrides[d];
                }
                idx as usize
            })
        }
        _ => {
            let strides = broadcast_strides(shape, &s_shape);
            let shape = shape.clone();
            Box::new(move |flat| gather_index(flat, &shape, &strides))
        }
    };
    let n = q.len() as u64;
    let mut out = Vec::with_capacity(q.len());
    for i in 0..n {
        let si = scale_index(i);
        let zpv = match &zp {
            Some((z, _)) => *z
                .get(si)
                .ok_or_else(|| err("zero point shape does not match scale".into()))?,
            None => 0.0,
        };
        let s = *scale
            .get(si)
            .ok_or_else(|| err("scale shape does not broadcast".into()))?;
        out.push((q[i as usize] - zpv) * s);
    }
    Ok(out)
}
