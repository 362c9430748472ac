//! Report renderings: a terminal table, JUnit XML for CI systems, and a self-contained
//! HTML page with the error of every checkpoint plotted on a log scale.

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
        "  {:>4}  {:<16} {:<44} {:<16} {:>10} {:>10} {:>10} {:>6}  status",
        "#", "op", "checkpoint", "shape", "max abs", "mean abs", "max rel", "nan"
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
            "  {:>4}  {:<16} {:<44} {:<16} {:>10.3e} {:>10.3e} {:>10.3e} {:>6}  {}",
            c.index,
            c.op_type,
            c.name,
            format!("{:?}", c.shape),
            c.max_abs,
            c.mean_abs,
            c.max_rel,
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
                "max abs {:.3e} (worst index {}), tolerance atol {:e} rtol {:e}",
                c.max_abs, c.worst_index, c.tolerance.atol, c.tolerance.rtol
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

/// A self-contained page: an inline SVG plot of max abs error per checkpoint (log scale,
/// failures in red) and the table.
pub fn html(r: &Report) -> String {
    let compared: Vec<_> = r.checkpoints.iter().filter(|c| c.compared).collect();
    let (w, h, pad) = (900.0, 320.0, 50.0);
    let n = compared.len().max(2) as f64;
    let floor = 1e-9f64;
    let logs: Vec<f64> = compared
        .iter()
        .map(|c| c.max_abs.max(floor).log10())
        .collect();
    let lo = logs
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .min(-9.0)
        .floor();
    let hi = logs
        .iter()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max)
        .max(0.0)
        .ceil();
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v - lo) / (hi - lo).max(1.0);
    let mut svg = format!(
        "<svg id=\"error-plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    let _ = write!(svg, "<rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>");
    let mut decade = lo;
    while decade <= hi {
        let yy = y(decade);
        let _ = write!(
            svg,
            "<line x1=\"{pad}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{:.1}\" font-size=\"11\">1e{}</text>",
            w - pad,
            yy + 4.0,
            decade as i64
        );
        decade += 1.0;
    }
    let points: Vec<String> = logs
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"{}\"/>",
        points.join(" ")
    );
    for (i, c) in compared.iter().enumerate() {
        let color = if c.pass { "#36c" } else { "#d00" };
        let _ = write!(
            svg,
            "<circle class=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>#{} {}: {:.3e}</title></circle>",
            if c.pass { "pass" } else { "fail" },
            x(i),
            y(logs[i]),
            c.index,
            xml_escape(&c.name),
            c.max_abs
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">checkpoint (pipeline order)</text><text x=\"12\" y=\"16\" font-size=\"12\">max |engine - reference| (log10)</text></svg>",
        w / 2.0,
        h - 10.0
    );

    let mut rows = String::new();
    for c in &r.checkpoints {
        let status = if !c.compared {
            "-"
        } else if c.pass {
            "ok"
        } else {
            "FAIL"
        };
        let _ = writeln!(
            rows,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{:.3e}</td><td>{:.3e}</td><td>{:.3e}</td><td>{}</td><td>{status}</td></tr>",
            status.to_lowercase(),
            c.index,
            xml_escape(&c.op_type),
            xml_escape(&c.name),
            c.shape,
            c.max_abs,
            c.mean_abs,
            c.max_rel,
            c.nan_inf_engine
        );
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>m2w validate: {model}</title>\n<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:2px 6px}}tr.fail{{background:#fdd}}pre{{background:#f6f6f6;padding:1em}}</style></head>\n<body><h1>m2w validate: {model}</h1>\n<p>{mode} against {rt} on {adapter}: <b id=\"summary\">{p} passed, {f} failed, {nc} not compared</b></p>\n<pre>{first}</pre>\n{svg}\n<table><thead><tr><th>#</th><th>op</th><th>checkpoint</th><th>shape</th><th>max abs</th><th>mean abs</th><th>max rel</th><th>NaN/Inf</th><th>status</th></tr></thead><tbody>\n{rows}</tbody></table></body></html>\n",
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
