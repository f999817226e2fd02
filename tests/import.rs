//! Import of real models (the `light_*` architectures shipped with onnx) and of bad input:
//! each bad model gets one clear error naming the node, value or file, never a panic.

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use sparkc_cpu::{Array, Data, Value};
use sparkc_ir::Dim;
use sparkc_onnx::{load, load_bytes, tensor_from_bytes};
use sparkc_tests::{generated, manifest_names, repo_root};
use std::path::Path;

#[test]
fn light_models_import_with_reference_output_shapes() {
    let names = manifest_names("light");
    assert_eq!(names.len(), 9, "onnx 1.23.2 ships 9 light models");
    for name in names {
        let dir = generated().join("light");
        let model =
            load(&dir.join(format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let reference =
            tensor_from_bytes(&std::fs::read(dir.join(format!("{name}_output_0.pb"))).unwrap())
                .unwrap();
        let output = model
            .graph
            .value(model.graph.outputs[0])
            .ty
            .as_tensor()
            .unwrap()
            .clone();
        let expected: Vec<Dim> = reference
            .shape
            .iter()
            .map(|&d| Dim::known(d as i64))
            .collect();
        assert_eq!(output.dtype, reference.dtype, "{name}");
        assert_eq!(output.shape, Some(expected), "{name}");
    }
}

#[test]
fn symbolic_batch_flows_through_shape_arithmetic() {
    let model = load(&repo_root().join("examples/models/tiny_cnn.onnx")).unwrap();
    let output = model.graph.value(model.graph.outputs[0]).ty.to_string();
    assert_eq!(output, "f32[N,10]");
}

fn tensor_type(dims: &[i64]) -> TypeProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: 1,
            shape: Some(shape).into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        type_: Some(tensor_type(dims)).into(),
        ..Default::default()
    }
}

fn node(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: name.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: &[&str],
    initializers: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 10,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 21,
            ..Default::default()
        }],
        graph: Some(GraphProto {
            name: "bad".into(),
            node: nodes,
            input: inputs,
            output: outputs.iter().map(|o| value_info(o, &[2])).collect(),
            initializer: initializers,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

fn import_error(model: &ModelProto) -> String {
    let bytes = model.write_to_bytes().unwrap();
    load_bytes(&bytes, None)
        .expect_err("the model is invalid")
        .to_string()
}

fn assert_contains(error: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            error.contains(part),
            "error {error:?} does not mention {part:?}"
        );
    }
}

