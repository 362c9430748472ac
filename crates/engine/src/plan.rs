//! The execution plan: everything the GPU does, decided ahead of time from static shapes.
//! Serializable (plan.json); the native runner and (later) the TypeScript generator both
//! consume it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tensor::{DT, HostTensor};

/// A tensor of the plan. Views (Reshape, Squeeze, ...) share their base's buffer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorDesc {
    pub shape: Vec<usize>,
    pub dt: DT,
    /// The tensor whose buffer this one uses (itself for a base tensor).
    pub base: String,
}

/// What a binding slot of a dispatch reads or writes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// A plan tensor (its base buffer).
    Tensor(String),
    /// A 4-byte placeholder for an unused optional input.
    Dummy,
    /// A scratch buffer of this many 32-bit words, private to the dispatch.
    Scratch(usize),
}

/// One compute dispatch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dispatch {
    /// The ONNX node it belongs to (its name, or `op -> output` when unnamed).
    pub node: String,
    pub op_type: String,
    /// The shader variant (serialised as its name, `ew_relu_f32`).
    pub kernel: m2w_kernels::Kernel,
    pub bindings: Vec<Binding>,
    /// The uniform block, as 32-bit words.
    pub params: Vec<u32>,
    pub workgroups: [u32; 3],
}

/// A GPU buffer of the plan. Intermediate tensors whose lifetimes do not overlap share one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BufferSlot {
    pub bytes: u64,
    /// Base tensors stored in it, in order of first use.
    pub tensors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub tensors: BTreeMap<String, TensorDesc>,
    /// Set by [`Plan::assign_buffers`]; empty means one buffer per base tensor.
    #[serde(default)]
    pub buffers: Vec<BufferSlot>,
    /// Constants uploaded once (folded values and weights), by tensor name.
    #[serde(skip)]
    pub constants: BTreeMap<String, HostTensor>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub dispatches: Vec<Dispatch>,
}

impl Plan {
    /// The kernels the plan dispatches, each once, sorted by name (the shaders/ of its
    /// engine folder).
    pub fn kernels(&self) -> Vec<m2w_kernels::Kernel> {
        let mut k: Vec<m2w_kernels::Kernel> = self.dispatches.iter().map(|d| d.kernel).collect();
        k.sort_by_key(|k| k.name());
        k.dedup();
        k
    }

    /// Plans GPU memory over tensor lifetimes: inputs, outputs and constants keep buffers of
    /// their own; every other base tensor lives from the dispatch that first touches it to
    /// the last one that reads it (views count for their base), and takes the smallest free
    /// buffer that fits (best fit), else a new one. A dispatch's outputs never share a
    /// buffer with its inputs: buffers are released only after the dispatch is placed.
    /// With `reuse` false every tensor keeps its own buffer (debug capture of any checkpoint).
    pub fn assign_buffers(&mut self, reuse: bool) {
        use std::collections::HashMap;
        let fixed: std::collections::HashSet<String> = self
            .inputs
            .iter()
            .chain(self.outputs.iter())
            .map(|t| self.base_of(t).to_string())
            .chain(self.constants.keys().cloned())
            .collect();
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut last: HashMap<String, usize> = HashMap::new();
        for (i, d) in self.dispatches.iter().enumerate() {
            for b in &d.bindings {
                if let Binding::Tensor(t) = b {
                    let base = self.base_of(t).to_string();
                    first.entry(base.clone()).or_insert(i);
                    last.insert(base, i);
                }
            }
        }
        let mut slots: Vec<BufferSlot> = Vec::new();
        let bytes_of = |p: &Plan, t: &str| {
            let d = &p.tensors[t];
            d.dt.buffer_bytes(d.shape.iter().product::<usize>())
        };
        // Fixed tensors first, one slot each.
        let mut order: Vec<&String> = self
            .tensors
            .iter()
            .filter(|(k, v)| &v.base == *k)
            .map(|(k, _)| k)
            .collect();
        order.sort_by_key(|t| (first.get(*t).copied().unwrap_or(usize::MAX), (*t).clone()));
        let mut free: Vec<usize> = Vec::new();
        let mut releases: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut current = 0usize;
        for t in order {
            let bytes = bytes_of(self, t);
            let start = first.get(t).copied().unwrap_or(usize::MAX);
            if !reuse || fixed.contains(t) || start == usize::MAX {
                slots.push(BufferSlot {
                    bytes,
                    tensors: vec![t.clone()],
                });
                continue;
            }
            // Release everything whose last use is before this tensor's first use.
            while current < start {
                if let Some(r) = releases.remove(&current) {
                    free.extend(r);
                }
                current += 1;
            }
            let pick = free
                .iter()
                .enumerate()
                .filter(|(_, s)| slots[**s].bytes >= bytes)
                .min_by_key(|(_, s)| slots[**s].bytes)
                .map(|(k, _)| k);
            let slot = match pick {
                Some(k) => free.swap_remove(k),
                None => {
                    slots.push(BufferSlot {
                        bytes,
                        tensors: vec![],
                    });
                    slots.len() - 1
                }
            };
            slots[slot].tensors.push(t.clone());
            releases.entry(last[t]).or_default().push(slot);
        }
        self.buffers = slots;
    }

    /// Total bytes of all buffers (after `assign_buffers`).
    pub fn buffer_bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.bytes).sum()
    }

    pub fn base_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.tensors
            .get(name)
            .map(|t| t.base.as_str())
            .unwrap_or(name)
    }
}

/// Workgroups for `n` threads of a 1-D kernel with `wg` threads per group, spilling into y
/// past the 65535-per-dimension limit (the kernels compute x + y * 65535 * wg).
pub fn groups_1d(n: usize, wg: usize) -> [u32; 3] {
    let groups = n.div_ceil(wg).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        [65535, groups.div_ceil(65535) as u32, 1]
    }
}
