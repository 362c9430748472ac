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
        other => anyhow::bail!("unknown benchmark {other:?}; available: extract"),
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
