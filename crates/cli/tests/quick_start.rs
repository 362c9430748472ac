//! The README's quick start, run verbatim: the lines between `<!-- quick-start -->` and
//! `<!-- /quick-start -->`, in bash from the checkout's root, with `m2w` on PATH. The
//! default run takes the `m2w` this test was built with and leaves out `cargo install`
//! (a release build of the workspace, minutes on two cores); the ignored test runs every
//! line, `cargo install` included (into a scratch CARGO_INSTALL_ROOT).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The quick start's lines, as the README gives them.
fn quick_start() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- quick-start -->")
        .expect("the README marks its quick start");
    let end = readme
        .find("<!-- /quick-start -->")
        .expect("and where it ends");
    let block = &readme[start..end];
    let body = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh code block");
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Runs `lines` with `set -e` in bash from the repository root; `path` goes first on PATH.
fn run_lines(
    lines: &[String],
    path: &Path,
    tmp: &Path,
    envs: &[(&str, PathBuf)],
) -> (i32, String, String) {
    let script = format!("set -e\n{}\n", lines.join("\n"));
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .current_dir(repo_root())
        .env(
            "PATH",
            format!(
                "{}:{}",
                path.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("TMPDIR", tmp)
        .env("M2W_PROGRESS", "plain");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What every run of the quick start must leave: a passing port with its report, the
/// package, the browser's screenshot, and the first 10 bytes of the JSON report with a
/// quiet exit when `head` closes the pipe.
fn check_outcome(tmp: &Path, code: i32, out: &str, err: &str) {
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let folder = tmp.join("m2w-quick-start");
    assert!(folder.join("port/validate/report.html").is_file());
    assert!(folder.join("package/package.json").is_file());
    let png = std::fs::read(folder.join("demo.png")).expect("the demo page's screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        out.contains("browser checkpoints: 27 passed, 0 failed"),
        "{out}"
    );
    assert!(out.contains("next: m2w package --port port"), "{out}");
    assert!(
        out.ends_with("{\n  \"schem"),
        "the last line prints the JSON report's first 10 bytes: {:?}",
        &out[out.len().saturating_sub(40)..]
    );
    for bad in ["panicked", "Broken pipe", "RUST_BACKTRACE"] {
        assert!(!err.contains(bad), "{bad} in stderr:\n{err}");
    }
}

#[test]
fn the_readme_quick_start_runs_verbatim() {
    let lines = quick_start();
    assert!(
        lines[0].starts_with("cargo install --path crates/cli"),
        "{lines:?}"
    );
    let rest: Vec<String> = lines
        .iter()
        .filter(|l| !l.starts_with("cargo install"))
        .cloned()
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_m2w")).parent().unwrap();
    let (code, out, err) = run_lines(&rest, bin, tmp.path(), &[]);
    check_outcome(tmp.path(), code, &out, &err);
}

#[test]
#[ignore = "cargo install builds the workspace in release mode: minutes on two cores"]
fn the_readme_quick_start_runs_verbatim_with_cargo_install() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("install-root");
    let target = repo_root().join("target");
    let (code, out, err) = run_lines(
        &quick_start(),
        &root.join("bin"),
        tmp.path(),
        &[
            ("CARGO_INSTALL_ROOT", root.clone()),
            ("CARGO_TARGET_DIR", target),
        ],
    );
    assert!(root.join("bin/m2w").is_file(), "{err}");
    check_outcome(tmp.path(), code, &out, &err);
}

#[test]
fn port_json_summarises_the_port_from_any_folder_with_relative_paths() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(m2w_setup::bundled_model(), tmp.path().join("model.onnx")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_m2w"))
        .args(["port", "model.onnx", "--out", "out", "--json"])
        .current_dir(tmp.path())
        .env("M2W_PROGRESS", "plain")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The steps and the progress went to stderr; stdout is one JSON document.
    assert!(stderr.contains("[5/5] validate"), "{stderr}");
    assert!(
        stderr.contains("m2w: [3/5] reference"),
        "progress names the stage: {stderr}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(doc["schema"], "m2w.port/1");
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["kind"], "graph");
    assert_eq!(doc["checkpoints"][0]["failed"], 0);
    assert!(doc["checkpoints"][0]["passed"].as_u64().unwrap() > 0);
    let dims = doc["dims"].as_array().unwrap();
    assert!(!dims.is_empty(), "the plan's named dims: {doc}");
    for d in dims {
        assert!(d["max"].as_u64().unwrap() >= d["reference"].as_u64().unwrap());
    }
    let html = doc["reports"][0]["html"].as_str().unwrap();
    assert_eq!(html, "out/validate/report.html", "relative, as given");
    assert!(tmp.path().join(html).is_file());
    assert!(
        tmp.path()
            .join(doc["reports"][0]["json"].as_str().unwrap())
            .is_file()
    );
    assert_eq!(
        doc["next"],
        "m2w package --port out --name model-webgpu --out out-package"
    );
    assert!(
        tmp.path()
            .join("out/validate/model-explorer.json")
            .is_file()
    );
}
