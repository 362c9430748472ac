//! Weight ops: DEQUANTIZE (fp16 and 8-bit weights, folded at plan time) and DENSIFY.

use m2w_model::{AttrValue, DType, NodeInfo};

use super::*;

/// DEQUANTIZE: fp16 weights become f32 (a Cast that folds at plan time); 8-bit ones go
/// through DequantizeLinear with their scale and zero point (per tensor or per axis).
pub(super) fn dequantize(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let xin = cx.nhwc(x);
    // A weight, or a weight passed on by DENSIFY.
    let source = cx.passed_on.get(x).map(String::as_str).unwrap_or(x);
    let entry = cx.model.tensor(source);
    let dtype = entry.map(|t| t.dtype);
    if dtype == Some(DType::F16) || dtype == Some(DType::BF16) {
        return cx.emit(
            n,
            "Cast",
            vec![xin],
            vec![("to", AttrValue::Int(1))],
            out,
            false,
        );
    }
    let Some(q) = entry.and_then(|t| t.quantization.clone()) else {
        return Err(format!(
            "DEQUANTIZE of {}: only fp16 weights and quantized 8-bit weights are lowered",
            match dtype {
                Some(d) => format!("a {d} weight without quantization"),
                None => "a value computed at run time".into(),
            }
        ));
    };
    let dtype = dtype.expect("a weight");
    if !matches!(dtype, DType::I8 | DType::U8) {
        return Err(format!(
            "DEQUANTIZE of {dtype} is not supported (int8, uint8 are)"
        ));
    }
    let k = q.scale.len() as u64;
    let shape = if q.axis.is_some() { vec![k] } else { vec![] };
    let scale = cx.derived_f32(format!("{out}#scale"), shape.clone(), &q.scale);
    let zp: Vec<u8> = (0..k as usize)
        .map(|i| q.zero_point.get(i).copied().unwrap_or(0) as u8)
        .collect();
    let zero = format!("{out}#zero_point");
    cx.derived.push((zero.clone(), dtype, shape, zp));
    let mut attrs = Vec::new();
    if let Some(a) = q.axis {
        attrs.push(("axis", AttrValue::Int(a)));
    }
    cx.emit(
        n,
        "DequantizeLinear",
        vec![xin, scale, zero],
        attrs,
        out,
        false,
    )
}

/// DENSIFY: the reader made the sparse weight dense already; this passes it on.
pub(super) fn densify(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    if cx.model.tensor(x).is_none() {
        return Err("DENSIFY of a value computed at run time (sparse weights only)".into());
    }
    let out = out0(n)?;
    cx.passed_on.insert(out.to_string(), x.to_string());
    cx.emit(n, "Identity", vec![x.to_string()], Vec::new(), out, false)
}
