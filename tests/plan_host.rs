//! An artifact's GPU plan executed the way the CUDA executor executes it — one arena placed by
//! the memory plan, weights read from the weight section, each kernel given buffer addresses
//! and symbol values in its recorded order — but with every kernel built for the host and run
//! under LLVM's JIT. Its outputs must match the CPU executor's on every whole model: this
//! checks the plan, the bindings, the parameter ABI and the fused kernels' code, with no GPU.

use sparkc_artifact::{arrange, BufferKind};
use sparkc_cli::compile::pass_options;
use sparkc_cli::execute_args;
use sparkc_cli::quantize::{optimize_quantized, Request};
use sparkc_ir::op::Layout;
use sparkc_ir::Graph;
use sparkc_kernels::plan::{generate, request};
use sparkc_kernels::{host, Precision, Target};
use sparkc_passes::quantize::Scheme;
use sparkc_runtime::{sample_inputs, Artifact, Device, Session, Tensor};
use sparkc_tests::{
    channels_last_convolutions, contrib_models, generated, qdq_models, whole_models,
};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Compiles `path` with `extra` arguments, runs its first GPU plan on host kernels built from
/// `graph` (the optimized graph the artifact holds), and compares with the CPU executor.
fn check_plan(name: &str, path: &Path, extra: &[&str], graph: &Graph, tolerance: f32) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut report = String::new();
    let spark = dir.path().join(format!("{}.spark", name.replace('/', "_")));
    let (model, out) = (path.display().to_string(), spark.display().to_string());
    let mut args = vec!["sparkc", "compile", &model, "-o", &out];
    args.extend_from_slice(extra);
    execute_args(args).unwrap_or_else(|e| panic!("{name}: compile: {e:#}"));
    let artifact = Artifact::open(&spark).expect("opens");
    let plan = &artifact.header.plans[0];
    let buffers = &artifact
        .header
        .memory
        .as_ref()
        .expect("a memory plan")
        .buffers;
    let ids: HashMap<&str, _> = graph
        .dag
        .node_indices()
        .map(|id| (graph.node(id).name.as_str(), id))
        .collect();
    let mut dims = BTreeMap::new();
    for spec in &artifact.header.inputs {
        for d in &spec.shape {
            for f in d.terms.iter().flat_map(|t| t.factors.iter()) {
                if !f.symbol.is_empty() {
                    dims.insert(f.symbol.clone(), 2);
                }
            }
        }
    }
    let given = sample_inputs(&artifact.header.inputs, &dims, 7).expect("inputs");
    let place = arrange(buffers, &|s| dims.get(s).copied()).expect("arranges");
    // 16-byte aligned, as device allocations are.
    let mut arena = vec![0u128; (place.arena_bytes as usize).div_ceil(16)];
    let arena_at = arena.as_mut_ptr() as u64;
    let weights_at = artifact.weights().as_ptr() as u64;
    for (i, b) in buffers.iter().enumerate() {
        if b.kind() == BufferKind::Input {
            let data = given[b.position as usize].1.bytes();
            assert_eq!(
                data.len() as u64,
                place.sizes[i],
                "{name}: input {}",
                b.name
            );
            // SAFETY: the arrangement places the input inside the arena.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data.as_ptr(),
                    (arena_at + place.offsets[i]) as *mut u8,
                    data.len(),
                )
            };
        }
    }
    for k in &plan.kernels {
        let id = ids[k.node.as_str()];
        let req = request(graph, id, k.name.clone(), Target::Host, Precision::Tf32)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", k.node));
        let cx = inkwell::context::Context::create();
        let kernel = generate(&cx, &req).unwrap_or_else(|e| panic!("{name}: {}: {e}", k.node));
        assert_eq!(kernel.info.symbols, k.symbols, "{name}: {}", k.node);
        let mut words: Vec<u64> = k
            .buffers
            .iter()
            .map(|&b| {
                let base = match buffers[b as usize].kind() {
                    BufferKind::Weight => weights_at,
                    _ => arena_at,
                };
                base + place.offsets[b as usize]
            })
            .collect();
        words.extend(k.symbols.iter().map(|s| dims[s] as u64));
        // SAFETY: the memory plan sizes every buffer for these dims, as on a GPU.
        unsafe { host::run_words(&kernel, &words) }
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", k.node));
    }
    let named: Vec<(&str, Tensor)> = given.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let reference = Session::new(&artifact, Device::Cpu)
        .expect("a CPU session")
        .run(&named)
        .expect("the CPU runs it");
    let outputs = &artifact
        .header
        .memory
        .as_ref()
        .expect("a memory plan")
        .outputs;
    assert_eq!(
        outputs.len(),
        reference.len(),
        "{name}: every output has a buffer"
    );
    for (position, &i) in outputs.iter().enumerate() {
        let (i, b) = (i as usize, &buffers[i as usize]);
        let want = &reference[position].1;
        let base = match b.kind() {
            BufferKind::Weight => weights_at,
            _ => arena_at,
        };
        let start = (base + place.offsets[i]) as *const u8;
        // SAFETY: the output lies inside the arena or the weight section.
        let bytes = unsafe { std::slice::from_raw_parts(start, place.sizes[i] as usize) };
        let got = Tensor::new(want.dtype(), want.shape().to_vec(), bytes.to_vec())
            .expect("output bytes match the output's shape");
        let (g, w) = (got.to_f32(), want.to_f32());
        let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = g
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        report.push_str(&format!(
            "{name:<28} {:<16} {:>4} kernels  max abs diff {worst:.2e}\n",
            b.name,
            plan.kernels.len()
        ));
        assert!(
            worst <= tolerance * scale,
            "{name}: output {} differs by {worst}",
            b.name
        );
    }
    drop(arena);
    report
}

