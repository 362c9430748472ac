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
        d if m2w_extract::BlockKind::of(d).is_some() => {
            let kind = m2w_extract::BlockKind::of(d).expect("checked");
            (words(kind.pack(&raw()?)), kind.name())
        }
        DType::F32 | DType::F16 | DType::BF16 => (
            HostTensor::f32(
                t.shape.iter().map(|&d| d as usize).collect(),
                model.read_f32(t).map_err(|e| e.to_string())?,
            ),
            "f32",
        ),
        other => {
            return Err(format!(
                "{}: {other} weights are not supported yet (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, f32, f16, bf16 are)",
                t.name
            ));
        }
    })
}

/// The largest storage binding every WebGPU device allows (the default
/// `maxStorageBufferBindingSize`); lavapipe allows exactly this much too.
pub(super) const MAX_BINDING_BYTES: usize = 128 << 20;

/// A packed table (`words`, 32-bit words of `rows` equal rows) larger than `max_bytes`, as
/// row slices that each fit: (`name@row0`, first row, rows, words). None when it fits.
pub(super) fn split_rows(
    name: &str,
    words: &HostTensor,
    rows: usize,
    max_bytes: usize,
) -> Option<Vec<(String, usize, usize, HostTensor)>> {
    if words.len() * 4 <= max_bytes || rows == 0 || !words.len().is_multiple_of(rows) {
        return None;
    }
    let row_words = words.len() / rows;
    let per = (max_bytes / (row_words * 4)).max(1);
    let all = words.as_i64();
    Some(
        (0..rows)
            .step_by(per)
            .map(|row0| {
                let n = per.min(rows - row0);
                let part = all[row0 * row_words..(row0 + n) * row_words].to_vec();
                (
                    format!("{name}@{row0}"),
                    row0,
                    n,
                    HostTensor::i64(vec![part.len()], part),
                )
            })
            .collect(),
    )
}
