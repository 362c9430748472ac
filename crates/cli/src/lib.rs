//! `m2w`: the command line of the m2w toolchain, one subcommand per phase plus set-up.
//! The binary (`src/bin/m2w.rs`) and `cargo xtask` (which adds the repository's own
//! automation: tests, benchmarks, conformance, the demo) both run [`run`].
//!
//! Exit codes: 0 success; 1 a check failed (e.g. `extract --verify` found a difference);
//! 2 bad input or a set-up step that cannot be done (one clear line on stderr).

pub mod cli;
pub mod phases;
pub mod progress;
pub mod tools;

use std::process::ExitCode;

use anyhow::Context;

pub use cli::{Cli, Command};
use phases::{
    PortArgs, PortSource, engine, generate, port, reference, validate_options, verify_weights,
    write_reports,
};
use tools::{package_test, setup};

/// An error that maps to exit code 2 (bad input / cannot be done).
#[derive(Debug)]
pub struct Usage(pub String);
impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

/// An error that maps to exit code 1 (a check failed).
#[derive(Debug)]
pub struct CheckFailed(pub String);
impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CheckFailed {}

/// The process set-up every m2w command line does first, before any thread exists:
/// quiet on a closed pipe, a private runtime folder for Mesa.
pub fn prepare_process() {
    quiet_on_closed_pipe();
    quiet_mesa_runtime_dir();
    progress::install();
}

/// The exit status of a command's result: 0 success, 1 a check failed, 2 anything else
/// (bad input, a set-up step that cannot be done), with the error as one line on stderr.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<CheckFailed>().is_some() {
                1
            } else {
                2
            };
            progress::clear();
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// `m2w validate --json | head -c 10`: when the reader goes away, end quietly as Unix
/// tools do (the default SIGPIPE action), not with a panic from println! (Rust ignores
/// SIGPIPE, so every write would fail with EPIPE instead).
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread is started; restores the
    // signal's default disposition, which every Unix process starts with outside Rust.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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

pub fn input_err(e: m2w_model::InputError) -> anyhow::Error {
    anyhow::Error::new(Usage(e.to_string()))
}

pub fn setup_err(e: m2w_setup::SetupError) -> anyhow::Error {
    anyhow::Error::new(Usage(e.to_string()))
}

pub fn ref_err(e: m2w_reference::RefError) -> anyhow::Error {
    port_err(e.into())
}

pub fn port_err(e: m2w_port::PortError) -> anyhow::Error {
    match e {
        m2w_port::PortError::Check(m) => anyhow::Error::new(CheckFailed(m)),
        m2w_port::PortError::Input(m) => anyhow::Error::new(Usage(m)),
    }
}

