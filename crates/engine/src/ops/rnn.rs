//! Recurrent ops, forward / reverse / bidirectional, with bias and initial state: a
//! workgroup per direction and batch row walks the time steps, a thread per hidden unit
//! (hidden size up to 256). LSTM (`lstm_f32`; Y_h and Y_c are copies out of the state
//! buffer) GRU (`gru_f32`: both linear_before_reset modes, sequence lengths, clip) and RNN
//! (`rnn_f32`, tanh).

use m2w_kernels::{Kernel, params};
use m2w_model::{AttrValue, NodeInfo};

use super::Registry;
use super::ctx::{Ctx, R, attr_f, attr_i, attr_s, ins};
use crate::plan::Binding;
use crate::tensor::DT;

pub(super) fn register(r: &mut Registry) {
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
    recurrent(cx, n, 3)
}

fn lower_rnn(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    default_activations(n, &["Tanh"])?;
    recurrent(cx, n, 1)
}

/// GRU (3 gates) and RNN (1): the same inputs (X, W, R, B, sequence_lens, initial_h),
/// outputs (Y, Y_h) and dispatch shape.
fn recurrent(cx: &mut Ctx, n: &NodeInfo, gates: usize) -> R<()> {
    let ins = ins(n);
    let xs = cx.shape(ins[0])?;
    let ws = cx.shape(ins[1])?;
    if attr_i(n, "layout", 0) != 0 {
        return Err("layout 1 (batch first) is not supported".into());
    }
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
        ($params:ident { $($extra:tt)* }) => {
            params::$params {
                t: t as u32,
                b: b as u32,
                i: i as u32,
                h: hidden as u32,
                d: dirs as u32,
                has_bias: opt(3).is_some() as u32,
                has_h0: opt(5).is_some() as u32,
                has_seq_lens: opt(4).is_some() as u32,
                reverse: (direction == "reverse") as u32,
                clip: attr_f(n, "clip", 0.0),
                $($extra)*
                ..Default::default()
            }
            .words()
        };
    }
    let (kernel, p) = if gates == 3 {
        let lbr = (attr_i(n, "linear_before_reset", 0) != 0) as u32;
        (
            Kernel::GruF32,
            recurrent_params!(Gru {
                linear_before_reset: lbr,
            }),
        )
    } else {
        (Kernel::RnnF32, recurrent_params!(Rnn {}))
    };
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
    cx.dispatch(n, kernel, bindings, p, [(dirs * b) as u32, 1, 1]);
    Ok(())
}

fn lower_lstm(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    lstm(cx, n, &ins)
}

fn lstm(cx: &mut Ctx, n: &NodeInfo, ins: &[&str]) -> R<()> {
    let xs = cx.shape(ins[0])?;
    let ws = cx.shape(ins[1])?;
    if attr_i(n, "layout", 0) != 0
        || n.attributes.contains_key("clip")
        || n.attributes.contains_key("activations")
        || attr_i(n, "input_forget", 0) != 0
    {
        return Err("layout 1, clip, custom activations and input_forget are not supported".into());
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
    let (t, b, i) = (xs[0], xs[1], xs[2]);
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
    cx.new_tensor(&y, vec![t, dirs, b, hidden], DT::F32)?;
    let state = format!("{}::state", n.label());
    cx.new_tensor(&state, vec![2, dirs, b, hidden], DT::F32)?;
    let bind_opt = |ctx: &Ctx, k: usize| opt(k).map(|s| ctx.bind(s)).unwrap_or(Binding::Dummy);
    let p = params::Lstm {
        t: t as u32,
        b: b as u32,
        i: i as u32,
        h: hidden as u32,
        d: dirs as u32,
        has_bias: opt(3).is_some() as u32,
        has_h0: opt(5).is_some() as u32,
        has_c0: opt(6).is_some() as u32,
        reverse: reverse as u32,
        ..Default::default()
    }
    .words();
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
    cx.dispatch(n, Kernel::LstmF32, bindings, p, [(dirs * b) as u32, 1, 1]);
    for (k, tag) in [(1usize, "h"), (2, "c")] {
        if let Some(o) = n.outputs.get(k).filter(|s| !s.is_empty()) {
            let o = o.clone();
            cx.new_tensor(&o, vec![dirs, b, hidden], DT::F32)?;
            let len = dirs * b * hidden;
            let _ = tag;
            cx.copy(n, &state, &o, &[len], ((k - 1) * len) as i64, &[1], 0, &[1])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
