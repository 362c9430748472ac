//! Kernels against plain CPU references on seeded random inputs, at sizes the ONNX node
//! tests do not reach (odd sizes that straddle tiles, broadcast batches, grouped/strided/
//! dilated convolutions, multi-axis reductions, more than 65535 workgroups).

use std::collections::{BTreeMap, HashMap};

use m2w_engine::gpu::{Gpu, Runner};
use m2w_engine::{DT, Data, HostTensor, compile};
use m2w_model::onnx::proto;
use m2w_model::onnx_build;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}
fn attr_int(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// Builds a one-node model, runs it on wgpu and returns its first output.
fn run_node(
    op: &str,
    inputs: Vec<(&str, HostTensor)>,
    attrs: Vec<proto::AttributeProto>,
    opset: i64,
) -> HostTensor {
    let value_info = |name: &str, t: &HostTensor| {
        let elem = match t.dt() {
            DT::F32 => onnx_build::FLOAT,
            DT::I32 => onnx_build::INT64,
            DT::Bool => onnx_build::BOOL,
            other => panic!("no test inputs of {other:?}"),
        };
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        onnx_build::value_info(name, elem, &dims)
    };
    let names: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
    let bytes = onnx_build::model(
        vec![proto::NodeProto {
            name: Some(format!("{op}_0")),
            ..onnx_build::node(op, &names, &["y"], attrs)
        }],
        vec![],
        inputs.iter().map(|(n, t)| value_info(n, t)).collect(),
        vec![proto::ValueInfoProto {
            name: Some("y".into()),
            ..Default::default()
        }],
        opset,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, bytes).unwrap();
    let m = m2w_model::Model::open(&path).unwrap();
    let shapes: BTreeMap<String, (Vec<usize>, DT)> = inputs
        .iter()
        .map(|(n, t)| (n.to_string(), (t.shape.clone(), t.dt())))
        .collect();
    let plan = compile(&m, &shapes).unwrap_or_else(|e| panic!("{op}: {e}"));
    let gpu = Gpu::new().unwrap();
    let runner = Runner::new(&gpu, plan).unwrap();
    let feed: HashMap<String, HostTensor> = inputs
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    runner
        .run(&feed, &["y".to_string()])
        .unwrap()
        .remove("y")
        .unwrap()
}

fn assert_close(got: &HostTensor, shape: &[usize], want: &[f32], rtol: f32) {
    assert_eq!(got.shape, shape);
    let Data::F32(g) = &got.data else {
        panic!("not f32")
    };
    for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + rtol * b.abs(),
            "element {i}: {a} vs cpu {b}"
        );
    }
}

#[test]
fn matmul_with_odd_sizes_and_broadcast_batch() {
    let (m, k, n) = (37, 61, 53);
    let mut r = Rng(1);
    let a = r.vec(2 * m * k);
    let b = r.vec(3 * k * n);
    let y = run_node(
        "MatMul",
        vec![
            ("a", HostTensor::f32(vec![2, 1, m, k], a.clone())),
            ("b", HostTensor::f32(vec![3, k, n], b.clone())),
        ],
        vec![],
        17,
    );
    let mut want = vec![0f32; 2 * 3 * m * n];
    for i in 0..2 {
        for j in 0..3 {
            for r_ in 0..m {
                for c in 0..n {
                    let mut acc = 0f32;
                    for q in 0..k {
                        acc += a[i * m * k + r_ * k + q] * b[j * k * n + q * n + c];
                    }
                    want[((i * 3 + j) * m + r_) * n + c] = acc;
                }
            }
        }
    }
    assert_close(&y, &[2, 3, m, n], &want, 1e-4);
}

