//! Shape values of a symbolic plan: the small integer tensors exporters compute from
//! `Shape` (`[batch, sequence]`, `sequence * 12`, a Concat of dims as a Reshape target)
//! held on the host as expressions over the plan's dims, so the Shape -> Gather -> Concat
//! -> Reshape chains fold at plan time as they do for fixed sizes. Ops that read such a
//! value as a shape (Reshape, Expand, Range, ConstantOfShape, Slice) take it through
//! [`Ctx::sym_ints`]; a kernel that reads it as data gets it written per run by one small
//! `values` dispatch (dropped again when nothing reads it).

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::ctx::{Ctx, R, attr_i, attr_ints, norm_axis, vec8_sym};
use super::host::{reshape_shape, squeeze_shape};
use crate::plan::Binding;
use crate::sym::{self, Expr};
use crate::tensor::{DT, HostTensor};

/// A small integer tensor whose values are expressions (row-major, fixed shape).
#[derive(Clone, Debug)]
pub struct SymInts {
    pub shape: Vec<usize>,
    pub values: Vec<Expr>,
}

/// The most values a shape value may hold (a `values` dispatch writes up to 8).
const MAX_VALUES: usize = 8;

impl Ctx {
    /// The values of an integer tensor known at plan time, as expressions: a shape value
    /// or an integer constant. None for anything computed on the GPU.
    pub(crate) fn sym_ints(&self, name: &str) -> Option<Vec<Expr>> {
        if let Some(v) = self.sym_values.get(name) {
            return Some(v.values.clone());
        }
        let k = self.konst(name)?;
        if matches!(k.data, crate::tensor::Data::F32(_)) {
            return None;
        }
        Some(k.as_i64().into_iter().map(Expr::Const).collect())
    }

