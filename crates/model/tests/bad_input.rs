//! Every kind of bad input gives one clear error naming the file and what is wrong; none
//! panics. The bad files are made from real fixtures (truncated, corrupted, re-pointed).

use std::path::{Path, PathBuf};

use m2w_model::Model;
use m2w_model::onnx::{decode, encode, proto};

fn fixture(name: &str) -> PathBuf {
    m2w_setup::fixture(name)
        .unwrap_or_else(|e| panic!("fixture {name}: {e} (run `cargo xtask fixtures`)"))
}

/// Opens `path`, expecting an error that names the file and contains `needle`.
fn expect_error(path: &Path, needle: &str) -> String {
    let result = std::panic::catch_unwind(|| Model::open(path).map(|_| ()));
    let err = match result {
        Ok(Ok(())) => panic!(
            "{} opened, expected an error containing {needle:?}",
            path.display()
        ),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("{} made the reader panic", path.display()),
    };
    assert!(
        err.contains(&path.display().to_string()),
        "error does not name the file: {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    err
}

/// Deterministic bytes that are no model at all.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn truncated_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = std::fs::read(fixture("silero-vad-v6")).unwrap();
    for cut in [onnx.len() / 10, onnx.len() / 2, onnx.len() - 1] {
        let p = write(dir.path(), &format!("cut{cut}.onnx"), &onnx[..cut]);
        expect_error(&p, "not a valid ONNX model");
    }
    let gguf = std::fs::read(fixture("smollm2-q4_1")).unwrap();
    let p = write(dir.path(), "header_cut.gguf", &gguf[..4096]);
    expect_error(&p, "not a valid GGUF file");
    let p = write(dir.path(), "data_cut.gguf", &gguf[..gguf.len() / 2]);
    expect_error(&p, "runs past the end of the file");
    let st = std::fs::read(fixture("minilm-safetensors")).unwrap();
    let p = write(dir.path(), "cut.safetensors", &st[..st.len() / 2]);
    expect_error(&p, "not a valid safetensors file");
}

#[test]
fn wrong_magic_and_random_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..4 {
        let bytes = noise(64 * 1024, seed);
        expect_error(
            &write(dir.path(), &format!("r{seed}.onnx"), &bytes),
            "not a valid ONNX model",
        );
        expect_error(
            &write(dir.path(), &format!("r{seed}.safetensors"), &bytes),
            "not a valid safetensors file",
        );
        let mut g = b"GGUF".to_vec();
        g.extend_from_slice(&bytes);
        expect_error(
            &write(dir.path(), &format!("r{seed}.gguf"), &g),
            "not a valid GGUF file",
        );
    }
    let mut gguf = std::fs::read(fixture("smollm2-q4_1")).unwrap()[..1 << 20].to_vec();
    gguf[..4].copy_from_slice(b"GGUX");
    expect_error(
        &write(dir.path(), "magic.gguf", &gguf),
        "not a valid GGUF file",
    );
    expect_error(&write(dir.path(), "empty.onnx", b""), "file is empty");
    expect_error(
        &write(dir.path(), "model.bin", b"xxxx"),
        "unknown model format",
    );
    // Detected by its identifier, whatever the name; 8 bytes are no flatbuffer.
    expect_error(
        &write(dir.path(), "m.bin", b"xxxxTFL3"),
        "not a valid TFLite model",
    );
    expect_error(
        &write(dir.path(), "m.tflite", b"xxxxTFL4"),
        "no TFL3 identifier",
    );
}

/// A real TFLite file truncated at several points, with its root offset pointing past the
/// end, and with bytes flipped: an error naming the file, never a panic.
#[test]
fn broken_tflite_files_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("palm-detection-lite")).unwrap();
    for cut in [9, 64, 4096, bytes.len() / 2, bytes.len() - 7] {
        let p = write(dir.path(), &format!("cut{cut}.tflite"), &bytes[..cut]);
        expect_error(&p, "not a valid TFLite model");
    }
    let mut root = bytes.clone();
    root[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_error(
        &write(dir.path(), "root.tflite", &root),
        "not a valid TFLite model",
    );
    // Flipped bytes either still read (a flatbuffer has slack) or give one error line.
    for (k, at) in [100usize, 1000, 20_000, 300_000, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0xff;
        let p = write(dir.path(), &format!("flip{k}.tflite"), &flipped);
        let result = std::panic::catch_unwind(|| Model::open(&p).map(|_| ()));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => assert!(!e.to_string().contains('\n'), "{e}"),
            Err(_) => panic!("flipping byte {at} made the reader panic"),
        }
    }
}

