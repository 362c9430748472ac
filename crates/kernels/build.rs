//! A generic expander of `templates/*.wgsl.tmpl`: it knows no shader. Each template starts
//! with a VARIANTS block that lists its shaders; every row becomes one named WGSL file in
//! OUT_DIR, and `shaders.rs` (included by the crate) gets the typed registry: `enum Kernel`
//! with each shader's source and metadata, and one `params::*` struct per template read from
//! its `struct Params` declaration. `cargo xtask kernels --out DIR` writes the same WGSL files
//! for reading.
//!
//! The VARIANTS block (stripped from the emitted WGSL):
//!
//! ```text
//! // VARIANTS
//! // # a comment
//! // @with elem=f32 T=f32            defaults for the rows below (each @with replaces the last)
//! // name KEY=value KEY="quoted value" KEY=@SNIPPET KEY=@SNIPPET[P=v,Q=w] elem=f32
//! // @def SNIPPET                    a multi-line value: the lines up to `// @end`, less `// `
//!                                     (and the first line's indentation: the placeholder's)
//! // ...
//! // @end
//! // END VARIANTS
//! ```
//!
//! Upper-case keys fill the `{{KEY}}` placeholders of the template (`{{NAME}}` is the row's
//! name unless given); lower-case keys are metadata (`elem`: the element type of the shader's
//! main output). Quoted values take `\"`, `\\` and `\n` escapes. `@SNIPPET` is a `@def` of the
//! same template, `@other_template:SNIPPET` one of another; `[P=v,...]` fills the snippet's own
//! `{{P}}` placeholders. Every placeholder must be filled and every key used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One shader: a row of a template's VARIANTS block.
struct Row {
    template: String,
    name: String,
    vars: BTreeMap<String, String>,
    elem: String,
    /// `f16_of=KERNEL f16_binding=N`: this row is KERNEL with binding N (a constant weight)
    /// stored as IEEE half (see `Kernel::f16_weight_twin`).
    f16_of: Option<(String, u32)>,
}

/// A parsed VARIANTS block and the template text after it.
struct Template {
    name: String,
    body: String,
    rows: Vec<RawRow>,
    defs: BTreeMap<String, String>,
}

/// A row before its snippet references are resolved.
struct RawRow {
    name: String,
    line: usize,
    vars: Vec<(String, Value)>,
}

#[derive(Clone)]
enum Value {
    Text(String),
    Snippet {
        template: Option<String>,
        name: String,
        args: Vec<(String, String)>,
    },
}

type Res<T> = Result<T, String>;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    println!("cargo:rerun-if-changed={}", root.display());
    if let Err(e) = run(&root) {
        eprintln!("error: {e}");
        panic!("kernel templates: {e}");
    }
}

