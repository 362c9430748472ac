//! A small node builder for the op modules' unit tests: one node, its inputs (fed at run
//! time) and constant inputs (known at plan time), lowered through the registry exactly
//! as `compile` does, then run on the WebGPU adapter (lavapipe on CI) and read back, so
//! each test can compare against a plain CPU reference written next to it.

use std::collections::{BTreeMap, HashMap};

use m2w_model::{AttrValue, DType, NodeInfo};

use super::{Ctx, find};
use crate::gpu::{Gpu, Runner};
use crate::plan::Plan;
use crate::tensor::HostTensor;

pub(crate) struct NodeTest {
    node: NodeInfo,
    opset: i64,
    inputs: Vec<(String, HostTensor)>,
    consts: Vec<(String, HostTensor)>,
    declared: Vec<(String, DType)>,
    rnn_chunk_work: Option<usize>,
}

/// A NodeTest of `op` with one output `y` at opset 21.
pub(crate) fn node(op: &str) -> NodeTest {
    NodeTest {
        node: NodeInfo {
            name: format!("{op}_0"),
            op_type: op.into(),
            domain: String::new(),
            inputs: vec![],
            outputs: vec!["y".into()],
            scope: String::new(),
            attributes: BTreeMap::new(),
        },
        opset: 21,
        inputs: vec![],
        consts: vec![],
        declared: vec![],
        rnn_chunk_work: None,
    }
}

impl NodeTest {
    /// Recurrent kernels cut the sequence into chunks of this many multiply-adds per
    /// thread (1: one step per dispatch).
    pub fn rnn_chunk_work(mut self, work: usize) -> Self {
        self.rnn_chunk_work = Some(work);
        self
    }

    /// A run-time input.
    pub fn input(mut self, name: &str, t: HostTensor) -> Self {
        self.node.inputs.push(name.into());
        self.inputs.push((name.into(), t));
        self
    }
    /// A plan-time constant input (a weight, a shape, axes).
    pub fn constant(mut self, name: &str, t: HostTensor) -> Self {
        self.node.inputs.push(name.into());
        self.consts.push((name.into(), t));
        self
    }
    /// Declares the graph's element type of an input stored as i32 (int8, uint8...).
    pub fn declare(mut self, name: &str, dtype: DType) -> Self {
        self.declared.push((name.into(), dtype));
        self
    }
    /// An absent optional input.
    pub fn skip_input(mut self) -> Self {
        self.node.inputs.push(String::new());
        self
    }
    pub fn attr(mut self, name: &str, v: AttrValue) -> Self {
        self.node.attributes.insert(name.into(), v);
        self
    }
    pub fn int(self, name: &str, v: i64) -> Self {
        self.attr(name, AttrValue::Int(v))
    }
    pub fn float(self, name: &str, v: f32) -> Self {
        self.attr(name, AttrValue::Float(v))
    }
    pub fn ints(self, name: &str, v: &[i64]) -> Self {
        self.attr(name, AttrValue::Ints(v.to_vec()))
    }
    pub fn string(self, name: &str, v: &str) -> Self {
        self.attr(name, AttrValue::String(v.into()))
    }
    pub fn domain(mut self, d: &str) -> Self {
        self.node.domain = d.into();
        self
    }
    pub fn opset(mut self, v: i64) -> Self {
        self.opset = v;
        self
    }
    /// Names the outputs (default: one output `y`).
    pub fn outputs(mut self, names: &[&str]) -> Self {
        self.node.outputs = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn op(&self) -> &str {
        &self.node.op_type
    }

    /// The plan of this one node, or the reason it is refused.
    pub fn plan(&self) -> Result<Plan, String> {
        let spec = find(&self.node.domain, &self.node.op_type, self.opset)?;
        let mut cx = Ctx::new(self.opset);
        if let Some(w) = self.rnn_chunk_work {
            cx.rnn_chunk_work = w;
        }
        for (name, dtype) in &self.declared {
            cx.declare(name, *dtype);
        }
        for (name, t) in &self.consts {
            cx.add_const(name, t.clone());
        }
        for (name, t) in &self.inputs {
            cx.add_input(name, t.shape.clone(), t.dt());
        }
        cx.lower(spec, &self.node)?;
        for o in self.node.outputs.iter().filter(|o| !o.is_empty()) {
            if !cx.plan.tensors.contains_key(o) {
                return Err(format!("output {o} was not produced"));
            }
            cx.plan.outputs.push(o.clone());
        }
        Ok(cx.plan)
    }

    /// Lowers and runs the node; returns its outputs in order. Outputs folded on the host
    /// come back as their constant values.
    pub fn run(&self) -> Result<Vec<HostTensor>, String> {
        let plan = self.plan()?;
        let outputs = plan.outputs.clone();
        let folded: HashMap<String, HostTensor> = outputs
            .iter()
            .filter_map(|o| {
                let base = plan.base_of(o);
                plan.constants.get(base).map(|c| {
                    (
                        o.clone(),
                        c.reshaped(plan.tensors[o].fixed_shape().expect("a static plan")),
                    )
                })
            })
            .collect();
        let gpu = Gpu::new()?;
        let runner = Runner::new(&gpu, plan)?;
        let feed: HashMap<String, HostTensor> = self.inputs.iter().cloned().collect();
        let to_read: Vec<String> = outputs
            .iter()
            .filter(|o| !folded.contains_key(*o))
            .cloned()
            .collect();
        let mut got = runner.run(&feed, &to_read)?;
        got.extend(folded);
        Ok(outputs
            .iter()
            .map(|o| got.remove(o).expect("read back"))
            .collect())
    }
}

/// Seeded values in [-1, 1) (xorshift), so CPU references see the same numbers.
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `got` equals `want` within atol + rtol * |want|; NaN only matches NaN and infinities
/// match exactly.
pub(crate) fn assert_close(got: &HostTensor, shape: &[usize], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.shape, shape, "shape");
    let g = match &got.data {
        crate::tensor::Data::F32(v) => v,
        other => panic!("expected f32, got {other:?}"),
    };
    assert_eq!(g.len(), want.len());
    for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
        let ok = if b.is_nan() || a.is_nan() {
            a.is_nan() && b.is_nan()
        } else if b.is_infinite() || a.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= atol + rtol * b.abs()
        };
        assert!(ok, "element {i}: {a} vs reference {b}");
    }
}
