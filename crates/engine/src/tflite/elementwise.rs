//! Elementwise TFLite ops (binary with NHWC broadcasting, unary, activations) and SOFTMAX:
//! they keep the layout their input is held in.

use m2w_model::{AttrValue, NodeInfo};

use super::*;

pub(super) fn binary(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let op = match n.op_type.as_str() {
        "ADD" => "Add",
        "SUB" => "Sub",
        "MUL" => "Mul",
        "DIV" => "Div",
        "MAXIMUM" => "Max",
        "MINIMUM" => "Min",
        "POW" => "Pow",
        _ => "PRelu",
    };
    let (a, b) = (input(n, 0)?, input(n, 1)?);
    let out = out0(n)?;
    let feature_map = (cx.is_nchw(a) || cx.is_nchw(b)) && cx.rank(out)? == 4;
    let inputs = if feature_map {
        vec![cx.nchw_operand(a)?, cx.nchw_operand(b)?]
    } else {
        vec![cx.nhwc(a), cx.nhwc(b)]
    };
    cx.emit(n, op, inputs, Vec::new(), out, feature_map)
}

pub(super) fn unary(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let nchw = cx.is_nchw(x);
    let xin = if nchw { cx.nchw(x)? } else { x.to_string() };
    let target = cx.target(out, nchw);
    let name = n.label();
    match n.op_type.as_str() {
        "RELU" | "RELU6" | "RELU_N1_TO_1" | "RELU_0_TO_1" | "TANH" => {
            cx.activation(&name, &n.op_type, false, &xin, &target)?
        }
        "RSQRT" => {
            let root = format!("{out}#sqrt");
            cx.push(
                format!("{name}#sqrt"),
                "Sqrt",
                vec![xin],
                vec![root.clone()],
            );
            cx.push(name, "Reciprocal", vec![root], vec![target.clone()]);
        }
        "LEAKY_RELU" => {
            let alpha = match n.attributes.get("alpha") {
                Some(AttrValue::Float(a)) => *a,
                _ => 0.2,
            };
            cx.push_with(
                name,
                "LeakyRelu",
                vec![xin],
                vec![target.clone()],
                vec![("alpha", AttrValue::Float(alpha))],
            );
        }
        op => {
            let onnx = match op {
                "LOGISTIC" => "Sigmoid",
                "HARD_SWISH" => "HardSwish",
                "ELU" => "Elu",
                "EXP" => "Exp",
                "LOG" => "Log",
                "SQRT" => "Sqrt",
                "ABS" => "Abs",
                "NEG" => "Neg",
                "FLOOR" => "Floor",
                "CEIL" => "Ceil",
                "SIN" => "Sin",
                "COS" => "Cos",
                other => return Err(format!("{other} is not an elementwise op")),
            };
            cx.push(name, onnx, vec![xin], vec![target.clone()]);
        }
    }
    if nchw {
        cx.hold(out, target);
    }
    Ok(())
}

pub(super) fn softmax(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let nchw = cx.is_nchw(x) && cx.rank(x)? == 4;
    let mut xin = if nchw { cx.nchw(x)? } else { x.to_string() };
    let beta = match n.attributes.get("beta") {
        Some(AttrValue::Float(b)) => *b,
        _ => 1.0,
    };
    if beta != 1.0 {
        let b = cx.derived_f32(format!("{out}#beta"), vec![], &[beta]);
        let scaled = format!("{out}#scaled");
        cx.push(
            format!("{}#beta", n.label()),
            "Mul",
            vec![xin, b],
            vec![scaled.clone()],
        );
        xin = scaled;
    }
    let axis = if nchw { 1 } else { -1 };
    cx.emit(
        n,
        "Softmax",
        vec![xin],
        vec![("axis", AttrValue::Int(axis))],
        out,
        nchw,
    )
}
