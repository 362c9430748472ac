//! LSTM, forward / reverse / bidirectional, with bias and initial state
//! (`lstm_f32`: a workgroup per direction and batch row walks the time steps; hidden
//! size up to 256). Y_h and Y_c are copies out of the state buffer.

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_i, attr_s, ins};
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
