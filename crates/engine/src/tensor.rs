//! Host tensors: constants folded at plan time, inputs and outputs. On the GPU every
//! element is one 32-bit word: f32 as is, integers as i32 (WGSL has no 64-bit integers;
//! constants keep their i64 values on the host), bools as u32 0/1.

/// The GPU storage type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DT {
    F32,
    I32,
    Bool,
}

impl DT {
    /// Suffix of kernel variant names.
    pub fn suffix(self) -> &'static str {
        match self {
            DT::F32 => "f32",
            DT::I32 => "i32",
            DT::Bool => "bool",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
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

    pub fn dt(&self) -> DT {
        match self.data {
            Data::F32(_) => DT::F32,
            Data::I64(_) => DT::I32,
            Data::Bool(_) => DT::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
            Data::Bool(v) => v.len(),
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
        }
    }

    pub fn as_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&b| b as u8 as f64).collect(),
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
        }
    }

    pub fn from_words(dt: DT, shape: Vec<usize>, words: &[u32]) -> HostTensor {
        let data = match dt {
            DT::F32 => Data::F32(words.iter().map(|&w| f32::from_bits(w)).collect()),
            DT::I32 => Data::I64(words.iter().map(|&w| w as i32 as i64).collect()),
            DT::Bool => Data::Bool(words.iter().map(|&w| w != 0).collect()),
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

#[cfg(test)]
mod tests {
    use super::within;

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
