//! Sessions: an artifact made ready to run on one device.

use crate::gpu::{detect, pick_target};
use crate::{RuntimeError, Tensor};
use sparkc_artifact::{Artifact, TensorSpec, WEIGHTS_LOCATION};
use sparkc_cpu::{Array, Executor, Value};
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
}

/// Why the GPU is not used, or the GPU's error when it was asked for.
fn gpu_unavailable(artifact: &Artifact) -> String {
    match detect() {
        Ok(None) => "no CUDA driver or GPU found".to_string(),
        Err(e) => e,
        Ok(Some(gpu)) => {
            let cc = gpu.compute_capability;
            match pick_target(&artifact.header.targets, cc) {
                None => format!(
                    "{} (compute capability {}.{}) has no kernels in this artifact (targets: {}); recompile with --target sm_{cc}{}",
                    gpu.name,
                    cc / 10,
                    cc % 10,
                    artifact.header.targets.join(", "),
                    if cc >= 90 { "a" } else { "" }
                ),
                Some(target) => format!(
                    "{} would run the {target} kernels, but this runtime's CUDA executor is not built yet",
                    gpu.name
                ),
            }
        }
    }
}

impl Session {
    /// Prepares `artifact` to run on `device`.
    pub fn new(artifact: &Artifact, device: Device) -> Result<Session, RuntimeError> {
        let device = match device {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda => return Err(RuntimeError::Device(gpu_unavailable(artifact))),
            Device::Auto => format!("cpu ({})", gpu_unavailable(artifact)),
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
        self.check_bounds(&ordered)?;
        self.exec
            .check_inputs(&ordered)
            .map_err(|e| RuntimeError::Input(e.to_string()))?;
        let outputs = self
            .exec
            .run(ordered)
            .map_err(|e| RuntimeError::Run(e.to_string()))?;
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

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("device", &self.device)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}
