//! Every TFLite op the front-end lowers, each in a small model written here (planus's
//! builders over m2w's schema) and checked at every operator output against LiteRT's own
//! interpreter (the reference phase's oracle), end to end and per layer.
//!
//! Most cases start from a feature map made by a 1x1 CONV_2D, so the op reads a value the
//! engine holds as NCHW: the layout path (operands brought to NCHW, axes and paddings
//! remapped, transposes back to NHWC before RESHAPE and at the outputs) is what is tested.

use m2w_engine::gpu::Gpu;
use m2w_model::tflite::schema as tfl;
use m2w_validate::{Options, compile_for, validate};
use tfl::BuiltinOperator as Op;
use tfl::BuiltinOptions as Opt;

/// A TFLite model under construction: one subgraph, tensors by index.
#[derive(Default)]
struct Graph {
    tensors: Vec<tfl::Tensor>,
    buffers: Vec<tfl::Buffer>,
    codes: Vec<tfl::OperatorCode>,
    ops: Vec<tfl::Operator>,
    inputs: Vec<i32>,
    seed: u64,
}

impl Graph {
    fn new() -> Graph {
        Graph {
            // Buffer 0 is the empty buffer every activation names.
            buffers: vec![tfl::Buffer::default()],
            seed: 1,
            ..Default::default()
        }
    }

    fn tensor(&mut self, shape: &[i32], ty: tfl::TensorType, data: Option<Vec<u8>>) -> i32 {
        let buffer = match data {
            Some(d) => {
                self.buffers.push(tfl::Buffer {
                    data: Some(d),
                    ..Default::default()
                });
                self.buffers.len() as u32 - 1
            }
            None => 0,
        };
        self.tensors.push(tfl::Tensor {
            shape: Some(shape.to_vec()),
            type_: ty,
            buffer,
            name: Some(format!("t{}", self.tensors.len())),
            ..Default::default()
        });
        self.tensors.len() as i32 - 1
    }

    fn input(&mut self, shape: &[i32]) -> i32 {
        let t = self.tensor(shape, tfl::TensorType::Float32, None);
        self.inputs.push(t);
        t
    }

    /// Deterministic values in [-1, 1).
    fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.seed = self
                    .seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn f32s(&mut self, shape: &[i32], v: &[f32]) -> i32 {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor(shape, tfl::TensorType::Float32, Some(bytes))
    }

    fn random(&mut self, shape: &[i32]) -> i32 {
        let v = self.values(shape.iter().product::<i32>() as usize);
        self.f32s(shape, &v)
    }

    fn i32s(&mut self, shape: &[i32], v: &[i32]) -> i32 {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor(shape, tfl::TensorType::Int32, Some(bytes))
    }

    fn op(&mut self, op: Op, inputs: &[i32], out: &[i32], options: Option<Opt>) -> i32 {
        let code = op as i32;
        let index = match self.codes.iter().position(|c| c.builtin_code == code) {
            Some(i) => i,
            None => {
                self.codes.push(tfl::OperatorCode {
                    builtin_code: code,
                    deprecated_builtin_code: code.min(127) as i8,
                    version: 1,
                    ..Default::default()
                });
                self.codes.len() - 1
            }
        };
        let y = self.tensor(out, tfl::TensorType::Float32, None);
        self.ops.push(tfl::Operator {
            opcode_index: index as u32,
            inputs: Some(inputs.to_vec()),
            outputs: Some(vec![y]),
            builtin_options: options,
            ..Default::default()
        });
        y
    }

    /// A 1x1 CONV_2D from `x` ([1, h, w, c]) to `channels`: a feature map held as NCHW.
    fn feature_map(&mut self, x: i32, channels: i32) -> i32 {
        let s = self.tensors[x as usize].shape.clone().expect("shaped");
        let w = self.random(&[channels, 1, 1, s[3]]);
        let b = self.random(&[channels]);
        self.op(
            Op::Conv2d,
            &[x, w, b],
            &[s[0], s[1], s[2], channels],
            Some(conv_options(
                tfl::Padding::Valid,
                1,
                1,
                tfl::ActivationFunctionType::None,
            )),
        )
    }

