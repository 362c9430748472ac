//! GGUF blocks as WGSL reads them: storage is 32-bit words and f16 needs an extension, so
//! every block starts on a word and its fields are whole words or halves of one (f16 scales
//! are read with `unpack2x16float`, a core builtin). Older layouts turn the f16 scale into
//! an f32 word; the rest keep ggml's bytes and only pad a block to a word boundary.
//! Little-endian, blocks in ggml's order along the innermost dimension; weight j of a
//! 32-weight block, or of sub-block s (32 weights) of a 256-weight super-block:
//!
//! | type | words a block | layout | weight |
//! |------|---------------|--------|--------|
//! | q8_0 | 9 | `d: f32`, 8 words of i8 (byte j = q[j]) | `d * q[j]` |
//! | q4_0 | 5 | `d: f32`, 4 words of nibbles (byte j: q[j] low, q[j+16] high) | `d * (q[j] - 8)` |
//! | q4_1 | 6 | `d: f32`, `m: f32`, 4 words of nibbles as q4_0 | `d * q[j] + m` |
//! | q5_0 | 6 | 2 zero bytes + `d: f16` (high half of word 0), `qh: u32`, 4 words of nibbles | `d * ((q[j] \| qh bit j << 4) - 16)` |
//! | q5_1 | 6 | ggml's: `d, m: f16` (word 0), `qh: u32`, 4 words of nibbles | `d * (q[j] \| qh bit j << 4) + m` |
//! | q4_k | 36 / 256 | ggml's: `d, dmin: f16`, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles | `d * sc[s] * q - dmin * m[s]` |
//! | q5_k | 44 / 256 | ggml's: as q4_k with 32 bytes of high bits before the nibbles | as q4_k with q 5 bits |
//! | q6_k | 53 / 256 | ggml's 210 bytes (ql 128, qh 64, i8 scales 16, `d: f16`) + 2 zero bytes | `d * sc[16 weights] * (q - 32)` |
//!
//! `unpack` is the CPU image of what the kernels compute (same f32 products), checked against
//! candle's dequantizer on every block of the fixtures.

use half::f16;

