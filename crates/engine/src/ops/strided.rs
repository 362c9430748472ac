//! KV caches appended in place, and the strided views that read them.
//!
//! A graph output `present = Concat(past, new)` along an axis whose size is a dim, where
//! `past` is a graph input, is a KV cache: the generation loop feeds it back as the next
//! step's `past`. Lowered as written, every step copies the whole cache into `present`,
//! and the loop copies `present` back into `past`. Here `past` gets a buffer sized for the
//! whole context instead: its rows sit at a fixed pitch along the axis (C, the present's
//! size at the dims' maxima), the Concat writes only `new`, at row P of that buffer, and
//! `present` is a view of the same buffer with the same strides. A loop that feeds present
//! back as past finds it in place (the same buffer: nothing is copied); a runner that
//! uploads past writes it at the pitch. Rows before P are never written, so running a
//! step twice on the same past gives the same present.
//!
//! The layout is onnxruntime-genai's `past_present_share_buffer`, reached from the plain
//! Concat so both exporters' layouts get it (present may be the Concat's output or an
//! Identity of it). Readers: views that only add or drop unit dims (Identity, Unsqueeze,
//! Squeeze), Transpose (its strides permuted: no copy), Expand (one
//! strided copy, as before) and MatMul's general kernel (which takes strides) read the
//! strided layout directly; every other op is given a row-major copy first
//! ([`Ctx::row_major_inputs`]), so any graph stays correct.

use m2w_model::NodeInfo;

use super::ctx::{Ctx, R, contiguous_strides_sym};
use crate::sym::{self, Expr};
use crate::tensor::DT;

/// The strides of a view of a strided tensor that only adds or drops unit dims: None when
/// `to` moves other dims.
pub(crate) fn unit_dims_moved(from: &[Expr], strides: &[i64], to: &[Expr]) -> Option<Vec<i64>> {
    let unit = Expr::Const(1);
    let mut kept = from
        .iter()
        .zip(strides)
        .filter(|(d, _)| **d != unit)
        .map(|(d, s)| (d.clone(), *s));
    let mut out = Vec::with_capacity(to.len());
    for d in to {
        if *d == unit {
            out.push(0);
            continue;
        }
        match kept.next() {
            Some((f, s)) if f == *d => out.push(s),
            _ => return None,
        }
    }
    kept.next().is_none().then_some(out)
}

/// Element strides of `shape` broadcast to `out` when it is laid out with `strides`
/// (0 on broadcast dims).
pub(crate) fn broadcast_strides_of(shape: &[Expr], strides: &[Expr], out: &[Expr]) -> Vec<Expr> {
    let off = out.len() - shape.len();
    let mut s = vec![Expr::Const(0); out.len()];
    for (i, d) in shape.iter().enumerate() {
        if *d != Expr::Const(1) {
            s[off + i] = strides[i].clone();
        }
    }
    s
}

impl Ctx {
    /// A tensor's element strides: its own when strided, else row-major.
    pub(crate) fn strides_sym(&self, name: &str) -> R<Vec<Expr>> {
        let d = self.desc(name)?;
        Ok(match &d.strides {
            Some(s) => s.iter().map(|&v| Expr::Const(v)).collect(),
            None => contiguous_strides_sym(&d.shape),
        })
    }

    pub(crate) fn is_strided(&self, name: &str) -> bool {
        self.plan
            .tensors
            .get(name)
            .is_some_and(|d| d.strides.is_some())
    }

    /// `out`, a view of strided `of` with its axes permuted (Transpose without a copy).
    pub(crate) fn permuted_view(&mut self, out: &str, of: &str, perm: &[usize]) -> R<()> {
        let d = self.desc(of)?.clone();
        let strides = d.strides.as_ref().ok_or("not strided")?;
        let mut v = crate::plan::TensorDesc::row_major(
            perm.iter().map(|&p| d.shape[p].clone()).collect(),
            d.dt,
            d.base.clone(),
        );
        v.strides = Some(perm.iter().map(|&p| strides[p]).collect());
        self.plan.tensors.insert(out.into(), v);
        Ok(())
    }

    /// Whether `n` reads its strided inputs itself (else it gets row-major copies).
    fn reads_strided(&self, n: &NodeInfo) -> bool {
        match n.op_type.as_str() {
            "Identity" | "Unsqueeze" | "Squeeze" | "Transpose" | "Expand" => n.domain.is_empty(),
            // The general kernel takes strides for matrices; a vector operand does not.
            "MatMul" => {
                n.domain.is_empty()
                    && n.inputs.iter().take(2).all(|i| {
                        !self.is_strided(i)
                            || self.plan.tensors.get(i).is_some_and(|d| d.shape.len() >= 2)
                    })
            }
            _ => false,
        }
    }