    fn write(self, outputs: &[i32], path: &std::path::Path) {
        let model = tfl::Model {
            version: 3,
            operator_codes: Some(self.codes),
            subgraphs: Some(vec![tfl::SubGraph {
                tensors: Some(self.tensors),
                inputs: Some(self.inputs),
                outputs: Some(outputs.to_vec()),
                operators: Some(self.ops),
                name: Some("main".into()),
            }]),
            description: Some("m2w test model".into()),
            buffers: Some(self.buffers),
            ..Default::default()
        };
        let mut b = planus::Builder::new();
        let mut bytes = b.finish(&model, None).to_vec();
        // The identifier goes after the root offset (bytes 4..8). planus 1.3 writes it
        // before the offset when given one, so the file is finished without it, and the
        // identifier is put after the offset with the rest moved 16 bytes on (keeping the
        // 16-byte alignment of buffer data).
        let root = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        let mut out = (root + 16).to_le_bytes().to_vec();
        out.extend_from_slice(b"TFL3");
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&bytes.split_off(4));
        std::fs::write(path, out).unwrap();
    }
}

fn conv_options(
    padding: tfl::Padding,
    stride: i32,
    dilation: i32,
    act: tfl::ActivationFunctionType,
) -> Opt {
    Opt::Conv2DOptions(Box::new(tfl::Conv2DOptions {
        padding,
        stride_w: stride,
        stride_h: stride,
        fused_activation_function: act,
        dilation_w_factor: dilation,
        dilation_h_factor: dilation,
        ..Default::default()
    }))
}

/// Writes the model, makes LiteRT's reference, lowers, compiles and validates end to end
/// and per layer; every operator output not computed from weights alone must match.
fn check(case: &str, g: Graph, outputs: &[i32]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{case}.tflite"));
    g.write(outputs, &path);
    let (python, script) = m2w_setup::litert_runner().unwrap_or_else(|e| panic!("{e}"));
    let reference = dir.path().join("reference");
    let index = m2w_reference::tflite_ref::reference(
        &python,
        &script,
        &path,
        &reference,
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut model = m2w_model::Model::open(&path).unwrap();
    m2w_engine::lower_source(&mut model).unwrap_or_else(|e| panic!("{case}: {e}"));
    let gpu = Gpu::new().unwrap();
    for per_layer in [false, true] {
        let (plan, inputs) =
            compile_for(&model, &reference).unwrap_or_else(|e| panic!("{case}: {e}"));
        let report = validate(
            &gpu,
            &model,
            plan,
            &inputs,
            &reference,
            &Options {
                per_layer,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            (report.passed, report.failed),
            (index.checkpoints.len(), 0),
            "{case} per_layer {per_layer}: {:?}",
            report.first_failure
        );
    }
}

#[test]
fn conv_2d_and_depthwise_conv_2d_with_padding_strides_dilations_and_fused_activations() {
    use tfl::ActivationFunctionType as A;
    for (case, padding, stride, dilation, act) in [
        ("conv_same_s2_relu6", tfl::Padding::Same, 2, 1, A::Relu6),
        ("conv_valid_d2_relu", tfl::Padding::Valid, 1, 2, A::Relu),
        (
            "conv_same_d2_relu_n1_to_1",
            tfl::Padding::Same,
            1,
            2,
            A::ReluN1To1,
        ),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, 9, 8, 3]);
        let w = g.random(&[4, 3, 3, 3]);
        let b = g.random(&[4]);
        let span = 2 * dilation + 1;
        let (oh, ow) = match padding {
            tfl::Padding::Same => ((9 + stride - 1) / stride, (8 + stride - 1) / stride),
            _ => ((9 - span) / stride + 1, (8 - span) / stride + 1),
        };
        let y = g.op(
            Op::Conv2d,
            &[x, w, b],
            &[1, oh, ow, 4],
            Some(conv_options(padding, stride, dilation, act)),
        );
        check(case, g, &[y]);
    }
    for (case, stride, multiplier) in [("depthwise_s2_m2", 2, 2), ("depthwise_s1_m1", 1, 1)] {
        let mut g = Graph::new();
        let x = g.input(&[1, 7, 6, 3]);
        let fm = g.feature_map(x, 3);
        let w = g.random(&[1, 3, 3, 3 * multiplier]);
        let b = g.random(&[3 * multiplier]);
        let y = g.op(
            Op::DepthwiseConv2d,
            &[fm, w, b],
            &[
                1,
                (7 + stride - 1) / stride,
                (6 + stride - 1) / stride,
                3 * multiplier,
            ],
            Some(Opt::DepthwiseConv2DOptions(Box::new(
                tfl::DepthwiseConv2DOptions {
                    padding: tfl::Padding::Same,
                    stride_w: stride,
                    stride_h: stride,
                    depth_multiplier: multiplier,
                    fused_activation_function: A::Relu,
                    dilation_w_factor: 1,
                    dilation_h_factor: 1,
                },
            ))),
        );
        check(case, g, &[y]);
    }
}

