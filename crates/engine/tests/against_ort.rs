//! Real models run on wgpu (lavapipe in CI) and compared with ONNX Runtime: the reference
//! phase dumps every node output through ORT, the engine runs the same inputs, and every
//! checkpoint the plan has is read back and compared.
//!
//! Tolerance: |engine - ort| <= 1e-4 + 1e-3 * |ort| element-wise (f32; both sides accumulate
//! in f32 but in different orders, and erf/exp/tanh are approximated differently). For the
//! 60-conv PP-OCR detector, differences accumulated over many layers reach single elements
//! close to zero, so there the relative part is taken against the checkpoint's largest
//! magnitude (`Scale::Tensor`); per-layer comparison with ORT's own inputs (validate phase)
//! will judge each conv alone.

use std::collections::{BTreeMap, HashMap};

use m2w_engine::gpu::{Gpu, Runner};
use m2w_engine::{DT, Data, HostTensor, compile};
use m2w_reference::onnx_ref::{OnnxOptions, reference};

const ATOL: f64 = 1e-4;
const RTOL: f64 = 1e-3;

fn fixture(name: &str) -> std::path::PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

fn to_engine(t: &m2w_reference::HostTensor) -> HostTensor {
    let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
    match t {
        m2w_reference::HostTensor::F32(_, v) => HostTensor::f32(shape, v.clone()),
        m2w_reference::HostTensor::I64(_, v) => HostTensor::i64(shape, v.clone()),
        m2w_reference::HostTensor::Bool(_, v) => HostTensor::bool(shape, v.clone()),
        other => HostTensor::f32(shape, other.to_f64().iter().map(|&x| x as f32).collect()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Element,
    Tensor,
}

/// Runs `name` through ORT and the engine; returns (checkpoints compared, worst error, failures).
fn compare(name: &str, opts: OnnxOptions, scale: Scale) -> (usize, f64, Vec<String>) {
    compare_sizes(name, &BTreeMap::new(), &[opts], scale)
}

/// Compiles `name` once (symbolic over the dims given maxima in `maxima`; static when
/// none are) and runs that one plan for each of `runs` (the ORT options say each run's
/// dims), comparing every checkpoint with ORT's dump of the same inputs.
fn compare_sizes(
    name: &str,
    maxima: &BTreeMap<String, usize>,
    runs: &[OnnxOptions],
    scale: Scale,
) -> (usize, f64, Vec<String>) {
    let model_path = fixture(name);
    let model = m2w_model::Model::open(&model_path).unwrap();
    let lib = m2w_setup::onnxruntime_library().unwrap();
    let gpu = Gpu::new().unwrap();
    let mut runner: Option<Runner> = None;
    let (mut worst, mut failures, mut compared) = (0f64, Vec::new(), 0);
    for opts in runs {
        let dir = tempfile::tempdir().unwrap();
        let index = reference(&lib, &model_path, dir.path(), opts).unwrap();
        let mut inputs = HashMap::new();
        let mut shapes = BTreeMap::new();
        for i in &index.inputs {
            let t =
                to_engine(&m2w_reference::HostTensor::read_npy(&dir.path().join(&i.file)).unwrap());
            shapes.insert(i.name.clone(), (t.shape.clone(), t.dt()));
            inputs.insert(i.name.clone(), t);
        }
        if runner.is_none() {
            let plan = if maxima.is_empty() {
                compile(&model, &shapes)
            } else {
                let graph = model.graph.as_ref().unwrap();
                let (sym_inputs, dims) = m2w_engine::symbolic_inputs(graph, maxima).unwrap();
                m2w_engine::compile_symbolic(&model, &sym_inputs, &dims)
            }
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            runner = Some(Runner::new(&gpu, plan).unwrap());
        }
        let runner = runner.as_ref().unwrap();
        let wanted: Vec<String> = index
            .checkpoints
            .iter()
            .map(|c| c.output.clone())
            .filter(|o| runner.plan.tensors.contains_key(o))
            .collect();
        let got = runner.run(&inputs, &wanted).unwrap();
        let tag = format!("{:?}", opts.dims);
        for c in &index.checkpoints {
            let Some(g) = got.get(&c.output) else {
                continue;
            };
            compared += 1;
            let want =
                to_engine(&m2w_reference::HostTensor::read_npy(&dir.path().join(&c.file)).unwrap());
            if g.shape != want.shape {
                failures.push(format!(
                    "{tag} {}: shape {:?} vs {:?}",
                    c.output, g.shape, want.shape
                ));
                continue;
            }
            match (&g.data, &want.data) {
                (Data::F32(a), Data::F32(b)) => {
                    let max_mag = b.iter().fold(0f64, |m, &y| m.max((y as f64).abs()));
                    for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
                        let err = (x as f64 - y as f64).abs();
                        worst = worst.max(err);
                        let reference = if scale == Scale::Tensor {
                            max_mag
                        } else {
                            (y as f64).abs()
                        };
                        if !(err <= ATOL + RTOL * reference) {
                            failures.push(format!(
                                "{tag} {} ({}): element {k}: {x} vs ORT {y}",
                                c.output, c.op_type
                            ));
                            break;
                        }
                    }
                }
                _ => {
                    if g.as_i64() != want.as_i64() {
                        failures.push(format!(
                            "{tag} {} ({}): integer values differ",
                            c.output, c.op_type
                        ));
                    }
                }
            }
        }
        let outputs_checked = index
            .checkpoints
            .iter()
            .filter(|c| c.graph_output)
            .all(|c| got.contains_key(&c.output));
        assert!(outputs_checked, "{name}: a graph output was not read back");
    }
    let _ = DT::F32;
    (compared, worst, failures)
}

#[test]
fn minilm_int8_matches_onnx_runtime_at_every_checkpoint() {
    let opts = OnnxOptions {
        dims: BTreeMap::from([("sequence".to_string(), 16)]),
        ..Default::default()
    };
    let (n, worst, failures) = compare("minilm-int8", opts, Scale::Element);
    assert!(
        failures.is_empty(),
        "{} of {n} checkpoints differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(n > 100, "{n} checkpoints compared");
    println!("minilm-int8: {n} checkpoints within tolerance, worst abs error {worst:.2e}");
}

/// One symbolic plan of MiniLM (sequence up to 128) runs 1, 7, 16 and 128 tokens, every
/// checkpoint against ORT at each size.
#[test]
fn minilm_int8_one_plan_matches_onnx_runtime_at_four_sequence_lengths() {
    let maxima = BTreeMap::from([("batch".to_string(), 1), ("sequence".to_string(), 128)]);
    let runs: Vec<OnnxOptions> = [1u64, 7, 16, 128]
        .iter()
        .map(|&t| OnnxOptions {
            dims: BTreeMap::from([("batch".to_string(), 1), ("sequence".to_string(), t)]),
            ..Default::default()
        })
        .collect();
    let (n, worst, failures) = compare_sizes("minilm-int8", &maxima, &runs, Scale::Element);
    assert!(
        failures.is_empty(),
        "{} of {n} checkpoints differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(n > 400, "{n} checkpoints compared");
    println!(
        "minilm-int8, one plan at 1/7/16/128 tokens: {n} checkpoints within tolerance, worst abs error {worst:.2e}"
    );
}

/// One symbolic plan of the PP-OCRv4 detector (height and width up to 128) at three image
/// sizes, every checkpoint against ORT at each.
#[test]
fn ppocr_det_one_plan_matches_onnx_runtime_at_three_image_sizes() {
    let (h, w) = ("p2o.DynamicDimension.1", "p2o.DynamicDimension.2");
    let maxima = BTreeMap::from([
        ("p2o.DynamicDimension.0".to_string(), 1),
        (h.to_string(), 128),
        (w.to_string(), 128),
    ]);
    let runs: Vec<OnnxOptions> = [(64u64, 64u64), (96, 128), (128, 32)]
        .iter()
        .map(|&(y, x)| OnnxOptions {
            dims: BTreeMap::from([
                ("p2o.DynamicDimension.0".to_string(), 1),
                (h.to_string(), y),
                (w.to_string(), x),
            ]),
            ..Default::default()
        })
        .collect();
    let (n, worst, failures) = compare_sizes("ppocr-det", &maxima, &runs, Scale::Tensor);
    assert!(
        failures.is_empty(),
        "{} of {n} checkpoints differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(n > 300, "{n} checkpoints compared");
    println!(
        "ppocr-det, one plan at 64x64/96x128/128x32: {n} checkpoints within tolerance, worst abs error {worst:.2e}"
    );
}

/// One symbolic plan of Silero VAD v6 for 1 to 4 windows of audio.
#[test]
fn silero_vad_v6_one_plan_matches_onnx_runtime_at_three_batch_sizes() {
    let maxima = BTreeMap::from([("seq_len".to_string(), 4)]);
    let runs: Vec<OnnxOptions> = [1u64, 3, 4]
        .iter()
        .map(|&t| OnnxOptions {
            dims: BTreeMap::from([("seq_len".to_string(), t)]),
            ..Default::default()
        })
        .collect();
    let (n, worst, failures) = compare_sizes("silero-vad-v6", &maxima, &runs, Scale::Element);
    assert!(
        failures.is_empty(),
        "{} of {n} checkpoints differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(n >= 60, "{n} checkpoints compared");
    println!(
        "silero-vad-v6, one plan at 1/3/4 windows: {n} checkpoints within tolerance, worst abs error {worst:.2e}"
    );
}

#[test]
fn ppocr_det_matches_onnx_runtime_at_every_checkpoint() {
    let (n, worst, failures) = compare("ppocr-det", OnnxOptions::default(), Scale::Tensor);
    assert!(
        failures.is_empty(),
        "{} of {n} checkpoints differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(n > 100, "{n} checkpoints compared");
    println!("ppocr-det: {n} checkpoints within tolerance, worst abs error {worst:.2e}");
}

#[test]
fn silero_vad_v6_matches_onnx_runtime_at_every_checkpoint() {
    let (n, worst, failures) = compare("silero-vad-v6", OnnxOptions::default(), Scale::Element);
    assert!(
        failures.is_empty(),
        "{} of {n} checkpoints differ: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(n >= 20, "{n} checkpoints compared");
    println!("silero-vad-v6: {n} checkpoints within tolerance, worst abs error {worst:.2e}");
}

#[test]
fn buffer_reuse_saves_memory_and_changes_no_output_bit() {
    let model_path = fixture("minilm-int8");
    let model = m2w_model::Model::open(&model_path).unwrap();
    let shapes = BTreeMap::from([
        ("input_ids".to_string(), (vec![1, 16], DT::I32)),
        ("attention_mask".to_string(), (vec![1, 16], DT::I32)),
        ("token_type_ids".to_string(), (vec![1, 16], DT::I32)),
    ]);
    let inputs: HashMap<String, HostTensor> = HashMap::from([
        (
            "input_ids".to_string(),
            HostTensor::i64(vec![1, 16], (0..16).map(|i| 1000 + 37 * i).collect()),
        ),
        (
            "attention_mask".to_string(),
            HostTensor::i64(vec![1, 16], vec![1; 16]),
        ),
        (
            "token_type_ids".to_string(),
            HostTensor::i64(vec![1, 16], vec![0; 16]),
        ),
    ]);
    let gpu = Gpu::new().unwrap();
    let mut results = Vec::new();
    let mut bytes = Vec::new();
    for reuse in [false, true] {
        let mut plan = compile(&model, &shapes).unwrap();
        plan.assign_buffers(reuse);
        bytes.push(
            plan.buffers
                .iter()
                .filter(|b| b.tensors.iter().all(|t| !plan.constants.contains_key(t)))
                .map(|b| b.bytes)
                .sum::<u64>(),
        );
        let outputs = plan.outputs.clone();
        let runner = Runner::new(&gpu, plan).unwrap();
        results.push(runner.run(&inputs, &outputs).unwrap());
    }
    assert_eq!(results[0], results[1], "reuse changed an output");
    assert!(
        bytes[1] * 2 < bytes[0],
        "activation memory {} -> {} bytes",
        bytes[0],
        bytes[1]
    );
    println!(
        "minilm activation buffers: {} -> {} bytes with reuse",
        bytes[0], bytes[1]
    );
}

/// The f16-weight path (`m2w_engine::half`): a plan whose conv and matmul weights are kept
/// as IEEE half on the twins gives the graph outputs of ONNX Runtime within f16's rounding.
/// Every checkpoint is compared at |engine - ort| <= 2e-2 * max|ort| of its tensor (weights
/// rounded to 11 significant bits, errors carried through every later layer); the f32 plan
/// of the same model passes at 1e-3 (the tests above), so the twins and only they are judged.
fn compare_half(name: &str, opts: OnnxOptions) -> (usize, usize, f64) {
    let model_path = fixture(name);
    let model = m2w_model::Model::open(&model_path).unwrap();
    let lib = m2w_setup::onnxruntime_library().unwrap();
    let gpu = Gpu::new().unwrap();
    assert!(
        gpu.has_f16(),
        "{}: this adapter has no shader-f16 (lavapipe has it; see DEVICE.md)",
        gpu.info.name
    );
    let dir = tempfile::tempdir().unwrap();
    let index = reference(&lib, &model_path, dir.path(), &opts).unwrap();
    let mut inputs = HashMap::new();
    let mut shapes = BTreeMap::new();
    for i in &index.inputs {
        let t = to_engine(&m2w_reference::HostTensor::read_npy(&dir.path().join(&i.file)).unwrap());
        shapes.insert(i.name.clone(), (t.shape.clone(), t.dt()));
        inputs.insert(i.name.clone(), t);
    }
    let plan = compile(&model, &shapes).unwrap();
    let hw = m2w_engine::half::half_weights(&plan);
    let half = m2w_engine::half::apply(&plan, &hw);
    let twins = half
        .dispatches
        .iter()
        .filter(|d| {
            d.kernel
                .features()
                .contains(&m2w_kernels::Feature::ShaderF16)
        })
        .count();
    assert_eq!(twins, hw.dispatches.len());
    let (f32_bytes, f16_bytes) = hw.bytes(&plan);
    // Half the bytes, up to a padding word per odd-sized weight.
    assert!(f16_bytes * 2 >= f32_bytes && f16_bytes * 2 <= f32_bytes + 4 * hw.weights.len() as u64);
    // The exact oracle of the twins: the f32 plan with its weights rounded to f16 values.
    let mut rounded = plan.clone();
    for w in &hw.weights {
        if let Data::F32(v) = &mut rounded.constants.get_mut(w).unwrap().data {
            for x in v.iter_mut() {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
    }
    let runner = Runner::new(&gpu, half).unwrap();
    let wanted: Vec<String> = index
        .checkpoints
        .iter()
        .map(|c| c.output.clone())
        .filter(|o| runner.plan.tensors.contains_key(o) && !hw.weights.contains(o))
        .collect();
    let got = runner.run(&inputs, &wanted).unwrap();
    let exact = Runner::new(&gpu, rounded)
        .unwrap()
        .run(&inputs, &wanted)
        .unwrap();
    for o in &wanted {
        if let (Data::F32(a), Data::F32(b)) = (&got[o].data, &exact[o].data) {
            let scale = b.iter().fold(0f32, |m, y| m.max(y.abs()));
            for (k, (x, y)) in a.iter().zip(b).enumerate() {
                let same = x.to_bits() == y.to_bits() || (x - y).abs() <= 1e-5 * scale;
                assert!(
                    same,
                    "{name} {o}: element {k}: f16 twin {x}, f32 kernel on the same values {y}"
                );
            }
        }
    }
    let (mut compared, mut worst) = (0, 0f64);
    for c in &index.checkpoints {
        // A weight stored as f16 (a Constant node's output) is not an activation to compare.
        if hw.weights.contains(&c.output) {
            continue;
        }
        let Some(g) = got.get(&c.output) else {
            continue;
        };
        let want =
            to_engine(&m2w_reference::HostTensor::read_npy(&dir.path().join(&c.file)).unwrap());
        assert_eq!(g.shape, want.shape, "{}", c.output);
        if let (Data::F32(a), Data::F32(b)) = (&g.data, &want.data) {
            let max_mag = b.iter().fold(0f64, |m, &y| m.max((y as f64).abs()));
            for (k, (&x, &y)) in a.iter().zip(b).enumerate() {
                // NaN and infinities must agree exactly; finite values within tolerance.
                let ok = if x.is_finite() && y.is_finite() {
                    let err = (x as f64 - y as f64).abs();
                    worst = worst.max(err / max_mag.max(1e-30));
                    err <= 1e-5 + 2e-2 * max_mag
                } else {
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                };
                assert!(
                    ok,
                    "{name} f16 {} ({}): element {k}: {x} vs ORT {y}",
                    c.output, c.op_type
                );
            }
        } else {
            assert!(
                g.as_i64() == want.as_i64(),
                "{}: integer values differ",
                c.output
            );
        }
        compared += 1;
    }
    (compared, hw.weights.len(), worst)
}

#[test]
fn ppocr_det_with_f16_weights_matches_onnx_runtime_within_half_rounding() {
    let (compared, weights, worst) = compare_half("ppocr-det", OnnxOptions::default());
    eprintln!(
        "ppocr-det f16: {weights} weights as f16, {compared} checkpoints, worst {worst:.2e} of the tensor's scale"
    );
    assert!(
        weights >= 40,
        "the detector's conv weights should be f16: {weights}"
    );
    assert!(compared >= 100, "{compared}");
}
