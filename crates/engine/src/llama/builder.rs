//! The plan builder: tensors and dispatches of the llama stages (norms, projections,
//! RoPE, attention, SwiGLU...), and the kernels that read each packed block type.

use std::collections::HashMap;

use m2w_kernels::{Kernel, params};

use crate::plan::{Binding, Dispatch, Plan, TensorDesc, groups_1d};
use crate::tensor::{DT, HostTensor};
use m2w_model::llama_config::Activation;

pub(super) struct Builder {
    pub(super) plan: Plan,
    pub(super) gemv_max_tokens: usize,
    pub(super) kinds: HashMap<String, &'static str>,
    /// Weights larger than one binding may be, as row slices: (constant, first row, rows).
    pub(super) slices: HashMap<String, Vec<(String, usize, usize)>>,
}

/// The fewest tokens a quantized matmul runs as tiles (`matmul_tiled*`): below, most of a
/// 16-token tile would be idle.
pub(super) const TILED_MIN_TOKENS: usize = 8;

/// The kernels that read projection weights of block type `kind`.
struct QuantKernels {
    matmul: Kernel,
    tiled: Kernel,
    tiled_t16: Kernel,
    gemv: Kernel,
    gemv_qkv: Kernel,
    gemv_swiglu: Kernel,
    gemv_geglu: Kernel,
}

/// A kernel of the family `prefix` for block type `kind` (`gemv` + `q4_k` = `gemv_q4_k_f32`).
fn kernel_for(prefix: &str, kind: &str) -> Kernel {
    // build_with refuses weights of any kind without kernels up front (weights.rs).
    format!("{prefix}_{kind}_f32")
        .parse()
        .unwrap_or_else(|_| unreachable!("no {prefix} kernel reads {kind} weights"))
}

fn quant_kernels(kind: &str) -> QuantKernels {
    QuantKernels {
        matmul: kernel_for("matmul", kind),
        tiled: kernel_for("matmul_tiled", kind),
        tiled_t16: kernel_for("matmul_tiled_t16", kind),
        gemv: kernel_for("gemv", kind),
        gemv_qkv: kernel_for("gemv_qkv", kind),
        gemv_swiglu: kernel_for("gemv_swiglu", kind),
        gemv_geglu: kernel_for("gemv_geglu", kind),
    }
}

/// The embedding lookup of a table of block type `kind`.
pub(super) fn embed_kernel(kind: &str) -> Kernel {
    kernel_for("embed", kind)
}

/// The uniform word that holds field `field` of `kernel`'s Params.
pub(super) fn param_word(kernel: Kernel, field: &str) -> usize {
    kernel
        .params_layout()
        .iter()
        .find(|f| f.name == field)
        .map(|f| f.offset as usize / 4)
        .unwrap_or_else(|| panic!("{kernel} has no uniform field {field}"))
}

impl Builder {
    /// An empty plan whose quantized matmuls run as GEMV up to `gemv_max_tokens` tokens.
    pub(super) fn new(gemv_max_tokens: usize) -> Builder {
        Builder {
            plan: Plan::default(),
            kinds: HashMap::new(),
            slices: HashMap::new(),
            gemv_max_tokens,
        }
    }

    pub(super) fn tensor(&mut self, name: &str, shape: Vec<usize>, dt: DT) {
        self.plan.tensors.insert(
            name.into(),
            TensorDesc::row_major(crate::sym::fixed(&shape), dt, name.into()),
        );
    }

    pub(super) fn dispatch(
        &mut self,
        node: &str,
        op: &str,
        kernel: Kernel,
        bindings: Vec<&str>,
        params: Vec<u32>,
        workgroups: [u32; 3],
    ) {
        debug_assert_eq!(params.len(), kernel.params_words(), "{kernel}");
        self.plan.dispatches.push(Dispatch {
            node: node.into(),
            op_type: op.into(),
            kernel,
            bindings: bindings
                .into_iter()
                .map(|b| {
                    if b.is_empty() {
                        Binding::Dummy
                    } else {
                        Binding::Tensor(b.into())
                    }
                })
                .collect(),
            params,
            workgroups,
            sym_params: vec![],
            sym_workgroups: None,
        });
    }

    /// out = RMSNorm(x) * w, a workgroup per row.
    pub(super) fn rmsnorm(
        &mut self,
        out: &str,
        x: &str,
        w: &str,
        rows: usize,
        len: usize,
        eps: f32,
    ) {
        self.tensor(out, vec![rows, len], DT::F32);
        self.dispatch(
            out,
            "RMSNorm",
            Kernel::RmsnormRowsF32,
            vec![x, "", w, "", out],
            params::RmsnormRows {
                rows: rows as u32,
                len: len as u32,
                eps,
                add: 0,
            }
            .words(),
            groups_1d(rows, 1),
        );
        // The unused `sum` output is writable: a private word, not the shared read-only
        // dummy (one buffer may not be read-only and writable in the same dispatch).
        let d = self.plan.dispatches.last_mut().expect("just pushed");
        d.bindings[3] = Binding::Scratch(1);
    }