fn run(root: &Path) -> Res<()> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".wgsl.tmpl"))
        })
        .collect();
    paths.sort();
    let mut templates = BTreeMap::new();
    for p in &paths {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".wgsl.tmpl")
            .to_string();
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let t = parse_template(&name, &text).map_err(|e| format!("{}: {e}", p.display()))?;
        templates.insert(name, t);
    }
    let mut rows = Vec::new();
    for t in templates.values() {
        for r in &t.rows {
            let mut vars = BTreeMap::new();
            let mut elem = None;
            let (mut f16_of, mut f16_binding) = (None, None);
            for (k, v) in &r.vars {
                let v = resolve(&templates, t, v)
                    .map_err(|e| format!("{}.wgsl.tmpl:{}: {e}", t.name, r.line))?;
                if k == "elem" {
                    elem = Some(v);
                } else if k == "f16_of" {
                    f16_of = Some(v);
                } else if k == "f16_binding" {
                    f16_binding = Some(v.parse::<u32>().map_err(|_| {
                        format!(
                            "{}.wgsl.tmpl:{}: f16_binding={v}: a binding number",
                            t.name, r.line
                        )
                    })?);
                } else if k.chars().any(|c| c.is_ascii_lowercase()) {
                    return Err(format!(
                        "{}.wgsl.tmpl:{}: unknown metadata key {k}",
                        t.name, r.line
                    ));
                } else {
                    vars.insert(k.clone(), v);
                }
            }
            let elem = elem.ok_or_else(|| {
                format!("{}.wgsl.tmpl:{}: {} has no elem=", t.name, r.line, r.name)
            })?;
            if !ELEMS.iter().any(|(e, _)| *e == elem) {
                return Err(format!(
                    "{}.wgsl.tmpl:{}: elem={elem}: one of {:?}",
                    t.name,
                    r.line,
                    ELEMS.iter().map(|e| e.0).collect::<Vec<_>>()
                ));
            }
            let f16_of = match (f16_of, f16_binding) {
                (Some(k), Some(b)) => Some((k, b)),
                (None, None) => None,
                _ => {
                    return Err(format!(
                        "{}.wgsl.tmpl:{}: f16_of and f16_binding go together",
                        t.name, r.line
                    ));
                }
            };
            vars.entry("NAME".into()).or_insert_with(|| r.name.clone());
            rows.push(Row {
                template: t.name.clone(),
                name: r.name.clone(),
                vars,
                elem,
                f16_of,
            });
        }
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let wgsl_dir = out_dir.join("wgsl");
    std::fs::create_dir_all(&wgsl_dir).unwrap();
    let mut names = BTreeSet::new();
    let mut idents = BTreeSet::new();
    let mut kernels = Vec::new();
    // template -> its Params fields (the same in every variant).
    let mut params: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    for row in &rows {
        let ctx = |e: String| format!("{} ({}.wgsl.tmpl): {e}", row.name, row.template);
        if !names.insert(row.name.clone()) {
            return Err(ctx("duplicate shader name".into()));
        }
        let ident = camel(&row.name);
        if !idents.insert(ident.clone()) {
            return Err(ctx(format!("enum variant {ident} taken by another shader")));
        }
        let t = &templates[&row.template];
        let text = expand(&t.body, &row.vars).map_err(ctx)?;
        let wg = workgroup_bytes(&text).map_err(ctx)?;
        let features = features(&text).map_err(ctx)?;
        let fields = parse_params(&text).map_err(ctx)?;
        match params.get(&row.template) {
            Some(f) if *f != fields => {
                return Err(ctx(
                    "struct Params differs between variants of one template".into(),
                ));
            }
            Some(_) => {}
            None => {
                params.insert(row.template.clone(), fields);
            }
        }
        let file = wgsl_dir.join(format!("{}.wgsl", row.name));
        std::fs::write(&file, &text).unwrap();
        kernels.push((row, ident, file, wg, features));
    }
    // Every template should be used by one row at least.
    for t in templates.keys() {
        if !rows.iter().any(|r| &r.template == t) {
            return Err(format!("{t}.wgsl.tmpl: no VARIANTS rows"));
        }
    }

    let mut s = String::new();
    s.push_str("// Generated by build.rs from templates/*.wgsl.tmpl: do not edit.\n\n");
    // enum Kernel
    s.push_str("/// Every shader variant, one per row of a template's VARIANTS block.\n");
    s.push_str(
        "#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]\npub enum Kernel {\n",
    );
    for (row, ident, ..) in &kernels {
        writeln!(s, "    /// `{}` ({}.wgsl.tmpl)", row.name, row.template).unwrap();
        writeln!(s, "    {ident},").unwrap();
    }
    s.push_str("}\n\n");
    s.push_str("impl Kernel {\n    /// Every kernel, in declaration order.\n    pub const ALL: &'static [Kernel] = &[\n");
    for (_, ident, ..) in &kernels {
        writeln!(s, "        Kernel::{ident},").unwrap();
    }
    s.push_str("    ];\n\n");
    s.push_str("    /// The kernel called `name`, if there is one.\n    pub fn by_name(name: &str) -> Option<Kernel> {\n        Some(match name {\n");
    for (row, ident, ..) in &kernels {
        writeln!(s, "            {:?} => Kernel::{ident},", row.name).unwrap();
    }
    s.push_str("            _ => return None,\n        })\n    }\n}\n\n");
    // Per-kernel tables, indexed by `kernel as usize`.
    s.push_str("static NAMES: &[&str] = &[\n");
    for (row, ..) in &kernels {
        writeln!(s, "    {:?},", row.name).unwrap();
    }
    s.push_str("];\n\nstatic SOURCES: &[&str] = &[\n");
    for (_, _, file, ..) in &kernels {
        writeln!(s, "    include_str!({:?}),", file.display().to_string()).unwrap();
    }
    s.push_str("];\n\nstatic WORKGROUP_BYTES: &[u32] = &[\n");
    for (_, _, _, wg, _) in &kernels {
        writeln!(s, "    {wg},").unwrap();
    }
    s.push_str("];\n\nstatic FEATURES: &[&[Feature]] = &[\n");
    for (.., f) in &kernels {
        let list: Vec<String> = f.iter().map(|f| format!("Feature::{f}")).collect();
        writeln!(s, "    &[{}],", list.join(", ")).unwrap();
    }
    s.push_str("];\n\nstatic ELEMS: &[Elem] = &[\n");
    for (row, ..) in &kernels {
        let e = ELEMS.iter().find(|(e, _)| *e == row.elem).unwrap().1;
        writeln!(s, "    Elem::{e},").unwrap();
    }
    // f16-weight twins, by the kernel they are the twin of.
    let mut twins: BTreeMap<&str, (&str, u32)> = BTreeMap::new();
    for (row, _, _, _, features) in &kernels {
        let Some((of, binding)) = &row.f16_of else {
            continue;
        };
        let ctx = |e: &str| {
            format!(
                "{} ({}.wgsl.tmpl): f16_of={of}: {e}",
                row.name, row.template
            )
        };
        let Some(base) = kernels.iter().find(|k| &k.0.name == of) else {
            return Err(ctx("no such kernel"));
        };
        if base.0.template != row.template {
            return Err(ctx("the twin of a kernel of another template"));
        }
        if !features.contains(&"ShaderF16") || base.4.contains(&"ShaderF16") {
            return Err(ctx("a twin enables f16 and its kernel does not"));
        }
        if twins
            .insert(of.as_str(), (row.name.as_str(), *binding))
            .is_some()
        {
            return Err(ctx("a second twin"));
        }
    }
    s.push_str("];\n\n/// Each kernel's f16-weight twin and the binding it reads as f16.\nstatic F16_TWINS: &[Option<(Kernel, u32)>] = &[\n");
    for (row, ..) in &kernels {
        match twins.get(row.name.as_str()) {
            Some((twin, b)) => {
                let ident = camel(twin);
                writeln!(s, "    Some((Kernel::{ident}, {b})),").unwrap()
            }
            None => s.push_str("    None,\n"),
        }
    }
    s.push_str("];\n\n/// The template (and so the `params` struct) of each kernel.\nstatic TEMPLATES: &[usize] = &[\n");
    let template_index: BTreeMap<&String, usize> =
        params.keys().enumerate().map(|(i, t)| (t, i)).collect();
    for (row, ..) in &kernels {
        writeln!(s, "    {},", template_index[&row.template]).unwrap();
    }
    s.push_str("];\n\n");
    // Templates: name, params struct name, layout.
    s.push_str("/// Per template: (template, `params` struct, fields of `struct Params`, size in words).\nstatic TEMPLATE_INFO: &[(&str, &str, &[ParamField], usize)] = &[\n");
    for t in params.keys() {
        let ident = camel(t);
        writeln!(
            s,
            "    ({t:?}, {ident:?}, params::{ident}::LAYOUT, params::{ident}::WORDS),"
        )
        .unwrap();
    }
    s.push_str("];\n\n");
    // Every shader as (name, source), the historical registry.
    s.push_str("/// Every shader variant: (name, WGSL source), in [`Kernel::ALL`] order.\npub static SHADERS: &[(&str, &str)] = &[\n");
    for (row, _, file, ..) in &kernels {
        writeln!(
            s,
            "    ({:?}, include_str!({:?})),",
            row.name,
            file.display().to_string()
        )
        .unwrap();
    }
    s.push_str("];\n\n");
    // params
    s.push_str("/// The uniform block of each template, declared once in its WGSL `struct Params` and\n/// packed by [`Params::words`](crate::Params::words) per WGSL's uniform layout rules.\npub mod params {\n    #![allow(clippy::needless_update)]\n    use crate::{ParamField, ParamType, Params, Put, Scalar};\n");
    for (t, fields) in &params {
        let ident = camel(t);
        let words = struct_words(fields);
        writeln!(
            s,
            "\n    /// `struct Params` of `templates/{t}.wgsl.tmpl` ({words} words)."
        )
        .unwrap();
        // Integer fields are generic (U for u32, I for i32, defaulting to those types) so
        // the engine can fill the same struct with symbolic sizes; f32 fields are constants.
        let has = |sc: &str| fields.iter().any(|f| f.ty.scalar() == sc);
        let generics: Vec<(&str, &str)> = [("U", "u32"), ("I", "i32")]
            .into_iter()
            .filter(|(_, sc)| has(sc))
            .collect();
        let decl = if generics.is_empty() {
            String::new()
        } else {
            format!(
                "<{}>",
                generics
                    .iter()
                    .map(|(g, d)| format!("{g} = {d}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        // The parameter list without defaults: `U, I` (empty when there are none).
        let list = generics
            .iter()
            .map(|(g, _)| *g)
            .collect::<Vec<_>>()
            .join(", ");
        let names = if list.is_empty() {
            String::new()
        } else {
            format!("<{list}>")
        };
        s.push_str("    #[derive(Clone, Copy, Debug, Default, PartialEq)]\n");
        writeln!(s, "    pub struct {ident}{decl} {{").unwrap();
        for f in fields {
            let g = match f.ty.scalar() {
                "u32" => "U",
                "i32" => "I",
                _ => "f32",
            };
            writeln!(s, "        pub {}: {},", f.name, f.ty.rust_with(g)).unwrap();
        }
        s.push_str("    }\n\n");
        writeln!(s, "    impl {ident} {{").unwrap();
        writeln!(s, "        /// Size of the packed block in 32-bit words.").unwrap();
        writeln!(s, "        pub const WORDS: usize = {words};").unwrap();
        s.push_str("        /// The fields of the WGSL `struct Params`, in order, with their byte offsets.\n");
        s.push_str("        pub const LAYOUT: &'static [ParamField] = &[\n");
        for f in fields {
            writeln!(
                s,
                "            ParamField {{ name: {:?}, ty: {}, offset: {} }},",
                f.name,
                f.ty.expr(),
                f.offset
            )
            .unwrap();
        }
        s.push_str("        ];\n\n        /// The uniform block as words (WGSL uniform layout, zero padding).\n        pub fn words(&self) -> Vec<u32> {\n            self.slots()\n        }\n    }\n\n");
        let bounds: Vec<String> = generics
            .iter()
            .map(|(g, _)| format!("{g}: Put<S>"))
            .collect();
        writeln!(s, "    impl<{list}> {ident}{names} {{").unwrap();
        writeln!(
            s,
            "        /// The uniform block as slots of any type the fields pack into (padding is\n        /// `S::default()`).\n        pub fn slots<S: Clone + Default>(&self) -> Vec<S>\n        where\n            f32: Put<S>,{}\n        {{\n            let mut w = vec![S::default(); {words}];",
            bounds.iter().map(|b| format!("\n            {b},")).collect::<String>()
        )
        .unwrap();
        for f in fields {
            writeln!(
                s,
                "            Put::put(&self.{}, &mut w[{}..]);",
                f.name,
                f.offset / 4
            )
            .unwrap();
        }
        s.push_str("            w\n        }\n    }\n\n");
        writeln!(s, "    impl Params for {ident} {{").unwrap();
        writeln!(s, "        const TEMPLATE: &'static str = {t:?};").unwrap();
        s.push_str("        const WORDS: usize = Self::WORDS;\n        const LAYOUT: &'static [ParamField] = Self::LAYOUT;\n        fn words(&self) -> Vec<u32> {\n            Self::words(self)\n        }\n    }\n");
    }
    s.push_str("}\n");
    std::fs::write(out_dir.join("shaders.rs"), s).unwrap();
    Ok(())
}

/// `elem=` values and their `Elem` variants.
const ELEMS: &[(&str, &str)] = &[
    ("f32", "F32"),
    ("f16", "F16"),
    ("i32", "I32"),
    ("u32", "U32"),
    ("bool", "Bool"),
    ("word", "Word"),
];

/// `ew_relu_f32` -> `EwReluF32`.
fn camel(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            let first = c.next().unwrap().to_ascii_uppercase();
            std::iter::once(first).chain(c).collect::<String>()
        })
        .collect()
}

fn parse_template(name: &str, text: &str) -> Res<Template> {
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != "// VARIANTS" {
        return Err("the first line must be `// VARIANTS`".into());
    }
    let mut consumed = first.len();
    let mut rows = Vec::new();
    let mut defs = BTreeMap::new();
    let mut with: Vec<(String, Value)> = Vec::new();
    let mut def: Option<(String, Vec<String>)> = None;
    let mut line_no = 1;
    let mut ended = false;
    for raw in lines {
        consumed += raw.len();
        line_no += 1;
        let line = raw.trim_end_matches('\n').trim_end_matches('\r');
        let Some(rest) = line.strip_prefix("//") else {
            return Err(format!(
                "line {line_no}: inside VARIANTS every line starts with //"
            ));
        };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        if let Some((dname, body)) = &mut def {
            if rest.trim() == "@end" {
                // The placeholder's own indentation stands in for the first line's.
                if let Some(first) = body.first_mut() {
                    *first = first.trim_start().to_string();
                }
                if defs.insert(dname.clone(), body.join("\n")).is_some() {
                    return Err(format!("line {line_no}: @def {dname} twice"));
                }
                def = None;
            } else {
                body.push(rest.to_string());
            }
            continue;
        }
        let rest = rest.trim();
        if rest == "END VARIANTS" {
            ended = true;
            break;
        }
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if let Some(d) = rest.strip_prefix("@def ") {
            def = Some((d.trim().to_string(), Vec::new()));
            continue;
        }
        let toks = tokenize(rest).map_err(|e| format!("line {line_no}: {e}"))?;
        if toks[0] == "@with" {
            with = toks[1..]
                .iter()
                .map(|t| parse_kv(t))
                .collect::<Res<_>>()
                .map_err(|e| format!("line {line_no}: {e}"))?;
            continue;
        }
        let row_name = toks[0].clone();
        if row_name.contains('=')
            || !row_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "line {line_no}: a row starts with the shader's name"
            ));
        }
        let mut vars: Vec<(String, Value)> = Vec::new();
        for (k, v) in with.iter() {
            vars.push((k.clone(), v.clone()));
        }
        for t in &toks[1..] {
            let (k, v) = parse_kv(t).map_err(|e| format!("line {line_no}: {e}"))?;
            vars.retain(|(k2, _)| *k2 != k);
            vars.push((k, v));
        }
        rows.push(RawRow {
            name: row_name,
            line: line_no,
            vars,
        });
    }
    if def.is_some() {
        return Err("@def without @end".into());
    }
    if !ended {
        return Err("no `// END VARIANTS` line".into());
    }
    Ok(Template {
        name: name.to_string(),
        body: text[consumed..].to_string(),
        rows,
        defs,
    })
}

