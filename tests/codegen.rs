//! Codegen: every kernel of every whole model (and of quantized ones, in every format, and of the
//! CNNs with channels-last convolutions), for every target, assembles with `ptxas`.
//!
//! `ptxas` comes from the `nvidia-cuda-nvcc` PyPI package (the test command installs it); set
//! `PTXAS` to use another. The count of kernels assembled per target is printed.

use sparkc_cli::compile::pass_options;
use sparkc_cli::quantize::{optimize_quantized, Request};
use sparkc_ir::op::{AutoPad, ConvAttrs, Layout};
use sparkc_ir::{infer_graph, DType, Dim, Graph, Op, TensorType, Value, ValueRef, ValueType};
use sparkc_kernels::{lower_graph, KernelError, Output, Precision, Sm};
use sparkc_passes::quantize::Scheme;
use sparkc_tests::{contrib_models, qdq_models, whole_models};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn ptxas() -> PathBuf {
    if let Ok(p) = std::env::var("PTXAS") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import site; print('\\n'.join(site.getsitepackages()))",
        ])
        .output()
        .expect("python3 runs");
    let found = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|sp| Path::new(sp).join("nvidia/cu13/bin/ptxas"))
        .find(|p| p.exists());
    found.expect("ptxas: pip install nvidia-cuda-nvcc (or set PTXAS)")
}

/// Writes each kernel's PTX as `NAME.ptx` in `folder`; returns the files.
fn write_ptx(folder: &Path, lowering: sparkc_kernels::Lowering) -> Vec<PathBuf> {
    std::fs::create_dir_all(folder).expect("temp dir");
    lowering
        .kernels
        .into_iter()
        .map(|k| {
            let f = folder.join(format!("{}.ptx", k.info.name));
            std::fs::write(&f, k.text).expect("write PTX");
            f
        })
        .collect()
}

