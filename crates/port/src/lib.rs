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

/// Marks `dir` as a finished phase with this stamp.
pub fn mark(dir: &Path, stamp: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(STAMP_FILE), format!("{stamp}\n"))
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

/// Validates the model's plan, compiled for the reference's inputs, against the reference
/// (ONNX).
pub fn validate_model(
    model_path: &Path,
    reference: &Path,
    opts: &m2w_validate::Options,
) -> Result<m2w_validate::Report, PortError> {
    let model = m2w_model::Model::open(model_path)?;
    let (plan, inputs, _) = m2w_validate::compile_for_dims(&model, reference, &opts.max_dims)?;
    let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
    Ok(m2w_validate::validate(
        &gpu, &model, plan, &inputs, reference, opts,
    )?)
}

/// Writes report.json, junit.xml and report.html of a validation into `dir`, each name
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