fn silero_proto() -> proto::ModelProto {
    decode(&fixture("silero-vad-v6")).unwrap()
}

#[test]
fn absurd_dims_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = silero_proto();
    m.graph.as_mut().unwrap().initializer[1].dims = vec![1 << 40, 1 << 40, 1 << 40];
    let err = expect_error(&write(dir.path(), "huge.onnx", &encode(&m)), "absurd dims");
    assert!(err.contains("encoder.conv_layers.0.weight"), "{err}");

    let mut m = silero_proto();
    m.graph.as_mut().unwrap().initializer[1].dims = vec![128, 129, 4];
    expect_error(
        &write(dir.path(), "mismatch.onnx", &encode(&m)),
        "raw_data holds 198144 bytes, dims need 264192",
    );

    let mut m = silero_proto();
    m.graph.as_mut().unwrap().initializer[1].dims = vec![-1, 3];
    expect_error(
        &write(dir.path(), "negative.onnx", &encode(&m)),
        "negative dimension",
    );

    // safetensors: a header whose offsets run past the data.
    let header = br#"{"w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&[0u8; 64]);
    expect_error(
        &write(dir.path(), "offsets.safetensors", &st),
        "not a valid safetensors file",
    );
}

/// Moves every raw initializer of the silero model into `weights.data` beside it.
fn to_external(dir: &Path, location: &str) -> (PathBuf, PathBuf) {
    let mut m = silero_proto();
    let mut data = Vec::new();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        let raw = t.raw_data.take().unwrap();
        while data.len() % 64 != 0 {
            data.push(0);
        }
        let kv = |k: &str, v: String| proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            kv("location", location.into()),
            kv("offset", data.len().to_string()),
            kv("length", raw.len().to_string()),
        ];
        t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
        data.extend_from_slice(&raw);
    }
    let model = write(dir, "external.onnx", &encode(&m));
    let data_path = write(dir, "weights.data", &data);
    (model, data_path)
}

#[test]
fn external_data_is_read_like_embedded_data() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, _) = to_external(dir.path(), "weights.data");
    let ext = Model::open(&model_path).unwrap();
    let emb = Model::open(&fixture("silero-vad-v6")).unwrap();
    assert_eq!(ext.tensors.len(), emb.tensors.len());
    for (a, b) in ext.tensors.iter().zip(&emb.tensors) {
        assert_eq!((&a.name, &a.shape, a.dtype), (&b.name, &b.shape, b.dtype));
        assert!(matches!(a.storage, m2w_model::Storage::ExternalData { .. }));
        assert_eq!(
            ext.read_raw(a).unwrap().bytes,
            emb.read_raw(b).unwrap().bytes,
            "{}",
            a.name
        );
    }
}

/// A port's stamps key on the graph and its external data: new weights beside an unchanged
/// graph change the sources' sha256, not the file's.
#[test]
fn new_external_weights_change_the_sources_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, data_path) = to_external(dir.path(), "weights.data");
    let before = Model::open(&model_path).unwrap();
    let (file, sources) = (
        before.file_sha256().unwrap(),
        before.sources_sha256().unwrap(),
    );
    assert_ne!(file, sources);
    let mut data = std::fs::read(&data_path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 1;
    std::fs::write(&data_path, data).unwrap();
    let after = Model::open(&model_path).unwrap();
    assert_eq!(after.file_sha256().unwrap(), file);
    assert_ne!(after.sources_sha256().unwrap(), sources);
    let embedded = Model::open(&fixture("silero-vad-v6")).unwrap();
    assert_eq!(
        embedded.sources_sha256().unwrap(),
        embedded.file_sha256().unwrap()
    );
}

