//! The generator's output for the bundled model is snapshot-tested: the same plan gives the
//! same package, byte for byte, and any change to the generated code shows up as a diff.

use std::collections::BTreeMap;

use m2w_engine::DT;

fn silero_plan() -> m2w_engine::Plan {
    let model = m2w_model::Model::open(&m2w_setup::bundled_model()).unwrap();
    let shapes: BTreeMap<String, (Vec<usize>, DT)> = [
        ("input", vec![16, 576]),
        ("h", vec![1, 1, 128]),
        ("c", vec![1, 1, 128]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), (s, DT::F32)))
    .collect();
    let mut plan = m2w_engine::compile(&model, &shapes).unwrap();
    plan.assign_buffers(true);
    plan
}

#[test]
fn engine_ts_snapshot() {
    insta::assert_snapshot!("silero_engine_ts", m2w_package::engine_ts(&silero_plan()));
}

#[test]
fn the_same_engine_folder_gives_the_same_package() {
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("engine");
    m2w_engine::write_engine_dir(&engine, &silero_plan(), &m2w_setup::bundled_model()).unwrap();
    let a = m2w_package::generate(
        &engine,
        "silero-vad-webgpu",
        &dir.path().join("a"),
        &Default::default(),
    )
    .unwrap();
    let b = m2w_package::generate(
        &engine,
        "silero-vad-webgpu",
        &dir.path().join("b"),
        &Default::default(),
    )
    .unwrap();
    for f in &a.files {
        assert_eq!(
            std::fs::read(dir.path().join("a").join(f)).unwrap(),
            std::fs::read(dir.path().join("b").join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(a.files.len(), b.files.len());
    let pkg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("a/package.json")).unwrap()).unwrap();
    assert_eq!(
        pkg["dependencies"],
        serde_json::json!({}),
        "zero runtime dependencies"
    );
    let shaders = std::fs::read_to_string(dir.path().join("a/src/shaders.ts")).unwrap();
    assert_eq!(
        shaders.matches(": `").count(),
        a.kernels,
        "each shader once"
    );
    assert!(
        m2w_package::generate(
            &engine,
            "Bad Name",
            &dir.path().join("c"),
            &Default::default()
        )
        .is_err()
    );
    assert!(!dir.path().join("c").exists());
}

/// The GGUF decoder's package: deterministic, every file present, its config (from the GGUF
/// metadata) snapshot-tested, and the options checked before anything is written.
#[test]
fn the_llm_package_is_deterministic_and_its_config_comes_from_the_gguf() {
    let gguf = m2w_setup::fixture("smollm2-q4_1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = m2w_package::llm::LlmOptions::default();
    let a =
        m2w_package::llm::generate(&gguf, "smollm2-webgpu", &dir.path().join("a"), &opts).unwrap();
    let b =
        m2w_package::llm::generate(&gguf, "smollm2-webgpu", &dir.path().join("b"), &opts).unwrap();
    for f in &a.files {
        let x = std::fs::read(dir.path().join("a").join(f)).unwrap();
        let y = std::fs::read(dir.path().join("b").join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs");
    }
    assert_eq!(a.files, b.files);
    for f in [
        "src/index.ts",
        "src/prefill.ts",
        "src/decode.ts",
        "src/decode_fallback.ts",
        "src/tokenizer.ts",
        "src/runtime.ts",
        "weights/tokenizer.json",
        "tests/generate.spec.ts",
        "index.html",
    ] {
        assert!(a.files.iter().any(|x| x == f), "{f} missing");
    }
    let config = std::fs::read_to_string(dir.path().join("a/src/config.ts")).unwrap();
    insta::assert_snapshot!("smollm2_config_ts", config);
    let bad = m2w_package::llm::LlmOptions {
        prefill_chunk: 64,
        context: 32,
        ..Default::default()
    };
    let c = dir.path().join("c");
    assert!(m2w_package::llm::generate(&gguf, "smollm2-webgpu", &c, &bad).is_err());
    assert!(!c.exists(), "nothing written on bad options");
}
