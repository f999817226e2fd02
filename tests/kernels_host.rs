//! Generated kernels, built for the host and run by LLVM's JIT (one thread, one block), against
//! the ONNX node tests' reference outputs: every single-node test whose op has a generator.
//! This exercises each family's indexing, broadcasting, fusion and math on every CI run
//! without a GPU. The count per family is printed.

use bytes::Bytes;
use sparkc_cpu::{Array, Value};
use sparkc_ir::op::{channels_last, ConvAttrs, Layout, PoolAttrs};
use sparkc_ir::{
    DType, Dim, Graph, NodeId, Op, Tensor, TensorType, Value as IrValue, ValueRef, ValueType,
};
use sparkc_kernels::plan::{generate, is_leaf, is_view, request};
use sparkc_kernels::{host, Precision, Role, Target};
use sparkc_tests::{bind_constant_inputs, generated, manifest_names, read_value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    bind_constant_inputs(&mut model.graph, dir, meta).ok()?;
    let graph = &model.graph;
    let id = single_node(graph)?;
    let node = graph.node(id);
    if is_view(&node.op) || matches!(node.op, Op::Fused(_)) {
        return None;
    }
    let case = read_case(graph, &names, &set, meta);
    run_kernel(graph, id, &case, meta)
}

/// The one computing node of a node test's graph, if it has exactly one.
fn single_node(graph: &Graph) -> Option<NodeId> {
    let computed: Vec<_> = graph
        .dag
        .node_indices()
        .filter(|&id| !is_leaf(&graph.node(id).op))
        .collect();
    match computed[..] {
        [id] => Some(id),
        _ => None,
    }
}

/// A node test's inputs by graph value, and its expected outputs by graph output position.
type Case = (BTreeMap<ValueRef, Array>, Vec<Array>);

/// Reads test set `set` of a node test whose graph inputs are named `names` in file order.
fn read_case(
    graph: &Graph,
    names: &[String],
    set: &Path,
    meta: &serde_json::Value,
) -> Result<Case, String> {
    let mut inputs = BTreeMap::new();
    for &input in &graph.inputs {
        let name = &graph.node(input).name;
        let j = names
            .iter()
            .position(|n| n == name)
            .ok_or("an input vanished")?;
        let Value::Tensor(a) = read_value(&set.join(format!("input_{j}.pb")), &meta["inputs"][j])?
        else {
            return Err("non-tensor input".into());
        };
        inputs.insert(
            ValueRef {
                node: input,
                output: 0,
            },
            a,
        );
    }
    let mut expected = Vec::new();
    for position in 0..graph.outputs.len() {
        let Value::Tensor(a) = read_value(
            &set.join(format!("output_{position}.pb")),
            &meta["outputs"][position],
        )?
        else {
            return Err("non-tensor output".into());
        };
        expected.push(a);
    }
    Ok((inputs, expected))
}

/// Runs node `id` of `graph` through its host kernel on the case's inputs and compares with its
/// expected outputs; `None` when the node has no kernel.
fn run_kernel(
    graph: &Graph,
    id: NodeId,
    case: &Result<Case, String>,
    meta: &serde_json::Value,
) -> Option<(String, Result<(), String>)> {
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
        let (inputs, expected) = case.as_ref().map_err(String::clone)?;
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
                        _ => bytes_of(inputs.get(&v).ok_or("input not bound")?),
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
            let want = expected
                .get(position)
                .ok_or("an output without its reference")?
                .data
                .to_f64s();
            let mut actual = values_of(arg.dtype, &buffers[j]);
            actual.truncate(want.len());
            if actual.len() != want.len() {
                return Err(format!(
                    "output {j}: {} elements, expected {}",
                    actual.len(),
                    want.len()
                ));
            }
            // `exact`: the same value and sign (codes of narrow types compared as their values).
            let exact = meta["exact"].as_bool() == Some(true);
            for (i, (&x, &y)) in actual.iter().zip(&want).enumerate() {
                let ok = (x.is_nan() && y.is_nan())
                    || (x == y && x.is_sign_negative() == y.is_sign_negative())
                    || (!exact && (x - y).abs() <= atol + rtol * y.abs());
                if !ok {
                    return Err(format!("output {j} element {i}: got {x}, expected {y}"));
                }
            }
        }
        Ok(())
    })();
    Some((family, result))
}

/// The output value of a node about to be typed by inference.
fn untyped_output() -> IrValue {
    IrValue {
        name: "y".into(),
        ty: ValueType::Tensor(TensorType {
            dtype: DType::F32,
            shape: None,
        }),
        known: None,
    }
}

/// `a` with its axes permuted as `Transpose` permutes them.
fn permute(a: &Array, perm: &[usize]) -> Array {
    let mut strides = vec![1; a.shape.len()];
    for k in (0..a.shape.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * a.shape[k + 1];
    }
    let shape: Vec<usize> = perm.iter().map(|&p| a.shape[p]).collect();
    let at: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    Array::new(shape.clone(), a.data.gather_strided(&shape, &at, 0))
}

