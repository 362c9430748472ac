//! One function per pipeline phase that needs more than a line or two in `run`: reference,
//! engine, validate's options and reports, port (all phases), generate and weight verification.

use std::path::{Path, PathBuf};

use crate::{CheckFailed, Usage, input_err, port_err, ref_err, setup_err};

#[allow(clippy::too_many_arguments)]
pub fn reference(
    model: &Path,
    out: &Path,
    dims: Vec<(String, u64)>,
    inputs: Vec<(String, PathBuf)>,
    values: Vec<(String, f64)>,
    seed: u64,
    check_determinism: bool,
    prompt: &str,
    max_new: usize,
) -> anyhow::Result<()> {
    let format = m2w_model::Model::open(model).map_err(input_err)?.format;
    if format == m2w_model::Format::Gguf {
        let _progress = m2w_progress::task("reference (candle llama, run twice)", None);
        let run = m2w_reference::llama::reference(model, out, prompt, max_new).map_err(ref_err)?;
        println!(
            "candle llama reference: prompt {:?} = {:?}; {} prefill + {} decode checkpoints (each pass run twice, bit-identical)",
            run.prompt, run.prompt_ids, run.prefill_checkpoints, run.decode_checkpoints
        );
        println!(
            "greedy continuation ({} tokens): {:?} = {:?}",
            run.generated_ids.len(),
            run.generated_text,
            run.generated_ids
        );
        println!(
            "-> {}/{{prefill,decode}}/index.json, {}/generation.json",
            out.display(),
            out.display()
        );
        return Ok(());
    }
    let opts = m2w_reference::onnx_ref::OnnxOptions {
        dims: dims.into_iter().collect(),
        input_files: inputs.into_iter().collect(),
        fill: values.into_iter().collect(),
        seed,
        check_determinism,
    };
    let progress = m2w_progress::task(
        if format == m2w_model::Format::Tflite {
            "reference (LiteRT)"
        } else {
            "reference (ONNX Runtime)"
        },
        None,
    );
    let index = if format == m2w_model::Format::Tflite {
        // LiteRT's runner always runs twice and compares.
        let (python, script) = m2w_setup::litert_runner().map_err(setup_err)?;
        m2w_reference::tflite_ref::reference(&python, &script, model, out, &opts)
            .map_err(ref_err)?
    } else {
        let lib = m2w_setup::onnxruntime_library().map_err(setup_err)?;
        m2w_reference::onnx_ref::reference(&lib, model, out, &opts).map_err(ref_err)?
    };
    drop(progress);
    for i in &index.inputs {
        println!("input {} {} {:?}: {}", i.name, i.dtype, i.shape, i.how);
    }
    println!(
        "dims: {}",
        index
            .dims
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} checkpoints ({} graph outputs), {} values not captured (inside subgraphs, or weights only){} -> {}",
        index.checkpoints.len(),
        index.checkpoints.iter().filter(|c| c.graph_output).count(),
        index.not_captured.len(),
        if index.determinism_checked {
            "; determinism check passed (two runs bit-identical)"
        } else {
            ""
        },
        out.join("index.json").display()
    );
    Ok(())
}

/// Compiles, writes plan.json + shaders, runs on wgpu with the reference inputs and prints
/// one line per checkpoint (validate's comparison at its default tolerances).
pub fn engine(model_path: &Path, reference: &Path, out: &Path, reuse: bool) -> anyhow::Result<()> {
    let compiling = m2w_progress::task("engine: compile the plan", None);
    let build =
        m2w_port::engine::build_engine(model_path, reference, out, reuse).map_err(port_err)?;
    drop(compiling);
    let plan = &build.plan;
    println!(
        "plan: {} dispatches, {} kernels, {} buffers ({} bytes{}) -> {}",
        plan.dispatches.len(),
        build.kernels,
        plan.buffers.len(),
        plan.buffer_bytes(),
        if reuse {
            ", intermediates reused over lifetimes"
        } else {
            ""
        },
        out.display()
    );
    let report = build.check(reference).map_err(port_err)?;
    let d = m2w_validate::F32_DEFAULT;
    println!(
        "ran on {}; tolerance |a-b| <= {:e} + {:e}*|ref|",
        report.adapter, d.atol, d.rtol
    );
    println!(
        "  {:>3}  {:<18} {:<48} {:>11}  status",
        "#", "op", "checkpoint", "max |err|"
    );
    for c in report.checkpoints.iter().filter(|c| c.compared) {
        println!(
            "  {:>3}  {:<18} {:<48} {:>11.3e}  {}",
            c.index,
            c.op_type,
            c.name,
            c.max_abs,
            if c.pass { "ok" } else { "MISMATCH" }
        );
    }
    println!(
        "{} checkpoints compared, {} out of tolerance",
        report.passed + report.failed,
        report.failed
    );
    Ok(())
}