/// A GGUF block type m2w's kernels read packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl BlockKind {
    pub const ALL: [BlockKind; 8] = [
        BlockKind::Q8_0,
        BlockKind::Q4_0,
        BlockKind::Q4_1,
        BlockKind::Q5_0,
        BlockKind::Q5_1,
        BlockKind::Q4K,
        BlockKind::Q5K,
        BlockKind::Q6K,
    ];

    /// The name in manifests, plans and kernel names (`gemv_q4_k_f32`).
    pub fn name(self) -> &'static str {
        match self {
            BlockKind::Q8_0 => "q8_0",
            BlockKind::Q4_0 => "q4_0",
            BlockKind::Q4_1 => "q4_1",
            BlockKind::Q5_0 => "q5_0",
            BlockKind::Q5_1 => "q5_1",
            BlockKind::Q4K => "q4_k",
            BlockKind::Q5K => "q5_k",
            BlockKind::Q6K => "q6_k",
        }
    }

    pub fn from_name(name: &str) -> Option<BlockKind> {
        BlockKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The block type of a GGUF dtype, when a kernel reads it.
    pub fn of(dtype: m2w_model::DType) -> Option<BlockKind> {
        use m2w_model::DType;
        Some(match dtype {
            DType::Q8_0 => BlockKind::Q8_0,
            DType::Q4_0 => BlockKind::Q4_0,
            DType::Q4_1 => BlockKind::Q4_1,
            DType::Q5_0 => BlockKind::Q5_0,
            DType::Q5_1 => BlockKind::Q5_1,
            DType::Q4K => BlockKind::Q4K,
            DType::Q5K => BlockKind::Q5K,
            DType::Q6K => BlockKind::Q6K,
            _ => return None,
        })
    }

    /// Weights a block holds.
    pub fn weights(self) -> usize {
        match self {
            BlockKind::Q4K | BlockKind::Q5K | BlockKind::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes of a block in the GGUF file.
    pub fn gguf_bytes(self) -> usize {
        match self {
            BlockKind::Q8_0 => 34,
            BlockKind::Q4_0 => 18,
            BlockKind::Q4_1 => 20,
            BlockKind::Q5_0 => 22,
            BlockKind::Q5_1 => 24,
            BlockKind::Q4K => 144,
            BlockKind::Q5K => 176,
            BlockKind::Q6K => 210,
        }
    }

    /// Bytes of a packed block (a whole number of words).
    pub fn packed_bytes(self) -> usize {
        match self {
            BlockKind::Q8_0 => 36,
            BlockKind::Q4_0 => 20,
            BlockKind::Q4_1 => 24,
            BlockKind::Q5_0 => 24,
            BlockKind::Q5_1 => 24,
            BlockKind::Q4K => 144,
            BlockKind::Q5K => 176,
            BlockKind::Q6K => 212,
        }
    }

    /// One line for the manifest's `transform`.
    pub fn transform(self) -> String {
        let words = self.packed_bytes() / 4;
        let per = self.weights();
        match self {
            BlockKind::Q8_0 | BlockKind::Q4_0 | BlockKind::Q4_1 => format!(
                "{} repacked: {words} u32 words a block of {per} (f16 scales as f32)",
                self.name()
            ),
            BlockKind::Q5_0 | BlockKind::Q6K => format!(
                "{} padded to {words} u32 words a block of {per} (ggml's bytes, 2 zero bytes)",
                self.name()
            ),
            _ => format!(
                "{} kept: {words} u32 words a block of {per} (ggml's bytes)",
                self.name()
            ),
        }
    }

    /// GGUF bytes (whole blocks) to the packed layout.
    pub fn pack(self, raw: &[u8]) -> Vec<u8> {
        let (src, dst) = (self.gguf_bytes(), self.packed_bytes());
        let mut out = Vec::with_capacity(raw.len() / src * dst);
        for b in raw.chunks_exact(src) {
            match self {
                BlockKind::Q8_0 | BlockKind::Q4_0 => {
                    out.extend_from_slice(&f16_at(b, 0).to_le_bytes());
                    out.extend_from_slice(&b[2..]);
                }
                BlockKind::Q4_1 => {
                    out.extend_from_slice(&f16_at(b, 0).to_le_bytes());
                    out.extend_from_slice(&f16_at(b, 2).to_le_bytes());
                    out.extend_from_slice(&b[4..]);
                }
                // d moves to the high half of word 0 so qh and the nibbles start on words.
                BlockKind::Q5_0 => {
                    out.extend_from_slice(&[0, 0]);
                    out.extend_from_slice(b);
                }
                BlockKind::Q6K => {
                    out.extend_from_slice(b);
                    out.extend_from_slice(&[0, 0]);
                }
                BlockKind::Q5_1 | BlockKind::Q4K | BlockKind::Q5K => out.extend_from_slice(b),
            }
        }
        out
    }

    /// Packed blocks back to f32 weights, as the kernels compute each one.
    pub fn unpack(self, packed: &[u8]) -> Vec<f32> {
        let per = self.weights();
        let mut out = vec![0f32; packed.len() / self.packed_bytes() * per];
        for (k, b) in packed.chunks_exact(self.packed_bytes()).enumerate() {
            let y = &mut out[k * per..(k + 1) * per];
            match self {
                BlockKind::Q8_0 => {
                    let d = f32_at(b, 0);
                    for j in 0..32 {
                        y[j] = d * (b[4 + j] as i8) as f32;
                    }
                }
                BlockKind::Q4_0 => {
                    let d = f32_at(b, 0);
                    for j in 0..16 {
                        y[j] = d * ((b[4 + j] & 15) as f32 - 8.0);
                        y[j + 16] = d * ((b[4 + j] >> 4) as f32 - 8.0);
                    }
                }
                BlockKind::Q4_1 => {
                    let (d, m) = (f32_at(b, 0), f32_at(b, 4));
                    for j in 0..16 {
                        y[j] = d * (b[8 + j] & 15) as f32 + m;
                        y[j + 16] = d * (b[8 + j] >> 4) as f32 + m;
                    }
                }
                BlockKind::Q5_0 | BlockKind::Q5_1 => {
                    let (d, m) = if self == BlockKind::Q5_0 {
                        (f16_at(b, 2), 0.0)
                    } else {
                        (f16_at(b, 0), f16_at(b, 2))
                    };
                    let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
                    let bias = if self == BlockKind::Q5_0 { 16.0 } else { 0.0 };
                    for j in 0..16 {
                        let lo = (b[8 + j] & 15) as u32 | ((qh >> j) & 1) << 4;
                        let hi = (b[8 + j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
                        y[j] = d * (lo as f32 - bias) + m;
                        y[j + 16] = d * (hi as f32 - bias) + m;
                    }
                }
                BlockKind::Q4K | BlockKind::Q5K => {
                    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                    let scales = &b[4..16];
                    let five = self == BlockKind::Q5K;
                    let qs = if five { &b[48..176] } else { &b[16..144] };
                    for s in 0..8 {
                        let (sc, m) = scale_min_k4(s, scales);
                        let (d1, m1) = (d * sc as f32, dmin * m as f32);
                        for l in 0..32 {
                            let mut q = (qs[(s / 2) * 32 + l] >> (4 * (s % 2))) & 15;
                            if five && b[16 + l] >> s & 1 == 1 {
                                q |= 16;
                            }
                            y[s * 32 + l] = d1 * q as f32 - m1;
                        }
                    }
                }
                BlockKind::Q6K => {
                    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                    let d = f16_at(b, 208);
                    for s in 0..8 {
                        let (half, r) = (s / 4, s % 4);
                        for l in 0..32 {
                            let low = (ql[half * 64 + (r % 2) * 32 + l] >> (4 * (r / 2))) & 15;
                            let high = (qh[half * 32 + l] >> (2 * r)) & 3;
                            let q = (low | high << 4) as i32 - 32;
                            let scale = sc[half * 8 + 2 * r + l / 16] as i8;
                            y[s * 32 + l] = d * scale as f32 * q as f32;
                        }
                    }
                }
            }
        }
        out
    }
}

/// ggml's 6-bit scale and min of sub-block `j` from a k-quant's 12 scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes(b[i..i + 4].try_into().unwrap())
}

pub fn pack_q8_0(raw: &[u8]) -> Vec<u8> {
    BlockKind::Q8_0.pack(raw)
}
pub fn pack_q4_0(raw: &[u8]) -> Vec<u8> {
    BlockKind::Q4_0.pack(raw)
}
pub fn pack_q4_1(raw: &[u8]) -> Vec<u8> {
    BlockKind::Q4_1.pack(raw)
}

/// Packed q8_0 words back to f32 weights (what a WGSL kernel computes).
pub fn unpack_q8_0(packed: &[u8]) -> Vec<f32> {
    BlockKind::Q8_0.unpack(packed)
}
pub fn unpack_q4_0(packed: &[u8]) -> Vec<f32> {
    BlockKind::Q4_0.unpack(packed)
}
pub fn unpack_q4_1(packed: &[u8]) -> Vec<f32> {
    BlockKind::Q4_1.unpack(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_round_trips_by_hand() {
        // d = 0.5, m = -1.0, nibbles: q[j] = j % 16 (low), q[j+16] = 15 - j % 16 (high).
        let mut raw = Vec::new();
        raw.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        raw.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            raw.push(j | ((15 - j) << 4));
        }
        let packed = pack_q4_1(&raw);
        assert_eq!(packed.len(), 24);
        let w = unpack_q4_1(&packed);
        assert_eq!(w[3], 0.5 * 3.0 - 1.0);
        assert_eq!(w[16 + 3], 0.5 * 12.0 - 1.0);
    }

    #[test]
    fn q8_0_block_keeps_signed_quants() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
        raw.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let w = unpack_q8_0(&pack_q8_0(&raw));
        assert_eq!(w[0], -4.0);
        assert_eq!(w[31], 0.25 * 15.0);
    }
}
