//! The element-wise comparison every checkpoint goes through: tolerances, the pattern
//! match that picks one, the statistics and the hint from the error's shape.

use serde::Serialize;

/// An element passes when |engine - reference| <= atol' + rtol * |reference|, where
/// atol' = max(atol, scaled * the largest finite |reference| of the checkpoint).
///
/// `scaled` is for deep f32 stacks whose activations hold outliers (LLM residual streams
/// of 2e4): two f32 sums of the same terms in different orders differ by up to about K·u
/// times the terms' magnitudes (u = 6e-8, K the reduction's length), so an element near
/// zero in a tensor of large values carries an error set by the tensor's scale, not its
/// own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
    #[serde(skip_serializing_if = "is_zero")]
    pub scaled: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Defaults: f32 atol 1e-4 / rtol 1e-3 (both sides accumulate in f32, in different orders);
/// integers and booleans exact.
pub const F32_DEFAULT: Tolerance = Tolerance {
    atol: 1e-4,
    rtol: 1e-3,
    scaled: 0.0,
};
pub const EXACT: Tolerance = Tolerance {
    atol: 0.0,
    rtol: 0.0,
    scaled: 0.0,
};

/// `*` matches any run of characters, `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// What the comparison of one checkpoint found.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    pub max_abs: f64,
    pub mean_abs: f64,
    pub max_rel: f64,
    /// The largest error in units of the element's own tolerance:
    /// max |e| / (atol' + rtol * |ref|). An element passes when its ratio is <= 1, so the
    /// checkpoint passes when this does (0 where every element is exact; infinite for an
    /// unmatched NaN or infinity, or any error under an exact tolerance).
    pub max_ratio: f64,
    /// The element with the largest ratio (the one furthest out of tolerance), and its two
    /// values.
    pub worst_index: usize,
    pub worst_engine: f64,
    pub worst_reference: f64,
    pub nan_inf_engine: usize,
    pub nan_inf_reference: usize,
    pub pass: bool,
}

/// An element's error in units of its tolerance `atol + rtol * |reference|` (atol already
/// scaled); see [`Stats::max_ratio`].
pub fn error_ratio(x: f64, y: f64, atol: f64, rtol: f64) -> f64 {
    if x == y || (x.is_nan() && y.is_nan()) {
        return 0.0;
    }
    if !x.is_finite() || !y.is_finite() {
        return f64::INFINITY;
    }
    let bound = atol + rtol * y.abs();
    let err = (x - y).abs();
    if bound > 0.0 {
        err / bound
    } else {
        f64::INFINITY
    }
}

/// Statistics of engine values `a` against reference `b`.
pub fn compare(a: &[f64], b: &[f64], tol: Tolerance) -> Stats {
    let mut st = Stats {
        pass: a.len() == b.len(),
        ..Stats::default()
    };
    let mut sum = 0f64;
    let mut worst_ratio = -1f64;
    let scale = b
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, v| m.max(v.abs()));
    let atol = tol.atol.max(tol.scaled * scale);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        if !x.is_finite() {
            st.nan_inf_engine += 1;
        }
        if !y.is_finite() {
            st.nan_inf_reference += 1;
        }
        let same = x == y || (x.is_nan() && y.is_nan());
        // A NaN or an infinity that is not matched exactly is an infinite error: no
        // tolerance lets 3.4e38 pass for +inf or a number for NaN.
        let err = if same {
            0.0
        } else if !x.is_finite() || !y.is_finite() {
            f64::INFINITY
        } else {
            (x - y).abs()
        };
        sum += err;
        st.max_abs = st.max_abs.max(err);
        if y != 0.0 {
            st.max_rel = st.max_rel.max(err / y.abs());
        }
        let ratio = error_ratio(x, y, atol, tol.rtol);
        if ratio > worst_ratio {
            worst_ratio = ratio;
            (st.worst_index, st.worst_engine, st.worst_reference) = (i, x, y);
        }
        if !m2w_engine::tensor::within(x, y, atol, tol.rtol) {
            st.pass = false;
        }
    }
    st.max_ratio = worst_ratio.max(0.0);
    st.mean_abs = if a.is_empty() {
        0.0
    } else {
        sum / a.len() as f64
    };
    st
}

