//! The five holes of issue 19's bad-input campaign, each with the exact bad file (made here)
//! and the command that used to misbehave: now exit 2 with one line naming the file and the
//! problem, or the right values.

use std::path::{Path, PathBuf};
use std::process::Command;

use m2w_model::onnx_build::{FLOAT, model, node, value_info};

fn m2w() -> Command {
    Command::new(env!("CARGO_BIN_EXE_m2w"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The error lines of a run (what a user reads), without progress lines.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error")).collect()
}

/// Hole 1: a graph input declared with dim 2^40 made `reference` abort (exit 134, "memory
/// allocation of 4398046511104 bytes failed").
#[test]
fn a_graph_input_of_dim_2_pow_40_is_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "huge.onnx",
        &model(
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![],
            vec![value_info("x", FLOAT, &[1 << 40])],
            vec![value_info("y", FLOAT, &[1 << 40])],
            17,
        ),
    );
    let out = dir.path().join("ref");
    let (code, stdout, stderr) = run(m2w().arg("reference").arg(&p).arg("--out").arg(&out));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("input 'x'") && stderr.contains("over the limit"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written for a refused model");
}

/// Hole 3 (the part a test can reach without a kill, see kill.rs): folders left by a killed
/// run, a staging copy and a previous output moved aside with no output in place, are
/// cleaned and restored by the next run.
#[test]
fn leftovers_of_a_killed_run_are_cleaned_and_a_moved_output_restored() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weights");
    let model = m2w_setup::bundled_model();
    let (code, _, stderr) = run(m2w().arg("extract").arg(&model).arg("--out").arg(&out));
    assert_eq!(code, 0, "{stderr}");
    // A dead process's PID (the largest Linux allows is 2^22).
    let dead = 4_194_303;
    let old = dir.path().join(format!(".weights.old-{dead}"));
    std::fs::rename(&out, &old).unwrap();
    let partial = dir.path().join(format!(".weights.partial-{dead}"));
    std::fs::create_dir_all(partial.join("half")).unwrap();
    // A run that fails (a model that is not there) still restores and cleans first.
    let (code, _, _) = run(m2w()
        .arg("extract")
        .arg(dir.path().join("missing.onnx"))
        .arg("--out")
        .arg(&out));
    assert_eq!(code, 2);
    let (code, _, stderr) = run(m2w().arg("extract").arg(&model).arg("--out").arg(&out));
    assert_eq!(code, 0, "{stderr}");
    assert!(out.join("manifest.json").exists() || std::fs::read_dir(&out).unwrap().count() > 0);
    assert!(
        !old.exists() && !partial.exists(),
        "leftovers were not cleaned"
    );
}

/// Hole 4: a Fortran-ordered .npy given to `--input` was read as C order (max error 5.7).
#[test]
fn a_fortran_ordered_input_is_read_in_its_own_order() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "relu.onnx",
        &model(
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![],
            vec![value_info("x", FLOAT, &[2, 3])],
            vec![value_info("y", FLOAT, &[2, 3])],
            17,
        ),
    );
    // numpy.asfortranarray([[1, 2, 3], [4, 5, 6]]) as numpy writes it: columns first.
    let data: Vec<u8> = [1f32, 4., 2., 5., 3., 6.]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let npy = m2w_reference::raw_npy(
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
        &data,
    );
    let x = write(dir.path(), "x.npy", &npy);
    let out = dir.path().join("ref");
    let (code, stdout, stderr) = run(m2w()
        .arg("reference")
        .arg(&p)
        .arg("--out")
        .arg(&out)
        .arg("--input")
        .arg(format!("x={}", x.display())));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let index = m2w_reference::read_index(&out).unwrap();
    let y = index.checkpoints.iter().find(|c| c.output == "y").unwrap();
    match m2w_reference::HostTensor::read_npy(&out.join(&y.file)).unwrap() {
        m2w_reference::HostTensor::F32(shape, v) => {
            assert_eq!(shape, vec![2, 3]);
            assert_eq!(v, vec![1., 2., 3., 4., 5., 6.]);
        }
        other => panic!("{other:?}"),
    }
}

/// Hole 5: a truncated GGUF named a different tensor on each run (candle's HashMap order),
/// and with RUST_BACKTRACE set an error from candle printed ~60 lines of backtrace.
#[test]
fn a_truncated_gguf_gives_the_same_one_line_error_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = std::fs::read(
        m2w_setup::fixture("smollm2-q4_1").expect("fixture smollm2-q4_1 (cargo xtask fixtures)"),
    )
    .unwrap();
    let cut = write(dir.path(), "cut.gguf", &gguf[..gguf.len() / 2]);
    let header = write(dir.path(), "header.gguf", &gguf[..4096]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (code, _, stderr) = run(m2w().env("RUST_BACKTRACE", "1").arg("inspect").arg(&cut));
        assert_eq!(code, 2, "{stderr}");
        seen.insert(error_lines(&stderr).join("\n"));
    }
    assert_eq!(seen.len(), 1, "different errors for one file: {seen:#?}");
    let (code, _, stderr) = run(m2w().env("RUST_BACKTRACE", "1").arg("inspect").arg(&header));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.lines().count() <= 3,
        "a backtrace leaked into the error:\n{stderr}"
    );
    assert!(stderr.contains("header.gguf"), "{stderr}");
}

/// Hole 5: `inspect` and `extract` described (exit 0) a graph with a cycle and one with a
/// node reading a value nothing produces.
#[test]
fn a_cyclic_graph_and_a_missing_input_are_refused_by_inspect_and_extract() {
    let dir = tempfile::tempdir().unwrap();
    let cyclic = write(
        dir.path(),
        "cyclic.onnx",
        &model(
            vec![
                node("Add", &["x", "b"], &["a"], vec![]),
                node("Relu", &["a"], &["b"], vec![]),
            ],
            vec![],
            vec![value_info("x", FLOAT, &[4])],
            vec![value_info("b", FLOAT, &[4])],
            17,
        ),
    );
    let missing = write(
        dir.path(),
        "missing.onnx",
        &model(
            vec![node("Add", &["x", "nowhere"], &["y"], vec![])],
            vec![],
            vec![value_info("x", FLOAT, &[4])],
            vec![value_info("y", FLOAT, &[4])],
            17,
        ),
    );
    for (file, needle) in [(&cyclic, "cycle"), (&missing, "'nowhere'")] {
        for cmd in ["inspect", "extract"] {
            let out = dir.path().join(format!("{cmd}-out"));
            let mut c = m2w();
            c.arg(cmd).arg(file);
            if cmd == "extract" {
                c.arg("--out").arg(&out);
            }
            let (code, stdout, stderr) = run(&mut c);
            assert_eq!(code, 2, "{cmd} {}: {stdout}\n{stderr}", file.display());
            let lines = error_lines(&stderr);
            assert_eq!(lines.len(), 1, "{stderr}");
            assert!(
                lines[0].contains(&file.display().to_string()) && lines[0].contains(needle),
                "{}",
                lines[0]
            );
            assert!(!out.exists());
        }
    }
}
