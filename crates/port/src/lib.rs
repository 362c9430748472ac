//! The port pipeline and the product logic behind `cargo xtask`: the command line parses
//! arguments, prints and maps errors to exit codes; everything it runs is here.
//!
//! - [`port::port`]: inspect -> extract -> reference -> engine -> validate, one folder each
//!   ([`Layout`]), each phase skipped when its stamp ([`stamp`]) says its inputs did not
//!   change; ONNX graphs and GGUF llama-family decoders;
//! - [`engine`]: the engine folder of an ONNX model for a reference's shapes, checked
//!   checkpoint by checkpoint through validate's one comparison;
//! - [`generate`]: native text generation from a GGUF decoder (chat template included);
//! - [`sampler::sampler_cases`]: the oracle of the package's TypeScript sampler.
//!
//! The files the phases exchange are typed where they are defined: `engine.json` is
//! [`m2w_engine::EngineJson`], `generation.json` is [`m2w_reference::GenerationJson`],
//! the llama-family hyper-parameters are [`m2w_model::llama_config::LlamaConfig`] and chat
//! formats [`m2w_model::chat`] (re-exported as [`chat`]).

pub mod engine;
pub mod generate;
pub mod hands;
pub mod pipeline;
pub mod port;
pub mod sampler;

use std::path::{Path, PathBuf};

pub use m2w_engine::{EngineJson, EngineKind};
pub use m2w_model::chat;
pub use m2w_reference::GenerationJson;

/// What went wrong, split by exit code.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Bad input or a step that cannot be done (exit 2).
    #[error("{0}")]
    Input(String),
    /// A check failed: a difference, a non-deterministic reference (exit 1).
    #[error("{0}")]
    Check(String),
}

pub(crate) fn input(e: impl std::fmt::Display) -> PortError {
    PortError::Input(e.to_string())
}

/// Opens a model as the engine sees it: a TFLite graph lowered onto the registry's ops
/// (its front-end); other formats as read.
pub fn open_for_engine(path: &Path) -> Result<m2w_model::Model, PortError> {
    let mut model = m2w_model::Model::open(path)?;
    m2w_engine::lower_source(&mut model)
        .map_err(|e| PortError::Input(format!("{}: {e}", path.display())))?;
    Ok(model)
}

impl From<m2w_model::InputError> for PortError {
    fn from(e: m2w_model::InputError) -> PortError {
        input(e)
    }
}

impl From<m2w_reference::RefError> for PortError {
    fn from(e: m2w_reference::RefError) -> PortError {
        match e {
            m2w_reference::RefError::NotDeterministic(_) => PortError::Check(e.to_string()),
            other => input(other),
        }
    }
}

impl From<m2w_validate::ValidateError> for PortError {
    fn from(e: m2w_validate::ValidateError) -> PortError {
        input(e)
    }
}

impl From<m2w_setup::SetupError> for PortError {
    fn from(e: m2w_setup::SetupError) -> PortError {
        input(e)
    }
}

/// The folders of a port, one per phase, under one root.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }
    /// inspect.json + inspect.md.
    pub fn inspect(&self) -> PathBuf {
        self.root.join("inspect")
    }
    /// manifest.json + weights*.bin (f32).
    pub fn weights(&self) -> PathBuf {
        self.root.join("weights")
    }
    /// The oracles: index.json + .npy (ONNX) or prefill/ decode/ generation.json (GGUF).
    pub fn reference(&self) -> PathBuf {
        self.root.join("reference")
    }
    /// engine.json and the plan (plan.json + shaders/ + constants, or plan-prefill.json +
    /// config.json for a GGUF decoder).
    pub fn engine(&self) -> PathBuf {
        self.root.join("engine")
    }
    /// The reports: report*.json, junit*.xml, report*.html.
    pub fn validate(&self) -> PathBuf {
        self.root.join("validate")
    }
}

/// The stamp file a finished phase leaves in its folder.
pub const STAMP_FILE: &str = ".m2w-stamp";

/// sha256 over the model file's sha256, the options that shape a phase's output and the
/// m2w version.
pub fn stamp(model_sha: &str, extra: &str) -> String {
    m2w_model::io::sha256_bytes(
        format!("{model_sha}\n{extra}\nm2w {}", env!("CARGO_PKG_VERSION")).as_bytes(),
    )
}

/// Whether `dir` holds a finished phase with this stamp.
pub fn fresh(dir: &Path, stamp: &str) -> bool {
    std::fs::read_to_string(dir.join(STAMP_FILE))
        .map(|s| s.trim() == stamp)
        .unwrap_or(false)
}

