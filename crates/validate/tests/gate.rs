//! validate as a CI gate: planted faults are caught and named first, reports have stable
//! JSON (snapshot), JUnit that parses, and an HTML page that headless Chromium renders with
//! the error plot.

use std::path::{Path, PathBuf};

use m2w_engine::Kernel;
use m2w_engine::gpu::Gpu;
use m2w_validate::{Options, Report, compile_for, render, validate};

fn bundled() -> PathBuf {
    m2w_setup::bundled_model()
}

/// A reference folder for the bundled model (ORT, seed 0).
fn reference(dir: &Path) -> PathBuf {
    let out = dir.join("reference");
    let lib = m2w_setup::onnxruntime_library().unwrap();
    m2w_reference::onnx_ref::reference(&lib, &bundled(), &out, &Default::default()).unwrap();
    out
}

fn run(reference: &Path, opts: &Options, plant: impl FnOnce(&mut m2w_engine::Plan)) -> Report {
    try_run(reference, opts, plant).unwrap()
}

fn try_run(
    reference: &Path,
    opts: &Options,
    plant: impl FnOnce(&mut m2w_engine::Plan),
) -> Result<Report, m2w_validate::ValidateError> {
    let model = m2w_model::Model::open(&bundled()).unwrap();
    let (mut plan, inputs) = compile_for(&model, reference)?;
    plant(&mut plan);
    let gpu = Gpu::new().unwrap();
    validate(&gpu, &model, plan, &inputs, reference, opts)
}

/// Replaces an oracle file as a reference run would have written it: the new bytes and
/// their sha256 in index.json (so only the values differ, not the record).
fn rewrite_oracle(reference: &Path, file: &str, t: &m2w_reference::HostTensor) {
    let bytes = t.to_npy().unwrap();
    std::fs::write(reference.join(file), &bytes).unwrap();
    let index_path = reference.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    for c in index["checkpoints"].as_array_mut().unwrap() {
        if c["file"] == file {
            c["sha256"] = m2w_model::io::sha256_bytes(&bytes).into();
        }
    }
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
}

/// The first Relu checkpoint, its file and its values.
fn relu_oracle(reference: &Path) -> (m2w_reference::index::Checkpoint, m2w_reference::HostTensor) {
    let index = m2w_reference::read_index(reference).unwrap();
    let c = index
        .checkpoints
        .iter()
        .find(|c| c.op_type == "Relu")
        .unwrap()
        .clone();
    let t = m2w_reference::HostTensor::read_npy(&reference.join(&c.file)).unwrap();
    (c, t)
}

