//! Element-wise ops over numpy-broadcast inputs: unary math and activations, binary
//! arithmetic / comparison / logic (variadic Sum, Mean, Max, Min chained pairwise), Where,
//! Clip and casts. One kernel family (`ew_*`, templates/elementwise.wgsl.tmpl); host folds
//! for the integer and boolean arithmetic of shape subgraphs.

use m2w_kernels::Kernel;
use m2w_model::NodeInfo;

use super::ctx::{Ctx, R, attr_f, attr_i, attr_s, host_input as get, ins, kernel_for, out0};
use super::host::{binary_fmod, cast};
use super::{PACKED, Registry, onnx_dt};
use crate::tensor::{DT, Data, HostTensor};

const CONSUMED: &[&str] = &["consumed_inputs"];
const LEGACY_BROADCAST: &[&str] = &["axis", "broadcast", "consumed_inputs"];

pub(super) fn register(r: &mut Registry) {
    for (op, since, attrs, _) in UNARY {
        let spec = r.op(op, *since, attrs, lower_unary);
        match *op {
            // Float shape arithmetic (sizes from scales) rounds on the host.
            "Floor" | "Ceil" | "Round" | "Sqrt" => {
                spec.fold(fold_float_unary);
            }
            "Abs" | "Neg" => {
                spec.fold(fold_neg_abs);
            }
            "Not" => {
                spec.fold(fold_not);
            }
            _ => {}
        }
    }
    for (op, since, attrs, folds) in [
        ("Add", 1, LEGACY_BROADCAST, true),
        ("Sub", 1, LEGACY_BROADCAST, true),
        ("Mul", 1, LEGACY_BROADCAST, true),
        ("Div", 1, LEGACY_BROADCAST, true),
        ("Pow", 1, &["axis", "broadcast"][..], false),
        ("Mod", 10, &["fmod"], true),
        ("Max", 1, CONSUMED, true),
        ("Min", 1, CONSUMED, true),
        ("Sum", 1, CONSUMED, true),
        ("Mean", 1, CONSUMED, false),
        ("Equal", 1, &["axis", "broadcast"], true),
        ("Greater", 1, &["axis", "broadcast"], true),
        ("GreaterOrEqual", 12, &[], true),
        ("Less", 1, &["axis", "broadcast"], true),
        ("LessOrEqual", 12, &[], true),
        ("And", 1, &["axis", "broadcast"], true),
        ("Or", 1, &["axis", "broadcast"], true),
        ("Xor", 1, &["axis", "broadcast"], true),
        ("PRelu", 1, CONSUMED, false),
    ]
        as [(&'static str, i64, &'static [&'static str], bool); 19]
    {
        let spec = r.op(op, since, attrs, lower_binary);
        if folds {
            spec.fold(fold_binary);
        }
    }
    r.op("Where", 9, &[], lower_where).fold(fold_where);
    r.op("Clip", 1, &["consumed_inputs", "max", "min"], lower_clip);
    r.op("Cast", 1, &["round_mode", "saturate", "to"], lower_cast)
        .fold(fold_cast);
    r.op("CastLike", 15, &["round_mode", "saturate"], lower_cast)
        .fold(fold_cast);
}

/// The kernel op of a unary node and its two uniform parameters (attributes or defaults).
type UnaryParams = fn(&NodeInfo) -> (&'static str, f32, f32);

/// Every unary element-wise op: name, first opset, spec attributes, kernel op and params.
/// `ew_<kernel op>_<dtype>` must exist for the input's dtype.
static UNARY: &[(&str, i64, &[&str], UnaryParams)] = &[
    ("Abs", 1, CONSUMED, |_| ("abs", 0.0, 0.0)),
    ("Neg", 1, CONSUMED, |_| ("neg", 0.0, 0.0)),
    ("Relu", 1, CONSUMED, |_| ("relu", 0.0, 0.0)),
    ("Sigmoid", 1, CONSUMED, |_| ("sigmoid", 0.0, 0.0)),
    ("Tanh", 1, CONSUMED, |_| ("tanh", 0.0, 0.0)),
    ("Exp", 1, CONSUMED, |_| ("exp", 0.0, 0.0)),
    ("Log", 1, CONSUMED, |_| ("log", 0.0, 0.0)),
    ("Sqrt", 1, CONSUMED, |_| ("sqrt", 0.0, 0.0)),
    ("Reciprocal", 1, CONSUMED, |_| ("reciprocal", 0.0, 0.0)),
    ("Floor", 1, CONSUMED, |_| ("floor", 0.0, 0.0)),
    ("Ceil", 1, CONSUMED, |_| ("ceil", 0.0, 0.0)),
    ("Round", 11, &[], |_| ("round", 0.0, 0.0)),
    ("Sin", 7, &[], |_| ("sin", 0.0, 0.0)),
    ("Cos", 7, &[], |_| ("cos", 0.0, 0.0)),
    ("Tan", 7, &[], |_| ("tan", 0.0, 0.0)),
    ("Asin", 7, &[], |_| ("asin", 0.0, 0.0)),
    ("Acos", 7, &[], |_| ("acos", 0.0, 0.0)),
    ("Atan", 7, &[], |_| ("atan", 0.0, 0.0)),
    ("Sinh", 9, &[], |_| ("sinh", 0.0, 0.0)),
    ("Cosh", 9, &[], |_| ("cosh", 0.0, 0.0)),
    ("Asinh", 9, &[], |_| ("asinh", 0.0, 0.0)),
    ("Acosh", 9, &[], |_| ("acosh", 0.0, 0.0)),
    ("Atanh", 9, &[], |_| ("atanh", 0.0, 0.0)),
    ("Erf", 9, &[], |_| ("erf", 0.0, 0.0)),
    ("Sign", 9, &[], |_| ("sign", 0.0, 0.0)),
    ("Softplus", 1, &[], |_| ("softplus", 0.0, 0.0)),
    ("Softsign", 1, &[], |_| ("softsign", 0.0, 0.0)),
    ("Elu", 1, &["alpha", "consumed_inputs"], |n| {
        ("elu", attr_f(n, "alpha", 1.0), 0.0)
    }),
    ("Selu", 1, &["alpha", "consumed_inputs", "gamma"], |n| {
        (
            "selu",
            attr_f(n, "alpha", 1.673_263_2),
            attr_f(n, "gamma", 1.050_701),
        )
    }),
    ("Celu", 12, &["alpha"], |n| {
        ("celu", attr_f(n, "alpha", 1.0), 0.0)
    }),
    ("LeakyRelu", 1, &["alpha", "consumed_inputs"], |n| {
        ("leaky_relu", attr_f(n, "alpha", 0.01), 0.0)
    }),
    ("ThresholdedRelu", 10, &["alpha"], |n| {
        ("thresholded_relu", attr_f(n, "alpha", 1.0), 0.0)
    }),
    (
        "HardSigmoid",
        1,
        &["alpha", "beta", "consumed_inputs"],
        |n| {
            (
                "hard_sigmoid",
                attr_f(n, "alpha", 0.2),
                attr_f(n, "beta", 0.5),
            )
        },
    ),
    ("HardSwish", 14, &[], |_| ("hard_swish", 0.0, 0.0)),
    ("Mish", 18, &[], |_| ("mish", 0.0, 0.0)),
    ("Gelu", 20, &["approximate"], |n| {
        if attr_s(n, "approximate", "none") == "tanh" {
            ("gelu_tanh", 0.0, 0.0)
        } else {
            ("gelu", 0.0, 0.0)
        }
    }),
    ("IsNaN", 9, &[], |_| ("isnan", 0.0, 0.0)),
    ("IsInf", 10, &["detect_negative", "detect_positive"], |n| {
        (
            "isinf",
            attr_i(n, "detect_positive", 1) as f32,
            attr_i(n, "detect_negative", 1) as f32,
        )
    }),
    ("Not", 1, &[], |_| ("not", 0.0, 0.0)),
];

fn binary_kernel(op: &str, fmod: bool) -> Option<&'static str> {
    Some(match op {
        "Add" | "Sum" | "Mean" => "add",
        "Sub" => "sub",
        "Mul" => "mul",
        "Div" => "div",
        "Pow" => "pow",
        "Mod" => {
            if fmod {
                "fmod"
            } else {
                "mod"
            }
        }
        "Max" => "max",
        "Min" => "min",
        "Equal" => "equal",
        "Greater" => "greater",
        "GreaterOrEqual" => "greater_or_equal",
        "Less" => "less",
        "LessOrEqual" => "less_or_equal",
        "And" => "and",
        "Or" => "or",
        "Xor" => "xor",
        "PRelu" => "prelu",
        _ => return None,
    })
}

fn lower_unary(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let params = UNARY
        .iter()
        .find(|u| u.0 == n.op_type)
        .map(|u| u.3)
        .ok_or("not a unary op")?;
    let (k, p0, p1) = params(n);
    let dt = cx.dt(ins[0])?;
    let out_dt = match (k, dt) {
        ("isnan" | "isinf", DT::F32) => DT::Bool,
        ("not", DT::Bool) => DT::Bool,
        (_, DT::F32) if k != "not" => DT::F32,
        ("abs" | "neg" | "sign" | "relu", DT::I32) => DT::I32,
        _ => return Err(format!("dtype {dt:?} not supported")),
    };
    let kernel = kernel_for("ew", k, dt.suffix())?;
    cx.elementwise(n, kernel, &ins[..1], out, out_dt, p0, p1)
}

fn lower_binary(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let op = n.op_type.as_str();
    if let Some(axis) = n.attributes.get("axis") {
        // Before opset 7, `broadcast` with `axis` aligned B at that axis of A; numpy
        // broadcasting (trailing alignment) agrees only when the axis is where B ends up.
        let (ra, rb) = (
            cx.sym_shape(ins[0])?.len() as i64,
            cx.sym_shape(ins[1])?.len() as i64,
        );
        let axis = match axis {
            m2w_model::AttrValue::Int(a) => *a,
            _ => -1,
        };
        if (if axis < 0 { axis + ra } else { axis }) != ra - rb {
            return Err(format!(
                "legacy broadcast along axis {axis} is not supported"
            ));
        }
    }
    let dt = cx.dt(ins[0])?;
    let fmod = attr_i(n, "fmod", 0) != 0;
    let k = binary_kernel(op, fmod).expect("listed");
    let cmp = matches!(
        op,
        "Equal" | "Greater" | "GreaterOrEqual" | "Less" | "LessOrEqual"
    );
    let logical = matches!(op, "And" | "Or" | "Xor");
    let supported = match dt {
        DT::F32 => !logical && (op != "Mod" || fmod),
        DT::I32 => !logical && op != "Pow",
        DT::Bool => logical || op == "Equal",
        _ => false,
    };
    if !supported {
        return Err(format!("dtype {dt:?} not supported"));
    }
    for i in &ins {
        if cx.dt(i)? != dt && op != "Pow" {
            return Err("inputs of different dtypes".into());
        }
    }
    if op == "Pow" && cx.dt(ins[1])? != DT::F32 {
        return Err("Pow with an integer exponent tensor is not supported".into());
    }
    let out_dt = if cmp { DT::Bool } else { dt };
    if ins.len() == 1 {
        let s = cx.sym_shape(ins[0])?;
        return cx.view_sym(out, ins[0], s);
    }
    let kernel = kernel_for("ew", k, dt.suffix())?;
    // Variadic ops chain pairwise through temporaries.
    let mut acc = ins[0].to_string();
    for (j, rhs) in ins.iter().enumerate().skip(1) {
        let last = j == ins.len() - 1 && op != "Mean";
        let target = if last {
            out.to_string()
        } else {
            format!("{out}::{op}{j}")
        };
        cx.elementwise(n, kernel, &[&acc, rhs], &target, out_dt, 0.0, 0.0)?;
        acc = target;
    }
    if op == "Mean" {
        let scale = format!("{out}::mean_scale");
        cx.add_const(
            &scale,
            HostTensor::f32(vec![], vec![1.0 / ins.len() as f32]),
        );
        cx.elementwise(n, Kernel::EwMulF32, &[&acc, &scale], out, DT::F32, 0.0, 0.0)?;
    }
    Ok(())
}

fn lower_where(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let dt = cx.dt(ins[1])?;
    cx.elementwise(
        n,
        kernel_for("ew", "where", dt.suffix())?,
        &ins[..3],
        out,
        dt,
        0.0,
        0.0,
    )
}

fn lower_clip(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let dt = cx.dt(ins[0])?;
    if dt == DT::Bool {
        return Err("bool Clip".into());
    }
    let (lo, hi) = if cx.opset < 11 {
        (
            Some(attr_f(n, "min", f32::MIN)),
            Some(attr_f(n, "max", f32::MAX)),
        )
    } else {
        (None, None)
    };
    let mut bound = |idx: usize, attr: Option<f32>, dflt: f32, tag: &str| -> String {
        match ins.get(idx).filter(|s| !s.is_empty()) {
            Some(s) => s.to_string(),
            None => {
                let name = format!("{out}::{tag}");
                let v = attr.unwrap_or(dflt);
                let t = if dt == DT::F32 {
                    HostTensor::f32(vec![], vec![v])
                } else {
                    HostTensor::i64(
                        vec![],
                        vec![if dflt < 0.0 {
                            i32::MIN as i64
                        } else {
                            i32::MAX as i64
                        }],
                    )
                };
                cx.add_const(&name, t);
                name
            }
        }
    };
    let lo = bound(1, lo, f32::MIN, "clip_min");
    let hi = bound(2, hi, f32::MAX, "clip_max");
    let kernel = kernel_for("ew", "clip", dt.suffix())?;
    cx.elementwise(n, kernel, &[ins[0], &lo, &hi], out, dt, 0.0, 0.0)
}

fn lower_cast(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    let op = n.op_type.as_str();
    let from = cx.dt(ins[0])?;
    let to = if op == "Cast" {
        onnx_dt(attr_i(n, "to", 1) as i32)?
    } else {
        // 4-/2-bit targets wrap around (two's complement), which no cast kernel does.
        if let Some(d) = cx.declared(ins[1]).filter(|d| d.sub_byte().is_some()) {
            return Err(format!("casting to {} is not supported", d.name()));
        }
        cx.dt(ins[1])?
    };
    if from == to {
        let s = cx.sym_shape(ins[0])?;
        return cx.view_sym(out, ins[0], s);
    }
    let kernel = kernel_for("ew", "cast", &format!("{}_{}", from.suffix(), to.suffix()))?;
    cx.elementwise(n, kernel, &ins[..1], out, to, 0.0, 0.0)
}

fn fold_binary(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let fmod = attr_i(n, "fmod", 0) != 0;
    let op = if n.op_type == "Sum" {
        "Add"
    } else {
        &n.op_type
    };
    let mut acc = get(ins, 0)?.clone();
    for i in 1..ins.len() {
        acc = binary_fmod(op, &acc, get(ins, i)?, fmod)?;
    }
    Ok(vec![acc])
}

fn fold_where(_: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let (c, x, y) = (get(ins, 0)?, get(ins, 1)?, get(ins, 2)?);
    let shape = super::ctx::broadcast(&[&c.shape, &x.shape, &y.shape])?;
    let (c, x, y) = (
        super::host::expand(c, &shape)?,
        super::host::expand(x, &shape)?,
        super::host::expand(y, &shape)?,
    );
    let picks_x: Vec<bool> = c.as_i64().iter().map(|&v| v != 0).collect();
    fn pick<T: Copy>(p: &[bool], a: &[T], b: &[T]) -> Vec<T> {
        p.iter()
            .enumerate()
            .map(|(i, &p)| if p { a[i] } else { b[i] })
            .collect()
    }
    let data = match (&x.data, &y.data) {
        (Data::F32(a), Data::F32(b)) => Data::F32(pick(&picks_x, a, b)),
        (Data::I64(a), Data::I64(b)) => Data::I64(pick(&picks_x, a, b)),
        (Data::Bool(a), Data::Bool(b)) => Data::Bool(pick(&picks_x, a, b)),
        _ => return Err("Where: mixed dtypes".into()),
    };
    Ok(vec![HostTensor { shape, data }])
}

/// Floor, Ceil, Round (half to even, as ONNX) and Sqrt of f32 constants.
fn fold_float_unary(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let Data::F32(v) = &t.data else {
        return Err(format!("{} of a non-float constant", n.op_type));
    };
    let f = match n.op_type.as_str() {
        "Floor" => f32::floor,
        "Ceil" => f32::ceil,
        "Round" => f32::round_ties_even,
        _ => f32::sqrt,
    };
    Ok(vec![HostTensor::f32(
        t.shape.clone(),
        v.iter().map(|&x| f(x)).collect(),
    )])
}

fn fold_not(_: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    Ok(vec![HostTensor::bool(
        t.shape.clone(),
        t.as_i64().iter().map(|&v| v == 0).collect(),
    )])
}

fn fold_neg_abs(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let t = get(ins, 0)?;
    let neg = n.op_type == "Neg";
    Ok(vec![match &t.data {
        Data::Packed { .. } => return Err(PACKED.into()),
        Data::F32(v) => HostTensor::f32(
            t.shape.clone(),
            v.iter().map(|&x| if neg { -x } else { x.abs() }).collect(),
        ),
        Data::I64(v) => HostTensor::i64(
            t.shape.clone(),
            v.iter().map(|&x| if neg { -x } else { x.abs() }).collect(),
        ),
        Data::Bool(_) => return Err(format!("{} on bool", n.op_type)),
    }])
}

fn fold_cast(n: &NodeInfo, ins: &[Option<HostTensor>], _: i64) -> R<Vec<HostTensor>> {
    let to = if n.op_type == "Cast" {
        onnx_dt(attr_i(n, "to", 1) as i32)?
    } else {
        get(ins, 1)?.dt()
    };
    Ok(vec![cast(get(ins, 0)?, to)])
}

#[cfg(test)]
mod tests;