/// Runs one subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
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
                all.fixtures
                    .iter()
                    .filter(|f| !f.heavy)
                    .map(|f| f.name.clone())
                    .collect()
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
            model_explorer,
            save_mismatches,
            allow_nonfinite_oracle,
            profile,
        } => {
            let mut opts = validate_options(per_layer, atol, rtol, &tol)?;
            opts.save_mismatches = save_mismatches;
            opts.allow_nonfinite_oracle = allow_nonfinite_oracle;
            opts.profile = profile;
            let progress = m2w_progress::task("validate", None);
            let report = match (model, engine) {
                (Some(m), _) => m2w_port::validate_model(&m, &reference, &opts),
                (None, Some(e)) => m2w_port::validate_engine(&e, &reference, &opts),
                (None, None) => return Err(Usage("give --engine or --model".into()).into()),
            }
            .map_err(port_err)?;
            drop(progress);
            write_reports(&report, json, junit.as_deref(), html.as_deref())?;
            if let Some(p) = &report.profile {
                eprintln!("\n{}", m2w_engine::profile::table(p));
            }
            if let Some(e) = &report.profile_error {
                eprintln!("no GPU profile: {e}");
            }
            if let Some(p) = &model_explorer {
                m2w_model::io::write_atomic(
                    p,
                    m2w_validate::render::model_explorer(&report).as_bytes(),
                )
                .map_err(|e| Usage(format!("{}: {e}", p.display())))?;
            }
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
            graphs,
            tokenizer,
            prompts,
            dims,
            max_dims,
            values,
            inputs,
            wav,
            per_layer,
            tol,
            verbose,
            json,
        } => port(
            PortSource {
                model,
                graphs,
                tokenizer,
                prompts,
            },
            &out,
            PortArgs {
                dims,
                max_dims,
                values,
                inputs,
                wav,
            },
            per_layer,
            &tol,
            verbose,
            json,
        ),
        Command::Package {
            port,
            name,
            out,
            context,
            prefill_chunk,
            devices,
            max_binding_bytes,
            tts_voices,
            tts_names,
            tts_rate,
            tts_sample,
        } => {
            let mut smallest = u64::MAX;
            for d in &devices {
                let p = m2w_engine::limits::profile(d).map_err(Usage)?;
                smallest = smallest.min(p.limits.max_storage_buffer_binding_size);
            }
            let llm = m2w_package::llm::LlmOptions {
                prefill_chunk,
                context,
                max_binding_bytes: max_binding_bytes
                    .unwrap_or(smallest.min(usize::MAX as u64) as usize),
            };
            let demo = match tts_voices {
                Some(npz) => Some(tools::tts_demo(
                    &port.join("engine"),
                    &name,
                    &npz,
                    &tts_names,
                    tts_rate,
                    &tts_sample,
                )?),
                None => None,
            };
            let s = if m2w_package::hands::is_hands(&port) {
                m2w_package::hands::generate(&port, &name, &out)
            } else if m2w_package::pipeline::is_pipeline(&port) {
                m2w_package::pipeline::generate(&port, &name, &out)
            } else {
                m2w_package::generate(&port.join("engine"), &name, &out, &llm)
            }
            .map_err(|e| Usage(e.to_string()))?;
            if let Some(files) = &demo {
                m2w_package::tts::write_demo(&out, files).map_err(|e| Usage(e.to_string()))?;
                println!("speaking demo: {}", out.join("tts.html").display());
            }
            if let Some(l) = std::fs::read(out.join(m2w_engine::limits::FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            {
                println!(
                    "device limits ({}):",
                    out.join(m2w_engine::limits::FILE).display()
                );
                for line in phases::limits_lines(&l) {
                    println!("  {line}");
                }
            }
            // The oracle `npm test` reads inside the package (tests/reference/).
            let sampler = m2w_port::sampler::sampler_cases().to_string().into_bytes();
            let extra = [("sampler-cases.json", sampler)];
            let is_llm = port.join("reference/generation.json").is_file();
            let bundled = m2w_package::bundle::bundle_reference(
                &port.join("reference"),
                &out,
                if is_llm { &extra[..] } else { &[] },
            )
            .map_err(|e| Usage(e.to_string()))?;
            use m2w_package::bundle::Bundled;
            match bundled {
                Bundled::Checkpoints(n) => {
                    println!("npm test: {n} checkpoints bundled (tests/reference)")
                }
                Bundled::OutputsOnly(n) => println!(
                    "npm test: the graph's {n} outputs bundled (the whole reference is over {} MiB; m2w package-test checks every checkpoint)",
                    m2w_package::bundle::BUNDLE_BYTES >> 20
                ),
                Bundled::Generation => println!(
                    "npm test: tokenizer, chat and greedy-generation cases bundled (tests/reference)"
                ),
                Bundled::Nothing => println!(
                    "npm test: no reference bundled; prove it with m2w package-test --package {} --reference PORT/...",
                    out.display()
                ),
            }
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
        Command::TtsInputs {
            phonemes,
            voice,
            speed,
            out,
        } => {
            let n = tools::tts_inputs(&phonemes, &voice, speed, &out)?;
            println!(
                "{n} phonemes, voice {voice}, speed {speed} -> {}",
                out.display()
            );
            Ok(())
        }
        Command::PackageTest {
            package,
            reference,
            screenshot,
            tol,
            per_layer,
            tts_audio,
        } => package_test(
            &package,
            &reference,
            screenshot.as_deref(),
            &tol,
            per_layer,
            tts_audio.as_deref(),
        ),
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
        Command::Kernels { out } => {
            let n = m2w_kernels::write_all(&out)
                .map_err(|e| Usage(format!("{}: {e}", out.display())))?;
            println!("{n} kernels -> {}", out.display());
            Ok(())
        }
        Command::Setup => setup(),
    }
}