/// Marks `dir` as a finished phase with this stamp (written after the phase's folder is in
/// place, atomically: a kill before it leaves the phase unmarked, and the next run redoes it).
pub fn mark(dir: &Path, stamp: &str) -> std::io::Result<()> {
    m2w_model::io::write_atomic(&dir.join(STAMP_FILE), format!("{stamp}\n").as_bytes())
}

/// The stamp `dir` holds ("" when none).
pub fn stamp_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(STAMP_FILE)).unwrap_or_default()
}

/// The model an engine folder was built from (its engine.json).
pub fn engine_model(engine_dir: &Path) -> Result<PathBuf, PortError> {
    Ok(EngineJson::read(engine_dir)
        .map_err(PortError::Input)?
        .model)
}

/// Validates an engine folder's own plan against a reference, which may be of other input
/// sizes than the one the engine was built from: a symbolic plan is compiled again at the
/// engine's maxima and must come out identical to its plan.json (so it is that plan that
/// runs); a static plan is compiled for the reference's sizes as before.
pub fn validate_engine(
    engine_dir: &Path,
    reference: &Path,
    opts: &m2w_validate::Options,
) -> Result<m2w_validate::Report, PortError> {
    let model_path = engine_model(engine_dir)?;
    let text = std::fs::read_to_string(engine_dir.join("plan.json"))
        .map_err(|e| input(format!("{}: {e}", engine_dir.join("plan.json").display())))?;
    let saved: m2w_engine::Plan =
        serde_json::from_str(&text).map_err(|e| input(format!("plan.json: {e}")))?;
    saved
        .check()
        .map_err(|e| input(format!("{}: {e}", engine_dir.join("plan.json").display())))?;
    if saved.dims.is_empty() {
        return validate_model(&model_path, reference, opts);
    }
    let mut opts = opts.clone();
    opts.max_dims = saved.dims.iter().map(|d| (d.name.clone(), d.max)).collect();
    opts.empty_dims = saved.empty_input_dims();
    let model = open_for_engine(&model_path)?;
    let (mut plan, inputs, _) =
        m2w_validate::compile_for_dims(&model, reference, &opts.max_dims, &opts.empty_dims)?;
    plan.assign_buffers(true);
    let same = serde_json::to_value(&plan).ok() == serde_json::to_value(&saved).ok();
    if !same {
        return Err(PortError::Check(format!(
            "{}: compiling {} again at the engine's maxima gives another plan (a different m2w?); rebuild the engine",
            engine_dir.display(),
            model_path.display()
        )));
    }
    let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
    Ok(m2w_validate::validate(
        &gpu, &model, plan, &inputs, reference, &opts,
    )?)
}

/// A file name for a tensor name (`/dec/audio` -> `dec_audio`).
pub fn file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').to_string()
}

