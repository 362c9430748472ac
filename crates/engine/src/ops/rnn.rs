//! Recurrent ops, forward / reverse / bidirectional, with bias and initial state: a
//! workgroup per direction and batch row walks the time steps, a thread per hidden unit
//! (hidden size up to 256). LSTM (`lstm_f32`; Y_h and Y_c are copies out of the state
//! buffer) GRU (`gru_f32`: both linear_before_reset modes, sequence lengths, clip) and RNN
//! (`rnn_f32`, tanh). com.microsoft DynamicQuantizeLSTM (int8 weights stored transposed,
//! [D, I, 4H] and [D, H, 4H]) as ONNX Runtime computes it: X quantized once for the
//! sequence and multiplied exactly with W (the quant module's integer product), then
//! `lstm_dynq_f32` quantizes h before every step (batch 1).

use m2w_kernels::{Kernel, params};
use m2w_model::{AttrValue, NodeInfo};

use super::Registry;
use super::ctx::{Ctx, R, attr_f, attr_i, attr_s, ins};
use crate::plan::Binding;
use crate::sym::Expr;
use crate::tensor::DT;

pub(super) fn register(r: &mut Registry) {
    r.contrib(
        "com.microsoft",
        "DynamicQuantizeLSTM",
        &[
            "activation_alpha",
            "activation_beta",
            "activations",
            "clip",
            "direction",
            "hidden_size",
            "input_forget",
        ],
        lower_dynamic_quantize_lstm,
    );
    r.op(
        "LSTM",
        1,
        &[
            "activation_alpha",
            "activation_beta",
            "activations",
            "clip",
            "direction",
            "hidden_size",
            "input_forget",
            "layout",
            "output_sequence",
        ],
        lower_lstm,
    );
    r.op(
        "GRU",
        1,
        &[
            "activation_alpha",
            "activation_beta",
            "activations",
            "clip",
            "direction",
            "hidden_size",
            "layout",
            "linear_before_reset",
            "output_sequence",
        ],
        lower_gru,
    );
    r.op(
        "RNN",
        1,
        &[
            "activation_alpha",
            "activation_beta",
            "activations",
            "clip",
            "direction",
            "hidden_size",
            "layout",
            "output_sequence",
        ],
        lower_rnn,
    );
}

/// Only the default activations run; a model may still spell them out.
fn default_activations(n: &NodeInfo, defaults: &[&str]) -> R<()> {
    match n.attributes.get("activations") {
        None => Ok(()),
        Some(AttrValue::Strings(given)) => {
            let dirs = given.len() / defaults.len().max(1);
            let ok = given.len() == dirs * defaults.len()
                && given
                    .iter()
                    .zip(defaults.iter().cycle())
                    .all(|(g, d)| g.eq_ignore_ascii_case(d));
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "activations {given:?} are not supported (only the defaults {defaults:?})"
                ))
            }
        }
        Some(other) => Err(format!("activations {other:?} are not strings")),
    }
}

fn lower_gru(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    default_activations(n, &["Sigmoid", "Tanh"])?;
    batch_first(cx, n, |cx, n| recurrent(cx, n, 3))
}

fn lower_rnn(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    default_activations(n, &["Tanh"])?;
    batch_first(cx, n, |cx, n| recurrent(cx, n, 1))
}

/// `layout = 1` (batch first: X [B, T, I], initial states [B, D, H], Y [B, T, D, H],
/// final states [B, D, H]) as the time-major op between transposes.
fn batch_first(cx: &mut Ctx, n: &NodeInfo, lower: impl Fn(&mut Ctx, &NodeInfo) -> R<()>) -> R<()> {
    if attr_i(n, "layout", 0) == 0 {
        return lower(cx, n);
    }
    let label = n.label();
    let mut inner = n.clone();
    inner.attributes.remove("layout");
    // X, and the initial states (inputs 5 and 6).
    for (k, perm) in [(0usize, [1usize, 0, 2]), (5, [1, 0, 2]), (6, [1, 0, 2])] {
        if let Some(x) = n.inputs.get(k).filter(|s| !s.is_empty()) {
            let t = format!("{label}::time_major_{k}");
            cx.permute(n, x, &t, &perm)?;
            inner.inputs[k] = t;
        }
    }
    for (k, o) in n.outputs.iter().enumerate() {
        if !o.is_empty() {
            inner.outputs[k] = format!("{label}::time_major_out{k}");
        }
    }
    lower(cx, &inner)?;
    for (k, o) in n.outputs.iter().enumerate() {
        if o.is_empty() {
            continue;
        }
        // Y [T, D, B, H] -> [B, T, D, H]; final states [D, B, H] -> [B, D, H].
        let perm: &[usize] = if k == 0 { &[2, 0, 1, 3] } else { &[1, 0, 2] };
        cx.permute(n, &inner.outputs[k], o, perm)?;
    }
    Ok(())
}

