//! `port`: every phase in turn, one folder each ([`Layout`]); a phase whose stamp matches
//! (same model file, same options, same m2w) is skipped. ONNX graphs go through ONNX
//! Runtime, the graph compiler and the checkpoint gate; GGUF llama-family decoders through
//! the candle reference, the llama plans and the stage-by-stage gate plus greedy tokens.

use std::path::Path;

use crate::{Layout, PortError, fresh, input, mark, stamp, stamp_of, write_reports};

/// The options of a port.
#[derive(Clone, Debug, Default)]
pub struct PortOptions {
    /// Symbolic dim values for the reference inputs (`sequence=16`).
    pub dims: Vec<(String, u64)>,
    /// Inputs filled with one value (`sr=16000`).
    pub values: Vec<(String, f64)>,
    /// Inputs given as .npy files (`tokens=tokens.npy`).
    pub inputs: Vec<(String, std::path::PathBuf)>,
    /// Write this float output of an end-to-end run as a mono 16-bit WAV at this sample
    /// rate (`audio=24000`), next to the reports: the port's audio, heard.
    pub wav: Option<(String, u32)>,
    /// Tolerances and mode of the validate phase. GGUF decoders are validated end to end,
    /// with 2e-3/2e-3 after the given overrides.
    pub validate: m2w_validate::Options,
    /// List every refused node rather than five per op.
    pub verbose: bool,
}

/// One phase done (or skipped): `[index/5] phase summary`.
#[derive(Clone, Debug)]
pub struct Step {
    pub index: usize,
    pub phase: &'static str,
    /// Unchanged since the last run: `summary` is the folder.
    pub skipped: bool,
    pub summary: String,
}

/// The GGUF decoder's verdict.
#[derive(Clone, Debug)]
pub struct LlamaOutcome {
    pub prefill: m2w_validate::Report,
    pub decode: m2w_validate::Report,
    /// The GPU's greedy tokens equal the reference's.
    pub greedy_identical: bool,
    pub greedy_engine: Vec<u32>,
    pub greedy_reference: Vec<u32>,
}

impl std::fmt::Display for Step {
    /// `[3/5] reference <summary>`, as the CLI prints a step.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "[{}/5] {:<9} {}{}",
            self.index,
            self.phase,
            if self.skipped {
                "unchanged, skipped: "
            } else {
                ""
            },
            self.summary
        )
    }
}

/// What the validate phase found (returned once per port: its size does not matter).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum PortOutcome {
    /// An ONNX graph: one report over every checkpoint.
    Graph(m2w_validate::Report),
    /// A GGUF decoder.
    Llama(LlamaOutcome),
}

impl PortOutcome {
    /// Why the port fails its gate, if it does.
    pub fn failure(&self) -> Option<String> {
        match self {
            PortOutcome::Graph(r) if r.failed > 0 => {
                Some(format!("{} checkpoint(s) out of tolerance", r.failed))
            }
            PortOutcome::Llama(l)
                if l.prefill.failed + l.decode.failed > 0 || !l.greedy_identical =>
            {
                Some("the GPU engine differs from the candle reference".into())
            }
            _ => None,
        }
    }
}

/// The prompt of a GGUF port's reference.
pub const GGUF_PROMPT: &str = "The capital of France is";
/// Greedy tokens the GGUF reference generates.
pub const GGUF_MAX_NEW: usize = 32;

