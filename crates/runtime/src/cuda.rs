//! The CUDA executor: an artifact's kernel plan launched on one stream, captured once per
//! binding of the symbolic dims into a CUDA graph that later runs replay.
//!
//! Weights stay where they are on a GPU that reads host memory coherently (GB10: the
//! memory-mapped artifact is passed to kernels as is); elsewhere they are uploaded once.
//! Activations, inputs and outputs share one arena placed by the artifact's memory plan.

use crate::gpu::GpuInfo;
use crate::RuntimeError;
use bytes::Bytes;
use cudarc::driver::sys::{
    CUevent_flags, CUfunction_attribute, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use sparkc_artifact::{
    arrange, eval, Arrangement, Buffer, BufferKind, KernelPlan, MemoryPlan, SizeExpr,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Shared memory a kernel may use without raising its limit.
const DEFAULT_SHARED: u32 = 48 * 1024;

struct Launchable {
    name: String,
    node: String,
    variant: String,
    func: CudaFunction,
    grid: SizeExpr,
    block: u32,
    dynamic_shared: u32,
    buffers: Vec<u32>,
    symbols: Vec<String>,
}

enum Weights {
    /// Uploaded once to device memory.
    Device(CudaSlice<u8>),
    /// The memory-mapped section itself, read by the GPU through the host's page tables.
    Mapped(Bytes),
}

/// The arena and graph of one binding of the symbolic dims.
struct Bound {
    dims: BTreeMap<String, i64>,
    arena: CudaSlice<u8>,
    place: Arrangement,
    graph: Option<CudaGraph>,
}

/// An artifact's kernel plan loaded on a GPU.
pub(crate) struct CudaBackend {
    stream: Arc<CudaStream>,
    kernels: Vec<Launchable>,
    buffers: Vec<Buffer>,
    /// The buffer of each graph output, in signature order.
    outputs: Vec<u32>,
    weights: Weights,
    bound: Mutex<Option<Bound>>,
    graphs: AtomicBool,
}

/// One kernel's time in a profiled run.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTiming {
    /// The entry point.
    pub kernel: String,
    /// The IR node it computes.
    pub node: String,
    /// Family and variant.
    pub variant: String,
    /// Milliseconds between CUDA events around its launch.
    pub ms: f32,
}

fn driver(what: &str) -> impl Fn(cudarc::driver::DriverError) -> RuntimeError + '_ {
    move |e| RuntimeError::Device(format!("{what}: {e}"))
}

fn run_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> RuntimeError + '_ {
    move |e| RuntimeError::Run(format!("{what}: {e}"))
}

/// Bytes the runtime may allocate: `/proc/meminfo`'s `MemAvailable` on an integrated GPU,
/// where `cuMemGetInfo` under-reports, else the driver's free device memory.
fn available_memory(gpu: &GpuInfo) -> Option<u64> {
    if gpu.integrated {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    } else {
        cudarc::driver::result::mem_get_info()
            .ok()
            .map(|(free, _)| free as u64)
    }
}

/// The first GPU's primary context, opened once and kept for the life of the process:
/// releasing it with the last session would tear it down, and making it again costs seconds.
fn context() -> Result<Arc<CudaContext>, RuntimeError> {
    static CONTEXT: OnceLock<Arc<CudaContext>> = OnceLock::new();
    if let Some(ctx) = CONTEXT.get() {
        return Ok(ctx.clone());
    }
    let ctx = CudaContext::new(0).map_err(driver("cannot open the GPU"))?;
    Ok(CONTEXT.get_or_init(|| ctx).clone())
}

