//! A folder holding a palm detector and a hand landmark model (MediaPipe's hand tracking)
//! ported as one pipeline: each model through every phase into `<out>/<role>/` (its own
//! reference through LiteRT, its own gate), and `<out>/hands.json`, the manifest the
//! package generator reads: which engine is which and the glue's settings
//! (`m2w_vision::hands::HandsConfig`).
//!
//! The folder is recognised by what the models compute, not by their names: a detector
//! whose two outputs are per-anchor boxes and scores for the anchors the glue's settings
//! make, and a landmark model whose outputs are the landmarks, presence and handedness the
//! settings read.

use std::path::{Path, PathBuf};

use m2w_vision::hands::HandsConfig;

use crate::PortError;
use crate::port::{PortOptions, PortOutcome, Step, port};

pub use m2w_vision::hands::MANIFEST;

/// `hands.json`: the two engines (folders relative to the port folder) and the glue.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HandsManifest {
    pub schema: String,
    /// The detector's port folder (its `engine/` is the plan).
    pub detector: String,
    pub landmarks: String,
    pub detector_model: PathBuf,
    pub landmarks_model: PathBuf,
    pub config: HandsConfig,
}

pub const SCHEMA: &str = "m2w.hands/1";

fn dims(v: &m2w_model::ValueInfo) -> Vec<i64> {
    v.shape
        .iter()
        .map(|d| match d {
            m2w_model::Dim::Fixed(x) => *x,
            _ => -1,
        })
        .collect()
}

/// The (detector, landmark model) of a folder whose models are a hand-tracking pair for
/// `cfg`, or None.
pub fn find_pair(folder: &Path, cfg: &HandsConfig) -> Option<(PathBuf, PathBuf)> {
    let files = m2w_model::Model::files_in(folder).ok()?;
    if files.len() != 2 {
        return None;
    }
    let (boxes, points) = (cfg.decode.num_boxes as i64, cfg.decode.num_coords as i64);
    let mut detector = None;
    let mut landmarks = None;
    for f in files {
        let m = m2w_model::Model::open(&f).ok()?;
        let g = m.graph.as_ref()?;
        let outs: Vec<Vec<i64>> = g.outputs.iter().map(dims).collect();
        let is_detector = outs.len() == 2
            && outs.contains(&vec![1, boxes, points])
            && outs.contains(&vec![1, boxes, 1]);
        let marks = (cfg.num_landmarks * 3) as i64;
        let is_landmarks = outs.get(cfg.landmarks_output) == Some(&vec![1, marks])
            && outs.get(cfg.presence_output) == Some(&vec![1, 1])
            && outs.get(cfg.handedness_output) == Some(&vec![1, 1]);
        let input_ok = |w: u32, h: u32| {
            g.inputs.len() == 1 && dims(&g.inputs[0]) == vec![1, h as i64, w as i64, 3]
        };
        if is_detector && input_ok(cfg.detector_input.width, cfg.detector_input.height) {
            detector = Some(f);
        } else if is_landmarks && input_ok(cfg.landmark_input.width, cfg.landmark_input.height) {
            landmarks = Some(f);
        }
    }
    Some((detector?, landmarks?))
}

/// Ports both models of a hand-tracking folder into `out` and writes the manifest.
/// Returns each model's outcome.
pub fn port_hands(
    detector: &Path,
    landmarks: &Path,
    out: &Path,
    opts: &PortOptions,
    on_line: &mut dyn FnMut(&str),
) -> Result<Vec<(String, PortOutcome)>, PortError> {
    let cfg = HandsConfig::mediapipe_lite();
    let mut outcomes = Vec::new();
    for (role, model) in [("detector", detector), ("landmarks", landmarks)] {
        on_line(&format!("{role}: {}", model.display()));
        let outcome = port(model, &out.join(role), opts, &mut |s: &Step| {
            on_line(&format!("  {s}"))
        })?;
        outcomes.push((role.to_string(), outcome));
    }
    let manifest = HandsManifest {
        schema: SCHEMA.into(),
        detector: "detector".into(),
        landmarks: "landmarks".into(),
        detector_model: std::fs::canonicalize(detector).unwrap_or(detector.to_path_buf()),
        landmarks_model: std::fs::canonicalize(landmarks).unwrap_or(landmarks.to_path_buf()),
        config: cfg,
    };
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises") + "\n";
    m2w_model::io::write_atomic(&out.join(MANIFEST), text.as_bytes())
        .map_err(|e| PortError::Input(format!("{}: {e}", out.join(MANIFEST).display())))?;
    on_line(&format!(
        "hand tracking: detector and landmark model ported, glue settings (MediaPipe's) in {}",
        out.join(MANIFEST).display()
    ));
    Ok(outcomes)
}