#[test]
fn transpose_conv_reaches_the_output_shape_it_is_given() {
    // (case, padding, stride, kernel, input size, output size)
    for (case, padding, stride, k, (ih, iw), (oh, ow)) in [
        (
            "transpose_conv_same_s2",
            tfl::Padding::Same,
            2,
            3,
            (4, 5),
            (8, 10),
        ),
        (
            "transpose_conv_same_s2_odd",
            tfl::Padding::Same,
            2,
            4,
            (4, 3),
            (7, 6),
        ),
        // 8 rows from 3: one past the kernels' reach (output padding).
        (
            "transpose_conv_valid_s2",
            tfl::Padding::Valid,
            2,
            3,
            (3, 4),
            (8, 9),
        ),
        (
            "transpose_conv_valid_s1",
            tfl::Padding::Valid,
            1,
            2,
            (3, 3),
            (4, 4),
        ),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, ih, iw, 2]);
        let fm = g.feature_map(x, 3);
        let shape = g.i32s(&[4], &[1, oh, ow, 4]);
        let w = g.random(&[4, k, k, 3]);
        let b = g.random(&[4]);
        let y = g.op(
            Op::TransposeConv,
            &[shape, w, fm, b],
            &[1, oh, ow, 4],
            Some(Opt::TransposeConvOptions(Box::new(
                tfl::TransposeConvOptions {
                    padding,
                    stride_w: stride,
                    stride_h: stride,
                    fused_activation_function: tfl::ActivationFunctionType::None,
                },
            ))),
        );
        check(case, g, &[y]);
    }
}

#[test]
fn elementwise_binary_ops_broadcast_against_nhwc_operands_and_prelu() {
    for (case, op) in [
        ("add", Op::Add),
        ("sub", Op::Sub),
        ("mul", Op::Mul),
        ("div", Op::Div),
        ("maximum", Op::Maximum),
        ("minimum", Op::Minimum),
        ("prelu", Op::Prelu),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, 4, 5, 3]);
        let fm = g.feature_map(x, 6);
        // A per-channel constant (NHWC broadcasts from the right), then a rank-4 input
        // the engine holds as NHWC, then another feature map.
        let c = if op == Op::Div {
            g.f32s(&[6], &[0.5, -1.5, 2.0, 3.0, -0.75, 1.25])
        } else if op == Op::Prelu {
            g.random(&[1, 1, 6])
        } else {
            g.random(&[6])
        };
        let a = g.op(op, &[fm, c], &[1, 4, 5, 6], None);
        let outs = if op == Op::Prelu {
            vec![a]
        } else {
            let other = g.input(&[1, 4, 5, 6]);
            let b = g.op(op, &[a, other], &[1, 4, 5, 6], None);
            let fm2 = g.feature_map(x, 6);
            let d = g.op(
                if op == Op::Div { Op::Add } else { op },
                &[b, fm2],
                &[1, 4, 5, 6],
                None,
            );
            vec![d]
        };
        check(case, g, &outs);
    }
    // POW of a positive feature map by a per-channel exponent; ADD with a fused RELU.
    let mut g = Graph::new();
    let x = g.input(&[1, 3, 3, 2]);
    let fm = g.feature_map(x, 4);
    let pos = g.op(Op::Abs, &[fm], &[1, 3, 3, 4], None);
    let e = g.f32s(&[4], &[0.5, 2.0, 3.0, 1.5]);
    let p = g.op(Op::Pow, &[pos, e], &[1, 3, 3, 4], None);
    let y = g.op(
        Op::Add,
        &[p, fm],
        &[1, 3, 3, 4],
        Some(Opt::AddOptions(Box::new(tfl::AddOptions {
            fused_activation_function: tfl::ActivationFunctionType::Relu,
            ..Default::default()
        }))),
    );
    check("pow_add_relu", g, &[y]);
}

