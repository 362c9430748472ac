//! Integer GEMMs of the oracle made exact on every CPU.
//!
//! ONNX Runtime's x86 kernels for u8 activations times s8 weights (MatMulInteger,
//! ConvInteger, QLinearMatMul, QLinearConv and com.microsoft's dynamic-quantization
//! GEMMs) add product pairs in saturating 16-bit lanes (AVX2 `vpmaddubsw`) on CPUs without
//! VNNI: 255 x 127 x 2 does not fit an i16, so an oracle made on such a machine can be off by
//! thousands where one made on a VNNI machine is exact (measured: MiniLM dynamic-int8,
//! -15029 against the exact -18861, on an AMD EPYC with AVX2 only). ORT's own cure,
//! `session.x64quantprecision=1`, is a level-2 graph transform, and the reference runs
//! with graph optimisations off so that every node's output survives. So we make the same
//! transform on the model we hand ORT: a constant int8 weight `w` becomes the u8 `w + 128`
//! and its zero point `z` (0 when absent) the u8 `z + 128`. `w - z` is unchanged for every
//! element, so the node computes the same function, and ORT takes its exact u8 x u8 path.
//! Applied on every machine, so that an oracle does not depend on the CPU that made it.

use std::collections::{HashMap, HashSet};

use m2w_model::onnx::proto::{self, GraphProto, NodeProto, TensorProto};
use m2w_model::{DType, Model};

use crate::RefError;

/// One line for reports on what the rewrite does and why.
pub const WHY: &str = "int8 weights (and zero points) of these nodes were given to ONNX Runtime as uint8 + 128, the same function, so that it computes them on its exact u8 x u8 path: its u8 x s8 path saturates on x86 CPUs without VNNI";

const UINT8: i32 = 2;

/// Where an integer GEMM keeps its weight and the weight's zero point, and how its
/// activation's type is found.
struct IntegerGemm {
    domain: &'static str,
    op: &'static str,
    weight: usize,
    weight_zero_point: usize,
    /// The input whose element type is the activation's (None: the op takes float
    /// activations and quantizes them to u8 itself).
    activation: Option<usize>,
}

/// Every op whose ORT CPU kernel has the saturating u8 x s8 path.
const INTEGER_GEMMS: &[IntegerGemm] = &[
    IntegerGemm {
        domain: "",
        op: "MatMulInteger",
        weight: 1,
        weight_zero_point: 3,
        activation: Some(0),
    },
    IntegerGemm {
        domain: "",
        op: "ConvInteger",
        weight: 1,
        weight_zero_point: 3,
        activation: Some(0),
    },
    // a_zero_point (input 2) is required and has the activation's type.
    IntegerGemm {
        domain: "",
        op: "QLinearMatMul",
        weight: 3,
        weight_zero_point: 5,
        activation: Some(2),
    },
    IntegerGemm {
        domain: "",
        op: "QLinearConv",
        weight: 3,
        weight_zero_point: 5,
        activation: Some(2),
    },
    IntegerGemm {
        domain: "com.microsoft",
        op: "DynamicQuantizeMatMul",
        weight: 1,
        weight_zero_point: 3,
        activation: None,
    },
    IntegerGemm {
        domain: "com.microsoft",
        op: "MatMulIntegerToFloat",
        weight: 1,
        weight_zero_point: 5,
        activation: Some(0),
    },
];

fn integer_gemm(domain: &str, op: &str) -> Option<&'static IntegerGemm> {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    INTEGER_GEMMS
        .iter()
        .find(|g| g.domain == domain && g.op == op)
}

/// Whether a graph has any node the rewrite may apply to (so callers can skip decoding).
pub fn has_integer_gemm(graph: &m2w_model::GraphInfo) -> bool {
    graph
        .nodes
        .iter()
        .any(|n| n.scope.is_empty() && integer_gemm(&n.domain, &n.op_type).is_some())
}

/// Ops whose output 0 has the element type of their input 0.
const TYPE_PRESERVING: &[&str] = &[
    "Identity",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Expand",
    "Slice",
    "Gather",
    "Concat",
    "Split",
    "Tile",
    "Pad",
];

/// Element types of the main graph's values, as far as a few rules find them.
struct ElemTypes<'g> {
    declared: HashMap<&'g str, i32>,
    producer: HashMap<&'g str, (&'g NodeProto, usize)>,
}

impl<'g> ElemTypes<'g> {
    fn new(graph: &'g GraphProto) -> ElemTypes<'g> {
        let mut declared = HashMap::new();
        let tensor_type =
            |v: &'g proto::ValueInfoProto| match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(proto::type_proto::Value::TensorType(t)) => t.elem_type,
                _ => None,
            };
        for v in graph
            .input
            .iter()
            .chain(&graph.value_info)
            .chain(&graph.output)
        {
            if let Some(t) = tensor_type(v).filter(|&t| t != 0) {
                declared.insert(v.name(), t);
            }
        }
        for t in &graph.initializer {
            declared.insert(t.name(), t.data_type());
        }
        let mut producer = HashMap::new();
        for n in &graph.node {
            for (k, o) in n.output.iter().enumerate() {
                producer.insert(o.as_str(), (n, k));
            }
        }
        ElemTypes { declared, producer }
    }