/// Issue 19, hole 2: a file changed after the reference was written (its sha256 no longer
/// the recorded one) is refused, whatever it holds.
#[test]
fn an_oracle_changed_after_the_reference_run_is_refused_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let (victim, mut t) = relu_oracle(&r);
    if let m2w_reference::HostTensor::F32(_, v) = &mut t {
        v[5] += 1.0;
    }
    std::fs::write(r.join(&victim.file), t.to_npy().unwrap()).unwrap();
    let e = try_run(&r, &Options::default(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256") && e.contains(&victim.file), "{e}");
}

/// Issue 19, hole 2: a reference whose input is all NaN made every value NaN on both sides,
/// and validate passed (27 of 27) a run that proved nothing; a graph output of nothing but
/// +inf is no oracle either. Both are refused unless asked for; when allowed, they are
/// compared exactly (the +inf output then fails against finite values).
#[test]
fn nan_inputs_and_infinite_outputs_are_refused_unless_allowed() {
    let allowed = Options {
        allow_nonfinite_oracle: true,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let index = m2w_reference::read_index(&r).unwrap();
    let nan_inputs = dir.path().join("nan-inputs");
    let lib = m2w_setup::onnxruntime_library().unwrap();
    let mut opts = m2w_reference::onnx_ref::OnnxOptions::default();
    for i in &index.inputs {
        let t = m2w_reference::HostTensor::read_npy(&r.join(&i.file)).unwrap();
        let nan =
            m2w_reference::HostTensor::F32(t.shape().to_vec(), vec![f32::NAN; t.to_f64().len()]);
        let f = dir.path().join(format!("{}.npy", i.name));
        std::fs::write(&f, nan.to_npy().unwrap()).unwrap();
        opts.input_files.insert(i.name.clone(), f);
    }
    m2w_reference::onnx_ref::reference(&lib, &bundled(), &nan_inputs, &opts).unwrap();
    let e = try_run(&nan_inputs, &Options::default(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds NaN") && e.contains("--allow-nonfinite-oracle"),
        "{e}"
    );
    // Allowed, it is compared exactly (NaN equal to NaN only): the engine's Relu turns NaN
    // into 0 where ONNX Runtime keeps NaN, so it is a failed check here, not a pass.
    let report = run(&nan_inputs, &allowed, |_| {});
    assert!(
        report.passed + report.failed > 20,
        "{}",
        render::table(&report)
    );

    let out = index
        .checkpoints
        .iter()
        .find(|c| c.graph_output)
        .unwrap()
        .clone();
    let t = m2w_reference::HostTensor::read_npy(&r.join(&out.file)).unwrap();
    let inf =
        m2w_reference::HostTensor::F32(t.shape().to_vec(), vec![f32::INFINITY; t.to_f64().len()]);
    rewrite_oracle(&r, &out.file, &inf);
    let e = try_run(&r, &Options::default(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only infinities") && e.contains(&out.output),
        "{e}"
    );
    let report = run(&r, &allowed, |_| {});
    let c = report
        .checkpoints
        .iter()
        .find(|c| c.name == out.output)
        .unwrap();
    assert!(!c.pass, "finite engine values against +inf must fail");
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn a_clean_port_passes_every_checkpoint_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    for per_layer in [false, true] {
        let report = run(
            &r,
            &Options {
                per_layer,
                ..Default::default()
            },
            |_| {},
        );
        assert_eq!(
            (report.passed, report.failed),
            (27, 0),
            "per_layer {per_layer}"
        );
        assert_eq!(report.exit_code(), 0);
    }
}

#[test]
fn a_corrupted_oracle_file_is_the_first_and_only_failure() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let index = m2w_reference::read_index(&r).unwrap();
    let victim = index
        .checkpoints
        .iter()
        .find(|c| c.op_type == "Relu")
        .unwrap()
        .clone();
    let path = r.join(&victim.file);
    let mut t = m2w_reference::HostTensor::read_npy(&path).unwrap();
    if let m2w_reference::HostTensor::F32(_, v) = &mut t {
        v[5] += 1.0;
    }
    let _ = &path;
    rewrite_oracle(&r, &victim.file, &t);
    let report = run(&r, &Options::default(), |_| {});
    assert_eq!(report.failed, 1, "{}", render::table(&report));
    assert_eq!(report.exit_code(), 1);
    let first = report.first_failure.as_ref().unwrap();
    assert_eq!(first.name, victim.output);
    assert!(
        first.inputs.iter().all(|(_, s)| !s.starts_with("DIFFERS")),
        "{:?}",
        first.inputs
    );
}

/// A size the engine computed that differs from the oracle's (a data-dependent length after
/// values drifted) is a failed checkpoint with its problem stated, not an aborted report.
#[test]
fn a_checkpoint_of_another_shape_fails_with_its_problem_and_the_report_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let index = m2w_reference::read_index(&r).unwrap();
    let victim = index
        .checkpoints
        .iter()
        .find(|c| c.op_type == "Relu")
        .unwrap()
        .clone();
    let path = r.join(&victim.file);
    let mut t = m2w_reference::HostTensor::read_npy(&path).unwrap();
    if let m2w_reference::HostTensor::F32(shape, v) = &mut t {
        *shape.last_mut().unwrap() += 1;
        let extra = v.len() / (*shape.last().unwrap() as usize - 1);
        v.extend(std::iter::repeat_n(0.0, extra));
    }
    let _ = &path;
    rewrite_oracle(&r, &victim.file, &t);
    let report = run(&r, &Options::default(), |_| {});
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        (report.passed, report.failed),
        (26, 1),
        "{}",
        render::table(&report)
    );
    let bad = report
        .checkpoints
        .iter()
        .find(|c| c.name == victim.output)
        .unwrap();
    assert!(
        bad.problem.as_deref().unwrap_or("").contains("shape"),
        "{:?}",
        bad.problem
    );
    assert!(render::table(&report).contains("FAIL (shape)"));
    let first = report.first_failure.as_ref().unwrap();
    assert_eq!(first.name, victim.output);
    assert!(first.hint.contains("shape"), "{}", first.hint);
}

#[test]
fn a_kernel_with_a_wrong_constant_is_named_first_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    // The Sigmoid dispatch gets the hard-sigmoid kernel (0.2 x + 0.5): wrong everywhere
    // but near 0, exactly the kind of constant a port gets wrong.
    let plant = |plan: &mut m2w_engine::Plan| {
        let d = plan
            .dispatches
            .iter_mut()
            .find(|d| d.kernel == Kernel::EwSigmoidF32)
            .expect("silero has a Sigmoid");
        d.kernel = Kernel::EwHardSigmoidF32;
        d.params[2] = 0.2f32.to_bits();
        d.params[3] = 0.5f32.to_bits();
    };
    for per_layer in [false, true] {
        let report = run(
            &r,
            &Options {
                per_layer,
                ..Default::default()
            },
            plant,
        );
        let first = report.first_failure.as_ref().expect("the fault is caught");
        assert_eq!(
            first.name, "/decoder/sigmoid/Sigmoid_output_0",
            "per_layer {per_layer}"
        );
        assert_eq!(report.exit_code(), 1);
        let failing: Vec<&str> = report
            .checkpoints
            .iter()
            .filter(|c| c.compared && !c.pass)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            failing,
            ["/decoder/sigmoid/Sigmoid_output_0", "speech_probs"],
            "only the sigmoid and its reshape"
        );
    }
}