#[test]
fn elementwise_unary_ops_and_activations() {
    for (case, op) in [
        ("logistic", Op::Logistic),
        ("tanh", Op::Tanh),
        ("relu", Op::Relu),
        ("relu6", Op::Relu6),
        ("relu_n1_to_1", Op::ReluN1To1),
        ("relu_0_to_1", Op::Relu0To1),
        ("hard_swish", Op::HardSwish),
        ("leaky_relu", Op::LeakyRelu),
        ("elu", Op::Elu),
        ("exp", Op::Exp),
        ("abs", Op::Abs),
        ("neg", Op::Neg),
        ("sin", Op::Sin),
        ("cos", Op::Cos),
        ("log", Op::Log),
        ("sqrt", Op::Sqrt),
        ("rsqrt", Op::Rsqrt),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, 3, 4, 2]);
        let fm = g.feature_map(x, 3);
        // Scaled so RELU6 and the clips see both sides of their bounds.
        let k = g.f32s(&[], &[4.0]);
        let fm = g.op(Op::Mul, &[fm, k], &[1, 3, 4, 3], None);
        let arg = if matches!(op, Op::Log | Op::Sqrt | Op::Rsqrt) {
            g.op(Op::Abs, &[fm], &[1, 3, 4, 3], None)
        } else {
            fm
        };
        let options = (op == Op::LeakyRelu)
            .then(|| Opt::LeakyReluOptions(Box::new(tfl::LeakyReluOptions { alpha: 0.15 })));
        let y = g.op(op, &[arg], &[1, 3, 4, 3], options);
        check(case, g, &[y]);
    }
    // FLOOR and CEIL jump at integers: on the input itself, which both runtimes see
    // bit-identical.
    for (case, op) in [("floor", Op::Floor), ("ceil", Op::Ceil)] {
        let mut g = Graph::new();
        let x = g.input(&[2, 5]);
        let y = g.op(op, &[x], &[2, 5], None);
        check(case, g, &[y]);
    }
}

#[test]
fn max_and_average_pool_2d_count_only_cells_inside_the_input() {
    for (case, op, padding, size, stride) in [
        ("max_same_3_s2", Op::MaxPool2d, tfl::Padding::Same, 3, 2),
        ("avg_same_3_s2", Op::AveragePool2d, tfl::Padding::Same, 3, 2),
        (
            "avg_valid_2_s2",
            Op::AveragePool2d,
            tfl::Padding::Valid,
            2,
            2,
        ),
        ("max_valid_2_s1", Op::MaxPool2d, tfl::Padding::Valid, 2, 1),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, 7, 6, 2]);
        let fm = g.feature_map(x, 3);
        let (oh, ow) = match padding {
            tfl::Padding::Same => ((7 + stride - 1) / stride, (6 + stride - 1) / stride),
            _ => ((7 - size) / stride + 1, (6 - size) / stride + 1),
        };
        let y = g.op(
            op,
            &[fm],
            &[1, oh, ow, 3],
            Some(Opt::Pool2DOptions(Box::new(tfl::Pool2DOptions {
                padding,
                stride_w: stride,
                stride_h: stride,
                filter_width: size,
                filter_height: size,
                fused_activation_function: tfl::ActivationFunctionType::None,
            }))),
        );
        check(case, g, &[y]);
    }
}

