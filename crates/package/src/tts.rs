//! The speaking demo of a Kokoro-style TTS package (`cargo xtask package --tts-voices`):
//! `tts.html` turns a phoneme string into tokens with the model's vocabulary, picks the
//! chosen voice's style vector for that many phonemes, runs the model and plays its audio.
//! The assets it reads: `tts/tts.json` (input and output names, sample rate, vocabulary,
//! voices) and `tts/voices.bin` (every voice's style rows, f32 little-endian).

use std::path::Path;

use m2w_engine::Plan;

use crate::PackageError;

const TTS_HTML: &str = include_str!("../../../templates/package/tts.html");

/// One voice: a style vector per phoneme count (`rows` of `width` values, row-major).
pub struct Voice {
    pub name: String,
    pub rows: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

/// What the page needs beyond the package: names of the model's token, style and speed
/// inputs and of its audio output, the audio's sample rate, the vocabulary (phoneme ->
/// token id), a sample phoneme string, and the voices.
pub struct TtsOptions {
    pub tokens: String,
    pub style: String,
    pub speed: String,
    pub audio: String,
    pub rate: u32,
    pub vocab: serde_json::Map<String, serde_json::Value>,
    pub sample: String,
    pub voices: Vec<Voice>,
}

/// The demo's files (path in the package, bytes), its names checked against the plan: made
/// before the package is generated, so that a wrong name writes nothing.
pub fn demo_files(
    engine_dir: &Path,
    name: &str,
    opts: &TtsOptions,
) -> Result<Vec<(String, Vec<u8>)>, PackageError> {
    let bad = |m: String| PackageError::Input(m);
    let plan: Plan = serde_json::from_slice(
        &std::fs::read(engine_dir.join("plan.json"))
            .map_err(|e| bad(format!("{}: {e}", engine_dir.join("plan.json").display())))?,
    )
    .map_err(|e| bad(format!("plan.json: {e}")))?;
    for (what, n) in [
        ("token input", &opts.tokens),
        ("style input", &opts.style),
        ("speed input", &opts.speed),
    ] {
        if !plan.inputs.contains(n) {
            return Err(bad(format!(
                "the model has no {what} '{n}' (its inputs: {})",
                plan.inputs.join(", ")
            )));
        }
    }
    if !plan.outputs.contains(&opts.audio) {
        return Err(bad(format!(
            "the model has no audio output '{}' (its outputs: {})",
            opts.audio,
            plan.outputs.join(", ")
        )));
    }
    if opts.voices.is_empty() {
        return Err(bad("no voices".into()));
    }
    // Tokens are [1, n + 2] (a 0 on each side): the plan's largest token count bounds n.
    let max = plan.max_bindings();
    let token_len = plan.tensors[&opts.tokens]
        .shape
        .last()
        .map(|d| d.eval(&max).unwrap_or(0))
        .unwrap_or(0);
    let mut voices = Vec::new();
    let mut bin = Vec::new();
    for v in &opts.voices {
        if v.values.len() != v.rows * v.width || v.rows == 0 {
            return Err(bad(format!(
                "voice {}: not {} rows of {}",
                v.name, v.rows, v.width
            )));
        }
        voices.push(serde_json::json!({
            "name": v.name, "rows": v.rows, "width": v.width, "offset": bin.len() / 4,
        }));
        bin.extend(v.values.iter().flat_map(|x| x.to_le_bytes()));
    }
    let config = serde_json::json!({
        "tokens": opts.tokens, "style": opts.style, "speed": opts.speed, "audio": opts.audio,
        "rate": opts.rate, "vocab": opts.vocab, "sample": opts.sample,
        "maxPhonemes": (token_len - 2).max(1), "voices": voices,
    });
    let model = plan_model_name(engine_dir);
    let html = TTS_HTML
        .replace("{{NAME}}", name)
        .replace("{{MODEL}}", &model);
    Ok(vec![
        ("tts.html".into(), html.into_bytes()),
        ("tts/tts.json".into(), config.to_string().into_bytes()),
        ("tts/voices.bin".into(), bin),
    ])
}

/// Writes the demo's files into a generated package.
pub fn write_demo(out: &Path, files: &[(String, Vec<u8>)]) -> Result<(), PackageError> {
    for (f, bytes) in files {
        let p = out.join(f);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PackageError::Io(dir.to_path_buf(), e))?;
        }
        std::fs::write(&p, bytes).map_err(|e| PackageError::Io(p.clone(), e))?;
    }
    Ok(())
}

fn plan_model_name(engine_dir: &Path) -> String {
    std::fs::read(engine_dir.join(m2w_engine::engine_json::FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<m2w_engine::EngineJson>(&b).ok())
        .and_then(|e| {
            e.model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}
