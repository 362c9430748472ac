//! The plan builder: tensors and dispatches of the llama stages (norms, projections,
//! RoPE, attention, SwiGLU...), and the kernels that read each packed block type.

use std::collections::HashMap;

use m2w_kernels::{Kernel, params};

use crate::plan::{Binding, Dispatch, Plan, TensorDesc, groups_1d};
use crate::tensor::DT;

pub(super) struct Builder {
    pub(super) plan: Plan,
    pub(super) gemv_max_tokens: usize,
    pub(super) kinds: HashMap<String, &'static str>,
}

/// The kernels that read projection weights of block type `kind`.
struct QuantKernels {
    matmul: Kernel,
    gemv: Kernel,
    gemv_qkv: Kernel,
    gemv_swiglu: Kernel,
}

fn quant_kernels(kind: &str) -> QuantKernels {
    let k = |matmul, gemv, gemv_qkv, gemv_swiglu| QuantKernels {
        matmul,
        gemv,
        gemv_qkv,
        gemv_swiglu,
    };
    match kind {
        "q8_0" => k(
            Kernel::MatmulQ80F32,
            Kernel::GemvQ80F32,
            Kernel::GemvQkvQ80F32,
            Kernel::GemvSwigluQ80F32,
        ),
        "q4_1" => k(
            Kernel::MatmulQ41F32,
            Kernel::GemvQ41F32,
            Kernel::GemvQkvQ41F32,
            Kernel::GemvSwigluQ41F32,
        ),
        "q4_0" => k(
            Kernel::MatmulQ40F32,
            Kernel::GemvQ40F32,
            Kernel::GemvQkvQ40F32,
            Kernel::GemvSwigluQ40F32,
        ),
        // build_with refuses projection weights of any other kind up front.
        other => unreachable!("no matmul kernels read {other} weights"),
    }
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
    pub(super) fn tensor(&mut self, name: &str, shape: Vec<usize>, dt: DT) {
        self.plan.tensors.insert(
            name.into(),
            TensorDesc {
                shape: crate::sym::fixed(&shape),
                dt,
                base: name.into(),
            },
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

    /// gate, up = x Wg^T, x Wu^T and act = silu(gate) * up: one dispatch for few tokens.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn swiglu(
        &mut self,
        out: [&str; 3],
        x: &str,
        w: [&str; 2],
        t: usize,
        n: usize,
        k: usize,
    ) {
        let Some(kind) = self.fused_kind(t, &w) else {
            self.matmul(out[0], x, w[0], t, n, k);
            self.matmul(out[1], x, w[1], t, n, k);
            self.ew(out[2], Kernel::EwSiluMulF32, out[0], out[1], vec![t, n]);
            return;
        };
        for o in out {
            self.tensor(o, vec![t, n], DT::F32);
        }
        self.dispatch(
            out[2],
            "MatMul gate/up + SwiGLU",
            quant_kernels(kind).gemv_swiglu,
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
        // A few tokens (decode): one workgroup per output, the row's blocks spread over its
        // threads; more tokens: one thread per output.
        let (pt, pn, pk) = (t as u32, n as u32, k as u32);
        let (kernel, params, groups) = if t <= self.gemv_max_tokens && kind != "f32" {
            let p = params::GemvQ {
                t: pt,
                n: pn,
                k: pk,
                pad: 0,
            };
            (quant_kernels(kind).gemv, p.words(), groups_1d(t * n, 1))
        } else {
            let p = params::Qmatmul {
                t: pt,
                n: pn,
                k: pk,
                pad: 0,
            };
            (quant_kernels(kind).matmul, p.words(), groups_1d(t * n, 64))
        };
        self.dispatch(out, "MatMul", kernel, vec![x, w, out], params, groups);
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
}
