//! Phase 6, validate: every checkpoint of the WebGPU engine against the reference oracles,
//! in pipeline order, as a CI gate.
//!
//! - end to end: the engine runs on the reference inputs and every checkpoint it has is
//!   read back (debug capture) and compared;
//! - `--per-layer`: each node is fed the oracle values of its inputs (as Polygraphy does),
//!   so one bad kernel cannot hide behind upstream error.
//!
//! A checkpoint passes when |a - b| <= atol + rtol * |b| element-wise (defaults per dtype,
//! overridable per run and per checkpoint-name pattern). The first failing checkpoint is
//! named with its inputs' status, values side by side and a diagnosis hint.

mod compare;
pub mod render;
mod rules;
pub use compare::{EXACT, F32_DEFAULT, Tolerance, compare, diagnose, glob};
pub use rules::rounding_atol;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use m2w_engine::gpu::{Gpu, Runner};
use m2w_engine::{DT, HostTensor, Plan};
use serde::Serialize;

pub const SCHEMA: &str = "m2w.validate/1";

/// The buffer a profile's copy-bandwidth measurement copies (small enough for CPU adapters).
const PROFILE_COPY_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// Bad input: missing files, shapes that do not match, an unsupported model (exit 2).
    #[error("{0}")]
    Input(String),
}

fn bad(e: impl std::fmt::Display) -> ValidateError {
    ValidateError::Input(e.to_string())
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub f32: Option<Tolerance>,
    /// (glob pattern on the checkpoint name, tolerance); the first match wins.
    pub overrides: Vec<(String, Tolerance)>,
    pub per_layer: bool,
    /// Maxima of the model's named dims (`sequence=512`); a named dim without one gets
    /// the reference's size as its maximum.
    pub max_dims: Vec<(String, usize)>,
    /// Named dims that may be 0 (a KV cache's length before the first token); the others
    /// are at least 1.
    pub empty_dims: Vec<String>,
    /// A folder for the engine's values of every checkpoint out of tolerance, one `.npy`
    /// each under the oracle's file name (as Polygraphy's --save-outputs), to study offline.
    pub save_mismatches: Option<PathBuf>,
    /// Compare oracles that hold NaN or only infinities (exactly) instead of refusing them.
    pub allow_nonfinite_oracle: bool,
    /// Time every dispatch with GPU timestamps after validating (`Report::profile`).
    pub profile: bool,
}

impl Options {
    fn override_for(&self, name: &str) -> Option<Tolerance> {
        self.overrides
            .iter()
            .find(|(p, _)| glob(p, name))
            .map(|(_, t)| *t)
    }

