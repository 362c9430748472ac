//! `.npy` files for activations: written with npyz (C order, little-endian), hashed, and
//! read back for comparisons.

use std::path::Path;

use npyz::WriterBuilder;

/// A dense tensor in host memory with one of the dtypes checkpoints use.
#[derive(Clone, Debug, PartialEq)]
pub enum HostTensor {
    F32(Vec<u64>, Vec<f32>),
    F64(Vec<u64>, Vec<f64>),
    F16(Vec<u64>, Vec<half::f16>),
    I64(Vec<u64>, Vec<i64>),
    I32(Vec<u64>, Vec<i32>),
    I8(Vec<u64>, Vec<i8>),
    U8(Vec<u64>, Vec<u8>),
    Bool(Vec<u64>, Vec<bool>),
}

impl HostTensor {
    pub fn shape(&self) -> &[u64] {
        match self {
            HostTensor::F32(s, _)
            | HostTensor::F64(s, _)
            | HostTensor::F16(s, _)
            | HostTensor::I64(s, _)
            | HostTensor::I32(s, _)
            | HostTensor::I8(s, _)
            | HostTensor::U8(s, _)
            | HostTensor::Bool(s, _) => s,
        }
    }

    pub fn dtype(&self) -> &'static str {
        match self {
            HostTensor::F32(..) => "f32",
            HostTensor::F64(..) => "f64",
            HostTensor::F16(..) => "f16",
            HostTensor::I64(..) => "i64",
            HostTensor::I32(..) => "i32",
            HostTensor::I8(..) => "i8",
            HostTensor::U8(..) => "u8",
            HostTensor::Bool(..) => "bool",
        }
    }

    /// Values as f64 (for comparisons and statistics).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            HostTensor::F32(_, v) => v.iter().map(|&x| x as f64).collect(),
            HostTensor::F64(_, v) => v.clone(),
            HostTensor::F16(_, v) => v.iter().map(|x| x.to_f64()).collect(),
            HostTensor::I64(_, v) => v.iter().map(|&x| x as f64).collect(),
            HostTensor::I32(_, v) => v.iter().map(|&x| x as f64).collect(),
            HostTensor::I8(_, v) => v.iter().map(|&x| x as f64).collect(),
            HostTensor::U8(_, v) => v.iter().map(|&x| x as f64).collect(),
            HostTensor::Bool(_, v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// The whole `.npy` file as bytes.
    pub fn to_npy(&self) -> std::io::Result<Vec<u8>> {
        fn write<T: npyz::AutoSerialize + Clone>(
            shape: &[u64],
            data: &[T],
        ) -> std::io::Result<Vec<u8>> {
            let mut out = Vec::new();
            {
                let mut w = npyz::WriteOptions::new()
                    .default_dtype()
                    .shape(shape)
                    .writer(&mut out)
                    .begin_nd()?;
                w.extend(data.iter().cloned())?;
                w.finish()?;
            }
            Ok(out)
        }
        match self {
            HostTensor::F32(s, v) => write(s, v),
            HostTensor::F64(s, v) => write(s, v),
            HostTensor::F16(s, v) => write(s, v),
            HostTensor::I64(s, v) => write(s, v),
            HostTensor::I32(s, v) => write(s, v),
            HostTensor::I8(s, v) => write(s, v),
            HostTensor::U8(s, v) => write(s, v),
            HostTensor::Bool(s, v) => write(s, v),
        }
    }

    pub fn read_npy(path: &Path) -> std::io::Result<HostTensor> {
        let bytes = std::fs::read(path)?;
        Self::from_npy(&bytes)
    }

    pub fn from_npy(bytes: &[u8]) -> std::io::Result<HostTensor> {
        let npy = npyz::NpyFile::new(bytes)?;
        let shape = npy.shape().to_vec();
        let descr = match npy.dtype() {
            npyz::DType::Plain(t) => t.to_string(),
            other => {
                return Err(std::io::Error::other(format!(
                    "unsupported npy dtype {other:?}"
                )));
            }
        };
        Ok(match descr.as_str() {
            "<f4" => HostTensor::F32(shape, npy.into_vec()?),
            "<f8" => HostTensor::F64(shape, npy.into_vec()?),
            "<f2" => HostTensor::F16(shape, npy.into_vec()?),
            "<i8" => HostTensor::I64(shape, npy.into_vec()?),
            "<i4" => HostTensor::I32(shape, npy.into_vec()?),
            "|i1" => HostTensor::I8(shape, npy.into_vec()?),
            "|u1" => HostTensor::U8(shape, npy.into_vec()?),
            "|b1" => HostTensor::Bool(shape, npy.into_vec()?),
            other => {
                return Err(std::io::Error::other(format!(
                    "unsupported npy dtype {other}"
                )));
            }
        })
    }
}
