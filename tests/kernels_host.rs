//! Generated kernels, built for the host and run by LLVM's JIT (one thread, one block), against
//! the ONNX node tests' reference outputs: every single-node test whose op has a generator.
//! This exercises each family's indexing, broadcasting, fusion and math on every CI run
//! without a GPU. The count per family is printed.

use bytes::Bytes;
use sparkc_cpu::{Array, Value};
use sparkc_ir::{DType, Op, Tensor, ValueRef};
use sparkc_kernels::plan::{generate, is_leaf, is_view, request};
use sparkc_kernels::{host, Precision, Role, Target};
use sparkc_tests::{generated, manifest_names, read_value};
use std::collections::BTreeMap;
use std::path::Path;

/// The packed little-endian bytes of an array, as a kernel buffer holds them.
fn bytes_of(a: &Array) -> Vec<u8> {
    a.to_tensor().data.to_vec()
}

/// The values of a kernel buffer of `dtype`.
fn values_of(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    let count = bytes.len() * 8 / dtype.bits();
    match Tensor::new(dtype, vec![count], Bytes::copy_from_slice(bytes)) {
        Ok(t) => Array::from_tensor(&t).data.to_f64s(),
        Err(_) => Vec::new(),
    }
}

/// Runs one node test's single node through its host kernel; `None` when it has no kernel.
fn run_case(dir: &Path, meta: &serde_json::Value) -> Option<(String, Result<(), String>)> {
    let mut model = sparkc_onnx::load(&dir.join("model.onnx")).ok()?;
    let set = dir.join("test_data_set_0");
    let names: Vec<String> = model
        .graph
        .inputs
        .iter()
        .map(|&id| model.graph.node(id).name.clone())
        .collect();
    // Resize's roi, scales and sizes are constants in real models; bind them so the output
    // size is known and the kernel exists.
    let resize = model
        .graph
        .dag
        .node_weights()
        .any(|n| matches!(n.op, Op::Resize(_)));
    if resize {
        for (j, name) in names.iter().enumerate() {
            if !["roi", "scales", "sizes"].contains(&name.as_str()) {
                continue;
            }
            let Ok(Value::Tensor(a)) =
                read_value(&set.join(format!("input_{j}.pb")), &meta["inputs"][j])
            else {
                return None;
            };
            model.graph.bind_input(name, a.to_tensor()).ok()?;
        }
        sparkc_ir::infer_graph(&mut model.graph).ok()?;
    }
    let graph = &model.graph;
    let computed: Vec<_> = graph
        .dag
        .node_indices()
        .filter(|&id| !is_leaf(&graph.node(id).op))
        .collect();
    let [id] = computed[..] else { return None };
    let node = graph.node(id);
    if is_view(&node.op) || matches!(node.op, Op::Fused(_)) {
        return None;
    }
    let req = request(graph, id, "k".into(), Target::Host, Precision::Fp32).ok()?;
    let cx = inkwell::context::Context::create();
    let kernel = generate(&cx, &req).ok()?;
    // FP16 kernels are checked by the codegen tests' ptxas runs, not here: the host JIT has
    // no FP16 conversion routines.
    if kernel
        .info
        .buffers
        .iter()
        .any(|b| matches!(b.dtype, DType::F16 | DType::F64))
    {
        return None;
    }
    let family = format!("{:?}", kernel.info.family);
    let result = (|| -> Result<(), String> {
        let mut by_value: BTreeMap<ValueRef, Array> = BTreeMap::new();
        for &input in &graph.inputs {
            let name = &graph.node(input).name;
            let j = names
                .iter()
                .position(|n| n == name)
                .ok_or("an input vanished")?;
            let Value::Tensor(a) =
                read_value(&set.join(format!("input_{j}.pb")), &meta["inputs"][j])?
            else {
                return Err("non-tensor input".into());
            };
            by_value.insert(
                ValueRef {
                    node: input,
                    output: 0,
                },
                a,
            );
        }
        let mut buffers: Vec<Vec<u8>> = Vec::new();
        let slots = graph.inputs_of(id);
        for arg in &kernel.info.buffers {
            match arg.role {
                Role::Output => {
                    let n: i64 = arg
                        .shape
                        .iter()
                        .map(|d| d.as_const().unwrap_or(0))
                        .product();
                    let size = arg.dtype.storage_bytes(n as usize).ok_or("size")?;
                    buffers.push(vec![0u8; size.max(1)]);
                }
                Role::Input => {
                    let v = slots[arg.slot].ok_or("missing input")?;
                    let bytes = match &graph.node(v.node).op {
                        Op::Const(t) => t.data.to_vec(),
                        _ => bytes_of(by_value.get(&v).ok_or("input not bound")?),
                    };
                    buffers.push(bytes);
                }
            }
        }
        let mut views: Vec<&mut [u8]> = buffers.iter_mut().map(|b| b.as_mut_slice()).collect();
        // SAFETY: every buffer is sized for its parameter's static shape.
        unsafe { host::run(&kernel, &mut views, &[]) }.map_err(|e| e.to_string())?;
        let (mut rtol, atol) = (
            meta["rtol"].as_f64().unwrap_or(1e-3).max(1e-4),
            meta["atol"].as_f64().unwrap_or(1e-7).max(2e-5),
        );
        // References that round intermediates to BF16 (attention scores, softmax) may differ
        // from one final rounding by two ulps.
        if kernel.info.buffers.iter().any(|b| b.dtype == DType::BF16) {
            rtol = rtol.max(1.0 / 64.0);
        }
        for (j, arg) in kernel
            .info
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.role == Role::Output)
        {
            // The test numbers the graph's outputs, which may skip the node's omitted ones.
            let value = ValueRef {
                node: id,
                output: arg.slot,
            };
            let Some(position) = graph.outputs.iter().position(|v| *v == value) else {
                continue;
            };
            let Value::Tensor(expected) = read_value(
                &set.join(format!("output_{position}.pb")),
                &meta["outputs"][position],
            )?
            else {
                return Err("non-tensor output".into());
            };
            let want = expected.data.to_f64s();
            let mut actual = values_of(arg.dtype, &buffers[j]);
            actual.truncate(want.len());
            if actual.len() != want.len() {
                return Err(format!(
                    "output {j}: {} elements, expected {}",
                    actual.len(),
                    want.len()
                ));
            }
            for (i, (&x, &y)) in actual.iter().zip(&want).enumerate() {
                let ok =
                    (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= atol + rtol * y.abs();
                if !ok {
                    return Err(format!("output {j} element {i}: got {x}, expected {y}"));
                }
            }
        }
        Ok(())
    })();
    Some((family, result))
}

