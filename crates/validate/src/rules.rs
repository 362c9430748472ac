//! Op rules that widen a checkpoint's tolerance beyond its dtype's default, each for a
//! stated reason a faithful engine shows (reported per checkpoint as `tolerance_note`).

/// The absolute tolerance (and why) a checkpoint needs when an op rounds a quotient it
/// computes at run time, when no `--tol` names the checkpoint.
/// - QuantizeLinear's and DynamicQuantizeLinear's integers (and the latter's zero point):
///   one step. WGSL's division is accurate to 2.5 ULP, not correctly rounded, so a quotient
///   within float noise of a rounding tie may round either way (SwiftShader's does, where
///   lavapipe's and ONNX Runtime's agree).
/// - com.microsoft DynamicQuantizeLSTM quantizes h to uint8 before every step; where h /
///   scale lands within float noise of a tie (it happens: Kokoro's encoder, 93 steps), the
///   engine and ONNX Runtime, whose sigmoid and tanh differ in the last bits, round it to
///   neighbouring integers, and every gate moves by up to one step of h (|h| <= 1: at most
///   2/255) times the largest |R_scale * (R - R_zero_point)|.
pub fn rounding_atol(
    model: &m2w_model::Model,
    node: &m2w_model::NodeInfo,
    output: &str,
) -> Option<(f64, String)> {
    let k = node.outputs.iter().position(|o| o == output)?;
    match (node.op_type.as_str(), k) {
        ("QuantizeLinear", 0) | ("DynamicQuantizeLinear", 0 | 2) => Some((
            1.0,
            format!(
                "{}: one integer step (a quotient near a rounding tie)",
                node.op_type
            ),
        )),
        ("DynamicQuantizeLSTM", _) => {
            let atol = dynamic_quantize_lstm_atol(model, node)?;
            Some((
                atol,
                format!(
                    "{}: atol {atol:.3e}, one rounding flip of the state it quantizes every step",
                    node.op_type
                ),
            ))
        }
        _ => None,
    }
}

/// One flip of DynamicQuantizeLSTM's quantized h: 2/255 * max |R_scale * (R - R_zero_point)|.
fn dynamic_quantize_lstm_atol(model: &m2w_model::Model, node: &m2w_model::NodeInfo) -> Option<f64> {
    let read = |k: usize| -> Option<Vec<f32>> {
        let name = node.inputs.get(k).filter(|s| !s.is_empty())?;
        model.read_f32(model.tensor(name)?).ok()
    };
    let r = read(2)?;
    let scale = read(10)?;
    let zero: Vec<f32> = read(11).unwrap_or_else(|| vec![0.0]);
    let largest = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let (r_lo, r_hi) = r
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (z_lo, z_hi) = zero
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let spread = (r_hi - z_lo).abs().max((r_lo - z_hi).abs());
    Some((2.0 / 255.0) * (largest(&scale) * spread) as f64)
}

#[cfg(test)]
mod tests {
    use super::rounding_atol;
    use m2w_model::onnx::proto;
    use m2w_model::onnx_build as b;

    fn raw(name: &str, dtype: i32, dims: &[i64], bytes: Vec<u8>) -> proto::TensorProto {
        proto::TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(dtype),
            raw_data: Some(bytes),
            ..Default::default()
        }
    }

    /// One flip of h moves a gate by a uint8 step of h (2/255 for |h| <= 1) times the largest
    /// |R_scale * (R - R_zero_point)|; other ops get no rule.
    #[test]
    fn dynamic_quantize_lstm_checkpoints_get_one_flip_of_tolerance() {
        const INT8: i32 = 3;
        let r: Vec<i8> = vec![-100, 7, 60, 127];
        let inits = vec![
            raw("w", INT8, &[1, 1, 4], vec![1, 2, 3, 4]),
            raw("r", INT8, &[1, 1, 4], r.iter().map(|&v| v as u8).collect()),
            raw("ws", b::FLOAT, &[1], 0.5f32.to_le_bytes().to_vec()),
            raw("rs", b::FLOAT, &[1], 0.02f32.to_le_bytes().to_vec()),
            raw("z", INT8, &[1], vec![(-3i8) as u8]),
        ];
        let lstm = b::node(
            "DynamicQuantizeLSTM",
            &["x", "w", "r", "", "", "", "", "", "ws", "z", "rs", "z"],
            &["y"],
            vec![b::attr_int("hidden_size", 1)],
        );
        let relu = b::node("Relu", &["y"], &["out"], vec![]);
        let bytes = b::model(
            vec![lstm, relu],
            inits,
            vec![b::value_info("x", b::FLOAT, &[2, 1, 1])],
            vec![b::value_info("out", b::FLOAT, &[2, 1, 1, 1])],
            17,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, bytes).unwrap();
        let model = m2w_model::Model::open(&path).unwrap();
        let nodes = &model.graph.as_ref().unwrap().nodes;
        let (atol, _) = rounding_atol(&model, &nodes[0], "y").unwrap();
        // The largest |R - zp| is |127 - (-3)| = 130.
        let want = 2.0 / 255.0 * (0.02f32 * 130.0) as f64;
        assert!((atol - want).abs() < 1e-9, "{atol} vs {want}");
        assert_eq!(rounding_atol(&model, &nodes[1], "out"), None);
    }
}