/// The single node of a node test with its case, rebuilt channels last when it is a float
/// convolution or pool.
fn channels_last_case(
    dir: &Path,
    meta: &serde_json::Value,
) -> Option<(String, Result<(), String>)> {
    let model = sparkc_onnx::load(&dir.join("model.onnx")).ok()?;
    let graph = &model.graph;
    let id = single_node(graph)?;
    let names: Vec<String> = graph
        .inputs
        .iter()
        .map(|&i| graph.node(i).name.clone())
        .collect();
    let (inputs, expected) = read_case(graph, &names, &dir.join("test_data_set_0"), meta).ok()?;
    run_channels_last(graph, id, &inputs, &expected, meta)
}

/// Node `id` of `graph` rebuilt channels last (the same convolution or pool over its image and
/// weights transposed to NHWC) run on its host kernel, expected to give `expected[0]`
/// transposed; `None` unless it is a float `Conv`, `AveragePool`, or `MaxPool` without indices.
fn run_channels_last(
    graph: &Graph,
    id: NodeId,
    inputs: &BTreeMap<ValueRef, Array>,
    expected: &[Array],
    meta: &serde_json::Value,
) -> Option<(String, Result<(), String>)> {
    let node = graph.node(id);
    let channels_last_pool = |pool: &PoolAttrs| PoolAttrs {
        layout: Layout::Nhwc,
        ..pool.clone()
    };
    // The op channels last, and how many of its leading inputs (image, weights) are transposed.
    let (op, transposed) = match &node.op {
        Op::Conv(attrs) => (
            Op::Conv(ConvAttrs {
                layout: Layout::Nhwc,
                ..attrs.clone()
            }),
            2,
        ),
        Op::MaxPool {
            pool,
            storage_order,
        } if node.outputs.len() == 1 => (
            Op::MaxPool {
                pool: channels_last_pool(pool),
                storage_order: *storage_order,
            },
            1,
        ),
        Op::AveragePool {
            pool,
            count_include_pad,
        } => (
            Op::AveragePool {
                pool: channels_last_pool(pool),
                count_include_pad: *count_include_pad,
            },
            1,
        ),
        _ => return None,
    };
    let mut twin = Graph::new("nhwc");
    let mut twin_inputs = BTreeMap::new();
    let mut args = Vec::new();
    for (slot, v) in graph.inputs_of(id).into_iter().enumerate() {
        let Some(v) = v else {
            args.push(None);
            continue;
        };
        let a = inputs.get(&v)?;
        if !a.dtype().is_float() {
            return None;
        }
        let a = if slot < transposed {
            permute(a, &channels_last(&(0..a.rank()).collect::<Vec<_>>()))
        } else {
            a.clone()
        };
        let dims = a.shape.iter().map(|&d| Dim::known(d as i64)).collect();
        let ty = ValueType::Tensor(TensorType {
            dtype: a.dtype(),
            shape: Some(dims),
        });
        let input = twin.add_input(&format!("in{slot}"), ty);
        twin_inputs.insert(input, a);
        args.push(Some(input));
    }
    let out = untyped_output();
    let rebuilt = twin.add_node("nhwc".into(), op, &args, vec![out]);
    twin.outputs.push(ValueRef {
        node: rebuilt,
        output: 0,
    });
    sparkc_ir::infer_graph(&mut twin).ok()?;
    let y = expected.first()?;
    let want = permute(y, &channels_last(&(0..y.rank()).collect::<Vec<_>>()));
    run_kernel(&twin, rebuilt, &Ok((twin_inputs, vec![want])), meta)
}

/// Every ONNX node test: its name, folder and metadata.
fn node_tests() -> impl Iterator<Item = (String, PathBuf, serde_json::Value)> {
    let root = generated().join("node");
    manifest_names("node").into_iter().map(move |name| {
        let dir = root.join(&name);
        let meta =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).expect("meta"))
                .expect("json");
        (name, dir, meta)
    })
}

