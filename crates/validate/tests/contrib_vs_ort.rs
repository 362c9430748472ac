//! com.microsoft ops of onnxruntime-genai and transformers.js exports against ONNX Runtime:
//! GatherBlockQuantized (quantized embeddings: uint8 tables holding 4-bit pairs with and
//! without packed zero points, 8-bit values, int4 values), GroupQueryAttention (prompt and
//! decode steps, with and without rotary), RotaryEmbedding and SimplifiedLayerNormalization;
//! small models run through ORT and the engine and compared checkpoint by checkpoint.

use m2w_engine::gpu::Gpu;
use m2w_model::onnx::proto;
use m2w_model::onnx_build::{FLOAT, INT32, INT64, attr_int, attr_ints, ints, node, value_info_sym};
use m2w_validate::{Options, compile_for_dims, validate};

const UINT8: i32 = 2;
const INT4: i32 = 22;

fn tensor(name: &str, dtype: i32, dims: &[i64], raw: Vec<u8>) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Deterministic bytes.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed * 97)) >> 7) as u8)
        .collect()
}

fn scales(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (0.01f32 + 0.003 * (i % 7) as f32).to_le_bytes())
        .collect()
}

#[test]
fn gather_block_quantized_matches_onnx_runtime() {
    let (rows, k, block) = (10usize, 64usize, 16usize);
    let blocks = k / block;
    // (label, data dtype, bits, data bytes, data dims, zero points)
    type Case = (
        &'static str,
        i32,
        i64,
        Vec<u8>,
        Vec<i64>,
        Option<(i32, Vec<u8>, Vec<i64>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "uint8 4-bit pairs, default zero point",
            UINT8,
            4,
            bytes(rows * k / 2, 1),
            vec![rows as i64, (k / 2) as i64],
            None,
        ),
        (
            "uint8 4-bit pairs, packed zero points",
            UINT8,
            4,
            bytes(rows * k / 2, 2),
            vec![rows as i64, (k / 2) as i64],
            Some((
                UINT8,
                bytes(rows * blocks / 2, 3),
                vec![rows as i64, (blocks / 2) as i64],
            )),
        ),
        (
            "uint8 8-bit values, zero points",
            UINT8,
            8,
            bytes(rows * k, 5),
            vec![rows as i64, k as i64],
            Some((
                UINT8,
                bytes(rows * blocks, 6),
                vec![rows as i64, blocks as i64],
            )),
        ),
        (
            "int4 values",
            INT4,
            4,
            bytes(rows * k / 2, 4),
            vec![rows as i64, k as i64],
            None,
        ),
    ];
    for (label, dtype, bits, data, dims, zp) in cases {
        let mut inits = vec![
            tensor("data", dtype, &dims, data),
            tensor(
                "scales",
                FLOAT,
                &[rows as i64, blocks as i64],
                scales(rows * blocks),
            ),
        ];
        let mut ins = vec!["data", "idx", "scales"];
        if let Some((zt, zb, zd)) = zp {
            inits.push(tensor("zp", zt, &zd, zb));
            ins.push("zp");
        }
        let mut gbq = node(
            "GatherBlockQuantized",
            &ins,
            &["y"],
            vec![
                attr_int("bits", bits),
                attr_int("block_size", block as i64),
                attr_int("gather_axis", 0),
                attr_int("quantize_axis", 1),
            ],
        );
        gbq.domain = Some("com.microsoft".into());
        // Indices in range, one negative (counted from the end).
        let idx = m2w_reference::HostTensor::I64(vec![2, 3], vec![0, 9, 3, -1, 5, 2]);
        check_node(
            label,
            gbq,
            inits,
            vec![("idx", INT64, idx)],
            vec![("y", vec![2, 3, k as i64])],
        );
    }
}

/// Deterministic floats in [-1, 1).
fn floats(n: usize, seed: u32) -> Vec<f32> {
    bytes(n, seed)
        .into_iter()
        .map(|b| b as f32 / 128.0 - 1.0)
        .collect()
}

