//! Host tensors: constants folded at plan time, inputs and outputs. On the GPU today every
//! element the ONNX ops compute on is one 32-bit word: f32 as is, integers as i32 (WGSL has
//! no 64-bit integers; constants keep their i64 values on the host), bools as u32 0/1.
//! The narrower storage types (f16, i8, u8, packed 4-bit) are packed into 32-bit words,
//! little-endian, first element in the lowest bits; their sizes come from [`DT::bits`].

/// The GPU storage type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DT {
    F32,
    I32,
    Bool,
    /// IEEE half, two per word (needs no shader-f16: kernels unpack with unpack2x16float).
    F16,
    /// Signed bytes, four per word.
    I8,
    /// Unsigned bytes, four per word.
    U8,
    /// Unsigned 4-bit values, eight per word (zero points and scales live elsewhere).
    U4,
}

impl DT {
    /// Suffix of kernel variant names.
    pub fn suffix(self) -> &'static str {
        match self {
            DT::F32 => "f32",
            DT::I32 => "i32",
            DT::Bool => "bool",
            DT::F16 => "f16",
            DT::I8 => "i8",
            DT::U8 => "u8",
            DT::U4 => "u4",
        }
    }

    /// Bits per element in GPU storage.
    pub fn bits(self) -> u64 {
        match self {
            DT::F32 | DT::I32 | DT::Bool => 32,
            DT::F16 => 16,
            DT::I8 | DT::U8 => 8,
            DT::U4 => 4,
        }
    }

    /// Bytes of a GPU buffer holding `count` elements: whole 32-bit words, at least one
    /// (WebGPU binds no empty buffer).
    pub fn buffer_bytes(self, count: usize) -> u64 {
        ((count as u64 * self.bits()).div_ceil(32) * 4).max(4)
    }

    /// Elements per 32-bit word.
    pub fn per_word(self) -> usize {
        (32 / self.bits()) as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    /// Narrow values (u8, i8, u4, f16) kept packed in GPU words as the model stores
    /// them: quantized weights that kernels unpack in registers.
    Packed {
        dt: DT,
        words: Vec<u32>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl HostTensor {
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> HostTensor {
        HostTensor {
            shape,
            data: Data::F32(v),
        }
    }
    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> HostTensor {
        HostTensor {
            shape,
            data: Data::I64(v),
        }
    }
    pub fn bool(shape: Vec<usize>, v: Vec<bool>) -> HostTensor {
        HostTensor {
            shape,
            data: Data::Bool(v),
        }
    }

    /// Packs integer values into words of a narrow storage type (`U8`, `I8`, `U4`), first
    /// element in the lowest bits; values are truncated to the type's bits.
    pub fn packed(dt: DT, shape: Vec<usize>, values: &[i64]) -> HostTensor {
        let bits = dt.bits() as usize;
        let per = dt.per_word();
        let mask = if bits == 32 {
            u32::MAX
        } else {
            (1u32 << bits) - 1
        };
        let mut words = vec![0u32; values.len().div_ceil(per)];
        for (i, &v) in values.iter().enumerate() {
            words[i / per] |= (v as u32 & mask) << ((i % per) * bits);
        }
        HostTensor {
            shape,
            data: Data::Packed { dt, words },
        }
    }

    pub fn dt(&self) -> DT {
        match self.data {
            Data::F32(_) => DT::F32,
            Data::I64(_) => DT::I32,
            Data::Bool(_) => DT::Bool,
            Data::Packed { dt, .. } => dt,
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
            Data::Packed { .. } => numel(&self.shape),
        }
    }

    /// The same values unpacked (f32, i64 or bool): packed data as host code reads it.
    pub fn unpacked(&self) -> HostTensor {
        match &self.data {
            Data::Packed { dt, words } => HostTensor::from_words(*dt, self.shape.clone(), words),
            _ => self.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values as i64 (floats truncated): for shapes, axes, indices.
    pub fn as_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
            Data::Bool(v) => v.iter().map(|&b| b as i64).collect(),
            Data::Packed { .. } => self.unpacked().as_i64(),
        }
    }

    pub fn as_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&b| b as u8 as f64).collect(),
            Data::Packed { .. } => self.unpacked().as_f64(),
        }
    }

    /// GPU words. Integers outside i32 saturate (the engine checks index-like inputs).
    pub fn to_words(&self) -> Vec<u32> {
        match &self.data {
            Data::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
            Data::I64(v) => v
                .iter()
                .map(|&x| x.clamp(i32::MIN as i64, i32::MAX as i64) as i32 as u32)
                .collect(),
            Data::Bool(v) => v.iter().map(|&b| b as u32).collect(),
            Data::Packed { words, .. } => words.clone(),
        }
    }

    /// Values from GPU words (packed types unpacked, first element in the lowest bits).
    pub fn from_words(dt: DT, shape: Vec<usize>, words: &[u32]) -> HostTensor {
        let n = numel(&shape);
        let lanes = |bits: u32| {
            let per = (32 / bits) as usize;
            let mask = if bits == 32 {
                u32::MAX
            } else {
                (1u32 << bits) - 1
            };
            (0..n.min(words.len() * per))
                .map(move |i| (words[i / per] >> ((i % per) as u32 * bits)) & mask)
        };
        let data = match dt {
            DT::F32 => Data::F32(words.iter().map(|&w| f32::from_bits(w)).collect()),
            DT::I32 => Data::I64(words.iter().map(|&w| w as i32 as i64).collect()),
            DT::Bool => Data::Bool(words.iter().map(|&w| w != 0).collect()),
            DT::F16 => Data::F32(lanes(16).map(|h| f16_to_f32(h as u16)).collect()),
            DT::I8 => Data::I64(lanes(8).map(|b| b as u8 as i8 as i64).collect()),
            DT::U8 => Data::I64(lanes(8).map(|b| b as i64).collect()),
            DT::U4 => Data::I64(lanes(4).map(|b| b as i64).collect()),
        };
        HostTensor { shape, data }
    }

    /// The same data with another shape (same element count).
    pub fn reshaped(&self, shape: Vec<usize>) -> HostTensor {
        HostTensor {
            shape,
            data: self.data.clone(),
        }
    }

    /// The tensor transposed: output dim `d` is input dim `perm[d]` (ONNX Transpose).
    /// None when `perm` is not a permutation of the dims.
    pub fn permuted(&self, perm: &[usize]) -> Option<HostTensor> {
        let rank = self.shape.len();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return None;
        }
        let t = self.unpacked();
        let mut strides = vec![1usize; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * t.shape[d + 1];
        }
        let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
        let n = numel(&shape);
        // Source offset of each output element, walking the output in row-major order.
        let mut offsets = Vec::with_capacity(n);
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            offsets.push(
                idx.iter()
                    .zip(perm)
                    .map(|(&i, &p)| i * strides[p])
                    .sum::<usize>(),
            );
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let data = match &t.data {
            Data::F32(v) => Data::F32(offsets.iter().map(|&o| v[o]).collect()),
            Data::I64(v) => Data::I64(offsets.iter().map(|&o| v[o]).collect()),
            Data::Bool(v) => Data::Bool(offsets.iter().map(|&o| v[o]).collect()),
            Data::Packed { .. } => return None,
        };
        Some(HostTensor { shape, data })
    }
}

