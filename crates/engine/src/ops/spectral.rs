//! Spectral ops: STFT by direct DFT (`stft_f32`, a thread per output bin). The frame step
//! and length decide the output shape, so they are plan-time constants.

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_i, ins, out0};
use crate::plan::{Binding, groups_1d_sym};
use crate::sym::Expr;
use crate::tensor::DT;

pub(super) fn register(r: &mut Registry) {
    r.op("STFT", 17, &["onesided"], lower_stft)
        .shape_inputs(&[1, 3]);
}

fn lower_stft(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    let out = out0(n);
    let signal = i[0];
    // Batch and length may hold dims; the channel count is 1 or 2.
    // A [batch, length] signal (ONNX Runtime takes it) is real: [batch, length, 1].
    let mut ss = cx.sym_shape(signal)?;
    if ss.len() == 2 {
        ss.push(Expr::Const(1));
    }
    let channels = ss.get(2).and_then(Expr::as_const).unwrap_or(0) as usize;
    if cx.dt(signal)? != DT::F32 || ss.len() != 3 || !(channels == 1 || channels == 2) {
        return Err("the signal must be float [batch, length, 1 or 2] or [batch, length]".into());
    }
    let scalar = |v: Option<Vec<i64>>, what: &str| -> R<Option<usize>> {
        match v.as_deref() {
            None => Ok(None),
            Some([x]) if *x > 0 => Ok(Some(*x as usize)),
            Some(other) => Err(format!("{what} {other:?} must be one positive value")),
        }
    };
    let step = scalar(cx.const_ints(n, 1)?, "frame_step")?.ok_or("frame_step is required")?;
    let window = i.get(2).filter(|w| !w.is_empty()).copied();
    let window_len = match window {
        Some(w) => Some(cx.shape(w)?.iter().product::<usize>()),
        None => None,
    };
    let frame_length = scalar(cx.const_ints(n, 3)?, "frame_length")?;
    let len = match (frame_length, window_len) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!("frame_length {a} differs from the window's {b}"));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err("neither frame_length nor a window is given".into()),
    };
    if ss[1].as_const().is_some_and(|l| (l as usize) < len) {
        return Err(format!(
            "the signal ({}) is shorter than a frame ({len})",
            ss[1]
        ));
    }
    let onesided = attr_i(n, "onesided", 1) != 0;
    if onesided && channels == 2 {
        return Err("a one-sided STFT of a complex signal is not defined".into());
    }
    let bins = if onesided { len / 2 + 1 } else { len };
    // A signal shorter than a frame (possible only for a symbolic length) has no frame.
    let frames = ((ss[1].clone() - Expr::from(len)).floor_div(step as i64) + Expr::Const(1))
        .max(Expr::Const(0));
    let (c, b) = (|v: usize| Expr::from(v), Expr::from(bins));
    cx.new_tensor_sym(
        out,
        vec![ss[0].clone(), frames.clone(), b.clone(), c(2)],
        DT::F32,
    )?;
    let total = ss[0].clone() * frames.clone() * b.clone();
    let p = params::Stft::<Expr> {
        batch: ss[0].clone(),
        len: ss[1].clone(),
        channels: c(channels),
        n: c(len),
        step: c(step),
        frames,
        bins: b,
        has_window: c(window.is_some() as usize),
    }
    .slots();
    let w = window.map_or(Binding::Dummy, |w| cx.bind(w));
    if total != Expr::Const(0) {
        let groups = groups_1d_sym(&total, 64);
        cx.dispatch_sym(
            n,
            Kernel::StftF32,
            vec![cx.bind(signal), w, cx.bind(out)],
            p,
            groups,
        );
    }
    Ok(())
}
