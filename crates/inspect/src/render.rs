//! Human renderings of a [`Report`]: a terminal table and a Markdown architecture section.

use std::fmt::Write;

use m2w_model::{Dim, ValueInfo};

use crate::{ModelReport, Report};

/// Rows of the weight list shown in the terminal before "... N more".
const TABLE_WEIGHT_ROWS: usize = 40;

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn human_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=9_999_999 => format!("{:.1}K", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

fn shape_str(v: &ValueInfo) -> String {
    let dims: Vec<String> = v
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbolic(s) => s.clone(),
        })
        .collect();
    format!("{} {} [{}]", v.name, v.dtype, dims.join(", "))
}

fn dims(shape: &[u64]) -> String {
    format!(
        "[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn header(m: &ModelReport) -> String {
    let mut h = format!("{} ({:?}, {})", m.file, m.format, human_bytes(m.bytes))
        .replace("(Onnx", "(ONNX")
        .replace("(Gguf", "(GGUF")
        .replace("(Safetensors", "(safetensors");
    if let Some(o) = &m.onnx {
        let opsets: Vec<String> = o
            .opsets
            .iter()
            .map(|s| {
                format!(
                    "{}{}",
                    if s.domain.is_empty() {
                        "ai.onnx".into()
                    } else {
                        s.domain.clone()
                    },
                    format_args!(" v{}", s.version)
                )
            })
            .collect();
        h.push_str(&format!(
            ", IR {}, opsets {}, producer {:?}",
            o.ir_version,
            opsets.join(" + "),
            o.producer
        ));
    }
    h
}

/// The terminal report.
pub fn table(report: &Report) -> String {
    let mut s = String::new();
    for m in &report.models {
        let _ = writeln!(s, "== {} ==", header(m));
        let _ = writeln!(s, "sha256 {}", m.sha256);
        if let Some(g) = &m.gguf {
            let _ = writeln!(
                s,
                "architecture {} {:?}: {} layers, width {}, {} heads / {} KV heads",
                g.architecture,
                g.name.clone().unwrap_or_default(),
                g.layers.map_or("?".into(), |v| v.to_string()),
                g.width.map_or("?".into(), |v| v.to_string()),
                g.heads.map_or("?".into(), |v| v.to_string()),
                g.kv_heads.map_or("?".into(), |v| v.to_string()),
            );
            for (k, v) in &g.hyperparameters {
                let _ = writeln!(s, "  {k} = {v}");
            }
            let t = &g.tokenizer;
            let _ = writeln!(
                s,
                "tokenizer {} (pre {}), vocab {}, merges {}, bos {:?}, eos {:?}; chat template: {}",
                t.model.clone().unwrap_or("?".into()),
                t.pre.clone().unwrap_or("?".into()),
                t.vocab_size.map_or("?".into(), |v| v.to_string()),
                t.merges.map_or("-".into(), |v| v.to_string()),
                t.bos_token_id,
                t.eos_token_id,
                if g.chat_template { "yes" } else { "no" }
            );
        }
        for i in &m.inputs {
            let _ = writeln!(s, "input   {}", shape_str(i));
        }
        for o in &m.outputs {
            let _ = writeln!(s, "output  {}", shape_str(o));
        }
        if !m.ops.is_empty() {
            let total: usize = m.ops.iter().map(|o| o.count).sum();
            let _ = writeln!(s, "\nops: {} types, {} nodes", m.ops.len(), total);
            let _ = writeln!(s, "  {:>6}  {:<28} {:<14} flag", "count", "op", "domain");
            let mut ops: Vec<_> = m.ops.iter().collect();
            ops.sort_by(|a, b| b.count.cmp(&a.count).then(a.op_type.cmp(&b.op_type)));
            for o in ops {
                let sub = if o.in_subgraphs > 0 {
                    format!(" ({} in subgraphs)", o.in_subgraphs)
                } else {
                    String::new()
                };
                let flag = o
                    .flag
                    .as_ref()
                    .map(|f| format!("! {}: {}", f.kind, f.reason))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  {:>6}  {:<28} {:<14} {}{}",
                    o.count,
                    o.op_type,
                    if o.domain.is_empty() {
                        "ai.onnx"
                    } else {
                        &o.domain
                    },
                    flag,
                    sub
                );
            }
        }
        let t = &m.totals;
        let by: Vec<String> = t
            .bytes_by_dtype
            .iter()
            .map(|(d, b)| {
                format!(
                    "{d} {} ({} tensors)",
                    human_bytes(*b),
                    t.tensors_by_dtype[d]
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "\nweights: {} tensors, {} parameters, {}; {}",
            t.weights,
            human_count(t.parameters),
            human_bytes(t.bytes),
            by.join(", ")
        );
        let _ = writeln!(
            s,
            "  {:<52} {:<18} {:<6} {:>10}  {:<14} quantization",
            "name", "shape", "dtype", "bytes", "storage"
        );
        for w in m.weights.iter().take(TABLE_WEIGHT_ROWS) {
            let _ = writeln!(
                s,
                "  {:<52} {:<18} {:<6} {:>10}  {:<14} {}",
                w.name,
                dims(&w.shape),
                w.dtype.to_string(),
                w.bytes,
                w.storage,
                w.quantization
            );
        }
        if m.weights.len() > TABLE_WEIGHT_ROWS {
            let _ = writeln!(
                s,
                "  ... {} more (--json or --markdown lists all)",
                m.weights.len() - TABLE_WEIGHT_ROWS
            );
        }
        let _ = writeln!(s, "\ncomponents: {}", m.components.len());
        for c in m.components.iter().take(TABLE_WEIGHT_ROWS) {
            let _ = writeln!(
                s,
                "  {:<40} {:>4} weights {:>10} params {:>10}  {:>4} nodes",
                c.name,
                c.weights,
                human_count(c.parameters),
                human_bytes(c.bytes),
                c.nodes
            );
        }
        if m.components.len() > TABLE_WEIGHT_ROWS {
            let _ = writeln!(s, "  ... {} more", m.components.len() - TABLE_WEIGHT_ROWS);
        }
        if !m.tied.is_empty() {
            let _ = writeln!(s, "\ntied (identical) weights:");
            for g in &m.tied {
                let _ = writeln!(s, "  {}", g.join(" = "));
            }
        }
        if !m.notes.is_empty() {
            let _ = writeln!(s, "\nnotes:");
            for n in &m.notes {
                let _ = writeln!(s, "  - {n}");
            }
        }
        if let Some(c) = &m.config {
            let _ = writeln!(
                s,
                "\nconfig.json: {}",
                serde_json::to_string(c).unwrap_or_default()
            );
        }
        s.push('\n');
    }
    for line in pipeline_lines(report) {
        let _ = writeln!(s, "{line}");
    }
    s
}

/// A "Model architecture" section for a porting engineer's docs.
pub fn markdown(report: &Report) -> String {
    let mut s = String::from("## Model architecture\n\n");
    for m in &report.models {
        let _ = writeln!(
            s,
            "### {}\n\n{}  \nsha256 `{}`\n",
            m.file,
            header(m),
            m.sha256
        );
        let t = &m.totals;
        let _ = writeln!(
            s,
            "- Weights: {} tensors, {} parameters, {}",
            t.weights,
            human_count(t.parameters),
            human_bytes(t.bytes)
        );
        for (d, b) in &t.bytes_by_dtype {
            let _ = writeln!(
                s,
                "  - {d}: {} in {} tensors",
                human_bytes(*b),
                t.tensors_by_dtype[d]
            );
        }
        if let Some(g) = &m.gguf {
            let _ = writeln!(
                s,
                "- Architecture: {}, {} layers, width {}, {} heads / {} KV heads",
                g.architecture,
                g.layers.unwrap_or(0),
                g.width.unwrap_or(0),
                g.heads.unwrap_or(0),
                g.kv_heads.unwrap_or(0)
            );
            let _ = writeln!(
                s,
                "- Tokenizer: {} (pre {}), vocab {}; chat template: {}",
                g.tokenizer.model.clone().unwrap_or_default(),
                g.tokenizer.pre.clone().unwrap_or_default(),
                g.tokenizer.vocab_size.unwrap_or(0),
                if g.chat_template { "yes" } else { "no" }
            );
        }
        if !m.inputs.is_empty() || !m.outputs.is_empty() {
            s.push_str("\n| I/O | tensor |\n|---|---|\n");
            for i in &m.inputs {
                let _ = writeln!(s, "| input | `{}` |", shape_str(i));
            }
            for o in &m.outputs {
                let _ = writeln!(s, "| output | `{}` |", shape_str(o));
            }
        }
        if !m.ops.is_empty() {
            s.push_str("\n| op | domain | count | needs attention |\n|---|---|---:|---|\n");
            for o in &m.ops {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    o.op_type,
                    if o.domain.is_empty() {
                        "ai.onnx"
                    } else {
                        &o.domain
                    },
                    o.count,
                    o.flag
                        .as_ref()
                        .map(|f| f.reason.clone())
                        .unwrap_or_default()
                );
            }
        }
        s.push_str(
            "\n| component | weights | parameters | bytes | nodes |\n|---|---:|---:|---:|---:|\n",
        );
        for c in &m.components {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} |",
                c.name,
                c.weights,
                human_count(c.parameters),
                human_bytes(c.bytes),
                c.nodes
            );
        }
        s.push_str("\n| weight | shape | dtype | bytes | quantization |\n|---|---|---|---:|---|\n");
        for w in &m.weights {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} |",
                w.name,
                dims(&w.shape),
                w.dtype,
                w.bytes,
                w.quantization
            );
        }
        if !m.tied.is_empty() {
            s.push_str("\nTied weights (identical tensors, keep one GPU buffer):\n\n");
            for g in &m.tied {
                let _ = writeln!(
                    s,
                    "- {}",
                    g.iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" = ")
                );
            }
        }
        if !m.notes.is_empty() {
            s.push_str("\nNotes:\n\n");
            for n in &m.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s.push('\n');
    }
    let lines = pipeline_lines(report);
    if let Some((first, rest)) = lines.split_first() {
        let heading = if report.data_flow.is_some() {
            "Data flow"
        } else {
            "Pipeline"
        };
        let _ = writeln!(s, "### {heading}\n\n{first}\n");
        for l in rest {
            let _ = writeln!(s, "- {}", l.trim_start());
        }
        s.push('\n');
    }
    s
}