#[test]
fn resize_bilinear_and_nearest_in_each_coordinate_mode() {
    for nearest in [false, true] {
        for (mode, align, half) in [
            ("legacy", false, false),
            ("align_corners", true, false),
            ("half_pixel", false, true),
        ] {
            let mut g = Graph::new();
            let x = g.input(&[1, 5, 7, 2]);
            let fm = g.feature_map(x, 3);
            let size = g.i32s(&[2], &[10, 12]);
            let (op, options) = if nearest {
                (
                    Op::ResizeNearestNeighbor,
                    Opt::ResizeNearestNeighborOptions(Box::new(
                        tfl::ResizeNearestNeighborOptions {
                            align_corners: align,
                            half_pixel_centers: half,
                        },
                    )),
                )
            } else {
                (
                    Op::ResizeBilinear,
                    Opt::ResizeBilinearOptions(Box::new(tfl::ResizeBilinearOptions {
                        align_corners: align,
                        half_pixel_centers: half,
                    })),
                )
            };
            let y = g.op(op, &[fm, size], &[1, 10, 12, 3], Some(options));
            let kind = if nearest { "nearest" } else { "bilinear" };
            check(&format!("resize_{kind}_{mode}"), g, &[y]);
        }
    }
}

#[test]
fn concatenation_reshape_squeeze_expand_dims_and_transpose_keep_nhwc_order() {
    let concat = |axis: i32| {
        Some(Opt::ConcatenationOptions(Box::new(
            tfl::ConcatenationOptions {
                axis,
                fused_activation_function: tfl::ActivationFunctionType::None,
            },
        )))
    };
    // Along channels and along height, feature maps with a plain input.
    for (case, axis, shape) in [
        ("concat_channels", 3, [1, 4, 3, 7]),
        ("concat_height", -3, [1, 8, 3, 2]),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, 4, 3, 2]);
        let fm = g.feature_map(x, if axis == 3 { 5 } else { 2 });
        let y = g.op(Op::Concatenation, &[fm, x], &shape, concat(axis));
        check(case, g, &[y]);
    }
    // RESHAPE of a feature map (the palm detector's [1, 24, 24, 36] -> [1, 1152, 18]).
    let mut g = Graph::new();
    let x = g.input(&[1, 4, 3, 2]);
    let fm = g.feature_map(x, 6);
    let target = g.i32s(&[3], &[1, 36, 2]);
    let r = g.op(Op::Reshape, &[fm, target], &[1, 36, 2], None);
    let mean_shape = g.i32s(&[2], &[1, 2]);
    let m = g.op(
        Op::Mean,
        &[fm, mean_shape],
        &[1, 1, 1, 6],
        Some(Opt::ReducerOptions(Box::new(tfl::ReducerOptions {
            keep_dims: true,
        }))),
    );
    let s = g.op(
        Op::Squeeze,
        &[m],
        &[1, 6],
        Some(Opt::SqueezeOptions(Box::new(tfl::SqueezeOptions {
            squeeze_dims: Some(vec![1, 2]),
        }))),
    );
    let axis = g.i32s(&[], &[1]);
    let e = g.op(Op::ExpandDims, &[s, axis], &[1, 1, 6], None);
    let perm = g.i32s(&[4], &[0, 3, 1, 2]);
    let t = g.op(Op::Transpose, &[fm, perm], &[1, 6, 4, 3], None);
    check("reshape_squeeze_expand_transpose", g, &[r, e, t]);
}

