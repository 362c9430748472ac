//! extract on every real fixture: `verify` passes, two runs give identical bytes, and the
//! values agree with oracles that share no code with m2w (numpy's dequantization of the
//! MiniLM int8 weights; the fp32 safetensors release of the same model; candle's GGUF
//! dequantizer inside verify).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use m2w_extract::{Options, Precision, extract, read_manifest, verify};

fn fixture(name: &str) -> PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

fn extract_and_verify(name: &str, opts: &Options) -> (tempfile::TempDir, m2w_extract::Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("weights");
    let manifest = extract(&fixture(name), &out, opts).unwrap();
    let report = verify(&fixture(name), &out).unwrap();
    assert!(report.failures.is_empty(), "{name}: {:#?}", report.failures);
    assert_eq!(report.checked, manifest.tensors.len());
    for t in &manifest.tensors {
        assert_eq!(
            t.offset % 4,
            0,
            "{}: offset {} not 4-byte aligned",
            t.key,
            t.offset
        );
    }
    (dir, manifest)
}

fn blob(dir: &Path, m: &m2w_extract::Manifest, key: &str) -> Vec<u8> {
    let t = m
        .tensors
        .iter()
        .find(|t| t.key == key)
        .unwrap_or_else(|| panic!("no {key}"));
    let bytes = std::fs::read(dir.join("weights").join(&t.file)).unwrap();
    bytes[t.offset as usize..(t.offset + t.length) as usize].to_vec()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn every_fixture_extracts_and_verifies() {
    for name in [
        "silero-vad-v6",
        "silero-vad-if",
        "silero-vad-half",
        "ppocr-det",
        "minilm-safetensors",
    ] {
        let (_dir, m) = extract_and_verify(name, &Options::default());
        assert!(!m.tensors.is_empty(), "{name}");
    }
}

#[test]
fn minilm_int8_dequantization_matches_numpy_bit_for_bit() {
    let (dir, m) = extract_and_verify("minilm-int8", &Options::default());
    #[derive(serde::Deserialize)]
    struct Expected {
        sha256_f32: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(format!(
        "{}/tests/expected/minilm-int8-dequant.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let expected: Expected = serde_json::from_str(&text).unwrap();
    assert_eq!(expected.sha256_f32.len(), 38);
    for (key, sha) in &expected.sha256_f32 {
        let t = m
            .tensors
            .iter()
            .find(|t| &t.key == key)
            .unwrap_or_else(|| panic!("{key} not extracted"));
        assert_eq!(t.gpu_dtype, "f32");
        assert!(t.transform.starts_with("dequantize"), "{}", t.transform);
        assert_eq!(
            &m2w_model::io::sha256_bytes(&blob(dir.path(), &m, key)),
            sha,
            "{key} differs from numpy"
        );
    }
    // The int8 tensors and their scales are folded, not stored a second time.
    assert!(
        m.tensors
            .iter()
            .all(|t| !t.key.ends_with("_q") && !t.key.ends_with("_scale"))
    );
}

#[test]
fn minilm_int8_embeddings_are_within_half_a_step_of_the_fp32_release() {
    // The int8 model quantizes the fp32 weights of the safetensors release per row; its
    // dequantized rows must lie within half a quantization step of the originals.
    let (dir, m) = extract_and_verify("minilm-int8", &Options::default());
    let st = m2w_model::Model::open(&fixture("minilm-safetensors")).unwrap();
    let fp32 = st
        .read_f32(st.tensor("embeddings.word_embeddings.weight").unwrap())
        .unwrap();
    let deq = f32s(&blob(
        dir.path(),
        &m,
        "inner.embeddings.word_embeddings.weight",
    ));
    assert_eq!(deq.len(), fp32.len());
    let int8 = m2w_model::Model::open(&fixture("minilm-int8")).unwrap();
    let scales = int8
        .read_f32(
            int8.tensor("inner.embeddings.word_embeddings.weight_scale")
                .unwrap(),
        )
        .unwrap();
    let mut worst = 0f32;
    for (row, s) in scales.iter().enumerate() {
        for c in 0..384 {
            let i = row * 384 + c;
            let err = (deq[i] - fp32[i]).abs();
            assert!(
                err <= s * 0.5 + 1e-6,
                "row {row} col {c}: {} vs {} (scale {s})",
                deq[i],
                fp32[i]
            );
            worst = worst.max(err / s);
        }
    }
    assert!(
        worst > 0.4,
        "quantization error should reach almost half a step (got {worst})"
    );
}

#[test]
fn smollm2_gguf_blocks_are_repacked_and_match_candle() {
    let (dir, m) = extract_and_verify("smollm2-q4_1", &Options::default());
    let by: BTreeMap<&str, usize> = m.tensors.iter().fold(BTreeMap::new(), |mut acc, t| {
        *acc.entry(t.gpu_dtype.as_str()).or_default() += 1;
        acc
    });
    assert_eq!(by.get("q4_1"), Some(&210));
    assert_eq!(by.get("q8_0"), Some(&1));
    assert_eq!(by.get("f32"), Some(&61));
    let emb = m
        .tensors
        .iter()
        .find(|t| t.key == "token_embd.weight")
        .unwrap();
    assert_eq!(
        emb.length,
        49152 * 576 / 32 * 36,
        "Q8_0: 9 u32 words per 32 weights"
    );
    // One row checked here by hand against candle (verify already checked all values).
    let model = m2w_model::Model::open(&fixture("smollm2-q4_1")).unwrap();
    let q = blob(dir.path(), &m, "blk.0.attn_q.weight");
    let ours = m2w_extract::unpack_q4_1(&q[..576 / 32 * 24]);
    let candle = model
        .read_f32(model.tensor("blk.0.attn_q.weight").unwrap())
        .unwrap();
    assert_eq!(&ours[..], &candle[..576]);
}

#[test]
fn two_runs_give_identical_bytes() {
    for name in ["ppocr-det", "smollm2-q4_1"] {
        let (a, ma) = extract_and_verify(name, &Options::default());
        let (b, mb) = extract_and_verify(name, &Options::default());
        assert_eq!(ma, mb, "{name}: manifests differ");
        let read = |d: &Path, f: &str| std::fs::read(d.join("weights").join(f)).unwrap();
        assert_eq!(
            read(a.path(), "manifest.json"),
            read(b.path(), "manifest.json")
        );
        for f in &ma.files {
            assert_eq!(
                read(a.path(), &f.name),
                read(b.path(), &f.name),
                "{name}: {} differs",
                f.name
            );
        }
    }
}

#[test]
fn shards_split_at_tensor_boundaries_and_verify() {
    let limit = 4 << 20;
    let (dir, m) = extract_and_verify(
        "minilm-int8",
        &Options {
            shard_bytes: Some(limit),
            precision: Precision::F32,
        },
    );
    assert!(m.files.len() > 10, "{} shards", m.files.len());
    for f in &m.files {
        let largest_single = m
            .tensors
            .iter()
            .filter(|t| t.file == f.name)
            .map(|t| t.length)
            .max()
            .unwrap_or(0);
        assert!(
            f.bytes <= limit || largest_single > limit,
            "{} is {} bytes",
            f.name,
            f.bytes
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("weights").join(&f.name))
                .unwrap()
                .len(),
            f.bytes
        );
    }
}

#[test]
fn f16_precision_halves_float_weights_and_verifies() {
    let (_d32, m32) = extract_and_verify("silero-vad-v6", &Options::default());
    let (_d16, m16) = extract_and_verify(
        "silero-vad-v6",
        &Options {
            shard_bytes: None,
            precision: Precision::F16,
        },
    );
    let t = m16
        .tensors
        .iter()
        .find(|t| t.key == "encoder.conv_layers.0.weight")
        .unwrap();
    assert_eq!(t.gpu_dtype, "f16");
    let t32 = m32
        .tensors
        .iter()
        .find(|t| t.key == "encoder.conv_layers.0.weight")
        .unwrap();
    assert_eq!(t.length * 2, t32.length);
}

#[test]
fn f16_weights_widen_to_f32_or_stay_f16() {
    // No fixture ONNX stores f16 weights, so the real silero weights are rewritten as f16
    // initializers (through the same prost types) and extracted both ways.
    let dir = tempfile::tempdir().unwrap();
    let mut proto = m2w_model::onnx::decode(&fixture("silero-vad-v6")).unwrap();
    for t in &mut proto.graph.as_mut().unwrap().initializer {
        if t.data_type == Some(1) {
            let raw = t.raw_data.take().unwrap();
            let halves: Vec<u8> = raw
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            t.raw_data = Some(halves);
            t.data_type = Some(10);
        }
    }
    let model = dir.path().join("half.onnx");
    std::fs::write(&model, m2w_model::onnx::encode(&proto)).unwrap();
    for (precision, gpu, transform) in [
        (Precision::F32, "f32", "f16 -> f32"),
        (Precision::F16, "f16", "none"),
    ] {
        let out = dir.path().join(gpu);
        let m = extract(
            &model,
            &out,
            &Options {
                shard_bytes: None,
                precision,
            },
        )
        .unwrap();
        let r = verify(&model, &out).unwrap();
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        let t = m
            .tensors
            .iter()
            .find(|t| t.key == "encoder.conv_layers.0.weight")
            .unwrap();
        assert_eq!(
            (
                t.source_dtype.as_str(),
                t.gpu_dtype.as_str(),
                t.transform.as_str()
            ),
            ("f16", gpu, transform)
        );
    }
}

#[test]
fn identical_tensors_are_stored_once() {
    let (_dir, m) = extract_and_verify("silero-vad-if", &Options::default());
    let aliases: Vec<_> = m.tensors.iter().filter(|t| t.alias_of.is_some()).collect();
    assert!(!aliases.is_empty());
    for a in aliases {
        let canon = m
            .tensors
            .iter()
            .find(|t| Some(&t.key) == a.alias_of.as_ref())
            .unwrap();
        assert_eq!(
            (&a.file, a.offset, a.length),
            (&canon.file, canon.offset, canon.length)
        );
    }
}

#[test]
fn verify_catches_a_corrupted_blob() {
    let (dir, m) = extract_and_verify("silero-vad-v6", &Options::default());
    let t = m
        .tensors
        .iter()
        .find(|t| t.key == "decoder.conv1d.weight")
        .unwrap();
    let p = dir.path().join("weights").join(&t.file);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[t.offset as usize + 8] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    let report = verify(&fixture("silero-vad-v6"), &dir.path().join("weights")).unwrap();
    assert!(
        report.failures.iter().any(|f| f.contains("sha256")),
        "{:?}",
        report.failures
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.starts_with("decoder.conv1d.weight: value 2")),
        "{:?}",
        report.failures
    );
    assert!(read_manifest(&dir.path().join("weights")).is_ok());
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.onnx");
    let good = std::fs::read(fixture("silero-vad-v6")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let out = dir.path().join("out");
    let err = extract(&bad, &out, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.onnx") && err.contains("not a valid ONNX model"),
        "{err}"
    );
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("bad.onnx")],
        "nothing half-written"
    );

    // A previous good output survives a failed re-run untouched.
    extract(&fixture("silero-vad-v6"), &out, &Options::default()).unwrap();
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    assert!(extract(&bad, &out, &Options::default()).is_err());
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
}