    fn of(&self, name: &str, depth: usize) -> Option<i32> {
        if let Some(&t) = self.declared.get(name) {
            return Some(t);
        }
        let &(node, k) = self.producer.get(name)?;
        if depth == 0 || !matches!(node.domain(), "" | "ai.onnx") {
            return None;
        }
        let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty());
        let attr = |a: &str| {
            node.attribute
                .iter()
                .find(|x| x.name() == a)
                .and_then(|x| x.i)
        };
        match node.op_type() {
            "DynamicQuantizeLinear" if k != 1 => Some(UINT8),
            "QuantizeLinear" => match input(2) {
                Some(zp) => self.of(zp, depth - 1),
                None => Some(
                    attr("output_dtype")
                        .filter(|&t| t != 0)
                        .unwrap_or(UINT8 as i64) as i32,
                ),
            },
            "Cast" => attr("to").map(|t| t as i32),
            "Constant" => node
                .attribute
                .iter()
                .find(|x| x.name() == "value")
                .and_then(|x| x.t.as_ref())
                .map(|t| t.data_type()),
            op if TYPE_PRESERVING.contains(&op) => self.of(input(0)?, depth - 1),
            _ => None,
        }
    }
}

/// Rewrites every main-graph integer GEMM whose weight is a constant int8 tensor, whose
/// zero point is absent or a constant int8 tensor, and whose activation is u8, to take
/// u8 copies of them instead (module docs). Returns the labels of the rewritten nodes.
pub fn widen_int8_weights(
    model: &Model,
    proto: &mut proto::ModelProto,
) -> Result<Vec<String>, RefError> {
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(Vec::new());
    };
    // Decide first, with the graph borrowed immutably.
    let mut plan: Vec<(usize, String, Option<String>)> = Vec::new();
    {
        let types = ElemTypes::new(graph);
        for (i, n) in graph.node.iter().enumerate() {
            let Some(g) = integer_gemm(n.domain(), n.op_type()) else {
                continue;
            };
            let input = |k: usize| n.input.get(k).filter(|s| !s.is_empty()).cloned();
            let constant_i8 = |name: &str| {
                model
                    .tensor(name)
                    .is_some_and(|t| t.scope.is_empty() && t.dtype == DType::I8)
            };
            let Some(w) = input(g.weight) else { continue };
            let zp = input(g.weight_zero_point);
            let activation_u8 = match g.activation {
                None => true,
                Some(a) => input(a).and_then(|a| types.of(&a, 64)) == Some(UINT8),
            };
            if activation_u8 && constant_i8(&w) && zp.as_deref().is_none_or(constant_i8) {
                plan.push((i, w, zp));
            }
        }
    }
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    // Each source tensor gets one u8 copy, however many nodes read it.
    let mut copies: HashMap<String, String> = HashMap::new();
    let mut new_initializers: Vec<TensorProto> = Vec::new();
    let mut copy = |source: &str| -> Result<String, RefError> {
        if let Some(name) = copies.get(source) {
            return Ok(name.clone());
        }
        let name = format!("{source}.m2w_u8");
        new_initializers.push(widened(model, source, &name)?);
        copies.insert(source.to_string(), name.clone());
        Ok(name)
    };
    const DEFAULT_ZERO_POINT: &str = "m2w_u8_zero_point_128";
    let mut rewritten = Vec::new();
    let mut default_zero_point = false;
    for (i, w, zp) in plan {
        let weight = copy(&w)?;
        let zero_point = match &zp {
            Some(z) => copy(z)?,
            None => {
                default_zero_point = true;
                DEFAULT_ZERO_POINT.to_string()
            }
        };
        let g = integer_gemm(graph.node[i].domain(), graph.node[i].op_type()).expect("planned");
        let node = &mut graph.node[i];
        if node.input.len() <= g.weight_zero_point {
            node.input.resize(g.weight_zero_point + 1, String::new());
        }
        node.input[g.weight] = weight;
        node.input[g.weight_zero_point] = zero_point;
        rewritten.push(if node.name().is_empty() {
            format!(
                "{} -> {}",
                node.op_type(),
                node.output.first().map(String::as_str).unwrap_or("?")
            )
        } else {
            node.name().to_string()
        });
    }
    if default_zero_point {
        new_initializers.push(TensorProto {
            name: Some(DEFAULT_ZERO_POINT.into()),
            data_type: Some(UINT8),
            raw_data: Some(vec![128]),
            ..Default::default()
        });
    }
    graph.initializer.extend(new_initializers);
    // Originals no node reads any more are dropped (ORT warns about unused initializers).
    let mut used: HashSet<String> = graph.input.iter().map(|v| v.name().to_string()).collect();
    collect_inputs(graph, &mut used);
    graph.initializer.retain(|t| used.contains(t.name()));
    Ok(rewritten)
}