#[test]
fn strided_slice_with_masks_steps_and_shrunk_axes() {
    let slice = |begin_mask: i32, end_mask: i32, shrink: i32| {
        Some(Opt::StridedSliceOptions(Box::new(
            tfl::StridedSliceOptions {
                begin_mask,
                end_mask,
                shrink_axis_mask: shrink,
                ..Default::default()
            },
        )))
    };
    let mut g = Graph::new();
    let x = g.input(&[1, 6, 5, 2]);
    let fm = g.feature_map(x, 4);
    // [:, 1:5:2, ::-2 (masked), 1:] (channels to the end by the end mask).
    let b = g.i32s(&[4], &[0, 1, 0, 1]);
    let e = g.i32s(&[4], &[1, 5, 0, 0]);
    let st = g.i32s(&[4], &[1, 2, -2, 1]);
    let y = g.op(
        Op::StridedSlice,
        &[fm, b, e, st],
        &[1, 2, 3, 3],
        slice(0b0100, 0b1100, 0),
    );
    // Row -1, shrunk: [1, 5, 4] -> the last row of each image.
    let b = g.i32s(&[4], &[0, -1, 0, 0]);
    let e = g.i32s(&[4], &[1, 0, 5, 4]);
    let st = g.i32s(&[4], &[1, 1, 1, 1]);
    let z = g.op(
        Op::StridedSlice,
        &[fm, b, e, st],
        &[1, 5, 4],
        slice(0, 0, 0b0010),
    );
    check("strided_slice", g, &[y, z]);
}

#[test]
fn pad_padv2_and_mirror_pad_remap_their_paddings() {
    for (case, op) in [
        ("pad", Op::Pad),
        ("padv2", Op::Padv2),
        ("mirror_pad", Op::MirrorPad),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, 4, 5, 2]);
        let fm = g.feature_map(x, 3);
        let pads = g.i32s(&[4, 2], &[0, 0, 1, 2, 2, 1, 0, 1]);
        let mut inputs = vec![fm, pads];
        if op == Op::Padv2 {
            inputs.push(g.f32s(&[], &[0.75]));
        }
        let options = (op == Op::MirrorPad).then(|| {
            Opt::MirrorPadOptions(Box::new(tfl::MirrorPadOptions {
                mode: tfl::MirrorPadMode::Reflect,
            }))
        });
        let y = g.op(op, &inputs, &[1, 7, 8, 4], options);
        check(case, g, &[y]);
    }
}

#[test]
fn fully_connected_flattens_in_nhwc_order() {
    let fc = |keep: bool| {
        Some(Opt::FullyConnectedOptions(Box::new(
            tfl::FullyConnectedOptions {
                fused_activation_function: tfl::ActivationFunctionType::Relu,
                keep_num_dims: keep,
                ..Default::default()
            },
        )))
    };
    let mut g = Graph::new();
    let x = g.input(&[1, 2, 3, 2]);
    let fm = g.feature_map(x, 4);
    let w = g.random(&[5, 24]);
    let b = g.random(&[5]);
    let y = g.op(Op::FullyConnected, &[fm, w, b], &[1, 5], fc(false));
    check("fully_connected_of_a_feature_map", g, &[y]);

    let mut g = Graph::new();
    let x = g.input(&[1, 3, 8]);
    let w = g.random(&[4, 8]);
    let y = g.op(Op::FullyConnected, &[x, w, -1], &[1, 3, 4], fc(true));
    check("fully_connected_keep_num_dims", g, &[y]);
}

#[test]
fn mean_sum_and_reduce_max_min_prod_over_remapped_axes() {
    for (case, op, axes, keep, out) in [
        ("mean_hw", Op::Mean, vec![1, 2], false, vec![1, 4]),
        ("mean_hw_keep", Op::Mean, vec![1, 2], true, vec![1, 1, 1, 4]),
        ("sum_c", Op::Sum, vec![3], false, vec![1, 3, 5]),
        ("max_h", Op::ReduceMax, vec![1], false, vec![1, 5, 4]),
        (
            "min_w_keep",
            Op::ReduceMin,
            vec![-2],
            true,
            vec![1, 3, 1, 4],
        ),
        (
            "prod_c_keep",
            Op::ReduceProd,
            vec![3],
            true,
            vec![1, 3, 5, 1],
        ),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[1, 3, 5, 2]);
        let fm = g.feature_map(x, 4);
        let a = g.i32s(&[axes.len() as i32], &axes);
        let y = g.op(
            op,
            &[fm, a],
            &out,
            Some(Opt::ReducerOptions(Box::new(tfl::ReducerOptions {
                keep_dims: keep,
            }))),
        );
        check(case, g, &[y]);
    }
}

