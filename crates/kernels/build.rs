//! Expands `templates/*.wgsl.tmpl` into one named WGSL file per variant in OUT_DIR and a
//! registry (`shaders.rs`) the crate includes. `cargo xtask kernels --out DIR` writes the
//! same files for reading. Placeholders are `{{NAME}}`; every variant is listed below, so
//! the set of shaders is fixed at build time (no strings assembled at run time).

use std::collections::BTreeMap;
use std::path::Path;

struct Variant {
    template: &'static str,
    name: String,
    vars: BTreeMap<&'static str, String>,
}

fn v(template: &'static str, name: impl Into<String>, vars: &[(&'static str, &str)]) -> Variant {
    Variant {
        template,
        name: name.into(),
        vars: vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

/// (op, input type, output type, expression over x, y, z, p0, p1)
const UNARY_F32: &[(&str, &str)] = &[
    ("abs", "abs(x)"),
    ("neg", "-x"),
    ("relu", "max(x, 0.0)"),
    ("sigmoid", "1.0 / (1.0 + safe_exp(-x))"),
    ("tanh", "tanh_f(x)"),
    ("exp", "safe_exp(x)"),
    ("log", "log(x)"),
    ("sqrt", "sqrt(x)"),
    ("reciprocal", "1.0 / x"),
    ("floor", "floor(x)"),
    ("ceil", "ceil(x)"),
    ("round", "round(x)"),
    ("sin", "sin(x)"),
    ("cos", "cos(x)"),
    ("tan", "tan(x)"),
    ("asin", "asin(x)"),
    ("acos", "acos(x)"),
    ("atan", "atan(x)"),
    ("sinh", "sinh(clamp(x, -88.0, 88.0))"),
    ("cosh", "cosh(clamp(x, -88.0, 88.0))"),
    ("asinh", "asinh(x)"),
    ("acosh", "acosh(x)"),
    ("atanh", "atanh(x)"),
    ("erf", "erf_approx(x)"),
    ("sign", "sign(x)"),
    ("softplus", "softplus_f(x)"),
    ("softsign", "x / (1.0 + abs(x))"),
    ("elu", "select(p0 * (safe_exp(x) - 1.0), x, x > 0.0)"),
    ("selu", "p1 * select(p0 * (safe_exp(x) - 1.0), x, x > 0.0)"),
    (
        "celu",
        "max(0.0, x) + min(0.0, p0 * (safe_exp(x / p0) - 1.0))",
    ),
    ("leaky_relu", "select(p0 * x, x, x >= 0.0)"),
    ("thresholded_relu", "select(0.0, x, x > p0)"),
    ("hard_sigmoid", "clamp(p0 * x + p1, 0.0, 1.0)"),
    ("hard_swish", "x * clamp(x / 6.0 + 0.5, 0.0, 1.0)"),
    ("mish", "x * tanh_f(softplus_f(x))"),
    (
        "gelu",
        "0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752))",
    ),
    (
        "gelu_tanh",
        "0.5 * x * (1.0 + tanh_f(0.7978845608028654 * (x + 0.044715 * x * x * x)))",
    ),
    ("copy", "x"),
];

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut variants = Vec::new();
    let ew = |name: &str, ta: &str, tb: &str, tc: &str, to: &str, expr: &str| {
        v(
            "elementwise",
            format!("ew_{name}"),
            &[
                ("TA", ta),
                ("TB", tb),
                ("TC", tc),
                ("TO", to),
                ("EXPR", expr),
                ("NAME", &format!("ew_{name}")),
            ],
        )
    };
    for (op, expr) in UNARY_F32 {
        variants.push(ew(&format!("{op}_f32"), "f32", "f32", "f32", "f32", expr));
    }
    for (op, expr) in [
        ("abs", "abs(x)"),
        ("neg", "-x"),
        ("sign", "sign(x)"),
        ("copy", "x"),
        ("relu", "max(x, 0)"),
    ] {
        variants.push(ew(&format!("{op}_i32"), "i32", "i32", "i32", "i32", expr));
    }
    variants.push(ew(
        "not_bool",
        "u32",
        "u32",
        "u32",
        "u32",
        "1u - min(x, 1u)",
    ));
    variants.push(ew(
        "isnan_f32",
        "f32",
        "f32",
        "f32",
        "u32",
        "select(0u, 1u, !(x == x))",
    ));
    variants.push(ew("isinf_f32", "f32", "f32", "f32", "u32", "select(0u, 1u, abs(x) > 3.402823e38 && ((x > 0.0 && p0 != 0.0) || (x < 0.0 && p1 != 0.0)))"));
    // Binary, numeric.
    for (t, zero) in [("f32", "0.0"), ("i32", "0")] {
        for (op, expr) in [
            ("add", "x + y"),
            ("sub", "x - y"),
            ("mul", "x * y"),
            ("max", "max(x, y)"),
            ("min", "min(x, y)"),
        ] {
            variants.push(ew(&format!("{op}_{t}"), t, t, t, t, expr));
        }
        for (op, expr) in [
            ("equal", "x == y"),
            ("greater", "x > y"),
            ("greater_or_equal", "x >= y"),
            ("less", "x < y"),
            ("less_or_equal", "x <= y"),
        ] {
            variants.push(ew(
                &format!("{op}_{t}"),
                t,
                t,
                t,
                "u32",
                &format!("select(0u, 1u, {expr})"),
            ));
        }
        variants.push(ew(
            &format!("where_{t}"),
            "u32",
            t,
            t,
            t,
            "select(z, y, x != 0u)",
        ));
        variants.push(ew(&format!("clip_{t}"), t, t, t, t, "min(max(x, y), z)"));
        variants.push(ew(
            &format!("prelu_{t}"),
            t,
            t,
            t,
            t,
            &format!("select(y * x, x, x >= {zero})"),
        ));
    }
    variants.push(ew("div_f32", "f32", "f32", "f32", "f32", "x / y"));
    variants.push(ew(
        "silu_mul_f32",
        "f32",
        "f32",
        "f32",
        "f32",
        "x / (1.0 + safe_exp(-x)) * y",
    ));
    variants.push(ew(
        "div_i32",
        "i32",
        "i32",
        "i32",
        "i32",
        "select(0, x / y, y != 0)",
    ));
    variants.push(ew("pow_f32", "f32", "f32", "f32", "f32", "select(pow(abs(x), y) * select(1.0, -1.0, fract(y * 0.5) != 0.0), pow(x, y), x >= 0.0 || fract(y) != 0.0)"));
    variants.push(ew(
        "fmod_f32",
        "f32",
        "f32",
        "f32",
        "f32",
        "x - y * trunc(x / y)",
    ));
    variants.push(ew(
        "mod_i32",
        "i32",
        "i32",
        "i32",
        "i32",
        "select(x % y + select(0, y, (x % y != 0) && ((x % y < 0) != (y < 0))), 0, y == 0)",
    ));
    variants.push(ew(
        "fmod_i32",
        "i32",
        "i32",
        "i32",
        "i32",
        "select(x % y, 0, y == 0)",
    ));
    for (op, expr) in [
        ("and", "x & y & 1u"),
        ("or", "(x | y) & 1u"),
        ("xor", "(x ^ y) & 1u"),
        ("equal", "select(0u, 1u, x == y)"),
    ] {
        variants.push(ew(&format!("{op}_bool"), "u32", "u32", "u32", "u32", expr));
    }
    variants.push(ew(
        "where_bool",
        "u32",
        "u32",
        "u32",
        "u32",
        "select(z, y, x != 0u)",
    ));
    // Casts between the three storage types.
    for (from, to, expr) in [
        (
            "f32",
            "i32",
            "i32(trunc(clamp(x, -2147483648.0, 2147483520.0)))",
        ),
        ("f32", "bool", "select(0u, 1u, x != 0.0)"),
        ("i32", "f32", "f32(x)"),
        ("i32", "bool", "select(0u, 1u, x != 0)"),
        ("bool", "f32", "f32(x)"),
        ("bool", "i32", "i32(x)"),
    ] {
        let ty = |t: &str| {
            if t == "bool" {
                "u32".to_string()
            } else {
                t.to_string()
            }
        };
        variants.push(ew(
            &format!("cast_{from}_{to}"),
            &ty(from),
            &ty(from),
            &ty(from),
            &ty(to),
            expr,
        ));
    }

    variants.push(v("copy_strided", "copy_strided", &[]));
    variants.push(v("fill", "fill", &[]));
    variants.push(v("gather", "gather", &[]));
    variants.push(v("gather_nd", "gather_nd", &[]));
    variants.push(v("conv_transpose2d", "conv_transpose2d_f32_direct", &[]));
    variants.push(v("lstm", "lstm_f32", &[]));
    variants.push(v("embed_q8_0", "embed_q8_0", &[]));
    variants.push(v("rope_qkv_cache", "rope_qkv_cache_f32", &[]));
    // Quantized matmuls: block_dot returns the dot product of 32 activations with one block.
    let q8 = "let d = bitcast<f32>(w[base]);\n    var s = 0.0;\n    for (var j = 0u; j < 8u; j = j + 1u) {\n        let word = i32(w[base + 1u + j]);\n        for (var l = 0u; l < 4u; l = l + 1u) {\n            s = s + f32(extractBits(word, l * 8u, 8u)) * x[xoff + j * 4u + l];\n        }\n    }\n    return d * s;";
    let q4_1 = "let d = bitcast<f32>(w[base]);\n    let m = bitcast<f32>(w[base + 1u]);\n    var s = 0.0;\n    var xs = 0.0;\n    for (var j = 0u; j < 4u; j = j + 1u) {\n        let word = w[base + 2u + j];\n        for (var l = 0u; l < 4u; l = l + 1u) {\n            let byte = extractBits(word, l * 8u, 8u);\n            let lo = x[xoff + j * 4u + l];\n            let hi = x[xoff + 16u + j * 4u + l];\n            s = s + f32(byte & 15u) * lo + f32(byte >> 4u) * hi;\n            xs = xs + lo + hi;\n        }\n    }\n    return d * s + m * xs;";
    let q4_0 = "let d = bitcast<f32>(w[base]);\n    var s = 0.0;\n    for (var j = 0u; j < 4u; j = j + 1u) {\n        let word = w[base + 1u + j];\n        for (var l = 0u; l < 4u; l = l + 1u) {\n            let byte = extractBits(word, l * 8u, 8u);\n            s = s + (f32(byte & 15u) - 8.0) * x[xoff + j * 4u + l] + (f32(byte >> 4u) - 8.0) * x[xoff + 16u + j * 4u + l];\n        }\n    }\n    return d * s;";
    for (qt, wpb, body) in [("q8_0", "9", q8), ("q4_1", "6", q4_1), ("q4_0", "5", q4_0)] {
        let name = format!("matmul_{qt}_f32");
        variants.push(v(
            "qmatmul",
            name.clone(),
            &[("NAME", &name), ("QT", qt), ("WPB", wpb), ("BLOCK", body)],
        ));
    }
    // GEMV for few tokens: quarter_dot returns the dot product of 8 weights of a block
    // (quarter j) with their activations.
    let q8_quarter = "let d = bitcast<f32>(w[base]);\n    var s = 0.0;\n    for (var h = 0u; h < 2u; h = h + 1u) {\n        let word = i32(w[base + 1u + j * 2u + h]);\n        for (var l = 0u; l < 4u; l = l + 1u) {\n            s = s + f32(extractBits(word, l * 8u, 8u)) * x[xoff + j * 8u + h * 4u + l];\n        }\n    }\n    return d * s;";
    let q4_1_quarter = "let d = bitcast<f32>(w[base]);\n    let m = bitcast<f32>(w[base + 1u]);\n    let word = w[base + 2u + j];\n    var s = 0.0;\n    var xs = 0.0;\n    for (var l = 0u; l < 4u; l = l + 1u) {\n        let byte = extractBits(word, l * 8u, 8u);\n        let lo = x[xoff + j * 4u + l];\n        let hi = x[xoff + 16u + j * 4u + l];\n        s = s + f32(byte & 15u) * lo + f32(byte >> 4u) * hi;\n        xs = xs + lo + hi;\n    }\n    return d * s + m * xs;";
    let q4_0_quarter = "let d = bitcast<f32>(w[base]);\n    let word = w[base + 1u + j];\n    var s = 0.0;\n    for (var l = 0u; l < 4u; l = l + 1u) {\n        let byte = extractBits(word, l * 8u, 8u);\n        s = s + (f32(byte & 15u) - 8.0) * x[xoff + j * 4u + l] + (f32(byte >> 4u) - 8.0) * x[xoff + 16u + j * 4u + l];\n    }\n    return d * s;";
    for (qt, wpb, body) in [
        ("q8_0", "9", q8_quarter),
        ("q4_1", "6", q4_1_quarter),
        ("q4_0", "5", q4_0_quarter),
    ] {
        let name = format!("gemv_{qt}_f32");
        variants.push(v(
            "gemv_q",
            name.clone(),
            &[("NAME", &name), ("QT", qt), ("WPB", wpb), ("QUARTER", body)],
        ));
        // The same quarter reading another weight binding.
        let on = |w: &str| body.replace("w[", &format!("{w}["));
        let name = format!("gemv_qkv_{qt}_f32");
        variants.push(v(
            "gemv_qkv_q",
            name.clone(),
            &[
                ("NAME", &name),
                ("QT", qt),
                ("WPB", wpb),
                ("QUARTER_Q", &on("wq")),
                ("QUARTER_K", &on("wk")),
                ("QUARTER_V", &on("wv")),
            ],
        ));
        let name = format!("gemv_swiglu_{qt}_f32");
        variants.push(v(
            "gemv_swiglu_q",
            name.clone(),
            &[
                ("NAME", &name),
                ("QT", qt),
                ("WPB", wpb),
                ("QUARTER_G", &on("wg")),
                ("QUARTER_U", &on("wu")),
            ],
        ));
    }
    variants.push(v("rmsnorm_rows", "rmsnorm_rows_f32", &[]));
    variants.push(v("argmax_rows", "argmax_rows_f32", &[]));
    variants.push(v("topk_rows", "topk_rows_f32", &[]));
    variants.push(v("attention_tiled", "attention_gqa_tiled_f32", &[]));
    variants.push(v(
        "resize",
        "resize_nearest_f32",
        &[
            ("NAME", "resize_nearest_f32"),
            (
                "BODY",
                "out[i] = at(base, nearest(cy, params.h), nearest(cx, params.w));",
            ),
        ],
    ));
    variants.push(v(
        "resize",
        "resize_linear_f32",
        &[
            ("NAME", "resize_linear_f32"),
            (
                "BODY",
                "let y = clamp(cy, 0.0, f32(params.h - 1u));\n    let xx = clamp(cx, 0.0, f32(params.w - 1u));\n    let y0 = u32(floor(y));\n    let x0 = u32(floor(xx));\n    let y1 = min(y0 + 1u, params.h - 1u);\n    let x1 = min(x0 + 1u, params.w - 1u);\n    let fy = y - f32(y0);\n    let fx = xx - f32(x0);\n    let top = at(base, y0, x0) * (1.0 - fx) + at(base, y0, x1) * fx;\n    let bottom = at(base, y1, x0) * (1.0 - fx) + at(base, y1, x1) * fx;\n    out[i] = top * (1.0 - fy) + bottom * fy;",
            ),
        ],
    ));
    for (mode, map) in [
        (
            "reflect",
            "if (len == 1) { return 0; }\n    let period = 2 * (len - 1);\n    var m = c % period;\n    if (m < 0) { m = m + period; }\n    return select(m, period - m, m >= len);",
        ),
        ("edge", "return clamp(c, 0, len - 1);"),
        (
            "wrap",
            "var m = c % len;\n    if (m < 0) { m = m + len; }\n    return m;",
        ),
    ] {
        let name = format!("pad_{mode}");
        variants.push(v("pad", name.clone(), &[("NAME", &name), ("MAP", map)]));
    }
    variants.push(v("matmul", "matmul_f32_tiled", &[]));
    variants.push(v("matmul_f32_rb", "matmul_f32_rb", &[]));
    variants.push(v("conv2d", "conv2d_f32_direct", &[]));
    variants.push(v("layernorm", "layernorm_f32", &[("NAME", "layernorm_f32"), ("MEAN", "for (var j = 0u; j < params.len; j = j + 1u) { mean = mean + x[base + j]; }\n    mean = mean / n;")]));
    variants.push(v(
        "layernorm",
        "rmsnorm_f32",
        &[
            ("NAME", "rmsnorm_f32"),
            ("MEAN", "// RMS normalisation: no centring."),
        ],
    ));
    for (name, expr) in [
        ("softmax_f32", "safe_exp(v - mx) / sum"),
        ("log_softmax_f32", "v - mx - log(sum)"),
        ("hardmax_f32", "select(0.0, 1.0, j == arg)"),
    ] {
        variants.push(v("softmax", name, &[("NAME", name), ("EXPR", expr)]));
    }
    for (name, init, step, fin) in [
        ("max_pool_f32", "-3.402823e38", "acc = max(acc, v);", "acc"),
        (
            "avg_pool_f32",
            "0.0",
            "acc = acc + v;",
            "acc / f32(select(count, padded, params.include_pad != 0u))",
        ),
        (
            "lp_pool_f32",
            "0.0",
            "acc = acc + pow(abs(v), params.p);",
            "pow(acc, 1.0 / params.p)",
        ),
    ] {
        variants.push(v(
            "pool2d",
            name,
            &[
                ("NAME", name),
                ("INIT", init),
                ("STEP", step),
                ("FINAL", fin),
            ],
        ));
    }
    // Reductions: (name, T, TO, ACC_T, INIT, STEP, FINAL)
    let reductions: &[(&str, &str, &str, &str, &str, &str, &str)] = &[
        ("sum", "f32", "f32", "f32", "0.0", "acc = acc + v;", "acc"),
        (
            "mean",
            "f32",
            "f32",
            "f32",
            "0.0",
            "acc = acc + v;",
            "acc / count",
        ),
        (
            "max",
            "f32",
            "f32",
            "f32",
            "-3.402823e38",
            "acc = max(acc, v);",
            "acc",
        ),
        (
            "min",
            "f32",
            "f32",
            "f32",
            "3.402823e38",
            "acc = min(acc, v);",
            "acc",
        ),
        ("prod", "f32", "f32", "f32", "1.0", "acc = acc * v;", "acc"),
        (
            "l1",
            "f32",
            "f32",
            "f32",
            "0.0",
            "acc = acc + abs(v);",
            "acc",
        ),
        (
            "l2",
            "f32",
            "f32",
            "f32",
            "0.0",
            "acc = acc + v * v;",
            "sqrt(acc)",
        ),
        (
            "sum_square",
            "f32",
            "f32",
            "f32",
            "0.0",
            "acc = acc + v * v;",
            "acc",
        ),
        (
            "log_sum",
            "f32",
            "f32",
            "f32",
            "0.0",
            "acc = acc + v;",
            "log(acc)",
        ),
        (
            "log_sum_exp",
            "f32",
            "f32",
            "f32",
            "0.0",
            "acc = acc + safe_exp(v);",
            "log(acc)",
        ),
        (
            "argmax",
            "f32",
            "i32",
            "f32",
            "-3.402823e38",
            "if (v > acc) { acc = v; arg = r; }",
            "i32(arg)",
        ),
        (
            "argmin",
            "f32",
            "i32",
            "f32",
            "3.402823e38",
            "if (v < acc) { acc = v; arg = r; }",
            "i32(arg)",
        ),
        (
            "argmax_last",
            "f32",
            "i32",
            "f32",
            "-3.402823e38",
            "if (v >= acc) { acc = v; arg = r; }",
            "i32(arg)",
        ),
        (
            "argmin_last",
            "f32",
            "i32",
            "f32",
            "3.402823e38",
            "if (v <= acc) { acc = v; arg = r; }",
            "i32(arg)",
        ),
        ("sum", "i32", "i32", "i32", "0", "acc = acc + v;", "acc"),
        (
            "max",
            "i32",
            "i32",
            "i32",
            "-2147483647 - 1",
            "acc = max(acc, v);",
            "acc",
        ),
        (
            "min",
            "i32",
            "i32",
            "i32",
            "2147483647",
            "acc = min(acc, v);",
            "acc",
        ),
        ("prod", "i32", "i32", "i32", "1", "acc = acc * v;", "acc"),
        (
            "argmax",
            "i32",
            "i32",
            "i32",
            "-2147483647 - 1",
            "if (v > acc) { acc = v; arg = r; }",
            "i32(arg)",
        ),
        (
            "argmin",
            "i32",
            "i32",
            "i32",
            "2147483647",
            "if (v < acc) { acc = v; arg = r; }",
            "i32(arg)",
        ),
    ];
    for (op, t, to, acc_t, init, step, fin) in reductions {
        let name = format!("reduce_{op}_{t}");
        variants.push(v(
            "reduce",
            name.clone(),
            &[
                ("NAME", &name),
                ("T", t),
                ("TO", to),
                ("ACC_T", acc_t),
                ("INIT", init),
                ("STEP", step),
                ("FINAL", fin),
            ],
        ));
    }

    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("wgsl");
    std::fs::create_dir_all(&out).unwrap();
    let mut registry = String::from(
        "/// Every shader variant: (name, WGSL source).\npub static SHADERS: &[(&str, &str)] = &[\n",
    );
    let mut names = std::collections::BTreeSet::new();
    for var in &variants {
        assert!(
            names.insert(var.name.clone()),
            "duplicate variant {}",
            var.name
        );
        let tmpl_path = root.join(format!("{}.wgsl.tmpl", var.template));
        let mut text = std::fs::read_to_string(&tmpl_path)
            .unwrap_or_else(|e| panic!("{}: {e}", tmpl_path.display()));
        for (k, val) in &var.vars {
            text = text.replace(&format!("{{{{{k}}}}}"), val);
        }
        assert!(!text.contains("{{"), "{}: unexpanded placeholder", var.name);
        let file = out.join(format!("{}.wgsl", var.name));
        std::fs::write(&file, &text).unwrap();
        registry.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            var.name,
            file.display().to_string()
        ));
    }
    registry.push_str("];\n");
    std::fs::write(
        Path::new(&std::env::var("OUT_DIR").unwrap()).join("shaders.rs"),
        registry,
    )
    .unwrap();
}
