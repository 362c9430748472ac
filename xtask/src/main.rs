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
        } => engine(&model, &reference, &out, !no_reuse),
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
                (None, Some(e)) => m2w_port::engine_model(&e).map_err(port_err)?,
                (None, None) => return Err(Usage("give --engine or --model".into()).into()),
            };
            let opts = validate_options(per_layer, atol, rtol, &tol)?;
            let report = m2w_port::validate_model(&model, &reference, &opts).map_err(port_err)?;
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
    port_err(e.into())
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

fn port_err(e: m2w_port::PortError) -> anyhow::Error {
    match e {
        m2w_port::PortError::Check(m) => anyhow::Error::new(CheckFailed(m)),
        m2w_port::PortError::Input(m) => anyhow::Error::new(Usage(m)),
    }
}

/// Compiles, writes plan.json + shaders, runs on wgpu with the reference inputs and prints
/// one line per checkpoint (validate's comparison at its default tolerances).
fn engine(model_path: &Path, reference: &Path, out: &Path, reuse: bool) -> anyhow::Result<()> {
    let build =
        m2w_port::engine::build_engine(model_path, reference, out, reuse).map_err(port_err)?;
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

/// Runs every phase (m2w_port::port::port), printing each step, the report and the verdict.
fn port(
    model_path: &Path,
    out: &Path,
    dims: Vec<(String, u64)>,
    values: Vec<(String, f64)>,
    per_layer: bool,
    tol: &[String],
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let opts = m2w_port::port::PortOptions {
        dims,
        values,
        validate: validate_options(per_layer, None, None, tol)?,
    };
    let outcome = m2w_port::port::port(model_path, out, &opts, &mut |s| {
        println!(
            "[{}/5] {:<9} {}{}",
            s.index,
            s.phase,
            if s.skipped {
                "unchanged, skipped: "
            } else {
                ""
            },
            s.summary
        )
    })
    .map_err(port_err)?;
    match &outcome {
        m2w_port::port::PortOutcome::Graph(report) => {
            print!("\n{}", m2w_validate::render::table(report));
        }
        m2w_port::port::PortOutcome::Llama(l) => {
            for r in [&l.prefill, &l.decode] {
                if let Some(f) = &r.first_failure {
                    println!("{}: first failing stage {} ({})", r.mode, f.name, f.hint);
                }
            }
            if !l.greedy_identical {
                println!(
                    "greedy tokens: gpu {:?}\n           candle {:?}",
                    l.greedy_engine, l.greedy_reference
                );
            }
        }
    }
    println!(
        "port finished in {:.1} s -> {}",
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    match outcome.failure() {
        Some(why) => Err(CheckFailed(why).into()),
        None => Ok(()),
    }
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
        m2w_port::sampler::write_sampler_cases(&package.join("build-tests/sampler-cases.json"))
            .map_err(port_err)?;
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

fn generate(
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
