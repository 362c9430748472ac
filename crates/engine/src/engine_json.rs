//! `engine.json`, the index of an engine folder: which model it was built from and, for a
//! compiled graph, the kernels its shaders/ holds. Written and read only through
//! [`EngineJson`] (the engine folder writer, the port pipeline, the package generator and the
//! command line all go through it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name inside an engine folder.
pub const FILE: &str = "engine.json";

/// What kind of engine the folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// A GGUF llama-family decoder: its plans are built from the model itself.
    Llama,
}

/// The contents of `engine.json`. Field order and names are the file's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineJson {
    /// The model file (absolute path).
    pub model: PathBuf,
    /// Absent for a compiled graph (plan.json + shaders/).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EngineKind>,
    /// The kernels of a compiled graph, sorted, one shaders/NAME.wgsl each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<Vec<String>>,
}

impl EngineJson {
    /// Pretty JSON with a final newline, as written to the folder.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("engine.json serialises") + "\n"
    }

    /// Writes `dir/engine.json` (the folder must exist).
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let p = dir.join(FILE);
        std::fs::write(&p, self.to_text()).map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Reads `dir/engine.json`; the error names the file.
    pub fn read(dir: &Path) -> Result<EngineJson, String> {
        let p = dir.join(FILE);
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_keep_the_bytes_of_the_untyped_writers() {
        let graph = EngineJson {
            model: "/m/a.onnx".into(),
            kind: None,
            kernels: Some(vec!["add".into(), "matmul".into()]),
        };
        let old = serde_json::json!({"model": "/m/a.onnx", "kernels": ["add", "matmul"]});
        assert_eq!(
            graph.to_text(),
            serde_json::to_string_pretty(&old).unwrap() + "\n"
        );
        let llama = EngineJson {
            model: "/m/b.gguf".into(),
            kind: Some(EngineKind::Llama),
            kernels: None,
        };
        let old = serde_json::json!({"model": "/m/b.gguf", "kind": "llama"});
        assert_eq!(
            llama.to_text(),
            serde_json::to_string_pretty(&old).unwrap() + "\n"
        );
        for e in [graph, llama] {
            assert_eq!(serde_json::from_str::<EngineJson>(&e.to_text()).unwrap(), e);
        }
    }
}