/// Runs every phase of `model_path` into `out`, reporting each through `on_step`.
pub fn port(
    model_path: &Path,
    out: &Path,
    opts: &PortOptions,
    on_step: &mut dyn FnMut(&Step),
) -> Result<PortOutcome, PortError> {
    let mut model = m2w_model::Model::open(model_path)?;
    let sha = model.sources_sha256()?;
    std::fs::create_dir_all(out).map_err(|e| input(format!("{}: {e}", out.display())))?;
    let layout = Layout::new(out);
    let mut step = |index: usize, phase: &'static str, skipped: bool, summary: String| {
        on_step(&Step {
            index,
            phase,
            skipped,
            summary,
        })
    };
    let skipped = |dir: &Path| dir.display().to_string();

    let dir = layout.inspect();
    let st = stamp(&sha, "inspect");
    if fresh(&dir, &st) {
        step(1, "inspect", true, skipped(&dir));
    } else {
        let _progress = m2w_progress::task("[1/5] inspect", None);
        let report = m2w_inspect::inspect_path(model_path)?;
        m2w_model::io::replace_dir(
            &dir,
            |p, e| input(format!("{}: {e}", p.display())),
            |d| {
                let w = |name: &str, text: String| {
                    std::fs::write(d.join(name), text)
                        .map_err(|e| input(format!("{}: {e}", d.join(name).display())))
                };
                w(
                    "inspect.json",
                    serde_json::to_string_pretty(&report).expect("report serialises") + "\n",
                )?;
                w("inspect.md", m2w_inspect::markdown(&report))?;
                mark(d, &st).map_err(input)
            },
        )?;
        let m = &report.models[0];
        step(
            1,
            "inspect",
            false,
            format!(
                "{} ops, {} weights, {} parameters",
                m.ops.iter().map(|o| o.count).sum::<usize>(),
                m.weights.len(),
                m.totals.parameters
            ),
        );
    }

    // What cannot run is known from the graph alone: refuse before extract and the
    // reference spend any time (compile finds the same and more once shapes are bound).
    // A TFLite graph is first lowered onto the registry's ops (its front-end).
    let refusal = |list: &[m2w_engine::Unsupported]| {
        let r = m2w_engine::ops::Refusal(list);
        PortError::Input(format!(
            "{}: {}",
            model_path.display(),
            if opts.verbose {
                format!("{r:#}")
            } else {
                r.to_string()
            }
        ))
    };
    if let Err(e) = m2w_engine::lower_source(&mut model) {
        return Err(match e {
            m2w_engine::CompileError::Unsupported(list) => refusal(&list),
            other => PortError::Input(format!("{}: {other}", model_path.display())),
        });
    }
    if let Some(graph) = &model.graph {
        let refused = m2w_engine::ops::precheck(graph);
        if !refused.is_empty() {
            return Err(refusal(&refused));
        }
    }

    if model.format == m2w_model::Format::Gguf {
        m2w_engine::llama::precheck(&model)
            .map_err(|e| PortError::Input(format!("{}: {e}", model_path.display())))?;
    }

    let dir = layout.weights();
    let st = stamp(&sha, "extract f32");
    if fresh(&dir, &st) {
        step(2, "extract", true, skipped(&dir));
    } else {
        let _progress = m2w_progress::task("[2/5] extract and verify the weights", None);
        let manifest = m2w_extract::extract(model_path, &dir, &m2w_extract::Options::default())
            .map_err(input)?;
        let v = m2w_extract::verify(model_path, &dir).map_err(input)?;
        if !v.failures.is_empty() {
            return Err(PortError::Check(format!(
                "extract verify: {:?}",
                v.failures
            )));
        }
        mark(&dir, &st).map_err(input)?;
        step(
            2,
            "extract",
            false,
            format!(
                "{} tensors, {} bytes, verified",
                manifest.tensors.len(),
                manifest.files.iter().map(|f| f.bytes).sum::<u64>()
            ),
        );
    }

    if model.format == m2w_model::Format::Gguf {
        return port_gguf(&model, model_path, &layout, &sha, opts, &mut step);
    }

    let dims = &opts.dims;
    let values = &opts.values;
    let dir = layout.reference();
    let files: Vec<(String, String)> = opts
        .inputs
        .iter()
        .map(|(k, p)| {
            let digest = std::fs::read(p)
                .map(|b| m2w_model::io::sha256_bytes(&b))
                .unwrap_or_default();
            (k.clone(), digest)
        })
        .collect();
    let st = stamp(
        &sha,
        &format!("reference {dims:?} {values:?} {files:?} seed 0"),
    );
    if fresh(&dir, &st) {
        step(3, "reference", true, skipped(&dir));
    } else {
        let ref_opts = m2w_reference::onnx_ref::OnnxOptions {
            dims: dims.iter().cloned().collect(),
            fill: values.iter().cloned().collect(),
            input_files: opts.inputs.iter().cloned().collect(),
            check_determinism: true,
            ..Default::default()
        };
        let _progress = m2w_progress::task(
            if model.format == m2w_model::Format::Tflite {
                "[3/5] reference (LiteRT, run twice)"
            } else {
                "[3/5] reference (ONNX Runtime, run twice)"
            },
            None,
        );
        let (index, runtime) = if model.format == m2w_model::Format::Tflite {
            let (python, script) = m2w_setup::litert_runner()?;
            (
                m2w_reference::tflite_ref::reference(
                    &python, &script, model_path, &dir, &ref_opts,
                )?,
                "LiteRT",
            )
        } else {
            let lib = m2w_setup::onnxruntime_library()?;
            (
                m2w_reference::onnx_ref::reference(&lib, model_path, &dir, &ref_opts)?,
                "ONNX Runtime",
            )
        };
        mark(&dir, &st).map_err(input)?;
        step(
            3,
            "reference",
            false,
            format!(
                "{} checkpoints through {runtime}, deterministic",
                index.checkpoints.len()
            ),
        );
    }

    let dir = layout.engine();
    let st = stamp(
        &sha,
        &format!(
            "engine {} max {:?}",
            stamp_of(&layout.reference()),
            opts.validate.max_dims
        ),
    );
    // Compiled every time (seconds): the stamp cannot see a newer m2w lowering the same
    // model differently, the saved plan can.
    let compiling = m2w_progress::task("[4/5] engine: compile the plan", None);
    let (mut plan, _, static_why) = m2w_validate::compile_for_dims(
        &model,
        &layout.reference(),
        &opts.validate.max_dims,
        &opts.validate.empty_dims,
    )?;
    plan.assign_buffers(true);
    drop(compiling);
    let saved = std::fs::read_to_string(dir.join("plan.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    if fresh(&dir, &st) && saved == serde_json::to_value(&plan).ok() {
        step(4, "engine", true, skipped(&dir));
    } else {
        m2w_engine::write_engine_dir(&dir, &plan, model_path).map_err(PortError::Input)?;
        mark(&dir, &st).map_err(input)?;
        // Inputs that decide a shape or an If's branch are fixed at the reference's values.
        let fixed: Vec<String> = model
            .graph
            .iter()
            .flat_map(|g| g.inputs.iter())
            .filter(|i| !plan.inputs.contains(&i.name))
            .map(|i| i.name.clone())
            .collect();
        let fixed = if fixed.is_empty() {
            String::new()
        } else {
            format!(
                "; specialised to the reference's {} (they decide shapes or branches)",
                fixed.join(", ")
            )
        };
        // One plan for every size within the dims' maxima, or why the plan is static.
        let sizes = if !plan.dims.is_empty() {
            let dims: Vec<String> = plan
                .dims
                .iter()
                .map(|d| format!("{} <= {}", d.name, d.max))
                .collect();
            format!(
                "; any size with {} (--max-dim NAME=N raises a maximum)",
                dims.join(", ")
            )
        } else if let Some(why) = &static_why {
            let first = why.lines().take(3).collect::<Vec<_>>().join(" ");
            format!("; static for the reference's sizes: {first}")
        } else {
            String::new()
        };
        let caches = match plan.in_place_caches().len() {
            0 => String::new(),
            n => format!("; {n} KV caches appended in place (present is past's buffer)"),
        };
        step(
            4,
            "engine",
            false,
            format!(
                "{} dispatches, {} buffers, {} bytes{fixed}{caches}{sizes}",
                plan.dispatches.len(),
                plan.buffers.len(),
                plan.buffer_bytes()
            ),
        );
    }

    let dir = layout.validate();
    std::fs::create_dir_all(&dir).map_err(|e| input(format!("{}: {e}", dir.display())))?;
    let mut vopts = opts.validate.clone();
    let quantizers = run_time_quantizers(&model);
    let why = if !vopts.per_layer && !quantizers.is_empty() {
        vopts.per_layer = true;
        format!(
            "; per layer because the graph quantizes activations at run time ({}): end to end, \
             a last-bit difference upstream moves a value across a rounding step",
            quantizers.join(", ")
        )
    } else {
        String::new()
    };
    let validating = m2w_progress::task("[5/5] validate", None);
    let report = crate::validate_engine(&layout.engine(), &layout.reference(), &vopts)?;
    write_reports(&dir, "", &report)?;
    drop(validating);
    let heard = match &opts.wav {
        Some((output, rate)) => format!(
            "; {}",
            crate::write_wav_of_run(
                &layout,
                &model,
                output,
                *rate,
                &dir.join(format!("{}.wav", crate::file_stem(output)))
            )?
        ),
        None => String::new(),
    };
    step(
        5,
        "validate",
        false,
        format!(
            "{} passed, {} failed, {} not compared ({}){why}{heard}",
            report.passed, report.failed, report.not_compared, report.mode
        ),
    );
    Ok(PortOutcome::Graph(report))
}

