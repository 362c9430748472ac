//! Phase 3, reference: the oracle every later phase is judged against.
//!
//! - ONNX models run through ONNX Runtime with every node output captured
//!   ([`onnx_ref::reference`]);
//! - GGUF llama-family models run through a llama forward pass written on candle-core
//!   ([`llama`]), dumping every stage of every layer;
//! - TFLite models run through LiteRT's own interpreter (pinned `ai-edge-litert`, every
//!   intermediate tensor kept, no delegate) ([`tflite_ref::reference`]).
//!
//! All write the same folder layout: `inputs/*.npy`, `NNN_<name>.npy` in pipeline order
//! and `index.json` ([`index::Index`]). The folder is built under a temporary name and
//! renamed, so a failed run leaves nothing half-written.

pub mod exact_int8;
pub mod index;
pub mod llama;
pub mod npy;
pub mod onnx_ref;
pub mod pipeline;
pub mod spm;
pub mod tflite_ref;
pub mod tokenizer;

use std::path::{Path, PathBuf};

pub use index::{Index, read_index};
pub use llama::GenerationJson;
pub use npy::{HostTensor, raw_npy};

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error(transparent)]
    Input(#[from] m2w_model::InputError),
    /// Bad arguments: unknown input, dim that does not fit, unreadable input file.
    #[error("{0}")]
    Usage(String),
    /// The runtime could not load the model.
    #[error("{0}")]
    Load(String),
    /// The runtime failed (library missing, run failed).
    #[error("{0}")]
    Runtime(String),
    #[error("not deterministic: {} checkpoint(s) differ between two runs: {}", .0.len(), .0.join(", "))]
    NotDeterministic(Vec<String>),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
}

/// A file-name-safe form of a tensor name (kept readable; uniqueness comes from the index
/// prefix).
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_');
    let s = if s.is_empty() { "unnamed" } else { s };
    s.chars().take(100).collect()
}

/// Reads one `.npy` of a reference folder after checking it against the sha256 its
/// index.json recorded (an empty record, from an older index, is not checked): a file
/// changed or corrupted after the reference was written is an error, never an oracle.
pub fn read_recorded(dir: &Path, file: &str, sha256: &str) -> Result<HostTensor, String> {
    let path = dir.join(file);
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !sha256.is_empty() {
        let got = m2w_model::io::sha256_bytes(&bytes);
        if got != sha256 {
            return Err(format!(
                "{}: sha256 {got} differs from the {sha256} index.json recorded: the file \
                 changed after the reference was written (rerun `m2w reference`)",
                path.display()
            ));
        }
    }
    HostTensor::from_npy(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Why an oracle's values cannot be trusted as they are: a NaN anywhere, or nothing but
/// infinities (an attention mask's -inf among finite values is a real value and is
/// compared exactly). None for integer tensors and sound float ones.
pub fn nonfinite_problem(t: &HostTensor) -> Option<String> {
    if !t.dtype().starts_with('f') {
        return None;
    }
    let v = t.to_f64();
    if let Some(k) = v.iter().position(|x| x.is_nan()) {
        let n = v.iter().filter(|x| x.is_nan()).count();
        return Some(format!(
            "holds NaN ({n} of {} values, the first at element {k})",
            v.len()
        ));
    }
    if !v.is_empty() && v.iter().all(|x| x.is_infinite()) {
        return Some(format!("holds only infinities ({} values)", v.len()));
    }
    None
}

/// Writes one `.npy`; returns its sha256.
pub(crate) fn write_npy(path: &Path, t: &HostTensor) -> Result<String, RefError> {
    let bytes = t
        .to_npy()
        .map_err(|e| RefError::Io(path.to_path_buf(), e))?;
    std::fs::write(path, &bytes).map_err(|e| RefError::Io(path.to_path_buf(), e))?;
    Ok(m2w_model::io::sha256_bytes(&bytes))
}

/// Writes each input (name, value, how it was made) as `inputs/<name>.npy` under `dir` and
/// records it in the index.
pub(crate) fn write_inputs(
    dir: &Path,
    inputs: &[(String, HostTensor, String)],
    index: &mut Index,
) -> Result<(), RefError> {
    std::fs::create_dir_all(dir.join("inputs")).map_err(|e| RefError::Io(dir.join("inputs"), e))?;
    for (name, t, how) in inputs {
        let file = format!("inputs/{}.npy", sanitize(name));
        let sha = write_npy(&dir.join(&file), t)?;
        index.inputs.push(index::InputRecord {
            name: name.clone(),
            shape: t.shape().to_vec(),
            dtype: t.dtype().into(),
            file,
            sha256: sha,
            how: how.clone(),
        });
    }
    Ok(())
}

pub(crate) fn write_dir<T>(
    out: &Path,
    fill: impl FnOnce(&Path) -> Result<T, RefError>,
) -> Result<T, RefError> {
    m2w_model::io::replace_dir(out, |p, e| RefError::Io(p.to_path_buf(), e), fill)
}
