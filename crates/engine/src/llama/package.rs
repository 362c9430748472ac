//! The plans a generated npm package runs: chunked prefill, GPU decode and a CPU fallback.

use m2w_model::Model;

use super::{BuildOptions, Config, build_opts};
use crate::plan::Plan;

/// The plans a generated package runs. Prompts are fed in chunks of `chunk` tokens, the last
/// one padded: padded positions are causal-masked from the real ones and their cache slots
/// are overwritten by the decode steps that follow. All are built at start 0 (see
/// [`position_patches`]), with intermediate buffers shared over lifetimes; weights and
/// caches have the same names in all of them.
///
/// [`position_patches`]: super::position_patches
pub struct PackagePlans {
    pub prefill: Plan,
    /// One token, GEMV kernels (GPUs).
    pub decode: Plan,
    /// One token, thread-per-output matmuls (CPU-emulated adapters such as SwiftShader).
    pub decode_fallback: Plan,
    pub config: Config,
}

/// `max_binding_bytes`: the targets' `maxStorageBufferBindingSize` (tables past it are row
/// slices; see [`BuildOptions`]).
pub fn package_plans(
    model: &Model,
    chunk: usize,
    ctx: usize,
    max_binding_bytes: usize,
) -> Result<PackagePlans, String> {
    if chunk == 0 || ctx < chunk || ctx % chunk != 0 {
        return Err(format!(
            "the context ({ctx}) must be a positive multiple of the prefill chunk ({chunk})"
        ));
    }
    let opts = BuildOptions {
        max_binding_bytes,
        ..BuildOptions::default()
    };
    let (mut prefill, config) = build_opts(model, chunk, 0, ctx, &opts)?;
    let (mut decode, _) = build_opts(model, 1, 0, ctx, &opts)?;
    let fallback = BuildOptions {
        gemv_max_tokens: 0,
        ..opts
    };
    let (mut decode_fallback, _) = build_opts(model, 1, 0, ctx, &fallback)?;
    for p in [&mut prefill, &mut decode, &mut decode_fallback] {
        p.assign_buffers(true);
    }
    Ok(PackagePlans {
        prefill,
        decode,
        decode_fallback,
        config,
    })
}