/// The optimizer's options for an artifact with GPU kernels, convolutions in `layout`.
fn gpu_options(layout: Layout) -> sparkc_passes::Options {
    pass_options(layout, true, Precision::Tf32)
}

/// The model at `path` through the standard pipeline: the graph its artifact is compiled from
/// (the optimizer is deterministic), to build each node's kernel for the host.
fn optimized(path: &Path) -> Graph {
    let mut model = sparkc_onnx::load(path).expect("imports");
    sparkc_passes::standard_with(gpu_options(Layout::Nchw))
        .and_then(|mut p| p.run(&mut model.graph))
        .expect("optimizes");
    model.graph
}

/// The model of ONNX node test `name`.
fn node_test(name: &str) -> PathBuf {
    generated().join("node").join(name).join("model.onnx")
}

/// Checks the GPU plan of each float model of `models`, optimized as `sparkc compile` does it.
fn check_float_plans(models: Vec<(String, PathBuf)>) {
    let mut report = String::new();
    for (name, path) in models {
        report.push_str(&check_plan(&name, &path, &[], &optimized(&path), 2e-4));
    }
    print!("{report}");
}

/// Checks the GPU plan of each ONNX node test of `names`, optimized as `sparkc compile` does it.
fn check_node_test_plans(names: &[&str], tolerance: f32) {
    let mut report = String::new();
    for &name in names {
        let path = node_test(name);
        report.push_str(&check_plan(name, &path, &[], &optimized(&path), tolerance));
    }
    print!("{report}");
}

#[test]
fn every_whole_model_runs_its_gpu_plan_on_host_kernels() {
    check_float_plans(whole_models());
}

/// Models as onnxruntime's optimizers save them: its fused ops, imported as the ops they fuse,
/// fused again by sparkc.
#[test]
fn onnxruntime_optimized_models_run_their_gpu_plans_on_host_kernels() {
    check_float_plans(contrib_models());
}

#[test]
fn channels_last_models_run_their_gpu_plans_on_host_kernels() {
    let mut report = String::new();
    let options = gpu_options(Layout::Nhwc);
    // Residual blocks, concatenations, depthwise and grouped convolutions, global pooling.
    let models = [
        "tiny_cnn",
        "mobilenet",
        "light_resnet50",
        "light_densenet121",
    ];
    let mut checked = 0;
    for (name, path) in whole_models() {
        if !models.contains(&name.as_str()) {
            continue;
        }
        let mut model = sparkc_onnx::load(&path).expect("imports");
        sparkc_passes::standard_with(options)
            .and_then(|mut p| p.run(&mut model.graph))
            .expect("optimizes");
        let convolutions = channels_last_convolutions(&model.graph);
        if convolutions == 0 {
            continue;
        }
        let label = format!("{name}/nhwc");
        let args = ["--layout", "nhwc"];
        report.push_str(&check_plan(&label, &path, &args, &model.graph, 2e-4));
        report.push_str(&format!(
            "{label}: {convolutions} convolutions channels last\n"
        ));
        checked += 1;
    }
    assert_eq!(
        checked,
        models.len(),
        "every model has channels-last convolutions"
    );
    print!("{report}");
}

