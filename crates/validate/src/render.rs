//! Report renderings: a terminal table, JUnit XML for CI systems, and a self-contained
//! HTML page with the error of every checkpoint plotted on a log scale, and node data
//! for Google's Model Explorer.

use std::fmt::Write;

use crate::Report;

fn first_failure_text(r: &Report) -> String {
    let mut s = String::new();
    match &r.first_failure {
        None => {
            let _ = writeln!(
                s,
                "all {} compared checkpoints pass ({} mode)",
                r.passed, r.mode
            );
        }
        Some(f) => {
            let _ = writeln!(s, "FIRST FAILING CHECKPOINT: #{} {}", f.index, f.name);
            for (i, status) in &f.inputs {
                let _ = writeln!(s, "  input {i}: {status}");
            }
            let (wi, we, wr) = f.worst;
            let _ = writeln!(
                s,
                "  worst element [{wi}]: engine {we:.6e} | reference {wr:.6e}"
            );
            let _ = writeln!(s, "  first values (engine | reference):");
            for (i, a, b) in &f.first_values {
                let _ = writeln!(s, "    [{i}] {a:>14.6e} | {b:>14.6e}");
            }
            let _ = writeln!(s, "  hint: {}", f.hint);
        }
    }
    s
}

pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "validate {} against {} — {} on {}",
        r.model, r.reference_runtime, r.mode, r.adapter
    );
    s.push_str(&first_failure_text(r));
    let _ = writeln!(
        s,
        "  {:>4}  {:<16} {:<44} {:<16} {:>10} {:>10} {:>10} {:>9} {:>6}  status",
        "#", "op", "checkpoint", "shape", "max abs", "mean abs", "max rel", "err/tol", "nan"
    );
    for c in &r.checkpoints {
        let status = if !c.compared {
            "-"
        } else if c.pass && c.tolerance_note.is_some() {
            "ok*"
        } else if c.pass {
            "ok"
        } else if c.problem.is_some() {
            "FAIL (shape)"
        } else {
            "FAIL"
        };
        let _ = writeln!(
            s,
            "  {:>4}  {:<16} {:<44} {:<16} {:>10.3e} {:>10.3e} {:>10.3e} {:>9.3} {:>6}  {}",
            c.index,
            c.op_type,
            c.name,
            format!("{:?}", c.shape),
            c.max_abs,
            c.mean_abs,
            c.max_rel,
            c.max_ratio,
            c.nan_inf_engine,
            status
        );
    }
    // Each rule once, however many checkpoints it widened (in the order first met).
    let mut notes: Vec<&str> = Vec::new();
    for n in r
        .checkpoints
        .iter()
        .filter_map(|c| c.tolerance_note.as_deref())
    {
        if !notes.contains(&n) {
            notes.push(n);
        }
    }
    for n in notes {
        let _ = writeln!(s, "  * tolerance widened by the op: {n}");
    }
    let _ = writeln!(
        s,
        "{} passed, {} failed, {} not compared (folded on the host or fused)",
        r.passed, r.failed, r.not_compared
    );
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn junit(r: &Report) -> String {
    let compared: Vec<_> = r.checkpoints.iter().filter(|c| c.compared).collect();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"m2w validate\" tests=\"{}\" failures=\"{}\">",
        compared.len(),
        r.failed
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        xml_escape(&format!("{} ({})", r.model, r.mode)),
        compared.len(),
        r.failed,
        r.not_compared
    );
    for c in &r.checkpoints {
        let name = xml_escape(&format!("{:04} {}", c.index, c.name));
        if !c.compared {
            let _ = writeln!(
                s,
                "    <testcase classname=\"{}\" name=\"{name}\"><skipped message=\"no engine value\"/></testcase>",
                xml_escape(&c.op_type)
            );
        } else if c.pass {
            let _ = writeln!(
                s,
                "    <testcase classname=\"{}\" name=\"{name}\"/>",
                xml_escape(&c.op_type)
            );
        } else {
            let msg = format!(
                "max abs {:.3e}, {:.3} x its tolerance at element {} (engine {:e}, reference {:e}), tolerance atol {:e} rtol {:e}",
                c.max_abs,
                c.max_ratio,
                c.worst_index,
                c.worst_engine,
                c.worst_reference,
                c.tolerance.atol,
                c.tolerance.rtol
            );
            let _ = writeln!(
                s,
                "    <testcase classname=\"{}\" name=\"{name}\"><failure message=\"{}\"/></testcase>",
                xml_escape(&c.op_type),
                xml_escape(&msg)
            );
        }
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// The block a checkpoint belongs to, from its name: everything up to the first path
/// segment that is a number (`/encoder/layer.3/...` -> `/encoder/layer.3`, `blk.12.attn_q`
/// -> `blk.12`); names without one belong to no block ("").
pub fn block_of(name: &str) -> &str {
    let bytes = name.as_bytes();
    // Not '_': exporters number tensors `Conv_output_0`, which is no layer.
    let is_sep = |b: u8| matches!(b, b'.' | b'/' | b':');
    let mut start = 0;
    for i in 0..=bytes.len() {
        if i == bytes.len() || is_sep(bytes[i]) {
            let seg = &bytes[start..i];
            if !seg.is_empty() && start > 0 && seg.iter().all(u8::is_ascii_digit) {
                return &name[..i];
            }
            start = i + 1;
        }
    }
    ""
}

/// Consecutive runs of checkpoints in one block: (block, range of indices into `names`).
fn blocks<'a>(names: &[&'a str]) -> Vec<(&'a str, std::ops::Range<usize>)> {
    let mut out: Vec<(&str, std::ops::Range<usize>)> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let b = block_of(n);
        match out.last_mut() {
            Some((last, r)) if *last == b => r.end = i + 1,
            _ => out.push((b, i..i + 1)),
        }
    }
    out
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}

