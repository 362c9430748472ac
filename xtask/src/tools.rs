//! Set-up, the demo, the test suite, ONNX conformance and the browser package test.

use std::path::Path;

use anyhow::Context;

use crate::cli::{Cli, Command};
use crate::phases::{PortArgs, port, validate_options};
use crate::{CheckFailed, Usage, port_err, run, setup_err, workspace_root};

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

pub(crate) fn package_test(
    package: &Path,
    references: &[std::path::PathBuf],
    screenshot: Option<&Path>,
    tol: &[String],
    per_layer: bool,
    tts_audio: Option<&Path>,
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
    // Pipeline and LLM packages prove generation (pipeline.spec, generate.spec), the others
    // every checkpoint.
    let spec = if package.join("tests/hands.spec.ts").is_file() {
        "build-tests/hands.spec.js"
    } else if package.join("tests/pipeline.spec.ts").is_file() {
        write_pipeline_chat_cases(package, &references[0])?;
        "build-tests/pipeline.spec.js"
    } else if package.join("tests/generate.spec.ts").is_file() {
        m2w_port::sampler::write_sampler_cases(&package.join("build-tests/sampler-cases.json"))
            .map_err(port_err)?;
        "build-tests/generate.spec.js"
    } else {
        "build-tests/activation-match.spec.js"
    };
    let mut dirs = Vec::new();
    for r in references {
        let dir = std::fs::canonicalize(r).map_err(|e| Usage(format!("{}: {e}", r.display())))?;
        let dir = dir.to_string_lossy().into_owned();
        if dir.contains(',') {
            return Err(Usage(format!(
                "{dir}: a reference folder's path may not hold a comma"
            ))
            .into());
        }
        dirs.push(dir);
    }
    let mut cmd = std::process::Command::new("node");
    cmd.arg(spec)
        .arg(std::fs::canonicalize(package)?)
        .arg(dirs.join(","));
    if let Some(s) = screenshot {
        cmd.arg(s);
    }
    cmd.current_dir(package)
        .env(
            "M2W_TOLERANCES",
            serde_json::Value::Object(tolerances).to_string(),
        )
        .env("M2W_PER_LAYER", if per_layer { "1" } else { "0" });
    if let Some(a) = tts_audio {
        let a = std::fs::canonicalize(a).map_err(|e| Usage(format!("{}: {e}", a.display())))?;
        cmd.env("M2W_TTS_AUDIO", a);
    }
    let status = cmd.status()?;
    let judged = if spec == "build-tests/pipeline.spec.js" {
        judge_browser_runs(package, &references[0])?
    } else {
        Ok(())
    };
    if !status.success() {
        return Err(CheckFailed("the browser test failed".into()).into());
    }
    judged
}

