//! Benchmarks (never tests): each prints a Markdown table with the command that made it,
//! for bench/RESULTS.md. Timings are medians of `runs` runs on a warm page cache.

use std::time::Instant;

use anyhow::Context;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn run(what: &str, runs: usize) -> anyhow::Result<()> {
    match what {
        "extract" => extract(runs.max(1)),
        "browser" => browser(runs.max(1)),
        "dynamic" => dynamic(runs.max(3)),
        other => {
            anyhow::bail!("unknown benchmark {other:?}; available: extract, browser, dynamic")
        }
    }
}

/// Extract throughput on the SmolLM2 GGUF against `cp` of the same file.
fn extract(runs: usize) -> anyhow::Result<()> {
    let src = m2w_setup::fixture("smollm2-q4_1").map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = std::fs::metadata(&src)?.len() as f64;
    let tmp = tempdir()?;
    let (mut cp, mut ex) = (Vec::new(), Vec::new());
    // One untimed round warms the page cache for both.
    for round in 0..=runs {
        let dst = tmp.join("copy.gguf");
        let t = Instant::now();
        let status = std::process::Command::new("cp")
            .arg(&src)
            .arg(&dst)
            .status()
            .context("running cp")?;
        let cp_s = t.elapsed().as_secs_f64();
        anyhow::ensure!(status.success(), "cp failed");
        std::fs::remove_file(&dst)?;
        let out = tmp.join("weights");
        let t = Instant::now();
        m2w_extract::extract(&src, &out, &m2w_extract::Options::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ex_s = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&out)?;
        if round > 0 {
            cp.push(cp_s);
            ex.push(ex_s);
        }
    }
    let (cp, ex) = (median(cp), median(ex));
    let profile = if cfg!(debug_assertions) {
        "dev (opt-level 1; use --release for figures)"
    } else {
        "release"
    };
    println!("| what | median s | MB/s (source bytes) | vs cp |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `cp` SmolLM2-135M Q4_1 GGUF ({:.1} MB) | {cp:.3} | {:.0} | 1.00x |",
        bytes / 1e6,
        bytes / 1e6 / cp
    );
    println!(
        "| `m2w extract` same file (repack Q4_1/Q8_0, sha256, manifest) | {ex:.3} | {:.0} | {:.2}x the time of cp |",
        bytes / 1e6 / ex,
        ex / cp
    );
    println!(
        "\n{runs} runs each, medians, warm page cache, {} cores, build profile: {profile}.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!("m2w-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

/// The generated packages of the bundled Silero VAD and MiniLM int8 against onnxruntime-web's
/// WebGPU execution provider in the same headless Chromium (bench/browser/compare.mjs).
fn browser(runs: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let work = m2w_setup::cache_dir().join("bench-browser");
    std::fs::create_dir_all(&work)?;
    std::fs::copy(
        root.join("bench/browser/compare.mjs"),
        work.join("compare.mjs"),
    )?;
    if !work.join("node_modules/onnxruntime-web").is_dir()
        || !work.join("node_modules/playwright-core").is_dir()
    {
        let ok = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--no-save",
                "onnxruntime-web@1.30.0",
                "playwright-core@1.65.1",
            ])
            .current_dir(&work)
            .status()?
            .success();
        anyhow::ensure!(ok, "npm install failed");
    }
    let exe = std::env::current_exe()?;
    let minilm = m2w_setup::fixture("minilm-int8").map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("| model | runtime | median ms | code | weights bytes |\n|---|---|---:|---|---:|");
    for (model, name, dims) in [
        (m2w_setup::bundled_model(), "silero-vad-webgpu", vec![]),
        (minilm, "minilm-int8-webgpu", vec!["--dim", "sequence=16"]),
    ] {
        let dir = work.join(name);
        let port = dir.join("port");
        let pkg = dir.join("pkg");
        let run = |args: Vec<std::ffi::OsString>| -> anyhow::Result<()> {
            let out = std::process::Command::new(&exe).args(&args).output()?;
            anyhow::ensure!(
                out.status.success(),
                "{:?}: {}",
                args,
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let mut port_args: Vec<std::ffi::OsString> = vec![
            "port".into(),
            model.clone().into(),
            "--out".into(),
            port.clone().into(),
        ];
        port_args.extend(dims.iter().map(|d| d.into()));
        run(port_args)?;
        run(vec![
            "package".into(),
            "--port".into(),
            port.clone().into(),
            "--name".into(),
            name.into(),
            "--out".into(),
            pkg.clone().into(),
        ])?;
        let ok = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&pkg)
            .status()?
            .success()
            && std::process::Command::new("npm")
                .args(["run", "--silent", "build"])
                .current_dir(&pkg)
                .status()?
                .success();
        anyhow::ensure!(ok, "building the package failed");
        let out = std::process::Command::new("node")
            .arg(work.join("compare.mjs"))
            .arg(&pkg)
            .arg(&model)
            .arg(port.join("reference"))
            .arg(runs.to_string())
            .current_dir(&work)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

/// One symbolic plan against the static plans it replaces (issue 13): MiniLM int8 at 16 and
/// 128 tokens on wgpu, the symbolic plan compiled once for sequence <= 128. Plan time, and
/// forward passes end to end (inputs written, every dispatch, outputs read back): the
/// symbolic plan at the size it is bound to, and right after it served the other size (its
/// uniform words are rewritten first: the per-run cost of changing size).
fn dynamic(runs: usize) -> anyhow::Result<()> {
    use std::collections::{BTreeMap, HashMap};

    use m2w_engine::gpu::{Gpu, Runner};
    use m2w_engine::{DT, HostTensor};

    // M2W_BENCH_MODEL names the file where the fixture cache is absent (the GPU machine).
    let path = match std::env::var_os("M2W_BENCH_MODEL") {
        Some(p) => std::path::PathBuf::from(p),
        None => m2w_setup::fixture("minilm-int8").map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let model = m2w_model::Model::open(&path)?;
    let graph = model.graph.as_ref().context("an ONNX graph")?;
    let gpu = Gpu::new().map_err(|e| anyhow::anyhow!(e))?;
    let inputs = |t: usize| -> HashMap<String, HostTensor> {
        let ids: Vec<i64> = (0..t).map(|k| 101 + (k as i64 * 7919) % 29000).collect();
        HashMap::from([
            ("input_ids".to_string(), HostTensor::i64(vec![1, t], ids)),
            (
                "attention_mask".to_string(),
                HostTensor::i64(vec![1, t], vec![1; t]),
            ),
            (
                "token_type_ids".to_string(),
                HostTensor::i64(vec![1, t], vec![0; t]),
            ),
        ])
    };
    let maxima = BTreeMap::from([("batch".to_string(), 1), ("sequence".to_string(), 128)]);
    let t0 = Instant::now();
    let (shapes, dims) =
        m2w_engine::symbolic_inputs(graph, &maxima).map_err(|e| anyhow::anyhow!(e))?;
    let mut sym_plan =
        m2w_engine::compile_symbolic(&model, &shapes, &dims).map_err(|e| anyhow::anyhow!("{e}"))?;
    sym_plan.assign_buffers(true);
    let sym_plan_ms = t0.elapsed().as_secs_f64() * 1e3;
    let outputs = sym_plan.outputs.clone();
    let symbolic = Runner::new(&gpu, sym_plan).map_err(|e| anyhow::anyhow!(e))?;
    // `before`: a pass of another size (on this runner or another) right before each timed
    // one, so the GPU's caches hold the other size's work as after a change.
    let time = |runner: &Runner,
                x: &HashMap<String, HostTensor>,
                before: Option<(&Runner, &HashMap<String, HostTensor>)>|
     -> anyhow::Result<f64> {
        let mut v = Vec::new();
        for r in 0..runs + 2 {
            if let Some((other, b)) = before {
                other.run(b, &outputs).map_err(|e| anyhow::anyhow!(e))?;
            }
            let t = Instant::now();
            runner.run(x, &outputs).map_err(|e| anyhow::anyhow!(e))?;
            if r >= 2 {
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(median(v))
    };
    println!("adapter: {} ({:?})\n", gpu.info.name, gpu.info.backend);
    println!(
        "| tokens | static plan ms | symbolic plan ms | static run ms | symbolic run ms | ratio | static run after the other size's static plan ms | symbolic run after a size change ms | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut statics: Vec<(usize, Runner)> = Vec::new();
    for t in [16usize, 128] {
        let fixed: BTreeMap<String, (Vec<usize>, DT)> = inputs(t)
            .iter()
            .map(|(k, v)| (k.clone(), (v.shape.clone(), DT::I32)))
            .collect();
        let mut plan = m2w_engine::compile(&model, &fixed).map_err(|e| anyhow::anyhow!("{e}"))?;
        plan.assign_buffers(true);
        statics.push((t, Runner::new(&gpu, plan).map_err(|e| anyhow::anyhow!(e))?));
    }
    for (t, other) in [(16usize, 128usize), (128, 16)] {
        let fixed: BTreeMap<String, (Vec<usize>, DT)> = inputs(t)
            .iter()
            .map(|(k, v)| (k.clone(), (v.shape.clone(), DT::I32)))
            .collect();
        let t0 = Instant::now();
        let mut plan = m2w_engine::compile(&model, &fixed).map_err(|e| anyhow::anyhow!("{e}"))?;
        plan.assign_buffers(true);
        let static_plan_ms = t0.elapsed().as_secs_f64() * 1e3;
        let fixed_runner = Runner::new(&gpu, plan).map_err(|e| anyhow::anyhow!(e))?;
        let x = inputs(t);
        let s_run = time(&fixed_runner, &x, None)?;
        let y_run = time(&symbolic, &x, None)?;
        let other_static = &statics.iter().find(|(n, _)| *n == other).unwrap().1;
        let s_switch = time(&fixed_runner, &x, Some((other_static, &inputs(other))))?;
        let y_switch = time(&symbolic, &x, Some((&symbolic, &inputs(other))))?;
        println!(
            "| {t} | {static_plan_ms:.0} | {sym_plan_ms:.0} | {s_run:.3} | {y_run:.3} | {:.3} | {s_switch:.3} | {y_switch:.3} | {:.3} |",
            y_run / s_run,
            y_switch / s_switch
        );
    }
    println!(
        "\n{runs} timed runs each after 2 warm-up runs, medians; outputs read back every run."
    );
    Ok(())
}
