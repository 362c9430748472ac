//! `cargo xtask`: the m2w command line. One subcommand per phase plus set-up, tests and
//! benchmarks; the work itself lives in the phase crates.
//!
//! Exit codes: 0 success; 1 a check failed (e.g. `extract --verify` found a difference);
//! 2 bad input or a set-up step that cannot be done (one clear line on stderr).

mod bench;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "m2w: port ML models to standalone WebGPU",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Phase 1: report ops, weights, quantization, components, I/O of a model file or folder.
    Inspect {
        /// A model file (.onnx, .gguf, .safetensors) or a folder of them.
        model: PathBuf,
        /// Print the stable JSON schema (m2w.inspect/1) instead of the table.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print a Markdown architecture section.
        #[arg(long)]
        markdown: bool,
        /// Also write the output to this file (atomically).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Phase 2: weights to a GPU-ready blob (or shards) plus manifest.json.
    Extract {
        model: PathBuf,
        /// Output folder (created); holds manifest.json and weights*.bin.
        #[arg(long)]
        out: PathBuf,
        /// Split the blob into shards of at most this many bytes (at tensor boundaries).
        #[arg(long)]
        shard_bytes: Option<u64>,
        /// f32 (default) or f16 for float weights.
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Re-read what was written and compare every tensor with the source.
        #[arg(long)]
        verify: bool,
        /// Write nothing; only verify an existing output folder against the model.
        #[arg(long, conflicts_with_all = ["shard_bytes", "verify"])]
        verify_only: bool,
    },
    /// Phase 3: reference activations (.npy oracles + index.json) through ONNX Runtime
    /// (ONNX) or the candle llama (GGUF).
    Reference {
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Symbolic dim values (`sequence=16`) or one input axis (`x.2=640`); repeatable.
        #[arg(long = "dim", value_parser = parse_kv::<u64>)]
        dims: Vec<(String, u64)>,
        /// An input from a .npy file (`input_ids=ids.npy`); repeatable.
        #[arg(long = "input", value_parser = parse_kv::<PathBuf>)]
        inputs: Vec<(String, PathBuf)>,
        /// Fill an input with one value (`sr=16000`); repeatable.
        #[arg(long = "value", value_parser = parse_kv::<f64>)]
        values: Vec<(String, f64)>,
        /// Seed of the generated inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run twice; fail (exit 1) unless every checkpoint is bit-identical.
        #[arg(long)]
        check_determinism: bool,
        /// GGUF: the prompt for prefill and greedy decoding.
        #[arg(long, default_value = "The capital of France is")]
        prompt: String,
        /// GGUF: tokens to generate greedily.
        #[arg(long, default_value_t = 8)]
        max_new: usize,
    },
    /// Phases 4-5: compile an ONNX model to a plan (plan.json + shaders/*.wgsl) for the input
    /// shapes of a reference folder, run it on wgpu and compare every checkpoint.
    Engine {
        model: PathBuf,
        /// A reference folder (cargo xtask reference): its inputs fix the shapes.
        #[arg(long)]
        reference: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Give every tensor its own buffer (no lifetime-based reuse).
        #[arg(long)]
        no_reuse: bool,
    },
    /// Phase 6: every checkpoint of the engine against the reference. Exit 0 all pass,
    /// 1 any mismatch, 2 bad input.
    Validate {
        /// An engine folder (cargo xtask engine); its engine.json names the model.
        #[arg(long, required_unless_present = "model")]
        engine: Option<PathBuf>,
        /// The model file (instead of --engine).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        reference: PathBuf,
        /// Feed every node the oracle values of its inputs (as Polygraphy does).
        #[arg(long)]
        per_layer: bool,
        /// f32 absolute tolerance (default 1e-4).
        #[arg(long)]
        atol: Option<f64>,
        /// f32 relative tolerance (default 1e-3).
        #[arg(long)]
        rtol: Option<f64>,
        /// Per-checkpoint tolerance: PATTERN=ATOL,RTOL (glob on the name); repeatable.
        #[arg(long = "tol")]
        tol: Vec<String>,
        /// Print the JSON report (schema m2w.validate/1) instead of the table.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        junit: Option<PathBuf>,
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// All phases: inspect -> extract -> reference -> engine -> validate, one folder each;
    /// phases whose inputs did not change are skipped.
    Port {
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Symbolic dim values for the reference inputs (`sequence=16`); repeatable.
        #[arg(long = "dim", value_parser = parse_kv::<u64>)]
        dims: Vec<(String, u64)>,
        /// Fill an input with one value (`sr=16000`); repeatable.
        #[arg(long = "value", value_parser = parse_kv::<f64>)]
        values: Vec<(String, f64)>,
        #[arg(long)]
        per_layer: bool,
        /// Per-checkpoint tolerance: PATTERN=ATOL,RTOL (glob on the name); repeatable.
        #[arg(long = "tol")]
        tol: Vec<String>,
    },
    /// Phase 9: generate the npm package from a port folder's engine.
    Package {
        /// A port folder (cargo xtask port): its engine/ is packaged.
        #[arg(long)]
        port: PathBuf,
        /// npm package name.
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// GGUF decoders: KV cache positions (prompt + generated tokens at most).
        #[arg(long, default_value_t = 512)]
        context: usize,
        /// GGUF decoders: prompt tokens per prefill pass.
        #[arg(long, default_value_t = 16)]
        prefill_chunk: usize,
    },
    /// Browser proof: build the package with npm and run its test in headless Chromium
    /// (WebGPU) against the port's reference: every checkpoint (tests/activation-match.spec.ts)
    /// or, for a GGUF decoder, tokenizer, sampler and greedy tokens (tests/generate.spec.ts).
    PackageTest {
        #[arg(long)]
        package: PathBuf,
        /// The reference folder (PORT/reference).
        #[arg(long)]
        reference: PathBuf,
        /// Save a screenshot of the demo page here.
        #[arg(long)]
        screenshot: Option<PathBuf>,
        /// Per-checkpoint tolerance NAME=ATOL,RTOL; repeatable.
        #[arg(long = "tol")]
        tol: Vec<String>,
    },
    /// Generate text natively on wgpu from a GGUF llama-family model (tokens stream out).
    Generate {
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt in the model's chat format (ChatML models).
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 64)]
        max_new: usize,
        /// 0 = greedy (argmax on the GPU).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Phase 4-5 check: ONNX's backend node tests through the plan and wgpu; writes
    /// docs/OP_SUPPORT.md and fails (exit 1) when the pass count drops below the floor.
    Conformance {
        /// Only cases whose folder name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Print every case's outcome.
        #[arg(long)]
        verbose: bool,
    },
    /// Write every WGSL kernel variant as a named .wgsl file into DIR.
    Kernels {
        #[arg(long)]
        out: PathBuf,
    },
    /// Fetch (or check) the fixture models of fixtures/fixtures.json into the cache.
    Fixtures {
        /// Only these fixtures (default: all).
        names: Vec<String>,
        /// Print the cached path of each fixture.
        #[arg(long)]
        list: bool,
    },
    /// Get the ONNX Runtime library and check for a WebGPU adapter.
    Setup,
    /// The main job: run every phase built so far on the bundled default model.
    Demo,
    /// The test suite: fixtures + set-up, then `cargo test --workspace`.
    Test {
        /// Extra arguments for cargo test (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks (not tests): extract throughput against `cp`; writes bench/RESULTS.md rows.
    Bench {
        #[arg(default_value = "extract")]
        what: String,
        /// Runs per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// An error that maps to exit code 2 (bad input / cannot be done).
#[derive(Debug)]
struct Usage(String);
impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

/// An error that maps to exit code 1 (a check failed).
#[derive(Debug)]
struct CheckFailed(String);
impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CheckFailed {}

fn main() -> ExitCode {
    quiet_mesa_runtime_dir();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<CheckFailed>().is_some() {
                1
            } else {
                2
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Mesa's Vulkan drivers complain on stderr when XDG_RUNTIME_DIR is unset (headless CI);
/// point it at a private temp folder before any thread exists.
fn quiet_mesa_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("m2w-xdg-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            // SAFETY: called first thing in main, before any other thread is started.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

fn input_err(e: m2w_model::InputError) -> anyhow::Error {
    anyhow::Error::new(Usage(e.to_string()))
}

fn setup_err(e: m2w_setup::SetupError) -> anyhow::Error {
    anyhow::Error::new(Usage(e.to_string()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect {
            model,
            json,
            markdown,
            out,
        } => {
            let report = m2w_inspect::inspect_path(&model).map_err(input_err)?;
            let text = if json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else if markdown {
                m2w_inspect::markdown(&report)
            } else {
                m2w_inspect::table(&report)
            };
            if let Some(out) = out {
                m2w_model::io::write_atomic(&out, text.as_bytes())
                    .with_context(|| format!("writing {}", out.display()))
                    .map_err(|e| Usage(format!("{e:#}")))?;
            }
            print!("{text}");
            Ok(())
        }
        Command::Extract {
            model,
            out,
            shard_bytes,
            precision,
            verify,
            verify_only,
        } => {
            let precision = match precision.as_str() {
                "f32" => m2w_extract::Precision::F32,
                "f16" => m2w_extract::Precision::F16,
                other => {
                    return Err(
                        Usage(format!("--precision must be f32 or f16, not {other:?}")).into(),
                    );
                }
            };
            let opts = m2w_extract::Options {
                shard_bytes,
                precision,
            };
            if verify_only {
                return verify_weights(&model, &out);
            }
            let manifest = m2w_extract::extract(&model, &out, &opts).map_err(|e| match e {
                m2w_extract::ExtractError::Input(e) => input_err(e),
                other => anyhow::Error::new(Usage(other.to_string())),
            })?;
            println!(
                "extracted {} tensors ({} aliases) into {} file(s), {} bytes -> {}",
                manifest.tensors.len(),
                manifest
                    .tensors
                    .iter()
                    .filter(|t| t.alias_of.is_some())
                    .count(),
                manifest.files.len(),
                manifest.files.iter().map(|f| f.bytes).sum::<u64>(),
                out.join("manifest.json").display()
            );
            if verify {
                return verify_weights(&model, &out);
            }
            Ok(())
        }
        Command::Fixtures { names, list } => {
            let all = m2w_setup::fixture_list();
            let names: Vec<String> = if names.is_empty() {
                all.fixtures.iter().map(|f| f.name.clone()).collect()
            } else {
                names
            };
            for n in names {
                let p = m2w_setup::fixture(&n).map_err(setup_err)?;
                if list {
                    println!("{n}\t{}", p.display());
                } else {
                    println!("ok {n}");
                }
            }
            Ok(())
        }
        Command::Reference {
            model,
            out,
            dims,
            inputs,
            values,
            seed,
            check_determinism,
            prompt,
            max_new,
        } => reference(
            &model,
            &out,
            dims,
            inputs,
            values,
            seed,
            check_determinism,
            &prompt,
            max_new,
        ),
        Command::Engine {
            model,
            reference,
            out,
            no_reuse,
        } => engine(&model, &reference, &out, !no_reuse).map(|_| ()),
        Command::Validate {
            engine,
            model,
            reference,
            per_layer,
            atol,
            rtol,
            tol,
            json,
            junit,
            html,
        } => {
            let model = match (model, engine) {
                (Some(m), _) => m,
                (None, Some(e)) => engine_model(&e)?,
                (None, None) => return Err(Usage("give --engine or --model".into()).into()),
            };
            let opts = validate_options(per_layer, atol, rtol, &tol)?;
            let report = run_validate(&model, &reference, &opts)?;
            write_reports(&report, json, junit.as_deref(), html.as_deref())?;
            if report.failed > 0 {
                let first = report
                    .first_failure
                    .as_ref()
                    .map(|f| f.name.as_str())
                    .unwrap_or("?");
                return Err(CheckFailed(format!(
                    "{} checkpoint(s) out of tolerance; first: {first}",
                    report.failed
                ))
                .into());
            }
            Ok(())
        }
        Command::Port {
            model,
            out,
            dims,
            values,
            per_layer,
            tol,
        } => port(&model, &out, dims, values, per_layer, &tol),
        Command::Package {
            port,
            name,
            out,
            context,
            prefill_chunk,
        } => {
            let llm = m2w_package::llm::LlmOptions {
                prefill_chunk,
                context,
            };
            let s = m2w_package::generate(&port.join("engine"), &name, &out, &llm)
                .map_err(|e| Usage(e.to_string()))?;
            println!(
                "package {name}: {} dispatches, {} kernels ({} bytes of WGSL), {} bytes of weights, {} files -> {}",
                s.dispatches,
                s.kernels,
                s.shader_bytes,
                s.weight_bytes,
                s.files.len(),
                out.display()
            );
            Ok(())
        }
        Command::PackageTest {
            package,
            reference,
            screenshot,
            tol,
        } => package_test(&package, &reference, screenshot.as_deref(), &tol),
        Command::Generate {
            model,
            prompt,
            chat,
            max_new,
            temperature,
            top_k,
            top_p,
            repetition_penalty,
            seed,
        } => {
            let sampling = m2w_engine::llama::Sampling {
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                seed,
            };
            generate(&model, &prompt, chat, max_new, &sampling)
        }
        Command::Conformance { filter, verbose } => conformance(filter.as_deref(), verbose),
        Command::Kernels { out } => {
            let n = m2w_kernels::write_all(&out)
                .map_err(|e| Usage(format!("{}: {e}", out.display())))?;
            println!("{n} kernels -> {}", out.display());
            Ok(())
        }
        Command::Setup => setup(),
        Command::Demo => demo(),
        Command::Test { args } => test(&args),
        Command::Bench { what, runs } => bench::run(&what, runs),
    }
}

fn parse_kv<T: std::str::FromStr>(s: &str) -> Result<(String, T), String>
where
    T::Err: std::fmt::Display,
{
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let v = v.parse::<T>().map_err(|e| format!("{s:?}: {e}"))?;
    Ok((k.to_string(), v))
}

fn ref_err(e: m2w_reference::RefError) -> anyhow::Error {
    match e {
        m2w_reference::RefError::NotDeterministic(_) => {
            anyhow::Error::new(CheckFailed(e.to_string()))
        }
        other => anyhow::Error::new(Usage(other.to_string())),
    }
}

#[allow(clippy::too_many_arguments)]
fn reference(
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
    let is_gguf =
        m2w_model::Model::open(model).map_err(input_err)?.format == m2w_model::Format::Gguf;
    if is_gguf {
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
    let lib = m2w_setup::onnxruntime_library().map_err(setup_err)?;
    let opts = m2w_reference::onnx_ref::OnnxOptions {
        dims: dims.into_iter().collect(),
        input_files: inputs.into_iter().collect(),
        fill: values.into_iter().collect(),
        seed,
        check_determinism,
    };
    let index = m2w_reference::onnx_ref::reference(&lib, model, out, &opts).map_err(ref_err)?;
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
        "{} checkpoints ({} graph outputs), {} values inside subgraphs not captured{} -> {}",
        index.checkpoints.len(),
        index.checkpoints.iter().filter(|c| c.graph_output).count(),
        index.not_captured.len(),
        if check_determinism {
            "; determinism check passed (two runs bit-identical)"
        } else {
            ""
        },
        out.join("index.json").display()
    );
    Ok(())
}

/// Element-wise tolerance of the layer report: |a - b| <= ATOL + RTOL * |b| (f32).
const LAYER_ATOL: f64 = 1e-4;
const LAYER_RTOL: f64 = 1e-3;

/// Compiles, writes plan.json + shaders, runs on wgpu with the reference inputs and prints
/// one line per checkpoint. Returns the number of checkpoints out of tolerance.
fn engine(model_path: &Path, reference: &Path, out: &Path, reuse: bool) -> anyhow::Result<usize> {
    let index = m2w_reference::read_index(reference).map_err(|e| Usage(e.to_string()))?;
    let model = m2w_model::Model::open(model_path).map_err(input_err)?;
    let mut inputs = std::collections::HashMap::new();
    let mut shapes = std::collections::BTreeMap::new();
    for i in &index.inputs {
        let t = m2w_reference::HostTensor::read_npy(&reference.join(&i.file))
            .map_err(|e| Usage(format!("{}: {e}", i.file)))?;
        let t = m2w_validate::to_engine(&t);
        shapes.insert(i.name.clone(), (t.shape.clone(), t.dt()));
        inputs.insert(i.name.clone(), t);
    }
    let mut plan = m2w_engine::compile(&model, &shapes)
        .map_err(|e| Usage(format!("{}: {e}", model_path.display())))?;
    // Debug capture reads every checkpoint, so the report run keeps every buffer.
    let mut report_plan = plan.clone();
    report_plan.assign_buffers(false);
    plan.assign_buffers(reuse);
    let mut kernels: Vec<&str> = plan.dispatches.iter().map(|d| d.kernel.as_str()).collect();
    kernels.sort();
    kernels.dedup();
    write_engine_dir(out, &plan, model_path)?;
    println!(
        "plan: {} dispatches, {} kernels, {} buffers ({} bytes{}) -> {}",
        plan.dispatches.len(),
        kernels.len(),
        plan.buffers.len(),
        plan.buffer_bytes(),
        if reuse {
            ", intermediates reused over lifetimes"
        } else {
            ""
        },
        out.display()
    );
    let gpu = m2w_engine::gpu::Gpu::new().map_err(Usage)?;
    let wanted: Vec<String> = index
        .checkpoints
        .iter()
        .map(|c| c.output.clone())
        .filter(|o| report_plan.tensors.contains_key(o))
        .collect();
    let runner = m2w_engine::gpu::Runner::new(&gpu, report_plan).map_err(Usage)?;
    let got = runner
        .run(&inputs, &wanted)
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "ran on {} ({:?}); tolerance |a-b| <= {LAYER_ATOL:e} + {LAYER_RTOL:e}*|ref|",
        gpu.info.name, gpu.info.backend
    );
    println!(
        "  {:>3}  {:<18} {:<48} {:>11}  status",
        "#", "op", "checkpoint", "max |err|"
    );
    let mut bad = 0;
    for c in &index.checkpoints {
        let Some(g) = got.get(&c.output) else {
            continue;
        };
        let want = m2w_validate::to_engine(
            &m2w_reference::HostTensor::read_npy(&reference.join(&c.file))
                .map_err(|e| Usage(format!("{}: {e}", c.file)))?,
        );
        let (a, b) = (g.as_f64(), want.as_f64());
        let mut worst = 0f64;
        let mut ok = g.shape == want.shape;
        for (x, y) in a.iter().zip(&b) {
            let e = (x - y).abs();
            if !(e <= LAYER_ATOL + LAYER_RTOL * y.abs()) && !(x.is_nan() && y.is_nan()) {
                ok = false;
            }
            if e > worst {
                worst = e;
            }
        }
        if !ok {
            bad += 1;
        }
        println!(
            "  {:>3}  {:<18} {:<48} {:>11.3e}  {}",
            c.index,
            c.op_type,
            c.output,
            worst,
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    println!(
        "{} checkpoints compared, {} out of tolerance",
        wanted.len(),
        bad
    );
    Ok(bad)
}

fn engine_model(engine_dir: &Path) -> anyhow::Result<PathBuf> {
    let p = engine_dir.join("engine.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Usage(format!("{}: {e}", p.display())))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Usage(format!("{}: {e}", p.display())))?;
    Ok(PathBuf::from(v["model"].as_str().ok_or_else(|| {
        Usage(format!("{}: no model", p.display()))
    })?))
}

fn validate_options(
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
        }),
        overrides: vec![],
        per_layer,
    };
    for t in tol {
        let parsed = t.split_once('=').and_then(|(p, v)| {
            let (a, r) = v.split_once(',')?;
            Some((
                p.to_string(),
                m2w_validate::Tolerance {
                    atol: a.parse().ok()?,
                    rtol: r.parse().ok()?,
                },
            ))
        });
        opts.overrides
            .push(parsed.ok_or_else(|| Usage(format!("--tol {t:?}: expected PATTERN=ATOL,RTOL")))?);
    }
    Ok(opts)
}

fn run_validate(
    model_path: &Path,
    reference: &Path,
    opts: &m2w_validate::Options,
) -> anyhow::Result<m2w_validate::Report> {
    let model = m2w_model::Model::open(model_path).map_err(input_err)?;
    let (plan, inputs) =
        m2w_validate::compile_for(&model, reference).map_err(|e| Usage(e.to_string()))?;
    let gpu = m2w_engine::gpu::Gpu::new().map_err(Usage)?;
    m2w_validate::validate(&gpu, &model, plan, &inputs, reference, opts)
        .map_err(|e| Usage(e.to_string()).into())
}

fn write_reports(
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

/// sha256 over the model file and the options that shape a phase's output.
fn stamp(model_sha: &str, extra: &str) -> String {
    m2w_model::io::sha256_bytes(
        format!("{model_sha}\n{extra}\nm2w {}", env!("CARGO_PKG_VERSION")).as_bytes(),
    )
}

fn fresh(dir: &Path, stamp: &str) -> bool {
    std::fs::read_to_string(dir.join(".m2w-stamp"))
        .map(|s| s.trim() == stamp)
        .unwrap_or(false)
}

fn mark(dir: &Path, stamp: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(".m2w-stamp"), format!("{stamp}\n"))?;
    Ok(())
}

fn port(
    model_path: &Path,
    out: &Path,
    dims: Vec<(String, u64)>,
    values: Vec<(String, f64)>,
    per_layer: bool,
    tol: &[String],
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let model = m2w_model::Model::open(model_path).map_err(input_err)?;
    let sha = model.file_sha256().map_err(input_err)?;
    std::fs::create_dir_all(out).map_err(|e| Usage(format!("{}: {e}", out.display())))?;
    let step = |k: usize, name: &str, skipped: bool, what: String| {
        println!(
            "[{k}/5] {name:<9} {}{what}",
            if skipped { "unchanged, skipped: " } else { "" }
        )
    };

    let dir = out.join("inspect");
    let st = stamp(&sha, "inspect");
    if fresh(&dir, &st) {
        step(1, "inspect", true, dir.display().to_string());
    } else {
        let report = m2w_inspect::inspect_path(model_path).map_err(input_err)?;
        m2w_model::io::replace_dir(
            &dir,
            |p, e| anyhow::anyhow!("{}: {e}", p.display()),
            |d| {
                std::fs::write(
                    d.join("inspect.json"),
                    serde_json::to_string_pretty(&report)? + "\n",
                )?;
                std::fs::write(d.join("inspect.md"), m2w_inspect::markdown(&report))?;
                mark(d, &st)
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

    let dir = out.join("weights");
    let st = stamp(&sha, "extract f32");
    if fresh(&dir, &st) {
        step(2, "extract", true, dir.display().to_string());
    } else {
        let manifest = m2w_extract::extract(model_path, &dir, &m2w_extract::Options::default())
            .map_err(|e| Usage(e.to_string()))?;
        let v = m2w_extract::verify(model_path, &dir).map_err(|e| Usage(e.to_string()))?;
        if !v.failures.is_empty() {
            return Err(CheckFailed(format!("extract verify: {:?}", v.failures)).into());
        }
        mark(&dir, &st)?;
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
        return port_gguf(&model, model_path, out, &sha, tol, step, t0);
    }

    let dir = out.join("reference");
    let st = stamp(&sha, &format!("reference {dims:?} {values:?} seed 0"));
    if fresh(&dir, &st) {
        step(3, "reference", true, dir.display().to_string());
    } else {
        let lib = m2w_setup::onnxruntime_library().map_err(setup_err)?;
        let opts = m2w_reference::onnx_ref::OnnxOptions {
            dims: dims.into_iter().collect(),
            fill: values.into_iter().collect(),
            check_determinism: true,
            ..Default::default()
        };
        let index =
            m2w_reference::onnx_ref::reference(&lib, model_path, &dir, &opts).map_err(ref_err)?;
        mark(&dir, &st)?;
        step(
            3,
            "reference",
            false,
            format!(
                "{} checkpoints through ONNX Runtime, deterministic",
                index.checkpoints.len()
            ),
        );
    }

    let dir = out.join("engine");
    let st = stamp(
        &sha,
        &format!(
            "engine {}",
            std::fs::read_to_string(out.join("reference/.m2w-stamp")).unwrap_or_default()
        ),
    );
    if fresh(&dir, &st) {
        step(4, "engine", true, dir.display().to_string());
    } else {
        let (mut plan, _) = m2w_validate::compile_for(&model, &out.join("reference"))
            .map_err(|e| Usage(e.to_string()))?;
        plan.assign_buffers(true);
        write_engine_dir(&dir, &plan, model_path)?;
        mark(&dir, &st)?;
        step(
            4,
            "engine",
            false,
            format!(
                "{} dispatches, {} buffers, {} bytes",
                plan.dispatches.len(),
                plan.buffers.len(),
                plan.buffer_bytes()
            ),
        );
    }

    let dir = out.join("validate");
    std::fs::create_dir_all(&dir)?;
    let opts = validate_options(per_layer, None, None, tol)?;
    let report = run_validate(model_path, &out.join("reference"), &opts)?;
    m2w_model::io::write_atomic(
        &dir.join("report.json"),
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    m2w_model::io::write_atomic(
        &dir.join("junit.xml"),
        m2w_validate::render::junit(&report).as_bytes(),
    )?;
    m2w_model::io::write_atomic(
        &dir.join("report.html"),
        m2w_validate::render::html(&report).as_bytes(),
    )?;
    step(
        5,
        "validate",
        false,
        format!(
            "{} passed, {} failed, {} not compared ({})",
            report.passed, report.failed, report.not_compared, report.mode
        ),
    );
    print!("\n{}", m2w_validate::render::table(&report));
    println!(
        "port finished in {:.1} s -> {}",
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    if report.failed > 0 {
        return Err(
            CheckFailed(format!("{} checkpoint(s) out of tolerance", report.failed)).into(),
        );
    }
    Ok(())
}

/// The GGUF path of `port`: candle reference, llama plans, stage-by-stage validation.
fn port_gguf(
    model: &m2w_model::Model,
    model_path: &Path,
    out: &Path,
    sha: &str,
    tol: &[String],
    step: impl Fn(usize, &str, bool, String),
    t0: std::time::Instant,
) -> anyhow::Result<()> {
    const PROMPT: &str = "The capital of France is";
    let dir = out.join("reference");
    let st = stamp(
        sha,
        &format!("llama reference {PROMPT:?} 32, tokenizer cases"),
    );
    if fresh(&dir, &st) {
        step(3, "reference", true, dir.display().to_string());
    } else {
        let run = m2w_reference::llama::reference(model_path, &dir, PROMPT, 32).map_err(ref_err)?;
        mark(&dir, &st)?;
        step(
            3,
            "reference",
            false,
            format!(
                "candle llama: {} prefill + {} decode stages, greedy {:?}",
                run.prefill_checkpoints, run.decode_checkpoints, run.generated_text
            ),
        );
    }
    let dir = out.join("engine");
    let cfg = m2w_engine::llama::config(model).map_err(Usage)?;
    let generation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("reference/generation.json"))?)?;
    let prompt_len = generation["prompt_ids"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(1);
    let (prefill, _) =
        m2w_engine::llama::build(model, prompt_len, 0, prompt_len + 33).map_err(Usage)?;
    m2w_model::io::replace_dir(
        &dir,
        |p, e| anyhow::anyhow!("{}: {e}", p.display()),
        |d| {
            std::fs::write(
                d.join("plan-prefill.json"),
                serde_json::to_string_pretty(&prefill)? + "\n",
            )?;
            std::fs::write(
                d.join("config.json"),
                serde_json::to_string_pretty(&cfg)? + "\n",
            )?;
            // `cargo xtask package` builds the package's plans from the model itself.
            let model_abs = std::fs::canonicalize(model_path)?;
            std::fs::write(
                d.join("engine.json"),
                serde_json::to_string_pretty(
                    &serde_json::json!({"model": model_abs, "kind": "llama"}),
                )? + "\n",
            )?;
            Ok(())
        },
    )?;
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
    let mut all_tol = vec!["*=2e-3,2e-3".to_string()];
    all_tol.splice(0..0, tol.iter().cloned());
    let opts = validate_options(false, None, None, &all_tol)?;
    let gpu = m2w_engine::gpu::Gpu::new().map_err(Usage)?;
    let (pre, dec, greedy_ok, got, want) =
        m2w_validate::validate_llama(&gpu, model, &out.join("reference"), &opts)
            .map_err(|e| Usage(e.to_string()))?;
    let dir = out.join("validate");
    std::fs::create_dir_all(&dir)?;
    for (name, r) in [("prefill", &pre), ("decode", &dec)] {
        m2w_model::io::write_atomic(
            &dir.join(format!("report-{name}.json")),
            (serde_json::to_string_pretty(r)? + "\n").as_bytes(),
        )?;
        m2w_model::io::write_atomic(
            &dir.join(format!("junit-{name}.xml")),
            m2w_validate::render::junit(r).as_bytes(),
        )?;
        m2w_model::io::write_atomic(
            &dir.join(format!("report-{name}.html")),
            m2w_validate::render::html(r).as_bytes(),
        )?;
    }
    step(
        5,
        "validate",
        false,
        format!(
            "prefill {} passed / {} failed, decode {} passed / {} failed, greedy {} tokens {}",
            pre.passed,
            pre.failed,
            dec.passed,
            dec.failed,
            want.len(),
            if greedy_ok { "identical" } else { "DIFFER" }
        ),
    );
    for r in [&pre, &dec] {
        if let Some(f) = &r.first_failure {
            println!("{}: first failing stage {} ({})", r.mode, f.name, f.hint);
        }
    }
    if !greedy_ok {
        println!("greedy tokens: gpu {got:?}\n           candle {want:?}");
    }
    println!(
        "port finished in {:.1} s -> {}",
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    if pre.failed + dec.failed > 0 || !greedy_ok {
        return Err(CheckFailed("the GPU engine differs from the candle reference".into()).into());
    }
    Ok(())
}

fn write_engine_dir(dir: &Path, plan: &m2w_engine::Plan, model_path: &Path) -> anyhow::Result<()> {
    m2w_engine::write_engine_dir(dir, plan, model_path).map_err(|e| Usage(e).into())
}

fn npm(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new("npm")
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| {
            Usage(format!(
                "cannot run npm ({e}); install Node.js 20+ with npm"
            ))
        })?;
    if !status.success() {
        return Err(CheckFailed(format!(
            "npm {} failed in {}",
            args.join(" "),
            dir.display()
        ))
        .into());
    }
    Ok(())
}

fn package_test(
    package: &Path,
    reference: &Path,
    screenshot: Option<&Path>,
    tol: &[String],
) -> anyhow::Result<()> {
    if !Path::new("/usr/bin/chromium").exists() && std::env::var_os("CHROMIUM").is_none() {
        return Err(Usage(
            "no /usr/bin/chromium: apt-get install -y chromium (or set CHROMIUM)".into(),
        )
        .into());
    }
    let mut tolerances = serde_json::Map::new();
    for (pattern, t) in validate_options(false, None, None, tol)?.overrides {
        tolerances.insert(pattern, serde_json::json!([t.atol, t.rtol]));
    }
    if !package.join("node_modules/typescript").is_dir()
        || !package.join("node_modules/playwright-core").is_dir()
    {
        npm(
            package,
            &["install", "--no-audit", "--no-fund", "--loglevel=error"],
        )?;
    }
    npm(package, &["run", "--silent", "build"])?;
    npm(package, &["run", "--silent", "build:tests"])?;
    // LLM packages prove generation (generate.spec), the others every checkpoint.
    let spec = if package.join("tests/generate.spec.ts").is_file() {
        m2w_model::io::write_atomic(
            &package.join("build-tests/sampler-cases.json"),
            sampler_cases().to_string().as_bytes(),
        )?;
        "build-tests/generate.spec.js"
    } else {
        "build-tests/activation-match.spec.js"
    };
    let mut cmd = std::process::Command::new("node");
    cmd.arg(spec).arg(std::fs::canonicalize(package)?).arg(
        std::fs::canonicalize(reference)
            .map_err(|e| Usage(format!("{}: {e}", reference.display())))?,
    );
    if let Some(s) = screenshot {
        cmd.arg(s);
    }
    let status = cmd
        .current_dir(package)
        .env(
            "M2W_TOLERANCES",
            serde_json::Value::Object(tolerances).to_string(),
        )
        .status()?;
    if !status.success() {
        return Err(CheckFailed("the browser test failed".into()).into());
    }
    Ok(())
}

/// Draws of the native sampler (`m2w_engine::llama::sample`) on synthetic logits, over the
/// settings a user can pass (temperature, top-k, top-p, repetition penalty, seed): the oracle
/// for the package's TypeScript sampler.
fn sampler_cases() -> serde_json::Value {
    use m2w_engine::llama::{Sampling, sample};
    let mut state: u64 = 0x853c_49e6_748f_ea9b;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut cases = Vec::new();
    for (i, (temperature, top_k, top_p, penalty)) in [
        (0.0, 0, 1.0, 1.0),
        (0.0, 0, 1.0, 1.3),
        (1.0, 0, 1.0, 1.0),
        (0.7, 0, 1.0, 1.0),
        (0.7, 40, 1.0, 1.0),
        (0.7, 40, 0.9, 1.0),
        (1.5, 5, 1.0, 1.0),
        (0.8, 0, 0.5, 1.1),
        (1.2, 100, 0.95, 1.3),
        (0.3, 1, 1.0, 1.0),
    ]
    .into_iter()
    .enumerate()
    {
        // 1000 logits spread like a language model's, with some exact ties, and NaNs in
        // every other case (JSON null: never picked).
        let logits: Vec<f32> = (0..1000)
            .map(|j| {
                if j % 97 == 3 {
                    4.5
                } else if i % 2 == 1 && j % 211 == 7 {
                    f32::NAN
                } else {
                    ((next() * 2.0 - 1.0) * 6.0) as f32
                }
            })
            .collect();
        // Seen tokens with repeats (the penalty applies once per distinct token).
        let mut seen: Vec<u32> = (0..20).map(|_| (next() * 1000.0) as u32).collect();
        seen.extend(seen[..5].to_vec());
        let s = Sampling {
            temperature,
            top_k,
            top_p,
            repetition_penalty: penalty,
            seed: 11 + i as u64,
        };
        let mut rng = s.seed ^ 0x9e37_79b9_7f4a_7c15;
        let draws: Vec<u32> = (0..6)
            .map(|_| sample(&logits, &seen, &s, &mut rng))
            .collect();
        cases.push(serde_json::json!({
            "logits": logits,
            "seen": seen,
            "options": {
                "temperature": temperature,
                "topK": top_k,
                "topP": top_p,
                "repetitionPenalty": penalty,
                "seed": s.seed,
            },
            "draws": draws,
        }));
    }
    serde_json::Value::Array(cases)
}

fn generate(
    model_path: &Path,
    prompt: &str,
    chat: bool,
    max_new: usize,
    sampling: &m2w_engine::llama::Sampling,
) -> anyhow::Result<()> {
    use std::io::Write;
    let model = m2w_model::Model::open(model_path).map_err(input_err)?;
    let llama = m2w_reference::llama::Llama::load(model_path).map_err(ref_err)?;
    let tok = m2w_reference::tokenizer::GgufTokenizer::from_llama(&llama).map_err(ref_err)?;
    let template = model
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let text = if chat {
        if !template.contains("<|im_start|>") {
            return Err(Usage(
                "--chat knows the ChatML format only; this model's template differs".into(),
            )
            .into());
        }
        format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
    } else {
        prompt.to_string()
    };
    let mut ids = Vec::new();
    if llama.config.add_bos
        && let Some(b) = llama.config.bos
    {
        ids.push(b);
    }
    ids.extend(tok.encode(&text).map_err(ref_err)?);
    let gpu = m2w_engine::gpu::Gpu::new().map_err(Usage)?;
    let dec = m2w_engine::llama::Decoder::new(&gpu, &model, ids.len(), ids.len() + max_new + 1)
        .map_err(Usage)?;
    let mut stop: Vec<u32> = llama.config.eos.into_iter().collect();
    if let Some(end) = llama.tokens.iter().position(|t| t == "<|im_end|>") {
        stop.push(end as u32);
    }
    let t0 = std::time::Instant::now();
    println!("{prompt}");
    let mut shown = String::new();
    let mut all = Vec::new();
    let out = dec
        .generate(&ids, max_new, sampling, &stop, |t| {
            if stop.contains(&t) {
                return;
            }
            all.push(t);
            if let Ok(s) = tok.decode(&all) {
                // Print only what is new (multi-byte characters may span tokens).
                if s.len() > shown.len() && s.starts_with(&shown) {
                    print!("{}", &s[shown.len()..]);
                    let _ = std::io::stdout().flush();
                    shown = s;
                }
            }
        })
        .map_err(|e| anyhow::anyhow!(e))?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "\n\n[{} prompt + {} new tokens in {secs:.2} s on {} ({:?})]",
        ids.len(),
        out.len(),
        gpu.info.name,
        gpu.info.backend
    );
    Ok(())
}

fn conformance(filter: Option<&str>, verbose: bool) -> anyhow::Result<()> {
    use m2w_engine::conformance::{Outcome, op_support_markdown, run_all};
    let root = m2w_setup::fixture("onnx-node-tests").map_err(setup_err)?;
    let gpu = m2w_engine::gpu::Gpu::new().map_err(Usage)?;
    let adapter = format!("{} ({:?})", gpu.info.name, gpu.info.backend);
    let t = std::time::Instant::now();
    let results = run_all(&gpu, &root, filter);
    let pass = results
        .iter()
        .filter(|r| r.outcome == Outcome::Pass)
        .count();
    let fail = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
        .count();
    let unsup = results.len() - pass - fail;
    if verbose {
        for r in &results {
            println!("{:<60} {:?}", r.case, r.outcome);
        }
    }
    println!(
        "conformance on {adapter}: {pass} passed, {fail} failed, {unsup} unsupported of {} cases ({:.0} s)",
        results.len(),
        t.elapsed().as_secs_f64()
    );
    if filter.is_none() {
        let md = op_support_markdown(&results, &adapter);
        let p = workspace_root().join("docs/OP_SUPPORT.md");
        m2w_model::io::write_atomic(&p, md.as_bytes())?;
        println!("-> {}", p.display());
        let floor: usize =
            std::fs::read_to_string(workspace_root().join("docs/conformance-floor.txt"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
        if pass < floor {
            return Err(CheckFailed(format!(
                "{pass} passes is below the floor of {floor} (docs/conformance-floor.txt)"
            ))
            .into());
        }
    }
    if fail > 0 {
        return Err(CheckFailed(format!(
            "{fail} case(s) gave a wrong answer or failed at run time (listed in docs/OP_SUPPORT.md)"
        ))
        .into());
    }
    Ok(())
}

fn verify_weights(model: &Path, out: &Path) -> anyhow::Result<()> {
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

fn setup() -> anyhow::Result<()> {
    let lib = m2w_setup::onnxruntime_library().map_err(setup_err)?;
    println!(
        "ONNX Runtime library: {}  (export ORT_DYLIB_PATH={})",
        lib.display(),
        lib.display()
    );
    match m2w_setup::adapter::ensure() {
        Ok(a) => println!(
            "WebGPU adapter: {} ({}, {}{}), max storage binding {} MiB",
            a.name,
            a.backend,
            a.device_type,
            if a.is_cpu {
                "; CPU: for correctness, never for speed"
            } else {
                ""
            },
            a.max_storage_buffer_binding_size >> 20
        ),
        Err(msg) => return Err(Usage(msg).into()),
    }
    Ok(())
}

fn demo() -> anyhow::Result<()> {
    let model = m2w_setup::bundled_model();
    println!(
        "m2w demo: port the bundled default model {}\n",
        model.display()
    );
    let out = workspace_root().join("target/demo/silero_vad_v6");
    port(&model, &out, vec![], vec![], false, &[])?;
    println!(
        "\nOutputs: inspect/ weights/ reference/ engine/ validate/{{report.json,junit.xml,report.html}} under {}",
        out.display()
    );
    println!("Not built yet (later phases): the TypeScript package and its browser proof.");
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    println!("m2w test: fetching fixtures (cached after the first run)");
    run(Cli {
        command: Command::Fixtures {
            names: vec![],
            list: false,
        },
    })?;
    println!("m2w test: set-up (ONNX Runtime library, WebGPU adapter)");
    setup()?;
    match m2w_setup::adapter::ensure_chromium() {
        Ok(p) => println!("Chromium for the browser tests: {p}"),
        Err(e) => return Err(Usage(e).into()),
    }
    if std::process::Command::new("npm")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(Usage("npm not found: the package tests build generated packages with npm (install Node.js 20+)".into()).into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Doc tests are skipped (there are none), so the last line is a real total.
    let mut child = std::process::Command::new(cargo)
        .args(["test", "--workspace", "--lib", "--bins", "--tests"])
        .args(extra)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|p| {
                        p.trim()
                            .strip_suffix(word)
                            .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                    })
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
            ignored += count("ignored");
        }
    }
    let status = child.wait()?;
    println!("\nm2w: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        return Err(CheckFailed("cargo test failed".into()).into());
    }
    Ok(())
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}