/// Dispatches a recurrent kernel over the sequence in chunks of steps, `params(first,
/// count)` giving each chunk's uniforms; h (and c) pass from chunk to chunk through the
/// kernel's state buffer. A kernel that loops over a whole long sequence in one dispatch
/// goes wrong: Mesa's lavapipe returns zeros from every storage read once an invocation
/// has run some 60 thousand loop iterations (measured: a hidden-256 LSTM broke at step 62),
/// and browsers end dispatches that run for seconds. A chunk holds about
/// `cx.rnn_chunk_work` (16384, a quarter of where lavapipe broke) multiply-adds per thread, `work_per_step` of them each step;
/// a chunk past the bound length runs no workgroup.
fn rnn_chunks(
    cx: &mut Ctx,
    n: &NodeInfo,
    kernel: Kernel,
    bindings: Vec<Binding>,
    t: &Expr,
    workgroups: Expr,
    work_per_step: usize,
    params: impl Fn(Expr, Expr) -> Vec<Expr>,
) {
    let chunk = (cx.rnn_chunk_work / work_per_step.max(1)).max(1);
    let chunks = cx.at_max(t).div_ceil(chunk).max(1);
    for k in 0..chunks {
        let first = (k * chunk) as i64;
        let live = (t.clone() + Expr::Const(-first))
            .max(Expr::Const(0))
            .min(Expr::Const(1));
        let one = Expr::Const(1);
        cx.dispatch_sym(
            n,
            kernel,
            bindings.clone(),
            params(Expr::Const(first), Expr::from(chunk)),
            [workgroups.clone() * live, one.clone(), one],
        );
    }
}

/// GRU (3 gates) and RNN (1): the same inputs (X, W, R, B, sequence_lens, initial_h),
/// outputs (Y, Y_h) and dispatch shape.
fn recurrent(cx: &mut Ctx, n: &NodeInfo, gates: usize) -> R<()> {
    let ins = ins(n);
    let xs = cx.shape(ins[0])?;
    let ws = cx.shape(ins[1])?;
    if xs.len() != 3 || ws.len() != 3 {
        return Err(format!("input not [T, B, I] or W not [D, {gates}H, I]"));
    }
    let dirs = ws[0];
    let hidden = attr_i(n, "hidden_size", (ws[1] / gates) as i64) as usize;
    if hidden == 0 || hidden > 256 || ws[1] != gates * hidden {
        return Err(format!(
            "hidden size {hidden}: W has {} rows, at most 256 units run",
            ws[1]
        ));
    }
    let (t, b, i) = (xs[0], xs[1], xs[2]);
    let direction = attr_s(n, "direction", "forward");
    let expect_dirs = if direction == "bidirectional" { 2 } else { 1 };
    if dirs != expect_dirs {
        return Err(format!(
            "direction {direction} with {dirs} weight direction(s)"
        ));
    }
    let opt = |k: usize| ins.get(k).filter(|s| !s.is_empty()).copied();
    if let Some(l) = opt(4)
        && cx.dt(l)? != DT::I32
    {
        return Err("sequence_lens must be integers".into());
    }
    let y = n
        .outputs
        .first()
        .filter(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("{}::y", n.label()));
    cx.new_tensor(&y, vec![t, dirs, b, hidden], DT::F32)?;
    let state = match n.outputs.get(1).filter(|s| !s.is_empty()) {
        Some(h) => h.clone(),
        None => format!("{}::state", n.label()),
    };
    cx.new_tensor(&state, vec![dirs, b, hidden], DT::F32)?;
    let bind_opt = |ctx: &Ctx, k: usize| opt(k).map(|s| ctx.bind(s)).unwrap_or(Binding::Dummy);
    // GRU and RNN uniforms share every field but GRU's reset mode.
    macro_rules! recurrent_params {
        ($params:ident, $first:expr, $count:expr, { $($extra:tt)* }) => {
            params::$params::<Expr> {
                t: Expr::from(t),
                b: Expr::from(b),
                i: Expr::from(i),
                h: Expr::from(hidden),
                d: Expr::from(dirs),
                has_bias: Expr::from(opt(3).is_some() as usize),
                has_h0: Expr::from(opt(5).is_some() as usize),
                has_seq_lens: Expr::from(opt(4).is_some() as usize),
                reverse: Expr::from((direction == "reverse") as usize),
                clip: attr_f(n, "clip", 0.0),
                first: $first,
                count: $count,
                $($extra)*
                ..Default::default()
            }
            .slots()
        };
    }
    let bindings = vec![
        cx.bind(ins[0]),
        cx.bind(ins[1]),
        cx.bind(ins[2]),
        bind_opt(cx, 3),
        bind_opt(cx, 5),
        bind_opt(cx, 4),
        cx.bind(&y),
        cx.bind(&state),
    ];
    let t_expr = Expr::from(t);
    let groups = Expr::from(dirs * b);
    if gates == 3 {
        let lbr = Expr::from((attr_i(n, "linear_before_reset", 0) != 0) as usize);
        rnn_chunks(
            cx,
            n,
            Kernel::GruF32,
            bindings,
            &t_expr,
            groups,
            3 * (i + 2 * hidden),
            |first, count| {
                recurrent_params!(Gru, first, count, {
                    linear_before_reset: lbr.clone(),
                })
            },
        );
    } else {
        rnn_chunks(
            cx,
            n,
            Kernel::RnnF32,
            bindings,
            &t_expr,
            groups,
            i + hidden,
            |first, count| recurrent_params!(Rnn, first, count, {}),
        );
    }
    Ok(())
}