/// Runs `lower` for each target on a thread of its own (LLVM's pipeline lowers one kernel at
/// a time, so this keeps the cores busy); returns each target's files.
fn per_target(sms: &[Sm], lower: impl Fn(Sm) -> Vec<PathBuf> + Sync) -> Vec<(Sm, Vec<PathBuf>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = sms
            .iter()
            .map(|&sm| {
                let lower = &lower;
                s.spawn(move || (sm, lower(sm)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a lowering thread"))
            .collect()
    })
}

/// Whether lowering refused a kernel as unsafe to run (a barrier only some threads reach).
fn is_unsafe(e: &KernelError) -> bool {
    match e {
        KernelError::Unsafe(_) => true,
        KernelError::Node { cause, .. } => is_unsafe(cause),
        _ => false,
    }
}

/// Runs ptxas on each file, two at a time; returns the failures.
fn assemble(ptxas: &Path, sm: Sm, files: &[PathBuf]) -> Vec<String> {
    let chunks: Vec<&[PathBuf]> = files.chunks(files.len().div_ceil(2).max(1)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    let mut failures = Vec::new();
                    for f in chunk {
                        let out = Command::new(ptxas)
                            .arg(format!("-arch={}", sm.name()))
                            .arg(f)
                            .args(["-o", "/dev/null"])
                            .output()
                            .expect("ptxas runs");
                        if !out.status.success() {
                            failures.push(format!(
                                "{} ({sm}): {}",
                                f.display(),
                                String::from_utf8_lossy(&out.stderr)
                            ));
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("ptxas thread"))
            .collect()
    })
}

#[test]
fn every_kernel_of_every_model_assembles_for_every_target() {
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("sparkc-ptx-{}", std::process::id()));
    let mut failures = Vec::new();
    let mut report = Vec::new();
    let mut models = Vec::new();
    for (name, path) in whole_models() {
        let mut model = sparkc_onnx::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        sparkc_passes::standard_with(pass_options(Layout::Nchw, true, Precision::Tf32))
            .and_then(|mut passes| passes.run(&mut model.graph))
            .unwrap_or_else(|e| panic!("{name}: optimize: {e}"));
        models.push((name, model));
    }
    // Channels-last convolutions, on the models with residual blocks, concatenations, groups
    // and depthwise convolutions.
    let channels_last = [
        "tiny_cnn",
        "mobilenet",
        "light_resnet50",
        "light_densenet121",
        "light_shufflenet",
        "light_squeezenet",
    ];
    for (name, path) in whole_models() {
        if !channels_last.contains(&name.as_str()) {
            continue;
        }
        let mut model = sparkc_onnx::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        sparkc_passes::standard_with(pass_options(Layout::Nhwc, true, Precision::Tf32))
            .and_then(|mut passes| passes.run(&mut model.graph))
            .unwrap_or_else(|e| panic!("{name}: optimize: {e}"));
        models.push((format!("{name}_nhwc"), model));
    }
    // Quantized models: every format's quantized products (and FP4 activations), quantize and
    // dequantize kernels and rounding casts, and the QDQ models.
    let paths: BTreeMap<String, PathBuf> = whole_models().into_iter().collect();
    let quantized = Scheme::ALL
        .iter()
        .map(|&s| ("bert_encoder", s, false))
        .chain([
            ("mobilenet", Scheme::Int8, false),
            ("mobilenet", Scheme::Fp8, false),
            ("bert_encoder", Scheme::Nvfp4, true),
            ("bert_encoder", Scheme::Mxfp4, true),
        ]);
    let mut sources: Vec<(String, PathBuf, Option<Scheme>, bool)> = quantized
        .map(|(name, s, a4)| {
            let label = if a4 {
                format!("{name}_{s}_a4")
            } else {
                format!("{name}_{s}")
            };
            (label, paths[name].clone(), Some(s), a4)
        })
        .collect();
    sources.extend(
        qdq_models()
            .into_iter()
            .chain(contrib_models())
            .map(|(n, p)| (n, p, None, false)),
    );
    for (name, path, scheme, block_activations) in sources {
        let mut request = Request::seeded(scheme);
        request.block_activations = block_activations;
        request.options = pass_options(Layout::Nchw, true, Precision::Tf32);
        let (model, _) = optimize_quantized(&path, &request)
            .unwrap_or_else(|e| panic!("{name}: quantize: {e:#}"));
        models.push((name, model));
    }
    let per_target = per_target(&Sm::ALL, |sm| {
        let mut files = Vec::new();
        for (name, model) in &models {
            let lowering = lower_graph(&model.graph, Output::Ptx(sm), Precision::default(), None)
                .unwrap_or_else(|e| panic!("{name} for {sm}: {e}"));
            files.extend(write_ptx(&dir.join(sm.name()).join(name), lowering));
        }
        files
    });
    for (sm, files) in per_target {
        let failed = assemble(&ptxas, sm, &files);
        report.push(format!(
            "{sm}: {} of {} kernels assembled",
            files.len() - failed.len(),
            files.len()
        ));
        failures.extend(failed);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "ptxas over {} whole models:\n  {}",
        models.len(),
        report.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} kernels failed ptxas:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One product node over inputs of the given types, typed by inference.
fn product_graph(op: Op, a: (DType, &[Dim]), b: (DType, &[Dim])) -> Graph {
    let mut g = Graph::new("product");
    let input = |g: &mut Graph, name: &str, (dtype, dims): (DType, &[Dim])| {
        g.add_input(
            name,
            ValueType::Tensor(TensorType::new(dtype, dims.to_vec())),
        )
    };
    let a = input(&mut g, "a", a);
    let b = input(&mut g, "b", b);
    let out = Value {
        name: "y".into(),
        ty: ValueType::Tensor(TensorType::new(DType::F32, vec![])),
        known: None,
    };
    let id = g.add_node("y".into(), op, &[Some(a), Some(b)], vec![out]);
    g.outputs = vec![ValueRef {
        node: id,
        output: 0,
    }];
    infer_graph(&mut g).expect("the product is well typed");
    g
}

#[test]
fn tensor_core_variants_assemble_for_every_target() {
    let (m, s) = (Dim::sym("M"), Dim::sym("S"));
    let k = Dim::known;
    let matmul = Op::MatMul;
    let nt = Op::TransposedMatMul {
        trans_a: false,
        trans_b: true,
    };
    let tt = Op::Gemm {
        alpha: 0.5,
        beta: 1.0,
        trans_a: true,
        trans_b: true,
    };
    let nhwc = Op::Conv(ConvAttrs {
        auto_pad: AutoPad::SameUpper,
        dilations: Vec::new(),
        group: 1,
        kernel_shape: Vec::new(),
        pads: Vec::new(),
        strides: Vec::new(),
        layout: Layout::Nhwc,
    });
    // (case, graph, precision, the variant the kernel must be)
    let cases = [
        (
            "bf16, B through registers",
            product_graph(
                matmul.clone(),
                (DType::BF16, &[m.clone(), k(256)]),
                (DType::BF16, &[k(256), k(1024)]),
            ),
            Precision::Tf32,
            "mma.bf16 128x128x32",
        ),
        (
            "f16, both operands by cp.async",
            product_graph(
                nt.clone(),
                (DType::F16, &[m.clone(), k(256)]),
                (DType::F16, &[k(1024), k(256)]),
            ),
            Precision::Tf32,
            "mma.f16 128x128x32",
        ),
        (
            "bf16, both transposed, unaligned k",
            product_graph(
                tt,
                (DType::BF16, &[k(250), k(512)]),
                (DType::BF16, &[k(384), k(250)]),
            ),
            Precision::Tf32,
            "mma.bf16",
        ),
        (
            "tf32, batched with a symbolic length",
            product_graph(
                matmul.clone(),
                (DType::F32, &[k(2), s.clone(), k(64)]),
                (DType::F32, &[k(2), k(64), s]),
            ),
            Precision::Tf32,
            "mma.tf32 128x128x16",
        ),
        (
            "tf32, few rows",
            product_graph(
                nt,
                (DType::F32, &[k(16), k(768)]),
                (DType::F32, &[k(3072), k(768)]),
            ),
            Precision::Tf32,
            "mma.tf32 64x128x16",
        ),
        (
            "bf16 channels-last convolution, patches by cp.async",
            product_graph(
                nhwc.clone(),
                (DType::BF16, &[m.clone(), k(14), k(14), k(64)]),
                (DType::BF16, &[k(128), k(3), k(3), k(64)]),
            ),
            Precision::Tf32,
            "implicit-gemm nhwc cp.async-patches mma.bf16",
        ),
        (
            "f16 channels-last convolution, 3 channels through registers",
            product_graph(
                nhwc.clone(),
                (DType::F16, &[k(2), k(33), k(31), k(3)]),
                (DType::F16, &[k(40), k(5), k(5), k(3)]),
            ),
            Precision::Tf32,
            "implicit-gemm nhwc mma.f16",
        ),
        (
            "tf32 channels-last convolution, patches by cp.async",
            product_graph(
                nhwc,
                (DType::F32, &[k(1), k(7), k(9), k(36)]),
                (DType::F32, &[k(20), k(3), k(3), k(36)]),
            ),
            Precision::Tf32,
            "implicit-gemm nhwc cp.async-patches mma.tf32",
        ),
        (
            "exact fp32",
            product_graph(
                matmul,
                (DType::F32, &[m, k(64)]),
                (DType::F32, &[k(64), k(64)]),
            ),
            Precision::Fp32,
            "simt-fp32",
        ),
    ];
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("sparkc-mma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    for sm in Sm::ALL {
        let mut files = Vec::new();
        for (i, (case, graph, precision, variant)) in cases.iter().enumerate() {
            let lowering = lower_graph(graph, Output::Ptx(sm), *precision, None)
                .unwrap_or_else(|e| panic!("{case} for {sm}: {e}"));
            let [kernel] = lowering.kernels.as_slice() else {
                panic!("{case}: one kernel expected");
            };
            assert!(
                kernel.info.variant.starts_with(variant),
                "{case} for {sm}: variant {} is not {variant}",
                kernel.info.variant
            );
            let f = dir.join(format!("{}_{i}.ptx", sm.name()));
            std::fs::write(&f, &kernel.text).expect("write PTX");
            files.push(f);
        }
        failures.extend(assemble(&ptxas, sm, &files));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_node_test_kernel_assembles_for_the_newest_and_oldest_targets() {
    let ptxas = ptxas();
    let root = sparkc_tests::generated().join("node");
    let dir = std::env::temp_dir().join(format!("sparkc-node-ptx-{}", std::process::id()));
    let mut failures = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&root)
        .expect("node tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let per_target = per_target(&[Sm::Sm121a, Sm::Sm80], |sm| {
        let mut files = Vec::new();
        for case in &names {
            let Ok(mut model) = sparkc_onnx::load(&case.join("model.onnx")) else {
                continue;
            };
            // Inputs real models hold as constants (Resize's scales) are bound, as on host.
            let meta = std::fs::read_to_string(case.join("meta.json"))
                .ok()
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or_default();
            if sparkc_tests::bind_constant_inputs(&mut model.graph, case, &meta).is_err() {
                continue;
            }
            // Nodes without a kernel yet are refused with an error; those are counted by the
            // host test, not here. Unsafe PTX fails the test.
            let lowering =
                match lower_graph(&model.graph, Output::Ptx(sm), Precision::default(), None) {
                    Ok(lowering) => lowering,
                    Err(e) if is_unsafe(&e) => panic!("{}: {e}", case.display()),
                    Err(_) => continue,
                };
            let case_name = case
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .to_string();
            files.extend(write_ptx(&dir.join(sm.name()).join(&case_name), lowering));
        }
        files
    });
    for (sm, files) in per_target {
        assert!(
            files.len() > 300,
            "only {} node-test kernels for {sm}",
            files.len()
        );
        let failed = assemble(&ptxas, sm, &files);
        println!(
            "{sm}: {} of {} node-test kernels assembled",
            files.len() - failed.len(),
            files.len()
        );
        failures.extend(failed);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Adds a node of `op` reading `inputs`, typed by inference.
fn push(g: &mut Graph, op: Op, inputs: &[Option<ValueRef>]) -> ValueRef {
    let name = format!("n{}", g.node_count());
    let out = Value {
        name: name.clone(),
        ty: ValueType::Tensor(TensorType::new(DType::F32, vec![])),
        known: None,
    };
    let id = g.add_node(name, op, inputs, vec![out]);
    infer_graph(g).expect("well typed");
    ValueRef {
        node: id,
        output: 0,
    }
}

/// A constant of `dtype` and `shape` filled with `byte`.
fn filled(g: &mut Graph, name: &str, dtype: DType, shape: &[usize], byte: u8) -> ValueRef {
    let n: usize = shape.iter().product();
    let bytes = dtype.storage_bytes(n).expect("a size");
    let t = sparkc_ir::Tensor::new(dtype, shape.to_vec(), bytes::Bytes::from(vec![byte; bytes]))
        .expect("a tensor");
    g.add_const(name, t)
}

fn dq(axis: i64, block_size: i64) -> Op {
    Op::DequantizeLinear {
        axis,
        block_size,
        output_dtype: Some(DType::F32),
    }
}

/// `x: f32[M, 256]` (or stored codes) times a quantized weight `[256, 384]`, optimized.
fn quantized_product(activation: &str, weight: &str) -> Graph {
    let mut g = Graph::new("q");
    let (k, n) = (256usize, 384usize);
    let x = g.add_input(
        "x",
        ValueType::Tensor(TensorType::new(
            DType::F32,
            vec![Dim::sym("M"), Dim::known(k as i64)],
        )),
    );
    let scalar = |g: &mut Graph, name: &str| filled(g, name, DType::F32, &[], 0x3c);
    let a = match activation {
        // uint8 codes given as they are: the product copies them with cp.async and
        // subtracts their zero point.
        "u8 stored" => {
            let codes = g.add_input(
                "xq",
                ValueType::Tensor(TensorType::new(
                    DType::U8,
                    vec![Dim::sym("M"), Dim::known(k as i64)],
                )),
            );
            let (s, z) = (
                scalar(&mut g, "xs"),
                filled(&mut g, "xz", DType::U8, &[], 7),
            );
            push(&mut g, dq(1, 0), &[Some(codes), Some(s), Some(z)])
        }
        "e4m3" => {
            let (s, z) = (
                scalar(&mut g, "xs"),
                filled(&mut g, "xz", DType::F8E4M3FN, &[], 0),
            );
            let q = push(
                &mut g,
                Op::QuantizeLinear {
                    axis: 1,
                    block_size: 0,
                    output_dtype: None,
                    saturate: true,
                },
                &[Some(x), Some(s), Some(z)],
            );
            push(&mut g, dq(1, 0), &[Some(q), Some(s), Some(z)])
        }
        "nvfp4" => {
            let t = scalar(&mut g, "xt");
            let format = sparkc_ir::formats::BlockFormat::Nvfp4;
            push(&mut g, Op::RoundToBlocks { format }, &[Some(x), Some(t)])
        }
        "mxfp4" => {
            let format = sparkc_ir::formats::BlockFormat::Mxfp4;
            push(&mut g, Op::RoundToBlocks { format }, &[Some(x)])
        }
        other => panic!("unknown activation {other}"),
    };
    let w = match weight {
        "s8" | "e5m2" => {
            let dtype = if weight == "s8" {
                DType::I8
            } else {
                DType::F8E5M2
            };
            let codes = filled(&mut g, "w", dtype, &[k, n], 0x21);
            let scales = filled(&mut g, "ws", DType::F32, &[n], 0x3c);
            push(&mut g, dq(1, 0), &[Some(codes), Some(scales)])
        }
        "nvfp4" => {
            let codes = filled(&mut g, "w", DType::F4E2M1, &[k, n], 0x21);
            let scales = filled(&mut g, "bs", DType::F8E4M3FN, &[k / 16, n], 0x38);
            let t = scalar(&mut g, "wt");
            let scales = push(&mut g, dq(0, 0), &[Some(scales), Some(t)]);
            push(&mut g, dq(0, 16), &[Some(codes), Some(scales)])
        }
        "mxfp4" => {
            let codes = filled(&mut g, "w", DType::F4E2M1, &[k, n], 0x21);
            let scales = filled(&mut g, "bs", DType::F8E8M0, &[k / 32, n], 0x7f);
            push(&mut g, dq(0, 32), &[Some(codes), Some(scales)])
        }
        other => panic!("unknown weight {other}"),
    };
    let y = push(&mut g, Op::MatMul, &[Some(a), Some(w)]);
    g.outputs.insert(0, y);
    sparkc_passes::standard()
        .and_then(|mut p| p.run(&mut g))
        .expect("optimizes");
    g
}

/// Each way the kernels multiply quantized operands, with the instruction each target must
/// get, assembled for every target.
#[test]
fn quantized_product_variants_assemble_for_every_target() {
    // (activation, weight, variant on sm_121a/sm_120a, on sm_100a/sm_90a, on sm_80)
    let cases = [
        ("u8 stored", "s8", "mma.u8xs8", "mma.u8xs8", "mma.u8xs8"),
        (
            "e4m3",
            "e5m2",
            "mma.f8f6f4.e4m3xe5m2",
            "mma.e4m3xe5m2",
            "mma.bf16",
        ),
        (
            "nvfp4",
            "nvfp4",
            "mma.mxf4nvf4.e2m1xe2m1.ue4m3",
            "mma.bf16",
            "mma.bf16",
        ),
        (
            "mxfp4",
            "mxfp4",
            "mma.mxf4nvf4.e2m1xe2m1.ue8m0",
            "mma.bf16",
            "mma.bf16",
        ),
    ];
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("sparkc-qmma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut failures = Vec::new();
    for (activation, weight, blackwell, hopper, ampere) in cases {
        let graph = quantized_product(activation, weight);
        for sm in Sm::ALL {
            let want = match sm {
                Sm::Sm121a | Sm::Sm120a => blackwell,
                Sm::Sm100a | Sm::Sm90a => hopper,
                Sm::Sm80 => ampere,
            };
            let lowering = lower_graph(&graph, Output::Ptx(sm), Precision::default(), None)
                .unwrap_or_else(|e| panic!("{activation} x {weight} for {sm}: {e}"));
            let product = lowering
                .kernels
                .iter()
                .find(|k| k.info.covers.iter().any(|c| c.contains("MatMul")))
                .expect("a product kernel");
            assert!(
                product.info.variant.starts_with(want),
                "{activation} x {weight} for {sm}: variant {} is not {want}",
                product.info.variant
            );
            let f = dir.join(format!("{}_{activation}_{weight}.ptx", sm.name()).replace(' ', "_"));
            std::fs::write(&f, &product.text).expect("write PTX");
            failures.extend(assemble(&ptxas, sm, &[f]));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The inline-assembly calls of a kernel's LLVM IR that are not marked `convergent`.
fn divergeable_asm_calls(ir: &str) -> Vec<String> {
    let convergent: Vec<String> = ir
        .lines()
        .filter_map(|l| l.strip_prefix("attributes #"))
        .filter(|l| l.contains("convergent"))
        .filter_map(|l| l.split_whitespace().next().map(|n| format!("#{n}")))
        .collect();
    ir.lines()
        .filter(|l| l.contains("call") && l.contains(" asm "))
        .filter(|l| {
            !convergent
                .iter()
                .any(|c| l.trim_end().ends_with(c.as_str()))
        })
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn warp_and_block_collectives_stay_convergent() {
    // `bar.sync`, `mma.sync` and `ldmatrix` need every thread of the block or warp at the
    // same instruction. Unless their inline-assembly calls are `convergent`, LLVM may
    // duplicate one into divergent paths: tail duplication once split a block reduction's
    // barrier between thread 0 and the others, which hung the H200 on GlobalAveragePool.
    let root = sparkc_tests::generated().join("node");
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(&root)
        .expect("node tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|p| {
            let name = p.file_name().expect("a name").to_string_lossy().to_string();
            (name, p.join("model.onnx"))
        })
        .collect();
    cases.sort();
    cases.extend(whole_models());
    let (mut kernels, mut with_asm, mut loose) = (0, 0, Vec::new());
    for (name, path) in cases {
        let Ok(mut model) = sparkc_onnx::load(&path) else {
            continue;
        };
        if sparkc_passes::standard()
            .and_then(|mut p| p.run(&mut model.graph))
            .is_err()
        {
            continue;
        }
        for sm in [Sm::Sm121a, Sm::Sm80] {
            let Ok(lowering) =
                lower_graph(&model.graph, Output::Llvm(sm), Precision::default(), None)
            else {
                continue;
            };
            for k in &lowering.kernels {
                kernels += 1;
                with_asm += usize::from(k.text.contains(" asm "));
                loose.extend(
                    divergeable_asm_calls(&k.text)
                        .into_iter()
                        .map(|call| format!("{name} {sm} {}: {call}", k.info.name)),
                );
            }
        }
    }
    println!("{kernels} kernels, {with_asm} with inline PTX, every call convergent");
    assert!(with_asm > 100, "only {with_asm} kernels with inline PTX");
    assert!(loose.is_empty(), "{}", loose.join("\n"));
    // The kernel that hung: its three block-reduction barriers, each once in the PTX.
    let gap = root.join("test_globalaveragepool/model.onnx");
    let model = sparkc_onnx::load(&gap).expect("imports");
    let lowering = lower_graph(
        &model.graph,
        Output::Ptx(Sm::Sm90a),
        Precision::default(),
        None,
    )
    .expect("lowers");
    let ptx = &lowering.kernels[0].text;
    assert_eq!(ptx.matches("bar.sync").count(), 3, "{ptx}");
}
