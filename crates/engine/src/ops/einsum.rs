//! Einsum of one or two operands (`einsum_f32`): the equation is parsed into output letters
//! and summed letters, and each operand's element strides along every letter (a letter
//! repeated inside one operand is a diagonal: its strides add up; an ellipsis stands for the
//! same leading dims in every operand, numpy-broadcast). Explicit (`->`) and implicit
//! output forms. One thread per output element sums the products over the summed letters.

use std::collections::BTreeMap;

use m2w_kernels::{Kernel, params};
use m2w_model::NodeInfo;

use super::Registry;
use super::ctx::{Ctx, MAX_RANK, R, attr_s, contiguous_strides, ins, out0, vec8_u32};
use crate::plan::{Binding, groups_1d};
use crate::tensor::{DT, numel};

pub(super) fn register(r: &mut Registry) {
    r.op("Einsum", 12, &["equation"], lower_einsum);
}

/// A parsed equation for given operand shapes.
#[derive(Debug, PartialEq)]
pub(crate) struct Contraction {
    pub out_shape: Vec<usize>,
    pub red_shape: Vec<usize>,
    /// Per operand: element strides along each output letter, then each summed letter.
    pub out_strides: Vec<Vec<i64>>,
    pub red_strides: Vec<Vec<i64>>,
}

/// Letters of one operand's term with its ellipsis expanded into `'0'..` pseudo-letters
/// (the last ellipsis dim is '0' + ell_rank - 1, so ellipses align from the right).
fn expand(term: &str, rank: usize, ell_rank: &mut usize) -> R<Vec<char>> {
    let letters: Vec<char> = term.replace("...", "").chars().collect();
    if letters.iter().any(|c| !c.is_ascii_alphabetic()) {
        return Err(format!("term '{term}' has characters other than letters"));
    }
    if term.contains("...") {
        let ell = rank
            .checked_sub(letters.len())
            .ok_or_else(|| format!("term '{term}' has more letters than rank {rank}"))?;
        *ell_rank = (*ell_rank).max(ell);
        let (before, after) = term.split_once("...").expect("contains");
        let mut v: Vec<char> = before.chars().collect();
        // Filled in later, once the widest ellipsis is known.
        v.extend((0..ell).map(|k| char::from(b'0' + (8 + k - ell) as u8)));
        v.extend(after.chars());
        Ok(v)
    } else if letters.len() != rank {
        Err(format!(
            "term '{term}' has {} letters for rank {rank}",
            letters.len()
        ))
    } else {
        Ok(letters)
    }
}