pub fn validate_options(
    per_layer: bool,
    atol: Option<f64>,
    rtol: Option<f64>,
    tol: &[String],
) -> anyhow::Result<m2w_validate::Options> {
    let d = m2w_validate::F32_DEFAULT;
    let mut opts = m2w_validate::Options {
        f32: Some(m2w_validate::Tolerance {
            atol: atol.unwrap_or(d.atol),
            rtol: rtol.unwrap_or(d.rtol),
            scaled: d.scaled,
        }),
        overrides: vec![],
        per_layer,
        max_dims: vec![],
        empty_dims: vec![],
        save_mismatches: None,
        allow_nonfinite_oracle: false,
        profile: false,
    };
    for t in tol {
        let parsed = t.split_once('=').and_then(|(p, v)| {
            let parts: Vec<&str> = v.split(',').collect();
            if !(2..=3).contains(&parts.len()) {
                return None;
            }
            Some((
                p.to_string(),
                m2w_validate::Tolerance {
                    atol: parts[0].parse().ok()?,
                    rtol: parts[1].parse().ok()?,
                    scaled: match parts.get(2) {
                        Some(s) => s.parse().ok()?,
                        None => 0.0,
                    },
                },
            ))
        });
        opts.overrides.push(
            parsed.ok_or_else(|| {
                Usage(format!("--tol {t:?}: expected PATTERN=ATOL,RTOL[,SCALED]"))
            })?,
        );
    }
    Ok(opts)
}

