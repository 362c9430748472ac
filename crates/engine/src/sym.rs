//! Symbolic sizes: integer expressions over a model's named dims (`sequence_length`,
//! `height`, ...), the seam of dynamic shapes (issue 13, docs/DYNAMIC_SHAPES.md). A plan
//! whose uniform words, workgroup counts and shapes are [`Expr`]s runs for every binding of
//! its dims: the native runner evaluates them with [`Expr::eval`], the generated
//! TypeScript engine with the JavaScript [`Expr::to_js`] writes.
//!
//! Expressions are kept in a canonical form as they are built (constants folded, sums and
//! products flattened and sorted, like terms combined), so that two ways of computing the
//! same size compare equal and most sizes print as what they are (`384*sequence_length`).
//! Division rounds toward negative infinity (floor) or up (ceil), by a positive constant
//! only; sizes are never negative, so this is the arithmetic shape code needs.

use std::collections::BTreeMap;
use std::fmt;

/// An integer expression over named dims.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expr {
    Const(i64),
    Sym(String),
    /// A sum of at least two terms, canonical order, at most one constant (last).
    Add(Vec<Expr>),
    /// A product of at least two factors, canonical order, at most one constant (first).
    Mul(Vec<Expr>),
    FloorDiv(Box<Expr>, i64),
    CeilDiv(Box<Expr>, i64),
    Min(Box<Expr>, Box<Expr>),
    Max(Box<Expr>, Box<Expr>),
}

/// Values bound to dims, by name.
pub type Bindings = BTreeMap<String, i64>;

impl Default for Expr {
    fn default() -> Expr {
        Expr::Const(0)
    }
}

/// In JSON a constant is a plain number (so a static plan reads as before) and anything
/// else an object tagged by its operation (`{"sym": "sequence"}`, `{"mul": [384, ...]}`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Repr {
    Num(i64),
    Node(Node),
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Node {
    Sym(String),
    Add(Vec<Expr>),
    Mul(Vec<Expr>),
    FloorDiv(Box<Expr>, i64),
    CeilDiv(Box<Expr>, i64),
    Min(Box<Expr>, Box<Expr>),
    Max(Box<Expr>, Box<Expr>),
}

impl serde::Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = match self.clone() {
            Expr::Const(v) => Repr::Num(v),
            Expr::Sym(n) => Repr::Node(Node::Sym(n)),
            Expr::Add(v) => Repr::Node(Node::Add(v)),
            Expr::Mul(v) => Repr::Node(Node::Mul(v)),
            Expr::FloorDiv(e, d) => Repr::Node(Node::FloorDiv(e, d)),
            Expr::CeilDiv(e, d) => Repr::Node(Node::CeilDiv(e, d)),
            Expr::Min(a, b) => Repr::Node(Node::Min(a, b)),
            Expr::Max(a, b) => Repr::Node(Node::Max(a, b)),
        };
        r.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Expr, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Num(v) => Expr::Const(v),
            Repr::Node(Node::Sym(n)) => Expr::Sym(n),
            Repr::Node(Node::Add(v)) => Expr::Add(v),
            Repr::Node(Node::Mul(v)) => Expr::Mul(v),
            Repr::Node(Node::FloorDiv(e, k)) => Expr::FloorDiv(e, k),
            Repr::Node(Node::CeilDiv(e, k)) => Expr::CeilDiv(e, k),
            Repr::Node(Node::Min(a, b)) => Expr::Min(a, b),
            Repr::Node(Node::Max(a, b)) => Expr::Max(a, b),
        })
    }
}

/// Symbolic uniform blocks: `m2w_kernels::params::*::<Expr, Expr>` packs into
/// expressions; f32 fields are constants (their bits).
impl m2w_kernels::Put<Expr> for Expr {
    const SLOTS: usize = 1;
    fn put(&self, w: &mut [Expr]) {
        w[0] = self.clone();
    }
}

impl m2w_kernels::Put<Expr> for f32 {
    const SLOTS: usize = 1;
    fn put(&self, w: &mut [Expr]) {
        w[0] = Expr::Const(self.to_bits() as i64);
    }
}