#[test]
fn quantized_models_run_their_gpu_plans_on_host_kernels() {
    let mut report = String::new();
    // (model, format, activations rounded to the weights' FP4 blocks)
    let cases = [
        ("bert_encoder", Scheme::Fp8, false),
        ("gpt_decoder", Scheme::Nvfp4, false),
        ("gpt_decoder", Scheme::Nvfp4, true),
        ("mobilenet", Scheme::Int8, false),
        ("bert_encoder", Scheme::Mxfp4, false),
        ("bert_encoder", Scheme::Mxfp4, true),
        ("tiny_cnn", Scheme::Bf16, false),
    ];
    let models: HashMap<String, PathBuf> = whole_models().into_iter().collect();
    for (name, scheme, block_activations) in cases {
        let path = &models[name];
        let mut request = Request::seeded(Some(scheme));
        request.block_activations = block_activations;
        request.options = gpu_options(Layout::Nchw);
        let (model, _) = optimize_quantized(path, &request).expect("quantizes");
        let mut args = vec!["--quantize", scheme.name()];
        let mut label = format!("{name}/{scheme}");
        if block_activations {
            args.extend(["--activations", scheme.name()]);
            label.push_str("-a4");
        }
        report.push_str(&check_plan(&label, path, &args, &model.graph, 1e-3));
    }
    for (name, path) in qdq_models() {
        let mut request = Request::seeded(None);
        request.options = gpu_options(Layout::Nchw);
        let (model, _) = optimize_quantized(&path, &request).expect("optimizes");
        report.push_str(&check_plan(&name, &path, &[], &model.graph, 1e-3));
    }
    print!("{report}");
}

#[test]
fn outputs_that_are_views_of_inputs_or_constants_are_read_from_their_buffers() {
    // Flatten and a bare Clip leave the output a view of the input, Dropout in inference is
    // the identity, BitCast reads the same bytes as another type, and a Constant's output lives
    // in the weight section: no kernel writes them.
    check_node_test_plans(
        &[
            "test_flatten_axis1",
            "test_bitcast_2d_float32_to_int32",
            "test_bitcast_uint16_to_int16",
            "test_clip_default_inbounds_expanded",
            "test_dropout_default",
            "test_constant",
        ],
        0.0,
    );
}

#[test]
fn products_of_vectors_run_their_gpu_plans_on_host_kernels() {
    // The optimizer makes them matrix products between reshapes, which the product kernels
    // take.
    check_node_test_plans(
        &[
            "test_matmul_1d_1d",
            "test_matmul_1d_3d",
            "test_matmul_4d_1d",
        ],
        2e-4,
    );
}

#[test]
fn unrolled_recurrent_layers_run_their_gpu_plans_on_host_kernels() {
    let mut report = String::new();
    for name in [
        "test_lstm_defaults",
        "test_lstm_bidirectional",
        "test_lstm_batchwise",
        "test_lstm_reverse",
        "test_lstm_with_initial_bias",
        "test_lstm_with_peepholes",
        "test_gru_defaults",
        "test_gru_bidirectional",
        "test_gru_batchwise",
        "test_gru_reverse",
        "test_gru_seq_length",
        "test_gru_with_initial_bias",
        "test_rnn_seq_length",
        "test_simple_rnn_batchwise",
        "test_simple_rnn_defaults",
        "test_simple_rnn_with_initial_bias",
    ] {
        let path = node_test(name);
        let graph = optimized(&path);
        let recurrent = graph.dag.node_weights().any(|n| {
            use sparkc_ir::Op::{Gru, Lstm, Rnn};
            matches!(n.op, Lstm(_) | Gru(_) | Rnn(_))
        });
        assert!(!recurrent, "{name}: the layer is unrolled");
        report.push_str(&check_plan(name, &path, &[], &graph, 1e-4));
    }
    print!("{report}");
}