/// The oracle of a pipeline package's chat: each conversation of the reference's set
/// rendered by minijinja through the model's tokenizer_config.json template, and its ids
/// by the `tokenizers` crate without added specials (`build-tests/chat-cases.json`; none
/// when the model has no template).
fn write_pipeline_chat_cases(package: &Path, port: &Path) -> anyhow::Result<()> {
    let manifest = port.join(m2w_model::pipeline::MANIFEST);
    let p: m2w_model::pipeline::Pipeline = serde_json::from_slice(
        &std::fs::read(&manifest).map_err(|e| Usage(format!("{}: {e}", manifest.display())))?,
    )
    .map_err(|e| Usage(format!("{}: {e}", manifest.display())))?;
    let out = package.join("build-tests/chat-cases.json");
    let Some((template, bos, eos)) = m2w_package::pipeline::chat_template(&p) else {
        let _ = std::fs::remove_file(&out);
        return Ok(());
    };
    let tok = m2w_reference::pipeline::tokenizer(&p).map_err(|e| Usage(e.to_string()))?;
    let mut cases = Vec::new();
    for messages in m2w_reference::llama::chat_conversations() {
        for generation_prompt in [true, false] {
            let text = template
                .render(&messages, generation_prompt, &bos, &eos)
                .map_err(Usage)?;
            let ids = tok
                .encode(text.as_str(), false)
                .map_err(|e| Usage(format!("tokenizer: {e}")))?
                .get_ids()
                .to_vec();
            cases.push(serde_json::json!({
                "messages": messages, "add_generation_prompt": generation_prompt,
                "text": text, "ids": ids,
            }));
        }
    }
    std::fs::create_dir_all(package.join("build-tests"))?;
    let doc = serde_json::json!({"origin": template.origin, "cases": cases});
    std::fs::write(&out, serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(())
}

/// A pipeline package's greedy runs in the browser (`build-tests/pipeline-runs.json` and the
/// logits rows beside it) judged against ONNX Runtime's loop as the port judges its engine.
fn judge_browser_runs(package: &Path, port: &Path) -> anyhow::Result<anyhow::Result<()>> {
    let dir = package.join("build-tests");
    let runs: serde_json::Value = match std::fs::read(dir.join("pipeline-runs.json")) {
        Ok(b) => serde_json::from_slice(&b)?,
        Err(_) => {
            return Ok(Err(
                CheckFailed("the browser test wrote no runs".into()).into()
            ));
        }
    };
    let mut parsed = Vec::new();
    for r in runs.as_array().into_iter().flatten() {
        let tokens: Vec<i64> = serde_json::from_value(r["tokens"].clone())?;
        let file = dir.join(r["logits"].as_str().unwrap_or_default());
        let bytes = std::fs::read(&file).map_err(|e| Usage(format!("{}: {e}", file.display())))?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let width = values.len() / tokens.len().max(1);
        let rows = values.chunks(width.max(1)).map(|c| c.to_vec()).collect();
        parsed.push((tokens, rows));
    }
    let partings = m2w_port::pipeline::judge_runs(port, &parsed).map_err(port_err)?;
    let mut differ = 0;
    for (k, p) in partings.iter().enumerate() {
        println!(
            "browser run {k} against ONNX Runtime: {p}; the browser moved leading margins up to {:.3}, ONNX Runtime itself up to {:.3}",
            p.noise, p.reference_noise
        );
        differ += usize::from(p.verdict == "DIFFER");
    }
    Ok(if differ > 0 {
        Err(CheckFailed(format!(
            "{differ} browser run(s) differ from ONNX Runtime's loop beyond a near tie"
        ))
        .into())
    } else {
        Ok(())
    })
}

pub(crate) fn conformance(filter: Option<&str>, verbose: bool) -> anyhow::Result<()> {
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
    let general = results
        .iter()
        .filter(|r| {
            r.outcome == Outcome::Pass && r.plan != m2w_engine::conformance::PlanKind::Specialised
        })
        .count();
    if verbose {
        for r in &results {
            println!("{:<60} {:?} {:?}", r.case, r.plan, r.outcome);
        }
    }
    println!(
        "conformance on {adapter}: {general} passed with general plans ({pass} with either plan), {fail} failed, {unsup} unsupported of {} cases ({:.0} s)",
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

pub(crate) fn setup() -> anyhow::Result<()> {
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

pub(crate) fn demo() -> anyhow::Result<()> {
    let model = m2w_setup::bundled_model();
    println!(
        "m2w demo: port the bundled default model {}\n",
        model.display()
    );
    let out = workspace_root().join("target/demo/silero_vad_v6");
    port(
        crate::phases::PortSource {
            model: Some(model.clone()),
            graphs: vec![],
            tokenizer: None,
            prompts: vec![],
        },
        &out,
        PortArgs::default(),
        false,
        &[],
        false,
    )?;
    println!(
        "\nOutputs: inspect/ weights/ reference/ engine/ validate/{{report.json,junit.xml,report.html}} under {}",
        out.display()
    );
    println!("Not built yet (later phases): the TypeScript package and its browser proof.");
    Ok(())
}

/// The test harness's own flags that `cargo xtask test -- --ignored qwen` may give without
/// a second `--`.
const HARNESS_FLAGS: [&str; 5] = [
    "--ignored",
    "--include-ignored",
    "--nocapture",
    "--exact",
    "--show-output",
];

/// `extra` as cargo test takes it: the harness's flags after a `--` (unless one is there).
fn cargo_test_args(extra: &[String]) -> Vec<String> {
    if extra.iter().any(|a| a == "--") {
        return extra.to_vec();
    }
    let (harness, cargo): (Vec<&String>, Vec<&String>) = extra
        .iter()
        .partition(|a| HARNESS_FLAGS.contains(&a.as_str()) || a.starts_with("--test-threads"));
    let mut out: Vec<String> = cargo.into_iter().cloned().collect();
    if !harness.is_empty() {
        out.push("--".into());
        out.extend(harness.into_iter().cloned());
    }
    out
}

pub(crate) fn test(extra: &[String]) -> anyhow::Result<()> {
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
        .args(cargo_test_args(extra))
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

/// Inputs of a Kokoro-style TTS graph from a phoneme string: `tokens` [1, n + 2] (each
/// phoneme's id in the voice pack's vocabulary, padded with 0 at both ends), `style`
/// [1, 256] (the voice's style row for n phonemes), `speed` [1]. The voice pack is the
/// `kokoro-voices` fixture (voices_ja.npz with vocab.json beside it). Writes tokens.npy,
/// style.npy and speed.npy into `out`; returns the token count.
pub(crate) fn tts_inputs(
    phonemes: &str,
    voice: &str,
    speed: f32,
    out: &Path,
) -> anyhow::Result<usize> {
    use m2w_reference::HostTensor as T;
    let npz = m2w_setup::fixture("kokoro-voices").map_err(setup_err)?;
    let (vocab, vocab_path) = read_vocab(&npz)?;
    let mut ids = vec![0i64];
    let mut unknown = Vec::new();
    for c in phonemes.chars() {
        match vocab.get(&c.to_string()).and_then(|v| v.as_i64()) {
            Some(id) => ids.push(id),
            None => unknown.push(c),
        }
    }
    if !unknown.is_empty() {
        return Err(Usage(format!(
            "phonemes {unknown:?} are not in the vocabulary ({})",
            vocab_path.display()
        ))
        .into());
    }
    let n = ids.len() - 1;
    if n == 0 {
        return Err(Usage("no phonemes".into()).into());
    }
    ids.push(0);
    let voices = read_voices(&npz)?;
    let pack = voices.iter().find(|v| v.name == voice).ok_or_else(|| {
        let names: Vec<&str> = voices.iter().map(|v| v.name.as_str()).collect();
        Usage(format!(
            "no voice {voice:?}; the pack has {}",
            names.join(", ")
        ))
    })?;
    let (rows, width) = (pack.rows, pack.width);
    let row = n.min(rows) - 1;
    let style: Vec<f32> = pack.values[row * width..(row + 1) * width].to_vec();
    std::fs::create_dir_all(out)?;
    let write = |name: &str, t: T| -> anyhow::Result<()> {
        std::fs::write(out.join(name), t.to_npy()?)?;
        Ok(())
    };
    let len = ids.len() as u64;
    write("tokens.npy", T::I64(vec![1, len], ids))?;
    write("style.npy", T::F32(vec![1, width as u64], style))?;
    write("speed.npy", T::F32(vec![1], vec![speed]))?;
    Ok(n)
}

/// The phoneme vocabulary beside a voice pack (vocab.json: `{"vocab": {phoneme: id}}`).
fn read_vocab(
    npz: &Path,
) -> anyhow::Result<(
    serde_json::Map<String, serde_json::Value>,
    std::path::PathBuf,
)> {
    let path = npz.with_file_name("vocab.json");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).map_err(|e| Usage(format!("{}: {e}", path.display())))?,
    )
    .map_err(|e| Usage(format!("{}: {e}", path.display())))?;
    let vocab = v["vocab"]
        .as_object()
        .cloned()
        .ok_or_else(|| Usage(format!("{}: no \"vocab\" object", path.display())))?;
    Ok((vocab, path))
}

/// Every voice of an .npz pack: style vectors per phoneme count, [rows, (1,) width].
fn read_voices(npz: &Path) -> anyhow::Result<Vec<m2w_package::tts::Voice>> {
    use std::io::Read;
    let file = std::fs::File::open(npz).map_err(|e| Usage(format!("{}: {e}", npz.display())))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| Usage(format!("{}: not an .npz ({e})", npz.display())))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|f| f.ok())
        .filter_map(|f| f.strip_suffix(".npy").map(str::to_string))
        .collect();
    let mut voices = Vec::new();
    for name in names {
        let mut bytes = Vec::new();
        zip.by_name(&format!("{name}.npy"))?
            .read_to_end(&mut bytes)?;
        let t = m2w_reference::HostTensor::from_npy(&bytes)?;
        let rows = t.shape().first().copied().unwrap_or(0) as usize;
        let values: Vec<f32> = t.to_f64().iter().map(|&v| v as f32).collect();
        let width = values.len() / rows.max(1);
        voices.push(m2w_package::tts::Voice {
            name,
            rows,
            width,
            values,
        });
    }
    voices.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(voices)
}

/// The speaking demo's files for `package --tts-voices`.
pub(crate) fn tts_demo(
    engine_dir: &Path,
    name: &str,
    npz: &Path,
    names: &str,
    rate: u32,
    sample: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let parts: Vec<&str> = names.split(',').map(str::trim).collect();
    let [tokens, style, speed, audio] = parts[..] else {
        return Err(Usage(format!(
            "--tts-names {names:?}: give four names, tokens,style,speed,audio"
        ))
        .into());
    };
    let (vocab, _) = read_vocab(npz)?;
    let opts = m2w_package::tts::TtsOptions {
        tokens: tokens.into(),
        style: style.into(),
        speed: speed.into(),
        audio: audio.into(),
        rate,
        vocab,
        sample: sample.into(),
        voices: read_voices(npz)?,
    };
    m2w_package::tts::demo_files(engine_dir, name, &opts).map_err(|e| Usage(e.to_string()).into())
}

#[cfg(test)]
mod tests {
    use super::cargo_test_args;

    #[test]
    fn harness_flags_go_after_a_double_dash_unless_one_is_given() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cargo_test_args(&args(&["--ignored", "qwen", "--nocapture"])),
            args(&["qwen", "--", "--ignored", "--nocapture"])
        );
        assert_eq!(
            cargo_test_args(&args(&["qwen", "--", "--ignored"])),
            args(&["qwen", "--", "--ignored"])
        );
        assert_eq!(
            cargo_test_args(&args(&["--no-fail-fast"])),
            args(&["--no-fail-fast"])
        );
    }
}