    /// sum = a + b (the residual stream) and out = RMSNorm(sum) * w in one dispatch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_rmsnorm(
        &mut self,
        sum: &str,
        out: &str,
        a: &str,
        b: &str,
        w: &str,
        rows: usize,
        len: usize,
        eps: f32,
    ) {
        self.tensor(sum, vec![rows, len], DT::F32);
        self.tensor(out, vec![rows, len], DT::F32);
        self.dispatch(
            out,
            "Add+RMSNorm",
            Kernel::RmsnormRowsF32,
            vec![a, b, w, sum, out],
            params::RmsnormRows {
                rows: rows as u32,
                len: len as u32,
                eps,
                add: 1,
            }
            .words(),
            groups_1d(rows, 1),
        );
    }

    /// The GEMV kind shared by `weights` when a fused few-token kernel can take them all.
    pub(super) fn fused_kind(&self, t: usize, weights: &[&str]) -> Option<&'static str> {
        let kind = self.kinds[weights[0]];
        (t <= self.gemv_max_tokens
            && kind != "f32"
            && weights.iter().all(|w| self.kinds[*w] == kind))
        .then_some(kind)
    }

    /// q, k, v = x Wq^T, x Wk^T, x Wv^T: one dispatch for few tokens, else three matmuls.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn qkv(
        &mut self,
        out: [&str; 3],
        x: &str,
        w: [&str; 3],
        t: usize,
        nq: usize,
        nkv: usize,
        k: usize,
    ) {
        let Some(kind) = self.fused_kind(t, &w) else {
            self.matmul(out[0], x, w[0], t, nq, k);
            self.matmul(out[1], x, w[1], t, nkv, k);
            self.matmul(out[2], x, w[2], t, nkv, k);
            return;
        };
        self.tensor(out[0], vec![t, nq], DT::F32);
        self.tensor(out[1], vec![t, nkv], DT::F32);
        self.tensor(out[2], vec![t, nkv], DT::F32);
        self.dispatch(
            out[0],
            "MatMul q/k/v",
            quant_kernels(kind).gemv_qkv,
            vec![x, w[0], w[1], w[2], out[0], out[1], out[2]],
            params::GemvQkvQ {
                t: t as u32,
                nq: nq as u32,
                nkv: nkv as u32,
                k: k as u32,
            }
            .words(),
            groups_1d(t * (nq + 2 * nkv), 1),
        );
    }

    /// gate, up = x Wg^T, x Wu^T and act = f(gate) * up (SiLU or GELU-tanh): one dispatch
    /// for few tokens.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gated_ffn(
        &mut self,
        out: [&str; 3],
        x: &str,
        w: [&str; 2],
        t: usize,
        n: usize,
        k: usize,
        activation: Activation,
    ) {
        let Some(kind) = self.fused_kind(t, &w) else {
            self.matmul(out[0], x, w[0], t, n, k);
            self.matmul(out[1], x, w[1], t, n, k);
            let ew = match activation {
                Activation::Silu => Kernel::EwSiluMulF32,
                Activation::GeluTanh => Kernel::EwGeluTanhMulF32,
            };
            self.ew(out[2], ew, out[0], out[1], vec![t, n]);
            return;
        };
        for o in out {
            self.tensor(o, vec![t, n], DT::F32);
        }
        let kernels = quant_kernels(kind);
        let (kernel, op) = match activation {
            Activation::Silu => (kernels.gemv_swiglu, "MatMul gate/up + SwiGLU"),
            Activation::GeluTanh => (kernels.gemv_geglu, "MatMul gate/up + GeGLU"),
        };
        self.dispatch(
            out[2],
            op,
            kernel,
            vec![x, w[0], w[1], out[0], out[1], out[2]],
            params::GemvSwigluQ {
                t: t as u32,
                n: n as u32,
                k: k as u32,
                pad: 0,
            }
            .words(),
            groups_1d(t * n, 1),
        );
    }

    pub(super) fn matmul(&mut self, out: &str, x: &str, w: &str, t: usize, n: usize, k: usize) {
        self.tensor(out, vec![t, n], DT::F32);
        let kind = self.kinds[w];
        let slices = self
            .slices
            .get(w)
            .cloned()
            .unwrap_or_else(|| vec![(w.to_string(), 0, n)]);
        // A few tokens (decode): one workgroup per output, the row's blocks spread over its
        // threads. Prefill: tiles of 64 (or, below 64 tokens, 16) tokens x 64 outputs that
        // dequantize each weight block once per tile. Between the two (and every size when
        // GEMVs are off, the CPU-emulated fallback): one thread per output. A sliced weight
        // writes its columns of the one output slice by slice.
        for (slice, n0, rows) in slices {
            let p = params::Qmatmul {
                t: t as u32,
                n: rows as u32,
                k: k as u32,
                n0: n0 as u32,
                ld: n as u32,
            };
            let (kernel, params, groups) = if t <= self.gemv_max_tokens {
                let p = params::GemvQ {
                    t: p.t,
                    n: p.n,
                    k: p.k,
                    n0: p.n0,
                    ld: p.ld,
                };
                (quant_kernels(kind).gemv, p.words(), groups_1d(t * rows, 1))
            } else if self.gemv_max_tokens > 0 && t >= TILED_MIN_TOKENS {
                let (kernel, tile) = if t >= 64 {
                    (quant_kernels(kind).tiled, 64)
                } else {
                    (quant_kernels(kind).tiled_t16, 16)
                };
                let groups = [rows.div_ceil(64) as u32, t.div_ceil(tile) as u32, 1];
                (kernel, p.words(), groups)
            } else {
                (
                    quant_kernels(kind).matmul,
                    p.words(),
                    groups_1d(t * rows, 64),
                )
            };
            self.dispatch(out, "MatMul", kernel, vec![x, &slice, out], params, groups);
        }
    }

    /// out[t] = scale * table[ids[t]] from a packed table (sliced when large).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn embed(
        &mut self,
        out: &str,
        ids: &str,
        table: &str,
        t: usize,
        d: usize,
        vocab: usize,
        scale: f32,
    ) {
        // The unit vector the embedding kernel dots a block's quarters with (see embed_q).
        if !self.plan.constants.contains_key("unit_vector") {
            let mut unit = vec![0f32; 64];
            unit[32] = 1.0;
            self.tensor("unit_vector", vec![64], DT::F32);
            self.plan
                .constants
                .insert("unit_vector".into(), HostTensor::f32(vec![64], unit));
        }
        self.tensor(out, vec![t, d], DT::F32);
        let kernel = embed_kernel(self.kinds[table]);
        let slices = self
            .slices
            .get(table)
            .cloned()
            .unwrap_or_else(|| vec![(table.to_string(), 0, vocab)]);
        for (slice, row0, rows) in slices {
            self.dispatch(
                out,
                "Embedding",
                kernel,
                vec![ids, &slice, "unit_vector", out],
                params::EmbedQ {
                    t: t as u32,
                    d: d as u32,
                    v: vocab as u32,
                    scale,
                    row0: row0 as u32,
                    rows: rows as u32,
                }
                .words(),
                groups_1d(t * d, 256),
            );
        }
    }

    pub(super) fn ew(&mut self, out: &str, kernel: Kernel, a: &str, b: &str, shape: Vec<usize>) {
        let n: usize = shape.iter().product();
        self.tensor(out, shape.clone(), DT::F32);
        // Dims and contiguous strides as array<vec4<u32>, 2>; a and b have the same shape.
        let mut dims = [[0u32; 4]; 2];
        let mut strides = [[0u32; 4]; 2];
        let mut acc = 1;
        for d in (0..shape.len()).rev() {
            dims[d / 4][d % 4] = shape[d] as u32;
            strides[d / 4][d % 4] = acc as u32;
            acc *= shape[d];
        }
        let p = params::Elementwise {
            n: n as u32,
            rank: shape.len() as u32,
            p0: 0.0,
            p1: 0.0,
            shape: dims,
            a_strides: strides,
            b_strides: strides,
            c_strides: [[0; 4]; 2],
        };
        self.dispatch(
            out,
            "Elementwise",
            kernel,
            vec![a, b, "", out],
            p.words(),
            groups_1d(n, 256),
        );
    }

    /// out[t, :] = x[t, :] + bias (a projection's bias, broadcast over the rows).
    pub(super) fn add_rows(&mut self, out: &str, x: &str, bias: &str, rows: usize, len: usize) {
        self.tensor(out, vec![rows, len], DT::F32);
        let p = params::Elementwise {
            n: (rows * len) as u32,
            rank: 2,
            p0: 0.0,
            p1: 0.0,
            shape: [[rows as u32, len as u32, 0, 0], [0; 4]],
            a_strides: [[len as u32, 1, 0, 0], [0; 4]],
            b_strides: [[0, 1, 0, 0], [0; 4]],
            c_strides: [[0; 4]; 2],
        };
        self.dispatch(
            out,
            "Add bias",
            Kernel::EwAddF32,
            vec![x, bias, "", out],
            p.words(),
            groups_1d(rows * len, 256),
        );
    }
}
