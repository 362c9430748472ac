//! The bad-input corpus (issue 19): malformed files made here from real fixtures, through
//! every command that reads them. Each must exit 2 with one error line that names the file,
//! never panic or abort (memory is capped: a reader that allocates what a header claims
//! dies in the allocator and fails the test), and never change an existing output folder.
//!
//! A few malformations can leave a file that still reads (a bit flip inside weight data):
//! those may exit 0, but never anything but 0 or 2.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use m2w_model::onnx_build::{FLOAT, model, node, value_info};

/// Address space a command may use: ORT and lavapipe map a few GiB; an allocation of what
/// a hostile header declares (terabytes) fails inside it.
const ADDRESS_SPACE: u64 = 16 << 30;

fn m2w() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_m2w"));
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    c
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            m.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            );
        }
    }
    m
}

struct Case {
    file: PathBuf,
    /// Whether the file may still be readable (then exit 0 is allowed).
    may_read: bool,
}

fn cut(dir: &Path, name: &str, bytes: &[u8], at: usize) -> Case {
    let p = dir.join(format!("{name}.cut{at}.{}", ext(name)));
    std::fs::write(&p, &bytes[..at.min(bytes.len())]).unwrap();
    Case {
        file: p,
        may_read: false,
    }
}

fn ext(name: &str) -> &str {
    name.rsplit('.').next().unwrap()
}

fn flip(dir: &Path, name: &str, bytes: &[u8], at: usize) -> Case {
    let mut b = bytes.to_vec();
    b[at] ^= 0x5a;
    let p = dir.join(format!("{name}.flip{at}.{}", ext(name)));
    std::fs::write(&p, &b).unwrap();
    Case {
        file: p,
        may_read: true,
    }
}

