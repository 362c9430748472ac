//! f16 weight storage (method phases 4 and 8): which float constants of a plan may be kept
//! as IEEE half on a device with shader-f16, and the plan that does so.
//!
//! A constant qualifies when every dispatch that reads it is a kernel with an f16-weight twin
//! (`Kernel::f16_weight_twin`: matmul, conv) and reads it at the twin's half binding, and when
//! its values fit f16 (finite, |v| <= 65504; smaller ones round or flush to zero). The twins
//! read the half weight as f32 and accumulate in f32, so only the weights' rounding (relative
//! 2^-11) changes the results: the GPU traffic and memory of those weights halve.
//!
//! The same [`HalfWeights`] table feeds the native runner ([`apply`]: a plan with f16
//! constants, for tests and reports) and the generated packages, which keep their f32
//! weights, convert the listed ones on the GPU at load (`to_half`), check the first listed
//! dispatch against its f32 kernel on the real weights, and fall back to f32 when the device
//! has no shader-f16 or the check fails.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::plan::{Binding, Plan};
use crate::tensor::{DT, Data, HostTensor};
use m2w_kernels::Kernel;

/// Weights smaller than this stay f32: converting them saves nothing worth a dispatch.
pub const MIN_ELEMENTS: usize = 1024;

/// The largest finite f16.
const F16_MAX: f32 = 65504.0;

/// What a plan can keep as f16.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HalfWeights {
    /// Constants stored as f16 (base tensors of their own buffer), in plan order.
    pub weights: Vec<String>,
    /// (dispatch index, twin kernel) for every dispatch that reads one of them.
    pub dispatches: Vec<(usize, Kernel)>,
    /// Float constants read by a twin-capable kernel that stay f32, with why.
    pub kept: Vec<(String, String)>,
}

impl HalfWeights {
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Bytes the weights take as f32 and as f16.
    pub fn bytes(&self, plan: &Plan) -> (u64, u64) {
        self.weights.iter().fold((0, 0), |(a, b), w| {
            let n = crate::tensor::numel(&plan.constants[w].shape) as u64;
            (
                a + DT::F32.buffer_bytes(n as usize),
                b + DT::F16.buffer_bytes(n as usize),
            )
        })
    }
}

/// The constants of `plan` that may be stored as f16, and the dispatches that then use the
/// twins. Decided from the plan alone: nothing here is specific to a model.
pub fn half_weights(plan: &Plan) -> HalfWeights {
    // Every read of each base tensor: (dispatch, kernel, binding index).
    let mut reads: BTreeMap<&str, Vec<(usize, Kernel, u32)>> = BTreeMap::new();
    for (i, d) in plan.dispatches.iter().enumerate() {
        for (b, binding) in d.bindings.iter().enumerate() {
            if let Binding::Tensor(t) = binding {
                reads
                    .entry(plan.base_of(t))
                    .or_default()
                    .push((i, d.kernel, b as u32));
            }
        }
    }
    let io: BTreeSet<&str> = plan
        .inputs
        .iter()
        .chain(&plan.outputs)
        .map(|t| plan.base_of(t))
        .chain(plan.syncs.iter().map(|s| plan.base_of(&s.tensor)))
        .collect();
    let mut out = HalfWeights::default();
    for (name, value) in &plan.constants {
        let Data::F32(v) = &value.data else {
            continue;
        };
        let Some(r) = reads.get(name.as_str()) else {
            continue;
        };
        // Only constants some twin could read are worth a word in the report.
        if !r.iter().any(|(_, k, _)| k.f16_weight_twin().is_some()) {
            continue;
        }
        let why = if plan.base_of(name) != name {
            Some("a view of another tensor".to_string())
        } else if io.contains(name.as_str()) {
            Some("a graph input or output, or read back at a sync point".into())
        } else if v.len() < MIN_ELEMENTS {
            Some(format!("{} elements (under {MIN_ELEMENTS})", v.len()))
        } else if let Some((i, k, b)) = r
            .iter()
            .find(|(_, k, b)| k.f16_weight_twin().map(|t| t.1) != Some(*b))
        {
            Some(format!(
                "dispatch {i} ({k}) reads it at binding {b}, which has no f16 form"
            ))
        } else if let Some(x) = v.iter().find(|x| !x.is_finite() || x.abs() > F16_MAX) {
            Some(format!("holds {x}, outside f16's range"))
        } else if plan
            .tensors
            .iter()
            .any(|(t, d)| t != name && d.base == *name && d.dt != DT::F32)
        {
            Some("viewed as another type".into())
        } else {
            None
        };
        match why {
            Some(w) => out.kept.push((name.clone(), w)),
            None => {
                out.weights.push(name.clone());
                for &(i, k, _) in r {
                    out.dispatches.push((i, k.f16_weight_twin().unwrap().0));
                }
            }
        }
    }
    out.dispatches.sort();
    out.dispatches.dedup();
    out
}

/// Rounds f32 values to f16 (nearest, ties to even), packed two per word, element 2i in
/// the low half of word i.
pub fn to_half_words(v: &[f32]) -> Vec<u32> {
    v.chunks(2)
        .map(|p| {
            let lo = ::half::f16::from_f32(p[0]).to_bits() as u32;
            let hi = p
                .get(1)
                .map_or(0, |&x| ::half::f16::from_f32(x).to_bits() as u32);
            lo | (hi << 16)
        })
        .collect()
}

/// `plan` with `hw`'s weights stored as f16 and its dispatches on the twins (buffers
/// re-assigned for the smaller constants). The device must have shader-f16.
pub fn apply(plan: &Plan, hw: &HalfWeights) -> Plan {
    let mut p = plan.clone();
    for w in &hw.weights {
        let c = &p.constants[w];
        let Data::F32(v) = &c.data else {
            unreachable!("half_weights lists f32 constants only")
        };
        let words = to_half_words(v);
        let shape = c.shape.clone();
        p.constants.insert(
            w.clone(),
            HostTensor {
                shape,
                data: Data::Packed { dt: DT::F16, words },
            },
        );
        for d in p.tensors.values_mut().filter(|d| d.base == *w) {
            d.dt = DT::F16;
        }
    }
    for &(i, k) in &hw.dispatches {
        p.dispatches[i].kernel = k;
    }
    if !p.buffers.is_empty() {
        for slot in &mut p.buffers {
            if let [t] = slot.tensors.as_slice()
                && hw.weights.contains(t)
            {
                slot.bytes = DT::F16.buffer_bytes(crate::tensor::numel(&p.constants[t].shape));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_words_round_to_nearest_even_and_pack_low_first() {
        // 1 + 2^-11 is halfway between 1 and the next f16: ties to even gives 1.
        let w = to_half_words(&[1.0, -2.0, 1.0 + 2f32.powi(-11)]);
        assert_eq!(w, vec![0xc000_3c00, 0x0000_3c00]);
        assert_eq!(to_half_words(&[65504.0, 1e-8]), vec![0x0000_7bff]);
    }
}