/// The smallest absolute tolerance, rounded up to one significant digit, under which every
/// element of `a` is within `atol + rtol * |b|` of `b` (None when no finite one does:
/// a NaN or infinity that differs).
pub fn passing_atol(a: &[f64], b: &[f64], rtol: f64) -> Option<f64> {
    let mut need = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        if x == y || (x.is_nan() && y.is_nan()) {
            continue;
        }
        if !x.is_finite() || !y.is_finite() {
            return None;
        }
        need = need.max((x - y).abs() - rtol * y.abs());
    }
    if need <= 0.0 {
        return Some(0.0);
    }
    let e = need.log10().floor();
    let unit = 10f64.powf(e);
    let m = need / unit;
    // 3e-4 / 1e-4 is 2.9999999999999996 in f64: a quotient a hair from an integer is that
    // integer, as long as the result still covers the need.
    let digit = if (m - m.round()).abs() < 1e-9 {
        m.round()
    } else {
        m.ceil()
    };
    let atol = digit * unit;
    Some(if atol >= need {
        atol
    } else {
        (digit + 1.0) * unit
    })
}

/// A hint from the shape of the error (the porting method's error-magnitude guide).
pub fn diagnose(a: &[f64], b: &[f64], inputs_ok: bool, name: &str, tol: Tolerance) -> String {
    if !inputs_ok {
        return "an input of this node already differs: the bug is upstream; fix the first failing input first".into();
    }
    if a.iter().any(|v| !v.is_finite()) && b.iter().all(|v| v.is_finite()) {
        return "NaN/Inf only on the engine side: an unclamped exp/tanh, a division by zero or an uninitialised buffer".into();
    }
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, y)| y.abs() > 1e-6)
        .map(|(x, y)| x / y)
        .collect();
    if ratios.len() > 4 {
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let spread = ratios.iter().map(|r| (r - mean).abs()).fold(0f64, f64::max);
        if spread < 1e-2 * mean.abs().max(1e-6) && (mean - 1.0).abs() > 1e-2 {
            let named = [
                (2.0, "2"),
                (0.5, "1/2"),
                (8.0, "sqrt(64)"),
                (0.125, "1/sqrt(64)"),
                (std::f64::consts::SQRT_2, "sqrt(2)"),
            ]
            .iter()
            .find(|(v, _)| (mean - v).abs() < 1e-2 * v)
            .map(|(_, n)| format!(" (~{n})"))
            .unwrap_or_default();
            return format!(
                "engine = {mean:.4} x reference everywhere{named}: a missing or extra scale (1/sqrt(d), 2, a norm constant)"
            );
        }
        if mean.abs() > 100.0 || (mean != 0.0 && mean.abs() < 0.01) {
            return format!(
                "off by a factor ~{mean:.3e}: wrong or undequantized weights, or the wrong weight tensor"
            );
        }
    }
    let scale = b
        .iter()
        .filter(|v| v.is_finite())
        .fold(0f64, |m, y| m.max(y.abs()));
    let atol = tol.atol.max(tol.scaled * scale);
    let within = |x: f64, y: f64| m2w_engine::tensor::within(x, y, atol, tol.rtol);
    let failing = a.iter().zip(b).filter(|(x, y)| !within(**x, **y)).count();
    let max_err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f64, f64::max);
    if failing * 100 < a.len().max(1)
        && max_err < 1e-5 * scale
        && let Some(need) = passing_atol(a, b, tol.rtol)
    {
        // The override must be one that passes: the smallest atol (at this rtol) under
        // which every element is within tolerance, never the tolerance that just failed.
        return format!(
            "{failing} isolated element(s) near zero in a tensor of scale {scale:.3e} (max error {max_err:.1e} = {:.1e} of the scale): f32 summation-order noise where large terms cancel; judge this checkpoint with an absolute tolerance: --tol '{name}={need:.0e},{:e}'",
            max_err / scale,
            tol.rtol
        );
    }
    let good_prefix = a
        .iter()
        .zip(b)
        .take_while(|(x, y)| within(**x, **y))
        .count();
    let rest_failing = a
        .iter()
        .zip(b)
        .skip(good_prefix)
        .filter(|(x, y)| !within(**x, **y))
        .count();
    if good_prefix > 0
        && good_prefix >= a.len() / 16
        && good_prefix < a.len()
        && rest_failing * 2 > a.len() - good_prefix
    {
        return format!(
            "the first {good_prefix} elements are right, then wrong: a stride, offset or buffer-size bug"
        );
    }
    let mean_abs_ref = b.iter().map(|v| v.abs()).sum::<f64>() / b.len().max(1) as f64;
    let mean_err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len().max(1) as f64;
    if mean_err > 0.5 * mean_abs_ref {
        return "errors as large as the values themselves: a wrong or uninitialised buffer, or the wrong bind group".into();
    }
    "a small systematic difference: a wrong activation or approximation, padding, or an off-by-one in indexing".into()
}