impl CudaBackend {
    /// Loads `plan`'s PTX on the first GPU and places the weights.
    pub(crate) fn new(
        gpu: &GpuInfo,
        plan: &KernelPlan,
        memory: &MemoryPlan,
        weights: &Bytes,
    ) -> Result<CudaBackend, RuntimeError> {
        let buffers = &memory.buffers;
        if let Some(&b) = memory
            .outputs
            .iter()
            .find(|&&b| b as usize >= buffers.len())
        {
            return Err(RuntimeError::Device(format!(
                "an output names buffer {b}, beyond the memory plan"
            )));
        }
        let ctx = context()?;
        // SAFETY: the backend uses one stream, so stream order already orders every use of
        // every buffer; cudarc's cross-stream events would only get in the way of capture.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver("cannot make a stream"))?;
        let mut kernels = Vec::with_capacity(plan.kernels.len());
        for k in &plan.kernels {
            if k.ptx.contains('\0') || k.name.contains('\0') {
                return Err(RuntimeError::Device(format!(
                    "kernel {}: the PTX or its name holds a NUL byte",
                    k.node
                )));
            }
            let bad = |what: &str| {
                RuntimeError::Device(format!("kernel {} ({}): {what}", k.name, k.node))
            };
            let module = ctx
                .load_module(Ptx::from_src(k.ptx.clone()))
                .map_err(|e| bad(&format!("the driver refuses its PTX: {e}")))?;
            let func = module
                .load_function(&k.name)
                .map_err(|e| bad(&format!("no entry point: {e}")))?;
            if k.dynamic_shared_bytes > DEFAULT_SHARED {
                func.set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    k.dynamic_shared_bytes as i32,
                )
                .map_err(|e| {
                    bad(&format!(
                        "{} bytes of shared memory: {e}",
                        k.dynamic_shared_bytes
                    ))
                })?;
            }
            if let Some(&b) = k.buffers.iter().find(|&&b| b as usize >= buffers.len()) {
                return Err(bad(&format!("names buffer {b}, beyond the memory plan")));
            }
            kernels.push(Launchable {
                name: k.name.clone(),
                node: k.node.clone(),
                variant: k.variant.clone(),
                func,
                grid: k.grid.clone().ok_or_else(|| bad("no grid"))?,
                block: k.block,
                dynamic_shared: k.dynamic_shared_bytes,
                buffers: k.buffers.clone(),
                symbols: k.symbols.clone(),
            });
        }
        let weights = if gpu.coherent_host_memory {
            Weights::Mapped(weights.clone())
        } else {
            Weights::Device(
                stream
                    .memcpy_stod(weights.as_ref())
                    .map_err(driver("cannot upload the weights"))?,
            )
        };
        Ok(CudaBackend {
            stream,
            kernels,
            buffers: buffers.to_vec(),
            outputs: memory.outputs.clone(),
            weights,
            bound: Mutex::new(None),
            graphs: AtomicBool::new(true),
        })
    }

    /// Whether runs capture and replay a CUDA graph (the default) or launch every kernel.
    pub(crate) fn set_graphs(&self, on: bool) {
        self.graphs.store(on, Ordering::Relaxed);
        if let Ok(mut bound) = self.bound.lock() {
            if let Some(b) = bound.as_mut() {
                b.graph = None;
            }
        }
    }

    /// Runs the plan on inputs (signature order, raw bytes) with symbols bound as `dims`;
    /// returns each graph output's bytes.
    pub(crate) fn run(
        &self,
        gpu: &GpuInfo,
        dims: BTreeMap<String, i64>,
        inputs: &[&[u8]],
    ) -> Result<Vec<Vec<u8>>, RuntimeError> {
        self.with_bound(|bound| {
            let b = self.prepare(gpu, bound, dims, inputs)?;
            self.execute(b)?;
            self.read_outputs(b)
        })
    }

    /// Runs every kernel once on its own, between CUDA events, outside any graph.
    pub(crate) fn profile(
        &self,
        gpu: &GpuInfo,
        dims: BTreeMap<String, i64>,
        inputs: &[&[u8]],
    ) -> Result<Vec<KernelTiming>, RuntimeError> {
        self.with_bound(|bound| {
            let b = self.prepare(gpu, bound, dims, inputs)?;
            let ctx = self.stream.context();
            let event = || {
                ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(run_error("creating an event"))
            };
            let mut marks = Vec::with_capacity(self.kernels.len() + 1);
            let first = event()?;
            first
                .record(&self.stream)
                .map_err(run_error("recording an event"))?;
            marks.push(first);
            for k in &self.kernels {
                self.launch(k, b)?;
                let mark = event()?;
                mark.record(&self.stream)
                    .map_err(run_error("recording an event"))?;
                marks.push(mark);
            }
            self.stream
                .synchronize()
                .map_err(run_error("the GPU reported an error"))?;
            self.kernels
                .iter()
                .zip(marks.windows(2))
                .map(|(k, pair)| {
                    Ok(KernelTiming {
                        kernel: k.name.clone(),
                        node: k.node.clone(),
                        variant: k.variant.clone(),
                        ms: pair[0]
                            .elapsed_ms(&pair[1])
                            .map_err(run_error("reading an event"))?,
                    })
                })
                .collect()
        })
    }

    /// Runs `body` on the bound state; a failure drops it, so the next run starts clean (a
    /// failed run may leave a half-captured graph or a poisoned arena behind).
    fn with_bound<T>(
        &self,
        body: impl FnOnce(&mut Option<Bound>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut guard = self
            .bound
            .lock()
            .map_err(|_| RuntimeError::Run("a previous run panicked".into()))?;
        let result = body(&mut guard);
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Places the arena for `dims` (reusing it when they are unchanged) and copies the inputs in.
    fn prepare<'b>(
        &self,
        gpu: &GpuInfo,
        bound: &'b mut Option<Bound>,
        dims: BTreeMap<String, i64>,
        inputs: &[&[u8]],
    ) -> Result<&'b mut Bound, RuntimeError> {
        if bound.as_ref().is_none_or(|b| b.dims != dims) {
            *bound = None;
            let place =
                arrange(&self.buffers, &|s| dims.get(s).copied()).map_err(RuntimeError::Run)?;
            if let Some(free) = available_memory(gpu) {
                if place.arena_bytes > free {
                    return Err(RuntimeError::Run(format!(
                        "the activations need {} MiB; the GPU has {} MiB free",
                        place.arena_bytes >> 20,
                        free >> 20
                    )));
                }
            }
            let arena = self
                .stream
                .alloc_zeros::<u8>(place.arena_bytes.max(1) as usize)
                .map_err(run_error("cannot allocate the activation arena"))?;
            *bound = Some(Bound {
                dims,
                arena,
                place,
                graph: None,
            });
        }
        let b = bound
            .as_mut()
            .ok_or_else(|| RuntimeError::Run("no arena".into()))?;
        for (i, buffer) in self.buffers.iter().enumerate() {
            if buffer.kind() != BufferKind::Input {
                continue;
            }
            let data = inputs.get(buffer.position as usize).ok_or_else(|| {
                RuntimeError::Run(format!("input {} is not given", buffer.position))
            })?;
            let (at, size) = (b.place.offsets[i] as usize, b.place.sizes[i] as usize);
            if data.len() != size {
                return Err(RuntimeError::Run(format!(
                    "input '{}' holds {} bytes; the plan expects {size}",
                    buffer.name,
                    data.len()
                )));
            }
            let mut view = b.arena.slice_mut(at..at + size);
            self.stream
                .memcpy_htod(*data, &mut view)
                .map_err(run_error("copying an input"))?;
        }
        Ok(b)
    }

    /// Runs the plan: replays the graph, capturing it first; or launches each kernel when
    /// graphs are off.
    fn execute(&self, b: &mut Bound) -> Result<(), RuntimeError> {
        if !self.graphs.load(Ordering::Relaxed) {
            return self.launch_all(b);
        }
        if b.graph.is_none() {
            self.stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(run_error("starting graph capture"))?;
            let launched = self.launch_all(b);
            let graph = self.stream.end_capture(
                CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
            );
            launched?;
            b.graph = graph.map_err(run_error("instantiating the CUDA graph"))?;
        }
        if let Some(graph) = &b.graph {
            graph
                .launch()
                .map_err(run_error("replaying the CUDA graph"))?;
        }
        Ok(())
    }

    /// Copies each graph output back from the buffer that holds it (the arena, or the weight
    /// section for an output that is a constant), after the stream has finished.
    fn read_outputs(&self, b: &Bound) -> Result<Vec<Vec<u8>>, RuntimeError> {
        let mut out = Vec::with_capacity(self.outputs.len());
        for &i in &self.outputs {
            let i = i as usize;
            let (at, size) = (b.place.offsets[i] as usize, b.place.sizes[i] as usize);
            let mut host = vec![0u8; size];
            if size == 0 {
                out.push(host);
                continue;
            }
            match (self.buffers[i].kind(), &self.weights) {
                (BufferKind::Weight, Weights::Mapped(bytes)) => {
                    host.copy_from_slice(&bytes[at..at + size]);
                }
                (BufferKind::Weight, Weights::Device(slice)) => self
                    .stream
                    .memcpy_dtoh(&slice.slice(at..at + size), &mut host)
                    .map_err(run_error("copying an output"))?,
                _ => self
                    .stream
                    .memcpy_dtoh(&b.arena.slice(at..at + size), &mut host)
                    .map_err(run_error("copying an output"))?,
            }
            out.push(host);
        }
        self.stream
            .synchronize()
            .map_err(run_error("the GPU reported an error"))?;
        Ok(out)
    }

    /// Launches every kernel on the stream.
    fn launch_all(&self, b: &Bound) -> Result<(), RuntimeError> {
        self.kernels.iter().try_for_each(|k| self.launch(k, b))
    }

    /// Launches one kernel with its buffers' addresses and its symbols' values.
    fn launch(&self, k: &Launchable, b: &Bound) -> Result<(), RuntimeError> {
        let (arena, _sync) = b.arena.device_ptr(&self.stream);
        let weights = match &self.weights {
            Weights::Device(slice) => slice.device_ptr(&self.stream).0,
            Weights::Mapped(bytes) => bytes.as_ptr() as u64,
        };
        let bind = |s: &str| b.dims.get(s).copied();
        let grid = eval(&k.grid, &bind)
            .map_err(|e| RuntimeError::Run(format!("kernel {}: grid: {e}", k.name)))?;
        if grid <= 0 {
            return Ok(());
        }
        let pointers: Vec<u64> = k
            .buffers
            .iter()
            .map(|&i| {
                let offset = b.place.offsets[i as usize];
                match self.buffers[i as usize].kind() {
                    BufferKind::Weight => weights + offset,
                    _ => arena + offset,
                }
            })
            .collect();
        let symbols: Vec<i64> = k
            .symbols
            .iter()
            .map(|s| {
                bind(s).ok_or_else(|| {
                    RuntimeError::Run(format!("kernel {}: symbol {s} is not bound", k.name))
                })
            })
            .collect::<Result<_, _>>()?;
        let config = LaunchConfig {
            grid_dim: (grid.min(i64::from(i32::MAX)) as u32, 1, 1),
            block_dim: (k.block, 1, 1),
            shared_mem_bytes: k.dynamic_shared,
        };
        let mut launch = self.stream.launch_builder(&k.func);
        for p in &pointers {
            launch.arg(p);
        }
        for s in &symbols {
            launch.arg(s);
        }
        // SAFETY: the parameters follow the kernel's ABI as the compiler recorded it (buffer
        // addresses, then i64 symbols), and every buffer lies in the arena or the weight
        // section, sized by the memory plan for these dims (`tests/plan_host.rs` runs the same
        // words through host builds of the kernels).
        unsafe { launch.launch(config) }.map_err(|e| {
            RuntimeError::Run(format!("kernel {} ({}): launch: {e}", k.name, k.node))
        })?;
        Ok(())
    }
}