pub(crate) fn contraction(equation: &str, shapes: &[Vec<usize>]) -> R<Contraction> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != shapes.len() {
        return Err(format!(
            "equation '{equation}' has {} operand(s), the node {}",
            terms.len(),
            shapes.len()
        ));
    }
    let mut ell_rank = 0;
    let operands: Vec<Vec<char>> = terms
        .iter()
        .zip(shapes)
        .map(|(t, s)| expand(t, s.len(), &mut ell_rank))
        .collect::<R<_>>()?;
    // Ellipsis pseudo-letters are '8' - k .. '7' for the last k dims: the widest ellipsis
    // spans '8' - ell_rank .. '7'.
    let ell: Vec<char> = (0..ell_rank)
        .map(|k| char::from(b'0' + (8 + k - ell_rank) as u8))
        .collect();
    let mut sizes: BTreeMap<char, usize> = BTreeMap::new();
    for (letters, shape) in operands.iter().zip(shapes) {
        for (&c, &d) in letters.iter().zip(shape) {
            let e = sizes.entry(c).or_insert(d);
            if *e != d {
                if c.is_ascii_digit() && (*e == 1 || d == 1) {
                    *e = (*e).max(d);
                } else {
                    return Err(format!("letter '{c}' has sizes {e} and {d}"));
                }
            }
        }
    }
    let out: Vec<char> = match rhs {
        Some(r) => {
            let letters = r.replace("...", "");
            if letters.chars().any(|c| !sizes.contains_key(&c)) {
                return Err(format!("output '{r}' names a letter no operand has"));
            }
            let (before, after) = r.split_once("...").unwrap_or((&r, ""));
            let mut v: Vec<char> = before.chars().collect();
            if r.contains("...") {
                v.extend(&ell);
                v.extend(after.chars());
            }
            v
        }
        None => {
            let mut once: Vec<char> = sizes
                .keys()
                .copied()
                .filter(|c| c.is_ascii_alphabetic())
                .filter(|c| operands.iter().flatten().filter(|x| *x == c).count() == 1)
                .collect();
            once.sort();
            ell.iter().copied().chain(once).collect()
        }
    };
    let red: Vec<char> = sizes.keys().copied().filter(|c| !out.contains(c)).collect();
    if out.len() > MAX_RANK || red.len() > MAX_RANK {
        return Err("more than 8 output or summed letters".into());
    }
    let strides_along = |letters: &[char], shape: &[usize], along: &[char]| -> Vec<i64> {
        let cs = contiguous_strides(shape);
        along
            .iter()
            .map(|c| {
                letters
                    .iter()
                    .zip(shape)
                    .zip(&cs)
                    .filter(|((l, d), _)| *l == c && (**d != 1 || sizes[c] == 1))
                    .map(|(_, s)| *s)
                    .sum()
            })
            .collect()
    };
    Ok(Contraction {
        out_shape: out.iter().map(|c| sizes[c]).collect(),
        red_shape: red.iter().map(|c| sizes[c]).collect(),
        out_strides: operands
            .iter()
            .zip(shapes)
            .map(|(l, s)| strides_along(l, s, &out))
            .collect(),
        red_strides: operands
            .iter()
            .zip(shapes)
            .map(|(l, s)| strides_along(l, s, &red))
            .collect(),
    })
}

fn lower_einsum(cx: &mut Ctx, n: &NodeInfo) -> R<()> {
    let ins = ins(n);
    let out = out0(n);
    if ins.is_empty() || ins.len() > 2 {
        return Err(format!("{} operands (one or two run)", ins.len()));
    }
    for i in &ins {
        if cx.dt(i)? != DT::F32 {
            return Err("only f32 operands".into());
        }
    }
    let shapes: Vec<Vec<usize>> = ins.iter().map(|i| cx.shape(i)).collect::<R<_>>()?;
    let c = contraction(&attr_s(n, "equation", ""), &shapes)?;
    cx.new_tensor(out, c.out_shape.clone(), DT::F32)?;
    let total = numel(&c.out_shape);
    let two = ins.len() == 2;
    let zeros = vec![0i64; MAX_RANK];
    let side = |v: &Vec<Vec<i64>>, k: usize| v.get(k).unwrap_or(&zeros).clone();
    let p = params::Einsum {
        n: total as u32,
        out_rank: c.out_shape.len() as u32,
        red_rank: c.red_shape.len() as u32,
        red_count: numel(&c.red_shape) as u32,
        two: two as u32,
        out_shape: vec8_u32(&c.out_shape.iter().map(|&d| d as i64).collect::<Vec<_>>()),
        a_out: vec8_u32(&side(&c.out_strides, 0)),
        b_out: vec8_u32(&side(&c.out_strides, 1)),
        red_shape: vec8_u32(&c.red_shape.iter().map(|&d| d as i64).collect::<Vec<_>>()),
        a_red: vec8_u32(&side(&c.red_strides, 0)),
        b_red: vec8_u32(&side(&c.red_strides, 1)),
        ..Default::default()
    }
    .words();
    if total > 0 {
        let b = if two { cx.bind(ins[1]) } else { Binding::Dummy };
        cx.dispatch(
            n,
            Kernel::EinsumF32,
            vec![cx.bind(ins[0]), b, cx.bind(out)],
            p,
            groups_1d(total, 256),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