/// The ops (with counts) that quantize values computed at run time: DynamicQuantizeLinear,
/// DynamicQuantizeLSTM, and QuantizeLinear of anything but a weight. Their integer outputs are exact functions
/// of their inputs, so engine and reference agree only when fed the same inputs.
pub(crate) fn run_time_quantizers(model: &m2w_model::Model) -> Vec<String> {
    let Some(graph) = &model.graph else {
        return vec![];
    };
    let weights: std::collections::HashSet<&str> =
        model.tensors.iter().map(|t| t.name.as_str()).collect();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for n in &graph.nodes {
        let quantizes = match n.op_type.as_str() {
            "DynamicQuantizeLinear" | "DynamicQuantizeLSTM" => true,
            "QuantizeLinear" => n
                .inputs
                .first()
                .is_some_and(|x| !weights.contains(x.as_str())),
            _ => false,
        };
        if quantizes {
            *counts.entry(n.op_type.as_str()).or_default() += 1;
        }
    }
    counts.iter().map(|(op, c)| format!("{op} x {c}")).collect()
}

/// The GGUF path of [`port`]: candle reference, llama plans, stage-by-stage validation.
fn port_gguf(
    model: &m2w_model::Model,
    model_path: &Path,
    layout: &Layout,
    sha: &str,
    opts: &PortOptions,
    step: &mut dyn FnMut(usize, &'static str, bool, String),
) -> Result<PortOutcome, PortError> {
    let dir = layout.reference();
    let st = stamp(
        sha,
        &format!("llama reference {GGUF_PROMPT:?} {GGUF_MAX_NEW}, tokenizer and chat cases"),
    );
    if fresh(&dir, &st) {
        step(3, "reference", true, dir.display().to_string());
    } else {
        let _progress = m2w_progress::task("[3/5] reference (candle llama, run twice)", None);
        let run = m2w_reference::llama::reference(model_path, &dir, GGUF_PROMPT, GGUF_MAX_NEW)?;
        mark(&dir, &st).map_err(input)?;
        step(
            3,
            "reference",
            false,
            format!(
                "candle llama: {} prefill + {} decode stages, greedy {:?}; chat template: {}",
                run.prefill_checkpoints,
                run.decode_checkpoints,
                run.generated_text,
                m2w_model::chat::ChatTemplate::of_model(model)
                    .map_or("none".to_string(), |t| t.origin)
            ),
        );
    }
    let cfg = m2w_engine::llama::config(model).map_err(PortError::Input)?;
    let generation = m2w_reference::GenerationJson::read(&layout.reference())?;
    let prompt_len = generation.prompt_ids.len();
    let (prefill, _) =
        m2w_engine::llama::build(model, prompt_len, 0, prompt_len + GGUF_MAX_NEW + 1)
            .map_err(PortError::Input)?;
    write_llama_engine_dir(&layout.engine(), model_path, &prefill, &cfg)?;
    step(
        4,
        "engine",
        false,
        format!(
            "llama plan: {} layers, {} dispatches per pass, weights packed as stored",
            cfg.layers,
            prefill.dispatches.len()
        ),
    );
    // Both sides accumulate in f32 in different orders over quantized blocks.
    let mut vopts = opts.validate.clone();
    vopts.per_layer = false;
    vopts.overrides.push((
        "*".into(),
        m2w_validate::Tolerance {
            atol: 2e-3,
            rtol: 2e-3,
            scaled: 0.0,
        },
    ));
    let validating = m2w_progress::task("[5/5] validate (prefill, decode, greedy tokens)", None);
    let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
    let (prefill, decode, greedy_identical, greedy_engine, greedy_reference) =
        m2w_validate::validate_llama(&gpu, model, &layout.reference(), &vopts)?;
    drop(validating);
    let dir = layout.validate();
    std::fs::create_dir_all(&dir).map_err(|e| input(format!("{}: {e}", dir.display())))?;
    write_reports(&dir, "-prefill", &prefill)?;
    write_reports(&dir, "-decode", &decode)?;
    step(
        5,
        "validate",
        false,
        format!(
            "prefill {} passed / {} failed, decode {} passed / {} failed, greedy {} tokens {}",
            prefill.passed,
            prefill.failed,
            decode.passed,
            decode.failed,
            greedy_reference.len(),
            if greedy_identical {
                "identical"
            } else {
                "DIFFER"
            }
        ),
    );
    Ok(PortOutcome::Llama(LlamaOutcome {
        prefill,
        decode,
        greedy_identical,
        greedy_engine,
        greedy_reference,
    }))
}

/// The engine folder of a GGUF decoder: its prefill plan (for reading), its configuration
/// and engine.json (`kind: llama`: `cargo xtask package` builds the package's plans from the
/// model itself). Replaced atomically.
pub fn write_llama_engine_dir(
    dir: &Path,
    model_path: &Path,
    prefill: &m2w_engine::Plan,
    config: &m2w_engine::llama::Config,
) -> Result<(), PortError> {
    let model_abs = std::fs::canonicalize(model_path)
        .map_err(|e| input(format!("{}: {e}", model_path.display())))?;
    m2w_model::io::replace_dir(
        dir,
        |p, e| input(format!("{}: {e}", p.display())),
        |d| {
            let w = |name: &str, text: String| {
                std::fs::write(d.join(name), text)
                    .map_err(|e| input(format!("{}: {e}", d.join(name).display())))
            };
            w(
                "plan-prefill.json",
                serde_json::to_string_pretty(prefill).expect("plan serialises") + "\n",
            )?;
            w(
                "config.json",
                serde_json::to_string_pretty(config).expect("config serialises") + "\n",
            )?;
            let limits = m2w_engine::limits::LimitsReport::new(&[prefill]);
            w(
                m2w_engine::limits::FILE,
                String::from_utf8(limits.to_json()).expect("utf-8"),
            )?;
            m2w_engine::EngineJson {
                model: model_abs,
                kind: Some(m2w_engine::EngineKind::Llama),
                kernels: None,
            }
            .write(d)
            .map_err(PortError::Input)
        },
    )
}