/// Checkpoints each labelled on the x axis up to this many; beyond, blocks are.
const LABEL_EACH_UP_TO: usize = 60;

/// A self-contained page. The plot shows each compared checkpoint's error in units of its
/// own tolerance, max |e| / (atol + rtol·|ref|), on a log scale: the pass line is at 1,
/// so every failing point sits above it and every passing one on or below it (plotting
/// |e| alone would not: a large value may err more and still pass). Exact checkpoints sit
/// on a labelled floor row, unmatched NaN/Inf on a labelled top row; in per-layer mode the
/// same checkpoints end to end (accumulated) are a second series. The x axis names each
/// checkpoint, or each block (layer) when there are many; the table is grouped by block,
/// each block collapsible, the failing ones open.
pub fn html(r: &Report) -> String {
    let compared: Vec<&crate::CheckpointReport> =
        r.checkpoints.iter().filter(|c| c.compared).collect();
    let names: Vec<&str> = compared.iter().map(|c| c.name.as_str()).collect();
    let by_block = blocks(&names);
    let label_each = compared.len() <= LABEL_EACH_UP_TO;
    let (w, h) = (980.0f64, 460.0f64);
    let (left, right, top, bottom) = (78.0, 20.0, 34.0, 170.0);
    let n = compared.len().max(2) as f64;
    let finite: Vec<f64> = compared
        .iter()
        .flat_map(|c| [Some(c.max_ratio), c.accumulated_ratio])
        .flatten()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(f64::log10)
        .collect();
    // Decades from below the smallest nonzero ratio to above the largest, always around
    // the pass line at 10^0.
    let lo = finite
        .iter()
        .cloned()
        .fold(-3.0f64, f64::min)
        .floor()
        .max(-12.0);
    let hi = finite
        .iter()
        .cloned()
        .fold(1.0f64, f64::max)
        .ceil()
        .min(12.0);
    // Two extra rows: the exact floor below `lo`, the NaN/Inf row above `hi`.
    let rows = hi - lo + 2.0;
    let plot_h = h - top - bottom;
    let y_of = |v: f64| top + plot_h * (hi + 1.0 - v) / rows;
    let y_exact = y_of(lo - 1.0);
    let y_inf = y_of(hi + 1.0);
    let y_ratio = |ratio: f64| -> f64 {
        if ratio == 0.0 {
            y_exact
        } else if !ratio.is_finite() {
            y_inf
        } else {
            y_of(ratio.log10().clamp(lo, hi))
        }
    };
    let x = |i: usize| left + (w - left - right) * (i as f64 + 0.5) / n;
    let mut svg = format!(
        "<svg id=\"error-plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">"
    );
    let _ = write!(svg, "<rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>");
    let mut decade = lo;
    while decade <= hi {
        let yy = y_of(decade);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e4e4e4\"/><text class=\"y-label\" x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">1e{}</text>",
            w - right,
            left - 6.0,
            yy + 4.0,
            decade as i64
        );
        decade += 1.0;
    }
    for (yy, label, id) in [
        (y_exact, "exact (0)", "exact-row"),
        (y_inf, "NaN/Inf", "inf-row"),
    ] {
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#bbb\" stroke-dasharray=\"2 3\"/><text id=\"{id}\" class=\"y-label\" x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{label}</text>",
            w - right,
            left - 6.0,
            yy + 4.0
        );
    }
    let pass_y = y_of(0.0);
    let _ = write!(
        svg,
        "<line id=\"pass-line\" data-ratio=\"1\" x1=\"{left}\" x2=\"{}\" y1=\"{pass_y:.1}\" y2=\"{pass_y:.1}\" stroke=\"#d00\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" fill=\"#d00\" text-anchor=\"end\">pass line: error = tolerance</text>",
        w - right,
        w - right - 4.0,
        pass_y - 5.0
    );
    // Block separators and x labels.
    for (k, (block, range)) in by_block.iter().enumerate() {
        if k > 0 {
            let xx = x(range.start) - (w - left - right) / n / 2.0;
            let _ = write!(
                svg,
                "<line class=\"block-sep\" x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
                h - bottom
            );
        }
        if !label_each {
            // One label per block, skipped where it would overlap the previous one.
            let stride = (by_block.len() as f64 / 40.0).ceil().max(1.0) as usize;
            if k % stride == 0 {
                let xx = x(range.start);
                let text = if block.is_empty() {
                    "(outside blocks)"
                } else {
                    block
                };
                let _ = write!(
                    svg,
                    "<text class=\"x-label\" transform=\"translate({xx:.1},{:.1}) rotate(-60)\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                    h - bottom + 12.0,
                    xml_escape(&short(text, 28))
                );
            }
        }
    }
    if label_each {
        for (i, c) in compared.iter().enumerate() {
            let _ = write!(
                svg,
                "<text class=\"x-label\" transform=\"translate({:.1},{:.1}) rotate(-60)\" font-size=\"10\" text-anchor=\"end\">#{} {}</text>",
                x(i),
                h - bottom + 12.0,
                c.index,
                xml_escape(&short(&c.name, 26))
            );
        }
    }
    // The accumulated series first, under the isolated one.
    let accumulated: Vec<(usize, f64)> = compared
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.accumulated_ratio.map(|a| (i, a)))
        .collect();
    if !accumulated.is_empty() {
        let points: Vec<String> = accumulated
            .iter()
            .map(|(i, a)| format!("{:.1},{:.1}", x(*i), y_ratio(*a)))
            .collect();
        let _ = write!(
            svg,
            "<polyline id=\"accumulated\" fill=\"none\" stroke=\"#e90\" stroke-width=\"1\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    let points: Vec<String> = compared
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{:.1},{:.1}", x(i), y_ratio(c.max_ratio)))
        .collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1\" stroke-opacity=\"0.6\" points=\"{}\"/>",
        points.join(" ")
    );
    for (i, c) in compared.iter().enumerate() {
        let (class, color) = if !c.pass {
            ("fail", "#d00")
        } else if c.max_ratio == 0.0 {
            ("pass exact", "#888")
        } else {
            ("pass", "#36c")
        };
        let (cx, cy) = (x(i), y_ratio(c.max_ratio));
        let title = format!(
            "#{} {} ({}): {:.3} x tolerance, max |e| {:.3e}; worst [{}] engine {:e} | reference {:e}",
            c.index,
            c.name,
            c.op_type,
            c.max_ratio,
            c.max_abs,
            c.worst_index,
            c.worst_engine,
            c.worst_reference
        );
        if c.max_ratio == 0.0 {
            let _ = write!(
                svg,
                "<rect class=\"{class}\" data-index=\"{}\" data-ratio=\"0\" x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\" fill=\"none\" stroke=\"{color}\"><title>{}</title></rect>",
                c.index,
                cx - 3.0,
                cy - 3.0,
                xml_escape(&title)
            );
        } else {
            let _ = write!(
                svg,
                "<circle class=\"{class}\" data-index=\"{}\" data-ratio=\"{}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"{color}\"><title>{}</title></circle>",
                c.index,
                c.max_ratio,
                xml_escape(&title)
            );
        }
    }
    let _ = write!(
        svg,
        "<text id=\"x-title\" x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text>",
        left + (w - left - right) / 2.0,
        h - 8.0,
        if label_each {
            "checkpoint (pipeline order)"
        } else {
            "block (pipeline order; each point a checkpoint)"
        }
    );
    let _ = write!(
        svg,
        "<text id=\"y-title\" transform=\"translate(16,{:.1}) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\">max |engine − reference| / (atol + rtol·|reference|)</text>",
        top + plot_h / 2.0
    );
    let _ = write!(
        svg,
        "<g font-size=\"11\"><circle cx=\"{}\" cy=\"14\" r=\"3\" fill=\"#36c\"/><text x=\"{}\" y=\"18\">pass</text><circle cx=\"{}\" cy=\"14\" r=\"3\" fill=\"#d00\"/><text x=\"{}\" y=\"18\">fail</text><rect x=\"{}\" y=\"11\" width=\"6\" height=\"6\" fill=\"none\" stroke=\"#888\"/><text x=\"{}\" y=\"18\">exact</text>{}</g></svg>",
        left + 4.0,
        left + 12.0,
        left + 52.0,
        left + 60.0,
        left + 97.0,
        left + 108.0,
        if accumulated.is_empty() {
            String::new()
        } else {
            format!(
                "<line x1=\"{}\" x2=\"{}\" y1=\"14\" y2=\"14\" stroke=\"#e90\"/><text x=\"{}\" y=\"18\">accumulated (end to end)</text>",
                left + 150.0,
                left + 166.0,
                left + 170.0
            )
        }
    );

    let per_layer = r.checkpoints.iter().any(|c| c.accumulated_ratio.is_some());
    let head = format!(
        "<tr><th>#</th><th>op</th><th>checkpoint</th><th>shape</th><th>max abs</th><th>error / tolerance{}</th>{}<th>worst element: engine | reference</th><th>tolerance</th><th>NaN/Inf</th><th>status</th></tr>",
        if per_layer { " (isolated)" } else { "" },
        if per_layer {
            "<th>accumulated</th>"
        } else {
            ""
        }
    );
    let row = |c: &crate::CheckpointReport| -> String {
        let status = if !c.compared {
            "-"
        } else if c.pass {
            "ok"
        } else {
            "FAIL"
        };
        let ratio = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "inf".into()
            }
        };
        format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{:.3e}</td><td>{}</td>{}<td>{}</td><td>{:e} + {:e}·|ref|{}</td><td>{}</td><td>{status}</td></tr>\n",
            match status {
                "-" => "skipped",
                "ok" => "ok",
                _ => "fail",
            },
            c.index,
            xml_escape(&c.op_type),
            xml_escape(&c.name),
            c.shape,
            c.max_abs,
            if c.compared {
                ratio(c.max_ratio)
            } else {
                "-".into()
            },
            if per_layer {
                format!("<td>{}</td>", c.accumulated_ratio.map_or("-".into(), ratio))
            } else {
                String::new()
            },
            if c.compared {
                format!(
                    "[{}] {:.6e} | {:.6e}",
                    c.worst_index, c.worst_engine, c.worst_reference
                )
            } else {
                "-".into()
            },
            c.tolerance.atol,
            c.tolerance.rtol,
            c.tolerance_note
                .as_deref()
                .map(|n| format!(" <span title=\"{}\">*</span>", xml_escape(n)))
                .unwrap_or_default(),
            c.nan_inf_engine
        )
    };
    // The table by block, each a collapsible section (open when it holds a failure, or
    // when there are few).
    let all_names: Vec<&str> = r.checkpoints.iter().map(|c| c.name.as_str()).collect();
    let table_blocks = blocks(&all_names);
    let mut tables = String::new();
    for (block, range) in &table_blocks {
        let cs = &r.checkpoints[range.clone()];
        let failed = cs.iter().filter(|c| c.compared && !c.pass).count();
        let worst = cs
            .iter()
            .filter(|c| c.compared)
            .map(|c| c.max_ratio)
            .fold(0f64, f64::max);
        let open = failed > 0 || table_blocks.len() <= 3;
        let _ = write!(
            tables,
            "<details class=\"block\"{}><summary>{} — {} checkpoints, {} failed, worst {:.3} x tolerance</summary>\n<table><thead>{head}</thead><tbody>\n",
            if open { " open" } else { "" },
            xml_escape(if block.is_empty() {
                "(outside blocks)"
            } else {
                block
            }),
            cs.len(),
            failed,
            worst
        );
        for c in cs {
            tables.push_str(&row(c));
        }
        tables.push_str("</tbody></table></details>\n");
    }
    let worst = match &r.first_failure {
        Some(f) => format!(
            "<p id=\"worst\">First failing checkpoint #{} <b>{}</b>: worst element <b>[{}]</b> engine <b>{:.6e}</b>, reference <b>{:.6e}</b></p>\n",
            f.index,
            xml_escape(&f.name),
            f.worst.0,
            f.worst.1,
            f.worst.2
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>m2w validate: {model}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px;margin:.3em 0 1em}}td,th{{border:1px solid #ccc;padding:2px 6px}}tr.fail{{background:#fdd}}pre{{background:#f6f6f6;padding:1em}}summary{{cursor:pointer;font-weight:bold;margin:.3em 0}}</style></head>\n<body><h1>m2w validate: {model}</h1>\n<p>{mode} against {rt} on {adapter}: <b id=\"summary\">{p} passed, {f} failed, {nc} not compared</b></p>\n{worst}<pre>{first}</pre>\n{svg}\n{tables}</body></html>\n",
        model = xml_escape(&r.model),
        mode = r.mode,
        rt = xml_escape(&r.reference_runtime),
        adapter = xml_escape(&r.adapter),
        p = r.passed,
        f = r.failed,
        nc = r.not_compared,
        first = xml_escape(&first_failure_text(r)),
    )
}