impl Expr {
    pub fn sym(name: &str) -> Expr {
        Expr::Sym(name.into())
    }

    /// The value when the expression holds no dim.
    pub fn as_const(&self) -> Option<i64> {
        match self {
            Expr::Const(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a uniform word (low 32 bits: an i32 field's negative values and an
    /// f32 field's bits pack the same way).
    pub fn word(&self, dims: &Bindings) -> Result<u32, String> {
        Ok(self.eval(dims)? as u32)
    }

    /// The value as a size (Err when negative).
    pub fn size(&self, dims: &Bindings) -> Result<usize, String> {
        let v = self.eval(dims)?;
        usize::try_from(v).map_err(|_| format!("{self} is {v} for {dims:?}, not a size"))
    }

    /// The dims it reads, sorted, once each.
    pub fn symbols(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_symbols(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_symbols(&self, out: &mut Vec<String>) {
        match self {
            Expr::Const(_) => {}
            Expr::Sym(s) => out.push(s.clone()),
            Expr::Add(v) | Expr::Mul(v) => v.iter().for_each(|e| e.collect_symbols(out)),
            Expr::FloorDiv(e, _) | Expr::CeilDiv(e, _) => e.collect_symbols(out),
            Expr::Min(a, b) | Expr::Max(a, b) => {
                a.collect_symbols(out);
                b.collect_symbols(out);
            }
        }
    }

    /// The value for bound dims; Err names a dim that is not bound.
    pub fn eval(&self, dims: &Bindings) -> Result<i64, String> {
        Ok(match self {
            Expr::Const(v) => *v,
            Expr::Sym(s) => *dims
                .get(s)
                .ok_or_else(|| format!("dim '{s}' is not bound"))?,
            Expr::Add(v) => v.iter().map(|e| e.eval(dims)).sum::<Result<i64, _>>()?,
            Expr::Mul(v) => v.iter().map(|e| e.eval(dims)).product::<Result<i64, _>>()?,
            Expr::FloorDiv(e, d) => e.eval(dims)?.div_euclid(*d),
            Expr::CeilDiv(e, d) => {
                let v = e.eval(dims)?;
                v.div_euclid(*d) + i64::from(v.rem_euclid(*d) != 0)
            }
            Expr::Min(a, b) => a.eval(dims)?.min(b.eval(dims)?),
            Expr::Max(a, b) => a.eval(dims)?.max(b.eval(dims)?),
        })
    }

    /// A JavaScript expression over `d` (an object of dim values) with the same value.
    pub fn to_js(&self) -> String {
        match self {
            Expr::Const(v) => v.to_string(),
            Expr::Sym(s) => format!("d[{s:?}]"),
            Expr::Add(v) => format!(
                "({})",
                v.iter().map(Expr::to_js).collect::<Vec<_>>().join(" + ")
            ),
            Expr::Mul(v) => format!(
                "({})",
                v.iter().map(Expr::to_js).collect::<Vec<_>>().join(" * ")
            ),
            Expr::FloorDiv(e, d) => format!("Math.floor({} / {d})", e.to_js()),
            Expr::CeilDiv(e, d) => format!("Math.ceil({} / {d})", e.to_js()),
            Expr::Min(a, b) => format!("Math.min({}, {})", a.to_js(), b.to_js()),
            Expr::Max(a, b) => format!("Math.max({}, {})", a.to_js(), b.to_js()),
        }
    }

    /// The range of values over every binding of dims in [0, their maximum] (a dim
    /// missing from `max` is unbounded above).
    pub fn bounds(&self, max: &Bindings) -> (i64, i64) {
        self.bounds_in(&Bindings::new(), max)
    }

    /// [`Expr::bounds`] with each dim in [its minimum in `min` (else 0), its maximum].
    pub fn bounds_in(&self, min: &Bindings, max: &Bindings) -> (i64, i64) {
        const BIG: i64 = 1 << 40;
        let clamp = |v: i128| v.clamp(-(BIG as i128), BIG as i128) as i64;
        match self {
            Expr::Const(v) => (*v, *v),
            Expr::Sym(s) => (
                min.get(s).copied().unwrap_or(0),
                max.get(s).copied().unwrap_or(BIG),
            ),
            Expr::Add(v) => v.iter().fold((0, 0), |(lo, hi), e| {
                let (a, b) = e.bounds_in(min, max);
                (clamp(lo as i128 + a as i128), clamp(hi as i128 + b as i128))
            }),
            Expr::Mul(v) => v.iter().fold((1, 1), |(lo, hi), e| {
                let (a, b) = e.bounds_in(min, max);
                let c = [
                    lo as i128 * a as i128,
                    lo as i128 * b as i128,
                    hi as i128 * a as i128,
                    hi as i128 * b as i128,
                ];
                (
                    clamp(*c.iter().min().unwrap()),
                    clamp(*c.iter().max().unwrap()),
                )
            }),
            Expr::FloorDiv(e, d) => {
                let (a, b) = e.bounds_in(min, max);
                (a.div_euclid(*d), b.div_euclid(*d))
            }
            Expr::CeilDiv(e, d) => {
                let (a, b) = e.bounds_in(min, max);
                let up = |v: i64| v.div_euclid(*d) + i64::from(v.rem_euclid(*d) != 0);
                (up(a), up(b))
            }
            Expr::Min(x, y) => {
                let ((a, b), (c, d)) = (x.bounds_in(min, max), y.bounds_in(min, max));
                (a.min(c), b.min(d))
            }
            Expr::Max(x, y) => {
                let ((a, b), (c, d)) = (x.bounds_in(min, max), y.bounds_in(min, max));
                (a.max(c), b.max(d))
            }
        }
    }

    /// The same value for every binding of dims within their maxima, with each min and
    /// max whose operands' ranges do not overlap replaced by the operand that wins
    /// (`min(512, sequence)` is `sequence` when sequence is at most 512).
    pub fn simplify(&self, max: &Bindings) -> Expr {
        self.simplify_in(&Bindings::new(), max)
    }

    /// [`Expr::simplify`] with each dim in [its minimum in `min` (else 0), its maximum]; a
    /// min or max whose operands differ by a constant is decided whatever the dims.
    pub fn simplify_in(&self, min: &Bindings, max: &Bindings) -> Expr {
        match self {
            Expr::Const(_) | Expr::Sym(_) => self.clone(),
            Expr::Add(v) => v
                .iter()
                .fold(Expr::Const(0), |acc, e| acc + e.simplify_in(min, max)),
            Expr::Mul(v) => v
                .iter()
                .fold(Expr::Const(1), |acc, e| acc * e.simplify_in(min, max)),
            Expr::FloorDiv(e, d) => e.simplify_in(min, max).floor_div(*d),
            Expr::CeilDiv(e, d) => e.simplify_in(min, max).ceil_div(*d),
            Expr::Min(a, b) | Expr::Max(a, b) => {
                let (a, b) = (a.simplify_in(min, max), b.simplify_in(min, max));
                let ((alo, ahi), (blo, bhi)) = (a.bounds_in(min, max), b.bounds_in(min, max));
                // Whether a <= b for every binding: exactly when they differ by a
                // constant, else when their ranges do not overlap.
                let a_le_b = match (a.clone() - b.clone()).as_const() {
                    Some(d) => Some(d <= 0),
                    None if ahi <= blo => Some(true),
                    None if bhi <= alo => Some(false),
                    None => None,
                };
                let is_min = matches!(self, Expr::Min(..));
                match (a_le_b, is_min) {
                    (Some(true), true) | (Some(false), false) => a,
                    (Some(true), false) | (Some(false), true) => b,
                    (None, true) => a.min(b),
                    (None, false) => a.max(b),
                }
            }
        }
    }

    /// `floor(self / d)` for a positive constant d.
    pub fn floor_div(self, d: i64) -> Expr {
        assert!(d > 0, "division by {d}");
        if d == 1 {
            return self;
        }
        match self {
            Expr::Const(v) => Expr::Const(v.div_euclid(d)),
            // (k * d * x) / d = k * x when every term divides exactly.
            e => match e.divide_exactly(d) {
                Some(q) => q,
                None => Expr::FloorDiv(Box::new(e), d),
            },
        }
    }

    /// `ceil(self / d)` for a positive constant d.
    pub fn ceil_div(self, d: i64) -> Expr {
        assert!(d > 0, "division by {d}");
        if d == 1 {
            return self;
        }
        match self {
            Expr::Const(v) => Expr::Const(v.div_euclid(d) + i64::from(v.rem_euclid(d) != 0)),
            e => match e.divide_exactly(d) {
                Some(q) => q,
                None => Expr::CeilDiv(Box::new(e), d),
            },
        }
    }

    pub fn min(self, other: Expr) -> Expr {
        self.extremum(other, i64::min, Expr::Min)
    }

    pub fn max(self, other: Expr) -> Expr {
        self.extremum(other, i64::max, Expr::Max)
    }

    /// min or max: folded for constants and repeats, operands in canonical order.
    fn extremum(
        self,
        other: Expr,
        fold: fn(i64, i64) -> i64,
        make: fn(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Expr {
        match (&self, &other) {
            (Expr::Const(a), Expr::Const(b)) => Expr::Const(fold(*a, *b)),
            _ if self == other => self,
            _ if self <= other => make(Box::new(self), Box::new(other)),
            _ => make(Box::new(other), Box::new(self)),
        }
    }

    /// `self / other` when it divides exactly as polynomials: a constant divides every
    /// coefficient, a product's factors occur in every term (`384*S / (6*S)` is 64).
    /// None when that cannot be shown (the division may still be exact for some dims).
    pub fn div_exact(&self, other: &Expr) -> Option<Expr> {
        let (c, rest) = other.split_coefficient();
        if c <= 0 {
            return None;
        }
        let divisor: Vec<Expr> = match rest {
            Expr::Const(1) => vec![],
            Expr::Mul(f) => f,
            e => vec![e],
        };
        let terms: Vec<Expr> = match self {
            Expr::Add(t) => t.clone(),
            e => vec![e.clone()],
        };
        let mut out = Expr::Const(0);
        for t in terms {
            let (tc, trest) = t.split_coefficient();
            if tc % c != 0 {
                return None;
            }
            let mut factors: Vec<Expr> = match trest {
                Expr::Const(1) => vec![],
                Expr::Mul(f) => f,
                e => vec![e],
            };
            for f in &divisor {
                let k = factors.iter().position(|g| g == f)?;
                factors.remove(k);
            }
            out = out + factors.into_iter().fold(Expr::Const(tc / c), |a, f| a * f);
        }
        Some(out)
    }

    /// `self / d` when every term's coefficient is a multiple of d.
    fn divide_exactly(&self, d: i64) -> Option<Expr> {
        match self {
            Expr::Const(v) if v % d == 0 => Some(Expr::Const(v / d)),
            Expr::Add(terms) => {
                let parts: Option<Vec<Expr>> = terms.iter().map(|t| t.divide_exactly(d)).collect();
                parts.map(|p| p.into_iter().fold(Expr::Const(0), |acc, t| acc + t))
            }
            Expr::Mul(_) => {
                let (c, rest) = self.split_coefficient();
                (c % d == 0).then(|| Expr::Const(c / d) * rest)
            }
            _ => None,
        }
    }

    /// (coefficient, the rest) of a term: `6*S` is (6, S); `S` is (1, S).
    fn split_coefficient(&self) -> (i64, Expr) {
        match self {
            Expr::Const(v) => (*v, Expr::Const(1)),
            Expr::Mul(f) => match f.first() {
                Some(Expr::Const(c)) => {
                    let rest: Vec<Expr> = f[1..].to_vec();
                    let rest = if rest.len() == 1 {
                        rest.into_iter().next().expect("one")
                    } else {
                        Expr::Mul(rest)
                    };
                    (*c, rest)
                }
                _ => (1, self.clone()),
            },
            e => (1, e.clone()),
        }
    }
}

impl From<i64> for Expr {
    fn from(v: i64) -> Expr {
        Expr::Const(v)
    }
}

impl From<usize> for Expr {
    fn from(v: usize) -> Expr {
        Expr::Const(v as i64)
    }
}

impl std::ops::Add for Expr {
    type Output = Expr;
    fn add(self, rhs: Expr) -> Expr {
        // Flatten, then combine like terms by their non-constant part.
        let mut terms: BTreeMap<Expr, i64> = BTreeMap::new();
        let mut constant = 0i64;
        for t in [self, rhs] {
            let flat = match t {
                Expr::Add(v) => v,
                other => vec![other],
            };
            for t in flat {
                match t {
                    Expr::Const(v) => constant += v,
                    other => {
                        let (c, rest) = other.split_coefficient();
                        *terms.entry(rest).or_insert(0) += c;
                    }
                }
            }
        }
        let mut out: Vec<Expr> = terms
            .into_iter()
            .filter(|(_, c)| *c != 0)
            .map(|(rest, c)| Expr::Const(c) * rest)
            .collect();
        if constant != 0 || out.is_empty() {
            out.push(Expr::Const(constant));
        }
        if out.len() == 1 {
            out.pop().expect("one")
        } else {
            Expr::Add(out)
        }
    }
}

impl std::ops::Sub for Expr {
    type Output = Expr;
    fn sub(self, rhs: Expr) -> Expr {
        self + Expr::Const(-1) * rhs
    }
}

impl std::ops::Mul for Expr {
    type Output = Expr;
    fn mul(self, rhs: Expr) -> Expr {
        // Distribute over sums so that sizes stay polynomials in canonical form.
        if let Expr::Add(terms) = &self {
            return terms
                .iter()
                .fold(Expr::Const(0), |acc, t| acc + t.clone() * rhs.clone());
        }
        if let Expr::Add(terms) = &rhs {
            return terms
                .iter()
                .fold(Expr::Const(0), |acc, t| acc + self.clone() * t.clone());
        }
        let mut constant = 1i64;
        let mut factors = Vec::new();
        for f in [self, rhs] {
            let flat = match f {
                Expr::Mul(v) => v,
                other => vec![other],
            };
            for f in flat {
                match f {
                    Expr::Const(v) => constant *= v,
                    other => factors.push(other),
                }
            }
        }
        if constant == 0 {
            return Expr::Const(0);
        }
        factors.sort();
        if factors.is_empty() {
            return Expr::Const(constant);
        }
        if constant == 1 && factors.len() == 1 {
            return factors.pop().expect("one");
        }
        if constant != 1 {
            factors.insert(0, Expr::Const(constant));
        }
        Expr::Mul(factors)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const(v) => write!(f, "{v}"),
            Expr::Sym(s) => write!(f, "{s}"),
            Expr::Add(v) => {
                let parts: Vec<String> = v.iter().map(|e| e.to_string()).collect();
                write!(f, "({})", parts.join(" + "))
            }
            Expr::Mul(v) => {
                let parts: Vec<String> = v.iter().map(|e| e.to_string()).collect();
                write!(f, "{}", parts.join("*"))
            }
            Expr::FloorDiv(e, d) => write!(f, "floor({e} / {d})"),
            Expr::CeilDiv(e, d) => write!(f, "ceil({e} / {d})"),
            Expr::Min(a, b) => write!(f, "min({a}, {b})"),
            Expr::Max(a, b) => write!(f, "max({a}, {b})"),
        }
    }
}

/// A shape of constants.
pub fn fixed(shape: &[usize]) -> Vec<Expr> {
    shape.iter().map(|&d| Expr::from(d)).collect()
}

/// The shape's values when none holds a dim.
pub fn as_fixed(shape: &[Expr]) -> Option<Vec<usize>> {
    shape
        .iter()
        .map(|d| d.as_const().and_then(|v| usize::try_from(v).ok()))
        .collect()
}

/// Human form of a shape: `[1, sequence, 384]`.
pub fn show(shape: &[Expr]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The number of elements of a shape.
pub fn numel(shape: &[Expr]) -> Expr {
    shape.iter().cloned().fold(Expr::Const(1), |acc, d| acc * d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Expr {
        Expr::sym("sequence")
    }

    fn at(e: &Expr, v: i64) -> i64 {
        e.eval(&Bindings::from([("sequence".to_string(), v)]))
            .unwrap()
    }

    #[test]
    fn sizes_fold_to_canonical_polynomials() {
        let e = numel(&[Expr::from(1usize), s(), Expr::from(384usize)]);
        assert_eq!(e, Expr::Const(384) * s());
        assert_eq!(e.to_string(), "384*sequence");
        // Two ways to the same size compare equal.
        let a = (s() + Expr::from(2i64)) * Expr::from(3i64);
        let b = Expr::from(6i64) + s() * Expr::from(3i64);
        assert_eq!(a, b);
        assert_eq!(s() - s(), Expr::Const(0));
        assert_eq!(s() * Expr::from(0i64), Expr::Const(0));
    }

    #[test]
    fn division_is_exact_when_it_can_be_and_floor_or_ceil_otherwise() {
        let e = (Expr::Const(384) * s()).floor_div(128);
        assert_eq!(e, Expr::Const(3) * s());
        let g = (Expr::Const(384) * s()).ceil_div(256);
        assert!(matches!(g, Expr::CeilDiv(..)));
        for v in [1, 7, 16, 128] {
            assert_eq!(at(&g, v), (384 * v + 255) / 256);
            assert_eq!(at(&s().floor_div(3), v), v / 3);
        }
        assert_eq!(Expr::Const(7).ceil_div(2), Expr::Const(4));
        assert_eq!(Expr::Const(-7).floor_div(2), Expr::Const(-4));
    }

    #[test]
    fn evaluation_needs_every_dim_bound_and_javascript_agrees() {
        let e = (s() + Expr::Const(5)).ceil_div(4).max(Expr::Const(2)) * Expr::sym("batch");
        assert!(e.eval(&Bindings::new()).unwrap_err().contains("not bound"));
        let dims = Bindings::from([("sequence".to_string(), 10), ("batch".to_string(), 3)]);
        assert_eq!(e.eval(&dims).unwrap(), 12);
        assert_eq!(
            e.symbols(),
            vec!["batch".to_string(), "sequence".to_string()]
        );
        let js = e.to_js();
        assert!(
            js.contains("Math.ceil") && js.contains("d[\"sequence\"]"),
            "{js}"
        );
        // Serialisable for the plan.
        let back: Expr = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        // A constant is a plain number in JSON.
        assert_eq!(serde_json::to_string(&Expr::Const(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<Expr>("7").unwrap(), Expr::Const(7));
    }

    #[test]
    fn bounds_decide_min_and_max_within_the_maxima() {
        let max = Bindings::from([("sequence".to_string(), 128)]);
        let e = Expr::Const(0).max(Expr::Const(512).min(s()));
        assert_eq!(e.simplify(&max), s());
        assert_eq!(
            (s() - Expr::Const(1)).max(Expr::Const(0)).simplify(&max),
            (s() - Expr::Const(1)).max(Expr::Const(0))
        );
        assert_eq!(
            s().min(Expr::Const(64)).simplify(&max),
            s().min(Expr::Const(64))
        );
        assert_eq!((Expr::Const(3) * s()).bounds(&max), (0, 384));
    }

    #[test]
    fn exact_division_cancels_factors() {
        let n = Expr::Const(384) * s() * Expr::sym("batch");
        assert_eq!(
            n.div_exact(&(Expr::Const(6) * s())),
            Some(Expr::Const(64) * Expr::sym("batch"))
        );
        assert_eq!(n.div_exact(&n), Some(Expr::Const(1)));
        assert_eq!(n.div_exact(&Expr::sym("height")), None);
        assert_eq!((s() + Expr::Const(1)).div_exact(&s()), None);
        assert_eq!(Expr::Const(12).div_exact(&Expr::Const(5)), None);
    }

    #[test]
    fn min_and_max_fold_constants_and_repeats() {
        assert_eq!(Expr::Const(3).min(Expr::Const(5)), Expr::Const(3));
        assert_eq!(s().max(s()), s());
        assert_eq!(at(&s().min(Expr::Const(8)), 20), 8);
    }
}
