//! Repository automation: the demo, the test suite and ONNX conformance.

use std::path::PathBuf;

use anyhow::Context;

use m2w_cli::{CheckFailed, Usage, setup_err};

use crate::workspace_root;

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

/// The set-up the demo and the tests share: the ONNX Runtime library, a WebGPU adapter
/// (lavapipe installed when there is none), Chromium and npm for the browser proof.
fn browser_setup() -> anyhow::Result<()> {
    m2w_cli::tools::setup()?;
    match m2w_setup::adapter::ensure_chromium() {
        Ok(p) => println!("Chromium for the browser proof: {p}"),
        Err(e) => return Err(Usage(e).into()),
    }
    if std::process::Command::new("npm")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(Usage(
            "npm not found: the browser proof builds the generated package with npm (install Node.js 20+)".into(),
        )
        .into());
    }
    Ok(())
}

/// The main job: set-up, then the bundled model through every phase and into the browser.
pub(crate) fn demo(out: Option<PathBuf>) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let model = m2w_setup::bundled_model();
    let out = out.unwrap_or_else(|| workspace_root().join("target/demo"));
    println!("m2w demo: set-up (cached after the first run)");
    browser_setup()?;
    let port_dir = out.join("silero_vad_v6");
    let package_dir = out.join("package");
    println!("\nm2w demo: port the bundled model {}\n", model.display());
    m2w_cli::phases::port(
        m2w_cli::phases::PortSource {
            model: Some(model),
            graphs: vec![],
            tokenizer: None,
            prompts: vec![],
        },
        &port_dir,
        m2w_cli::phases::PortArgs::default(),
        false,
        &[],
        false,
        false,
    )?;
    println!("\nm2w demo: the TypeScript package\n");
    m2w_cli::run(m2w_cli::Command::Package {
        port: port_dir.clone(),
        name: "silero-vad-webgpu".into(),
        out: package_dir.clone(),
        context: 512,
        prefill_chunk: 16,
        devices: vec!["webgpu-default".into()],
        max_binding_bytes: None,
        tts_voices: None,
        tts_names: "tokens,style,speed,audio".into(),
        tts_rate: 24000,
        tts_sample: String::new(),
    })?;
    println!("\nm2w demo: the browser proof (headless Chromium, WebGPU)\n");
    let screenshot = out.join("demo.png");
    m2w_cli::tools::package_test(
        &package_dir,
        &[port_dir.join("reference")],
        Some(&screenshot),
        &[],
        false,
        None,
    )?;
    println!(
        "\nm2w demo passed in {:.0} s:\n  layer report  {}\n  package       {}\n  demo page     {}\n  screenshot    {}",
        t0.elapsed().as_secs_f64(),
        port_dir.join("validate/report.html").display(),
        package_dir.display(),
        package_dir.join("index.html").display(),
        screenshot.display()
    );
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
    m2w_cli::run(m2w_cli::Command::Fixtures {
        names: vec![],
        list: false,
    })?;
    println!("m2w test: set-up (ONNX Runtime library, WebGPU adapter, Chromium, npm)");
    browser_setup()?;
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