#[test]
fn host_kernels_match_onnx_node_tests() {
    let mut per_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, dir, meta) in node_tests() {
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
    // The node tests each family has a kernel for (onnx 1.23.2): a kernel that stops
    // generating drops its tests from the count, which would otherwise go unnoticed.
    let expected = [
        ("Attention", 108),
        ("Conv", 28),
        ("Elementwise", 388),
        ("Gemm", 15),
        ("Movement", 204),
        ("Quantization", 18),
        ("Reduction", 179),
    ];
    let run: Vec<(&str, usize)> = per_family
        .iter()
        .map(|(family, &(run, _))| (family.as_str(), run))
        .collect();
    assert_eq!(run, expected, "node tests run per kernel family");
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

/// Every float `Conv`, `AveragePool` and `MaxPool` node test rebuilt channels last runs on its
/// host kernel (which indexes NHWC images and OHWI weights) and matches the reference output
/// transposed.
#[test]
fn channels_last_kernels_match_onnx_node_tests() {
    let mut per_family: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, dir, meta) in node_tests() {
        let Some((family, result)) = channels_last_case(&dir, &meta) else {
            continue;
        };
        *per_family.entry(family).or_default() += 1;
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    for (family, run) in &per_family {
        println!("host kernels channels last, {family}: {run} node tests");
    }
    assert!(
        per_family.get("Conv").is_some_and(|&n| n >= 6)
            && per_family.get("Movement").is_some_and(|&n| n >= 10),
        "too few node tests ran channels last: {per_family:?}"
    );
    assert!(
        failures.is_empty(),
        "{} channels-last node tests fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Channels-last convolutions of shapes the node tests lack (odd sizes, groups, depthwise,
/// dilations and strides, one and three spatial axes, bias) on their host kernels, against
/// the CPU executor's channels-first convolution.
#[test]
fn channels_last_conv_kernels_match_the_cpu_executor() {
    // (input shape, weight shape, group, strides, dilations, pads)
    type Geometry = (
        &'static [usize],
        &'static [usize],
        i64,
        &'static [i64],
        &'static [i64],
        &'static [i64],
    );
    let cases: [Geometry; 6] = [
        (
            &[2, 6, 9, 7],
            &[10, 3, 3, 3],
            2,
            &[1, 1],
            &[1, 1],
            &[1, 1, 1, 1],
        ),
        (
            &[1, 8, 11, 10],
            &[8, 1, 3, 3],
            8,
            &[2, 2],
            &[1, 1],
            &[1, 0, 1, 2],
        ),
        (
            &[1, 5, 13, 9],
            &[7, 5, 3, 2],
            1,
            &[1, 2],
            &[2, 1],
            &[2, 0, 0, 1],
        ),
        (&[3, 4, 17], &[6, 4, 5], 1, &[2], &[1], &[2, 2]),
        (
            &[1, 3, 5, 6, 7],
            &[4, 3, 3, 3, 3],
            1,
            &[1, 1, 1],
            &[1, 1, 1],
            &[1, 1, 1, 1, 1, 1],
        ),
        (
            &[2, 37, 5, 5],
            &[33, 37, 1, 1],
            1,
            &[1, 1],
            &[1, 1],
            &[0, 0, 0, 0],
        ),
    ];
    let meta = serde_json::json!({});
    let mut passed = 0;
    for (i, (x, w, group, strides, dilations, pads)) in cases.into_iter().enumerate() {
        let mut graph = Graph::new("nchw");
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|k| ((k * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0)
                .collect()
        };
        let arrays = [
            Array::f32(x.to_vec(), values(x.iter().product(), 1)),
            Array::f32(w.to_vec(), values(w.iter().product(), 2)),
            Array::f32(vec![w[0]], values(w[0], 3)),
        ];
        let mut inputs = BTreeMap::new();
        let mut args = Vec::new();
        for (slot, a) in arrays.iter().enumerate() {
            let dims = a.shape.iter().map(|&d| Dim::known(d as i64)).collect();
            let ty = ValueType::Tensor(TensorType {
                dtype: DType::F32,
                shape: Some(dims),
            });
            let v = graph.add_input(&format!("in{slot}"), ty);
            inputs.insert(v, a.clone());
            args.push(Some(v));
        }
        let attrs = ConvAttrs {
            auto_pad: sparkc_ir::op::AutoPad::NotSet,
            dilations: dilations.to_vec(),
            group,
            kernel_shape: Vec::new(),
            pads: pads.to_vec(),
            strides: strides.to_vec(),
            layout: Layout::Nchw,
        };
        let out = untyped_output();
        let conv = graph.add_node("conv".into(), Op::Conv(attrs), &args, vec![out]);
        graph.outputs.push(ValueRef {
            node: conv,
            output: 0,
        });
        sparkc_ir::infer_graph(&mut graph).expect("a valid convolution");
        let feeds = arrays.iter().cloned().map(Value::Tensor).collect();
        let reference = sparkc_cpu::Executor::new(&graph)
            .and_then(|e| e.run(feeds))
            .expect("the CPU executor runs it");
        let Value::Tensor(y) = &reference[0] else {
            panic!("case {i}: a tensor output")
        };
        let (_, result) = run_channels_last(&graph, conv, &inputs, std::slice::from_ref(y), &meta)
            .unwrap_or_else(|| panic!("case {i}: no channels-last kernel"));
        result.unwrap_or_else(|e| panic!("case {i} ({x:?} * {w:?}, group {group}): {e}"));
        passed += 1;
    }
    println!("host kernels, channels-last Conv: {passed} geometries match the CPU executor");
}

/// Scatters the node tests lack — index tuples of depth 2 and 3, duplicate indices under a
/// reduction, negative indices, indices smaller than the data — on their host kernels, against
/// the CPU executor.
#[test]
fn scatter_kernels_match_the_cpu_executor() {
    let scatter_nd = |reduction: &str| Op::ScatterNd {
        reduction: reduction.into(),
    };
    let scatter_elements = |axis: i64, reduction: &str| Op::ScatterElements {
        axis,
        reduction: reduction.into(),
    };
    // (op, data shape, indices shape, indices, updates shape)
    type Case = (
        Op,
        &'static [usize],
        &'static [usize],
        &'static [i64],
        &'static [usize],
    );
    let cases: [Case; 5] = [
        (
            scatter_nd("add"),
            &[4, 5, 3],
            &[3, 2],
            &[0, 1, 3, -1, 0, 1],
            &[3, 3],
        ),
        (
            scatter_nd("none"),
            &[4, 5, 3],
            &[2, 2],
            &[2, 4, 1, 0],
            &[2, 3],
        ),
        (
            scatter_nd("max"),
            &[4, 5, 3],
            &[2, 1, 3],
            &[1, 2, 0, -1, -2, -1],
            &[2, 1],
        ),
        (
            scatter_elements(1, "mul"),
            &[3, 4],
            &[2, 2],
            &[3, -1, 0, 1],
            &[2, 2],
        ),
        (
            scatter_elements(0, "none"),
            &[3, 4, 2],
            &[2, 4, 1],
            &[0, 1, 2, 0, 2, 0, 1, 1],
            &[2, 4, 1],
        ),
    ];
    for (i, (op, data, index_shape, indices, updates)) in cases.into_iter().enumerate() {
        let name = op.name();
        let arrays = [
            Array::f32(data.to_vec(), ramp(data.iter().product(), 1)),
            Array::i64(index_shape.to_vec(), indices.to_vec()),
            Array::f32(updates.to_vec(), ramp(updates.iter().product(), 2)),
        ];
        matches_the_cpu_executor(op, &arrays)
            .unwrap_or_else(|e| panic!("case {i} ({name}, data {data:?}): {e}"));
    }
}

/// Casts to and from the narrow types — every code of each FP8, FP4, E8M0 and 2- and 4-bit
/// type decoded; f32 values of every exponent with fractions at and around each rounding
/// point, NaN, infinities and subnormals encoded, saturating or not, E8M0 by each rounding
/// mode; integers wrapped to sub-byte ones; odd lengths, so a packed last byte is partial — on
/// host kernels against the CPU executor, value for value and sign for sign.
#[test]
fn narrow_cast_kernels_match_the_cpu_executor() {
    let narrow = [
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::F8E8M0,
        DType::F4E2M1,
        DType::I4,
        DType::U4,
        DType::I2,
        DType::U2,
    ];
    // Every sign and exponent with the top ten fraction bits, each with no, low, middle and all
    // lower bits: values at, just past and between every format's rounding points.
    let mut values: Vec<f32> = (0..1u32 << 19)
        .step_by(3)
        .flat_map(|high| {
            [0u32, 1, 0x800, 0x1FFF].map(move |low| f32::from_bits((high << 13) | low))
        })
        .collect();
    values.extend([
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
    ]);
    let floats = Array::f32(vec![values.len()], values);
    let integers = Array::i64(vec![41], (-20..=20).map(|v| v * 3).collect());
    let cast = |to, saturate, round_mode: &str| Op::Cast {
        to,
        saturate,
        round_mode: round_mode.into(),
    };
    let exact = serde_json::json!({ "exact": true });
    let check = |op: Op, x: &Array| {
        let what = format!("{op:?} from {}", x.dtype());
        matches_the_cpu_executor_meta(op, &[Some(x.clone())], &[], &exact)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    };
    let mut checked = 0;
    for &dtype in &narrow {
        // Every code, and once more the first, for an odd count.
        let codes = 1u16 << dtype.bits().min(8);
        let mut all: Vec<u8> = (0..codes).map(|c| c as u8).collect();
        all.push(0);
        let coded = Array::new(vec![all.len()], sparkc_cpu::Data::Bits(dtype, all));
        for to in [DType::F32, DType::I32, DType::F8E5M2, DType::I4] {
            if to != dtype {
                check(cast(to, true, "up"), &coded);
                checked += 1;
            }
        }
        let saturations: &[bool] = if dtype.is_float() {
            &[true, false]
        } else {
            &[true]
        };
        let modes: &[&str] = if dtype == DType::F8E8M0 {
            &["up", "down", "nearest"]
        } else {
            &["up"]
        };
        for &saturate in saturations {
            for &mode in modes {
                check(cast(dtype, saturate, mode), &floats);
                check(cast(dtype, saturate, mode), &integers);
                checked += 2;
            }
        }
    }
    // Floats to every integer width: truncated toward zero, saturated to i64 (NaN as 0; ONNX
    // leaves both undefined) and wrapped to the width, as the CPU executor's casts do.
    for to in [
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
    ] {
        check(cast(to, true, "up"), &floats);
        checked += 1;
    }
    println!("host kernels, Cast: {checked} casts to and from narrow types and of floats to integers match the CPU executor");
}

/// DepthToSpace and SpaceToDepth in both channel orders with block sizes 2 and 3 on odd,
/// non-square images and two batch entries (the node tests have one 2×2 example), on host
/// kernels against the CPU executor.
#[test]
fn depth_and_space_kernels_match_the_cpu_executor() {
    let mut checked = 0;
    for b in [2i64, 3] {
        let bb = (b * b) as usize;
        let deep = Array::f32(vec![2, 2 * bb, 3, 5], ramp(2 * 2 * bb * 15, 5));
        let wide = Array::f32(
            vec![2, 2, 3 * b as usize, 5 * b as usize],
            ramp(2 * 2 * 15 * bb, 6),
        );
        for mode in ["DCR", "CRD"] {
            let d2s = Op::DepthToSpace {
                blocksize: b,
                mode: mode.into(),
            };
            let s2d = Op::SpaceToDepth {
                blocksize: b,
                mode: mode.into(),
            };
            for (op, x) in [(d2s, &deep), (s2d, &wide)] {
                let what = format!("{op:?}");
                matches_the_cpu_executor(op, std::slice::from_ref(x))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                checked += 1;
            }
        }
    }
    println!("host kernels, DepthToSpace/SpaceToDepth: {checked} cases match the CPU executor");
}

/// Range (whose node tests take their bounds as inputs, so no static length) with constant
/// bounds, as the optimizer leaves it: integers of two widths and floats, rising and falling,
/// a last step short of the limit — on host kernels, against the CPU executor.
#[test]
fn range_kernels_match_the_cpu_executor() {
    let ints = |v: [i64; 3]| v.map(|x| Array::i64(vec![], vec![x]));
    let i32s = |v: [i32; 3]| v.map(|x| Array::new(vec![], sparkc_cpu::Data::I32(vec![x])));
    let floats = |v: [f32; 3]| v.map(|x| Array::f32(vec![], vec![x]));
    let cases = [
        ints([0, 7, 1]),
        ints([10, -3, -4]),
        i32s([5, 300, 7]),
        floats([0.5, 3.7, 0.3]),
        floats([2.0, -2.0, -0.25]),
    ];
    for bounds in &cases {
        let arrays: Vec<Option<Array>> = bounds.iter().cloned().map(Some).collect();
        matches_the_cpu_executor_with(Op::Range, &arrays, &[0, 1, 2])
            .unwrap_or_else(|e| panic!("Range {bounds:?}: {e}"));
    }
    println!(
        "host kernels, Range: {} cases match the CPU executor",
        cases.len()
    );
}

/// Resizes the node tests lack: antialiased linear and cubic downscaling by several factors
/// (with and without `exclude_outside`, on one axis and on two), `tf_crop_and_resize` crops
/// reaching outside the image on two axes, `half_pixel_symmetric` both ways, and sizes that
/// keep the aspect ratio (`not_larger`, `not_smaller`) under linear interpolation, whose
/// common scale is not each axis's size ratio, and 8-bit images (rounded and saturated, not
/// truncated) — on host kernels, against the CPU executor.
#[test]
fn resize_kernels_match_the_cpu_executor() {
    let x = Array::f32(vec![1, 2, 9, 13], ramp(2 * 9 * 13, 8));
    let attrs = |mode: &str, ctm: &str, antialias: bool| sparkc_ir::op::ResizeAttrs {
        antialias,
        axes: Vec::new(),
        coordinate_transformation_mode: ctm.into(),
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: -7.5,
        keep_aspect_ratio_policy: "stretch".into(),
        mode: mode.into(),
        nearest_mode: "round_prefer_floor".into(),
    };
    let scales = |s: [f32; 4]| Some(Array::f32(vec![4], s.to_vec()));
    let sizes = |s: [i64; 4]| Some(Array::i64(vec![4], s.to_vec()));
    let mut cases: Vec<(sparkc_ir::op::ResizeAttrs, [Option<Array>; 4])> = Vec::new();
    for mode in ["linear", "cubic"] {
        for exclude_outside in [false, true] {
            for s in [
                [1.0, 1.0, 0.6, 0.6],
                [1.0, 1.0, 0.3, 1.0],
                [1.0, 1.0, 0.45, 1.5],
            ] {
                let mut a = attrs(mode, "half_pixel", true);
                a.exclude_outside = exclude_outside;
                cases.push((a, [Some(x.clone()), None, scales(s), None]));
            }
        }
        cases.push((
            attrs(mode, "pytorch_half_pixel", true),
            [Some(x.clone()), None, None, sizes([1, 2, 4, 5])],
        ));
    }
    for mode in ["nearest", "linear", "cubic"] {
        let roi = Array::f32(vec![8], vec![0.0, 0.0, -0.2, 0.3, 1.0, 1.0, 0.9, 1.25]);
        cases.push((
            attrs(mode, "tf_crop_and_resize", false),
            [Some(x.clone()), Some(roi), None, sizes([1, 2, 7, 6])],
        ));
        for s in [[1.0, 1.0, 0.7, 1.8], [1.0, 1.0, 2.5, 0.4]] {
            cases.push((
                attrs(mode, "half_pixel_symmetric", false),
                [Some(x.clone()), None, scales(s), None],
            ));
        }
    }
    // 8-bit images: interpolated values rounded and saturated (cubic overshoots the range),
    // the extrapolation value of a crop saturated too.
    let bytes: Vec<u8> = (0..2 * 9 * 13).map(|i| ((i * 97) % 256) as u8).collect();
    let image = Array::new(vec![1, 2, 9, 13], sparkc_cpu::Data::U8(bytes));
    for mode in ["linear", "cubic"] {
        cases.push((
            attrs(mode, "half_pixel", false),
            [
                Some(image.clone()),
                None,
                scales([1.0, 1.0, 1.7, 0.8]),
                None,
            ],
        ));
    }
    let roi = Array::f32(vec![8], vec![0.0, 0.0, -0.2, 0.3, 1.0, 1.0, 0.9, 1.25]);
    cases.push((
        attrs("linear", "tf_crop_and_resize", false),
        [Some(image.clone()), Some(roi), None, sizes([1, 2, 7, 6])],
    ));
    for policy in ["not_larger", "not_smaller"] {
        let mut a = attrs("linear", "half_pixel", false);
        a.keep_aspect_ratio_policy = policy.into();
        a.axes = vec![2, 3];
        let two = Some(Array::i64(vec![2], vec![5, 20]));
        cases.push((a, [Some(x.clone()), None, None, two]));
    }
    for (i, (attrs, arrays)) in cases.iter().enumerate() {
        let what = format!(
            "case {i}: {} {} antialias {} exclude_outside {} {}",
            attrs.mode,
            attrs.coordinate_transformation_mode,
            attrs.antialias,
            attrs.exclude_outside,
            attrs.keep_aspect_ratio_policy
        );
        // An interpolated integer is truncated; computed in f32 here and in f64 by the CPU
        // executor, a value on an integer may truncate to either side of it.
        let interpolated_integers =
            attrs.mode != "nearest" && arrays[0].as_ref().is_some_and(|a| a.dtype().is_integer());
        let meta = if interpolated_integers {
            serde_json::json!({ "atol": 1.0 })
        } else {
            serde_json::json!({})
        };
        matches_the_cpu_executor_meta(Op::Resize(attrs.clone()), arrays, &[1, 2, 3], &meta)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    println!(
        "host kernels, Resize: {} extra cases match the CPU executor",
        cases.len()
    );
}

/// Quantizing and dequantizing with a scale per index of an axis that is not the last, where
/// the last axis has as many entries (so numpy broadcasting would silently scale along the
/// wrong one), on host kernels, against the CPU executor.
#[test]
fn per_axis_quantization_kernels_match_the_cpu_executor() {
    let codes: Vec<u8> = (0..18).map(|i| (i * 37 % 256) as u8).collect();
    let x_codes = Array::new(vec![2, 3, 3], sparkc_cpu::Data::U8(codes));
    let x = Array::f32(vec![2, 3, 3], ramp(18, 9));
    let scale = Array::f32(vec![3], vec![0.5, 0.125, 2.0]);
    let zero = Array::new(vec![3], sparkc_cpu::Data::U8(vec![3, 128, 250]));
    let mut checked = 0;
    for axis in [1i64, 0] {
        let (scale, zero) = if axis == 0 {
            (
                Array::f32(vec![2], vec![0.5, 2.0]),
                Array::new(vec![2], sparkc_cpu::Data::U8(vec![3, 250])),
            )
        } else {
            (scale.clone(), zero.clone())
        };
        let dequantize = Op::DequantizeLinear {
            axis,
            block_size: 0,
            output_dtype: None,
        };
        let quantize = Op::QuantizeLinear {
            axis,
            block_size: 0,
            output_dtype: Some(DType::U8),
            saturate: true,
        };
        for (op, input) in [(dequantize, &x_codes), (quantize, &x)] {
            let what = format!("{op:?}");
            let arrays = [input.clone(), scale.clone(), zero.clone()];
            matches_the_cpu_executor(op, &arrays).unwrap_or_else(|e| panic!("{what}: {e}"));
            checked += 1;
        }
    }
    println!("host kernels, per-axis quantization: {checked} cases match the CPU executor");
}

/// `n` values in [-2, 2], varied by `seed`.
fn ramp(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|k| ((k * 7 + seed * 13) % 23) as f32 / 5.0 - 2.0)
        .collect()
}

/// Runs `op` on `arrays` (its inputs, in order) through its host kernel and through the CPU
/// executor, and compares.
fn matches_the_cpu_executor(op: Op, arrays: &[Array]) -> Result<(), String> {
    let fed: Vec<Option<Array>> = arrays.iter().cloned().map(Some).collect();
    matches_the_cpu_executor_with(op, &fed, &[])
}

/// [`matches_the_cpu_executor`] with some inputs constants (`consts`, by slot) and some
/// omitted (`None`).
fn matches_the_cpu_executor_with(
    op: Op,
    arrays: &[Option<Array>],
    consts: &[usize],
) -> Result<(), String> {
    matches_the_cpu_executor_meta(op, arrays, consts, &serde_json::json!({}))
}

/// [`matches_the_cpu_executor_with`], compared as a node test's `meta` says (tolerances, or
/// `exact`).
fn matches_the_cpu_executor_meta(
    op: Op,
    arrays: &[Option<Array>],
    consts: &[usize],
    meta: &serde_json::Value,
) -> Result<(), String> {
    let mut graph = Graph::new("single");
    let mut inputs = BTreeMap::new();
    let mut args = Vec::new();
    let mut feeds = Vec::new();
    for (slot, a) in arrays.iter().enumerate() {
        let Some(a) = a else {
            args.push(None);
            continue;
        };
        if consts.contains(&slot) {
            args.push(Some(graph.add_const(&format!("c{slot}"), a.to_tensor())));
            continue;
        }
        let dims = a.shape.iter().map(|&d| Dim::known(d as i64)).collect();
        let ty = ValueType::Tensor(TensorType {
            dtype: a.dtype(),
            shape: Some(dims),
        });
        let v = graph.add_input(&format!("in{slot}"), ty);
        inputs.insert(v, a.clone());
        args.push(Some(v));
        feeds.push(Value::Tensor(a.clone()));
    }
    let id = graph.add_node("node".into(), op, &args, vec![untyped_output()]);
    graph.outputs.push(ValueRef {
        node: id,
        output: 0,
    });
    sparkc_ir::infer_graph(&mut graph).map_err(|e| e.to_string())?;
    let reference = sparkc_cpu::Executor::new(&graph)
        .and_then(|e| e.run(feeds))
        .map_err(|e| format!("the CPU executor: {e}"))?;
    let Value::Tensor(y) = &reference[0] else {
        return Err("a non-tensor output".into());
    };
    let case = Ok((inputs, vec![y.clone()]));
    let (_, result) = run_kernel(&graph, id, &case, meta).ok_or("no host kernel")?;
    result
}

/// GridSample in combinations the node tests lack — cubic and nearest taps with reflection
/// and border padding, points far outside the input (several reflections), three spatial
/// axes — on host kernels, against the CPU executor.
#[test]
fn grid_sample_kernels_match_the_cpu_executor() {
    let mut checked = 0;
    for (x, grid) in [
        (vec![1, 2, 5, 4], vec![1, 3, 6, 2]),
        (vec![2, 1, 3, 4, 5], vec![2, 2, 3, 2, 3]),
    ] {
        let points: usize = grid.iter().product();
        // Coordinates from -3.31 to 3.07: inside, just outside, and several ranges beyond,
        // none a float rounding away from a half-way mark (where f32 and the CPU's f64 may
        // round to different taps).
        let coords: Vec<f32> = (0..points)
            .map(|k| ((k * 11) % 23) as f32 * 0.29 - 3.31)
            .collect();
        let arrays = [
            Array::f32(x.clone(), ramp(x.iter().product(), 3)),
            Array::f32(grid.clone(), coords),
        ];
        let modes: &[&str] = if x.len() == 4 {
            &["nearest", "linear", "cubic"]
        } else {
            &["nearest", "linear"]
        };
        for &mode in modes {
            for padding in ["zeros", "border", "reflection"] {
                for align_corners in [false, true] {
                    let op = Op::GridSample {
                        align_corners,
                        mode: mode.into(),
                        padding_mode: padding.into(),
                    };
                    matches_the_cpu_executor(op, &arrays).unwrap_or_else(|e| {
                        panic!("{x:?}, {mode}, {padding}, align_corners {align_corners}: {e}")
                    });
                    checked += 1;
                }
            }
        }
    }
    println!("host kernels, GridSample: {checked} extra combinations match the CPU executor");
}

/// DFTs and STFTs the node tests lack — complex input, padded and truncated lengths, the
/// inverse of a complex spectrum, one-sided inverses of odd and even length, other axes, a
/// complex signal in frames — on host kernels, against the CPU executor.
#[test]
fn fourier_kernels_match_the_cpu_executor() {
    let scalar = |v: i64| Some(Array::i64(vec![], vec![v]));
    let signal =
        |shape: &[usize]| Some(Array::f32(shape.to_vec(), ramp(shape.iter().product(), 4)));
    let dft = |inverse, onesided| Op::Dft { inverse, onesided };
    // (op, x shape, dft_length, axis)
    let cases: [(Op, &[usize], Option<i64>, i64); 7] = [
        (dft(false, false), &[2, 7, 2], Some(11), 1),
        (dft(false, false), &[3, 12, 2, 1], Some(5), 1),
        (dft(true, false), &[2, 9, 3, 2], None, 1),
        (dft(false, true), &[1, 3, 10, 1], Some(9), 2),
        (dft(true, true), &[2, 6, 2], None, 1),
        (dft(true, true), &[2, 6, 2], Some(11), 1),
        (dft(false, false), &[4, 5, 2], None, 0),
    ];
    for (i, (op, x, length, axis)) in cases.into_iter().enumerate() {
        let arrays = [signal(x), length.and_then(scalar), scalar(axis)];
        matches_the_cpu_executor_with(op, &arrays, &[1, 2]).unwrap_or_else(|e| {
            panic!("DFT case {i} ({x:?}, length {length:?}, axis {axis}): {e}")
        });
    }
    for onesided in [false, true] {
        let window = Some(Array::f32(vec![6], ramp(6, 5)));
        let arrays = [signal(&[2, 20, 2]), scalar(3), window, scalar(6)];
        matches_the_cpu_executor_with(Op::Stft { onesided }, &arrays, &[1, 3])
            .unwrap_or_else(|e| panic!("STFT, onesided {onesided}: {e}"));
    }
}

/// TensorScatter (a KV cache written at each batch entry's position): wrapping around in
/// circular mode, write indices per batch entry, no write indices, other axes — on host
/// kernels, against the CPU executor.
#[test]
fn tensor_scatter_kernels_match_the_cpu_executor() {
    // (cache shape, update shape, axis, mode, write indices)
    type Case = (
        &'static [usize],
        &'static [usize],
        i64,
        &'static str,
        Option<&'static [i64]>,
    );
    let cases: [Case; 4] = [
        (&[2, 3, 8, 4], &[2, 3, 3, 4], 2, "circular", Some(&[6, 1])),
        (&[3, 5, 2], &[3, 2, 2], 1, "linear", Some(&[0, 3, 1])),
        (&[2, 6], &[2, 4], -1, "linear", None),
        (&[2, 4, 3], &[2, 4, 3], -2, "circular", Some(&[3, 0])),
    ];
    for (i, (cache, update, axis, mode, writes)) in cases.into_iter().enumerate() {
        let arrays = [
            Some(Array::f32(cache.to_vec(), ramp(cache.iter().product(), 6))),
            Some(Array::f32(
                update.to_vec(),
                ramp(update.iter().product(), 7),
            )),
            writes.map(|w| Array::i64(vec![w.len()], w.to_vec())),
        ];
        let op = Op::TensorScatter {
            axis,
            mode: mode.into(),
        };
        matches_the_cpu_executor_with(op, &arrays, &[])
            .unwrap_or_else(|e| panic!("case {i} ({cache:?}, {mode}): {e}"));
    }
}

/// RoiAlign over regions the node tests lack — partly outside the image, smaller than a pixel,
/// from the second image — with adaptive and fixed sampling, both modes and both coordinate
/// conventions, on host kernels, against the CPU executor.
#[test]
fn roi_align_kernels_match_the_cpu_executor() {
    let x = Array::f32(vec![2, 3, 10, 8], ramp(2 * 3 * 10 * 8, 8));
    let rois = Array::f32(
        vec![4, 4],
        vec![
            0.0, 0.0, 7.0, 9.0, //
            -3.0, 2.5, 4.2, 14.0, //
            3.1, 3.3, 3.4, 3.5, //
            1.5, 0.5, 9.5, 6.0,
        ],
    );
    let batch = Array::i64(vec![4], vec![0, 1, 1, 0]);
    let mut checked = 0;
    for transform in ["half_pixel", "output_half_pixel"] {
        for mode in ["avg", "max"] {
            for sampling_ratio in [0, 2] {
                let op = Op::RoiAlign {
                    coordinate_transformation_mode: transform.into(),
                    mode: mode.into(),
                    output_height: 3,
                    output_width: 2,
                    sampling_ratio,
                    spatial_scale: 0.75,
                };
                matches_the_cpu_executor(op, &[x.clone(), rois.clone(), batch.clone()])
                    .unwrap_or_else(|e| panic!("{transform}, {mode}, ratio {sampling_ratio}: {e}"));
                checked += 1;
            }
        }
    }
    println!("host kernels, RoiAlign: {checked} extra combinations match the CPU executor");
}