pub fn write_reports(
    report: &m2w_validate::Report,
    json: bool,
    junit: Option<&Path>,
    html: Option<&Path>,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", m2w_validate::render::table(report));
    }
    if let Some(p) = junit {
        m2w_model::io::write_atomic(p, m2w_validate::render::junit(report).as_bytes())
            .map_err(|e| Usage(format!("{}: {e}", p.display())))?;
    }
    if let Some(p) = html {
        m2w_model::io::write_atomic(p, m2w_validate::render::html(report).as_bytes())
            .map_err(|e| Usage(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}

/// What `port` is told about the model's inputs and outputs.
#[derive(Default)]
pub struct PortArgs {
    pub dims: Vec<(String, u64)>,
    pub max_dims: Vec<(String, u64)>,
    pub values: Vec<(String, f64)>,
    pub inputs: Vec<(String, std::path::PathBuf)>,
    pub wav: Option<(String, u32)>,
}

/// What `port` runs on: a model file, or the graphs of a generation pipeline (a folder,
/// or `--graph` repeated).
pub struct PortSource {
    pub model: Option<std::path::PathBuf>,
    pub graphs: Vec<(String, std::path::PathBuf)>,
    pub tokenizer: Option<std::path::PathBuf>,
    pub prompts: Vec<String>,
}

/// Runs every phase and prints each step, the report and the verdict; then the dims the
/// plan takes, where the report is and the next command. With `json`, the steps go to
/// stderr and stdout holds one JSON summary (schema `m2w.port/1`).
pub fn port(
    source: PortSource,
    out: &Path,
    args: PortArgs,
    per_layer: bool,
    tol: &[String],
    verbose: bool,
    json: bool,
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let say = |line: &str| {
        if json {
            crate::progress::clear();
            eprintln!("{line}");
        } else {
            crate::progress::say(line)
        }
    };
    let mut validate = validate_options(per_layer, None, None, tol)?;
    validate.max_dims = args
        .max_dims
        .into_iter()
        .map(|(k, v)| (k, v as usize))
        .collect();
    let opts = m2w_port::port::PortOptions {
        dims: args.dims,
        values: args.values,
        inputs: args.inputs,
        wav: args.wav,
        validate,
        verbose,
    };
    let mut summary = PortSummary::new(&source, out);
    // A folder of a palm detector and a hand landmark model: MediaPipe's hand tracking.
    if let Some(folder) = source.model.as_deref().filter(|m| m.is_dir())
        && let Some((detector, landmarks)) =
            m2w_port::hands::find_pair(folder, &m2w_vision::hands::HandsConfig::mediapipe_lite())
    {
        let outcomes =
            m2w_port::hands::port_hands(&detector, &landmarks, out, &opts, &mut |line| say(line))
                .map_err(port_err)?;
        summary.kind = "hands";
        let mut failures = Vec::new();
        for (role, outcome) in &outcomes {
            if let m2w_port::port::PortOutcome::Graph(report) = outcome {
                say(&format!(
                    "\n{role}:\n{}",
                    m2w_validate::render::table(report)
                ));
                summary.add_graph(role, &out.join(role), report);
            }
            if let Some(why) = outcome.failure() {
                failures.push(format!("{role}: {why}"));
            }
        }
        return summary.finish(t0, failures, json, &say);
    }
    let pipeline = match &source.model {
        Some(m) if m.is_dir() => Some(m2w_port::pipeline::Source::folder(m).map_err(port_err)?),
        Some(_) => None,
        None => {
            let folder = source.graphs[0]
                .1
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            Some(m2w_port::pipeline::Source {
                graphs: source.graphs.clone(),
                folder,
                tokenizer: None,
            })
        }
    };
    if let Some(mut src) = pipeline {
        if !opts.dims.is_empty() || !opts.values.is_empty() || !opts.inputs.is_empty() {
            return Err(Usage(
                "--dim, --value and --input do not apply to a pipeline: its loop makes every graph's inputs from the prompts".into(),
            )
            .into());
        }
        src.tokenizer = source.tokenizer.clone();
        let prompts: Vec<String> = if source.prompts.is_empty() {
            m2w_port::pipeline::DEFAULT_PROMPTS
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            source.prompts.clone()
        };
        let outcome =
            m2w_port::pipeline::port_pipeline(&src, out, &opts, &prompts, &mut |line| say(&line))
                .map_err(port_err)?;
        summary.kind = "pipeline";
        for r in &outcome.reports {
            if let Some(f) = &r.report.first_failure {
                say(&format!(
                    "{} step {}: first failing checkpoint {} ({})",
                    r.graph, r.step, f.name, f.hint
                ));
            }
            summary.add_report(&format!("{} step {}", r.graph, r.step), &r.report);
        }
        summary.extra.insert(
            "generation".into(),
            serde_json::json!(out.join("validate/generation.json")),
        );
        say(&format!(
            "greedy tokens of every text: {}",
            out.join("validate/generation.json").display()
        ));
        return summary.finish(t0, outcome.failure().into_iter().collect(), json, &say);
    }
    let model_path = source.model.as_deref().expect("a model or graphs");
    let outcome = m2w_port::port::port(model_path, out, &opts, &mut |s| say(&s.to_string()))
        .map_err(port_err)?;
    match &outcome {
        m2w_port::port::PortOutcome::Graph(report) => {
            say(&format!("\n{}", m2w_validate::render::table(report)));
            summary.kind = "graph";
            summary.add_graph("", out, report);
        }
        m2w_port::port::PortOutcome::Llama(l) => {
            summary.kind = "llm";
            for r in [&l.prefill, &l.decode] {
                if let Some(f) = &r.first_failure {
                    say(&format!(
                        "{}: first failing stage {} ({})",
                        r.mode, f.name, f.hint
                    ));
                }
                summary.add_report(&r.mode, r);
            }
            if !l.greedy_identical {
                say(&format!(
                    "greedy tokens: gpu {:?}\n           candle {:?}",
                    l.greedy_engine, l.greedy_reference
                ));
            }
            summary
                .extra
                .insert("greedy_identical".into(), l.greedy_identical.into());
        }
    }
    summary.reports(out);
    summary.finish(t0, outcome.failure().into_iter().collect(), json, &say)
}

/// What `port` tells its user at the end (and `--json` prints): the verdict, the dims the
/// plan takes, where the reports are and the command that comes next.
struct PortSummary {
    model: String,
    out: PathBuf,
    kind: &'static str,
    dims: Vec<serde_json::Value>,
    checkpoints: Vec<serde_json::Value>,
    reports: Vec<serde_json::Value>,
    /// Each engine's limits report (engine/limits.json): profiles and their verdicts.
    limits: Vec<serde_json::Value>,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl PortSummary {
    fn new(source: &PortSource, out: &Path) -> Self {
        let model = match &source.model {
            Some(m) => m.display().to_string(),
            None => source
                .graphs
                .iter()
                .map(|(n, p)| format!("{n}={}", p.display()))
                .collect::<Vec<_>>()
                .join(" "),
        };
        PortSummary {
            model,
            out: out.to_path_buf(),
            kind: "graph",
            dims: vec![],
            checkpoints: vec![],
            reports: vec![],
            limits: vec![],
            extra: Default::default(),
        }
    }

    fn add_report(&mut self, what: &str, r: &m2w_validate::Report) {
        self.checkpoints.push(serde_json::json!({
            "graph": graph_name(what), "mode": r.mode, "passed": r.passed, "failed": r.failed,
            "not_compared": r.not_compared,
        }));
    }

    /// One ONNX/TFLite graph's report and the dims its plan takes: each named dim with the
    /// reference's value and the largest value the plan serves.
    fn add_graph(&mut self, role: &str, port: &Path, r: &m2w_validate::Report) {
        self.add_report(role, r);
        let read = |p: PathBuf| -> Option<serde_json::Value> {
            serde_json::from_slice(&std::fs::read(p).ok()?).ok()
        };
        let reference = read(port.join("reference/index.json"));
        if let Some(plan) = read(port.join("engine/plan.json")) {
            for d in plan["dims"].as_array().into_iter().flatten() {
                let name = d["name"].as_str().unwrap_or_default();
                self.dims.push(serde_json::json!({
                    "graph": graph_name(role),
                    "name": name,
                    "reference": reference.as_ref().map(|r| r["dims"][name].clone()),
                    "max": d["max"],
                }));
            }
        }
        self.reports(port);
    }

    /// The HTML reports of a port folder's validate/ (report.html; a GGUF decoder's
    /// report-prefill.html and report-decode.html), each with its JSON and JUnit siblings.
    fn reports(&mut self, port: &Path) {
        // The device profiles' verdicts, as the engine phase wrote them.
        if let Some(l) = std::fs::read(port.join("engine").join(m2w_engine::limits::FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            self.limits.push(serde_json::json!({
                "graph": port.file_name().map(|n| n.to_string_lossy().into_owned()),
                "file": port.join("engine").join(m2w_engine::limits::FILE),
                "profiles": l["profiles"],
            }));
        }
        let v = port.join("validate");
        let mut html: Vec<PathBuf> = std::fs::read_dir(&v)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("report") && n.ends_with(".html"))
            })
            .collect();
        html.sort();
        for h in html {
            let known = self
                .reports
                .iter()
                .any(|r| r["html"] == serde_json::json!(h));
            if !known {
                self.reports.push(serde_json::json!({
                    "html": h,
                    "json": h.with_extension("json"),
                    "junit": v.join(h.file_name().expect("a file").to_string_lossy().replace("report", "junit").replace(".html", ".xml")),
                }));
            }
        }
    }

    /// The command that builds the package from this port.
    fn next_command(&self) -> String {
        let name = Path::new(&self.model)
            .file_stem()
            .map(|s| s.to_string_lossy().to_lowercase())
            .unwrap_or_else(|| "model".into())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>();
        let out = self.out.display().to_string();
        format!(
            "m2w package --port {} --name {name}-webgpu --out {}",
            shell_word(&out),
            shell_word(&format!("{}-package", out.trim_end_matches('/')))
        )
    }

    fn finish(
        mut self,
        t0: std::time::Instant,
        failures: Vec<String>,
        json: bool,
        say: &dyn Fn(&str),
    ) -> anyhow::Result<()> {
        let seconds = t0.elapsed().as_secs_f64();
        let next = self.next_command();
        if json {
            let mut doc = serde_json::json!({
                "schema": "m2w.port/1",
                "model": self.model,
                "out": self.out,
                "kind": self.kind,
                "passed": failures.is_empty(),
                "failures": failures,
                "seconds": (seconds * 10.0).round() / 10.0,
                "dims": self.dims,
                "checkpoints": self.checkpoints,
                "reports": self.reports,
                "limits": self.limits,
                "next": next,
            });
            doc.as_object_mut()
                .expect("an object")
                .append(&mut self.extra);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            say(&format!(
                "\nport {} in {seconds:.1} s -> {}",
                if failures.is_empty() {
                    "passed"
                } else {
                    "FAILED"
                },
                self.out.display()
            ));
            for d in &self.dims {
                say(&format!(
                    "  dim {}{}: reference {}, plan serves up to {} (--max-dim {}=N raises it)",
                    d["name"].as_str().unwrap_or_default(),
                    match d["graph"].as_str() {
                        Some("") | None => String::new(),
                        Some(g) => format!(" ({g})"),
                    },
                    d["reference"],
                    d["max"],
                    d["name"].as_str().unwrap_or_default()
                ));
            }
            if self.dims.is_empty() && self.kind == "graph" {
                say("  dims: none (the plan is for the reference's input shapes)");
            }
            for r in &self.reports {
                say(&format!(
                    "  report: {}",
                    r["html"].as_str().unwrap_or_default()
                ));
            }
            for l in &self.limits {
                say(&format!(
                    "  device limits ({}):",
                    l["file"].as_str().unwrap_or_default()
                ));
                for line in limits_lines(l) {
                    say(&format!("    {line}"));
                }
            }
            if failures.is_empty() {
                say(&format!("  next: {next}"));
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(CheckFailed(failures.join("; ")).into()),
        }
    }
}

/// One line per device profile of a limits report (limits.json): "fits", or each limit
/// it lacks with what needs it.
pub fn limits_lines(report: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in report["profiles"].as_array().into_iter().flatten() {
        let short: Vec<String> = p["short"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                format!(
                    "{} needs {} > {} ({})",
                    s[0]["limit"].as_str().unwrap_or_default(),
                    s[0]["value"],
                    s[1],
                    s[0]["by"].as_str().unwrap_or_default()
                )
            })
            .collect();
        out.push(format!(
            "{:<15} {}",
            p["profile"].as_str().unwrap_or_default(),
            if short.is_empty() {
                "fits".to_string()
            } else {
                format!("does not fit: {}", short.join("; "))
            }
        ));
    }
    out
}

/// A graph's name in the summary: null for the one graph of a single-model port.
fn graph_name(role: &str) -> serde_json::Value {
    match role {
        "" => serde_json::Value::Null,
        r => r.into(),
    }
}

/// `s` as one shell word (quoted when it holds anything but safe characters).
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn generate(
    model_path: &Path,
    prompt: &str,
    chat: bool,
    max_new: usize,
    sampling: &m2w_engine::llama::Sampling,
) -> anyhow::Result<()> {
    use std::io::Write;
    let stats = m2w_port::generate::generate(
        model_path,
        prompt,
        chat,
        max_new,
        sampling,
        || println!("{prompt}"),
        |text| {
            print!("{text}");
            let _ = std::io::stdout().flush();
        },
    )
    .map_err(port_err)?;
    println!(
        "\n\n[{} prompt + {} new tokens in {:.2} s on {}]",
        stats.prompt_tokens, stats.new_tokens, stats.seconds, stats.adapter
    );
    Ok(())
}

pub fn verify_weights(model: &Path, out: &Path) -> anyhow::Result<()> {
    let r = m2w_extract::verify(model, out).map_err(|e| match e {
        m2w_extract::ExtractError::Input(e) => input_err(e),
        other => anyhow::Error::new(Usage(other.to_string())),
    })?;
    println!(
        "verify: {} tensors checked, worst abs error {:.3e} ({})",
        r.checked,
        r.worst_abs,
        if r.worst_tensor.is_empty() {
            "all exact"
        } else {
            &r.worst_tensor
        }
    );
    if !r.failures.is_empty() {
        for f in &r.failures {
            eprintln!("  MISMATCH {f}");
        }
        return Err(
            CheckFailed(format!("verify failed: {} difference(s)", r.failures.len())).into(),
        );
    }
    Ok(())
}
