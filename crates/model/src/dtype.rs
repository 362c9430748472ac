//! Storage dtypes of every format, one enum.

use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    /// ONNX string tensors: no GPU meaning; reported, never extracted.
    String,
    /// ONNX 4-bit and 8-bit float types and complex numbers: reported, not extracted.
    OtherOnnx(i32),
    /// GGUF block-quantized types.
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl DType {
    /// Bytes of one element for plain dtypes; None for block types and strings.
    pub fn elem_bytes(self) -> Option<u64> {
        use DType::*;
        Some(match self {
            F64 | I64 | U64 => 8,
            F32 | I32 | U32 => 4,
            F16 | BF16 | I16 | U16 => 2,
            I8 | U8 | Bool => 1,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block) for GGUF block types.
    pub fn gguf_block(self) -> Option<(u64, u64)> {
        use DType::*;
        Some(match self {
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2K => (256, 84),
            Q3K => (256, 110),
            Q4K => (256, 144),
            Q5K => (256, 176),
            Q6K => (256, 210),
            Q8K => (256, 292),
            _ => return None,
        })
    }

    pub fn is_gguf_block(self) -> bool {
        self.gguf_block().is_some()
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// ONNX's packed integer types narrower than a byte: (bits, signed) for UINT4, INT4,
    /// UINT2 and INT2 (first element in the lowest bits of each byte).
    pub fn sub_byte(self) -> Option<(u32, bool)> {
        match self {
            DType::OtherOnnx(21) => Some((4, false)),
            DType::OtherOnnx(22) => Some((4, true)),
            DType::OtherOnnx(25) => Some((2, false)),
            DType::OtherOnnx(26) => Some((2, true)),
            _ => None,
        }
    }

    /// Bytes needed for `elements` values of this dtype, None on overflow or if unknown.
    pub fn storage_bytes(self, elements: u64) -> Option<u64> {
        if let Some(b) = self.elem_bytes() {
            return elements.checked_mul(b);
        }
        if let Some((bits, _)) = self.sub_byte() {
            return elements.checked_mul(bits as u64).map(|b| b.div_ceil(8));
        }
        let (per, bytes) = self.gguf_block()?;
        if !elements.is_multiple_of(per) {
            return None;
        }
        (elements / per).checked_mul(bytes)
    }

    /// ONNX TensorProto.DataType code to our dtype.
    pub fn from_onnx(code: i32) -> DType {
        use DType::*;
        match code {
            1 => F32,
            2 => U8,
            3 => I8,
            4 => U16,
            5 => I16,
            6 => I32,
            7 => I64,
            8 => String,
            9 => Bool,
            10 => F16,
            11 => F64,
            12 => U32,
            13 => U64,
            16 => BF16,
            other => OtherOnnx(other),
        }
    }

    pub fn name(self) -> std::string::String {
        use DType::*;
        match self {
            F64 => "f64".into(),
            F32 => "f32".into(),
            F16 => "f16".into(),
            BF16 => "bf16".into(),
            I64 => "i64".into(),
            I32 => "i32".into(),
            I16 => "i16".into(),
            I8 => "i8".into(),
            U64 => "u64".into(),
            U32 => "u32".into(),
            U16 => "u16".into(),
            U8 => "u8".into(),
            Bool => "bool".into(),
            String => "string".into(),
            OtherOnnx(c) => format!("onnx_dtype_{c}"),
            Q4_0 => "q4_0".into(),
            Q4_1 => "q4_1".into(),
            Q5_0 => "q5_0".into(),
            Q5_1 => "q5_1".into(),
            Q8_0 => "q8_0".into(),
            Q8_1 => "q8_1".into(),
            Q2K => "q2_k".into(),
            Q3K => "q3_k".into(),
            Q4K => "q4_k".into(),
            Q5K => "q5_k".into(),
            Q6K => "q6_k".into(),
            Q8K => "q8_k".into(),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Little-endian bytes of a plain dtype to f32 values. None for dtypes without a numeric
/// view (strings, block types, exotic ONNX types).
/// The values of `count` packed sub-byte integers (see [`DType::sub_byte`]).
pub fn unpack_sub_byte(bytes: &[u8], count: usize, bits: u32, signed: bool) -> Vec<i64> {
    let per = (8 / bits) as usize;
    let mask = (1u32 << bits) - 1;
    (0..count)
        .map(|i| {
            let byte = bytes.get(i / per).copied().unwrap_or(0) as u32;
            let v = (byte >> ((i % per) as u32 * bits)) & mask;
            if signed && v >> (bits - 1) != 0 {
                v as i64 - (1i64 << bits)
            } else {
                v as i64
            }
        })
        .collect()
}

pub fn to_f32(bytes: &[u8], dtype: DType) -> Option<Vec<f32>> {
    if let Some((bits, signed)) = dtype.sub_byte() {
        let count = bytes.len() * (8 / bits) as usize;
        return Some(
            unpack_sub_byte(bytes, count, bits, signed)
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        );
    }
    macro_rules! conv {
        ($t:ty, $n:expr, $f:expr) => {
            bytes
                .chunks_exact($n)
                .map(|c| {
                    let v = <$t>::from_le_bytes(c.try_into().unwrap());
                    #[allow(clippy::redundant_closure_call)]
                    ($f)(v)
                })
                .collect()
        };
    }
    Some(match dtype {
        DType::F32 => conv!(f32, 4, |v: f32| v),
        DType::F64 => conv!(f64, 8, |v: f64| v as f32),
        DType::F16 => conv!(u16, 2, |v: u16| f16::from_bits(v).to_f32()),
        DType::BF16 => conv!(u16, 2, |v: u16| bf16::from_bits(v).to_f32()),
        DType::I64 => conv!(i64, 8, |v: i64| v as f32),
        DType::I32 => conv!(i32, 4, |v: i32| v as f32),
        DType::I16 => conv!(i16, 2, |v: i16| v as f32),
        DType::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        DType::U64 => conv!(u64, 8, |v: u64| v as f32),
        DType::U32 => conv!(u32, 4, |v: u32| v as f32),
        DType::U16 => conv!(u16, 2, |v: u16| v as f32),
        DType::U8 | DType::Bool => bytes.iter().map(|&b| b as f32).collect(),
        _ => return None,
    })
}
