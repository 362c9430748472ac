//! Which ops have an obvious WGSL kernel, and why the others are flagged.
//!
//! This is inspect's view only: the engine's node-kind enum (a later phase) becomes the
//! single source of truth for what m2w runs, and this list will be derived from it.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpFlag {
    pub kind: &'static str,
    pub reason: String,
}

/// Standard-domain ops that map onto a known kernel family (elementwise, matmul, conv,
/// pooling, normalisation, reduction, data movement, shape arithmetic).
const PLAIN_KERNEL_OPS: &[&str] = &[
    // elementwise unary
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "Ceil",
    "Cos",
    "Cosh",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "IsInf",
    "IsNaN",
    "LeakyRelu",
    "Log",
    "Mish",
    "Neg",
    "Not",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Celu",
    "Clip",
    "Cast",
    "CastLike",
    "Dropout",
    "BitwiseNot",
    // elementwise binary / variadic
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Mean",
    "Sum",
    "PRelu",
    "And",
    "Or",
    "Xor",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Where",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    // linear algebra and convolution
    "MatMul",
    "Gemm",
    "Conv",
    "ConvTranspose",
    "Einsum",
    // pooling and normalisation
    "AveragePool",
    "MaxPool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "GlobalLpPool",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "RMSNormalization",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    // reductions
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceSum",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "ArgMax",
    "ArgMin",
    "CumSum",
    "TopK",
    // data movement and shapes
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "ScatterElements",
    "ScatterND",
    "Expand",
    "Pad",
    "Tile",
    "Resize",
    "Upsample",
    "DepthToSpace",
    "SpaceToDepth",
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Range",
    "OneHot",
    "Trilu",
    "EyeLike",
    "NonZero",
    "Compress",
    "ReverseSequence",
    // quantization ops with a constant-folded or direct kernel
    "DequantizeLinear",
    "QuantizeLinear",
];

/// Why an op needs attention before it can run on WebGPU, or None for plain kernels.
pub fn flag_for(domain: &str, op: &str) -> Option<OpFlag> {
    let standard = domain.is_empty() || domain == "ai.onnx";
    if !standard {
        return Some(OpFlag {
            kind: "contrib",
            reason: format!(
                "op from domain '{domain}': not in the ONNX standard, needs a custom kernel"
            ),
        });
    }
    let (kind, reason) = match op {
        "LSTM" | "GRU" | "RNN" => (
            "recurrent",
            "sequential over time steps; needs a dedicated kernel (one workgroup per direction)",
        ),
        "If" | "Loop" | "Scan" => (
            "control-flow",
            "subgraphs: the engine must pick a branch ahead of time or run subgraphs",
        ),
        "DynamicQuantizeLinear"
        | "MatMulInteger"
        | "ConvInteger"
        | "QLinearMatMul"
        | "QLinearConv" => (
            "quantized",
            "integer arithmetic with run-time quantization; dequantize weights at load and run f32 kernels",
        ),
        "NonMaxSuppression" | "RoiAlign" | "Unique" | "StringNormalizer" | "TfIdfVectorizer"
        | "RandomNormal" | "RandomUniform" | "RandomNormalLike" | "RandomUniformLike"
        | "Multinomial" | "Bernoulli" => (
            "special",
            "data-dependent or random output: usually runs as CPU glue between GPU stages",
        ),
        _ if PLAIN_KERNEL_OPS.contains(&op) => return None,
        _ => ("unknown", "no kernel family known for this op yet"),
    };
    Some(OpFlag {
        kind,
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::flag_for;

    #[test]
    fn flags_contrib_recurrent_control_flow_and_unknown_ops() {
        assert_eq!(
            flag_for("com.microsoft", "MatMulNBits").unwrap().kind,
            "contrib"
        );
        assert_eq!(flag_for("", "LSTM").unwrap().kind, "recurrent");
        assert_eq!(flag_for("", "If").unwrap().kind, "control-flow");
        assert_eq!(flag_for("", "MatMulInteger").unwrap().kind, "quantized");
        assert_eq!(flag_for("", "FancyNewOp").unwrap().kind, "unknown");
        assert!(flag_for("", "MatMul").is_none());
        assert!(flag_for("ai.onnx", "Conv").is_none());
    }
}
