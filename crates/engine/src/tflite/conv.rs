//! Layout-bound TFLite ops: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, the pools, RESIZE_*,
//! DEPTH_TO_SPACE / SPACE_TO_DEPTH. Their inputs become NCHW, their weights are transposed once.

use m2w_model::{AttrValue, NodeInfo};

use super::*;

/// CONV_2D (weights `[O, KH, KW, I]`) and DEPTHWISE_CONV_2D (weights `[1, KH, KW, C*M]`).
pub(super) fn conv(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let (x, w) = (input(n, 0)?, input(n, 1)?);
    let out = out0(n)?;
    let xs = cx.shape(x)?;
    let ws = cx.shape(w)?;
    if xs.len() != 4 || ws.len() != 4 {
        return Err(format!("input {xs:?} and weights {ws:?} must be rank 4"));
    }
    let depthwise = n.op_type == "DEPTHWISE_CONV_2D";
    let (perm, group) = if depthwise {
        ([3, 0, 1, 2], xs[3])
    } else {
        if ws[3] <= 0 || xs[3] % ws[3] != 0 {
            return Err(format!(
                "input channels {} are not a multiple of the filter's {}",
                xs[3], ws[3]
            ));
        }
        ([0, 3, 1, 2], xs[3] / ws[3])
    };
    let xin = cx.nchw(x)?;
    let wt = cx.filter(w, if depthwise { "c1hw" } else { "oihw" }, &perm);
    let mut inputs = vec![xin, wt];
    if let Ok(b) = input(n, 2) {
        inputs.push(b.to_string());
    }
    let attrs = vec![
        ("auto_pad", padding_mode(n)?),
        (
            "strides",
            ints(&[attr_i(n, "stride_h", 1), attr_i(n, "stride_w", 1)]),
        ),
        (
            "dilations",
            ints(&[
                attr_i(n, "dilation_h_factor", 1),
                attr_i(n, "dilation_w_factor", 1),
            ]),
        ),
        ("group", AttrValue::Int(group)),
    ];
    cx.emit(n, "Conv", inputs, attrs, out, true)
}

/// TRANSPOSE_CONV (output shape, weights `[O, KH, KW, I]`, input, bias): ConvTranspose with
/// the pads LiteRT computes from the output shape (SAME: those of the convolution it
/// inverts), the rows past the kernels' reach as output padding.
pub(super) fn transpose_conv(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let (w, x) = (input(n, 1)?, input(n, 2)?);
    let out = out0(n)?;
    let xs = cx.shape(x)?;
    let ws = cx.shape(w)?;
    let os = cx.shape(out)?;
    if xs.len() != 4 || ws.len() != 4 || os.len() != 4 || ws[3] != xs[3] {
        return Err(format!(
            "input {xs:?}, weights {ws:?} and output {os:?} must be rank 4, the weights [O, H, W, I]"
        ));
    }
    let same = match attr_s(n, "padding") {
        "SAME" => true,
        "VALID" => false,
        other => return Err(format!("padding '{other}' is not supported")),
    };
    let strides = [attr_i(n, "stride_h", 1), attr_i(n, "stride_w", 1)];
    if strides.iter().any(|&s| s < 1) {
        return Err(format!("strides {strides:?}"));
    }
    let (mut lo, mut hi, mut extra) = ([0i64; 2], [0i64; 2], [0i64; 2]);
    for d in 0..2 {
        let (size, k, s, i) = (os[1 + d], ws[1 + d], strides[d], xs[1 + d]);
        if same {
            let conv_out = (size + s - 1) / s;
            lo[d] = ((conv_out - 1) * s + k - size).max(0) / 2;
        }
        let rest = (i - 1) * s + k - lo[d] - size;
        if rest >= 0 {
            hi[d] = rest;
        } else {
            extra[d] = -rest;
        }
    }
    if (0..2).any(|d| extra[d] >= strides[d]) {
        return Err(format!(
            "output {os:?} is past what the kernels reach from input {xs:?} by a stride or more"
        ));
    }
    let xin = cx.nchw(x)?;
    let wt = cx.filter(w, "iohw", &[3, 0, 1, 2]);
    let mut inputs = vec![xin, wt];
    if let Ok(b) = input(n, 3) {
        inputs.push(b.to_string());
    }
    let attrs = vec![
        ("strides", ints(&strides)),
        ("pads", ints(&[lo[0], lo[1], hi[0], hi[1]])),
        ("output_padding", ints(&extra)),
    ];
    cx.emit(n, "ConvTranspose", inputs, attrs, out, true)
}