/// How a folder's graphs run as a generation pipeline: a heading line, then one line per
/// graph (its inputs' feeds), its logits, and the notes; or why they cannot be wired.
fn pipeline_lines(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    match &report.pipeline {
        Some(crate::PipelineFlow::Wired(p)) => {
            out.push(format!(
                "pipeline (from the names; a pipeline.json overrides): {}; start {:?}, stop {:?}",
                p.flow(),
                p.start,
                p.stop
            ));
            for g in &p.graphs {
                out.push(format!("  {}: {}", g.name, g.wiring()));
                if let Some(l) = &g.logits {
                    out.push(format!("  {}: {l} picks the next token", g.name));
                }
            }
            out.extend(p.notes.iter().map(|n| format!("  {n}")));
        }
        Some(crate::PipelineFlow::Unwired(e)) => {
            out.push(format!("pipeline: cannot be wired: {e}"));
        }
        None => {}
    }
    if let Some(f) = &report.data_flow {
        out.push(format!(
            "data flow between the models: {} value(s) pass from one model to another by name{}",
            f.edges.len(),
            if f.edges.is_empty() {
                "; the code around them (glue) makes every input and reads every output"
            } else {
                ""
            }
        ));
        for e in &f.edges {
            out.push(format!(
                "  {}:{} -> {}:{}",
                e.from_model, e.output, e.to_model, e.input
            ));
        }
        for p in &f.external_inputs {
            out.push(format!(
                "  in  {}:{} {:?}: {}",
                p.model, p.name, p.shape, p.holds
            ));
        }
        for p in &f.final_outputs {
            out.push(format!(
                "  out {}:{} {:?}: {}",
                p.model, p.name, p.shape, p.holds
            ));
        }
    }
    out
}
