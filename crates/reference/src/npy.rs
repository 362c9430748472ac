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

    /// Bit-for-bit equality (shape, dtype and every value's bits): what "the same output
    /// twice" means for a determinism check, where NaN must equal the same NaN (`==` on
    /// floats says it never does).
    pub fn same_bits(&self, other: &HostTensor) -> bool {
        match (self.to_npy(), other.to_npy()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }

    pub fn from_npy(bytes: &[u8]) -> std::io::Result<HostTensor> {
        // The header's length is checked against the file before npyz reads it: npyz
        // allocates what a version-2/3 header declares (up to 4 GiB) before reading it.
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
            return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
        }
        let (start, header) = match bytes[6] {
            1 => (10usize, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
            2 | 3 if bytes.len() >= 12 => (
                12,
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            ),
            v => {
                return Err(bad(format!(
                    ".npy format version {v} is not one numpy writes"
                )));
            }
        };
        if start + header > bytes.len() {
            return Err(bad(format!(
                "the .npy header claims {header} bytes, the file holds {}",
                bytes.len()
            )));
        }
        // numpy writes one flat dict with a shape tuple (`{'descr': '<f4', 'fortran_order':
        // False, 'shape': (2, 3), }`); anything nested is refused before npyz parses it (its
        // literal parser takes seconds per byte on nested braces: a fuzzer's 253-byte header
        // ran past 20 s).
        let text = &bytes[start..start + header];
        let count = |c: u8| text.iter().filter(|&&b| b == c).count();
        if count(b'{') != 1
            || count(b'}') != 1
            || count(b'(') > 1
            || count(b')') > 1
            || count(b'[') > 0
        {
            return Err(bad(
                "the .npy header is not the flat dict numpy writes".into()
            ));
        }
        let npy = npyz::NpyFile::new(bytes)?;
        let shape = npy.shape().to_vec();
        let fortran = npy.order() == npyz::Order::Fortran;
        let descr = match npy.dtype() {
            npyz::DType::Plain(t) => t.to_string(),
            other => {
                return Err(std::io::Error::other(format!(
                    "unsupported npy dtype {other:?}"
                )));
            }
        };
        // The header's shape must fit in the file: a header that claims terabytes is an
        // error before anything of that size is allocated.
        let item: u64 = match descr.as_str() {
            "<f8" | "<i8" => 8,
            "<f4" | "<i4" => 4,
            "<f2" => 2,
            _ => 1,
        };
        let n = m2w_model::limits::checked_elements("the .npy header", &shape, item)
            .map_err(std::io::Error::other)?;
        if n as u64 * item > bytes.len() as u64 {
            return Err(std::io::Error::other(format!(
                "the header declares shape {shape:?} ({} bytes of data), the file holds {} bytes",
                n as u64 * item,
                bytes.len()
            )));
        }
        // Fortran order (column-major, numpy's `order='F'`): reordered to the row-major
        // layout every other part of m2w reads.
        fn c_order<T: Copy>(v: Vec<T>, shape: &[u64], fortran: bool) -> Vec<T> {
            if !fortran || shape.len() < 2 {
                return v;
            }
            let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            let mut f_strides = vec![1usize; dims.len()];
            for k in 1..dims.len() {
                f_strides[k] = f_strides[k - 1] * dims[k - 1];
            }
            let mut idx = vec![0usize; dims.len()];
            let mut out = Vec::with_capacity(v.len());
            for _ in 0..v.len() {
                out.push(
                    v[idx
                        .iter()
                        .zip(&f_strides)
                        .map(|(i, s)| i * s)
                        .sum::<usize>()],
                );
                for d in (0..dims.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < dims[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            out
        }
        let s = &shape;
        Ok(match descr.as_str() {
            "<f4" => HostTensor::F32(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            "<f8" => HostTensor::F64(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            "<f2" => HostTensor::F16(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            "<i8" => HostTensor::I64(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            "<i4" => HostTensor::I32(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            "|i1" => HostTensor::I8(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            "|u1" => HostTensor::U8(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            "|b1" => HostTensor::Bool(shape.clone(), c_order(npy.into_vec()?, s, fortran)),
            other => {
                return Err(std::io::Error::other(format!(
                    "unsupported npy dtype {other}"
                )));
            }
        })
    }
}

/// A version-1.0 .npy file with exactly this header dictionary and these data bytes, padded
/// as numpy pads it: for tests that need a header numpy would write (Fortran order) or one
/// it never would (absurd shapes, a wrong dtype).
pub fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(header.len() as u16).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::raw_npy as npy;

    #[test]
    fn a_fortran_ordered_file_is_read_in_its_own_order() {
        // numpy.asfortranarray([[0, 1, 2], [3, 4, 5]]) stores columns first: 0 3 1 4 2 5.
        let data: Vec<u8> = [0f32, 3., 1., 4., 2., 5.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f = npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            &data,
        );
        match HostTensor::from_npy(&f).unwrap() {
            HostTensor::F32(shape, v) => {
                assert_eq!(shape, vec![2, 3]);
                assert_eq!(v, vec![0., 1., 2., 3., 4., 5.]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_that_claims_more_than_the_file_holds_is_an_error() {
        let f = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }",
            &[0; 8],
        );
        let e = HostTensor::from_npy(&f).unwrap_err().to_string();
        assert!(e.contains("over the limit"), "{e}");
        let f = npy(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1000,), }",
            &[0; 8],
        );
        let e = HostTensor::from_npy(&f).unwrap_err().to_string();
        assert!(e.contains("the file holds"), "{e}");
    }
}