    fn tolerance(&self, name: &str, dtype: &str) -> Tolerance {
        if let Some(t) = self.override_for(name) {
            return t;
        }
        if dtype == "f32" || dtype == "f16" || dtype == "f64" {
            self.f32.unwrap_or(F32_DEFAULT)
        } else {
            EXACT
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckpointReport {
    pub index: usize,
    pub name: String,
    pub op_type: String,
    pub shape: Vec<u64>,
    pub dtype: String,
    /// false when the engine has no such tensor (folded on the host, or inside a fused op).
    pub compared: bool,
    pub max_abs: f64,
    pub mean_abs: f64,
    pub max_rel: f64,
    /// The largest error in units of the element's tolerance (pass when <= 1): what the
    /// report plots.
    pub max_ratio: f64,
    /// The element furthest out of tolerance (largest ratio) and its two values.
    pub worst_index: usize,
    pub worst_engine: f64,
    pub worst_reference: f64,
    /// Per-layer mode: [`Self::max_ratio`] of the same checkpoint end to end (every node
    /// fed the engine's own values), beside the isolated one: where error accumulates
    /// rather than where a node is wrong. None in end-to-end mode or when that run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accumulated_ratio: Option<f64>,
    pub nan_inf_engine: usize,
    pub nan_inf_reference: usize,
    pub tolerance: Tolerance,
    /// Why the tolerance is not the dtype's default, when a rule of the op widened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance_note: Option<String>,
    pub pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The sha256 of the oracle's .npy, as index.json recorded it and as it was checked.
    pub oracle_sha256: String,
}

impl CheckpointReport {
    /// The report of checkpoint `c` before any comparison: not compared, passing, no error.
    pub fn new(c: &m2w_reference::index::Checkpoint, tolerance: Tolerance) -> Self {
        CheckpointReport {
            index: c.index,
            name: c.output.clone(),
            op_type: c.op_type.clone(),
            shape: c.shape.clone(),
            dtype: c.dtype.clone(),
            compared: false,
            max_abs: 0.0,
            mean_abs: 0.0,
            max_rel: 0.0,
            max_ratio: 0.0,
            worst_index: 0,
            worst_engine: 0.0,
            worst_reference: 0.0,
            accumulated_ratio: None,
            nan_inf_engine: 0,
            nan_inf_reference: 0,
            tolerance,
            tolerance_note: None,
            pass: true,
            problem: None,
            oracle_sha256: c.sha256.clone(),
        }
    }

    fn set_stats(&mut self, st: &compare::Stats) {
        self.max_abs = st.max_abs;
        self.mean_abs = st.mean_abs;
        self.max_rel = st.max_rel;
        self.max_ratio = st.max_ratio;
        self.worst_index = st.worst_index;
        self.worst_engine = st.worst_engine;
        self.worst_reference = st.worst_reference;
        self.nan_inf_engine = st.nan_inf_engine;
        self.nan_inf_reference = st.nan_inf_reference;
        self.pass = st.pass;
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FirstFailure {
    pub name: String,
    pub index: usize,
    /// Each input of the failing node and whether it matched its oracle.
    pub inputs: Vec<(String, String)>,
    /// (element index, engine, reference) for the first values.
    pub first_values: Vec<(usize, f64, f64)>,
    /// (element index, engine, reference) of the element furthest out of tolerance.
    pub worst: (usize, f64, f64),
    pub hint: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub model: String,
    pub reference_runtime: String,
    pub mode: &'static str,
    pub adapter: String,
    pub checkpoints: Vec<CheckpointReport>,
    pub passed: usize,
    pub failed: usize,
    pub not_compared: usize,
    pub first_failure: Option<FirstFailure>,
    /// With `Options::profile`: where the pass's GPU time goes, by kernel and by op.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<m2w_engine::profile::Profile>,
    /// Why no profile was taken when one was asked for (a device without timestamps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_error: Option<String>,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.failed > 0 { 1 } else { 0 }
    }
}

/// An oracle value (npy) as an engine host tensor.
pub fn to_engine(t: &m2w_reference::HostTensor) -> HostTensor {
    let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
    match t {
        m2w_reference::HostTensor::F32(_, v) => HostTensor::f32(shape, v.clone()),
        m2w_reference::HostTensor::I64(_, v) => HostTensor::i64(shape, v.clone()),
        m2w_reference::HostTensor::Bool(_, v) => HostTensor::bool(shape, v.clone()),
        // Every integer type reaches the engine as an integer (its i32 storage), so an
        // int32 input keeps its dtype and per-layer mode writes 1, not the bits of 1.0.
        m2w_reference::HostTensor::I32(_, v) => {
            HostTensor::i64(shape, v.iter().map(|&x| x as i64).collect())
        }
        m2w_reference::HostTensor::I8(_, v) => {
            HostTensor::i64(shape, v.iter().map(|&x| x as i64).collect())
        }
        m2w_reference::HostTensor::U8(_, v) => {
            HostTensor::i64(shape, v.iter().map(|&x| x as i64).collect())
        }
        other => HostTensor::f32(shape, other.to_f64().iter().map(|&x| x as f32).collect()),
    }
}

/// An engine value as an oracle-side tensor (float as f32, integers as i64, booleans as
/// bool): the inverse of [`to_engine`].
pub fn to_oracle(t: &HostTensor) -> m2w_reference::HostTensor {
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    match t.dt() {
        DT::F32 | DT::F16 => {
            m2w_reference::HostTensor::F32(shape, t.as_f64().iter().map(|&x| x as f32).collect())
        }
        DT::Bool => {
            m2w_reference::HostTensor::Bool(shape, t.as_i64().iter().map(|&x| x != 0).collect())
        }
        _ => m2w_reference::HostTensor::I64(shape, t.as_i64()),
    }
}

/// Writes an engine value as `.npy` ([`to_oracle`]).
fn save_engine_value(dir: &Path, file: &str, t: &HostTensor) -> Result<(), ValidateError> {
    let npy = to_oracle(t);
    let bytes = npy.to_npy().map_err(bad)?;
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    let path = dir.join(file);
    std::fs::write(&path, bytes).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// Compiles `model` for the reference's inputs (the plan to validate).
pub fn compile_for(
    model: &m2w_model::Model,
    reference: &Path,
) -> Result<(Plan, HashMap<String, HostTensor>), ValidateError> {
    compile_for_dims(model, reference, &[], &[]).map(|(p, i, _)| (p, i))
}

/// [`compile_for`] with maxima for the model's named dims: the plan is symbolic (one plan
/// for every size within the maxima; a dim without a maximum gets the reference's size)
/// when every node lowers over symbolic sizes, else static for the reference's sizes,
/// with the reason returned.
pub fn compile_for_dims(
    model: &m2w_model::Model,
    reference: &Path,
    max_dims: &[(String, usize)],
    empty_dims: &[String],
) -> Result<(Plan, HashMap<String, HostTensor>, Option<String>), ValidateError> {
    let inputs = reference_inputs(reference)?;
    let plan = compile_static(model, &inputs);
    let Some(graph) = &model.graph else {
        return Ok((plan?, inputs, None));
    };
    // Sizes the reference gives each named dim.
    let mut maxima: BTreeMap<String, usize> = BTreeMap::new();
    for i in &graph.inputs {
        let Some(t) = inputs.get(&i.name) else {
            continue;
        };
        for (d, &v) in i.shape.iter().zip(&t.shape) {
            if let m2w_model::Dim::Symbolic(name) = d {
                maxima.entry(name.clone()).or_insert(v);
            }
        }
    }
    let deciding = m2w_engine::plan_time_values(graph, &inputs);
    if maxima.is_empty() && deciding.is_empty() && plan.is_ok() {
        return Ok((plan?, inputs, None));
    }
    // Small integer tensors may decide sizes at run time (sync points): their largest
    // values default to 4x what the reference saw (at least 16); `--max-dim "T=N"` sets one.
    let mut value_max: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(index) = m2w_reference::read_index(reference) {
        let small = index
            .inputs
            .iter()
            .map(|i| {
                (
                    i.name.as_str(),
                    i.file.as_str(),
                    i.shape.clone(),
                    i.dtype.as_str(),
                )
            })
            .chain(index.checkpoints.iter().map(|c| {
                (
                    c.output.as_str(),
                    c.file.as_str(),
                    c.shape.clone(),
                    c.dtype.as_str(),
                )
            }))
            .filter(|(_, _, shape, dtype)| {
                shape.iter().product::<u64>() <= 8 && shape.len() <= 1 && !dtype.starts_with('f')
            });
        for (name, file, _, _) in small {
            if let Ok(t) = m2w_reference::HostTensor::read_npy(&reference.join(file)) {
                // Values past 2^31 (INT64_MAX as "to the end") are not sizes.
                let top = t.to_f64().iter().fold(0f64, |m, &v| m.max(v));
                if top < (1u64 << 31) as f64 {
                    value_max.insert(name.to_string(), ((top.max(0.0) as usize) * 4).max(16));
                }
            }
        }
    }
    for (k, v) in max_dims {
        if maxima.contains_key(k) {
            maxima.insert(k.clone(), *v);
        } else {
            let tensor = k.split_once('[').map(|(t, _)| t).unwrap_or(k);
            value_max.insert(tensor.to_string(), *v);
        }
    }
    let symbolic = m2w_engine::symbolic_inputs(graph, &maxima).and_then(|(shapes, dims)| {
        m2w_engine::compile_symbolic_empty(model, &shapes, &dims, &value_max, empty_dims)
            .map_err(|e| e.to_string())
    });
    match (symbolic, plan) {
        (Ok(p), _) => Ok((p, inputs, None)),
        (Err(why), Ok(plan)) => Ok((plan, inputs, Some(why))),
        // Neither: the general plan's refusal is the one to act on.
        (Err(why), Err(_)) => Err(bad(format!("{}: {why}", model.path.display()))),
    }
}

/// The reference's inputs, as engine tensors.
fn reference_inputs(reference: &Path) -> Result<HashMap<String, HostTensor>, ValidateError> {
    let index = m2w_reference::read_index(reference).map_err(bad)?;
    let mut inputs = HashMap::new();
    for i in &index.inputs {
        let t =
            to_engine(&m2w_reference::read_recorded(reference, &i.file, &i.sha256).map_err(bad)?);
        inputs.insert(i.name.clone(), t);
    }
    Ok(inputs)
}

/// The plan for exactly the reference's input shapes.
fn compile_static(
    model: &m2w_model::Model,
    inputs: &HashMap<String, HostTensor>,
) -> Result<Plan, ValidateError> {
    let mut shapes: BTreeMap<String, (Vec<usize>, m2w_engine::DT)> = inputs
        .iter()
        .map(|(k, t)| (k.clone(), (t.shape.clone(), t.dt())))
        .collect();
    // Small inputs that decide a shape or an If's branch are fixed at the reference's values
    // (the plan is then specialised to them and takes them no more).
    let fixed = match &model.graph {
        Some(g) => m2w_engine::plan_time_values(g, inputs),
        None => BTreeMap::new(),
    };
    for k in fixed.keys() {
        shapes.remove(k);
    }
    m2w_engine::compile_specialized(model, &shapes, &fixed)
        .map_err(|e| bad(format!("{}: {e}", model.path.display())))
}

/// Validates `plan` (compiled from `model`) against the reference folder.
pub fn validate(
    gpu: &Gpu,
    model: &m2w_model::Model,
    mut plan: Plan,
    inputs: &HashMap<String, HostTensor>,
    reference: &Path,
    opts: &Options,
) -> Result<Report, ValidateError> {
    let index = m2w_reference::read_index(reference).map_err(bad)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("not an ONNX model"))?;
    if index.model.sha256 != model.file_sha256().map_err(bad)? {
        return Err(bad(format!(
            "{}: the reference was made from a different model file ({})",
            reference.display(),
            index.model.file
        )));
    }
    // An oracle value in the engine's layout: a front-end may hold a value transposed
    // (TFLite's NHWC feature maps as NCHW), recorded in the graph's layouts.
    // Each oracle is checked against its recorded sha256. Inputs and graph outputs that hold
    // NaN, or nothing but infinities, are refused unless asked for: NaN inputs make every
    // value NaN on both sides, and such a run "passes" while proving nothing. Intermediate
    // values may be so by design (a mask's -inf, T5's log(0) of a relative position) and are
    // compared exactly like every other.
    let nonfinite =
        |what: String, p: &Path, t: &m2w_reference::HostTensor| -> Result<(), ValidateError> {
            match m2w_reference::nonfinite_problem(t) {
                Some(why) if !opts.allow_nonfinite_oracle => Err(bad(format!(
                    "{}: {what} {why}: a run that proves nothing (pass --allow-nonfinite-oracle to \
                 compare it exactly)",
                    p.display()
                ))),
                _ => Ok(()),
            }
        };
    for i in &index.inputs {
        let t = m2w_reference::read_recorded(reference, &i.file, &i.sha256).map_err(bad)?;
        nonfinite(format!("input '{}'", i.name), &reference.join(&i.file), &t)?;
    }
    let oracle_of = |name: &str, file: &str| -> Result<HostTensor, ValidateError> {
        let p = reference.join(file);
        let record = index.checkpoints.iter().find(|c| c.file == file);
        let sha = record.map(|c| c.sha256.as_str()).unwrap_or("");
        let raw = m2w_reference::read_recorded(reference, file, sha).map_err(bad)?;
        if record.is_some_and(|c| c.graph_output) {
            nonfinite(format!("the oracle of graph output '{name}'"), &p, &raw)?;
        }
        let t = to_engine(&raw);
        match graph.layouts.get(name) {
            Some(perm) => t.permuted(perm).ok_or_else(|| {
                bad(format!(
                    "{}: shape {:?} does not take the layout {perm:?} of '{name}'",
                    p.display(),
                    t.shape
                ))
            }),
            None => Ok(t),
        }
    };
    // A checkpoint's tolerance: the options', widened where a rule of its op says why.
    let tolerance_of = |c: &m2w_reference::index::Checkpoint| -> (Tolerance, Option<String>) {
        let mut tol = opts.tolerance(&c.output, &c.dtype);
        let mut note = None;
        if opts.override_for(&c.output).is_none()
            && let Some(node) = graph
                .nodes
                .iter()
                .find(|n| n.scope.is_empty() && n.outputs.contains(&c.output))
            && let Some((atol, why)) = rounding_atol(model, node, &c.output)
            && atol > tol.atol
        {
            tol.atol = atol;
            note = Some(why);
        }
        (tol, note)
    };
    // Debug capture reads every checkpoint: no buffer sharing.
    plan.assign_buffers(false);
    let runner = Runner::new(gpu, plan).map_err(bad)?;
    let wanted: Vec<String> = index
        .checkpoints
        .iter()
        .map(|c| c.output.clone())
        .filter(|o| runner.plan.tensors.contains_key(o) && !runner.plan.constants.contains_key(o))
        .collect();
    // Per-layer mode also runs end to end first, so that each checkpoint's isolated error
    // sits beside its accumulated one (only the ratios are kept).
    let mut accumulated: HashMap<String, f64> = HashMap::new();
    if opts.per_layer {
        let _progress = m2w_progress::task("end to end, for the accumulated error", None);
        if let Ok(run) = runner.run(inputs, &wanted) {
            for c in &index.checkpoints {
                if let Some(g) = run.get(&c.output) {
                    let want = oracle_of(&c.output, &c.file)?;
                    let ratio = if g.shape != want.shape {
                        f64::INFINITY
                    } else {
                        compare(&g.as_f64(), &want.as_f64(), tolerance_of(c).0).max_ratio
                    };
                    accumulated.insert(c.output.clone(), ratio);
                }
            }
        }
    }
    let mut got: HashMap<String, HostTensor> = HashMap::new();
    if opts.per_layer {
        // Write every graph input, then for each node: its inputs from the oracle, run its
        // dispatches, read its outputs.
        runner.bind_inputs(inputs).map_err(bad)?;
        for (k, v) in inputs {
            runner.write(k, v).map_err(bad)?;
        }
        let by_output: HashMap<&str, &m2w_reference::index::Checkpoint> = index
            .checkpoints
            .iter()
            .map(|c| (c.output.as_str(), c))
            .collect();
        let dispatches = &runner.plan.dispatches;
        let progress = m2w_progress::task("per layer: run", Some(dispatches.len() as u64));
        let mut start = 0;
        let mut next_sync = 0;
        while start < dispatches.len() {
            // Sync points before this node bind the dims its sizes need.
            while next_sync < runner.plan.syncs.len() && runner.plan.syncs[next_sync].at <= start {
                runner.sync(next_sync).map_err(bad)?;
                next_sync += 1;
            }
            let node = dispatches[start].node.clone();
            let mut end = start;
            while end < dispatches.len() && dispatches[end].node == node {
                end += 1;
            }
            if let Some(n) = graph
                .nodes
                .iter()
                .find(|n| n.scope.is_empty() && n.label() == node)
            {
                for i in &n.inputs {
                    if let Some(c) = by_output.get(i.as_str())
                        && runner.plan.tensors.contains_key(i)
                        && !runner.plan.constants.contains_key(runner.plan.base_of(i))
                    {
                        runner.write(i, &oracle_of(i, &c.file)?).map_err(bad)?;
                    }
                }
                runner.run_dispatches(start..end);
                let outs: Vec<String> = n
                    .outputs
                    .iter()
                    .filter(|o| wanted.contains(o))
                    .cloned()
                    .collect();
                got.extend(runner.read(&outs).map_err(bad)?);
            } else {
                runner.run_dispatches(start..end);
            }
            progress.inc((end - start) as u64);
            start = end;
        }
        drop(progress);
        // Views of outputs (Reshape etc.) have no dispatch of their own: read them at the end.
        let rest: Vec<String> = wanted
            .iter()
            .filter(|w| !got.contains_key(*w))
            .cloned()
            .collect();
        got.extend(runner.read(&rest).map_err(bad)?);
    } else {
        let _progress = m2w_progress::task("end to end: run and read back", None);
        got = runner.run(inputs, &wanted).map_err(bad)?;
    }

    let mut reports = Vec::new();
    let mut values: HashMap<String, (Vec<f64>, Vec<f64>)> = HashMap::new();
    let progress = m2w_progress::task("compare", Some(index.checkpoints.len() as u64));
    for c in &index.checkpoints {
        progress.inc(1);
        let (tol, tolerance_note) = tolerance_of(c);
        let mut r = CheckpointReport::new(c, tol);
        r.tolerance_note = tolerance_note;
        r.accumulated_ratio = accumulated.get(&c.output).copied();
        if let Some(g) = got.get(&c.output) {
            let want = oracle_of(&c.output, &c.file)?;
            r.compared = true;
            if g.shape != want.shape {
                // A size the engine computed (a data-dependent length: a Range's limit, a
                // NonZero count) came out different: a failed checkpoint like any other, so
                // the report still shows where the values drifted before it.
                r.pass = false;
                r.problem = Some(format!(
                    "the engine's shape {:?} differs from the oracle's {:?}",
                    g.shape, want.shape
                ));
                values.insert(c.output.clone(), (vec![], vec![]));
                reports.push(r);
                continue;
            }
            let (mut a, b) = (g.as_f64(), want.as_f64());
            // WGSL has no 64-bit integers: the engine's int64 tensors are i32, so an oracle
            // element past the i32 range cannot be represented, and is left out of the
            // comparison, counted in the note. (ORT casts -inf to int64 as i64::MIN; T5's
            // relative-position buckets do that for the positions a later Where discards,
            // and the checkpoints after the Where are compared in full.)
            if (c.dtype == "i64" || c.dtype == "u64") && a.len() == b.len() {
                let (lo, hi) = (i32::MIN as f64, i32::MAX as f64);
                let mut skipped = 0;
                for (x, &y) in a.iter_mut().zip(&b) {
                    if y < lo || y > hi {
                        *x = y;
                        skipped += 1;
                    }
                }
                if skipped > 0 {
                    r.tolerance_note = Some(format!(
                        "{skipped} int64 value(s) past the i32 range not compared (the engine's integers are i32)"
                    ));
                }
            }
            r.set_stats(&compare(&a, &b, tol));
            if !r.pass
                && let Some(dir) = &opts.save_mismatches
            {
                save_engine_value(dir, &c.file, g)?;
            }
            values.insert(c.output.clone(), (a, b));
        }
        reports.push(r);
    }
    let first_failure = reports.iter().find(|r| r.compared && !r.pass).map(|r| {
        let node = graph
            .nodes
            .iter()
            .find(|n| n.scope.is_empty() && n.outputs.contains(&r.name));
        let inputs_status: Vec<(String, String)> = node
            .map(|n| {
                n.inputs
                    .iter()
                    .filter(|i| !i.is_empty())
                    .map(|i| {
                        let status = match reports.iter().find(|x| &x.name == i) {
                            Some(x) if x.compared && x.pass => "matches its oracle".to_string(),
                            Some(x) if x.compared => format!("DIFFERS (max abs {:.3e})", x.max_abs),
                            Some(_) => "no engine value (folded or fused)".into(),
                            None if graph.inputs.iter().any(|g| &g.name == i) => {
                                "graph input (given)".into()
                            }
                            None => "weight or constant".into(),
                        };
                        (i.clone(), status)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let inputs_ok =
            opts.per_layer || inputs_status.iter().all(|(_, s)| !s.starts_with("DIFFERS"));
        let (a, b) = &values[&r.name];
        let hint = match &r.problem {
            Some(p) => format!("{p}: a size computed from values that drifted earlier"),
            None => diagnose(a, b, inputs_ok, &r.name, r.tolerance),
        };
        FirstFailure {
            name: r.name.clone(),
            index: r.index,
            inputs: inputs_status,
            first_values: a
                .iter()
                .zip(b)
                .take(8)
                .enumerate()
                .map(|(i, (x, y))| (i, *x, *y))
                .collect(),
            worst: (r.worst_index, r.worst_engine, r.worst_reference),
            hint,
        }
    });
    let passed = reports.iter().filter(|r| r.compared && r.pass).count();
    let failed = reports.iter().filter(|r| r.compared && !r.pass).count();
    let not_compared = reports.iter().filter(|r| !r.compared).count();
    let (profile, profile_error) = if opts.profile {
        let _progress = m2w_progress::task("profile", None);
        match m2w_engine::profile::shader_copy_gb_s(gpu, PROFILE_COPY_BYTES)
            .and_then(|copy| m2w_engine::profile::profile(&runner, copy))
        {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    Ok(Report {
        schema: SCHEMA,
        model: index.model.file.clone(),
        reference_runtime: index.runtime.clone(),
        mode: if opts.per_layer {
            "per-layer"
        } else {
            "end-to-end"
        },
        adapter: format!("{} ({:?})", gpu.info.name, gpu.info.backend),
        checkpoints: reports,
        passed,
        failed,
        not_compared,
        first_failure,
        profile,
        profile_error,
    })
}

/// Compares a runner's stage tensors with a candle reference pass folder (names match).
fn llama_pass_report(
    gpu: &Gpu,
    runner: &Runner,
    dir: &Path,
    mode: &'static str,
    opts: &Options,
) -> Result<Report, ValidateError> {
    let index = m2w_reference::read_index(dir).map_err(bad)?;
    let names: Vec<String> = index.checkpoints.iter().map(|c| c.output.clone()).collect();
    let got = runner.read(&names).map_err(bad)?;
    let mut reports = Vec::new();
    let mut values = HashMap::new();
    for c in &index.checkpoints {
        let tol = opts.tolerance(&c.output, &c.dtype);
        let want = m2w_reference::read_recorded(dir, &c.file, &c.sha256)
            .map_err(bad)?
            .to_f64();
        let a = got[&c.output].as_f64();
        if a.len() != want.len() {
            return Err(bad(format!(
                "stage {}: {} values on the GPU, {} in the reference",
                c.output,
                a.len(),
                want.len()
            )));
        }
        let mut r = CheckpointReport::new(c, tol);
        r.compared = true;
        r.set_stats(&compare(&a, &want, tol));
        reports.push(r);
        values.insert(c.output.clone(), (a, want));
    }
    let first_failure = reports.iter().find(|r| !r.pass).map(|r| {
        let (a, b) = &values[&r.name];
        let before_ok = reports
            .iter()
            .take_while(|x| x.name != r.name)
            .all(|x| x.pass);
        FirstFailure {
            name: r.name.clone(),
            index: r.index,
            inputs: vec![],
            first_values: a
                .iter()
                .zip(b)
                .take(8)
                .enumerate()
                .map(|(i, (x, y))| (i, *x, *y))
                .collect(),
            worst: (r.worst_index, r.worst_engine, r.worst_reference),
            hint: diagnose(a, b, before_ok, &r.name, r.tolerance),
        }
    });
    let passed = reports.iter().filter(|r| r.pass).count();
    Ok(Report {
        schema: SCHEMA,
        model: index.model.file.clone(),
        reference_runtime: index.runtime.clone(),
        mode,
        adapter: format!("{} ({:?})", gpu.info.name, gpu.info.backend),
        failed: reports.len() - passed,
        passed,
        not_compared: 0,
        checkpoints: reports,
        first_failure,
        profile: None,
        profile_error: None,
    })
}

/// GGUF decoders: every stage of the prefill and of one decode step against the candle
/// reference folder (`prefill/`, `decode/`, `generation.json`), and the greedy continuation
/// token for token. Returns (prefill report, decode report, greedy tokens match).
pub fn validate_llama(
    gpu: &Gpu,
    model: &m2w_model::Model,
    reference: &Path,
    opts: &Options,
) -> Result<(Report, Report, bool, Vec<u32>, Vec<u32>), ValidateError> {
    let generation = m2w_reference::llama::GenerationJson::read(reference).map_err(bad)?;
    let gen_path = reference.join(m2w_reference::llama::GenerationJson::FILE);
    let (prompt, want) = (generation.prompt_ids, generation.generated_ids);
    if prompt.is_empty() || want.is_empty() {
        return Err(bad(format!(
            "{}: no prompt_ids / generated_ids",
            gen_path.display()
        )));
    }
    let dec = m2w_engine::llama::Decoder::with_capture(
        gpu,
        model,
        prompt.len(),
        prompt.len() + want.len() + 1,
    )
    .map_err(bad)?;
    let first = dec.run_prefill(&prompt).map_err(bad)?;
    let pre = llama_pass_report(
        gpu,
        &dec.prefill,
        &reference.join("prefill"),
        "prefill",
        opts,
    )?;
    dec.step(first, prompt.len()).map_err(bad)?;
    let decode = llama_pass_report(
        gpu,
        &dec.decode,
        &reference.join("decode"),
        "decode step",
        opts,
    )?;
    // The reference stops at end-of-sequence: generate the same number of tokens.
    let got = dec.greedy(&prompt, want.len(), None).map_err(bad)?;
    Ok((pre, decode, got == want, got, want))
}