fn lower_lstm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    batch_first(cx, n, |cx, n| lstm(cx, n, &ins(n)))
}

fn lstm(cx: &mut Ctx, n: &NodeInfo, ins: &[&str]) -> R<()> {
    let xs = cx.sym_shape(ins[0])?;
    let ws = cx.shape(ins[1])?;
    if n.attributes.contains_key("clip")
        || n.attributes.contains_key("activations")
        || attr_i(n, "input_forget", 0) != 0
    {
        return Err("clip, custom activations and input_forget are not supported".into());
    }
    if ins.get(4).is_some_and(|s| !s.is_empty()) || ins.get(7).is_some_and(|s| !s.is_empty()) {
        return Err("sequence_lens and peepholes are not supported".into());
    }
    let dirs = ws[0];
    let hidden = attr_i(n, "hidden_size", (ws[1] / 4) as i64) as usize;
    if hidden > 256 || xs.len() != 3 {
        return Err(format!(
            "hidden size {hidden} over 256 or input not [T, B, I]"
        ));
    }
    // The kernel walks the sequence itself: T and B may hold dims.
    let (t, b, i) = (xs[0].clone(), xs[1].clone(), xs[2].clone());
    let reverse = attr_s(n, "direction", "forward") == "reverse";
    let opt = |k: usize| ins.get(k).filter(|s| !s.is_empty()).copied();
    let name = |k: usize, tag: &str| {
        n.outputs
            .get(k)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("{}::{tag}", n.label()))
    };
    let y = name(0, "y");
    let (dx, hx) = (Expr::from(dirs), Expr::from(hidden));
    cx.new_tensor_sym(
        &y,
        vec![t.clone(), dx.clone(), b.clone(), hx.clone()],
        DT::F32,
    )?;
    let state = format!("{}::state", n.label());
    cx.new_tensor_sym(
        &state,
        vec![Expr::Const(2), dx.clone(), b.clone(), hx.clone()],
        DT::F32,
    )?;
    let bind_opt = |ctx: &Ctx, k: usize| opt(k).map(|s| ctx.bind(s)).unwrap_or(Binding::Dummy);
    let flag = |v: bool| Expr::from(v as usize);
    let bindings = vec![
        cx.bind(ins[0]),
        cx.bind(ins[1]),
        cx.bind(ins[2]),
        bind_opt(cx, 3),
        bind_opt(cx, 5),
        bind_opt(cx, 6),
        cx.bind(&y),
        cx.bind(&state),
    ];
    let one = Expr::Const(1);
    let work = 4 * (cx.at_max(&i) + hidden);
    let [has_bias, has_h0, has_c0] = [3, 5, 6].map(|k| flag(opt(k).is_some()));
    rnn_chunks(
        cx,
        n,
        Kernel::LstmF32,
        bindings,
        &t,
        dx.clone() * b.clone(),
        work,
        |first, count| {
            params::Lstm::<Expr> {
                t: t.clone(),
                b: b.clone(),
                i: i.clone(),
                h: hx.clone(),
                d: dx.clone(),
                has_bias: has_bias.clone(),
                has_h0: has_h0.clone(),
                has_c0: has_c0.clone(),
                reverse: flag(reverse),
                first,
                count,
                ..Default::default()
            }
            .slots()
        },
    );
    for k in [1usize, 2] {
        if let Some(o) = n.outputs.get(k).filter(|s| !s.is_empty()) {
            let o = o.clone();
            cx.new_tensor_sym(&o, vec![dx.clone(), b.clone(), hx.clone()], DT::F32)?;
            let len = dx.clone() * b.clone() * hx.clone();
            let off = Expr::Const(k as i64 - 1) * len.clone();
            cx.copy_sym(
                n,
                &state,
                &o,
                &[len],
                off,
                &[one.clone()],
                Expr::Const(0),
                &[one.clone()],
            )?;
        }
    }
    Ok(())
}

