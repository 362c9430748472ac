//! Weights kept packed as the model stores them and dequantized in registers: 8-bit
//! weights folded through Cast/Mul or DequantizeLinear (read by MatMul and Gather), and the
//! com.microsoft blocked formats MatMulNBits and GatherBlockQuantized.

use m2w_kernels::{Kernel, params};
use m2w_model::{DType, NodeInfo};

use super::opt;
use crate::ops::ctx::{Ctx, R, attr_i, ins, out0};
use crate::sym::{self, Expr};
use crate::tensor::{DT, HostTensor, numel};

/// A constant folded from 8-bit values (see `Ctx::dequantized`) as its packed bytes
/// (`name::packed`, uploaded instead of the f32) with its scale and zero point as one f32
/// per index of `axis`, the axis they may vary along (1: per column, for MatMul's B; 0:
/// per row of an embedding, or per output channel of a conv weight). None when the constant has no such origin, or its
/// parameters vary along the other axis too. Returns (packed, scale, zero point, signed).
pub(in crate::ops) fn packed_8bit(
    cx: &mut Ctx,
    name: &str,
    axis: usize,
) -> Option<(String, String, String, bool)> {
    packed_8bit_with(cx, name, axis, Share::Nothing).map(|(q, s, z, signed, _)| (q, s, z, signed))
}

/// Which of a packed weight's parameters a kernel can read as one value when it is the
/// same for every index.
#[derive(Clone, Copy, PartialEq)]
pub(in crate::ops) enum Share {
    Nothing,
    /// The zero point alone (`gather_*_rows_f32`: per-row scales stay).
    ZeroPoint,
    /// Scale and zero point together (`matmul_*8_f32`: a per-tensor quantization).
    Both,
}

/// [`packed_8bit`]; parameters the kernel can `share` that are the same for every index
/// are kept as one value (the last element of the result is then false: not per index).
pub(in crate::ops) fn packed_8bit_with(
    cx: &mut Ctx,
    name: &str,
    axis: usize,
    share: Share,
) -> Option<(String, String, String, bool, bool)> {
    let d = cx.dequantized.get(name)?.clone();
    let q = cx.konst(&d.q)?;
    let rank = q.shape.len();
    if axis >= rank {
        return None;
    }
    let len = q.shape[axis];
    let along = |t: &Option<String>, default: f32| -> Option<Vec<f32>> {
        let Some(t) = t else {
            return Some(vec![default; len]);
        };
        let v = cx.konst(t)?;
        let mut shape = v.shape.clone();
        while shape.len() < rank {
            shape.insert(0, 1);
        }
        let only_along_axis = shape.len() == rank
            && (0..rank).all(|k| k == axis || shape[k] == 1)
            && (shape[axis] == 1 || shape[axis] == len);
        if !only_along_axis {
            return None;
        }
        let vals: Vec<f32> = v.as_f64().iter().map(|&x| x as f32).collect();
        Some(if vals.len() == 1 {
            vec![vals[0]; len]
        } else {
            vals
        })
    };
    let scale = along(&d.scale, 1.0)?;
    let zero_point = along(&d.zero_point, 0.0)?;
    let packed = format!("{}::packed", d.q);
    if !cx.plan.constants.contains_key(&packed) {
        let dt = if d.signed { DT::I8 } else { DT::U8 };
        cx.add_const(
            &packed,
            HostTensor::packed(dt, q.shape.clone(), &q.as_i64()),
        );
    }
    let (sname, zname) = (
        format!("{name}::scale{axis}"),
        format!("{name}::zero_point{axis}"),
    );
    let uniform = |v: &[f32]| v.iter().all(|&x| x.to_bits() == v[0].to_bits());
    let (zp_one, scale_one) = match share {
        Share::Nothing => (false, false),
        Share::ZeroPoint => (uniform(&zero_point), false),
        Share::Both => {
            let both = uniform(&zero_point) && uniform(&scale);
            (both, both)
        }
    };
    let one_or_all = |v: Vec<f32>, one: bool| {
        if one {
            HostTensor::f32(vec![1], vec![v[0]])
        } else {
            HostTensor::f32(vec![len], v)
        }
    };
    // Names say which form: a shared value and a table never collide.
    let (sname, zname) = (
        if scale_one {
            format!("{sname}::one")
        } else {
            sname
        },
        if zp_one {
            format!("{zname}::one")
        } else {
            zname
        },
    );
    cx.add_const(&sname, one_or_all(scale, scale_one));
    cx.add_const(&zname, one_or_all(zero_point, zp_one));
    Some((packed, sname, zname, d.signed, !zp_one))
}

