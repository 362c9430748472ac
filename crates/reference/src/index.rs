//! `index.json` (schema `m2w.reference/1`): the oracle's table of contents, in pipeline
//! (topological) order. validate reads it to know which checkpoint is which.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RefError;

pub const SCHEMA: &str = "m2w.reference/1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub schema: String,
    pub model: ModelRef,
    /// The trusted runtime that produced the values.
    pub runtime: String,
    pub seed: u64,
    /// Every dim value used (symbolic names, or `input.axis`).
    pub dims: BTreeMap<String, u64>,
    pub inputs: Vec<InputRecord>,
    pub checkpoints: Vec<Checkpoint>,
    /// Values that exist in the model but have no oracle, with the reason.
    pub not_captured: Vec<NotCaptured>,
    pub determinism_checked: bool,
    /// Free-form facts about the run (prompt, generated text...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelRef {
    pub file: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InputRecord {
    pub name: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub file: String,
    pub sha256: String,
    /// How the values were made.
    pub how: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub index: usize,
    pub node: String,
    pub op_type: String,
    pub output: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub file: String,
    pub sha256: String,
    pub graph_output: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NotCaptured {
    pub scope: String,
    pub node: String,
    pub op_type: String,
    pub output: String,
    pub reason: String,
}

impl Index {
    pub fn new(model: &m2w_model::Model, runtime: &str, seed: u64) -> Index {
        Index {
            schema: SCHEMA.into(),
            model: ModelRef {
                file: model
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sha256: model.file_sha256().unwrap_or_default(),
            },
            runtime: runtime.into(),
            seed,
            dims: BTreeMap::new(),
            inputs: Vec::new(),
            checkpoints: Vec::new(),
            not_captured: Vec::new(),
            determinism_checked: false,
            notes: BTreeMap::new(),
        }
    }
}

pub fn write_index(dir: &Path, index: &Index) -> Result<(), RefError> {
    let p = dir.join("index.json");
    let text = serde_json::to_string_pretty(index).expect("index serialises") + "\n";
    m2w_model::io::write_atomic(&p, text.as_bytes()).map_err(|e| RefError::Io(p.clone(), e))
}

pub fn read_index(dir: &Path) -> Result<Index, RefError> {
    let p = dir.join("index.json");
    let text = std::fs::read_to_string(&p).map_err(|e| RefError::Io(p.clone(), e))?;
    let index: Index = serde_json::from_str(&text)
        .map_err(|e| RefError::Usage(format!("{}: not a reference index: {e}", p.display())))?;
    if index.schema != SCHEMA {
        return Err(RefError::Usage(format!(
            "{}: schema {:?}, expected {SCHEMA:?}",
            p.display(),
            index.schema
        )));
    }
    Ok(index)
}
