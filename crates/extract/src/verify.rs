//! `extract --verify`: re-reads what was written and compares every tensor with the source.
//!
//! The written side is decoded from the files alone (manifest + blobs, checked against their
//! sha256). The source side comes from the model reader: plain tensors as stored, GGUF block
//! types through candle's dequantizer (independent of our repacking), folded quantization
//! through the ONNX formula. Integers must match exactly; floats within the rounding of
//! the target dtype.

use std::path::Path;

use half::f16;
use m2w_model::quant;
use m2w_model::{DType, Model};

use crate::{ExtractError, Manifest, TensorInfo, pack, read_manifest};

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub checked: usize,
    pub worst_abs: f64,
    pub worst_tensor: String,
    pub failures: Vec<String>,
}

enum Values {
    Float(Vec<f64>),
    Int(Vec<i128>),
}

fn decode_written(t: &TensorInfo, bytes: &[u8]) -> Option<Values> {
    let ints =
        |n: usize, f: &dyn Fn(&[u8]) -> i128| Values::Int(bytes.chunks_exact(n).map(f).collect());
    Some(match t.gpu_dtype.as_str() {
        "f32" => Values::Float(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
        ),
        "f16" => Values::Float(
            bytes
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
        ),
        "i32" => ints(4, &|c| i32::from_le_bytes(c.try_into().unwrap()) as i128),
        "u32" => ints(4, &|c| u32::from_le_bytes(c.try_into().unwrap()) as i128),
        "i64" => ints(8, &|c| i64::from_le_bytes(c.try_into().unwrap()) as i128),
        "u64" => ints(8, &|c| u64::from_le_bytes(c.try_into().unwrap()) as i128),
        kind if pack::BlockKind::from_name(kind).is_some() => Values::Float(
            pack::BlockKind::from_name(kind)
                .expect("checked")
                .unpack(bytes)
                .into_iter()
                .map(f64::from)
                .collect(),
        ),
        _ => return None,
    })
}

fn source_ints(bytes: &[u8], dtype: DType) -> Option<Vec<i128>> {
    let v: Vec<i128> = match dtype {
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as i128)
            .collect(),
        DType::U64 => bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i128)
            .collect(),
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i128)
            .collect(),
        DType::U32 => bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i128)
            .collect(),
        DType::I16 => bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i128)
            .collect(),
        DType::U16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i128)
            .collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as i128).collect(),
        DType::U8 | DType::Bool => bytes.iter().map(|&b| b as i128).collect(),
        _ => return None,
    };
    Some(v)
}

/// Allowed |written - source| for a float tensor stored as `gpu_dtype`.
fn tolerance(gpu_dtype: &str, source: f64) -> f64 {
    match gpu_dtype {
        // f16 rounding: half an ulp is 2^-11 relative; subnormals step by 2^-24.
        "f16" => source.abs() * 2f64.powi(-11) + 2f64.powi(-24),
        // Repacked blocks: the same d*q(+m) in f32, possibly fused differently from candle.
        "q8_0" | "q4_0" | "q4_1" => source.abs() * 1e-6 + 1e-7,
        // f32 from f32/f16/bf16 is exact; from f64 it rounds once.
        _ => source.abs() * 2f64.powi(-24),
    }
}

