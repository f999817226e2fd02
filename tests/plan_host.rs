//! An artifact's GPU plan executed the way the CUDA executor executes it — one arena placed by
//! the memory plan, weights read from the weight section, each kernel given buffer addresses
//! and symbol values in its recorded order — but with every kernel built for the host and run
//! under LLVM's JIT. Its outputs must match the CPU executor's on every whole model: this
//! checks the plan, the bindings, the parameter ABI and the fused kernels' code, with no GPU.

use sparkc_artifact::{arrange, BufferKind};
use sparkc_cli::execute_args;
use sparkc_kernels::plan::{generate, request};
use sparkc_kernels::{host, Precision, Target};
use sparkc_runtime::{sample_inputs, Artifact, Device, Session, Tensor};
use sparkc_tests::whole_models;
use std::collections::{BTreeMap, HashMap};

#[test]
fn every_whole_model_runs_its_gpu_plan_on_host_kernels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut report = String::new();
    for (name, path) in whole_models() {
        let spark = dir.path().join(format!("{name}.spark"));
        execute_args([
            "sparkc",
            "compile",
            &path.display().to_string(),
            "-o",
            &spark.display().to_string(),
        ])
        .unwrap_or_else(|e| panic!("{name}: compile: {e:#}"));
        let artifact = Artifact::open(&spark).expect("opens");
        let plan = &artifact.header.plans[0];
        let buffers = &artifact
            .header
            .memory
            .as_ref()
            .expect("a memory plan")
            .buffers;
        // The same optimized graph the artifact was compiled from (the optimizer is
        // deterministic), to build each node's kernel for the host.
        let mut model = sparkc_onnx::load(&path).expect("imports");
        sparkc_passes::standard()
            .and_then(|mut p| p.run(&mut model.graph))
            .expect("optimizes");
        let graph = &model.graph;
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
        let named: Vec<(&str, Tensor)> =
            given.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let reference = Session::new(&artifact, Device::Cpu)
            .expect("a CPU session")
            .run(&named)
            .expect("the CPU runs it");
        for (i, b) in buffers.iter().enumerate() {
            if b.kind() != BufferKind::Output {
                continue;
            }
            let want = &reference[b.position as usize].1;
            let start = (arena_at + place.offsets[i]) as *const u8;
            // SAFETY: the output lies inside the arena.
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
                worst <= 2e-4 * scale,
                "{name}: output {} differs by {worst}",
                b.name
            );
        }
        drop(arena);
    }
    print!("{report}");
}
