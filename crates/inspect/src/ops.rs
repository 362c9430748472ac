//! Which ops need work before they run on WebGPU: derived from the engine's op registry
//! (`m2w_engine::ops`), the one list of what m2w runs. An op the registry knows has no
//! flag; any other op is flagged with a category (contrib, control-flow, special,
//! missing) and a reason.

pub use m2w_engine::ops::OpFlag;

/// The flag of an op, or None when the engine has a lowering for it.
pub fn flag_for(domain: &str, op: &str) -> Option<OpFlag> {
    let f = m2w_engine::ops::flag(domain, op);
    (f.kind != "supported").then_some(f)
}

#[cfg(test)]
mod tests {
    use super::flag_for;

    #[test]
    fn flags_what_the_engine_does_not_run() {
        assert_eq!(
            flag_for("com.microsoft", "Attention").unwrap().kind,
            "contrib"
        );
        assert_eq!(flag_for("", "Loop").unwrap().kind, "control-flow");
        assert!(flag_for("", "If").is_none());
        assert!(flag_for("", "MatMulInteger").is_none());
        assert_eq!(flag_for("", "FancyNewOp").unwrap().kind, "missing");
        assert!(flag_for("", "MatMul").is_none());
        assert!(flag_for("ai.onnx", "Conv").is_none());
        // TFLite ops: lowered by the front-end, or flagged as waiting for a lowering.
        assert!(flag_for("tflite", "DEPTHWISE_CONV_2D").is_none());
        assert_eq!(
            flag_for("tflite", "UNIDIRECTIONAL_SEQUENCE_LSTM")
                .unwrap()
                .kind,
            "tflite"
        );
        // The engine has an LSTM kernel: no longer flagged.
        assert!(flag_for("", "LSTM").is_none());
    }
}