/// Whether `got` matches `want` element-wise: within `atol + rtol * |want|` for finite
/// values; an infinity only matches the same infinity and NaN only NaN (a tolerance must
/// never let 3.4e38 pass for +inf, nor a number for NaN).
pub fn within(got: f64, want: f64, atol: f64, rtol: f64) -> bool {
    if got.is_nan() || want.is_nan() {
        got.is_nan() && want.is_nan()
    } else if got.is_infinite() || want.is_infinite() {
        got == want
    } else {
        (got - want).abs() <= atol + rtol * want.abs()
    }
}

/// IEEE half to f32 (exact; subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value m * 2^-24.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::{DT, Data, HostTensor, f16_to_f32, within};

    #[test]
    fn buffer_sizes_come_from_the_storage_type() {
        assert_eq!(DT::F32.buffer_bytes(3), 12);
        assert_eq!(DT::F16.buffer_bytes(3), 8);
        assert_eq!(DT::I8.buffer_bytes(5), 8);
        assert_eq!(DT::U4.buffer_bytes(9), 8);
        assert_eq!(DT::U4.buffer_bytes(0), 4);
        assert_eq!(DT::U8.per_word(), 4);
    }

    #[test]
    fn packed_words_unpack_lowest_bits_first() {
        let t = HostTensor::from_words(DT::I8, vec![5], &[0x80ff_7f01, 0x0000_00fe]);
        assert_eq!(t.data, Data::I64(vec![1, 127, -1, -128, -2]));
        let t = HostTensor::from_words(DT::U4, vec![3], &[0x0000_0f21]);
        assert_eq!(t.data, Data::I64(vec![1, 2, 15]));
        let t = HostTensor::from_words(DT::F16, vec![2], &[0xc000_3c00]);
        assert_eq!(t.data, Data::F32(vec![1.0, -2.0]));
    }

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
    }

    #[test]
    fn infinities_match_exactly_and_nan_only_nan() {
        assert!(within(f64::INFINITY, f64::INFINITY, 1e-7, 1e-3));
        assert!(!within(3.4e38, f64::INFINITY, 1e-7, 1e-3));
        assert!(!within(f64::INFINITY, 3.4e38, 1e-7, 1e-3));
        assert!(!within(f64::NEG_INFINITY, f64::INFINITY, 1e-7, 1e-3));
        assert!(within(f64::NAN, f64::NAN, 0.0, 0.0));
        assert!(!within(0.0, f64::NAN, 1.0, 1.0));
        assert!(!within(f64::NAN, 0.0, 1.0, 1.0));
        assert!(within(1.0005, 1.0, 1e-7, 1e-3));
        assert!(!within(1.002, 1.0, 1e-7, 1e-3));
    }
}