/// com.microsoft MatMulNBits: `Y = A x dequantize(B)^T (+ bias)`, B [N, blocks, block *
/// bits / 8] bytes, scales and zero points per (n, block); zero points absent mean
/// 2^(bits-1), present ones are packed like B (uint8) and unpacked here to f32.
pub(super) fn lower_matmul_nbits(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    let out = out0(n);
    if i.len() < 3 {
        return Err("MatMulNBits takes at least 3 inputs".into());
    }
    let (a, b, scales) = (i[0], i[1], i[2]);
    let k = usize::try_from(attr_i(n, "K", 0)).map_err(|_| "K must be positive")?;
    let nn = usize::try_from(attr_i(n, "N", 0)).map_err(|_| "N must be positive")?;
    let bits = attr_i(n, "bits", 4);
    let block = usize::try_from(attr_i(n, "block_size", 0)).unwrap_or(0);
    let kernel = match bits {
        4 => Kernel::MatmulNbits4F32,
        8 => Kernel::MatmulNbits8F32,
        _ => return Err(format!("bits = {bits} is not supported (4 and 8 are)")),
    };
    if block < 16 || !block.is_power_of_two() {
        return Err(format!(
            "block_size {block} is not supported (powers of two from 16 are)"
        ));
    }
    if opt(n, 4).is_some() {
        return Err("g_idx (act-order) is not supported".into());
    }
    if cx.dt(a)? != DT::F32 || cx.dt(scales)? != DT::F32 {
        return Err("only float A and scales".into());
    }
    let sa = cx.sym_shape(a)?;
    if sa.last().and_then(|e| e.as_const()) != Some(k as i64) {
        return Err(format!("A {} does not end in K = {k}", sym::show(&sa)));
    }
    let blocks = k.div_ceil(block);
    let bits = bits as usize;
    let row_bytes = blocks * block * bits / 8;
    let q = cx
        .konst(b)
        .ok_or("the quantized weight B must be a constant")?;
    if q.len() != nn * row_bytes {
        return Err(format!(
            "B {:?} does not hold N x blocks x block * bits / 8 = {nn} x {blocks} x {} bytes",
            q.shape,
            block * bits / 8
        ));
    }
    if numel(&cx.shape(scales)?) != nn * blocks {
        return Err(format!(
            "scales must hold N x blocks = {nn} x {blocks} values"
        ));
    }
    // Shared by every node that reads this weight.
    let qname = format!("{b}::packed");
    if !cx.plan.constants.contains_key(&qname) {
        cx.add_const(
            &qname,
            HostTensor::packed(DT::U8, vec![nn * row_bytes], &q.as_i64()),
        );
    }
    // Zero points stay as the model packs them (bits wide, whole bytes per row).
    let zrow = (blocks * bits).div_ceil(8);
    let zero_points = match opt(n, 3) {
        None => None,
        Some(z) if cx.dt(z)? == DT::I32 => {
            let packed = cx.konst(z).ok_or("zero points must be constants")?;
            if packed.len() != nn * zrow {
                return Err(format!(
                    "zero points hold {} bytes, expected N x {zrow}",
                    packed.len()
                ));
            }
            let zname = format!("{z}::packed");
            if !cx.plan.constants.contains_key(&zname) {
                cx.add_const(
                    &zname,
                    HostTensor::packed(DT::U8, vec![nn * zrow], &packed.as_i64()),
                );
            }
            Some(zname)
        }
        Some(_) => return Err("float zero points are not supported (uint8 ones are)".into()),
    };
    let bias = match opt(n, 5) {
        Some(bias) if cx.dt(bias)? == DT::F32 => cx.bind(bias),
        Some(_) => return Err("the bias must be float".into()),
        None => crate::plan::Binding::Dummy,
    };
    // Rows of A: any leading dims, symbolic ones too (a prompt, then one token).
    let rows = sym::numel(&sa[..sa.len() - 1]);
    if cx.at_max(&rows) > 65535 {
        return Err(format!(
            "{} rows exceed one dispatch (65535)",
            cx.at_max(&rows)
        ));
    }
    let mut oshape = sa[..sa.len() - 1].to_vec();
    oshape.push(Expr::from(nn));
    cx.new_tensor_sym(out, oshape, DT::F32)?;
    let p = params::MatmulNbits::<Expr> {
        m: rows.clone(),
        n: Expr::from(nn),
        k: Expr::from(k),
        block: Expr::from(block),
        blocks: Expr::from(blocks),
        has_bias: Expr::from(opt(n, 5).is_some() as usize),
        has_zp: Expr::from(zero_points.is_some() as usize),
        zp_row_bytes: Expr::from(zrow),
    }
    .slots();
    if rows != Expr::Const(0) && nn > 0 {
        let bindings = vec![
            cx.bind(a),
            cx.bind(&qname),
            cx.bind(scales),
            zero_points
                .as_deref()
                .map_or(crate::plan::Binding::Dummy, |z| cx.bind(z)),
            bias,
            cx.bind(out),
        ];
        let groups = [Expr::from(nn.div_ceil(64)), rows, Expr::Const(1)];
        cx.dispatch_sym(n, kernel, bindings, p, groups);
    }
    Ok(())
}

