//! Spectral ops: STFT by direct DFT (`stft_f32`, a thread per output bin). The frame step
//! and length decide the output shape, so they are plan-time constants.

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, R, attr_i, ins, out0};
use crate::plan::{Binding, groups_1d};
use crate::tensor::DT;

pub(super) fn register(r: &mut Registry) {
    r.op("STFT", 17, &["onesided"], lower_stft)
        .shape_inputs(&[1, 3]);
}

fn lower_stft(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    let out = out0(n);
    let signal = i[0];
    let ss = cx.shape(signal)?;
    if cx.dt(signal)? != DT::F32 || ss.len() != 3 || !(ss[2] == 1 || ss[2] == 2) {
        return Err("the signal must be float [batch, length, 1 or 2]".into());
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
    if ss[1] < len {
        return Err(format!(
            "the signal ({}) is shorter than a frame ({len})",
            ss[1]
        ));
    }
    let onesided = attr_i(n, "onesided", 1) != 0;
    if onesided && ss[2] == 2 {
        return Err("a one-sided STFT of a complex signal is not defined".into());
    }
    let bins = if onesided { len / 2 + 1 } else { len };
    let frames = (ss[1] - len) / step + 1;
    cx.new_tensor(out, vec![ss[0], frames, bins, 2], DT::F32)?;
    let total = ss[0] * frames * bins;
    let p = params::Stft {
        batch: ss[0] as u32,
        len: ss[1] as u32,
        channels: ss[2] as u32,
        n: len as u32,
        step: step as u32,
        frames: frames as u32,
        bins: bins as u32,
        has_window: window.is_some() as u32,
    }
    .words();
    let w = window.map_or(Binding::Dummy, |w| cx.bind(w));
    if total > 0 {
        cx.dispatch(
            n,
            Kernel::StftF32,
            vec![cx.bind(signal), w, cx.bind(out)],
            p,
            groups_1d(total, 64),
        );
    }
    Ok(())
}