/// Every value name any node reads, subgraphs included (their nodes may read outer values).
fn collect_inputs(graph: &GraphProto, used: &mut HashSet<String>) {
    for n in &graph.node {
        used.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        for a in &n.attribute {
            if let Some(g) = &a.g {
                collect_inputs(g, used);
            }
            for g in &a.graphs {
                collect_inputs(g, used);
            }
        }
    }
    used.extend(graph.output.iter().map(|o| o.name().to_string()));
}

/// The u8 tensor `name` holding `source`'s int8 values plus 128, same dims.
fn widened(model: &Model, source: &str, name: &str) -> Result<TensorProto, RefError> {
    let entry = model.tensor(source).expect("checked constant");
    let raw = model.read_raw(entry)?;
    Ok(TensorProto {
        name: Some(name.to_string()),
        dims: entry.shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(UINT8),
        // Two's complement: x + 128 as u8 is x's byte with the top bit flipped.
        raw_data: Some(raw.bytes.iter().map(|b| b ^ 0x80).collect()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2w_model::onnx_build::{model, node, value_info};

    #[test]
    fn int8_plus_128_is_the_top_bit_flipped() {
        for x in i8::MIN..=i8::MAX {
            assert_eq!((x as u8) ^ 0x80, (x as i16 + 128) as u8);
        }
    }

    fn tensor(name: &str, dims: &[i64], dt: i32, bytes: Vec<u8>) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(dt),
            raw_data: Some(bytes),
            ..Default::default()
        }
    }

    /// u8 activations (a graph input, and DynamicQuantizeLinear's output through a
    /// Reshape) are widened, sharing one copy of a shared weight; s8 activations are not
    /// (ORT has no s8 x u8 kernel), nor are u8 weights.
    #[test]
    fn only_u8_times_constant_s8_nodes_are_widened() {
        const FLOAT: i32 = 1;
        const INT8: i32 = 3;
        const INT64: i32 = 7;
        let bytes = model(
            vec![
                node("MatMulInteger", &["a", "w"], &["y1"], vec![]),
                node(
                    "DynamicQuantizeLinear",
                    &["f"],
                    &["q", "q_scale", "q_zp"],
                    vec![],
                ),
                node("Reshape", &["q", "shape"], &["q2"], vec![]),
                node(
                    "MatMulInteger",
                    &["q2", "w", "q_zp", "w_zp"],
                    &["y2"],
                    vec![],
                ),
                node("MatMulInteger", &["s", "w"], &["y3"], vec![]),
                node("MatMulInteger", &["a", "wu"], &["y4"], vec![]),
            ],
            vec![
                tensor("w", &[2, 2], INT8, vec![0x7f, 0x80, 1, 0xff]),
                tensor("w_zp", &[], INT8, vec![0xfe]),
                tensor("wu", &[2, 2], UINT8, vec![1, 2, 3, 4]),
                tensor(
                    "shape",
                    &[2],
                    INT64,
                    [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ),
            ],
            vec![
                value_info("a", UINT8, &[1, 2]),
                value_info("f", FLOAT, &[2]),
                value_info("s", INT8, &[1, 2]),
            ],
            vec![
                value_info("y1", 6, &[1, 2]),
                value_info("y2", 6, &[1, 2]),
                value_info("y3", 6, &[1, 2]),
                value_info("y4", 6, &[1, 2]),
            ],
            13,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, bytes).unwrap();
        let m = Model::open(&path).unwrap();
        let mut p = m2w_model::onnx::decode(&path).unwrap();
        let widened = widen_int8_weights(&m, &mut p).unwrap();
        assert_eq!(widened, ["MatMulInteger_y1", "MatMulInteger_y2"]);
        let g = p.graph.unwrap();
        let init = |name: &str| g.initializer.iter().find(|t| t.name() == name);
        assert_eq!(
            g.node[0].input,
            ["a", "w.m2w_u8", "", "m2w_u8_zero_point_128"]
        );
        assert_eq!(g.node[3].input[1], "w.m2w_u8");
        let zp = &g.node[3].input[3];
        assert_eq!(zp, "w_zp.m2w_u8");
        assert_eq!(init(zp).unwrap().raw_data.as_deref(), Some(&[0x7e][..]));
        assert_eq!(init(zp).unwrap().data_type(), UINT8);
        let w = init("w.m2w_u8").unwrap();
        assert_eq!((w.data_type(), &w.dims[..]), (UINT8, &[2i64, 2][..]));
        assert_eq!(w.raw_data.as_deref(), Some(&[0xff, 0x00, 0x81, 0x7f][..]));
        assert_eq!(
            init("m2w_u8_zero_point_128").unwrap().raw_data.as_deref(),
            Some(&[128][..])
        );
        // The s8-activation node still reads the original, which is therefore kept.
        assert_eq!(g.node[4].input, ["s", "w"]);
        assert!(init("w").is_some());
        assert!(
            init("w_zp").is_none(),
            "an original nothing reads is dropped"
        );
        assert_eq!(g.node[5].input, ["a", "wu"]);
    }
}