#[test]
fn truncated_and_random_bytes_are_rejected() {
    let bytes = std::fs::read(repo_root().join("examples/models/tiny_cnn.onnx")).unwrap();
    let error = load_bytes(&bytes[..bytes.len() / 2], None)
        .unwrap_err()
        .to_string();
    assert_contains(&error, &["not a valid ONNX model"]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    assert!(load_bytes(&noise, None).is_err());
    assert_contains(&load_bytes(&[], None).unwrap_err().to_string(), &["opset"]);
}

#[test]
fn a_cycle_is_rejected() {
    let m = model(
        vec![
            node("first", "Relu", &["b"], &["a"]),
            node("second", "Relu", &["a"], &["b"]),
        ],
        vec![],
        &["a"],
        vec![],
    );
    assert_contains(&import_error(&m), &["cycle"]);
}

#[test]
fn an_input_that_is_never_produced_is_rejected() {
    let m = model(
        vec![node("add", "Add", &["x", "weight"], &["y"])],
        vec![value_info("x", &[2])],
        &["y"],
        vec![],
    );
    assert_contains(
        &import_error(&m),
        &["node 'add'", "'weight' is never produced"],
    );
}

#[test]
fn an_unknown_op_names_node_and_opset() {
    let m = model(
        vec![node("mystery", "FooBar", &["x"], &["y"])],
        vec![value_info("x", &[2])],
        &["y"],
        vec![],
    );
    assert_contains(
        &import_error(&m),
        &["node 'mystery' (FooBar, opset 21)", "not supported"],
    );
}

#[test]
fn an_attribute_of_the_wrong_kind_or_rank_is_rejected() {
    let mut conv = node("conv", "Conv", &["x", "w"], &["y"]);
    conv.attribute.push(AttributeProto {
        name: "kernel_shape".into(),
        type_: AttributeType::INT.into(),
        i: 3,
        ..Default::default()
    });
    let inputs = vec![
        value_info("x", &[1, 1, 4, 4]),
        value_info("w", &[1, 1, 3, 3]),
    ];
    let m = model(vec![conv.clone()], inputs.clone(), &["y"], vec![]);
    assert_contains(
        &import_error(&m),
        &["node 'conv'", "'kernel_shape' must be a list of ints"],
    );
    conv.attribute[0] = AttributeProto {
        name: "kernel_shape".into(),
        type_: AttributeType::INTS.into(),
        ints: vec![3, 3, 3],
        ..Default::default()
    };
    let m = model(vec![conv], inputs, &["y"], vec![]);
    assert_contains(
        &import_error(&m),
        &["node 'conv'", "kernel_shape has 3 entries"],
    );
}

#[test]
fn absurd_dims_are_rejected() {
    let m = model(
        vec![node("relu", "Relu", &["x"], &["y"])],
        vec![value_info("x", &[1 << 40])],
        &["y"],
        vec![],
    );
    assert_contains(
        &import_error(&m),
        &["input 'x'", "1099511627776", "exceeds"],
    );
    let weight = TensorProto {
        name: "w".into(),
        dims: vec![1 << 40],
        data_type: 1,
        ..Default::default()
    };
    let m = model(
        vec![node("relu", "Relu", &["w"], &["y"])],
        vec![],
        &["y"],
        vec![weight],
    );
    assert_contains(&import_error(&m), &["initializer 'w'", "exceeds"]);
}

#[test]
fn shapes_that_cannot_broadcast_are_rejected() {
    let m = model(
        vec![node("add", "Add", &["x", "z"], &["y"])],
        vec![value_info("x", &[2, 3]), value_info("z", &[4])],
        &["y"],
        vec![],
    );
    assert_contains(&import_error(&m), &["node 'add' (Add)", "cannot broadcast"]);
}

fn external(location: &str, length: usize) -> TensorProto {
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: k.into(),
        value: v,
        ..Default::default()
    };
    TensorProto {
        name: "w".into(),
        dims: vec![2],
        data_type: 1,
        data_location: DataLocation::EXTERNAL.into(),
        external_data: vec![
            entry("location", location.into()),
            entry("length", length.to_string()),
        ],
        ..Default::default()
    }
}

fn load_external(dir: &Path, location: &str, length: usize) -> Result<sparkc_ir::Model, String> {
    let m = model(
        vec![node("relu", "Relu", &["w"], &["y"])],
        vec![],
        &["y"],
        vec![external(location, length)],
    );
    let path = dir.join("model.onnx");
    std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
    load(&path).map_err(|e| e.to_string())
}

#[test]
fn external_data_is_read_from_the_model_folder_only() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let values: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.join("weights.bin"), &values).unwrap();
    std::fs::write(root.path().join("secret.bin"), &values).unwrap();

    let model = load_external(&dir, "weights.bin", 8).unwrap();
    let out = model.graph.value(model.graph.outputs[0]).ty.to_string();
    assert_eq!(out, "f32[2]");

    assert_contains(
        &load_external(&dir, "../secret.bin", 8).unwrap_err(),
        &["initializer 'w'", "escapes the model's folder"],
    );
    let absolute = root.path().join("secret.bin").display().to_string();
    assert_contains(
        &load_external(&dir, &absolute, 8).unwrap_err(),
        &["initializer 'w'", "is absolute"],
    );
    assert_contains(
        &load_external(&dir, "weights.bin", 4).unwrap_err(),
        &["initializer 'w'", "needs 8 bytes"],
    );
    assert_contains(
        &load_external(&dir, "missing.bin", 8).unwrap_err(),
        &["initializer 'w'", "missing.bin"],
    );
}

