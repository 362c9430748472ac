//! ONNX's own backend node tests (from the onnx==1.22.0 wheel) run through
//! IR -> plan -> wgpu and compared with their expected outputs, with the tolerances ONNX's
//! runner uses (rtol 1e-3, atol 1e-7). Each case ends as pass, fail (wrong answer or a
//! run-time error) or unsupported (rejected before any GPU work).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use prost::Message;

use crate::gpu::{Gpu, Runner};
use crate::ops::onnx_dt;
use crate::tensor::{DT, Data, HostTensor};
use crate::{CompileError, compile_specialized};

pub const RTOL: f64 = 1e-3;
pub const ATOL: f64 = 1e-7;

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CaseResult {
    pub case: String,
    /// The op the case tests (its single node, or the op its name starts with).
    pub op: String,
    pub outcome: Outcome,
    /// How a passing case's plan was made.
    pub plan: PlanKind,
    /// The general plan ran but answered wrong (the case then went to the specialised
    /// plan): listed in OP_SUPPORT.md, as a wrong answer of the general path.
    pub general_wrong: Option<String>,
}

/// How a case's plan was made: general (every input fed at run time; sizes decided by
/// input values read back at sync points), or specialised (inputs that decide shapes or
/// branches fixed at the test's values, as a fallback when the general plan cannot be
/// built or run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PlanKind {
    General,
    GeneralWithSyncs,
    Specialised,
    /// The case did not pass.
    None,
}

/// A TensorProto file of a test data set as a host tensor.
pub fn read_pb(path: &Path) -> Result<HostTensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = m2w_model::onnx::proto::TensorProto::decode(bytes.as_slice())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    // 4- and 2-bit integers: packed bytes (in raw_data, or one per int32_data entry).
    if let Some((bits, signed)) = m2w_model::DType::from_onnx(t.data_type()).sub_byte() {
        let bytes: Vec<u8> = match &t.raw_data {
            Some(raw) => raw.clone(),
            None => t.int32_data.iter().map(|&v| v as u8).collect(),
        };
        let count = shape.iter().product();
        let v = m2w_model::dtype::unpack_sub_byte(&bytes, count, bits, signed);
        return Ok(HostTensor::i64(shape, v));
    }
    let dt = onnx_dt(t.data_type())?;
    let code = t.data_type();
    let raw = t.raw_data.clone().unwrap_or_default();
    let has_raw = t.raw_data.is_some();
    Ok(match dt {
        DT::F32 => HostTensor::f32(
            shape,
            if has_raw {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            } else {
                t.float_data.clone()
            },
        ),
        DT::Bool => HostTensor::bool(
            shape,
            if has_raw {
                raw.iter().map(|&b| b != 0).collect()
            } else {
                t.int32_data.iter().map(|&v| v != 0).collect()
            },
        ),
        DT::I32 => {
            let dtype = m2w_model::DType::from_onnx(code);
            let v: Vec<i64> = if has_raw {
                match dtype {
                    m2w_model::DType::I64 => raw
                        .chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    m2w_model::DType::U64 => raw
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                    other => m2w_model::dtype::to_f32(&raw, other)
                        .unwrap_or_default()
                        .iter()
                        .map(|&x| x as i64)
                        .collect(),
                }
            } else if !t.int64_data.is_empty() {
                t.int64_data.clone()
            } else if !t.uint64_data.is_empty() {
                t.uint64_data.iter().map(|&v| v as i64).collect()
            } else {
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            if v.iter()
                .any(|&x| x < i32::MIN as i64 || x > i32::MAX as i64)
            {
                return Err("integer values outside i32 (the GPU stores 32-bit integers)".into());
            }
            HostTensor::i64(shape, v)
        }
        other => return Err(format!("dtype {other:?} is not read from test data")),
    })
}

fn compare(got: &HostTensor, want: &HostTensor) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape));
    }
    match (&got.data, &want.data) {
        (Data::F32(a), Data::F32(b)) => {
            for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
                if !crate::tensor::within(x as f64, y as f64, ATOL, RTOL) {
                    return Err(format!("element {i}: {x} vs expected {y}"));
                }
            }
            Ok(())
        }
        (Data::I64(a), Data::I64(b)) => a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .map_or(Ok(()), |i| {
                Err(format!("element {i}: {} vs expected {}", a[i], b[i]))
            }),
        (Data::Bool(a), Data::Bool(b)) => a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .map_or(Ok(()), |i| {
                Err(format!("element {i}: {} vs expected {}", a[i], b[i]))
            }),
        _ => Err(format!("dtype {:?}, expected {:?}", got.dt(), want.dt())),
    }
}