#[test]
fn host_kernels_match_onnx_node_tests() {
    let root = generated().join("node");
    let mut per_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for name in manifest_names("node") {
        let dir = root.join(&name);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).expect("meta"))
                .expect("json");
        // SPARKC_TRACE=1 names each case first, to find one that crashes the JIT-run kernel.
        if std::env::var_os("SPARKC_TRACE").is_some() {
            eprintln!("{name}");
        }
        let Some((family, result)) = run_case(&dir, &meta) else {
            continue;
        };
        let entry = per_family.entry(family).or_default();
        entry.0 += 1;
        match result {
            Ok(()) => entry.1 += 1,
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    for (family, (run, passed)) in &per_family {
        println!("host kernels, {family}: {passed} of {run} node tests pass");
    }
    assert_eq!(
        per_family.len(),
        7,
        "every kernel family runs node tests: {per_family:?}"
    );
    assert!(
        failures.is_empty(),
        "{} node tests fail on host kernels:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `RoundToBlocks` (how activations are rounded to NVFP4 and MXFP4) on host kernels against the
/// CPU executor, which rounds with the IR's block codec: every value bit for bit, with a short
/// last block, a block of zeros, tiny and huge values, an infinity and a NaN.
#[test]
fn round_to_blocks_kernels_match_the_block_codec() {
    use sparkc_ir::formats::BlockFormat;
    use sparkc_ir::{Dim, Graph, TensorType, ValueType};
    let (rows, len) = (3usize, 40usize);
    let mut x: Vec<f32> = (0..rows * len)
        .map(|i| ((i * 7919) % 1000) as f32 / 97.0 - 5.0)
        .collect();
    x[40..56].iter_mut().for_each(|v| *v = 0.0);
    x[60] = 1e-30;
    x[70] = 3e4;
    x[100] = f32::INFINITY;
    x[101] = f32::NAN;
    for format in [BlockFormat::Nvfp4, BlockFormat::Mxfp4] {
        let mut g = Graph::new("round");
        let dims = vec![Dim::known(rows as i64), Dim::known(len as i64)];
        let input = g.add_input("x", ValueType::Tensor(TensorType::new(DType::F32, dims)));
        let mut inputs = vec![Some(input)];
        if format == BlockFormat::Nvfp4 {
            let scale = Tensor::new(
                DType::F32,
                vec![],
                Bytes::from(0.01f32.to_le_bytes().to_vec()),
            )
            .expect("a scale");
            inputs.push(Some(g.add_const("ts", scale)));
        }
        let out = sparkc_ir::Value {
            name: "y".into(),
            ty: ValueType::Tensor(TensorType::new(DType::F32, vec![])),
            known: None,
        };
        let id = g.add_node(
            "round".into(),
            Op::RoundToBlocks { format },
            &inputs,
            vec![out],
        );
        g.outputs.push(ValueRef {
            node: id,
            output: 0,
        });
        sparkc_ir::infer_graph(&mut g).expect("typed");
        let exec = sparkc_cpu::Executor::new(&g).expect("an executor");
        let given = Value::Tensor(Array::f32(vec![rows, len], x.clone()));
        let want = exec.run(vec![given]).expect("runs")[0]
            .as_tensor()
            .expect("a tensor")
            .data
            .to_f64s();
        let req = request(&g, id, "k".into(), Target::Host, Precision::Fp32).expect("a request");
        let cx = inkwell::context::Context::create();
        let kernel = generate(&cx, &req).expect("a kernel");
        let mut y = vec![0u8; rows * len * 4];
        let mut xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut buffers: Vec<&mut [u8]> = vec![&mut y, &mut xb];
        let mut scale_bytes = 0.01f32.to_le_bytes().to_vec();
        if format == BlockFormat::Nvfp4 {
            buffers.push(&mut scale_bytes);
        }
        // SAFETY: the buffers hold the kernel's static shapes.
        unsafe { host::run(&kernel, &mut buffers, &[]) }.expect("the kernel runs");
        let got = values_of(DType::F32, &y);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let same = (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits();
            assert!(same, "{format:?} element {i}: kernel {a}, codec {b}");
        }
    }
}