/// A per-direction parameter ([D] or [D, 4H]) viewed against a [D, rows, 4H] tensor.
fn per_direction(z: &[usize]) -> Vec<usize> {
    match z {
        [d] => vec![*d, 1, 1],
        [d, cols] => vec![*d, 1, *cols],
        other => other.to_vec(),
    }
}

fn lower_dynamic_quantize_lstm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 12 {
        return Err("DynamicQuantizeLSTM takes 12 inputs".into());
    }
    if n.attributes.contains_key("clip")
        || n.attributes.contains_key("activations")
        || attr_i(n, "input_forget", 0) != 0
    {
        return Err("clip, custom activations and input_forget are not supported".into());
    }
    let opt = |k: usize| i.get(k).filter(|s| !s.is_empty()).copied();
    if opt(4).is_some() || opt(7).is_some() {
        return Err("sequence_lens and peepholes are not supported".into());
    }
    let (x, w, r) = (i[0], i[1], i[2]);
    let xs = cx.sym_shape(x)?;
    let ws = cx.shape(w)?;
    if xs.len() != 3 || ws.len() != 3 || cx.dt(x)? != DT::F32 {
        return Err("X must be float [T, B, I] and W [D, I, 4H]".into());
    }
    // The kernel walks the sequence: T may hold dims.
    let t = xs[0].clone();
    let (b, width) = match (xs[1].as_const(), xs[2].as_const()) {
        (Some(b), Some(w)) => (b as usize, w as usize),
        _ => return Err("batch and input width must be known at plan time".into()),
    };
    if b != 1 {
        return Err(format!(
            "batch {b}: ONNX Runtime quantizes h over the whole batch; batch 1 is supported"
        ));
    }
    let dirs = ws[0];
    let hidden = attr_i(n, "hidden_size", (ws[2] / 4) as i64) as usize;
    if hidden > 256 || ws[1] != width || ws[2] != 4 * hidden {
        return Err(format!(
            "W {ws:?} does not fit input width {width} and hidden size {hidden} (at most 256)"
        ));
    }
    let label = n.label();
    // X x W for the whole sequence, X quantized as DynamicQuantizeLinear does.
    let x2 = format!("{label}::x2");
    cx.view_sym(&x2, x, vec![t.clone(), Expr::from(width)])?;
    let x_scale = format!("{label}::x_scale");
    let x_zp = format!("{label}::x_zero_point");
    cx.new_tensor(&x_scale, vec![], DT::F32)?;
    cx.new_tensor(&x_zp, vec![], DT::I32)?;
    let one = Expr::Const(1);
    cx.dispatch_sym(
        n,
        Kernel::DynamicQuantizeParamsU8,
        vec![cx.bind(&x2), cx.bind(&x_scale), cx.bind(&x_zp)],
        params::DynamicQuantize::<Expr> {
            n: t.clone() * Expr::from(width),
        }
        .slots(),
        [one.clone(), one.clone(), one.clone()],
    );
    let xq = format!("{label}::xq");
    cx.elementwise(
        n,
        Kernel::EwQuantizeF32,
        &[&x2, &x_scale, &x_zp],
        &xq,
        DT::I32,
        0.0,
        255.0,
    )?;
    let xc = super::quant::centred(
        cx,
        n,
        &xq,
        Some(&x_zp),
        |z| z.to_vec(),
        &format!("{label}::xc"),
    )?;
    let acc = format!("{label}::xw_int");
    super::quant::times_weight(cx, n, &xc, (w, opt(9)), per_direction, &acc)?;
    let w_scale = opt(8).ok_or("W_scale is required")?;
    let wsv = format!("{label}::w_scale");
    let wss = cx.shape(w_scale)?;
    cx.view(&wsv, w_scale, per_direction(&wss))?;
    let mult = format!("{label}::xw_multiplier");
    cx.elementwise(
        n,
        Kernel::EwMulF32,
        &[&x_scale, &wsv],
        &mult,
        DT::F32,
        0.0,
        0.0,
    )?;
    let zero = format!("{label}::zero");
    cx.add_const(&zero, crate::tensor::HostTensor::i64(vec![], vec![0]));
    let xw = format!("{label}::xw");
    cx.elementwise(
        n,
        Kernel::EwDequantizeI32,
        &[&acc, &mult, &zero],
        &xw,
        DT::F32,
        0.0,
        0.0,
    )?;
    // R stays packed as stored; its zero point and scale expanded to one per column.
    let signed = match cx.declared(r) {
        Some(m2w_model::DType::I8) => true,
        Some(m2w_model::DType::U8) => false,
        _ => return Err("R must be an int8 or uint8 constant".into()),
    };
    let rq = cx.konst(r).ok_or("R must be a constant")?;
    let r_packed = format!("{r}::packed");
    if !cx.plan.constants.contains_key(&r_packed) {
        let dt = if signed { DT::I8 } else { DT::U8 };
        cx.add_const(
            &r_packed,
            crate::tensor::HostTensor::packed(dt, rq.shape.clone(), &rq.as_i64()),
        );
    }
    let per_column = [dirs, 1, 4 * hidden];
    let r_zero = match opt(11) {
        Some(z) => {
            let zv = cx.konst(z).ok_or("R_zero_point must be a constant")?;
            super::host::expand(&zv.reshaped(per_direction(&zv.shape)), &per_column)?.as_i64()
        }
        None => vec![0; dirs * 4 * hidden],
    };
    let r_scale = opt(10).ok_or("R_scale is required")?;
    let rs = cx.konst(r_scale).ok_or("R_scale must be a constant")?;
    let rs = super::host::expand(&rs.reshaped(per_direction(&rs.shape)), &per_column)?;
    // R's zero points (small integers, exact as f32) and scales in one buffer, [D, 2, 4H]:
    // the kernel then binds 8 storage buffers, WebGPU's default limit per stage.
    let columns = 4 * hidden;
    let rs = rs.as_f64();
    let r_quant: Vec<f32> = (0..dirs)
        .flat_map(|d| {
            let zeros = r_zero[d * columns..(d + 1) * columns]
                .iter()
                .map(|&z| z as f32);
            let scales = rs[d * columns..(d + 1) * columns].iter().map(|&v| v as f32);
            zeros.chain(scales).collect::<Vec<f32>>()
        })
        .collect();
    let rq_name = format!("{label}::r_quant");
    cx.add_const(
        &rq_name,
        crate::tensor::HostTensor::f32(vec![dirs, 2, columns], r_quant),
    );
    let name = |k: usize, tag: &str| {
        n.outputs
            .get(k)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("{label}::{tag}"))
    };
    let y = name(0, "y");
    let (dx, hx) = (Expr::from(dirs), Expr::from(hidden));
    cx.new_tensor_sym(
        &y,
        vec![t.clone(), dx.clone(), one.clone(), hx.clone()],
        DT::F32,
    )?;
    let state = format!("{label}::state");
    cx.new_tensor(&state, vec![2, dirs, 1, hidden], DT::F32)?;
    let bind_opt = |ctx: &Ctx, k: usize| opt(k).map(|s| ctx.bind(s)).unwrap_or(Binding::Dummy);
    let flag = |v: bool| Expr::from(v as usize);
    let bindings = vec![
        cx.bind(&xw),
        cx.bind(&r_packed),
        cx.bind(&rq_name),
        bind_opt(cx, 3),
        bind_opt(cx, 5),
        bind_opt(cx, 6),
        cx.bind(&y),
        cx.bind(&state),
    ];
    let kernel = if signed {
        Kernel::LstmDynqI8F32
    } else {
        Kernel::LstmDynqU8F32
    };
    let reverse = flag(attr_s(n, "direction", "forward") == "reverse");
    let [has_bias, has_h0, has_c0] = [3, 5, 6].map(|k| flag(opt(k).is_some()));
    rnn_chunks(
        cx,
        n,
        kernel,
        bindings,
        &t,
        dx.clone(),
        4 * hidden,
        |first, count| {
            params::LstmDynq::<Expr> {
                t: t.clone(),
                h: hx.clone(),
                d: dx.clone(),
                has_bias: has_bias.clone(),
                has_h0: has_h0.clone(),
                has_c0: has_c0.clone(),
                reverse: reverse.clone(),
                first,
                count,
                ..Default::default()
            }
            .slots()
        },
    );
    for k in [1usize, 2] {
        if let Some(o) = n.outputs.get(k).filter(|s| !s.is_empty()) {
            let o = o.clone();
            cx.new_tensor(&o, vec![dirs, 1, hidden], DT::F32)?;
            let len = dirs * hidden;
            cx.copy(n, &state, &o, &[len], ((k - 1) * len) as i64, &[1], 0, &[1])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