fn snake(op: &str) -> String {
    let mut s = String::new();
    for (i, c) in op.chars().enumerate() {
        if c.is_ascii_uppercase() {
            let prev_lower = i > 0
                && op
                    .chars()
                    .nth(i - 1)
                    .is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
            if prev_lower {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn case_op(name: &str, model: Option<&m2w_model::Model>) -> String {
    let Some(g) = model.and_then(|m| m.graph.as_ref()) else {
        return "(unreadable)".into();
    };
    let main: Vec<&m2w_model::NodeInfo> = g.nodes.iter().filter(|n| n.scope.is_empty()).collect();
    if main.len() == 1 {
        return main[0].op_type.clone();
    }
    let rest = name.trim_start_matches("test_");
    let mut best: Option<String> = None;
    for n in &g.nodes {
        let s = snake(&n.op_type);
        if rest.starts_with(&s) && best.as_ref().is_none_or(|b| snake(b).len() < s.len()) {
            best = Some(n.op_type.clone());
        }
    }
    best.unwrap_or_else(|| "(multi-op)".into())
}

/// Runs one node-test folder.
pub fn run_case(gpu: &Gpu, dir: &Path) -> CaseResult {
    let (case, op, model) = open_case(dir);
    let caught = |f: &dyn Fn() -> (Outcome, PlanKind)| match std::panic::catch_unwind(
        std::panic::AssertUnwindSafe(f),
    ) {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (
                Outcome::Fail(format!("panicked: {}", msg.lines().next().unwrap_or(""))),
                PlanKind::None,
            )
        }
    };
    // The general plan first; the specialised one when it cannot be built or run.
    let general_wrong = match caught(&|| run_general(gpu, dir, model.as_ref())) {
        (Outcome::Pass, kind) => {
            return CaseResult {
                case,
                op,
                outcome: Outcome::Pass,
                plan: kind,
                general_wrong: None,
            };
        }
        (Outcome::Fail(e), _) if e.starts_with("output ") => Some(e),
        _ => None,
    };
    let (outcome, _) = caught(&|| (run_inner(gpu, dir, model.as_ref()), PlanKind::None));
    let plan = if outcome == Outcome::Pass {
        PlanKind::Specialised
    } else {
        PlanKind::None
    };
    CaseResult {
        case,
        op,
        outcome,
        plan,
        general_wrong,
    }
}

/// The case with every input fed at run time: small integer inputs that decide sizes
/// become value dims (at most 4x their test value, at least 16) read back at sync points.
fn run_general(gpu: &Gpu, dir: &Path, model: Option<&m2w_model::Model>) -> (Outcome, PlanKind) {
    let Some(model) = model else {
        return (Outcome::Unsupported("unreadable".into()), PlanKind::None);
    };
    let Some(graph) = model.graph.as_ref() else {
        return (Outcome::Unsupported("no graph".into()), PlanKind::None);
    };
    let data = dir.join("test_data_set_0");
    let mut inputs = HashMap::new();
    let mut shapes = BTreeMap::new();
    let mut value_max = BTreeMap::new();
    for (k, i) in graph.inputs.iter().enumerate() {
        if matches!(
            i.dtype.as_str(),
            "sequence" | "optional" | "map" | "sparse_tensor"
        ) {
            return (
                Outcome::Unsupported("not a tensor input".into()),
                PlanKind::None,
            );
        }
        let Ok(t) = read_pb(&data.join(format!("input_{k}.pb"))) else {
            return (Outcome::Unsupported("input".into()), PlanKind::None);
        };
        if t.dt() == crate::DT::I32 && t.shape.len() <= 1 && t.len() <= 8 {
            // Values past 2^31 (INT64_MAX as "to the end") are not sizes.
            let top = t
                .as_i64()
                .iter()
                .map(|v| v.unsigned_abs())
                .max()
                .unwrap_or(0);
            if top < 1 << 31 {
                value_max.insert(i.name.clone(), ((top as usize) * 4).max(16));
            }
        }
        shapes.insert(i.name.clone(), (crate::sym::fixed(&t.shape), t.dt()));
        inputs.insert(i.name.clone(), t);
    }
    let mut expected = Vec::new();
    for (k, o) in graph.outputs.iter().enumerate() {
        match read_pb(&data.join(format!("output_{k}.pb"))) {
            Ok(t) => expected.push((o.name.clone(), t)),
            Err(_) => return (Outcome::Unsupported("output".into()), PlanKind::None),
        }
    }
    let plan = match crate::compile_symbolic_with(model, &shapes, &[], &value_max) {
        Ok(p) => p,
        Err(e) => return (Outcome::Unsupported(e.to_string()), PlanKind::None),
    };
    let kind = if plan.syncs.is_empty() {
        PlanKind::General
    } else {
        PlanKind::GeneralWithSyncs
    };
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let outputs: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    let result = Runner::new(gpu, plan).and_then(|r| r.run(&inputs, &outputs));
    if pollster::block_on(scope.pop()).is_some() {
        return (Outcome::Fail("validation".into()), PlanKind::None);
    }
    let Ok(got) = result else {
        return (Outcome::Fail("run".into()), PlanKind::None);
    };
    for (name, want) in &expected {
        match got.get(name) {
            Some(g) if compare(g, want).is_ok() => {}
            _ => return (Outcome::Fail(format!("output {name}")), PlanKind::None),
        }
    }
    (Outcome::Pass, kind)
}

/// A case compiled for its test data: the plan, the run-time inputs and the expected
/// outputs; or the outcome it ends with before any GPU work.
type Prepared = (
    crate::Plan,
    HashMap<String, HostTensor>,
    Vec<(String, HostTensor)>,
);

/// The case's op and its plan (no GPU work), or the outcome that stops it before any:
/// what `run_case` does up to running.
pub fn plan_case(dir: &Path) -> (String, Result<crate::Plan, Outcome>) {
    let (_, op, model) = open_case(dir);
    (op, prepare(dir, model.as_ref()).map(|p| p.0))
}

/// A case folder's name, the op it tests and its model (None when unreadable).
fn open_case(dir: &Path) -> (String, String, Option<m2w_model::Model>) {
    let case = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model = m2w_model::Model::open(&dir.join("model.onnx")).ok();
    let op = case_op(&case, model.as_ref());
    (case, op, model)
}

fn prepare(dir: &Path, model: Option<&m2w_model::Model>) -> Result<Prepared, Outcome> {
    let Some(model) = model else {
        return Err(Outcome::Unsupported("the model cannot be read".into()));
    };
    let graph = model.graph.as_ref().expect("ONNX");
    let data = dir.join("test_data_set_0");
    let mut inputs = HashMap::new();
    let mut shapes = BTreeMap::new();
    for (k, i) in graph.inputs.iter().enumerate() {
        if matches!(
            i.dtype.as_str(),
            "sequence" | "optional" | "map" | "sparse_tensor"
        ) {
            return Err(Outcome::Unsupported(format!(
                "input '{}' is a {}, only tensors are supported",
                i.name, i.dtype
            )));
        }
        match read_pb(&data.join(format!("input_{k}.pb"))) {
            Ok(t) => {
                shapes.insert(i.name.clone(), (t.shape.clone(), t.dt()));
                inputs.insert(i.name.clone(), t);
            }
            Err(e) => return Err(Outcome::Unsupported(format!("input '{}': {e}", i.name))),
        }
    }
    let mut expected = Vec::new();
    for (k, o) in graph.outputs.iter().enumerate() {
        match read_pb(&data.join(format!("output_{k}.pb"))) {
            Ok(t) => expected.push((o.name.clone(), t)),
            Err(e) => return Err(Outcome::Unsupported(format!("output '{}': {e}", o.name))),
        }
    }
    // Small inputs that decide shapes or an If's branch (axes, shape targets, split sizes,
    // conditions): the plan is specialised on their values, as an application binding
    // them would do. Only those are fixed, so everything else still runs on the GPU.
    let fixed = crate::plan_time_values(graph, &inputs);
    for k in fixed.keys() {
        inputs.remove(k);
        shapes.remove(k);
    }
    let plan = match compile_specialized(model, &shapes, &fixed) {
        Ok(p) => p,
        Err(CompileError::Unsupported(v)) => {
            return Err(Outcome::Unsupported(
                v.iter()
                    .map(|u| format!("{} ({}): {}", u.op_type, u.node, u.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        Err(CompileError::Invalid(e)) => return Err(Outcome::Unsupported(e)),
    };
    Ok((plan, inputs, expected))
}

fn run_inner(gpu: &Gpu, dir: &Path, model: Option<&m2w_model::Model>) -> Outcome {
    let (plan, inputs, expected) = match prepare(dir, model) {
        Ok(p) => p,
        Err(o) => return o,
    };
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let runner = Runner::new(gpu, plan);
    let outputs: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    let result = runner.and_then(|r| r.run(&inputs, &outputs));
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Outcome::Fail(format!(
            "WebGPU validation error: {}",
            e.to_string().lines().next().unwrap_or("")
        ));
    }
    let got = match result {
        Ok(g) => g,
        Err(e) => return Outcome::Fail(e),
    };
    for (name, want) in &expected {
        let Some(g) = got.get(name) else {
            return Outcome::Fail(format!("output {name} missing"));
        };
        if let Err(e) = compare(g, want) {
            return Outcome::Fail(format!("output {name}: {e}"));
        }
    }
    Outcome::Pass
}

/// Every case folder under `root` (sorted), run on one device.
pub fn run_all(gpu: &Gpu, root: &Path, filter: Option<&str>) -> Vec<CaseResult> {
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.join("model.onnx").is_file())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    let mut results: Vec<CaseResult> = dirs
        .into_iter()
        .filter(|d| filter.is_none_or(|f| d.to_string_lossy().contains(f)))
        .map(|d| run_case(gpu, &d))
        .collect();
    // Multi-node cases (function expansions such as test_softmax_axis_0_expanded) are
    // credited to the op their name starts with, learnt from the single-node cases.
    let known: Vec<(String, String)> = results
        .iter()
        .filter(|r| !r.op.starts_with('('))
        .map(|r| (snake(&r.op), r.op.clone()))
        .collect();
    for r in results.iter_mut().filter(|r| r.op == "(multi-op)") {
        let rest = r.case.trim_start_matches("test_").to_string();
        let best = known
            .iter()
            .filter(|(s, _)| {
                rest.starts_with(s.as_str())
                    && rest[s.len()..].chars().next().is_none_or(|c| c == '_')
            })
            .max_by_key(|(s, _)| s.len());
        if let Some((_, op)) = best {
            r.op = op.clone();
        }
    }
    results
}

/// `docs/OP_SUPPORT.md`: per op, cases passed / failed / unsupported, and a total.
pub fn op_support_markdown(results: &[CaseResult], adapter: &str) -> String {
    // Per op: passes with a general plan, passes only with a specialised plan, failures,
    // unsupported. The headline counts general plans only (what a user's inputs get).
    let mut per: BTreeMap<&str, (usize, usize, usize, usize)> = BTreeMap::new();
    for r in results {
        let e = per.entry(r.op.as_str()).or_default();
        match r.outcome {
            Outcome::Pass if r.plan == PlanKind::Specialised => e.1 += 1,
            Outcome::Pass => e.0 += 1,
            Outcome::Fail(_) => e.2 += 1,
            Outcome::Unsupported(_) => e.3 += 1,
        }
    }
    let (g, sp, f, u) = per.values().fold((0, 0, 0, 0), |a, v| {
        (a.0 + v.0, a.1 + v.1, a.2 + v.2, a.3 + v.3)
    });
    let mut s = String::from("# ONNX op support (generated)\n\n");
    s.push_str(
        "Generated by `cargo xtask conformance` from ONNX's backend node tests (onnx==1.22.0),\n",
    );
    s.push_str(&format!(
        "run through m2w's plan and wgpu on {adapter}; tolerances rtol {RTOL}, atol {ATOL}.\n\n"
    ));
    s.push_str(&format!(
        "**Total, general plans only (every input fed at run time, as a user's inputs are): \
         {g} passed, {f} failed, {} not run generally ({u} unsupported, {sp} only with a \
         specialised plan), of {} cases.**\n\n",
        u + sp,
        results.len()
    ));
    let syncs = results
        .iter()
        .filter(|r| r.plan == PlanKind::GeneralWithSyncs)
        .count();
    s.push_str(&format!(
        "Plans: {syncs} of the {g} general passes need a sync point (an input's values read \
         back to decide sizes). {sp} more cases pass only with the plan specialised to the \
         test's values of the inputs that decide ranks, negative sizes or If branches \
         (docs/DYNAMIC_SHAPES.md): {} pass with either.\n\n",
        g + sp
    ));
    s.push_str(
        "The registry column is the op's family in m2w's op registry (`crates/engine/src/ops/`),\n\
         or `none` with the reason category when m2w has no lowering for it.\n\n",
    );
    s.push_str(
        "| op | registry | passed (general) | specialised only | failed | unsupported |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for (op, (a, b, c, d)) in &per {
        let family = crate::ops::registry_label(op);
        s.push_str(&format!("| {op} | {family} | {a} | {b} | {c} | {d} |\n"));
    }
    s.push_str("\n## Failures (wrong answers and run-time errors)\n\n");
    for r in results {
        if let Outcome::Fail(e) = &r.outcome {
            s.push_str(&format!("- `{}`: {}\n", r.case, e.replace('|', "/")));
        }
    }
    s.push_str("\n## Wrong answers of the general plan (passed when specialised)\n\n");
    for r in results.iter().filter(|r| r.outcome == Outcome::Pass) {
        if let Some(e) = &r.general_wrong {
            s.push_str(&format!("- `{}`: {}\n", r.case, e.replace('|', "/")));
        }
    }
    s
}
