//! A small builder of ONNX models through the same prost types the reader uses: for tests
//! and tools that need a graph of a few nodes (an op under test, a shape chain, a model
//! with integer inputs) without Python.

use crate::onnx::proto;

/// ONNX element type codes used by the builder.
pub const FLOAT: i32 = 1;
pub const INT32: i32 = 6;
pub const INT64: i32 = 7;
pub const BOOL: i32 = 9;

/// A 1-D int64 initializer.
pub fn ints(name: &str, v: &[i64]) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(INT64),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

pub fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<proto::AttributeProto>,
) -> proto::NodeProto {
    proto::NodeProto {
        op_type: Some(op.into()),
        name: Some(
            outputs
                .first()
                .map(|o| format!("{op}_{o}"))
                .unwrap_or_default(),
        ),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: proto::TensorProto) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

/// A graph input or output of element type `elem` and fixed dims.
pub fn value_info(name: &str, elem: i32, dims: &[i64]) -> proto::ValueInfoProto {
    let dims: Vec<String> = dims.iter().map(i64::to_string).collect();
    let dims: Vec<&str> = dims.iter().map(String::as_str).collect();
    value_info_sym(name, elem, &dims)
}

/// A graph input or output whose dims are sizes ("4") or named dims ("past_sequence").
pub fn value_info_sym(name: &str, elem: i32, dims: &[&str]) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::dimension::Value;
    let dim = dims
        .iter()
        .map(|d| proto::tensor_shape_proto::Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => Value::DimValue(v),
                Err(_) => Value::DimParam(d.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(elem),
                    shape: Some(proto::TensorShapeProto { dim }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model of one graph at `opset` of the standard domain, encoded.
pub fn model(
    nodes: Vec<proto::NodeProto>,
    initializers: Vec<proto::TensorProto>,
    inputs: Vec<proto::ValueInfoProto>,
    outputs: Vec<proto::ValueInfoProto>,
    opset: i64,
) -> Vec<u8> {
    crate::onnx::encode(&proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(proto::GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: initializers,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    })
}