/// Splits a row at whitespace outside double quotes; quotes are kept.
fn tokenize(s: &str) -> Res<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if quoted {
            cur.push(c);
            if c == '\\' {
                cur.push(chars.next().ok_or("dangling \\")?);
            } else if c == '"' {
                quoted = false;
            }
        } else if c.is_whitespace() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            if c == '"' {
                quoted = true;
            }
            cur.push(c);
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn parse_kv(tok: &str) -> Res<(String, Value)> {
    let (k, v) = tok
        .split_once('=')
        .ok_or_else(|| format!("{tok}: expected KEY=value"))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{tok}: bad key"));
    }
    let value = if let Some(q) = v.strip_prefix('"') {
        let q = q
            .strip_suffix('"')
            .ok_or_else(|| format!("{tok}: text after the closing quote"))?;
        let mut s = String::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => s.push('\n'),
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    other => return Err(format!("{tok}: bad escape \\{other:?}")),
                }
            } else if c == '"' {
                return Err(format!("{tok}: unescaped quote"));
            } else {
                s.push(c);
            }
        }
        Value::Text(s)
    } else if let Some(r) = v.strip_prefix('@') {
        let (head, args) = match r.split_once('[') {
            Some((h, a)) => {
                let a = a
                    .strip_suffix(']')
                    .ok_or_else(|| format!("{tok}: expected ] at the end"))?;
                let args = a
                    .split(',')
                    .map(|p| {
                        p.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .ok_or_else(|| format!("{tok}: expected P=v in [..]"))
                    })
                    .collect::<Res<Vec<_>>>()?;
                (h, args)
            }
            None => (r, Vec::new()),
        };
        let (template, name) = match head.split_once(':') {
            Some((t, n)) => (Some(t.to_string()), n.to_string()),
            None => (None, head.to_string()),
        };
        Value::Snippet {
            template,
            name,
            args,
        }
    } else {
        Value::Text(v.to_string())
    };
    Ok((k.to_string(), value))
}