fn raw(dir: &Path, file: &str, bytes: Vec<u8>) -> Case {
    let p = dir.join(file);
    std::fs::write(&p, bytes).unwrap();
    Case {
        file: p,
        may_read: false,
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(m2w_setup::fixture(name).unwrap_or_else(|e| panic!("fixture {name}: {e}")))
        .unwrap()
}

#[test]
fn malformed_models_exit_2_with_one_line_and_leave_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let onnx = std::fs::read(m2w_setup::bundled_model()).unwrap();
    let gguf = fixture("smollm2-q4_1");
    let tfl = fixture("palm-detection-lite");
    let mut cases = Vec::new();
    for at in [16, onnx.len() / 3, onnx.len() - 7] {
        cases.push(cut(d, "silero.onnx", &onnx, at));
    }
    for at in [3, 200, onnx.len() / 2] {
        cases.push(flip(d, "silero.onnx", &onnx, at));
    }
    for at in [8, 4096, 1 << 20, gguf.len() / 2] {
        cases.push(cut(d, "smol.gguf", &gguf, at));
    }
    // The tensor count and the first key's length, made absurd.
    let mut g = gguf[..1 << 20].to_vec();
    g[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(raw(d, "count.gguf", g));
    let mut g = gguf[..1 << 20].to_vec();
    g[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
    cases.push(raw(d, "keylen.gguf", g));
    let mut g = gguf.clone();
    g[..4].copy_from_slice(b"GGUX");
    cases.push(raw(d, "magic.gguf", g));
    for at in [7, tfl.len() / 2] {
        cases.push(cut(d, "palm.tflite", &tfl, at));
    }
    let mut t = tfl.clone();
    t[4..8].copy_from_slice(b"XXXX");
    cases.push(raw(d, "ident.tflite", t));
    cases.push(raw(d, "empty.onnx", vec![]));
    cases.push(raw(
        d,
        "noise.safetensors",
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect(),
    ));
    // A header that declares 2^62 bytes of data.
    let mut st =
        b"{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,16]}}"
            .to_vec();
    let mut file = (st.len() as u64).to_le_bytes().to_vec();
    file.append(&mut st);
    file.extend_from_slice(&[0; 16]);
    cases.push(raw(d, "dims.safetensors", file));

    // An output folder each command would replace: it must be the same after every failure.
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"previous output").unwrap();
    let before = snapshot(&out);
    let mut failures = Vec::new();
    let mut tally: BTreeMap<Option<i32>, usize> = BTreeMap::new();
    for c in &cases {
        for cmd in ["inspect", "extract", "reference", "port"] {
            let mut command = m2w();
            command.arg(cmd).arg(&c.file);
            if cmd != "inspect" {
                command.arg("--out").arg(&out);
            }
            let o = command.output().unwrap();
            let code = o.status.code();
            let stderr = String::from_utf8_lossy(&o.stderr);
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
            let what = format!("{cmd} {}", c.file.display());
            *tally.entry(code).or_default() += 1;
            match code {
                Some(2) => {
                    if errors.len() != 1 || !errors[0].contains(&c.file.display().to_string()) {
                        failures.push(format!("{what}: exit 2 but the error is not one line naming the file:\n{stderr}"));
                    }
                    if stderr.contains("panicked") {
                        failures.push(format!("{what}: a panic:\n{stderr}"));
                    }
                }
                // A file that still reads may port and then fail validation (exit 1).
                Some(0) | Some(1) if c.may_read => {}
                other => failures.push(format!("{what}: exit {other:?}\n{stderr}")),
            }
            // A failed run loses or alters nothing. `port` may leave the phases it finished
            // (complete folders: inspect/, weights/) beside what was there, never half of one.
            let now = snapshot(&out);
            let kept = before.iter().all(|(k, v)| now.get(k) == Some(v));
            let changed = if cmd == "port" { !kept } else { now != before };
            if code != Some(0) && changed {
                failures.push(format!("{what}: failed and changed the output folder"));
                std::fs::remove_dir_all(&out).unwrap();
                std::fs::create_dir_all(&out).unwrap();
                std::fs::write(out.join("keep.txt"), b"previous output").unwrap();
            }
            if code != Some(2) && cmd != "inspect" {
                // A readable file replaced the folder: put the previous one back.
                std::fs::remove_dir_all(&out).unwrap();
                std::fs::create_dir_all(&out).unwrap();
                std::fs::write(out.join("keep.txt"), b"previous output").unwrap();
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs:\n{}",
        failures.len(),
        cases.len() * 4,
        failures.join("\n\n")
    );
    eprintln!(
        "{} malformed files x 4 commands: exit codes {tally:?}",
        cases.len()
    );
    assert!(tally.get(&Some(2)).copied().unwrap_or(0) >= 4 * (cases.len() - 3));
}

/// Bad .npy inputs to `reference --input`: truncated, absurd header, wrong dtype, not .npy.
#[test]
fn malformed_npy_inputs_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = d.join("relu.onnx");
    std::fs::write(
        &m,
        model(
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![],
            vec![value_info("x", FLOAT, &[2, 3])],
            vec![value_info("y", FLOAT, &[2, 3])],
            17,
        ),
    )
    .unwrap();
    let npy = m2w_reference::raw_npy;
    let good = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        &[0; 24],
    );
    let cases = [
        ("cut.npy", good[..good.len() - 5].to_vec()),
        (
            "huge.npy",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 3), }",
                &[0; 24],
            ),
        ),
        (
            "int.npy",
            npy(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }",
                &[0; 48],
            ),
        ),
        ("text.npy", b"not a numpy file at all".to_vec()),
        (
            "rank.npy",
            npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
                &[0; 24],
            ),
        ),
    ];
    for (name, bytes) in cases {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = m2w()
            .arg("reference")
            .arg(&m)
            .arg("--out")
            .arg(d.join("ref"))
            .arg("--input")
            .arg(format!("x={}", p.display()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{name}: {stderr}");
        assert!(errors[0].contains(name), "{name}: {}", errors[0]);
        assert!(!d.join("ref").exists());
    }
}

/// Corrupted engine folders through `package`: a plan.json cut short, one naming a dim it
/// does not declare (a fuzz finding, fuzz/regressions/plan/), constants.bin cut short.
/// Each exits 2 naming the file, and the package folder given is left as it was.
#[test]
fn corrupted_engine_folders_are_refused_by_package() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = d.join("port");
    let o = m2w()
        .arg("port")
        .arg(m2w_setup::bundled_model())
        .arg("--out")
        .arg(&port)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan = std::fs::read(port.join("engine/plan.json")).unwrap();
    let undeclared = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions/plan/crash-38cc111d944889c17a02c13c3df7cd56e44522f0"),
    )
    .unwrap();
    let bin = std::fs::read(port.join("engine/constants.bin")).unwrap();
    let out = d.join("pkg");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"previous package").unwrap();
    let before = snapshot(&out);
    for (file, bytes, needle) in [
        ("plan.json", plan[..plan.len() / 2].to_vec(), "plan.json"),
        ("plan.json", undeclared, "does not declare"),
        ("constants.bin", bin[..bin.len() / 3].to_vec(), "constants"),
    ] {
        let engine = d.join("engine-bad");
        let _ = std::fs::remove_dir_all(&engine);
        let copy = Command::new("cp")
            .arg("-r")
            .arg(port.join("engine"))
            .arg(&engine)
            .status()
            .unwrap();
        assert!(copy.success());
        std::fs::write(engine.join(file), &bytes).unwrap();
        let bad_port = d.join("port-bad");
        let _ = std::fs::remove_dir_all(&bad_port);
        std::fs::create_dir_all(&bad_port).unwrap();
        std::fs::rename(&engine, bad_port.join("engine")).unwrap();
        for sub in ["reference", "weights", "inspect"] {
            let _ = Command::new("cp")
                .arg("-r")
                .arg(port.join(sub))
                .arg(bad_port.join(sub))
                .status();
        }
        let o = m2w()
            .arg("package")
            .arg("--port")
            .arg(&bad_port)
            .arg("--name")
            .arg("bad")
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{file} ({needle}): {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{}", errors[0]);
        assert!(
            snapshot(&out) == before,
            "{file}: the package folder changed"
        );
    }
}

/// NaN and infinite weights: the model runs, ONNX Runtime's outputs are NaN, and the port
/// refuses that oracle (exit 2 naming the oracle file and why) instead of passing an engine
/// that computes the same NaN.
#[test]
fn nan_weights_give_a_refused_oracle_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    for (tag, w) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let m = dir.path().join(format!("{tag}.onnx"));
        let weight = m2w_model::onnx::proto::TensorProto {
            name: Some("w".into()),
            dims: vec![4],
            data_type: Some(FLOAT),
            float_data: vec![w; 4],
            ..Default::default()
        };
        std::fs::write(
            &m,
            model(
                vec![node("Add", &["x", "w"], &["y"], vec![])],
                vec![weight],
                vec![value_info("x", FLOAT, &[4])],
                vec![value_info("y", FLOAT, &[4])],
                17,
            ),
        )
        .unwrap();
        let o = m2w()
            .arg("port")
            .arg(&m)
            .arg("--out")
            .arg(dir.path().join(tag))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{tag}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        let why = if w.is_nan() {
            "holds NaN"
        } else {
            "only infinities"
        };
        assert!(
            errors[0].contains(why) && errors[0].contains(".npy"),
            "{}",
            errors[0]
        );
    }
}