#[test]
fn json_report_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let report = run(&r, &Options::default(), |_| {});
    // Error magnitudes depend on the adapter's arithmetic: the snapshot fixes the schema and
    // the pass/fail structure, the numbers are redacted.
    insta::assert_json_snapshot!("silero_vad_v6_validate", report, {
        ".adapter" => "[adapter]",
        // ORT's float results (and so the oracle files' hashes) may differ across CPUs.
        ".checkpoints[].oracle_sha256" => "[sha256]",
        ".checkpoints[].max_abs" => "[f64]",
        ".checkpoints[].mean_abs" => "[f64]",
        ".checkpoints[].max_rel" => "[f64]",
        ".checkpoints[].max_ratio" => "[f64]",
        ".checkpoints[].worst_index" => "[index]",
        ".checkpoints[].worst_engine" => "[f64]",
        ".checkpoints[].worst_reference" => "[f64]",
    });
}

#[test]
fn junit_parses_as_junit_xml() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let report = run(&r, &Options::default(), |plan| {
        plan.dispatches
            .iter_mut()
            .find(|d| d.kernel == Kernel::EwSigmoidF32)
            .unwrap()
            .kernel = Kernel::EwCopyF32;
    });
    let xml = render::junit(&report);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suite = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 27);
    let failures = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .count();
    assert_eq!(failures.to_string(), suite.attribute("failures").unwrap());
    assert_eq!(failures, report.failed);
    assert!(failures > 0);
}

#[test]
fn html_report_renders_in_headless_chromium_with_the_plot() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("Debian chromium (apt-get install chromium; .ci/run installs it)");
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let report = run(&r, &Options::default(), |_| {});
    let page = dir.path().join("report.html");
    std::fs::write(&page, render::html(&report)).unwrap();
    let profile = dir.path().join("profile");
    let shot = dir.path().join("shot.png");
    let flags = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ];
    let dom = std::process::Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"error-plot\""),
        "no plot in the rendered DOM"
    );
    assert_eq!(
        dom.matches("<circle").count(),
        27,
        "one point per compared checkpoint"
    );
    assert!(dom.contains("27 passed, 0 failed"));
    let status = std::process::Command::new(chromium)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,800")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
}
