//! Set-up, the browser package test and the TTS helpers.

use std::path::Path;

use crate::phases::validate_options;
use crate::{CheckFailed, Usage, port_err, setup_err};

fn npm(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let _progress = m2w_progress::task(&format!("npm {}", args.join(" ")), None);
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

pub fn package_test(
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
    if ["typescript", "playwright-core", "esbuild", "@webgpu/types"]
        .iter()
        .any(|m| !package.join("node_modules").join(m).is_dir())
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
        // The test runs inside the package: a relative path is the caller's.
        cmd.arg(std::path::absolute(s).map_err(|e| Usage(format!("{}: {e}", s.display())))?);
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
    let progress = m2w_progress::task(&format!("headless Chromium: {spec}"), None);
    let status = cmd.status()?;
    drop(progress);
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

pub fn setup() -> anyhow::Result<()> {
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

/// Inputs of a Kokoro-style TTS graph from a phoneme string: `tokens` [1, n + 2] (each
/// phoneme's id in the voice pack's vocabulary, padded with 0 at both ends), `style`
/// [1, 256] (the voice's style row for n phonemes), `speed` [1]. The voice pack is the
/// `kokoro-voices` fixture (voices_ja.npz with vocab.json beside it). Writes tokens.npy,
/// style.npy and speed.npy into `out`; returns the token count.
pub fn tts_inputs(phonemes: &str, voice: &str, speed: f32, out: &Path) -> anyhow::Result<usize> {
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
