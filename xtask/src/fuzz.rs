//! `cargo xtask fuzz`: the cargo-fuzz targets of fuzz/ (one per reader, see
//! crates/fuzz-targets), each run for `--seconds` on its committed seeds plus what earlier
//! runs found, with a summary line per target (execs, crashes). `--seed-corpus` rewrites the
//! committed seeds from the real fixtures.
//!
//! Needs the nightly toolchain (libFuzzer's instrumentation); cargo-fuzz is installed into
//! ~/.cache/m2w/tools on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::workspace_root;

const TARGETS: &[&str] = &[
    "onnx",
    "gguf",
    "safetensors",
    "tflite",
    "npy",
    "manifest",
    "plan",
];

/// Largest input libFuzzer makes, per target (seeds may be larger; the model readers see
/// real files of a few MB).
fn max_len(target: &str) -> usize {
    match target {
        "onnx" | "tflite" | "gguf" => 4 << 20,
        _ => 1 << 20,
    }
}

fn cargo_fuzz() -> anyhow::Result<PathBuf> {
    let root = m2w_setup::cache_dir().join("tools");
    let bin = root.join("bin/cargo-fuzz");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("installing cargo-fuzz into {} (once)", root.display());
    let ok = Command::new("cargo")
        .args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            "0.13.1",
            "--root",
        ])
        .arg(&root)
        .status()
        .context("cargo install cargo-fuzz")?
        .success();
    if !ok {
        bail!(
            "cannot install cargo-fuzz (crates.io unreachable?); `cargo install cargo-fuzz` by hand"
        );
    }
    Ok(bin)
}

/// Runs the targets (all, or `only`) for `seconds` each, `jobs` at a time.
pub fn run(seconds: u64, only: Option<&str>, jobs: usize, seed: bool) -> anyhow::Result<()> {
    let fuzz = workspace_root().join("fuzz");
    if seed {
        return seed_corpus(&fuzz);
    }
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_none_or(|o| o == *t))
        .collect();
    if targets.is_empty() {
        bail!(
            "no target {:?}: one of {}",
            only.unwrap_or(""),
            TARGETS.join(", ")
        );
    }
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !nightly {
        bail!("cargo fuzz needs the nightly toolchain: `rustup toolchain install nightly`");
    }
    let cargo_fuzz = cargo_fuzz()?;
    // Build every target first (one cargo at a time), then run them side by side.
    for t in &targets {
        let ok = Command::new(&cargo_fuzz)
            .current_dir(&fuzz)
            .env("RUSTUP_TOOLCHAIN", "nightly")
            .args(["build", "--release", t])
            .status()?
            .success();
        if !ok {
            bail!("cargo fuzz build {t} failed");
        }
    }
    let mut summary = Vec::new();
    for chunk in targets.chunks(jobs.max(1)) {
        let children: Vec<(&str, std::process::Child, PathBuf)> = chunk
            .iter()
            .map(|t| {
                let found = fuzz.join("corpus-found").join(t);
                std::fs::create_dir_all(&found).unwrap();
                let artifacts = fuzz.join("artifacts").join(t);
                std::fs::create_dir_all(&artifacts).unwrap();
                let log = fuzz.join("artifacts").join(format!("{t}.log"));
                let child = Command::new(&cargo_fuzz)
                    .current_dir(&fuzz)
                    .env("RUSTUP_TOOLCHAIN", "nightly")
                    .args(["run", "--release", t])
                    .arg(&found)
                    .arg(fuzz.join("corpus").join(t))
                    .arg("--")
                    .arg(format!("-max_total_time={seconds}"))
                    .arg(format!("-max_len={}", max_len(t)))
                    .arg("-rss_limit_mb=2048")
                    .arg("-timeout=20")
                    .arg(format!("-artifact_prefix={}/", artifacts.display()))
                    .stdout(std::fs::File::create(&log).unwrap())
                    .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
                    .spawn()
                    .expect("cargo fuzz run");
                (*t, child, log.with_extension("err"))
            })
            .collect();
        for (t, mut child, log) in children {
            let status = child.wait()?;
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // libFuzzer's last line: "Done 123456 runs in 60 second(s)".
            let execs = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("Done ").and_then(|r| r.split(' ').next()))
                .unwrap_or("?")
                .to_string();
            let crashes = std::fs::read_dir(fuzz.join("artifacts").join(t))
                .map(|d| d.count())
                .unwrap_or(0);
            let corpus = std::fs::read_dir(fuzz.join("corpus-found").join(t))
                .map(|d| d.count())
                .unwrap_or(0);
            summary.push(format!(
                "{t:12} {seconds:>6} s  {execs:>10} execs  corpus {corpus:>6}  crashes {crashes}{}",
                if status.success() {
                    ""
                } else {
                    "  (exited with a finding; see fuzz/artifacts)"
                }
            ));
        }
    }
    println!("target       seconds       execs");
    for l in &summary {
        println!("{l}");
    }
    if summary.iter().any(|l| !l.ends_with("crashes 0")) {
        return Err(m2w_cli::CheckFailed(
            "crashes found: fuzz/artifacts/TARGET/; copy each to fuzz/regressions/TARGET/ and fix"
                .into(),
        )
        .into());
    }
    Ok(())
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// A GGUF v3 file: `kvs` (key, type id, value bytes) and tensors (name, dims, ggml type,
/// data), data aligned to 32 bytes.
fn gguf_bytes(kvs: &[(&str, u32, Vec<u8>)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
    let s = |v: &mut Vec<u8>, t: &str| {
        v.extend_from_slice(&(t.len() as u64).to_le_bytes());
        v.extend_from_slice(t.as_bytes());
    };
    let mut v = b"GGUF".to_vec();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    v.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, ty, val) in kvs {
        s(&mut v, k);
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(val);
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        s(&mut v, name);
        v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            v.extend_from_slice(&d.to_le_bytes());
        }
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while v.len() % 32 != 0 {
        v.push(0);
    }
    for (_, _, _, data) in tensors {
        v.extend_from_slice(data);
        while v.len() % 32 != 0 {
            v.push(0);
        }
    }
    v
}

