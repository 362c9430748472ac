//! `engine`: an ONNX model compiled for the input shapes of a reference folder, written as an
//! engine folder, then run on wgpu and checked checkpoint by checkpoint with validate's
//! comparison (one comparison, one set of default tolerances for the whole tool).

use std::collections::HashMap;
use std::path::Path;

use crate::PortError;

/// A compiled engine, written to its folder, ready to be checked.
pub struct EngineBuild {
    pub model: m2w_model::Model,
    /// The written plan (intermediates reused over lifetimes unless `reuse` was false).
    pub plan: m2w_engine::Plan,
    /// Distinct kernels of the plan (one shaders/NAME.wgsl each).
    pub kernels: usize,
    /// The plan before buffer assignment: the check reads every checkpoint, so it gives
    /// every tensor its own buffer.
    check_plan: m2w_engine::Plan,
    inputs: HashMap<String, m2w_engine::HostTensor>,
}

/// Compiles `model_path` for the inputs of `reference` and writes the engine folder `out`
/// (plan.json, shaders/, constants, engine.json).
pub fn build_engine(
    model_path: &Path,
    reference: &Path,
    out: &Path,
    reuse: bool,
) -> Result<EngineBuild, PortError> {
    let model = crate::open_for_engine(model_path)?;
    let (mut plan, inputs, _) = m2w_validate::compile_for_dims(&model, reference, &[], &[])?;
    let check_plan = plan.clone();
    plan.assign_buffers(reuse);
    let kernels = plan.kernels().len();
    m2w_engine::write_engine_dir(out, &plan, model_path).map_err(PortError::Input)?;
    Ok(EngineBuild {
        model,
        plan,
        kernels,
        check_plan,
        inputs,
    })
}

impl EngineBuild {
    /// Runs the engine on wgpu with the reference's inputs and compares every checkpoint it
    /// has, end to end, at validate's default tolerances ([`m2w_validate::F32_DEFAULT`]).
    pub fn check(self, reference: &Path) -> Result<m2w_validate::Report, PortError> {
        let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
        let opts = m2w_validate::Options {
            f32: Some(m2w_validate::F32_DEFAULT),
            overrides: vec![],
            per_layer: false,
            max_dims: vec![],
            empty_dims: vec![],
            save_mismatches: None,
            allow_nonfinite_oracle: false,
            profile: false,
        };
        Ok(m2w_validate::validate(
            &gpu,
            &self.model,
            self.check_plan,
            &self.inputs,
            reference,
            &opts,
        )?)
    }
}
