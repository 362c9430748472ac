//! com.microsoft GatherBlockQuantized (quantized embeddings in onnxruntime-genai and
//! transformers.js exports) against ONNX Runtime: small models with uint8 tables holding
//! 4-bit pairs (with and without packed zero points), 8-bit values and int4 values, run
//! through ORT and the engine and compared.

use m2w_engine::gpu::Gpu;
use m2w_model::onnx::proto;
use m2w_model::onnx_build::{FLOAT, INT64, attr_int, node, value_info};
use m2w_validate::{Options, compile_for, validate};

const UINT8: i32 = 2;
const INT4: i32 = 22;

fn tensor(name: &str, dtype: i32, dims: &[i64], raw: Vec<u8>) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// Deterministic bytes.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed * 97)) >> 7) as u8)
        .collect()
}

fn scales(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (0.01f32 + 0.003 * (i % 7) as f32).to_le_bytes())
        .collect()
}

#[test]
fn gather_block_quantized_matches_onnx_runtime() {
    let (rows, k, block) = (10usize, 64usize, 16usize);
    let blocks = k / block;
    // (label, data dtype, bits, data bytes, data dims, zero points)
    type Case = (
        &'static str,
        i32,
        i64,
        Vec<u8>,
        Vec<i64>,
        Option<(i32, Vec<u8>, Vec<i64>)>,
    );
    let cases: Vec<Case> = vec![
        (
            "uint8 4-bit pairs, default zero point",
            UINT8,
            4,
            bytes(rows * k / 2, 1),
            vec![rows as i64, (k / 2) as i64],
            None,
        ),
        (
            "uint8 4-bit pairs, packed zero points",
            UINT8,
            4,
            bytes(rows * k / 2, 2),
            vec![rows as i64, (k / 2) as i64],
            Some((
                UINT8,
                bytes(rows * blocks / 2, 3),
                vec![rows as i64, (blocks / 2) as i64],
            )),
        ),
        (
            "uint8 8-bit values, zero points",
            UINT8,
            8,
            bytes(rows * k, 5),
            vec![rows as i64, k as i64],
            Some((
                UINT8,
                bytes(rows * blocks, 6),
                vec![rows as i64, blocks as i64],
            )),
        ),
        (
            "int4 values",
            INT4,
            4,
            bytes(rows * k / 2, 4),
            vec![rows as i64, k as i64],
            None,
        ),
    ];
    let gpu = Gpu::new().unwrap();
    let lib = m2w_setup::onnxruntime_library().unwrap();
    for (label, dtype, bits, data, dims, zp) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gbq.onnx");
        let mut inits = vec![
            tensor("data", dtype, &dims, data),
            tensor(
                "scales",
                FLOAT,
                &[rows as i64, blocks as i64],
                scales(rows * blocks),
            ),
        ];
        let mut ins = vec!["data", "idx", "scales"];
        if let Some((zt, zb, zd)) = zp {
            inits.push(tensor("zp", zt, &zd, zb));
            ins.push("zp");
        }
        let mut gbq = node(
            "GatherBlockQuantized",
            &ins,
            &["y"],
            vec![
                attr_int("bits", bits),
                attr_int("block_size", block as i64),
                attr_int("gather_axis", 0),
                attr_int("quantize_axis", 1),
            ],
        );
        gbq.domain = Some("com.microsoft".into());
        let model = proto::ModelProto {
            ir_version: Some(9),
            opset_import: ["", "com.microsoft"]
                .iter()
                .zip([17, 1])
                .map(|(d, v)| proto::OperatorSetIdProto {
                    domain: Some(d.to_string()),
                    version: Some(v),
                })
                .collect(),
            graph: Some(proto::GraphProto {
                name: Some("g".into()),
                node: vec![gbq],
                initializer: inits,
                input: vec![value_info("idx", INT64, &[2, 3])],
                output: vec![value_info("y", FLOAT, &[2, 3, k as i64])],
                ..Default::default()
            }),
            ..Default::default()
        };
        std::fs::write(&path, m2w_model::onnx::encode(&model)).unwrap();
        // Indices in range, one negative (counted from the end).
        let idx = m2w_reference::HostTensor::I64(vec![2, 3], vec![0, 9, 3, -1, 5, 2]);
        let npy = dir.path().join("idx.npy");
        std::fs::write(&npy, idx.to_npy().unwrap()).unwrap();
        let opts = m2w_reference::onnx_ref::OnnxOptions {
            input_files: [("idx".to_string(), npy)].into(),
            ..Default::default()
        };
        let reference = dir.path().join("reference");
        m2w_reference::onnx_ref::reference(&lib, &path, &reference, &opts)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let m = m2w_model::Model::open(&path).unwrap();
        let (plan, inputs) = compile_for(&m, &reference).unwrap_or_else(|e| panic!("{label}: {e}"));
        let report = validate(&gpu, &m, plan, &inputs, &reference, &Options::default()).unwrap();
        assert_eq!(
            (report.passed, report.failed),
            (1, 0),
            "{label}: {:?}",
            report.first_failure
        );
    }
}