/// The committed seeds, from the real fixtures (each a real file, or a small part of one:
/// the corpus stays a few MB).
fn seed_corpus(fuzz: &Path) -> anyhow::Result<()> {
    let corpus = fuzz.join("corpus");
    let fixture = |n: &str| m2w_setup::fixture(n).map_err(|e| anyhow::anyhow!("fixture {n}: {e}"));
    // onnx: the bundled Silero VAD v6 whole, and a model with an If subgraph.
    let silero = std::fs::read(m2w_setup::bundled_model())?;
    put(&corpus.join("onnx"), "silero_vad_v6.onnx", &silero)?;
    // gguf: SmolLM2's header (metadata and tensor table, data cut), and a whole small file
    // with its architecture keys and one tensor of each block type it uses.
    let smol = std::fs::read(fixture("smollm2-q4_1")?)?;
    let mut f = std::io::Cursor::new(&smol);
    let content = candle_core::quantized::gguf_file::Content::read(&mut f)?;
    put(
        &corpus.join("gguf"),
        "smollm2_header.gguf",
        &smol[..content.tensor_data_offset as usize + 64],
    )?;
    let u32v = |x: u32| x.to_le_bytes().to_vec();
    let strv = |t: &str| {
        let mut v = (t.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(t.as_bytes());
        v
    };
    let f32s = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| (i as f32 * 0.25).to_le_bytes())
            .collect()
    };
    let small = gguf_bytes(
        &[
            ("general.architecture", 8, strv("llama")),
            ("llama.block_count", 4, u32v(1)),
            ("llama.embedding_length", 4, u32v(32)),
            ("llama.attention.head_count", 4, u32v(2)),
        ],
        &[
            ("token_embd.weight", vec![32, 4], 0, f32s(128)),
            ("blk.0.attn_q.weight", vec![32, 2], 3, vec![0x11; 2 * 20]),
            ("output.weight", vec![32, 1], 8, vec![0x22; 34]),
        ],
    );
    put(&corpus.join("gguf"), "small.gguf", &small)?;
    // safetensors: MiniLM's header with the first tensors, their data cut to a few values.
    let st = std::fs::read(fixture("minilm-safetensors")?)?;
    let n = u64::from_le_bytes(st[..8].try_into()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n])?;
    let mut small = serde_json::Map::new();
    let mut data = Vec::new();
    for (k, v) in header
        .as_object()
        .context("safetensors header")?
        .iter()
        .take(4)
    {
        if k == "__metadata__" {
            small.insert(k.clone(), v.clone());
            continue;
        }
        let [a, b] = [
            v["data_offsets"][0].as_u64().unwrap_or(0),
            v["data_offsets"][1].as_u64().unwrap_or(0),
        ];
        let size = match v["dtype"].as_str() {
            Some("F64" | "I64" | "U64") => 8,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            Some("I8" | "U8" | "BOOL") => 1,
            _ => 4,
        };
        let elems = ((b - a) as usize / size).min(16);
        let take = elems * size;
        let start = data.len();
        data.extend_from_slice(&st[8 + n + a as usize..8 + n + a as usize + take]);
        small.insert(
            k.clone(),
            serde_json::json!({"dtype": v["dtype"], "shape": [elems], "data_offsets": [start, data.len()]}),
        );
    }
    let head = serde_json::to_vec(&small)?;
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&head);
    file.extend_from_slice(&data);
    put(
        &corpus.join("safetensors"),
        "minilm_part.safetensors",
        &file,
    )?;
    // tflite: MediaPipe's palm detector whole.
    put(
        &corpus.join("tflite"),
        "palm_detection_lite.tflite",
        &std::fs::read(fixture("palm-detection-lite")?)?,
    )?;
    // npy, manifest, plan: from a port of the bundled model.
    let tmp = tempfile::tempdir()?;
    let port = tmp.path().join("port");
    let ok = Command::new(std::env::current_exe()?)
        .arg("port")
        .arg(m2w_setup::bundled_model())
        .arg("--out")
        .arg(&port)
        .status()?
        .success();
    if !ok {
        bail!("port of the bundled model failed");
    }
    let mut npys: Vec<(u64, PathBuf)> = std::fs::read_dir(port.join("reference"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .map(|p| (std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0), p))
        .collect();
    npys.sort();
    for (_, p) in npys.iter().take(6) {
        put(
            &corpus.join("npy"),
            &p.file_name().unwrap().to_string_lossy(),
            &std::fs::read(p)?,
        )?;
    }
    put(
        &corpus.join("manifest"),
        "silero_manifest.json",
        &std::fs::read(port.join("weights/manifest.json"))?,
    )?;
    put(
        &corpus.join("plan"),
        "silero_plan.json",
        &std::fs::read(port.join("engine/plan.json"))?,
    )?;
    println!("seeds written under {}", corpus.display());
    Ok(())
}
