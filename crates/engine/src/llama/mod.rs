//! GGUF llama-family decoders as plans: built from the GGUF metadata (no graph), with the
//! quantized weights kept packed on the GPU (Q8_0 / Q4_0 / Q4_1 blocks dequantized in
//! registers by the matmul and embedding kernels), a KV cache per layer, and the tied
//! embedding used as the LM head without a second copy.
//!
//! Stage tensors carry the names the candle reference writes (`blk.3.q_rope`, `logits`...)
//! so every stage can be compared with it. One plan runs T tokens at positions start..;
//! the decode plan (T = 1) is reused for every step by rewriting the uniforms that hold the
//! position ([`Decoder::set_position`]).

mod builder;
mod decoder;
mod package;
mod plan;
mod sample;
mod weights;

pub use decoder::Decoder;
pub use package::{PackagePlans, package_plans};
pub use plan::{PositionPatch, build, build_with, cache_names, position_patches};
pub use sample::{Sampling, sample, sample_sorted};

use m2w_model::Model;

/// The hyper-parameters, parsed once for every side by [`m2w_model::llama_config`].
pub type Config = m2w_model::llama_config::LlamaConfig;

/// The model's configuration, or why m2w does not run it.
pub fn config(model: &Model) -> Result<Config, String> {
    Config::from_model(model)
}

/// The largest top-k the plans select on the GPU (larger k reads the whole logits row).
pub const MAX_TOP_K: usize = 64;

/// Token counts up to which the quantized matmuls run as GEMV (a workgroup per output).
pub const GEMV_MAX_TOKENS: usize = 4;

#[cfg(test)]
mod tests;