/// com.microsoft GatherBlockQuantized: rows of a constant table quantized in blocks along
/// its last axis (uint8 holding two 4-bit values, or 8-bit values; int4/uint4), gathered
/// along axis 0 and dequantized in registers; the table stays packed.
pub(super) fn lower_gather_block_quantized(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let i = ins(n);
    if i.len() < 3 {
        return Err("GatherBlockQuantized takes data, indices and scales".into());
    }
    let (data, idx, scales) = (i[0], i[1], i[2]);
    let out = out0(n);
    let bits = attr_i(n, "bits", 4);
    let block = usize::try_from(attr_i(n, "block_size", 128)).unwrap_or(0);
    if attr_i(n, "gather_axis", 0) != 0 {
        return Err("gather_axis other than 0 is not supported".into());
    }
    if !matches!(attr_i(n, "quantize_axis", 1), 1 | -1) {
        return Err("quantize_axis other than the last (1) is not supported".into());
    }
    if block < 16 || !block.is_power_of_two() {
        return Err(format!("block_size {block} (powers of two from 16 run)"));
    }
    let table = cx.konst(data).ok_or("data must be a constant")?;
    if table.shape.len() != 2 || cx.dt(idx)? != DT::I32 || cx.dt(scales)? != DT::F32 {
        return Err("only a 2-D table, integer indices and float scales".into());
    }
    let rows = table.shape[0];
    let raw = table.as_i64();
    // (values [rows, K], K, kernel, default zero point, zero points packed two per byte)
    let unpack_nibbles = |bytes: &[i64]| -> Vec<i64> {
        bytes
            .iter()
            .flat_map(|&b| [b & 15, (b >> 4) & 15])
            .collect()
    };
    let (values, k, kernel, default_zp, nibble_zp) = match (cx.declared(data), bits) {
        (Some(DType::U8), 4) => (
            unpack_nibbles(&raw),
            table.shape[1] * 2,
            Kernel::GatherBlockU4F32,
            8.0,
            true,
        ),
        (Some(DType::U8), 8) => (raw, table.shape[1], Kernel::GatherBlockU8F32, 128.0, false),
        (Some(d), 4) if d == DType::from_onnx(21) => {
            (raw, table.shape[1], Kernel::GatherBlockU4F32, 8.0, false)
        }
        (Some(d), 4) if d == DType::from_onnx(22) => {
            (raw, table.shape[1], Kernel::GatherBlockI4F32, 0.0, false)
        }
        (d, b) => {
            return Err(format!(
                "data of type {} with bits = {b} is not supported (uint8 with 4 or 8 bits, int4, uint4 are)",
                d.map(|d| d.name()).unwrap_or_else(|| "unknown".into())
            ));
        }
    };
    let blocks = k.div_ceil(block);
    if numel(&cx.shape(scales)?) != rows * blocks {
        return Err(format!(
            "scales must hold rows x blocks = {rows} x {blocks} values"
        ));
    }
    let zero_points: Vec<f32> = match opt(n, 3) {
        None => vec![default_zp; rows * blocks],
        Some(z) => {
            let zv = cx.konst(z).ok_or("zero points must be constants")?.as_i64();
            let zv = if nibble_zp {
                let per_row = blocks.div_ceil(2);
                (0..rows * blocks)
                    .map(|j| {
                        let byte = zv[(j / blocks) * per_row + (j % blocks) / 2];
                        (byte >> (4 * ((j % blocks) % 2))) & 15
                    })
                    .collect()
            } else {
                zv
            };
            if zv.len() != rows * blocks {
                return Err(format!(
                    "zero points must hold rows x blocks = {rows} x {blocks}"
                ));
            }
            zv.iter().map(|&v| v as f32).collect()
        }
    };
    let packed = format!("{data}::packed");
    if !cx.plan.constants.contains_key(&packed) {
        let (dt, mask) = if bits == 4 {
            (DT::U4, 15)
        } else {
            (DT::U8, 255)
        };
        let masked: Vec<i64> = values.iter().map(|v| v & mask).collect();
        cx.add_const(&packed, HostTensor::packed(dt, vec![rows, k], &masked));
    }
    let zname = format!("{out}::zero_point");
    cx.add_const(&zname, HostTensor::f32(vec![rows * blocks], zero_points));
    // Any number of indices, symbolic ones too (a prompt, then one token).
    let mut oshape = cx.sym_shape(idx)?;
    oshape.push(Expr::from(k));
    cx.new_tensor_sym(out, oshape.clone(), DT::F32)?;
    let total = sym::numel(&oshape);
    let p = params::GatherBlock::<Expr> {
        n: total.clone(),
        rows: Expr::from(rows),
        k: Expr::from(k),
        block: Expr::from(block),
        blocks: Expr::from(blocks),
    }
    .slots();
    if total != Expr::Const(0) {
        let bindings = vec![
            cx.bind(&packed),
            cx.bind(idx),
            cx.bind(scales),
            cx.bind(&zname),
            cx.bind(out),
        ];
        let groups = crate::plan::groups_1d_sym(&total, 256);
        cx.dispatch_sym(n, kernel, bindings, p, groups);
    }
    Ok(())
}