/// The report as node data for Google's Model Explorer (its `GraphNodeData`: results by
/// output tensor name, which Model Explorer matches to the node producing that tensor, and
/// thresholds that colour them): each compared checkpoint's error in units of its
/// tolerance, so the graph shows green at or under 1 (pass) and red above. Load it in Model
/// Explorer's "Custom node data" panel beside the model. Unmatched NaN/Inf (an infinite
/// ratio, which JSON cannot hold) are written as 1e30.
pub fn model_explorer(r: &Report) -> String {
    let mut results = serde_json::Map::new();
    for c in r.checkpoints.iter().filter(|c| c.compared) {
        let value = if c.max_ratio.is_finite() {
            c.max_ratio
        } else {
            1e30
        };
        results.insert(c.name.clone(), serde_json::json!({ "value": value }));
    }
    let doc = serde_json::json!({
        "results": results,
        "thresholds": [
            { "value": 1.0, "bgColor": "#c8e6c9" },
            { "value": 1e300, "bgColor": "#ef9a9a" },
        ],
    });
    serde_json::to_string_pretty(&doc).expect("node data serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::{block_of, html};
    use crate::{CheckpointReport, F32_DEFAULT, Report};

    fn checkpoint(index: usize, name: String, ratio: f64) -> CheckpointReport {
        let c = m2w_reference::index::Checkpoint {
            index,
            node: name.clone(),
            op_type: "Add".into(),
            output: name,
            shape: vec![4],
            dtype: "f32".into(),
            file: String::new(),
            sha256: String::new(),
            graph_output: false,
        };
        let mut r = CheckpointReport::new(&c, F32_DEFAULT);
        (r.compared, r.max_ratio, r.max_abs) = (true, ratio, ratio * 1e-4);
        r.pass = ratio <= 1.0;
        r
    }

    /// An LLM's 453 stages: the x axis names blocks, not stages (at most about 40 labels),
    /// and the table folds into one section per layer, only the failing one open.
    #[test]
    fn a_long_report_is_labelled_and_folded_by_block() {
        let mut cs = vec![checkpoint(0, "embed".into(), 0.0)];
        for l in 0..27 {
            for (k, s) in [
                "attn_norm",
                "q",
                "k",
                "v",
                "attn_out",
                "ffn_norm",
                "gate",
                "up",
            ]
            .iter()
            .enumerate()
            {
                for j in 0..2 {
                    let ratio = if l == 17 && k == 3 && j == 0 {
                        5.0
                    } else {
                        0.1
                    };
                    cs.push(checkpoint(cs.len(), format!("blk.{l}.{s}.{j}"), ratio));
                }
            }
        }
        while cs.len() < 453 {
            cs.push(checkpoint(cs.len(), "output_norm".into(), 0.2));
        }
        assert_eq!(cs.len(), 453);
        let failed = cs.iter().filter(|c| !c.pass).count();
        let r = Report {
            schema: "m2w.validate/1",
            model: "m".into(),
            reference_runtime: "candle".into(),
            mode: "end-to-end",
            adapter: "a".into(),
            passed: cs.len() - failed,
            failed,
            not_compared: 0,
            checkpoints: cs,
            first_failure: None,
            profile: None,
            profile_error: None,
        };
        let page = html(&r);
        let labels = page.matches("class=\"x-label\"").count();
        assert!((20..=40).contains(&labels), "{labels} x labels");
        assert!(page.contains(">blk.0<") && page.contains("block (pipeline order"));
        // 27 layers plus the stages before and after them.
        assert_eq!(page.matches("<details class=\"block\"").count(), 29);
        assert_eq!(page.matches("<details class=\"block\" open>").count(), 1);
        assert!(page.contains("blk.17 — 16 checkpoints, 1 failed, worst 5.000 x tolerance"));
        // The failing point and its table row.
        assert_eq!(page.matches("class=\"fail\"").count(), 2);
    }

    #[test]
    fn a_block_is_the_name_up_to_its_first_numeric_segment() {
        assert_eq!(
            block_of("/encoder/layer.3/attention/MatMul_output_0"),
            "/encoder/layer.3"
        );
        assert_eq!(block_of("blk.12.attn_q"), "blk.12");
        assert_eq!(block_of("/model/layers.0/mlp/Add"), "/model/layers.0");
        assert_eq!(block_of("logits"), "");
        assert_eq!(block_of("3"), "");
        assert_eq!(block_of("conv2d_3x3"), "");
        assert_eq!(block_of("/encoder/padding/Pad_output_0"), "");
        assert_eq!(block_of("_v_146"), "");
    }
}
