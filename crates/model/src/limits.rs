//! Limits on sizes a file *declares*, checked before anything of that size is allocated: a
//! graph input of dim 2^40, a tensor header with an absurd count, or an .npy claiming
//! terabytes must fail with a clear error (exit 2), not abort the process in the allocator.

/// Bytes one declared tensor may take: 8 GiB, or `M2W_MAX_TENSOR_BYTES` when set (a
/// machine with more memory, or a test that wants a small bound).
pub const DEFAULT_MAX_TENSOR_BYTES: u64 = 8 << 30;

/// The environment variable that replaces [`DEFAULT_MAX_TENSOR_BYTES`].
pub const MAX_TENSOR_BYTES_VAR: &str = "M2W_MAX_TENSOR_BYTES";

/// The bound in force.
pub fn max_tensor_bytes() -> u64 {
    std::env::var(MAX_TENSOR_BYTES_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_TENSOR_BYTES)
}

/// The element count of `shape` when the tensor, at `elem_bytes` an element, stays within
/// [`max_tensor_bytes`]; otherwise a message naming `what`, its shape, its size and the limit.
pub fn checked_elements(what: &str, shape: &[u64], elem_bytes: u64) -> Result<usize, String> {
    let limit = max_tensor_bytes();
    let too_big = |bytes: String| {
        format!(
            "{what} declares shape {shape:?} ({bytes}), over the limit of {limit} bytes a tensor \
             may take (set {MAX_TENSOR_BYTES_VAR} to raise it)"
        )
    };
    let n = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| too_big("more elements than 2^64".into()))?;
    let bytes = n
        .checked_mul(elem_bytes.max(1))
        .ok_or_else(|| too_big(format!("{n} elements")))?;
    if bytes > limit {
        return Err(too_big(format!("{n} elements, {bytes} bytes")));
    }
    usize::try_from(n).map_err(|_| too_big(format!("{n} elements")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_shapes_are_refused_before_allocation() {
        assert_eq!(checked_elements("x", &[2, 3], 4), Ok(6));
        let e = checked_elements("input 'x'", &[1 << 40], 4).unwrap_err();
        assert!(
            e.contains("input 'x'") && e.contains("over the limit"),
            "{e}"
        );
        assert!(checked_elements("x", &[u64::MAX, 2], 1).is_err());
        assert_eq!(checked_elements("x", &[0, 1 << 62], 4), Ok(0));
    }
}