pub fn verify(model_path: &Path, out: &Path) -> Result<VerifyReport, ExtractError> {
    let manifest: Manifest = read_manifest(out)?;
    let model = Model::open(model_path)?;
    let mut report = VerifyReport::default();
    let sha = model.file_sha256()?;
    if sha != manifest.source.sha256 {
        report.failures.push(format!(
            "manifest was made from a different file (sha256 {} vs {sha})",
            manifest.source.sha256
        ));
        return Ok(report);
    }
    let mut blobs = std::collections::HashMap::new();
    for f in &manifest.files {
        let p = out.join(&f.name);
        let bytes = std::fs::read(&p).map_err(|e| ExtractError::BadOutput {
            path: p.clone(),
            what: format!("cannot read: {e}"),
        })?;
        if bytes.len() as u64 != f.bytes || m2w_model::io::sha256_bytes(&bytes) != f.sha256 {
            report.failures.push(format!(
                "{}: size or sha256 differs from the manifest",
                f.name
            ));
        }
        blobs.insert(f.name.clone(), bytes);
    }
    let folds: Vec<_> = quant::find(&model)
        .into_iter()
        .filter(|q| q.foldable())
        .collect();
    for t in &manifest.tensors {
        report.checked += 1;
        let Some(blob) = blobs.get(&t.file) else {
            report
                .failures
                .push(format!("{}: file {} not in the manifest", t.key, t.file));
            continue;
        };
        let end = t
            .offset
            .checked_add(t.length)
            .filter(|&e| e <= blob.len() as u64);
        let Some(end) = end else {
            report.failures.push(format!(
                "{}: range {}+{} outside {}",
                t.key, t.offset, t.length, t.file
            ));
            continue;
        };
        if t.offset % manifest.alignment != 0 {
            report.failures.push(format!(
                "{}: offset {} not aligned to {}",
                t.key, t.offset, manifest.alignment
            ));
        }
        let bytes = &blob[t.offset as usize..end as usize];
        let Some(written) = decode_written(t, bytes) else {
            report
                .failures
                .push(format!("{}: unknown gpu dtype {}", t.key, t.gpu_dtype));
            continue;
        };
        let fold = folds.iter().find(|q| {
            q.output.as_deref() == Some(t.key.as_str()) && t.source.first() == Some(&q.quantized)
        });
        let expected_n: u64 = t.shape.iter().product();
        match written {
            Values::Int(w) => {
                let Some(src) = model.tensor(&t.source[0]) else {
                    report.failures.push(format!(
                        "{}: source tensor {} not in the model",
                        t.key, t.source[0]
                    ));
                    continue;
                };
                let raw = model.read_raw(src)?;
                let s = source_ints(&raw.bytes, src.dtype).unwrap_or_default();
                if s != w {
                    let i = s.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
                    report.failures.push(format!(
                        "{}: integers differ (n {} vs {}; first at {i})",
                        t.key,
                        w.len(),
                        s.len()
                    ));
                }
            }
            Values::Float(w) => {
                let src: Vec<f64> = match fold {
                    Some(q) => quant::dequantize(&model, q)?
                        .into_iter()
                        .map(f64::from)
                        .collect(),
                    None => {
                        let Some(src) = model.tensor(&t.source[0]) else {
                            report.failures.push(format!(
                                "{}: source tensor {} not in the model",
                                t.key, t.source[0]
                            ));
                            continue;
                        };
                        model.read_f32(src)?.into_iter().map(f64::from).collect()
                    }
                };
                if src.len() != w.len() || w.len() as u64 != expected_n {
                    report.failures.push(format!(
                        "{}: {} values written, source has {}, shape needs {expected_n}",
                        t.key,
                        w.len(),
                        src.len()
                    ));
                    continue;
                }
                let mut worst = (0f64, 0usize);
                let mut bad = None;
                for (i, (a, b)) in w.iter().zip(&src).enumerate() {
                    let same_nan = a.is_nan() && b.is_nan();
                    let err = if same_nan || a == b {
                        0.0
                    } else {
                        (a - b).abs()
                    };
                    if err > worst.0 || err.is_nan() {
                        worst = (err, i);
                    }
                    // NaN errors fail too (`<=` is false for NaN); an exact match passes
                    // whatever the tolerance of a NaN or infinite source value would be.
                    let within = err == 0.0 || err <= tolerance(&t.gpu_dtype, *b);
                    if bad.is_none() && !within {
                        bad = Some(i);
                    }
                }
                if worst.0 > report.worst_abs {
                    report.worst_abs = worst.0;
                    report.worst_tensor = t.key.clone();
                }
                if let Some(i) = bad {
                    report.failures.push(format!(
                        "{}: value {i} is {} but the source has {} ({})",
                        t.key, w[i], src[i], t.transform
                    ));
                }
            }
        }
    }
    Ok(report)
}
