//! Weights as plan constants: quantized blocks kept packed, float weights as f32.

use m2w_model::{DType, Model, TensorEntry};

use crate::tensor::HostTensor;

/// A weight as a constant: packed blocks as 32-bit words (stored as i32 bit patterns), or f32.
pub(super) fn weight(model: &Model, t: &TensorEntry) -> Result<(HostTensor, &'static str), String> {
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
