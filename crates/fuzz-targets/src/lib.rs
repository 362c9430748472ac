//! Every reader of m2w as a fuzz target (issue 19): a function that takes any bytes and
//! must return, never panic, abort or allocate past the declared-size limit
//! (`m2w_model::limits`). `fuzz/` (cargo-fuzz, nightly) wraps each for libFuzzer;
//! `cargo xtask fuzz --seconds N` runs them all; the tests of this crate replay the committed
//! corpus (`fuzz/corpus/TARGET/`) and every crash ever found (`fuzz/regressions/TARGET/`) on
//! stable, which is CI's regression mode.
//!
//! Model readers take a path (they memory-map or seek), so the bytes go to a file of the
//! format's extension first, one per process and target.

use std::path::{Path, PathBuf};

/// A fuzz target: any bytes in, nothing out (an error is a fine answer; a panic is a bug).
pub type Target = fn(&[u8]);

/// Every target, by name (the names of fuzz/fuzz_targets/*.rs and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("onnx", onnx),
    ("gguf", gguf),
    ("safetensors", safetensors),
    ("tflite", tflite),
    ("npy", npy),
    ("manifest", manifest),
    ("plan", plan),
];

/// Declared tensors larger than this are refused while fuzzing (a 2 GiB input is no
/// finding; an allocation the reader did not bound is).
const FUZZ_MAX_TENSOR_BYTES: &str = "67108864";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("m2w-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

fn at(name: &str, data: &[u8]) -> PathBuf {
    // SAFETY (edition 2024 marks set_var unsafe): fuzz targets run on one thread, and this
    // is the only environment write.
    if std::env::var_os(m2w_model::limits::MAX_TENSOR_BYTES_VAR).is_none() {
        unsafe {
            std::env::set_var(
                m2w_model::limits::MAX_TENSOR_BYTES_VAR,
                FUZZ_MAX_TENSOR_BYTES,
            )
        };
    }
    let p = scratch(name);
    std::fs::write(&p, data).expect("scratch file");
    p
}

/// Opens a model file and reads every tensor it declares (up to 64 of them), as inspect
/// and extract would.
fn open_model(path: &Path) {
    let Ok(model) = m2w_model::Model::open(path) else {
        return;
    };
    for t in model.tensors.iter().take(64) {
        let _ = model.read_raw(t);
    }
}

pub fn onnx(data: &[u8]) {
    open_model(&at("model.onnx", data));
}

pub fn gguf(data: &[u8]) {
    open_model(&at("model.gguf", data));
}

pub fn safetensors(data: &[u8]) {
    open_model(&at("model.safetensors", data));
}

pub fn tflite(data: &[u8]) {
    open_model(&at("model.tflite", data));
}

pub fn npy(data: &[u8]) {
    let _ = m2w_reference::HostTensor::from_npy(data);
}

/// extract's manifest.json, as `verify` and the later phases read it.
pub fn manifest(data: &[u8]) {
    let file = at("manifest.json", data);
    let _ = m2w_extract::read_manifest(file.parent().expect("scratch folder"));
}

/// An engine folder's plan.json, as the package generator reads it: parsed, then what it
/// derives from it before writing anything (the limits report).
pub fn plan(data: &[u8]) {
    if let Ok(p) = serde_json::from_slice::<m2w_engine::Plan>(data)
        && p.check().is_ok()
    {
        let _ = m2w_engine::limits::LimitsReport::new(&[&p]);
    }
}

/// The repository's fuzz/ folder.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI's regression mode: every committed corpus file and every past crash, through its
    /// target, with a panic caught and reported by file.
    #[test]
    fn the_corpus_and_every_past_crash_replay_without_a_panic() {
        let mut failures = Vec::new();
        let mut replayed = 0;
        for (name, target) in TARGETS {
            let mut files = 0;
            for sub in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(fuzz_dir().join(sub).join(name)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let bytes = std::fs::read(e.path()).unwrap();
                    files += 1;
                    let t0 = std::time::Instant::now();
                    if std::panic::catch_unwind(|| target(&bytes)).is_err() {
                        failures.push(e.path().display().to_string());
                    }
                    // A hang is a finding too (libFuzzer's -timeout): 10 s is hundreds of
                    // times what any corpus file takes.
                    if t0.elapsed() > std::time::Duration::from_secs(10) {
                        failures.push(format!("{} took {:?}", e.path().display(), t0.elapsed()));
                    }
                }
            }
            assert!(files > 0, "target {name}: no corpus in fuzz/corpus/{name}");
            replayed += files;
        }
        assert!(failures.is_empty(), "panics on: {failures:#?}");
        eprintln!("{replayed} corpus and regression files replayed");
    }
}
