//! GGUF blocks repacked for WGSL, which reads storage as 32-bit words and has no f16
//! without an extension: each block's f16 scale (and min) becomes an f32 word, and the
//! quants are copied as whole words. Layouts (little-endian, one block after another in
//! ggml's order, 32 weights a block along the innermost dimension):
//!
//! | type | words | layout | weight j (0..32) |
//! |------|-------|--------|------------------|
//! | q8_0 | 9 | `d: f32`, 8 words of i8 (byte j = q[j]) | `d * q[j]` |
//! | q4_0 | 5 | `d: f32`, 4 words of nibbles (byte j: q[j] low, q[j+16] high) | `d * (q[j] - 8)` |
//! | q4_1 | 6 | `d: f32`, `m: f32`, 4 words of nibbles as q4_0 | `d * q[j] + m` |

use half::f16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Generic repack: `scales` f16 fields at the start of each `src` block become f32 words,
/// the rest of the block is copied.
fn repack(raw: &[u8], src_block: usize, scales: usize) -> Vec<u8> {
    let dst_block = src_block + 2 * scales;
    let mut out = Vec::with_capacity(raw.len() / src_block * dst_block);
    for b in raw.chunks_exact(src_block) {
        for s in 0..scales {
            out.extend_from_slice(&f16_at(b, 2 * s).to_le_bytes());
        }
        out.extend_from_slice(&b[2 * scales..]);
    }
    out
}

pub fn pack_q8_0(raw: &[u8]) -> Vec<u8> {
    repack(raw, 34, 1)
}
pub fn pack_q4_0(raw: &[u8]) -> Vec<u8> {
    repack(raw, 18, 1)
}
pub fn pack_q4_1(raw: &[u8]) -> Vec<u8> {
    repack(raw, 20, 2)
}

fn f32_at(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes(b[i..i + 4].try_into().unwrap())
}

/// Packed q8_0 words back to f32 weights (what a WGSL kernel computes).
pub fn unpack_q8_0(packed: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(packed.len() / 36 * 32);
    for b in packed.chunks_exact(36) {
        let d = f32_at(b, 0);
        out.extend(b[4..36].iter().map(|&q| d * (q as i8) as f32));
    }
    out
}

pub fn unpack_q4_0(packed: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; packed.len() / 20 * 32];
    for (k, b) in packed.chunks_exact(20).enumerate() {
        let d = f32_at(b, 0);
        for j in 0..16 {
            let q = b[4 + j];
            out[k * 32 + j] = d * ((q & 0x0f) as f32 - 8.0);
            out[k * 32 + j + 16] = d * ((q >> 4) as f32 - 8.0);
        }
    }
    out
}

pub fn unpack_q4_1(packed: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; packed.len() / 24 * 32];
    for (k, b) in packed.chunks_exact(24).enumerate() {
        let (d, m) = (f32_at(b, 0), f32_at(b, 4));
        for j in 0..16 {
            let q = b[8 + j];
            out[k * 32 + j] = d * (q & 0x0f) as f32 + m;
            out[k * 32 + j + 16] = d * (q >> 4) as f32 + m;
        }
    }
    out
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
