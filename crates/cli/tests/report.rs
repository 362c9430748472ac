//! The validate report as a user reads it: a real port (the bundled Silero VAD v6) judged
//! against a reference with one checkpoint nudged out of tolerance, its report.html
//! rendered in headless Chromium (the pass line, the axes, where the failing and passing
//! points sit, the worst element), and its Model Explorer node data parsed by Model
//! Explorer's own classes (the pinned `ai-edge-model-explorer` package).

use std::path::{Path, PathBuf};
use std::process::Command;

fn m2w() -> Command {
    Command::new(env!("CARGO_BIN_EXE_m2w"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Ports the bundled model into `dir/port`, copies its reference to `dir/nudged` with
/// element 3 of one float checkpoint moved by 20x its tolerance, and validates against
/// it: returns the report's JSON and the paths of report.html and model-explorer.json.
fn failing_report(dir: &Path) -> (serde_json::Value, PathBuf, PathBuf) {
    let port = dir.join("port");
    let (code, out, err) = run(m2w()
        .arg("port")
        .arg(m2w_setup::bundled_model())
        .arg("--out")
        .arg(&port));
    assert_eq!(code, 0, "{out}\n{err}");
    let nudged = dir.join("nudged");
    let (code, out, err) = run(Command::new("cp")
        .arg("-r")
        .arg(port.join("reference"))
        .arg(&nudged));
    assert_eq!(code, 0, "{out}\n{err}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(nudged.join("index.json")).unwrap()).unwrap();
    let checkpoints = index["checkpoints"].as_array().unwrap();
    let victim = checkpoints
        .iter()
        .filter(|c| c["dtype"] == "f32")
        .nth(checkpoints.len() / 3)
        .expect("a float checkpoint");
    let file = nudged.join(victim["file"].as_str().unwrap());
    let t = m2w_reference::HostTensor::read_npy(&file).unwrap();
    let m2w_reference::HostTensor::F32(shape, mut v) = t else {
        panic!("f32")
    };
    assert!(v.len() > 3);
    v[3] += 20.0 * (1e-4 + 1e-3 * v[3].abs());
    let bytes = m2w_reference::HostTensor::F32(shape, v).to_npy().unwrap();
    std::fs::write(&file, &bytes).unwrap();
    // Recorded as a reference run would have (the oracle's checksum is checked).
    let victim_file = victim["file"].clone();
    let mut index = index.clone();
    for c in index["checkpoints"].as_array_mut().unwrap() {
        if c["file"] == victim_file {
            c["sha256"] = m2w_model::io::sha256_bytes(&bytes).into();
        }
    }
    std::fs::write(
        nudged.join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    let html = dir.join("report.html");
    let explorer = dir.join("model-explorer.json");
    let (code, out, err) = run(m2w()
        .args(["validate", "--json", "--engine"])
        .arg(port.join("engine"))
        .arg("--reference")
        .arg(&nudged)
        .arg("--html")
        .arg(&html)
        .arg("--model-explorer")
        .arg(&explorer));
    assert_eq!(code, 1, "a nudged oracle fails the gate: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("--json prints the report");
    assert_eq!(
        report["first_failure"]["name"], victim["output"],
        "the nudged checkpoint is the first failure"
    );
    (report, html, explorer)
}

/// The checkpoints of a report that were compared, in order.
fn compared(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["compared"] == true)
        .collect()
}

/// playwright-core in a scratch npm project (the version the packages use).
fn playwright(dir: &Path) -> PathBuf {
    let template = include_str!("../../../templates/package/package.json.tmpl");
    let version = template
        .lines()
        .find(|l| l.contains("\"playwright-core\""))
        .and_then(|l| l.split('"').nth(3))
        .expect("the package template pins playwright-core")
        .to_string();
    let npm_dir = dir.join("npm");
    std::fs::create_dir_all(&npm_dir).unwrap();
    std::fs::write(
        npm_dir.join("package.json"),
        format!(
            "{{\"private\": true, \"dependencies\": {{\"playwright-core\": \"{version}\"}}}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&npm_dir));
    assert_eq!(code, 0, "npm install: {out}\n{err}");
    npm_dir
}

const READ_PAGE: &str = r#"
const { chromium } = require('playwright-core');
(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless=new', '--no-sandbox'],
  });
  const page = await browser.newPage();
  await page.goto('file://' + process.argv[2]);
  const seen = await page.evaluate(() => {
    const num = (el, a) => Number(el.getAttribute(a));
    const points = [...document.querySelectorAll('#error-plot circle.pass, #error-plot circle.fail, #error-plot rect.exact')]
      .map(el => ({
        cls: el.getAttribute('class'),
        index: num(el, 'data-index'),
        ratio: num(el, 'data-ratio'),
        y: el.tagName === 'rect' ? num(el, 'y') + 3 : num(el, 'cy'),
        shown: el.getBoundingClientRect().height > 0,
      }));
    const line = document.querySelector('#pass-line');
    return {
      passY: line ? num(line, 'y1') : null,
      passShown: line ? line.getBoundingClientRect().width > 0 : false,
      exactY: (() => { const t = document.querySelector('#exact-row'); return t ? num(t, 'y') - 4 : null; })(),
      xLabels: [...document.querySelectorAll('#error-plot .x-label')].map(e => e.textContent),
      yLabels: [...document.querySelectorAll('#error-plot .y-label')].map(e => e.textContent),
      xTitle: document.querySelector('#x-title')?.textContent,
      yTitle: document.querySelector('#y-title')?.textContent,
      worst: document.querySelector('#worst')?.textContent,
      blocks: document.querySelectorAll('details.block').length,
      points,
    };
  });
  console.log(JSON.stringify(seen));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
"#;

#[test]
fn the_report_plots_error_against_tolerance_with_labelled_axes_and_the_worst_element() {
    let dir = tempfile::tempdir().unwrap();
    let (report, html, _) = failing_report(dir.path());
    let npm_dir = playwright(dir.path());
    std::fs::write(npm_dir.join("read-page.cjs"), READ_PAGE).unwrap();
    let (code, out, err) = run(Command::new("node")
        .arg("read-page.cjs")
        .arg(&html)
        .current_dir(&npm_dir));
    assert_eq!(code, 0, "{out}\n{err}");
    let seen: serde_json::Value = serde_json::from_str(out.trim()).expect("the page's JSON");

    // The pass line is drawn, and it divides the points exactly as the gate does.
    let pass_y = seen["passY"].as_f64().expect("a pass line");
    assert!(seen["passShown"].as_bool().unwrap());
    let points = seen["points"].as_array().unwrap();
    let compared = compared(&report);
    assert_eq!(
        points.len(),
        compared.len(),
        "one point per compared checkpoint"
    );
    let mut failing = 0;
    for (p, c) in points.iter().zip(&compared) {
        assert_eq!(p["index"], c["index"]);
        assert!(p["shown"].as_bool().unwrap());
        let y = p["y"].as_f64().unwrap();
        if c["pass"] == false {
            failing += 1;
            assert_eq!(p["cls"], "fail");
            assert!(y < pass_y, "a failing point sits above the pass line: {p}");
        } else {
            assert!(
                y >= pass_y - 0.05,
                "a passing point sits on or below it: {p}"
            );
        }
        if c["max_abs"] == 0.0 {
            assert_eq!(p["cls"], "pass exact", "exact checkpoints are marked: {p}");
            let exact_y = seen["exactY"].as_f64().expect("a labelled exact row");
            assert!((y - exact_y).abs() < 0.2, "{p} on the exact row {exact_y}");
        }
    }
    assert_eq!(failing, report["failed"].as_u64().unwrap() as usize);
    assert!(failing >= 1);

    // Both axes say what they show; every checkpoint is named under its point.
    assert!(
        seen["yTitle"]
            .as_str()
            .unwrap()
            .contains("(atol + rtol·|reference|)"),
        "{}",
        seen["yTitle"]
    );
    assert!(seen["xTitle"].as_str().unwrap().contains("checkpoint"));
    let x_labels = seen["xLabels"].as_array().unwrap();
    assert_eq!(x_labels.len(), compared.len());
    for (l, c) in x_labels.iter().zip(&compared) {
        assert!(
            l.as_str()
                .unwrap()
                .starts_with(&format!("#{} ", c["index"])),
            "{l} names checkpoint {}",
            c["index"]
        );
    }
    let y_labels: Vec<&str> = seen["yLabels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(y_labels.contains(&"1e0") && y_labels.contains(&"exact (0)"));
    assert!(seen["blocks"].as_u64().unwrap() >= 1);

    // The worst element of the first failure: its index and both values, as report.json
    // has them (element 3, the one nudged).
    let worst = &report["first_failure"]["worst"];
    assert_eq!(worst[0], 3, "the nudged element is the worst");
    let text = seen["worst"].as_str().expect("the worst element is shown");
    for part in [
        format!("[{}]", worst[0]),
        format!("{:.6e}", worst[1].as_f64().unwrap()),
        format!("{:.6e}", worst[2].as_f64().unwrap()),
    ] {
        assert!(text.contains(&part), "{text:?} shows {part}");
    }
}

const CHECK_NODE_DATA: &str = r#"
import importlib, json, sys, types, os, dataclasses
import importlib.util
spec = importlib.util.find_spec('model_explorer')
# The node-data classes only: the package's __init__ starts a web server's imports.
pkg = types.ModuleType('model_explorer')
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules['model_explorer'] = pkg
ndb = importlib.import_module('model_explorer.node_data_builder')
raw = json.load(open(sys.argv[1]))
data = ndb.GraphNodeData(
    results={k: ndb.NodeDataResult(**v) for k, v in raw.pop('results').items()},
    thresholds=[ndb.ThresholdItem(**t) for t in raw.pop('thresholds', [])],
    gradient=[ndb.GradientItem(**g) for g in raw.pop('gradient', [])],
    **raw,
)
again = json.loads(data.to_json_string())
# Model Explorer writes its defaults too; every field we wrote comes back as written.
for k, v in json.load(open(sys.argv[1])).items():
    assert again[k] == v, (k, again[k], v)
for k, r in data.results.items():
    assert isinstance(r.value, (int, float)), k
print(json.dumps({k: r.value for k, r in data.results.items()}))
"#;

#[test]
fn the_model_explorer_overlay_loads_in_model_explorers_own_classes() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _, explorer) = failing_report(dir.path());
    let python = m2w_setup::python_with(
        &[
            "ai-edge-model-explorer==0.1.34",
            "typing_extensions==4.16.0",
        ],
        true,
    )
    .expect("a Python with ai-edge-model-explorer");
    let script = dir.path().join("check.py");
    std::fs::write(&script, CHECK_NODE_DATA).unwrap();
    let (code, out, err) = run(Command::new(python).arg(&script).arg(&explorer));
    assert_eq!(code, 0, "{out}\n{err}");
    let values: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(out.trim()).unwrap();
    // Keyed by each compared checkpoint's tensor name, valued by its error in units of
    // its tolerance: above 1 exactly where the gate failed it.
    let compared = compared(&report);
    assert_eq!(values.len(), compared.len());
    for c in compared {
        let v = values[c["name"].as_str().unwrap()].as_f64().unwrap();
        assert_eq!(v > 1.0, c["pass"] == false, "{} -> {v}", c["name"]);
    }
}

/// `validate --profile` on a real port (the bundled Silero VAD v6): every dispatch of the
/// plan is counted once by kernel and once by op, the shares sum to 1, each row's bandwidth
/// is its bound bytes over its time and its roofline fraction that over the copy bandwidth
/// measured in the same run; the tables go to stderr beside the JSON report.
#[test]
fn validate_profile_accounts_for_every_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("port");
    let (code, out, err) = run(m2w()
        .arg("port")
        .arg(m2w_setup::bundled_model())
        .arg("--out")
        .arg(&port));
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = run(m2w()
        .args(["validate", "--json", "--profile", "--engine"])
        .arg(port.join("engine"))
        .arg("--reference")
        .arg(port.join("reference")));
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("--json prints the report");
    let p = &report["profile"];
    assert!(p.is_object(), "no profile: {}", report["profile_error"]);
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(port.join("engine/plan.json")).unwrap()).unwrap();
    let dispatches = plan["dispatches"].as_array().unwrap().len() as u64;
    let copy = p["copy_gb_s"].as_f64().unwrap();
    assert!(copy > 0.0 && copy.is_finite(), "copy bandwidth {copy}");
    for table in ["by_kernel", "by_op"] {
        let rows = p[table].as_array().unwrap();
        let count: u64 = rows.iter().map(|r| r["dispatches"].as_u64().unwrap()).sum();
        assert_eq!(count, dispatches, "{table}: every dispatch once");
        let share: f64 = rows.iter().map(|r| r["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-6, "{table}: shares sum to {share}");
        let ms: f64 = rows.iter().map(|r| r["ms"].as_f64().unwrap()).sum();
        let total = p["dispatch_sum_ms"].as_f64().unwrap();
        assert!(
            (ms - total).abs() <= 1e-9 * total.max(1.0),
            "{table}: {ms} vs {total} ms"
        );
        for r in rows {
            let (ms, bytes) = (r["ms"].as_f64().unwrap(), r["bytes"].as_u64().unwrap());
            assert!(bytes > 0, "{r}");
            if ms > 0.0 {
                let gb_s = r["gb_s"].as_f64().unwrap();
                assert!(
                    (gb_s - bytes as f64 / (ms * 1e6)).abs() <= 1e-9 * gb_s,
                    "{r}"
                );
                assert!(
                    (r["of_copy"].as_f64().unwrap() - gb_s / copy).abs() <= 1e-9,
                    "{r}"
                );
            }
        }
        assert!(
            rows.windows(2)
                .all(|w| w[0]["ms"].as_f64() >= w[1]["ms"].as_f64()),
            "{table}: largest time first"
        );
    }
    assert!(
        err.contains("| kernel | dispatches | ms |") && err.contains("| op | dispatches | ms |"),
        "{err}"
    );
}