/// Runs the engine end to end on the reference's inputs and writes `output` as a mono
/// 16-bit PCM WAV at `rate` (values clamped to [-1, 1]); returns what it measured against
/// ONNX Runtime's value of the same output.
pub fn write_wav_of_run(
    layout: &Layout,
    model: &m2w_model::Model,
    output: &str,
    rate: u32,
    path: &Path,
) -> Result<String, PortError> {
    let saved: m2w_engine::Plan = serde_json::from_str(
        &std::fs::read_to_string(layout.engine().join("plan.json"))
            .map_err(|e| input(format!("plan.json: {e}")))?,
    )
    .map_err(|e| input(format!("plan.json: {e}")))?;
    let max_dims: Vec<(String, usize)> =
        saved.dims.iter().map(|d| (d.name.clone(), d.max)).collect();
    let (mut plan, inputs, _) = m2w_validate::compile_for_dims(
        model,
        &layout.reference(),
        &max_dims,
        &saved.empty_input_dims(),
    )?;
    if !plan.outputs.iter().any(|o| o == output) {
        return Err(input(format!(
            "--wav {output}: not an output of the model ({})",
            plan.outputs.join(", ")
        )));
    }
    plan.assign_buffers(true);
    let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
    let runner = m2w_engine::gpu::Runner::new(&gpu, plan).map_err(PortError::Input)?;
    let got = runner
        .run(&inputs, &[output.to_string()])
        .map_err(PortError::Input)?;
    let samples: Vec<f32> = got[output].as_f64().iter().map(|&v| v as f32).collect();
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    let data_len = (samples.len() * 2) as u32;
    bytes.extend(b"RIFF");
    bytes.extend((36 + data_len).to_le_bytes());
    bytes.extend(b"WAVEfmt ");
    bytes.extend(16u32.to_le_bytes());
    bytes.extend(1u16.to_le_bytes()); // PCM
    bytes.extend(1u16.to_le_bytes()); // mono
    bytes.extend(rate.to_le_bytes());
    bytes.extend((rate * 2).to_le_bytes());
    bytes.extend(2u16.to_le_bytes());
    bytes.extend(16u16.to_le_bytes());
    bytes.extend(b"data");
    bytes.extend(data_len.to_le_bytes());
    for s in &samples {
        bytes.extend(((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
    }
    m2w_model::io::write_atomic(path, &bytes)
        .map_err(|e| input(format!("{}: {e}", path.display())))?;
    // The float samples too (the browser demo's oracle: `package-test --tts-audio`).
    let npy = m2w_reference::HostTensor::F32(vec![samples.len() as u64], samples.clone())
        .to_npy()
        .map_err(|e| input(e.to_string()))?;
    let npy_path = path.with_extension("npy");
    m2w_model::io::write_atomic(&npy_path, &npy)
        .map_err(|e| input(format!("{}: {e}", npy_path.display())))?;
    // The same output from ONNX Runtime, for the record.
    let index = m2w_reference::read_index(&layout.reference()).map_err(|e| input(e.to_string()))?;
    let vs = index
        .checkpoints
        .iter()
        .find(|c| c.output == output)
        .and_then(|c| m2w_reference::HostTensor::read_npy(&layout.reference().join(&c.file)).ok())
        .map(|t| {
            let want = t.to_f64();
            let worst = want
                .iter()
                .zip(&samples)
                .map(|(a, &b)| (a - b as f64).abs())
                .fold(0f64, f64::max);
            let peak = want.iter().fold(0f64, |m, &v| m.max(v.abs()));
            format!(
                "end to end: max |engine - ORT| {worst:.2e} (peak {peak:.2e}), {} vs {} samples",
                samples.len(),
                want.len()
            )
        })
        .unwrap_or_default();
    Ok(format!(
        "{} samples at {rate} Hz -> {} ({vs})",
        samples.len(),
        path.display()
    ))
}

/// Validates the model's plan, compiled for the reference's inputs, against the reference
/// (ONNX).
pub fn validate_model(
    model_path: &Path,
    reference: &Path,
    opts: &m2w_validate::Options,
) -> Result<m2w_validate::Report, PortError> {
    let model = open_for_engine(model_path)?;
    let (plan, inputs, _) =
        m2w_validate::compile_for_dims(&model, reference, &opts.max_dims, &opts.empty_dims)?;
    let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
    Ok(m2w_validate::validate(
        &gpu, &model, plan, &inputs, reference, opts,
    )?)
}

/// Writes report.json, junit.xml, model-explorer.json (node data for Google's Model
/// Explorer) and report.html of a validation into `dir`, each name
/// with `suffix` ("" or "-prefill"...).
pub fn write_reports(
    dir: &Path,
    suffix: &str,
    report: &m2w_validate::Report,
) -> Result<(), PortError> {
    let w = |name: String, bytes: &[u8]| {
        let p = dir.join(name);
        m2w_model::io::write_atomic(&p, bytes).map_err(|e| input(format!("{}: {e}", p.display())))
    };
    w(
        format!("report{suffix}.json"),
        (serde_json::to_string_pretty(report).expect("report serialises") + "\n").as_bytes(),
    )?;
    w(
        format!("junit{suffix}.xml"),
        m2w_validate::render::junit(report).as_bytes(),
    )?;
    w(
        format!("model-explorer{suffix}.json"),
        m2w_validate::render::model_explorer(report).as_bytes(),
    )?;
    w(
        format!("report{suffix}.html"),
        m2w_validate::render::html(report).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_marks_a_folder_fresh_until_its_inputs_change() {
        let d = tempfile::tempdir().unwrap();
        let a = stamp("abc", "extract f32");
        assert_ne!(a, stamp("abc", "extract f16"));
        assert_ne!(a, stamp("abd", "extract f32"));
        assert!(!fresh(d.path(), &a));
        mark(d.path(), &a).unwrap();
        assert!(fresh(d.path(), &a));
        assert!(!fresh(d.path(), &stamp("abc", "other")));
        assert_eq!(stamp_of(d.path()), format!("{a}\n"));
    }

    #[test]
    fn the_layout_has_one_folder_per_phase() {
        let l = Layout::new(Path::new("/p"));
        let names: Vec<PathBuf> = vec![
            l.inspect(),
            l.weights(),
            l.reference(),
            l.engine(),
            l.validate(),
        ];
        assert_eq!(
            names,
            ["inspect", "weights", "reference", "engine", "validate"]
                .map(|n| Path::new("/p").join(n))
        );
    }
}