#[test]
fn typed_fields_and_raw_data_decode_alike() {
    let raw = TensorProto {
        dims: vec![2],
        data_type: 7,
        raw_data: [3i64, -4].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    };
    let typed = TensorProto {
        dims: vec![2],
        data_type: 7,
        int64_data: vec![3, -4],
        ..Default::default()
    };
    let a = tensor_from_bytes(&raw.write_to_bytes().unwrap()).unwrap();
    let b = tensor_from_bytes(&typed.write_to_bytes().unwrap()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_i64s(), Some(vec![3, -4]));
}

#[test]
fn recurrent_weights_that_do_not_fit_the_hidden_size_are_rejected() {
    let mut lstm = node("lstm", "LSTM", &["x", "w", "r"], &["y"]);
    lstm.attribute.push(AttributeProto {
        name: "hidden_size".into(),
        type_: AttributeType::INT.into(),
        i: 3,
        ..Default::default()
    });
    // LSTM with hidden size 3 needs W [1, 12, 2]; this one has 8 rows (hidden size 2).
    let inputs = vec![
        value_info("x", &[5, 1, 2]),
        value_info("w", &[1, 8, 2]),
        value_info("r", &[1, 12, 3]),
    ];
    let m = model(vec![lstm], inputs, &["y"], vec![]);
    assert_contains(
        &import_error(&m),
        &["node 'lstm'", "W is [1,8,2]", "need [1,12,2]"],
    );
}

/// A scalar initializer of ONNX element type `elem_type` from its little-endian bytes.
fn scalar(name: &str, elem_type: i32, raw: &[u8]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: elem_type,
        raw_data: raw.to_vec(),
        ..Default::default()
    }
}

/// The scales (f32) and zero points (u8) of `names`, as initializers.
fn quantization_parameters(names: &[&str]) -> Vec<TensorProto> {
    names
        .iter()
        .flat_map(|n| {
            [
                scalar(&format!("{n}_scale"), 1, &0.05f32.to_le_bytes()),
                scalar(&format!("{n}_zero"), 2, &[128]),
            ]
        })
        .collect()
}

fn contributed(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        domain: "com.microsoft".into(),
        ..node(name, op, inputs, outputs)
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: AttributeType::INT.into(),
        i: value,
        ..Default::default()
    }
}

#[test]
fn onnxruntime_quantized_ops_import_as_their_defining_ops() {
    let mut inits = quantization_parameters(&["a", "b", "c"]);
    inits.push(scalar("a", 2, &[7]));
    inits.push(scalar("b", 2, &[200]));
    let add = contributed(
        "add",
        "QLinearAdd",
        &[
            "a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "c_scale", "c_zero",
        ],
        &["c"],
    );
    let mut m = model(vec![add], vec![], &["c"], inits);
    m.graph.as_mut().unwrap().output[0].type_ = None.into();
    let bytes = m.write_to_bytes().unwrap();
    let graph = load_bytes(&bytes, None).expect("imports").graph;
    let mut ops: Vec<String> = graph
        .dag
        .node_weights()
        .filter(|n| !matches!(n.op, sparkc_ir::Op::Const(_)))
        .map(|n| n.op.name())
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        [
            "Add",
            "DequantizeLinear",
            "DequantizeLinear",
            "QuantizeLinear"
        ]
    );
    let output = graph.value(graph.outputs[0]);
    assert_eq!(output.name, "c");
    assert_eq!(
        output.ty.as_tensor().map(|t| t.dtype),
        Some(sparkc_ir::DType::U8)
    );
}