pub(super) fn pool(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nchw(input(n, 0)?)?;
    let out = out0(n)?;
    let mut attrs = vec![
        ("auto_pad", padding_mode(n)?),
        (
            "strides",
            ints(&[attr_i(n, "stride_h", 1), attr_i(n, "stride_w", 1)]),
        ),
        (
            "kernel_shape",
            ints(&[attr_i(n, "filter_height", 1), attr_i(n, "filter_width", 1)]),
        ),
    ];
    let op = if n.op_type == "MAX_POOL_2D" {
        "MaxPool"
    } else {
        // TFLite averages over the window's cells inside the input.
        attrs.push(("count_include_pad", AttrValue::Int(0)));
        "AveragePool"
    };
    cx.emit(n, op, vec![x], attrs, out, true)
}

/// RESIZE_BILINEAR and RESIZE_NEAREST_NEIGHBOR: TFLite's coordinate rules as ONNX's
/// coordinate transformation modes (align_corners; half_pixel_centers = half_pixel, whose
/// nearest index rounds half up as TFLite's floor((x + 0.5) * scale) does; else
/// asymmetric, nearest flooring).
pub(super) fn resize(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = input(n, 0)?;
    let out = out0(n)?;
    let os = cx.shape(out)?;
    if os.len() != 4 {
        return Err(format!("output shape {os:?} is not rank 4"));
    }
    let xin = cx.nchw(x)?;
    let sizes = cx.derived_i64(format!("{out}#sizes"), &[os[0], os[3], os[1], os[2]]);
    let align = attr_i(n, "align_corners", 0) != 0;
    let half = attr_i(n, "half_pixel_centers", 0) != 0;
    let nearest = n.op_type == "RESIZE_NEAREST_NEIGHBOR";
    let coord = match (align, half) {
        (true, true) => return Err("align_corners and half_pixel_centers both set".into()),
        (true, false) => "align_corners",
        (false, true) => "half_pixel",
        (false, false) => "asymmetric",
    };
    let mut attrs = vec![
        (
            "mode",
            AttrValue::String(if nearest { "nearest" } else { "linear" }.into()),
        ),
        (
            "coordinate_transformation_mode",
            AttrValue::String(coord.into()),
        ),
    ];
    if nearest {
        attrs.push((
            "nearest_mode",
            AttrValue::String(
                if align || half {
                    "round_prefer_ceil"
                } else {
                    "floor"
                }
                .into(),
            ),
        ));
    }
    cx.emit(
        n,
        "Resize",
        vec![xin, String::new(), String::new(), sizes],
        attrs,
        out,
        true,
    )
}

/// DEPTH_TO_SPACE / SPACE_TO_DEPTH: TFLite's NHWC channel order is ONNX's DCR on NCHW.
pub(super) fn depth_space(cx: &mut Lowering, n: &NodeInfo) -> Result<(), String> {
    let x = cx.nchw(input(n, 0)?)?;
    let out = out0(n)?;
    let mut attrs = vec![("blocksize", AttrValue::Int(attr_i(n, "block_size", 1)))];
    let op = if n.op_type == "DEPTH_TO_SPACE" {
        attrs.push(("mode", AttrValue::String("DCR".into())));
        "DepthToSpace"
    } else {
        "SpaceToDepth"
    };
    cx.emit(n, op, vec![x], attrs, out, true)
}

pub(super) fn padding_mode(n: &NodeInfo) -> Result<AttrValue, String> {
    Ok(AttrValue::String(
        match attr_s(n, "padding") {
            "SAME" => "SAME_UPPER",
            "VALID" => "VALID",
            other => return Err(format!("padding '{other}' is not supported")),
        }
        .into(),
    ))
}
