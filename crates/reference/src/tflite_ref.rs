//! TFLite reference activations through LiteRT's own interpreter, driven like ORT: the
//! inputs are made here (same rules and seed as for ONNX), `scripts/litert_reference.py`
//! runs the model twice in a pinned `ai-edge-litert` with every intermediate tensor kept
//! and the builtin kernels only (the default XNNPACK delegate reads back zeros for the
//! tensors inside its partitions), and every operator output becomes a checkpoint named by
//! its TFLite tensor.
//!
//! Outputs computed from weights alone (a DEQUANTIZE of an fp16 filter) are constants the
//! engine folds at plan time; they are listed as not captured, with that reason.

use std::collections::HashSet;
use std::path::Path;

use m2w_model::Model;

use crate::index::{Checkpoint, Index, NotCaptured, write_index};
use crate::npy::HostTensor;
use crate::onnx_ref::{OnnxOptions, graph_inputs};
use crate::{RefError, sanitize};

#[derive(serde::Deserialize)]
struct Run {
    runtime: String,
    checkpoints: Vec<RunCheckpoint>,
    /// Tensor indices.
    differ: Vec<usize>,
}

#[derive(serde::Deserialize)]
struct RunCheckpoint {
    op_type: String,
    /// The tensor's index in the primary subgraph.
    tensor: usize,
    file: String,
}

/// Runs `model_path` (a TFLite file) through LiteRT with `python` and `script`
/// ([`m2w_setup::litert_runner`] gives both); writes the inputs, one `.npy` per operator
/// output and `index.json` into `out` (replaced atomically).
pub fn reference(
    python: &Path,
    script: &Path,
    model_path: &Path,
    out: &Path,
    opts: &OnnxOptions,
) -> Result<Index, RefError> {
    let model = Model::open(model_path)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| RefError::Usage(format!("{}: has no graph", model_path.display())))?;
    let (inputs, used_dims) = graph_inputs(&model, graph, model_path, opts)?;

    // The run happens in a scratch folder; its files are then checked and renamed into
    // the reference folder.
    // LiteRT's tensor indices, named as m2w's reader names them (TFLite's names repeat).
    let names = m2w_model::tflite::tensor_names(model_path)?;
    let scratch = tempdir(out)?;
    let result = run_litert(python, script, model_path, &scratch, &inputs, &names);
    let run = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
    };
    let name_of = |k: usize| -> Result<String, RefError> {
        names.get(k).cloned().ok_or_else(|| {
            RefError::Runtime(format!(
                "LiteRT names tensor {k}; the model has {}",
                names.len()
            ))
        })
    };
    if !run.differ.is_empty() {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(RefError::NotDeterministic(
            run.differ
                .iter()
                .map(|&k| name_of(k))
                .collect::<Result<_, _>>()?,
        ));
    }

    // Values computed from weights alone.
    let mut constant: HashSet<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
    for n in &graph.nodes {
        if n.inputs
            .iter()
            .all(|i| i.is_empty() || constant.contains(i.as_str()))
        {
            constant.extend(n.outputs.iter().map(String::as_str));
        }
    }
    let node_of = |tensor: &str| {
        graph
            .nodes
            .iter()
            .find(|n| n.outputs.iter().any(|o| o == tensor))
    };
    let graph_outputs: HashSet<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
    let width = run.checkpoints.len().to_string().len().max(3);
    let mut index = Index::new(&model, &run.runtime, opts.seed);
    index.dims = used_dims;
    let result = crate::write_dir(out, |dir| {
        crate::write_inputs(dir, &inputs, &mut index)?;
        let mut i = 0;
        for c in &run.checkpoints {
            let tensor = name_of(c.tensor)?;
            let node = node_of(&tensor)
                .map(|n| n.label())
                .unwrap_or_else(|| tensor.clone());
            if constant.contains(tensor.as_str()) {
                index.not_captured.push(NotCaptured {
                    scope: String::new(),
                    node,
                    op_type: c.op_type.clone(),
                    output: tensor.clone(),
                    reason: "computed from weights alone: a constant the engine folds at plan time"
                        .into(),
                });
                continue;
            }
            let src = scratch.join(&c.file);
            let t = HostTensor::read_npy(&src)
                .map_err(|e| RefError::Runtime(format!("{}: {e}", src.display())))?;
            let file = format!("{:0width$}_{}.npy", i, sanitize(&tensor));
            let sha = crate::write_npy(&dir.join(&file), &t)?;
            index.checkpoints.push(Checkpoint {
                index: i,
                node,
                op_type: c.op_type.clone(),
                output: tensor.clone(),
                shape: t.shape().to_vec(),
                dtype: t.dtype().into(),
                file,
                sha256: sha,
                graph_output: graph_outputs.contains(tensor.as_str()),
            });
            i += 1;
        }
        index.determinism_checked = true;
        write_index(dir, &index)?;
        Ok(index.clone())
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// A scratch folder beside `out` (same file system), removed by the caller.
fn tempdir(out: &Path) -> Result<std::path::PathBuf, RefError> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| RefError::Io(parent.to_path_buf(), e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "reference".into());
    let dir = parent.join(format!(".{name}.litert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| RefError::Io(dir.clone(), e))?;
    Ok(dir)
}

fn run_litert(
    python: &Path,
    script: &Path,
    model_path: &Path,
    scratch: &Path,
    inputs: &[(String, HostTensor, String)],
    names: &[String],
) -> Result<Run, RefError> {
    // Fed by tensor index: the script never has to match a (possibly repeated) name.
    let mut feed = serde_json::Map::new();
    for (k, (name, t, _)) in inputs.iter().enumerate() {
        let index = names.iter().position(|n| n == name).ok_or_else(|| {
            RefError::Usage(format!("{}: no tensor '{name}'", model_path.display()))
        })?;
        let p = scratch.join(format!("input{k}.npy"));
        crate::write_npy(&p, t)?;
        feed.insert(index.to_string(), p.to_string_lossy().into_owned().into());
    }
    let feed_path = scratch.join("inputs.json");
    std::fs::write(&feed_path, serde_json::Value::Object(feed).to_string())
        .map_err(|e| RefError::Io(feed_path.clone(), e))?;
    let run = std::process::Command::new(python)
        .arg(script)
        .arg("--model")
        .arg(model_path)
        .arg("--inputs")
        .arg(&feed_path)
        .arg("--out")
        .arg(scratch)
        .output()
        .map_err(|e| RefError::Runtime(format!("cannot run {}: {e}", python.display())))?;
    if !run.status.success() {
        let err = String::from_utf8_lossy(&run.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(RefError::Load(format!(
            "{}: LiteRT could not run the model: {last}",
            model_path.display()
        )));
    }
    let listing = scratch.join("litert.json");
    let text = std::fs::read_to_string(&listing).map_err(|e| RefError::Io(listing.clone(), e))?;
    serde_json::from_str(&text)
        .map_err(|e| RefError::Runtime(format!("{}: {e}", listing.display())))
}