#[test]
fn softmax_over_channels_with_beta() {
    for (case, beta) in [("softmax", 1.0), ("softmax_beta", 0.5)] {
        let mut g = Graph::new();
        let x = g.input(&[1, 3, 2, 2]);
        let fm = g.feature_map(x, 5);
        let y = g.op(
            Op::Softmax,
            &[fm],
            &[1, 3, 2, 5],
            Some(Opt::SoftmaxOptions(Box::new(tfl::SoftmaxOptions { beta }))),
        );
        let flat = g.i32s(&[2], &[6, 5]);
        let f = g.op(Op::Reshape, &[y, flat], &[6, 5], None);
        let z = g.op(
            Op::Softmax,
            &[f],
            &[6, 5],
            Some(Opt::SoftmaxOptions(Box::new(tfl::SoftmaxOptions { beta }))),
        );
        check(case, g, &[z]);
    }
}

#[test]
fn depth_to_space_and_space_to_depth_in_tflite_channel_order() {
    let mut g = Graph::new();
    let x = g.input(&[1, 2, 3, 2]);
    let fm = g.feature_map(x, 8);
    let d = g.op(
        Op::DepthToSpace,
        &[fm],
        &[1, 4, 6, 2],
        Some(Opt::DepthToSpaceOptions(Box::new(
            tfl::DepthToSpaceOptions { block_size: 2 },
        ))),
    );
    let s = g.op(
        Op::SpaceToDepth,
        &[d],
        &[1, 2, 3, 8],
        Some(Opt::SpaceToDepthOptions(Box::new(
            tfl::SpaceToDepthOptions { block_size: 2 },
        ))),
    );
    let y = g.op(Op::Sub, &[s, fm], &[1, 2, 3, 8], None);
    check("depth_to_space_space_to_depth", g, &[d, y]);
}

#[test]
fn dequantize_of_fp16_and_per_axis_int8_weights() {
    // fp16 filter behind DEQUANTIZE (MediaPipe's layout).
    let mut g = Graph::new();
    let x = g.input(&[1, 4, 4, 3]);
    let v = g.values(2 * 3 * 3 * 3);
    let halves = v
        .iter()
        .flat_map(|&f| half::f16::from_f32(f).to_le_bytes())
        .collect();
    let w16 = g.tensor(&[2, 3, 3, 3], tfl::TensorType::Float16, Some(halves));
    let w = g.op(Op::Dequantize, &[w16], &[2, 3, 3, 3], None);
    let b = g.random(&[2]);
    let y = g.op(
        Op::Conv2d,
        &[x, w, b],
        &[1, 4, 4, 2],
        Some(conv_options(
            tfl::Padding::Same,
            1,
            1,
            tfl::ActivationFunctionType::None,
        )),
    );
    check("dequantize_fp16", g, &[y]);

    // int8 weights, one scale per output row (axis 0), behind DEQUANTIZE.
    let mut g = Graph::new();
    let x = g.input(&[2, 6]);
    let q: Vec<u8> = (0..4 * 6).map(|i| ((i * 37) % 255) as u8).collect();
    let w8 = g.tensor(&[4, 6], tfl::TensorType::Int8, Some(q));
    g.tensors[w8 as usize].quantization = Some(Box::new(tfl::QuantizationParameters {
        scale: Some(vec![0.01, 0.02, 0.005, 0.03]),
        zero_point: Some(vec![0, 0, 0, 0]),
        quantized_dimension: 0,
        ..Default::default()
    }));
    let w = g.op(Op::Dequantize, &[w8], &[4, 6], None);
    let y = g.op(
        Op::FullyConnected,
        &[x, w, -1],
        &[2, 4],
        Some(Opt::FullyConnectedOptions(Box::new(
            tfl::FullyConnectedOptions::default(),
        ))),
    );
    check("dequantize_int8_per_axis", g, &[y]);
}

