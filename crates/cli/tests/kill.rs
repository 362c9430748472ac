//! Nothing is lost on `kill -9` (issue 19): `extract` and `port` are killed with SIGKILL at
//! random moments while they rewrite an existing output, and every time the previous output
//! is found whole; the next run cleans what the killed ones left beside it.
//!
//! "Whole" is checked against the output of a complete run: the same files, every JSON file
//! parses, every .npy file parses and, for `extract` (deterministic), the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn m2w() -> Command {
    Command::new(env!("CARGO_BIN_EXE_m2w"))
}

/// Every file under `dir`, relative, with its sha256.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            // A killed run's staging folder (`.PHASE.partial-PID`, inside a port folder) is
            // not part of the output; the next run removes it (checked at the end).
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".partial-") || name.contains(".old-") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    m2w_model::io::sha256_bytes(&bytes),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The files of `dir` read back: JSON parses, .npy parses.
fn readable(dir: &Path, files: &BTreeMap<PathBuf, String>) -> Result<(), String> {
    for f in files.keys() {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        match p.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Some("npy") => {
                m2w_reference::HostTensor::from_npy(&bytes)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Leftovers of killed runs beside the outputs under `dir` (staging and old copies).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".partial-") || name.contains(".old-") {
                v.push(e.path().display().to_string());
            } else if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    v
}

/// A small deterministic generator (the moments are printed with the seed to replay them).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs `cmd` and kills it with SIGKILL after `after` (if it is still running); returns
/// whether the kill landed before it finished.
fn kill_after(mut cmd: Command, after: Duration) -> bool {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
    killed
}

/// Kills `args` (which rewrites `out`) at 10 moments spread over one run's duration and
/// checks `check(out)` after each; then runs it once more to completion and requires the
/// leftovers of the killed runs to be gone.
fn kill_trials(
    what: &str,
    args: &dyn Fn(usize) -> Command,
    out: &Path,
    check: &dyn Fn(&Path) -> Result<(), String>,
) {
    let t0 = Instant::now();
    let status = args(0).status().unwrap();
    assert!(status.success(), "{what}: the full run failed");
    let full = t0.elapsed();
    check(out).unwrap_or_else(|e| panic!("{what} after a full run: {e}"));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let mut landed = 0;
    for trial in 1..=10 {
        // Within the first 80% of a run: later runs can be faster than the first (warm
        // caches), and a kill after the end tests nothing.
        let at = full.mul_f64(0.8 * rng.next());
        if kill_after(args(trial), at) {
            landed += 1;
        }
        check(out).unwrap_or_else(|e| {
            panic!("{what}: killed at {at:?} (trial {trial}, seed {seed}): the previous output is not whole: {e}")
        });
    }
    eprintln!("{what}: {landed} of 10 kills landed mid-run (one run takes {full:?}; seed {seed})");
    assert!(landed >= 3, "{what}: only {landed} kills landed mid-run");
    assert!(args(11).status().unwrap().success());
    check(out).unwrap();
    let left = leftovers(out.parent().unwrap());
    assert!(
        left.is_empty(),
        "{what}: left behind after a clean run: {left:?}"
    );
}

#[test]
fn extract_killed_at_random_moments_leaves_the_previous_output_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weights");
    // SmolLM2 (98 MB of GGUF, 107 MB extracted): a run long enough for the kills to land
    // while the blob is being written.
    let model =
        m2w_setup::fixture("smollm2-q4_1").expect("fixture smollm2-q4_1 (cargo xtask fixtures)");
    let args = |_: usize| {
        let mut c = m2w();
        c.arg("extract").arg(&model).arg("--out").arg(&out);
        c
    };
    assert!(args(0).status().unwrap().success());
    let before = tree(&out);
    assert!(!before.is_empty());
    kill_trials("extract", &args, &out, &|o: &Path| {
        let now = tree(o);
        if now == before {
            Ok(())
        } else {
            Err(format!(
                "{} files now, {} before, or different bytes",
                now.len(),
                before.len()
            ))
        }
    });
}

#[test]
fn port_killed_at_random_moments_leaves_every_phase_folder_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("port");
    let model = m2w_setup::bundled_model();
    // Each trial changes the reference input `h`, so the reference, engine and validate
    // phases are redone and the kill lands while they rewrite their folders.
    let args = |trial: usize| {
        let mut c = m2w();
        c.arg("port")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .arg("--value")
            .arg(format!("h={}", trial as f64 * 0.01));
        c
    };
    assert!(args(0).status().unwrap().success());
    // A phase's stamp (`.m2w-stamp`, "this folder is finished") is written after its folder
    // is swapped in: a kill in between leaves a whole folder without it, which the next run
    // redoes. Stamps are left out of the comparison; the final clean run has them all.
    let unstamped = |t: BTreeMap<PathBuf, String>| -> BTreeMap<PathBuf, String> {
        t.into_iter()
            .filter(|(p, _)| !p.ends_with(".m2w-stamp"))
            .collect()
    };
    let names: Vec<PathBuf> = unstamped(tree(&out)).into_keys().collect();
    kill_trials("port", &args, &out, &|o: &Path| {
        let now = unstamped(tree(o));
        let now_names: Vec<&PathBuf> = now.keys().collect();
        if now_names != names.iter().collect::<Vec<_>>() {
            let missing: Vec<&PathBuf> = names.iter().filter(|n| !now.contains_key(*n)).collect();
            let extra: Vec<&&PathBuf> = now_names.iter().filter(|n| !names.contains(n)).collect();
            return Err(format!(
                "files differ: {} now, {} after a full run; missing {missing:?}, extra {extra:?}",
                now.len(),
                names.len()
            ));
        }
        readable(o, &now)
    });
}