    /// [`Ctx::sym_ints`] of input `i` of a node, where it decides a shape. A small integer
    /// tensor known only at run time (a graph input, or computed on the GPU) becomes dims
    /// of its own, bound at a sync point that reads it back ([`Ctx::value_dims`]); each
    /// must be at least `min` then.
    pub(crate) fn shape_input(&mut self, n: &NodeInfo, i: usize, min: i64) -> R<Option<Vec<Expr>>> {
        match n.inputs.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => match self.sym_ints(name) {
                Some(v) => Ok(Some(v)),
                None => self.value_dims(name, min).map(Some),
            },
        }
    }

    /// Dims `name[k]` for the values of a small integer tensor known only at run time,
    /// bound at a sync point before the next dispatch: the run reads the tensor back and
    /// the host binds them (each within [`min`, its declared maximum]). A maximum comes
    /// from the caller (`--max-dim "name=N"`); without one the node is refused.
    pub(crate) fn value_dims(&mut self, name: &str, min: i64) -> R<Vec<Expr>> {
        let names: Vec<String> = self
            .plan
            .dims
            .iter()
            .filter(|d| d.value_of.as_ref().is_some_and(|(t, _)| t == name))
            .map(|d| d.name.clone())
            .collect();
        if !names.is_empty() {
            for d in self
                .plan
                .dims
                .iter_mut()
                .filter(|d| names.contains(&d.name))
            {
                d.min = d.min.max(min);
                self.minima.insert(d.name.clone(), d.min);
            }
            return Ok(names.iter().map(|d| Expr::sym(d)).collect());
        }
        let d = self.desc(name)?;
        let count = d
            .fixed_shape()
            .map(|s| s.iter().product::<usize>())
            .filter(|&c| c <= MAX_VALUES && d.shape.len() <= 1)
            .ok_or_else(|| {
                format!("'{name}' decides a shape at run time but is not a small vector")
            })?;
        if d.dt != DT::I32 {
            return Err(format!(
                "'{name}' decides a shape at run time but is not integer"
            ));
        }
        // A negative minimum (axes counted from the end) is at most the maximum's size.
        let max = *self.value_max.get(name).ok_or_else(|| {
            format!(
                "'{name}' decides a shape at run time: give its largest value with --max-dim \"{name}=N\""
            )
        })?;
        let min = min.max(-(max as i64));
        let mut out = Vec::new();
        for k in 0..count {
            let dim = format!("{name}[{k}]");
            self.maxima.insert(dim.clone(), max as i64);
            self.minima.insert(dim.clone(), min);
            self.plan.dims.push(crate::plan::DimDecl {
                name: dim.clone(),
                max,
                min,
                value_of: Some((name.to_string(), k)),
                at_sync: true,
            });
            out.push(Expr::sym(&dim));
        }
        self.plan.syncs.push(crate::plan::SyncPoint {
            at: self.plan.dispatches.len(),
            tensor: name.to_string(),
            kind: crate::plan::SyncKind::Values,
        });
        Ok(out)
    }

    /// NonZero: the input is read back at a sync point, the host finds the nonzero
    /// elements, writes their coordinates ([rank, count]) and binds `count`, a dim of at
    /// most the input's element count.
    pub(crate) fn lower_nonzero(&mut self, n: &NodeInfo) -> R<()> {
        let x = n.inputs.first().map(String::as_str).unwrap_or("");
        let out = n.outputs.first().map(String::as_str).unwrap_or("");
        let s = self.sym_shape(x)?;
        let rank = s.len().max(1);
        let dim = format!("{out}.count");
        let max = self.at_max(&sym::numel(&s));
        self.maxima.insert(dim.clone(), max as i64);
        self.plan.dims.push(crate::plan::DimDecl {
            name: dim.clone(),
            max,
            min: 0,
            value_of: None,
            at_sync: true,
        });
        self.new_tensor_sym(out, vec![Expr::from(rank), Expr::sym(&dim)], DT::I32)?;
        self.plan.syncs.push(crate::plan::SyncPoint {
            at: self.plan.dispatches.len(),
            tensor: x.to_string(),
            kind: crate::plan::SyncKind::NonZero {
                output: out.to_string(),
                dim,
            },
        });
        Ok(())
    }

    /// Records a shape value: a constant when no value holds a dim, else a host value
    /// with a `values` dispatch that writes it for kernels that read it.
    pub(crate) fn add_sym_value(&mut self, n: &NodeInfo, name: &str, v: SymInts) -> R<()> {
        let v = SymInts {
            values: v
                .values
                .iter()
                .map(|e| e.simplify_in(&self.minima, &self.maxima))
                .collect(),
            shape: v.shape,
        };
        if v.values.iter().all(|e| e.as_const().is_some()) {
            let ints = v
                .values
                .iter()
                .map(|e| e.as_const().expect("const"))
                .collect();
            self.add_const(name, HostTensor::i64(v.shape, ints));
            return Ok(());
        }
        if v.values.len() > MAX_VALUES {
            return Err(format!(
                "a shape value of {} elements holds dims; at most {MAX_VALUES} are kept on the host",
                v.values.len()
            ));
        }
        self.new_tensor(name, v.shape.clone(), DT::I32)?;
        let p = params::Values::<Expr> {
            n: Expr::from(v.values.len()),
            v: vec8_sym(&v.values),
            ..Default::default()
        }
        .slots();
        let one = Expr::Const(1);
        self.dispatch_sym(
            n,
            Kernel::Values,
            vec![Binding::Tensor(name.into())],
            p,
            [one.clone(), one.clone(), one],
        );
        self.plan.shape_values.insert(name.into(), v.values.clone());
        self.sym_values.insert(name.into(), v);
        Ok(())
    }

    /// Shape (with start and end) and Size of a tensor whose shape holds dims.
    pub(crate) fn fold_shape_of(&mut self, n: &NodeInfo, shape: &[Expr]) -> R<()> {
        let out = n.outputs.first().map(String::as_str).unwrap_or("");
        let v = if n.op_type == "Size" {
            SymInts {
                shape: vec![],
                values: vec![sym::numel(shape)],
            }
        } else {
            let r = shape.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(attr_i(n, "start", 0));
            let end = clampi(attr_i(n, "end", r)).max(start);
            SymInts {
                shape: vec![end - start],
                values: shape[start..end].to_vec(),
            }
        };
        self.add_sym_value(n, out, v)
    }

    /// Folds a node over shape values on the host, when its op is shape arithmetic and
    /// every input is a shape value or an integer constant (at least one a shape value).
    /// None leaves the node to its GPU lowering.
    pub(crate) fn try_sym_fold(&mut self, n: &NodeInfo) -> Option<R<()>> {
        let present: Vec<&String> = n.inputs.iter().filter(|i| !i.is_empty()).collect();
        if !present.iter().any(|i| self.sym_values.contains_key(*i)) {
            return None;
        }
        let ins: Vec<Option<SymInts>> = n
            .inputs
            .iter()
            .map(|i| {
                if i.is_empty() {
                    return None;
                }
                let values = self.sym_ints(i)?;
                let shape = self.desc(i).ok()?.fixed_shape()?;
                Some(SymInts { shape, values })
            })
            .collect();
        if present.len() != ins.iter().filter(|i| i.is_some()).count() {
            return None;
        }
        let out = fold(n, &ins, self.opset)?;
        Some(out.and_then(|v| {
            let name = n.outputs.first().cloned().unwrap_or_default();
            self.add_sym_value(n, &name, v)
        }))
    }
}