/// A sparse weight (CSR rows, then a 2x2-blocked one) behind DENSIFY: the reader makes it
/// dense (LiteRT's format converter, re-implemented) and FULLY_CONNECTED reads it.
#[test]
fn densify_of_sparse_weights_in_csr_and_blocked_layouts() {
    let ints = |v: &[i32]| {
        Some(tfl::SparseIndexVector::Int32Vector(Box::new(
            tfl::Int32Vector {
                values: Some(v.to_vec()),
            },
        )))
    };
    let dense = |n: i32| tfl::DimensionMetadata {
        format: tfl::DimensionType::Dense,
        dense_size: n,
        ..Default::default()
    };
    let csr = |segments: &[i32], indices: &[i32]| tfl::DimensionMetadata {
        format: tfl::DimensionType::SparseCsr,
        array_segments: ints(segments),
        array_indices: ints(indices),
        ..Default::default()
    };
    // [4, 6]: rows of 2, 0, 3 and 1 values.
    let csr_rows = tfl::SparsityParameters {
        traversal_order: Some(vec![0, 1]),
        block_map: None,
        dim_metadata: Some(vec![dense(4), csr(&[0, 2, 2, 5, 6], &[1, 4, 0, 2, 5, 3])]),
    };
    // [4, 6] in 2x2 blocks: a 2 x 3 grid of blocks, blocks (0, 1), (1, 0), (1, 2) stored.
    let blocked = tfl::SparsityParameters {
        traversal_order: Some(vec![0, 1, 2, 3]),
        block_map: Some(vec![0, 1]),
        dim_metadata: Some(vec![
            dense(2),
            csr(&[0, 1, 3], &[1, 0, 2]),
            dense(2),
            dense(2),
        ]),
    };
    for (case, sparsity, stored) in [
        ("densify_csr", csr_rows, 6),
        ("densify_blocked", blocked, 12),
    ] {
        let mut g = Graph::new();
        let x = g.input(&[3, 6]);
        let v = g.values(stored);
        let w = g.f32s(&[4, 6], &v);
        g.tensors[w as usize].sparsity = Some(Box::new(sparsity));
        let d = g.op(Op::Densify, &[w], &[4, 6], None);
        let y = g.op(
            Op::FullyConnected,
            &[x, d, -1],
            &[3, 4],
            Some(Opt::FullyConnectedOptions(Box::new(
                tfl::FullyConnectedOptions::default(),
            ))),
        );
        check(case, g, &[y]);
    }
}

/// The table of lowered ops and the tests above agree: every op the front-end claims has
/// a case here (a new row in `OPS` without a test fails this).
#[test]
fn every_lowered_tflite_op_has_a_case_in_this_file() {
    let source = include_str!("tflite_ops.rs");
    let mut missing = Vec::new();
    for (op, _) in m2w_engine::tflite::ops() {
        let variant: String = op
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
                    None => String::new(),
                }
            })
            .collect();
        if !source.contains(&format!("Op::{variant}")) {
            missing.push(op);
        }
    }
    assert!(missing.is_empty(), "no test case for {missing:?}");
}

/// A fused TANH is refused: LiteRT's float kernels clamp only to the RELU family's ranges
/// and ignore it, so no meaning m2w could give it matches the reference. The refusal
/// names the node, and comes before any GPU work.
#[test]
fn a_fused_activation_litert_ignores_is_refused_with_the_node_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fused_tanh.tflite");
    let mut g = Graph::new();
    let x = g.input(&[1, 4, 4, 3]);
    let w = g.random(&[2, 1, 1, 3]);
    let y = g.op(
        Op::Conv2d,
        &[x, w, -1],
        &[1, 4, 4, 2],
        Some(conv_options(
            tfl::Padding::Same,
            1,
            1,
            tfl::ActivationFunctionType::Tanh,
        )),
    );
    g.write(&[y], &path);
    let mut model = m2w_model::Model::open(&path).unwrap();
    let err = m2w_engine::lower_source(&mut model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tflite::CONV_2D x 1"), "{err}");
    assert!(
        err.contains("fused activation TANH is not supported"),
        "{err}"
    );
    assert!(err.contains("nodes: t2"), "{err}");
}