fn resolve(templates: &BTreeMap<String, Template>, here: &Template, v: &Value) -> Res<String> {
    match v {
        Value::Text(t) => Ok(t.clone()),
        Value::Snippet {
            template,
            name,
            args,
        } => {
            let t = match template {
                Some(t) => templates
                    .get(t)
                    .ok_or_else(|| format!("@{t}:{name}: no template {t}"))?,
                None => here,
            };
            let body = t
                .defs
                .get(name)
                .ok_or_else(|| format!("@{name}: no @def {name} in {}.wgsl.tmpl", t.name))?;
            let vars: BTreeMap<String, String> = args.iter().cloned().collect();
            expand(body, &vars).map_err(|e| format!("@{name}: {e}"))
        }
    }
}

/// Fills every `{{KEY}}` of `text` (one pass: values are not re-scanned). Every placeholder
/// must have a value and every value (but NAME) a placeholder.
fn expand(text: &str, vars: &BTreeMap<String, String>) -> Res<String> {
    let mut out = String::with_capacity(text.len());
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| "unterminated {{".to_string())?;
        let key = &after[..j];
        let val = vars
            .get(key)
            .ok_or_else(|| format!("no value for {{{{{key}}}}}"))?;
        out.push_str(val);
        used.insert(key.to_string());
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    for k in vars.keys() {
        if k != "NAME" && !used.contains(k) {
            return Err(format!("{k}= is not a placeholder of the template"));
        }
    }
    Ok(out)
}