/// Element-wise over two shape values (numpy broadcasting of a scalar or equal lengths).
fn zip(a: &SymInts, b: &SymInts, f: impl Fn(&Expr, &Expr) -> Option<Expr>) -> Option<SymInts> {
    let (shape, len) = if a.values.len() >= b.values.len() {
        (a.shape.clone(), a.values.len())
    } else {
        (b.shape.clone(), b.values.len())
    };
    if !(a.values.len() == len || a.values.len() == 1)
        || !(b.values.len() == len || b.values.len() == 1)
    {
        return None;
    }
    let at = |v: &SymInts, i: usize| v.values[if v.values.len() == 1 { 0 } else { i }].clone();
    let values: Option<Vec<Expr>> = (0..len).map(|i| f(&at(a, i), &at(b, i))).collect();
    Some(SymInts {
        shape,
        values: values?,
    })
}

/// Whether two values are equal, when the plan can tell for every binding: the same
/// expression, a constant apart, or apart by a polynomial in dims (which are never
/// negative) whose coefficients all have the sign of its nonzero constant term
/// (`sequence == -1` is false).
fn decide_equal(a: &Expr, b: &Expr) -> Option<bool> {
    let d = a.clone() - b.clone();
    if let Some(v) = d.as_const() {
        return Some(v == 0);
    }
    let terms = match &d {
        Expr::Add(t) => t.clone(),
        e => vec![e.clone()],
    };
    let mut constant = 0;
    let mut signs = Vec::new();
    for t in &terms {
        match t {
            Expr::Const(c) => constant = *c,
            Expr::Sym(_) => signs.push(1),
            Expr::Mul(f) if f.iter().skip(1).all(|x| matches!(x, Expr::Sym(_))) => match &f[0] {
                Expr::Const(c) => signs.push(c.signum()),
                Expr::Sym(_) => signs.push(1),
                _ => return None,
            },
            _ => return None,
        }
    }
    let all = |s: i64| signs.iter().all(|&x| x == s);
    ((constant > 0 && all(1)) || (constant < 0 && all(-1))).then_some(false)
}

