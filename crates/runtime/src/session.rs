//! Sessions: an artifact made ready to run on one device.

use crate::cuda::{CudaBackend, KernelTiming};
use crate::gpu::{detect, pick_target, GpuInfo};
use crate::{RuntimeError, Tensor};
use sparkc_artifact::{eval, Artifact, TensorSpec, WEIGHTS_LOCATION};
use sparkc_cpu::{Array, Executor, Value};
use sparkc_ir::DType;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where a session runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// A GPU when the driver finds one the artifact has kernels for, else the CPU.
    #[default]
    Auto,
    /// The CPU executor, on all cores.
    Cpu,
    /// The first CUDA GPU; an error when there is none.
    Cuda,
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => Err(format!("unknown device `{other}`; known: auto, cpu, cuda")),
        }
    }
}

/// An artifact made ready to run on one device; runs may repeat with new inputs.
pub struct Session {
    exec: Executor,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    bounds: Vec<(String, i64)>,
    device: String,
    cuda: Option<(CudaBackend, GpuInfo)>,
}

/// The artifact's kernel plan for the first GPU, loaded, with a line describing it; or why
/// there is none.
fn open_gpu(artifact: &Artifact) -> Result<(CudaBackend, GpuInfo, String), String> {
    let gpu = detect()?.ok_or("no CUDA driver or GPU found")?;
    let cc = gpu.compute_capability;
    let header = &artifact.header;
    let target = pick_target(&header.targets, cc).ok_or_else(|| {
        format!(
            "{} (compute capability {}.{}) has no kernels in this artifact (targets: {}); recompile with --target sm_{cc}{}",
            gpu.name,
            cc / 10,
            cc % 10,
            header.targets.join(", "),
            if cc >= 90 { "a" } else { "" }
        )
    })?;
    let plan = header
        .plans
        .iter()
        .find(|p| p.target == target)
        .ok_or_else(|| format!("the artifact lists {target} but carries no plan for it"))?;
    let memory = header
        .memory
        .as_ref()
        .ok_or("the artifact has no memory plan")?;
    if memory.outputs.len() != header.outputs.len() {
        return Err(format!(
            "the memory plan places {} of the {} outputs; recompile the artifact",
            memory.outputs.len(),
            header.outputs.len()
        ));
    }
    let backend =
        CudaBackend::new(&gpu, plan, memory, artifact.weights()).map_err(|e| e.to_string())?;
    let weights = if gpu.coherent_host_memory {
        "weights read in place from the mapped file"
    } else {
        "weights uploaded once"
    };
    let line = format!("cuda: {} ({target} kernels, {weights})", gpu.name);
    Ok((backend, gpu, line))
}

impl Session {
    /// Prepares `artifact` to run on `device`.
    pub fn new(artifact: &Artifact, device: Device) -> Result<Session, RuntimeError> {
        let (device, cuda) = match device {
            Device::Cpu => ("cpu".to_string(), None),
            Device::Cuda => match open_gpu(artifact) {
                Ok((backend, gpu, line)) => (line, Some((backend, gpu))),
                Err(why) => return Err(RuntimeError::Device(why)),
            },
            Device::Auto => match open_gpu(artifact) {
                Ok((backend, gpu, line)) => (line, Some((backend, gpu))),
                Err(why) => (format!("cpu ({why})"), None),
            },
        };
        let header = &artifact.header;
        let model = sparkc_onnx::load_with_section(
            &header.graph,
            WEIGHTS_LOCATION,
            artifact.weights().clone(),
        )
        .map_err(|e| RuntimeError::Graph(e.to_string()))?;
        let exec = Executor::new(&model.graph).map_err(|e| RuntimeError::Graph(e.to_string()))?;
        Ok(Session {
            exec,
            inputs: header.inputs.clone(),
            outputs: header.outputs.clone(),
            bounds: header
                .bounds
                .iter()
                .map(|b| (b.symbol.clone(), b.max))
                .collect(),
            device,
            cuda,
        })
    }