    /// `n` with each strided input it cannot read replaced by a row-major copy (one per
    /// tensor, shared by every node that needs it).
    pub(crate) fn row_major_inputs(&mut self, n: &NodeInfo) -> R<Option<NodeInfo>> {
        if !n.inputs.iter().any(|i| self.is_strided(i)) || self.reads_strided(n) {
            return Ok(None);
        }
        let mut dense = n.clone();
        for i in dense.inputs.iter_mut() {
            if !self.is_strided(i) {
                continue;
            }
            let copy = format!("{i}::row_major");
            if !self.plan.tensors.contains_key(&copy) {
                let shape = self.sym_shape(i)?;
                let strides = self.strides_sym(i)?;
                self.new_tensor_sym(&copy, shape.clone(), self.dt(i)?)?;
                let row_major = contiguous_strides_sym(&shape);
                self.copy_sym(
                    n,
                    i,
                    &copy,
                    &shape,
                    Expr::Const(0),
                    &strides,
                    Expr::Const(0),
                    &row_major,
                )?;
            }
            *i = copy;
        }
        Ok(Some(dense))
    }

    /// Lowers `out = Concat(past, new)` along `axis` as an append in place when it is a KV
    /// cache (see the module doc); false when it is not one, and nothing was done.
    pub(crate) fn append_in_place(
        &mut self,
        n: &NodeInfo,
        parts: &[&str],
        axis: usize,
        out: &str,
        oshape: &[Expr],
    ) -> R<bool> {
        let [past, new] = parts else {
            return Ok(false);
        };
        let Ok(d) = self.desc(past).cloned() else {
            return Ok(false);
        };
        let is_cache = self.graph_outputs.contains(out)
            && self.plan.inputs.iter().any(|i| i == past)
            && d.base == *past
            && d.strides.is_none()
            && matches!(d.dt, DT::F32 | DT::I32)
            && d.shape[axis].as_const().is_none()
            && !self.is_strided(new);
        if !is_cache {
            return Ok(false);
        }
        // Nothing may have read the cache as row-major before it takes the pitch.
        let read_before = self
            .plan
            .tensors
            .iter()
            .any(|(k, t)| t.base == *past && k != past)
            || self.plan.dispatches.iter().any(|x| {
                x.bindings
                    .iter()
                    .any(|b| matches!(b, crate::plan::Binding::Tensor(t) if t == past))
            });
        if read_before {
            return Ok(false);
        }
        let context = self.at_max(&oshape[axis]);
        let mut padded = d.shape.clone();
        padded[axis] = Expr::from(context);
        let Some(strides) = contiguous_strides_sym(&padded)
            .iter()
            .map(Expr::as_const)
            .collect::<Option<Vec<i64>>>()
        else {
            // A size inside the row that is a dim: no fixed pitch.
            return Ok(false);
        };
        let extent = self.at_max(&sym::numel(&padded)) as u64;
        let cache = self.plan.tensors.get_mut(*past).expect("checked");
        cache.strides = Some(strides.clone());
        cache.extent = Some(extent);
        let oshape: Vec<Expr> = oshape
            .iter()
            .map(|e| e.simplify_in(&self.minima, &self.maxima))
            .collect();
        let mut present = crate::plan::TensorDesc::row_major(oshape, d.dt, past.to_string());
        present.strides = Some(strides.clone());
        self.plan.tensors.insert(out.into(), present);
        let strides: Vec<Expr> = strides.iter().map(|&s| Expr::Const(s)).collect();
        let new_shape = self.sym_shape(new)?;
        let at = d.shape[axis].clone() * strides[axis].clone();
        self.copy_sym(
            n,
            new,
            out,
            &new_shape,
            Expr::Const(0),
            &contiguous_strides_sym(&new_shape),
            at,
            &strides,
        )?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_a_strided_tensor_may_only_add_or_drop_unit_dims() {
        let s = |v: &[i64]| v.iter().map(|&x| Expr::Const(x)).collect::<Vec<_>>();
        let p = Expr::Sym("past".into());
        let from = vec![Expr::Const(1), Expr::Const(3), p.clone(), Expr::Const(64)];
        let strides = [3 * 100 * 64, 100 * 64, 64, 1];
        let to = vec![
            Expr::Const(1),
            Expr::Const(3),
            Expr::Const(1),
            p.clone(),
            Expr::Const(64),
        ];
        assert_eq!(
            unit_dims_moved(&from, &strides, &to),
            Some(vec![0, 6400, 0, 64, 1])
        );
        let merged = vec![Expr::Const(3), p.clone() * Expr::Const(64)];
        assert_eq!(unit_dims_moved(&from, &strides, &merged), None);
        assert_eq!(unit_dims_moved(&from, &strides, &s(&[3, 64])), None);
    }
}