#[test]
fn malformed_onnxruntime_ops_are_rejected_by_name() {
    let params = || quantization_parameters(&["x", "y"]);
    let input = || vec![value_info("x", &[1, 2, 4, 4])];
    let concat = contributed("cat", "QLinearConcat", &["y_scale", "y_zero", "x"], &["y"]);
    assert_contains(
        &import_error(&model(vec![concat], input(), &["y"], params())),
        &["node 'cat' (QLinearConcat", "(codes, scale, zero point)"],
    );
    let mut pool = contributed(
        "pool",
        "QLinearGlobalAveragePool",
        &["x", "x_scale", "x_zero", "y_scale", "y_zero"],
        &["y"],
    );
    pool.attribute.push(int_attribute("channels_last", 1));
    assert_contains(
        &import_error(&model(vec![pool], input(), &["y"], params())),
        &["node 'pool'", "channels_last"],
    );
    let gemm = contributed(
        "gemm",
        "QGemm",
        &[
            "x", "x_scale", "x_zero", "x", "x_scale", "x_zero", "", "y_scale",
        ],
        &["y"],
    );
    assert_contains(
        &import_error(&model(vec![gemm], input(), &["y"], params())),
        &["node 'gemm' (QGemm", "scale and zero point"],
    );
    let other = contributed("attention", "Attention", &["x"], &["y"]);
    assert_contains(
        &import_error(&model(vec![other], input(), &["y"], params())),
        &[
            "node 'attention'",
            "domain 'com.microsoft' is not supported",
        ],
    );
    let mut batch = contributed("mm", "FusedMatMul", &["x", "x"], &["y"]);
    batch.attribute.push(int_attribute("transBatchA", 1));
    assert_contains(
        &import_error(&model(vec![batch], input(), &["y"], params())),
        &["node 'mm' (FusedMatMul", "transBatchA"],
    );
    let mut conv = contributed("conv", "FusedConv", &["x", "x"], &["y"]);
    conv.attribute.push(AttributeProto {
        name: "activation".into(),
        type_: AttributeType::STRING.into(),
        s: b"Softsign".to_vec(),
        ..Default::default()
    });
    assert_contains(
        &import_error(&model(vec![conv], input(), &["y"], params())),
        &["node 'conv' (FusedConv", "activation 'Softsign'"],
    );
    let nbits = |bits: i64, b: &str| {
        let mut node = contributed("q4", "MatMulNBits", &["x", b, "x_scale"], &["y"]);
        for (name, value) in [("K", 4), ("N", 2), ("bits", bits), ("block_size", 16)] {
            node.attribute.push(int_attribute(name, value));
        }
        node
    };
    let mut inits = params();
    inits.push(TensorProto {
        dims: vec![8],
        ..scalar("packed", 2, &[0x12; 8])
    });
    assert_contains(
        &import_error(&model(vec![nbits(4, "x")], input(), &["y"], params())),
        &["node 'q4' (MatMulNBits", "B must be an initializer"],
    );
    assert_contains(
        &import_error(&model(
            vec![nbits(4, "packed")],
            input(),
            &["y"],
            inits.clone(),
        )),
        &["node 'q4'", "B holds 8 bytes", "need 16 bytes"],
    );
    assert_contains(
        &import_error(&model(vec![nbits(3, "packed")], input(), &["y"], inits)),
        &["node 'q4'", "bits = 3"],
    );
    let rms = contributed(
        "rms",
        "SkipSimplifiedLayerNormalization",
        &["x", "x", "x_scale"],
        &["y", "mean"],
    );
    assert_contains(
        &import_error(&model(vec![rms], input(), &["y"], params())),
        &["node 'rms'", "mean, inv_std_var"],
    );
    let gqa = |inputs: &[&str], attributes: &[(&str, i64)]| {
        let mut node = contributed("gqa", "GroupQueryAttention", inputs, &["y"]);
        for (name, value) in [("num_heads", 4), ("kv_num_heads", 2)] {
            node.attribute.push(int_attribute(name, value));
        }
        for &(name, value) in attributes {
            node.attribute.retain(|a| a.name != name);
            node.attribute.push(int_attribute(name, value));
        }
        model(vec![node], input(), &["y"], params())
    };
    let cached = ["x", "x", "x", "x", "x", "x_zero", "x_zero"];
    // Inputs, attributes set, and the error's words.
    type Refusal<'a> = (&'a [&'a str], &'a [(&'a str, i64)], &'a str);
    let refusals: [Refusal; 7] = [
        (
            &cached,
            &[("kv_num_heads", 3)],
            "multiple of kv_num_heads 3",
        ),
        (&cached, &[("causal", 0)], "causal = 0"),
        (&cached, &[("smooth_softmax", 1)], "smooth_softmax"),
        (&cached, &[("kv_cache_bit_width", 4)], "quantized KV cache"),
        (
            &cached,
            &[("do_rotary", 1)],
            "needs cos_cache and sin_cache",
        ),
        (
            &["x", "x", "", "x", "x", "x_zero", "x_zero"],
            &[],
            "key and value",
        ),
        (
            &["x", "x", "x", "x", "", "x_zero", "x_zero"],
            &[],
            "past_key and past_value",
        ),
    ];
    for (inputs, attributes, message) in refusals {
        assert_contains(
            &import_error(&gqa(inputs, attributes)),
            &["node 'gqa' (GroupQueryAttention", message],
        );
    }
    let mut with_bias = cached.to_vec();
    with_bias.extend(["", "", "", "x"]);
    assert_contains(
        &import_error(&gqa(&with_bias, &[])),
        &["node 'gqa'", "input 10 (attention_bias)"],
    );
    let mut packed = contributed(
        "rope",
        "RotaryEmbedding",
        &["x", "x_zero", "x", "x"],
        &["y"],
    );
    packed
        .attribute
        .push(int_attribute("is_packed_batching", 1));
    assert_contains(
        &import_error(&model(vec![packed], input(), &["y"], params())),
        &["node 'rope' (RotaryEmbedding", "is_packed_batching"],
    );
}

#[test]
fn a_branch_value_named_like_an_outer_one_is_renamed_on_export() {
    let branch = |name: &str, node: NodeProto| AttributeProto {
        name: name.into(),
        g: Some(GraphProto {
            name: name.into(),
            output: vec![value_info(&node.output[0], &[2])],
            node: vec![node],
            ..Default::default()
        })
        .into(),
        type_: AttributeType::GRAPH.into(),
        ..Default::default()
    };
    let mut choose = node("choose", "If", &["c"], &["y"]);
    choose.attribute = vec![
        branch("then_branch", node("neg", "Neg", &["t"], &["u"])),
        branch("else_branch", node("same", "Identity", &["t"], &["v"])),
    ];
    let cond = ValueInfoProto {
        name: "c".into(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 9,
                shape: Some(TensorShapeProto::default()).into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    // The outer graph's output is also named `u`: ONNX names are unique across scopes, but the
    // IR's are only unique within a graph.
    let nodes = vec![
        node("twice", "Add", &["x", "x"], &["t"]),
        choose,
        node("mul", "Mul", &["y", "t"], &["u"]),
    ];
    let proto = model(nodes, vec![value_info("x", &[2]), cond], &["u"], vec![]);
    let imported = sparkc_onnx::import_model(proto, None).expect("imports");
    let exported = sparkc_onnx::export::to_proto(&imported).expect("exports");
    let graph = exported.graph.as_ref().expect("a graph");
    let then = graph
        .node
        .iter()
        .find(|n| n.op_type == "If")
        .and_then(|n| n.attribute.iter().find(|a| a.name == "then_branch"))
        .and_then(|a| a.g.as_ref())
        .expect("the If keeps its then_branch");
    assert!(
        then.input.is_empty(),
        "the captured `t` is referenced by name"
    );
    assert_eq!(then.node[0].input, ["t"]);
    assert_eq!(then.node[0].output, ["u_1"]);
    assert_eq!(then.output[0].name, "u_1");
    let again = sparkc_onnx::import_model(exported, None).expect("re-imports");
    let exec = sparkc_cpu::Executor::new(&again.graph).expect("prepares");
    for (c, expected) in [(true, [-4.0f32, -16.0]), (false, [4.0, 16.0])] {
        let x = Array::new(vec![2], Data::F32(vec![1.0, -2.0]));
        let c = Array::new(vec![], Data::Bool(vec![c]));
        let out = exec
            .run(vec![Value::Tensor(x), Value::Tensor(c)])
            .expect("runs");
        match &out[0] {
            Value::Tensor(a) => assert_eq!(&*a.data.f32s(), &expected),
            other => panic!("got {other}"),
        }
    }
}