#[test]
fn matmul_on_the_register_blocked_kernel_with_ragged_tiles() {
    // A batch of activations times a 2-D weight runs as one [batch*M, K] x [K, N] product on
    // matmul_f32_rb; 74 x 300 straddles its 128 x 256 tiles, K = 61 its 16-deep slices.
    let (m, k, n) = (37, 61, 300);
    let mut r = Rng(7);
    let a = r.vec(2 * m * k);
    let b = r.vec(k * n);
    let y = run_node(
        "MatMul",
        vec![
            ("a", HostTensor::f32(vec![2, m, k], a.clone())),
            ("b", HostTensor::f32(vec![k, n], b.clone())),
        ],
        vec![],
        17,
    );
    let mut want = vec![0f32; 2 * m * n];
    for row in 0..2 * m {
        for c in 0..n {
            want[row * n + c] = (0..k).map(|q| a[row * k + q] * b[q * n + c]).sum();
        }
    }
    assert_close(&y, &[2, m, n], &want, 1e-4);
}

#[test]
fn grouped_strided_dilated_padded_conv() {
    let (nb, c, h, w, mo, g, kh, kw) = (2, 6, 11, 9, 4, 2, 3, 2);
    let (sh, sw, dh, dw, ph, pw) = (2, 1, 2, 1, 1, 2);
    let mut r = Rng(2);
    let x = r.vec(nb * c * h * w);
    let wt = r.vec(mo * (c / g) * kh * kw);
    let bias = r.vec(mo);
    let attrs = vec![
        attr_int("group", g as i64),
        attr_ints("strides", &[sh as i64, sw as i64]),
        attr_ints("dilations", &[dh as i64, dw as i64]),
        attr_ints("pads", &[ph as i64, pw as i64, ph as i64, pw as i64]),
    ];
    let y = run_node(
        "Conv",
        vec![
            ("x", HostTensor::f32(vec![nb, c, h, w], x.clone())),
            ("w", HostTensor::f32(vec![mo, c / g, kh, kw], wt.clone())),
            ("b", HostTensor::f32(vec![mo], bias.clone())),
        ],
        attrs,
        17,
    );
    let oh = (h + 2 * ph - ((kh - 1) * dh + 1)) / sh + 1;
    let ow = (w + 2 * pw - ((kw - 1) * dw + 1)) / sw + 1;
    let mut want = vec![0f32; nb * mo * oh * ow];
    for b_ in 0..nb {
        for o in 0..mo {
            let grp = o / (mo / g);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[o];
                    for ci in 0..c / g {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * sh + ky * dh) as i64 - ph as i64;
                                let ix = (ox * sw + kx * dw) as i64 - pw as i64;
                                if iy < 0 || ix < 0 || iy >= h as i64 || ix >= w as i64 {
                                    continue;
                                }
                                let ch = grp * (c / g) + ci;
                                acc += x[((b_ * c + ch) * h + iy as usize) * w + ix as usize]
                                    * wt[((o * (c / g) + ci) * kh + ky) * kw + kx];
                            }
                        }
                    }
                    want[((b_ * mo + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    assert_close(&y, &[nb, mo, oh, ow], &want, 1e-4);
}

#[test]
fn reduce_mean_over_two_axes_and_softmax() {
    let mut r = Rng(3);
    let (a, b, c) = (5, 7, 9);
    let x = r.vec(a * b * c);
    let y = run_node(
        "ReduceMean",
        vec![("x", HostTensor::f32(vec![a, b, c], x.clone()))],
        vec![attr_ints("axes", &[0, 2]), attr_int("keepdims", 1)],
        17,
    );
    let want: Vec<f32> = (0..b)
        .map(|j| {
            (0..a)
                .flat_map(|i| (0..c).map(move |k| (i, k)))
                .map(|(i, k)| x[(i * b + j) * c + k])
                .sum::<f32>()
                / (a * c) as f32
        })
        .collect();
    assert_close(&y, &[1, b, 1], &want, 1e-4);

    let y = run_node(
        "Softmax",
        vec![("x", HostTensor::f32(vec![a, b, c], x.clone()))],
        vec![attr_int("axis", 1)],
        17,
    );
    let mut want = vec![0f32; a * b * c];
    for i in 0..a {
        for k in 0..c {
            let col: Vec<f32> = (0..b).map(|j| x[(i * b + j) * c + k]).collect();
            let mx = col.iter().cloned().fold(f32::MIN, f32::max);
            let sum: f32 = col.iter().map(|v| (v - mx).exp()).sum();
            for j in 0..b {
                want[(i * b + j) * c + k] = (col[j] - mx).exp() / sum;
            }
        }
    }
    assert_close(&y, &[a, b, c], &want, 1e-5);
}

#[test]
fn transpose_and_negative_step_slice() {
    let mut r = Rng(4);
    let x = r.vec(3 * 4 * 5);
    let y = run_node(
        "Transpose",
        vec![("x", HostTensor::f32(vec![3, 4, 5], x.clone()))],
        vec![attr_ints("perm", &[2, 0, 1])],
        17,
    );
    let want: Vec<f32> = (0..5)
        .flat_map(|k| (0..3).flat_map(move |i| (0..4).map(move |j| (i, j, k))))
        .map(|(i, j, k)| x[(i * 4 + j) * 5 + k])
        .collect();
    assert_close(&y, &[5, 3, 4], &want, 0.0);

    let consts = vec![
        ("x", HostTensor::f32(vec![3, 4, 5], x.clone())),
        ("starts", HostTensor::i64(vec![2], vec![-1, 3])),
        ("ends", HostTensor::i64(vec![2], vec![-100, 0])),
        ("axes", HostTensor::i64(vec![2], vec![2, 1])),
        ("steps", HostTensor::i64(vec![2], vec![-2, -1])),
    ];
    // Slice's control inputs must be constants: run through the specialising compiler.
    let y = run_slice(consts);
    let want: Vec<f32> = (0..3)
        .flat_map(|i| {
            [3usize, 2, 1]
                .into_iter()
                .flat_map(move |j| [4usize, 2, 0].into_iter().map(move |k| (i, j, k)))
        })
        .map(|(i, j, k)| x[(i * 4 + j) * 5 + k])
        .collect();
    assert_close(&y, &[3, 3, 3], &want, 0.0);
}

fn run_slice(inputs: Vec<(&str, HostTensor)>) -> HostTensor {
    // Same as run_node, but the control inputs are fixed at plan time.
    let data = inputs[0].1.clone();
    let node = proto::NodeProto {
        op_type: Some("Slice".into()),
        name: Some("s".into()),
        input: inputs.iter().map(|(n, _)| n.to_string()).collect(),
        output: vec!["y".into()],
        ..Default::default()
    };
    let vi = |name: &str, rank: usize, elem: i32| proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(elem),
                    shape: Some(proto::TensorShapeProto {
                        dim: vec![Default::default(); rank],
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let graph = proto::GraphProto {
        node: vec![node],
        input: inputs
            .iter()
            .map(|(n, t)| vi(n, t.shape.len(), if t.dt() == DT::F32 { 1 } else { 7 }))
            .collect(),
        output: vec![proto::ValueInfoProto {
            name: Some("y".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let model = proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m2w_model::onnx::encode(&model)).unwrap();
    let m = m2w_model::Model::open(&path).unwrap();
    let fixed: BTreeMap<String, HostTensor> = inputs
        .iter()
        .skip(1)
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let shapes = BTreeMap::from([("x".to_string(), (data.shape.clone(), DT::F32))]);
    let plan = m2w_engine::compile_specialized(&m, &shapes, &fixed).unwrap();
    let gpu = Gpu::new().unwrap();
    let runner = Runner::new(&gpu, plan).unwrap();
    runner
        .run(
            &HashMap::from([("x".to_string(), data)]),
            &["y".to_string()],
        )
        .unwrap()
        .remove("y")
        .unwrap()
}

#[test]
fn elementwise_past_65535_workgroups_and_layernorm() {
    // 65535 * 256 + 1000 elements need a second dispatch dimension.
    let n = 65535 * 256 + 1000;
    let mut r = Rng(5);
    let x = r.vec(n);
    let y = run_node(
        "Relu",
        vec![("x", HostTensor::f32(vec![n], x.clone()))],
        vec![],
        17,
    );
    let want: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    assert_close(&y, &[n], &want, 0.0);

    let (rows, len) = (13, 97);
    let x = r.vec(rows * len);
    let scale = r.vec(len);
    let bias = r.vec(len);
    let y = run_node(
        "LayerNormalization",
        vec![
            ("x", HostTensor::f32(vec![rows, len], x.clone())),
            ("s", HostTensor::f32(vec![len], scale.clone())),
            ("b", HostTensor::f32(vec![len], bias.clone())),
        ],
        vec![attr_int("axis", -1)],
        17,
    );
    let mut want = vec![0f32; rows * len];
    for i in 0..rows {
        let row = &x[i * len..(i + 1) * len];
        let mean = row.iter().sum::<f32>() / len as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / len as f32;
        for j in 0..len {
            want[i * len + j] = (row[j] - mean) / (var + 1e-5).sqrt() * scale[j] + bias[j];
        }
    }
    assert_close(&y, &[rows, len], &want, 1e-4);
}

/// numpy's argmax of a row: the first NaN, else the first largest value (-0.0 == +0.0).
fn numpy_argmax(row: &[f32]) -> i64 {
    if let Some(i) = row.iter().position(|v| v.is_nan()) {
        return i as i64;
    }
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as i64
}

/// `argmax_exact_f32` (the token a generation loop picks on the GPU) is numpy's argmax on
/// rows built to break float comparisons: NaNs of any payload and sign (the first wins),
/// infinities, -0.0 before +0.0, ties across the threads' shares, all -inf, rows shorter
/// and longer than a workgroup, a vocabulary-sized row.
#[test]
fn argmax_exact_is_numpy_argmax_with_nans_infinities_and_signed_zeros() {
    use m2w_engine::plan::{Binding, Dispatch, Plan, TensorDesc};
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let nan_payload = f32::from_bits(0x7fc0_1234);
    let negative_nan = f32::from_bits(0xffc0_0001);
    let mut rows: Vec<Vec<f32>> = vec![
        vec![1.0, f32::NAN, 3.0, f32::NAN],
        vec![5.0, 2.0, negative_nan, 9.0],
        vec![f32::INFINITY, 1.0, f32::INFINITY, nan_payload],
        vec![-0.0, 0.0, -1.0],
        vec![f32::NEG_INFINITY; 7],
        vec![-3.0, f32::NEG_INFINITY, f32::MIN, -f32::MIN_POSITIVE],
        vec![2.5; 300],
        rng.vec(1000),
        rng.vec(49152),
    ];
    // The same maximum in several threads' shares, first at 700.
    let mut ties = rng.vec(1024);
    for i in [700, 701, 957, 1023] {
        ties[i] = 7.0;
    }
    rows.push(ties);
    let mut late_nan = rng.vec(5000);
    late_nan[4999] = f32::NAN;
    late_nan[3] = f32::INFINITY;
    rows.push(late_nan);
    let gpu = Gpu::new().unwrap();
    for (k, row) in rows.iter().enumerate() {
        let len = row.len();
        let mut plan = Plan::default();
        plan.tensors.insert(
            "x".into(),
            TensorDesc::row_major(m2w_engine::sym::fixed(&[1, len]), DT::F32, "x".into()),
        );
        plan.tensors.insert(
            "out".into(),
            TensorDesc::row_major(m2w_engine::sym::fixed(&[1]), DT::I32, "out".into()),
        );
        plan.inputs = vec!["x".into()];
        plan.outputs = vec!["out".into()];
        plan.dispatches.push(Dispatch {
            node: "argmax".into(),
            op_type: "ArgMax".into(),
            kernel: m2w_engine::Kernel::ArgmaxExactF32,
            bindings: vec![Binding::Tensor("x".into()), Binding::Tensor("out".into())],
            params: m2w_kernels::params::ArgmaxExact {
                rows: 1,
                len: len as u32,
                first: 0,
                pad: 0,
            }
            .words(),
            workgroups: [1, 1, 1],
            sym_params: vec![],
            sym_workgroups: None,
        });
        plan.assign_buffers(true);
        let runner = Runner::new(&gpu, plan).unwrap();
        let inputs = HashMap::from([("x".to_string(), HostTensor::f32(vec![1, len], row.clone()))]);
        let out = runner.run(&inputs, &["out".to_string()]).unwrap();
        assert_eq!(
            out["out"].as_i64(),
            vec![numpy_argmax(row)],
            "row {k} of {len} values"
        );
    }
}