    /// The device it runs on, and why when `auto` chose the CPU.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The CPU executor behind the session, for tools that profile it op by op.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// The graph's inputs, in order.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// The graph's outputs, in order.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    /// Runs the model on named inputs (any order); returns the outputs in signature order.
    pub fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
        if let Some((unknown, _)) = inputs.iter().find(|(n, _)| !names.contains(n)) {
            return Err(RuntimeError::Input(format!(
                "the model has no input '{unknown}'; its inputs are: {}",
                names.join(", ")
            )));
        }
        let mut ordered = Vec::with_capacity(names.len());
        for name in &names {
            let mut given = inputs.iter().filter(|(n, _)| n == name);
            let (_, tensor) = given.next().ok_or_else(|| {
                RuntimeError::Input(format!(
                    "input '{name}' is missing; the model takes: {}",
                    names.join(", ")
                ))
            })?;
            if given.next().is_some() {
                return Err(RuntimeError::Input(format!(
                    "input '{name}' is given twice"
                )));
            }
            ordered.push(Value::Tensor(Array::from_tensor(&tensor.0)));
        }
        let outputs = self.run_values(ordered)?;
        self.outputs
            .iter()
            .zip(outputs)
            .map(|(spec, value)| match value {
                Value::Tensor(a) => Ok((spec.name.clone(), Tensor(a.to_tensor()))),
                other => Err(RuntimeError::Run(format!(
                    "output '{}' is {other}, not a tensor",
                    spec.name
                ))),
            })
            .collect()
    }

    /// Runs the model on inputs in signature order, as the CPU executor takes them; returns
    /// the outputs in signature order.
    pub fn run_values(&self, inputs: Vec<Value>) -> Result<Vec<Value>, RuntimeError> {
        self.check(&inputs)?;
        match &self.cuda {
            Some((backend, gpu)) => Ok(self
                .run_cuda(backend, gpu, &inputs)?
                .into_iter()
                .map(|(_, t)| Value::Tensor(Array::from_tensor(&t.0)))
                .collect()),
            None => self
                .exec
                .run(inputs)
                .map_err(|e| RuntimeError::Run(e.to_string())),
        }
    }

    /// Times each kernel of one run on the GPU with CUDA events; `None` on the CPU.
    pub fn profile_kernels(
        &self,
        inputs: Vec<Value>,
    ) -> Result<Option<Vec<KernelTiming>>, RuntimeError> {
        self.check(&inputs)?;
        let Some((backend, gpu)) = &self.cuda else {
            return Ok(None);
        };
        let (dims, bytes) = self.bind(&inputs)?;
        let views: Vec<&[u8]> = bytes.iter().map(|b| b.as_ref()).collect();
        backend.profile(gpu, dims, &views).map(Some)
    }

    /// On a GPU, whether runs replay a captured CUDA graph (the default) or launch each
    /// kernel; nothing on the CPU.
    pub fn set_cuda_graphs(&self, on: bool) {
        if let Some((backend, _)) = &self.cuda {
            backend.set_graphs(on);
        }
    }

    /// Checks inputs in signature order: types, shapes, bounds.
    fn check(&self, inputs: &[Value]) -> Result<(), RuntimeError> {
        self.check_bounds(inputs)?;
        self.exec
            .check_inputs(inputs)
            .map_err(|e| RuntimeError::Input(e.to_string()))
    }

    /// The symbols' values from the inputs' shapes, and the inputs' bytes.
    fn bind(
        &self,
        inputs: &[Value],
    ) -> Result<(BTreeMap<String, i64>, Vec<bytes::Bytes>), RuntimeError> {
        let mut dims = BTreeMap::new();
        let mut bytes = Vec::with_capacity(inputs.len());
        for (spec, value) in self.inputs.iter().zip(inputs) {
            let Value::Tensor(a) = value else {
                return Err(RuntimeError::Input(format!(
                    "input '{}' is not a tensor",
                    spec.name
                )));
            };
            for (dim, &size) in spec.shape.iter().zip(&a.shape) {
                if let Some(symbol) = single_symbol(dim) {
                    dims.insert(symbol.to_string(), size as i64);
                }
            }
            bytes.push(a.to_tensor().data);
        }
        Ok((dims, bytes))
    }

    /// Runs checked inputs (signature order) on the GPU.
    fn run_cuda(
        &self,
        backend: &CudaBackend,
        gpu: &GpuInfo,
        inputs: &[Value],
    ) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let (dims, bytes) = self.bind(inputs)?;
        let views: Vec<&[u8]> = bytes.iter().map(|b| b.as_ref()).collect();
        let raw = backend.run(gpu, dims.clone(), &views)?;
        self.outputs
            .iter()
            .zip(raw)
            .map(|(spec, data)| {
                let dtype = DType::from_name(&spec.dtype).ok_or_else(|| {
                    RuntimeError::Run(format!(
                        "output '{}' has unknown dtype {}",
                        spec.name, spec.dtype
                    ))
                })?;
                let shape = spec
                    .shape
                    .iter()
                    .map(|d| eval(d, &|s| dims.get(s).copied()).map(|v| v as usize))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| RuntimeError::Run(format!("output '{}': {e}", spec.name)))?;
                let tensor = Tensor::new(dtype, shape, data)
                    .map_err(|e| RuntimeError::Run(format!("output '{}': {e}", spec.name)))?;
                Ok((spec.name.clone(), tensor))
            })
            .collect()
    }

    /// Refuses symbolic dims above the bounds the artifact was compiled for (inputs in
    /// signature order).
    pub fn check_bounds(&self, inputs: &[Value]) -> Result<(), RuntimeError> {
        for (spec, value) in self.inputs.iter().zip(inputs) {
            let Value::Tensor(a) = value else { continue };
            for (dim, &size) in spec.shape.iter().zip(&a.shape) {
                let [term] = dim.terms.as_slice() else {
                    continue;
                };
                let [factor] = term.factors.as_slice() else {
                    continue;
                };
                if term.coefficient != 1 || factor.symbol.is_empty() {
                    continue;
                }
                if let Some((_, max)) = self.bounds.iter().find(|(s, _)| *s == factor.symbol) {
                    if size as i64 > *max {
                        return Err(RuntimeError::Input(format!(
                            "input '{}': {} = {size} exceeds the bound {max} the artifact was compiled for",
                            spec.name, factor.symbol
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The symbol a dim is, when it is exactly one symbol (`N`, not `2*N` or `N+1`).
fn single_symbol(dim: &sparkc_artifact::SizeExpr) -> Option<&str> {
    let [term] = dim.terms.as_slice() else {
        return None;
    };
    let [factor] = term.factors.as_slice() else {
        return None;
    };
    (term.coefficient == 1 && !factor.symbol.is_empty()).then_some(factor.symbol.as_str())
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("device", &self.device)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}