/// Strips `//` comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| match l.find("//") {
        Some(i) => &l[..i],
        None => l,
    })
}

/// GPU features the shader enables (`enable f16;`, `enable subgroups;`).
fn features(text: &str) -> Res<Vec<&'static str>> {
    let mut out = Vec::new();
    for l in code_lines(text) {
        let l = l.trim();
        if let Some(e) = l.strip_prefix("enable ") {
            for ext in e.trim_end_matches(';').split(',') {
                out.push(match ext.trim() {
                    "f16" => "ShaderF16",
                    "subgroups" => "Subgroups",
                    other => return Err(format!("enable {other}: unknown extension")),
                });
            }
        }
    }
    Ok(out)
}

/// Size and alignment in bytes of a WGSL type (host-shareable subset).
fn type_size(ty: &str) -> Res<(u32, u32)> {
    let ty = ty.trim();
    Ok(match ty {
        "f32" | "u32" | "i32" | "atomic<u32>" | "atomic<i32>" => (4, 4),
        "f16" => (2, 2),
        _ => {
            if let Some(inner) = ty.strip_prefix("array<").and_then(|t| t.strip_suffix('>')) {
                let i = top_level_comma(inner)
                    .ok_or_else(|| format!("{ty}: a workgroup array needs a constant length"))?;
                let (el, n) = (&inner[..i], inner[i + 1..].trim());
                let n: u32 = n
                    .trim_end_matches('u')
                    .parse()
                    .map_err(|_| format!("{ty}: length {n} is not an integer literal"))?;
                let (size, align) = type_size(el)?;
                (n * size.div_ceil(align) * align, align)
            } else if let Some((k, inner)) = ["vec2<", "vec3<", "vec4<"]
                .iter()
                .enumerate()
                .find_map(|(k, p)| {
                    ty.strip_prefix(p)
                        .and_then(|t| t.strip_suffix('>'))
                        .map(|t| (k + 2, t))
                })
            {
                let (s, _) = type_size(inner)?;
                let n = k as u32;
                let align = if n == 3 { 4 * s } else { n * s };
                (n * s, align)
            } else {
                return Err(format!("workgroup type {ty}: cannot size it"));
            }
        }
    })
}