#[cfg(test)]
mod tests {
    use super::{F32_DEFAULT, Tolerance, compare, diagnose, error_ratio, passing_atol};

    #[test]
    fn the_worst_element_is_the_one_furthest_out_of_its_own_tolerance() {
        // 1000.5 vs 1000 errs 0.5 but is allowed 1.0001; 0.01 vs 0 errs 0.01 against 1e-4.
        let st = compare(&[1000.5, 0.01, 2.0], &[1000.0, 0.0, 2.0], F32_DEFAULT);
        assert_eq!(st.max_abs, 0.5);
        assert_eq!(
            (st.worst_index, st.worst_engine, st.worst_reference),
            (1, 0.01, 0.0)
        );
        assert!((st.max_ratio - 100.0).abs() < 1e-9);
        assert!(!st.pass);
        // The ratio decides exactly as the gate: at most 1 passes.
        let st = compare(&[1000.5], &[1000.0], F32_DEFAULT);
        assert!(st.pass && st.max_ratio <= 1.0);
        assert_eq!(error_ratio(f64::NAN, f64::NAN, 0.0, 0.0), 0.0);
        assert_eq!(error_ratio(1.0, f64::INFINITY, 1.0, 1.0), f64::INFINITY);
        assert_eq!(error_ratio(1.0, 2.0, 0.0, 0.0), f64::INFINITY);
    }

    #[test]
    fn the_proposed_override_is_one_that_passes_never_the_tolerance_that_failed() {
        // A tensor of scale 1e3 with one element near zero off by 3e-4 (over 1e-4).
        let mut b: Vec<f64> = (0..400).map(|i| 1000.0 + i as f64).collect();
        b[7] = 0.0;
        let mut a = b.clone();
        a[7] = 3e-4;
        assert!(!compare(&a, &b, F32_DEFAULT).pass);
        let need = passing_atol(&a, &b, 1e-3).unwrap();
        assert!((need - 3e-4).abs() < 1e-12, "{need}");
        let hint = diagnose(&a, &b, true, "/x/Add_output_0", F32_DEFAULT);
        assert!(hint.contains("--tol '/x/Add_output_0=3e-4,1e-3'"), "{hint}");
        let proposed = Tolerance {
            atol: need,
            ..F32_DEFAULT
        };
        assert!(compare(&a, &b, proposed).pass);
        assert_eq!(passing_atol(&[f64::NAN], &[1.0], 1e-3), None);
    }

    #[test]
    fn a_scaled_tolerance_follows_the_largest_value_of_the_tensor() {
        let tol = Tolerance {
            atol: 1e-4,
            rtol: 1e-3,
            scaled: 1e-4,
        };
        // An error of 0.01 on an element near 0: within 1e-4 x 2e4 = 2 ...
        assert!(compare(&[0.01, 2e4], &[0.0, 2e4], tol).pass);
        // ... not when the tensor is small, nor beyond the scaled bound.
        assert!(!compare(&[0.01, 2.0], &[0.0, 2.0], tol).pass);
        assert!(!compare(&[3.0, 2e4], &[0.0, 2e4], tol).pass);
        // Without it, elementwise only.
        assert!(!compare(&[0.01, 2e4], &[0.0, 2e4], super::F32_DEFAULT).pass);
        // An infinite reference value sets no scale.
        assert!(!compare(&[0.01, f64::INFINITY], &[0.0, f64::INFINITY], tol).pass);
    }

    #[test]
    fn an_infinity_or_nan_is_matched_exactly_whatever_the_tolerance() {
        let tol = Tolerance {
            atol: 1e-4,
            rtol: 1e-3,
            scaled: 0.0,
        };
        let pass = |a: &[f64], b: &[f64]| compare(a, b, tol).pass;
        assert!(!pass(&[3.4e38], &[f64::INFINITY]));
        assert!(!pass(&[-3.4e38], &[f64::NEG_INFINITY]));
        assert!(!pass(&[f64::INFINITY], &[f64::NEG_INFINITY]));
        assert!(!pass(&[0.0], &[f64::NAN]));
        assert!(!pass(&[f64::NAN], &[0.0]));
        assert!(pass(&[f64::INFINITY, f64::NAN], &[f64::INFINITY, f64::NAN]));
        assert!(pass(&[1.0005], &[1.0]));
        // The error statistic of a non-finite mismatch is infinite.
        assert_eq!(
            compare(&[3.4e38], &[f64::INFINITY], tol).max_abs,
            f64::INFINITY
        );
    }
}