/// A tensor of `shape` holding [`floats`] of `seed`.
fn random_f32(shape: &[i64], seed: u32) -> m2w_reference::HostTensor {
    let n = shape.iter().product::<i64>() as usize;
    m2w_reference::HostTensor::F32(shape.iter().map(|&x| x as u64).collect(), floats(n, seed))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// cos and sin of positions 0..positions at frequencies 10000^(-2i/d), [positions, d/2].
fn rotary_caches(positions: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in 0..positions {
        for i in 0..d / 2 {
            let angle = p as f32 * 10000f32.powf(-((2 * i) as f32) / d as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// `cos_cache` and `sin_cache` initializers: [`rotary_caches`] of 16 positions, head width `d`.
fn rotary_inits(d: i64) -> Vec<proto::TensorProto> {
    let (cos, sin) = rotary_caches(16, d as usize);
    vec![
        tensor("cos_cache", FLOAT, &[16, d / 2], f32_bytes(&cos)),
        tensor("sin_cache", FLOAT, &[16, d / 2], f32_bytes(&sin)),
    ]
}

/// A com.microsoft GroupQueryAttention node over the tests' input names (`key` and
/// `value` empty for packed QKV), writing `out`, `present_key` and `present_value`.
fn gqa_node(key: &str, value: &str, attrs: Vec<proto::AttributeProto>) -> proto::NodeProto {
    let mut gqa = node(
        "GroupQueryAttention",
        &[
            "q",
            key,
            value,
            "past_key",
            "past_value",
            "seqlens_k",
            "total_len",
            "cos_cache",
            "sin_cache",
        ],
        &["out", "present_key", "present_value"],
        attrs,
    );
    gqa.domain = Some("com.microsoft".into());
    gqa
}

/// One com.microsoft (or ONNX Runtime standard-domain) node over `inputs` (name, ONNX type,
/// value) and initializers, run by ONNX Runtime and by the engine: every output passes.
fn check_node(
    label: &str,
    node: proto::NodeProto,
    inits: Vec<proto::TensorProto>,
    inputs: Vec<(&str, i32, m2w_reference::HostTensor)>,
    outputs: Vec<(&str, Vec<i64>)>,
) {
    let fixed = |d: &[i64]| d.iter().map(i64::to_string).collect::<Vec<_>>();
    let declared: Vec<Vec<String>> = inputs
        .iter()
        .map(|(_, _, t)| fixed(&t.shape().iter().map(|&d| d as i64).collect::<Vec<_>>()))
        .collect();
    let outs: Vec<(&str, Vec<String>)> = outputs.iter().map(|(n, d)| (*n, fixed(d))).collect();
    let ins: Vec<(&str, i32, Vec<String>, m2w_reference::HostTensor)> = inputs
        .into_iter()
        .zip(declared)
        .map(|((n, ty, t), d)| (n, ty, d, t))
        .collect();
    check_graph(label, vec![node], inits, ins, outs, &[], &[]);
}

/// A graph of `nodes` whose inputs (name, ONNX type, declared dims, value) and outputs
/// (name, declared dims) may name dims, run by ONNX Runtime and by the engine (compiled
/// for `max_dims`, with `empty` dims allowed to be 0): every output passes. Returns the
/// engine's plan.
fn strs(d: &[String]) -> Vec<&str> {
    d.iter().map(String::as_str).collect()
}

fn check_graph(
    label: &str,
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    inputs: Vec<(&str, i32, Vec<String>, m2w_reference::HostTensor)>,
    outputs: Vec<(&str, Vec<String>)>,
    max_dims: &[(&str, usize)],
    empty: &[&str],
) -> m2w_engine::Plan {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.onnx");
    let model = proto::ModelProto {
        ir_version: Some(9),
        opset_import: ["", "com.microsoft"]
            .iter()
            .zip([21, 1])
            .map(|(d, v)| proto::OperatorSetIdProto {
                domain: Some(d.to_string()),
                version: Some(v),
            })
            .collect(),
        graph: Some(proto::GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: inits,
            input: inputs
                .iter()
                .map(|(n, ty, d, _)| value_info_sym(n, *ty, &strs(d)))
                .collect(),
            output: outputs
                .iter()
                .map(|(n, d)| value_info_sym(n, FLOAT, &strs(d)))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(&path, m2w_model::onnx::encode(&model)).unwrap();
    let mut files = std::collections::BTreeMap::new();
    for (name, _, _, t) in &inputs {
        let npy = dir.path().join(format!("{name}.npy"));
        std::fs::write(&npy, t.to_npy().unwrap()).unwrap();
        files.insert(name.to_string(), npy);
    }
    let lib = m2w_setup::onnxruntime_library().unwrap();
    let reference = dir.path().join("reference");
    let opts = m2w_reference::onnx_ref::OnnxOptions {
        input_files: files,
        ..Default::default()
    };
    m2w_reference::onnx_ref::reference(&lib, &path, &reference, &opts)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let m = m2w_model::Model::open(&path).unwrap();
    let max: Vec<(String, usize)> = max_dims.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let empty: Vec<String> = empty.iter().map(|s| s.to_string()).collect();
    let (plan, given, _) =
        compile_for_dims(&m, &reference, &max, &empty).unwrap_or_else(|e| panic!("{label}: {e}"));
    let gpu = Gpu::new().unwrap();
    let report = validate(
        &gpu,
        &m,
        plan.clone(),
        &given,
        &reference,
        &Options::default(),
    )
    .unwrap();
    // Every output and every intermediate the reference dumped.
    assert!(
        report.failed == 0 && report.passed >= outputs.len(),
        "{label}: {} passed, {} failed: {:?}",
        report.passed,
        report.failed,
        report.first_failure
    );
    plan
}

#[test]
fn group_query_attention_matches_onnx_runtime() {
    let (heads, kv, d) = (4i64, 2i64, 16i64);
    // (label, new tokens, past tokens, do_rotary, scale, packed QKV)
    let cases = [
        ("prompt of 4, rotary", 4i64, 0i64, 1i64, 0.0f32, false),
        ("decode step at 5, rotary", 1, 5, 1, 0.0, false),
        ("3 new after 2, no rotary, scale 0.3", 3, 2, 0, 0.3, false),
        ("packed QKV, prompt of 3, rotary", 3, 0, 1, 0.0, true),
        ("packed QKV, decode step at 3, rotary", 1, 3, 1, 0.0, true),
    ];
    for (k, (label, s, p, rotary, scale, packed)) in cases.into_iter().enumerate() {
        let t = |shape: Vec<i64>, seed: u32| random_f32(&shape, seed + 10 * k as u32);
        let mut attrs = vec![
            attr_int("num_heads", heads),
            attr_int("kv_num_heads", kv),
            attr_int("do_rotary", rotary),
        ];
        if scale != 0.0 {
            attrs.push(proto::AttributeProto {
                name: Some("scale".into()),
                r#type: Some(1),
                f: Some(scale),
                ..Default::default()
            });
        }
        let (key, value) = if packed { ("", "") } else { ("k", "v") };
        let gqa = gqa_node(key, value, attrs);
        let inits = rotary_inits(d);
        let mut inputs = vec![("q", FLOAT, t(vec![1, s, heads * d], 1))];
        if packed {
            inputs[0] = ("q", FLOAT, t(vec![1, s, (heads + 2 * kv) * d], 1));
        } else {
            inputs.push(("k", FLOAT, t(vec![1, s, kv * d], 2)));
            inputs.push(("v", FLOAT, t(vec![1, s, kv * d], 3)));
        }
        inputs.extend([
            ("past_key", FLOAT, t(vec![1, kv, p, d], 4)),
            ("past_value", FLOAT, t(vec![1, kv, p, d], 5)),
            (
                "seqlens_k",
                INT32,
                m2w_reference::HostTensor::I32(vec![1], vec![(p + s - 1) as i32]),
            ),
            (
                "total_len",
                INT32,
                m2w_reference::HostTensor::I32(vec![], vec![(p + s) as i32]),
            ),
        ]);
        let outputs = vec![
            ("out", vec![1, s, heads * d]),
            ("present_key", vec![1, kv, p + s, d]),
            ("present_value", vec![1, kv, p + s, d]),
        ];
        check_node(label, gqa, inits, inputs, outputs);
    }
}

#[test]
fn rotary_embedding_and_simplified_layer_norm_match_onnx_runtime() {
    let d = 8i64;
    let x = m2w_reference::HostTensor::F32(vec![1, 3, 16], floats(48, 7));
    let pos = m2w_reference::HostTensor::I64(vec![1, 3], vec![2, 3, 9]);
    let mut rope = node(
        "RotaryEmbedding",
        &["x", "pos", "cos_cache", "sin_cache"],
        &["y"],
        vec![attr_int("num_heads", 2)],
    );
    rope.domain = Some("com.microsoft".into());
    check_node(
        "RotaryEmbedding [1,3,16], 2 heads",
        rope,
        rotary_inits(d),
        vec![("x", FLOAT, x), ("pos", INT64, pos)],
        vec![("y", vec![1, 3, 16])],
    );
    let norm = node(
        "SimplifiedLayerNormalization",
        &["x", "gamma"],
        &["y"],
        vec![attr_int("axis", -1)],
    );
    check_node(
        "SimplifiedLayerNormalization",
        norm,
        vec![tensor("gamma", FLOAT, &[8], f32_bytes(&floats(8, 3)))],
        vec![(
            "x",
            FLOAT,
            m2w_reference::HostTensor::F32(vec![2, 3, 8], floats(48, 9)),
        )],
        vec![("y", vec![2, 3, 8])],
    );
}

/// `present = Concat(past, new)` as a graph output over a past whose length is a dim:
/// the engine appends in place (present is a view of past's buffer, sized for the
/// context) and every reader of the strided cache gives ONNX Runtime's values: the
/// exporters' repeat_kv (Unsqueeze, Expand, Reshape), a Transpose read by MatMul, and an
/// op that takes a row-major copy (Mul). Empty past, one new token, several.
#[test]
fn kv_caches_appended_in_place_match_onnx_runtime() {
    let dims = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (k, (p, s)) in [(0i64, 3i64), (3, 1), (5, 2)].into_iter().enumerate() {
        let t = |shape: Vec<i64>, seed: u32| random_f32(&shape, seed + 10 * k as u32);
        let mut nodes = vec![
            node(
                "Concat",
                &["past_key", "k"],
                &["present_key"],
                vec![attr_int("axis", 2)],
            ),
            // optimum's decoders: present = Identity(Concat(past, new)), the Concat read on.
            node(
                "Concat",
                &["past_value", "v"],
                &["value_cat"],
                vec![attr_int("axis", -2)],
            ),
            node("Identity", &["value_cat"], &["present_value"], vec![]),
            node("Mul", &["present_value", "two"], &["doubled"], vec![]),
            node(
                "Transpose",
                &["present_key"],
                &["key_t"],
                vec![attr_ints("perm", &[0, 1, 3, 2])],
            ),
            node("MatMul", &["q2", "key_t"], &["direct"], vec![]),
        ];
        // repeat_kv as the exporters write it: 2 key/value heads for 4 query heads.
        for (x, cache) in [("key", "present_key"), ("value", "value_cat")] {
            let (u, e, r) = (format!("{x}_5"), format!("{x}_rep5"), format!("{x}_rep"));
            nodes.push(node("Unsqueeze", &[cache, "axis2"], &[&u], vec![]));
            nodes.push(node("Expand", &[&u, "repeat"], &[&e], vec![]));
            nodes.push(node("Reshape", &[&e, "heads"], &[&r], vec![]));
        }
        nodes.extend([
            node(
                "Transpose",
                &["key_rep"],
                &["kt"],
                vec![attr_ints("perm", &[0, 1, 3, 2])],
            ),
            node("MatMul", &["q", "kt"], &["scores"], vec![]),
            node(
                "Softmax",
                &["scores"],
                &["probs"],
                vec![attr_int("axis", -1)],
            ),
            node("MatMul", &["probs", "value_rep"], &["out"], vec![]),
        ]);
        let inits = vec![
            ints("axis2", &[2]),
            ints("repeat", &[1, 1, 2, 1, 1]),
            ints("heads", &[0, 4, -1, 4]),
            tensor("two", FLOAT, &[], f32_bytes(&[2.0])),
        ];
        // Inputs of f32 values whose declared dims name `seq` and `past`.
        let input = |name: &'static str, declared: [&str; 4], seed: u32| {
            let shape = declared
                .iter()
                .map(|d| match *d {
                    "seq" => s,
                    "past" => p,
                    n => n.parse().unwrap(),
                })
                .collect();
            (name, FLOAT, dims(&declared), t(shape, seed))
        };
        let inputs = vec![
            input("q", ["1", "4", "seq", "4"], 1),
            input("q2", ["1", "2", "seq", "4"], 2),
            input("k", ["1", "2", "seq", "4"], 3),
            input("v", ["1", "2", "seq", "4"], 4),
            input("past_key", ["1", "2", "past", "4"], 5),
            input("past_value", ["1", "2", "past", "4"], 6),
        ];
        let total = dims(&["1", "2", "total", "4"]);
        let outputs = vec![
            ("out", dims(&["1", "4", "seq", "4"])),
            ("present_key", total.clone()),
            ("present_value", total.clone()),
            ("doubled", total),
            ("direct", dims(&["1", "2", "seq", "total"])),
        ];
        let label = format!("past {p}, {s} new");
        check_cache_graph(&label, nodes, inits, inputs, outputs);
    }
}

/// [`check_graph`] of an attention over `past_key`/`past_value` (length `past`, up to 8,
/// may be 0) and `seq` new tokens (up to 4), then [`assert_in_place`] of both caches.
fn check_cache_graph(
    label: &str,
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    inputs: Vec<(&str, i32, Vec<String>, m2w_reference::HostTensor)>,
    outputs: Vec<(&str, Vec<String>)>,
) -> m2w_engine::Plan {
    let plan = check_graph(
        label,
        nodes,
        inits,
        inputs,
        outputs,
        &[("past", 8), ("seq", 4)],
        &["past"],
    );
    assert_in_place(&plan, label);
    plan
}

/// Each (past, present) pair shares one buffer at a pitch for the whole context, and the
/// plan writes only the new rows into it (one strided copy of `new`, no copy of past).
fn assert_in_place(plan: &m2w_engine::Plan, label: &str) {
    for (past, present) in [("past_key", "present_key"), ("past_value", "present_value")] {
        let (a, b) = (&plan.tensors[past], &plan.tensors[present]);
        assert_eq!(b.base, past, "{label}: {present} is not appended in place");
        assert!(
            a.strides.is_some() && a.extent.is_some(),
            "{label}: {past} has no pitch"
        );
        let writes: Vec<&str> = plan
            .dispatches
            .iter()
            .filter(|d| {
                matches!(d.bindings.last(), Some(m2w_engine::plan::Binding::Tensor(t)) if plan.base_of(t) == past)
            })
            .map(|d| d.node.as_str())
            .collect();
        assert_eq!(
            writes.len(),
            1,
            "{label}: {past}'s buffer written by {writes:?}"
        );
    }
}

/// GroupQueryAttention over a past whose length is a dim: its present_key/value are
/// appended in place, and the attention reads the strided cache without a copy.
#[test]
fn group_query_attention_appends_its_cache_in_place() {
    let (heads, kv, d) = (4i64, 2i64, 16i64);
    let dims = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (hd, kvd) = ((heads * d).to_string(), (kv * d).to_string());
    for (k, (p, s)) in [(0i64, 4i64), (5, 1)].into_iter().enumerate() {
        let t = |shape: Vec<i64>, seed: u32| random_f32(&shape, seed + 10 * k as u32);
        let gqa = gqa_node(
            "k",
            "v",
            vec![
                attr_int("num_heads", heads),
                attr_int("kv_num_heads", kv),
                attr_int("do_rotary", 1),
            ],
        );
        let inits = rotary_inits(d);
        let past = dims(&["1", &kv.to_string(), "past", &d.to_string()]);
        let inputs = vec![
            (
                "q",
                FLOAT,
                dims(&["1", "seq", &hd]),
                t(vec![1, s, heads * d], 1),
            ),
            (
                "k",
                FLOAT,
                dims(&["1", "seq", &kvd]),
                t(vec![1, s, kv * d], 2),
            ),
            (
                "v",
                FLOAT,
                dims(&["1", "seq", &kvd]),
                t(vec![1, s, kv * d], 3),
            ),
            ("past_key", FLOAT, past.clone(), t(vec![1, kv, p, d], 4)),
            ("past_value", FLOAT, past, t(vec![1, kv, p, d], 5)),
            (
                "seqlens_k",
                INT32,
                dims(&["1"]),
                m2w_reference::HostTensor::I32(vec![1], vec![(p + s - 1) as i32]),
            ),
            (
                "total_len",
                INT32,
                vec![],
                m2w_reference::HostTensor::I32(vec![], vec![(p + s) as i32]),
            ),
        ];
        let present = dims(&["1", &kv.to_string(), "total", &d.to_string()]);
        let outputs = vec![
            ("out", dims(&["1", "seq", &hd])),
            ("present_key", present.clone()),
            ("present_value", present),
        ];
        let label = format!("GroupQueryAttention, past {p}, {s} new");
        let plan = check_cache_graph(&label, vec![gqa], inits, inputs, outputs);
        let copies = plan
            .dispatches
            .iter()
            .filter(|x| x.bindings.iter().any(|b| matches!(b, m2w_engine::plan::Binding::Tensor(t) if t.contains("row_major"))))
            .count();
        assert_eq!(copies, 0, "{label}: the attention copied its cache");
    }
}
