//! The crop step on the GPU: a plan of one `warp_perspective_f32` dispatch, from an RGBA8
//! frame (one word a pixel) and a 3x3 matrix (output pixel -> frame point) to an NHWC f32
//! tensor. The same plan runs natively and in the package, so both crop alike.

use m2w_engine::plan::{Binding, Dispatch, TensorDesc, groups_1d};
use m2w_engine::{DT, Kernel, Plan};

/// What a sample outside the frame reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Border {
    /// 0 (OpenCV's BORDER_CONSTANT with 0, MediaPipe's BORDER_ZERO).
    Zero,
    /// The nearest edge pixel (BORDER_REPLICATE).
    Replicate,
}

/// The names of the plan's tensors.
pub const IMAGE: &str = "image";
pub const MATRIX: &str = "matrix";
pub const TENSOR: &str = "tensor";

/// The crop of an `in_w` x `in_h` frame into a `[1, out_h, out_w, channels]` tensor whose
/// values are `v * scale + offset` (v in 0..255); `eight_bit`: sampled as OpenCV samples
/// an 8-bit image (points to 1/32 pixel, values rounded to integers).
#[allow(clippy::too_many_arguments)]
pub fn plan(
    in_w: u32,
    in_h: u32,
    out_w: u32,
    out_h: u32,
    channels: u32,
    border: Border,
    scale: f32,
    offset: f32,
    eight_bit: bool,
) -> Plan {
    let fixed = |s: &[usize]| m2w_engine::sym::fixed(s);
    let mut plan = Plan::default();
    plan.tensors.insert(
        IMAGE.into(),
        TensorDesc::row_major(
            fixed(&[in_h as usize, in_w as usize]),
            DT::I32,
            IMAGE.into(),
        ),
    );
    plan.tensors.insert(
        MATRIX.into(),
        TensorDesc::row_major(fixed(&[9]), DT::F32, MATRIX.into()),
    );
    let shape = [1, out_h as usize, out_w as usize, channels as usize];
    plan.tensors.insert(
        TENSOR.into(),
        TensorDesc::row_major(fixed(&shape), DT::F32, TENSOR.into()),
    );
    plan.inputs = vec![IMAGE.into(), MATRIX.into()];
    plan.outputs = vec![TENSOR.into()];
    let total: usize = shape.iter().product();
    plan.dispatches.push(Dispatch {
        node: "warp".into(),
        op_type: "WarpPerspective".into(),
        kernel: Kernel::WarpPerspectiveF32,
        bindings: vec![
            Binding::Tensor(IMAGE.into()),
            Binding::Tensor(MATRIX.into()),
            Binding::Tensor(TENSOR.into()),
        ],
        params: m2w_kernels::params::WarpPerspective {
            in_h,
            in_w,
            channels,
            out_h,
            out_w,
            border: match border {
                Border::Zero => 0,
                Border::Replicate => 1,
            },
            scale,
            offset,
            eight_bit: eight_bit as u32,
            ..Default::default()
        }
        .words(),
        workgroups: groups_1d(total, 256),
        sym_params: vec![],
        sym_workgroups: None,
    });
    plan.assign_buffers(true);
    plan
}

/// RGBA bytes (row-major, 4 a pixel) as the plan's image words, R in the low byte.
pub fn rgba_words(rgba: &[u8]) -> Vec<i64> {
    rgba.chunks_exact(4)
        .map(|p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as i32 as i64)
        .collect()
}