fn top_level_comma(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

/// Bytes of workgroup memory the shader declares (each variable rounded up to 16 bytes, as
/// WebGPU counts them against maxComputeWorkgroupStorageSize).
fn workgroup_bytes(text: &str) -> Res<u32> {
    let code: String = code_lines(text).collect::<Vec<_>>().join("\n");
    let mut total = 0;
    let mut rest = code.as_str();
    while let Some(i) = rest.find("var<workgroup>") {
        let after = &rest[i + "var<workgroup>".len()..];
        let end = after.find(';').ok_or("var<workgroup> without ;")?;
        let decl = &after[..end];
        let (_, ty) = decl
            .split_once(':')
            .ok_or_else(|| format!("var<workgroup>{decl}: no type"))?;
        let (size, _) = type_size(ty)?;
        total += size.div_ceil(16) * 16;
        rest = &after[end..];
    }
    Ok(total)
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Ty {
    Scalar(&'static str),
    Vec4(&'static str),
    Array(&'static str, u32),
}

impl Ty {
    /// The Rust type with the scalar written as `g` (a generic parameter or `f32`).
    fn rust_with(self, g: &str) -> String {
        match self {
            Ty::Scalar(_) => g.to_string(),
            Ty::Vec4(_) => format!("[{g}; 4]"),
            Ty::Array(_, n) => format!("[[{g}; 4]; {n}]"),
        }
    }
    fn scalar(self) -> &'static str {
        match self {
            Ty::Scalar(s) | Ty::Vec4(s) | Ty::Array(s, _) => s,
        }
    }
    fn expr(self) -> String {
        let sc = |s: &str| format!("Scalar::{}", s.to_ascii_uppercase());
        match self {
            Ty::Scalar(s) => format!("ParamType::Scalar({})", sc(s)),
            Ty::Vec4(s) => format!("ParamType::Vec4({})", sc(s)),
            Ty::Array(s, n) => format!("ParamType::Vec4Array({}, {n})", sc(s)),
        }
    }
    fn size_align(self) -> (u32, u32) {
        match self {
            Ty::Scalar(_) => (4, 4),
            Ty::Vec4(_) => (16, 16),
            Ty::Array(_, n) => (16 * n, 16),
        }
    }
}

#[derive(PartialEq, Debug)]
struct Field {
    name: String,
    ty: Ty,
    offset: u32,
}

fn scalar(s: &str) -> Res<&'static str> {
    match s.trim() {
        "u32" => Ok("u32"),
        "i32" => Ok("i32"),
        "f32" => Ok("f32"),
        other => Err(format!(
            "uniform scalar type {other}: expected u32, i32 or f32"
        )),
    }
}

fn param_type(ty: &str) -> Res<Ty> {
    let ty = ty.trim();
    if let Some(inner) = ty.strip_prefix("vec4<").and_then(|t| t.strip_suffix('>')) {
        return Ok(Ty::Vec4(scalar(inner)?));
    }
    if let Some(inner) = ty.strip_prefix("array<").and_then(|t| t.strip_suffix('>')) {
        let i = top_level_comma(inner).ok_or_else(|| format!("{ty}: no length"))?;
        let el = inner[..i].trim();
        let n: u32 = inner[i + 1..]
            .trim()
            .trim_end_matches('u')
            .parse()
            .map_err(|_| format!("{ty}: length is not an integer literal"))?;
        let s = el
            .strip_prefix("vec4<")
            .and_then(|t| t.strip_suffix('>'))
            .ok_or_else(|| {
                format!("{ty}: uniform arrays must be of vec4 (16-byte element stride)")
            })?;
        return Ok(Ty::Array(scalar(s)?, n));
    }
    Ok(Ty::Scalar(scalar(ty)?))
}

/// The fields of `struct Params { ... }` with their byte offsets (WGSL uniform layout).
fn parse_params(text: &str) -> Res<Vec<Field>> {
    let code: String = code_lines(text).collect::<Vec<_>>().join("\n");
    let start = code.find("struct Params {").ok_or("no `struct Params {`")?;
    let body = &code[start + "struct Params {".len()..];
    let end = body.find('}').ok_or("struct Params without }")?;
    let body = &body[..end];
    let mut fields = Vec::new();
    let mut offset = 0u32;
    let mut rest = body;
    loop {
        let piece = match top_level_comma(rest) {
            Some(i) => {
                let p = &rest[..i];
                rest = &rest[i + 1..];
                p
            }
            None => std::mem::take(&mut rest),
        };
        let piece = piece.trim();
        if piece.is_empty() {
            if rest.trim().is_empty() {
                break;
            }
            continue;
        }
        let (name, ty) = piece
            .split_once(':')
            .ok_or_else(|| format!("Params field `{piece}`: expected name: type"))?;
        let ty = param_type(ty)?;
        let (size, align) = ty.size_align();
        offset = offset.div_ceil(align) * align;
        fields.push(Field {
            name: name.trim().to_string(),
            ty,
            offset,
        });
        offset += size;
    }
    if fields.is_empty() {
        return Err("struct Params has no fields".into());
    }
    Ok(fields)
}

/// Words of the packed uniform: the struct's size rounded up to 16 bytes, at least 16.
fn struct_words(fields: &[Field]) -> u32 {
    let end = fields
        .iter()
        .map(|f| f.offset + f.ty.size_align().0)
        .max()
        .unwrap_or(0);
    (end.div_ceil(16) * 16).max(16) / 4
}
