//! The reference a package's own `npm test` runs against: the port's oracle files copied
//! into `tests/reference/` (not published: package.json's `files` leaves tests out), so
//! that `npm install && npm test` inside the package proves it with no m2w checkout.
//!
//! - a graph's reference (index.json and its .npy files): every checkpoint when they total
//!   at most [`BUNDLE_BYTES`], else the inputs and the graph's outputs only (the end-to-end
//!   check; `m2w package-test` against the port still checks every checkpoint);
//! - a GGUF decoder's: the tokenizer cases, chat-template cases and greedy generation.

use std::path::Path;

use crate::PackageError;

/// The most reference bytes bundled whole (32 MiB).
pub const BUNDLE_BYTES: u64 = 32 << 20;

/// What was bundled.
#[derive(Debug, PartialEq)]
pub enum Bundled {
    /// Every checkpoint of the reference (count).
    Checkpoints(usize),
    /// Only the graph outputs (count), the whole reference being larger than the cap.
    OutputsOnly(usize),
    /// A decoder's tokenizer, chat and generation cases.
    Generation,
    /// Nothing this package's test reads (pipelines and hand trackers take their oracles
    /// from `m2w package-test`).
    Nothing,
}

fn io(p: &Path, e: std::io::Error) -> PackageError {
    PackageError::Input(format!("{}: {e}", p.display()))
}

/// Copies the reference folder `reference` (PORT/reference) into `package/tests/reference`
/// (replaced whole). `extra` files (name, bytes) are written beside it.
pub fn bundle_reference(
    reference: &Path,
    package: &Path,
    extra: &[(&str, Vec<u8>)],
) -> Result<Bundled, PackageError> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let read = |f: &str| std::fs::read(reference.join(f)).map_err(|e| io(&reference.join(f), e));
    let bundled = if reference.join("index.json").is_file() {
        let mut index: serde_json::Value = serde_json::from_slice(&read("index.json")?)
            .map_err(|e| PackageError::Input(format!("{}/index.json: {e}", reference.display())))?;
        let size = |v: &serde_json::Value| {
            v["file"]
                .as_str()
                .and_then(|f| std::fs::metadata(reference.join(f)).ok())
                .map_or(0, |m| m.len())
        };
        let list = |k: &str| index[k].as_array().cloned().unwrap_or_default();
        let total: u64 = list("inputs")
            .iter()
            .chain(&list("checkpoints"))
            .map(size)
            .sum();
        let all = list("checkpoints").len();
        let kept: Vec<serde_json::Value> = if total <= BUNDLE_BYTES {
            list("checkpoints")
        } else {
            list("checkpoints")
                .into_iter()
                .filter(|c| c["graph_output"].as_bool() == Some(true))
                .collect()
        };
        for v in list("inputs").iter().chain(&kept) {
            if let Some(f) = v["file"].as_str() {
                files.push((f.to_string(), read(f)?));
            }
        }
        let bundled = if kept.len() == all {
            Bundled::Checkpoints(all)
        } else {
            Bundled::OutputsOnly(kept.len())
        };
        index["checkpoints"] = kept.into();
        files.push((
            "index.json".into(),
            serde_json::to_vec_pretty(&index).expect("json"),
        ));
        bundled
    } else if reference.join("generation.json").is_file() {
        for f in ["generation.json", "tokenizer-cases.json", "chat-cases.json"] {
            if reference.join(f).is_file() {
                files.push((f.into(), read(f)?));
            }
        }
        Bundled::Generation
    } else {
        return Ok(Bundled::Nothing);
    };
    files.extend(extra.iter().map(|(n, b)| (n.to_string(), b.clone())));
    let dest = package.join("tests").join("reference");
    let tmp = package.join("tests").join(".reference.partial");
    let _ = std::fs::remove_dir_all(&tmp);
    for (name, bytes) in &files {
        let p = tmp.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
        }
        std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
    Ok(bundled)
}

#[cfg(test)]
mod tests {
    use super::{Bundled, bundle_reference};

    fn reference(dir: &std::path::Path, bytes: usize) {
        std::fs::create_dir_all(dir.join("inputs")).unwrap();
        std::fs::write(dir.join("inputs/x.npy"), vec![1u8; 8]).unwrap();
        std::fs::write(dir.join("0.npy"), vec![2u8; bytes]).unwrap();
        std::fs::write(dir.join("1.npy"), vec![3u8; 8]).unwrap();
        let index = serde_json::json!({
            "inputs": [{"name": "x", "file": "inputs/x.npy"}],
            "checkpoints": [
                {"output": "a", "file": "0.npy", "graph_output": false},
                {"output": "b", "file": "1.npy", "graph_output": true},
            ],
        });
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    }

    #[test]
    fn a_small_reference_goes_whole_and_a_large_one_keeps_its_outputs() {
        let t = tempfile::tempdir().unwrap();
        reference(&t.path().join("small"), 16);
        let pkg = t.path().join("pkg");
        let got = bundle_reference(&t.path().join("small"), &pkg, &[]).unwrap();
        assert_eq!(got, Bundled::Checkpoints(2));
        assert!(pkg.join("tests/reference/0.npy").is_file());
        assert!(pkg.join("tests/reference/inputs/x.npy").is_file());

        reference(&t.path().join("large"), super::BUNDLE_BYTES as usize + 1);
        let got = bundle_reference(&t.path().join("large"), &pkg, &[]).unwrap();
        assert_eq!(got, Bundled::OutputsOnly(1));
        assert!(
            !pkg.join("tests/reference/0.npy").exists(),
            "the old bundle is replaced"
        );
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(pkg.join("tests/reference/index.json")).unwrap())
                .unwrap();
        assert_eq!(index["checkpoints"].as_array().unwrap().len(), 1);
        assert_eq!(index["checkpoints"][0]["output"], "b");
    }
}