#[test]
fn missing_short_or_escaping_external_data_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, data_path) = to_external(dir.path(), "weights.data");
    let full = std::fs::read(&data_path).unwrap();
    std::fs::write(&data_path, &full[..full.len() / 2]).unwrap();
    expect_error(&model_path, "runs past the end of");
    std::fs::remove_file(&data_path).unwrap();
    let err = expect_error(&model_path, "is missing or unreadable");
    assert!(err.contains("weights.data"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let (model_path, _) = to_external(dir.path(), "../../etc/passwd");
    expect_error(
        &model_path,
        "must be a relative path inside the model's folder",
    );
}

/// A one-tensor TFLite model whose weight (shape `shape`, `stored` f32 values) carries
/// `sparsity`.
fn sparse_model(
    shape: &[i32],
    stored: usize,
    sparsity: m2w_model::tflite::schema::SparsityParameters,
) -> Vec<u8> {
    use m2w_model::tflite::schema as tfl;
    let model = tfl::Model {
        version: 3,
        subgraphs: Some(vec![tfl::SubGraph {
            tensors: Some(vec![tfl::Tensor {
                shape: Some(shape.to_vec()),
                buffer: 1,
                name: Some("w".into()),
                sparsity: Some(Box::new(sparsity)),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
        buffers: Some(vec![
            tfl::Buffer::default(),
            tfl::Buffer {
                data: Some(vec![0; stored * 4]),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let bytes = planus::Builder::new().finish(&model, None).to_vec();
    // The file identifier after the root offset (planus 1.3 would write it before).
    let root = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let mut out = (root + 16).to_le_bytes().to_vec();
    out.extend_from_slice(b"TFL3");
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&bytes[4..]);
    out
}

/// Sparse weights whose metadata lies (a traversal order that is no permutation, a block
/// level of a missing dim, a dense size past any memory, negative indices, too few stored
/// values) are refused with one line naming the weight; none panics or allocates the
/// claimed size.
#[test]
fn hostile_sparse_weights_are_refused_without_a_panic() {
    use m2w_model::tflite::schema as tfl;
    let dir = tempfile::tempdir().unwrap();
    let dense = |n: i32| tfl::DimensionMetadata {
        format: tfl::DimensionType::Dense,
        dense_size: n,
        ..Default::default()
    };
    let ints = |v: &[i32]| {
        Some(tfl::SparseIndexVector::Int32Vector(Box::new(
            tfl::Int32Vector {
                values: Some(v.to_vec()),
            },
        )))
    };
    let csr = |segments: &[i32], indices: &[i32]| tfl::DimensionMetadata {
        format: tfl::DimensionType::SparseCsr,
        array_segments: ints(segments),
        array_indices: ints(indices),
        ..Default::default()
    };
    let sparsity = |order: &[i32], block_map: &[i32], levels: Vec<tfl::DimensionMetadata>| {
        tfl::SparsityParameters {
            traversal_order: Some(order.to_vec()),
            block_map: Some(block_map.to_vec()),
            dim_metadata: Some(levels),
        }
    };
    let cases = [
        // Rank 1, the block level listed first.
        (
            "order",
            vec![4],
            4,
            sparsity(&[1, 0], &[0], vec![dense(2), dense(2)]),
        ),
        // 2^62 elements.
        (
            "huge",
            vec![1 << 30, 1 << 30, 4],
            1,
            sparsity(&[0, 1, 2], &[], vec![dense(1), dense(1), dense(1)]),
        ),
        // A negative index.
        (
            "negative",
            vec![2, 3],
            1,
            sparsity(&[0, 1], &[], vec![dense(2), csr(&[0, 1, 1], &[-1])]),
        ),
        // Indices naming more values than are stored.
        (
            "short",
            vec![2, 3],
            1,
            sparsity(&[0, 1], &[], vec![dense(2), csr(&[0, 2, 3], &[0, 1, 2])]),
        ),
        // A segment past its array.
        (
            "segment",
            vec![2, 3],
            2,
            sparsity(&[0, 1], &[], vec![dense(2), csr(&[0, 2], &[0, 1])]),
        ),
    ];
    for (case, shape, stored, sp) in cases {
        let p = dir.path().join(format!("{case}.tflite"));
        std::fs::write(&p, sparse_model(&shape, stored, sp)).unwrap();
        let err = expect_error(&p, "sparse weight 'w'");
        assert_eq!(err.lines().count(), 1, "{case}: {err}");
    }
}
