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
    /// Kernel variant name (m2w_kernels::SHADERS).
    pub kernel: String,
    pub bindings: Vec<Binding>,
    /// The uniform block, as 32-bit words.
    pub params: Vec<u32>,
    pub workgroups: [u32; 3],
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub tensors: BTreeMap<String, TensorDesc>,
    /// Constants uploaded once (folded values and weights), by tensor name.
    #[serde(skip)]
    pub constants: BTreeMap<String, HostTensor>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub dispatches: Vec<Dispatch>,
}

impl Plan {
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