/// The host fold of one shape-arithmetic node; None when the op or case is not one
/// (then the node runs on the GPU over the written values).
fn fold(n: &NodeInfo, ins: &[Option<SymInts>], opset: i64) -> Option<R<SymInts>> {
    let get = |i: usize| ins.get(i).and_then(|x| x.as_ref());
    let x = get(0)?;
    let same = |shape: Vec<usize>| SymInts {
        shape,
        values: x.values.clone(),
    };
    Some(Ok(match n.op_type.as_str() {
        "Identity" => x.clone(),
        "Cast" => {
            // Integer to integer only: a size cast to float is data for the GPU.
            let to = attr_i(n, "to", 7);
            if ![6, 7, 12, 13].contains(&to) {
                return None;
            }
            x.clone()
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = if opset >= 13 {
                match get(1) {
                    Some(a) => Some(
                        a.values
                            .iter()
                            .map(|e| e.as_const())
                            .collect::<Option<Vec<_>>>()?,
                    ),
                    None => None,
                }
            } else {
                attr_ints(n, "axes")
            };
            match squeeze_shape(&n.op_type, &x.shape, axes.as_deref()) {
                Ok(s) => same(s),
                Err(e) => return Some(Err(e)),
            }
        }
        "Reshape" => {
            let spec: Vec<i64> = get(1)?
                .values
                .iter()
                .map(|e| e.as_const())
                .collect::<Option<_>>()?;
            match reshape_shape(&x.shape, &spec, attr_i(n, "allowzero", 0) != 0) {
                Ok(s) => same(s),
                Err(e) => return Some(Err(e)),
            }
        }
        "Concat" => {
            if ins
                .iter()
                .any(|i| i.as_ref().is_some_and(|i| i.shape.len() > 1))
            {
                return None;
            }
            let values: Vec<Expr> = ins
                .iter()
                .flatten()
                .flat_map(|i| i.values.clone())
                .collect();
            SymInts {
                shape: vec![values.len()],
                values,
            }
        }
        "Gather" => {
            if x.shape.len() != 1 {
                return None;
            }
            let idx = get(1)?;
            let len = x.values.len() as i64;
            let mut values = Vec::new();
            for e in &idx.values {
                let i = e.as_const()?;
                let i = if i < 0 { i + len } else { i };
                if !(0..len).contains(&i) {
                    return Some(Err(format!("index {i} out of range for {len} values")));
                }
                values.push(x.values[i as usize].clone());
            }
            SymInts {
                shape: idx.shape.clone(),
                values,
            }
        }
        "Slice" => {
            if x.shape.len() != 1 {
                return None;
            }
            let c = |i: usize| -> Option<Option<i64>> {
                match get(i) {
                    None => Some(None),
                    Some(v) if v.values.len() == 1 => v.values[0].as_const().map(Some),
                    Some(_) => None,
                }
            };
            let len = x.values.len() as i64;
            if let Some(axis) = c(3)?
                && norm_axis(axis, 1).is_err()
            {
                return None;
            }
            let step = c(4)?.unwrap_or(1);
            if step <= 0 {
                return None;
            }
            let clampi = |v: i64| (if v < 0 { v + len } else { v }).clamp(0, len);
            let start = clampi(c(1)??);
            let end = clampi(c(2)??);
            let values: Vec<Expr> = (start..end)
                .step_by(step as usize)
                .map(|i| x.values[i as usize].clone())
                .collect();
            SymInts {
                shape: vec![values.len()],
                values,
            }
        }
        "Add" => zip(x, get(1)?, |a, b| Some(a.clone() + b.clone()))?,
        "Sub" => zip(x, get(1)?, |a, b| Some(a.clone() - b.clone()))?,
        "Mul" => zip(x, get(1)?, |a, b| Some(a.clone() * b.clone()))?,
        "Div" => zip(x, get(1)?, |a, b| {
            let d = b.as_const().filter(|d| *d > 0)?;
            // ONNX integer division truncates; sizes are never negative, where it floors.
            Some(a.clone().floor_div(d))
        })?,
        "Max" if ins.len() == 2 => zip(x, get(1)?, |a, b| Some(a.clone().max(b.clone())))?,
        "Min" if ins.len() == 2 => zip(x, get(1)?, |a, b| Some(a.clone().min(b.clone())))?,
        "Neg" => SymInts {
            shape: x.shape.clone(),
            values: x
                .values
                .iter()
                .map(|e| Expr::Const(0) - e.clone())
                .collect(),
        },
        "Equal" => zip(x, get(1)?, |a, b| {
            Some(Expr::from(decide_equal(a, b)? as i64))
        })?,
        "Where" => {
            let (c, a, b) = (x, get(1)?, get(2)?);
            let len = c.values.len().max(a.values.len()).max(b.values.len());
            let pick = |v: &SymInts, i: usize| {
                v.values
                    .get(if v.values.len() == 1 { 0 } else { i })
                    .cloned()
            };
            let mut values = Vec::new();
            for i in 0..len {
                let cond = pick(c, i)?.as_const()?;
                values.push(if cond != 0 { pick(a, i)? } else { pick(b, i)? });
            }
            let shape = [c, a, b]
                .into_iter()
                .find(|v| v.values.len() == len)
                .map(|v| v.shape.clone())?;
            SymInts { shape, values }
        }
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Expr {
        Expr::sym("sequence")
    }

    fn v(values: Vec<Expr>) -> Option<SymInts> {
        Some(SymInts {
            shape: vec![values.len()],
            values,
        })
    }

    fn node(op: &str, inputs: usize) -> NodeInfo {
        NodeInfo {
            name: String::new(),
            op_type: op.into(),
            domain: String::new(),
            inputs: (0..inputs).map(|i| format!("i{i}")).collect(),
            outputs: vec!["o".into()],
            scope: String::new(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn shape_chains_fold_to_expressions() {
        let shape = v(vec![Expr::Const(1), s(), Expr::Const(384)]);
        // Gather of one dim, then Concat into a Reshape target.
        let g = fold(
            &node("Gather", 2),
            &[shape.clone(), v(vec![Expr::Const(1)])],
            17,
        )
        .unwrap()
        .unwrap();
        assert_eq!(g.values, vec![s()]);
        let c = fold(
            &node("Concat", 3),
            &[
                v(vec![Expr::Const(1)]),
                Some(g.clone()),
                v(vec![Expr::Const(12), Expr::Const(32)]),
            ],
            17,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.values,
            vec![Expr::Const(1), s(), Expr::Const(12), Expr::Const(32)]
        );
        let m = fold(
            &node("Mul", 2),
            &[Some(g.clone()), v(vec![Expr::Const(12)])],
            17,
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.values, vec![Expr::Const(12) * s()]);
        // A dim is never -1; whether it is 8 depends on the binding; it equals itself.
        let ne = fold(
            &node("Equal", 2),
            &[Some(g.clone()), v(vec![Expr::Const(-1)])],
            17,
        );
        assert_eq!(ne.unwrap().unwrap().values, vec![Expr::Const(0)]);
        assert!(
            fold(
                &node("Equal", 2),
                &[Some(g.clone()), v(vec![Expr::Const(8)])],
                17
            )
            .is_none()
        );
        let e = fold(&node("Equal", 2), &[Some(g.clone()), Some(g)], 17)
            .unwrap()
            .unwrap();
        assert_eq!(e.values, vec![Expr::Const(1)]);
        // A cast to float is GPU data.
        let mut cast = node("Cast", 1);
        cast.attributes
            .insert("to".into(), m2w_model::AttrValue::Int(1));
        assert!(fold(&cast, &[shape], 17).is_none());
    }
}
