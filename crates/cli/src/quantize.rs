//! `sparkc compile --quantize`: calibration, the quantizer, and the accuracy report that
//! compares the quantized model with the FP32 one on the same inputs.

use crate::inputs::{self, InputArgs};
use anyhow::{anyhow, bail, Context, Result};
use sparkc_cpu::{Executor, Value};
use sparkc_ir::{Graph, Model};
use sparkc_passes::quantize::sensitivity::{self, Agreement};
use sparkc_passes::quantize::{self, Config, QuantReport, Range, Scheme};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Seeded random input sets used when no calibration folder is given.
pub const RANDOM_SETS: u64 = 4;
/// Size given to symbolic input dims for seeded random inputs when `--max` does not bound them.
pub const RANDOM_DIM: usize = 4;
/// Fraction of magnitudes below the calibrated percentile.
pub const PERCENTILE: f64 = 0.9999;

/// What quantizing a model did, and how accurate the result is.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The format (`None` for a model that arrived quantized).
    pub scheme: Option<Scheme>,
    /// The per-product decisions and weight bytes.
    pub report: QuantReport,
    /// One entry per graph output.
    pub accuracy: Vec<Agreement>,
    /// Where the inputs came from (`3 calibration sets from DIR`, `4 seeded random sets`).
    pub inputs: String,
}

impl Summary {
    /// Two lines: products and bytes, then each output's cosine and error.
    pub fn describe(&self) -> String {
        let r = &self.report;
        let format = self
            .scheme
            .map_or("imported QDQ".to_string(), |s| s.to_string());
        let mut out = format!(
            "quantized ({format}): {} of {} products, weights {:.2} MiB -> {:.2} MiB\n",
            r.quantized(),
            r.decisions.len(),
            r.weight_bytes_before as f64 / (1 << 20) as f64,
            r.weight_bytes_after as f64 / (1 << 20) as f64,
        );
        if self.accuracy.is_empty() {
            let _ = writeln!(out, "  accuracy compared against {}", self.inputs);
        }
        for a in &self.accuracy {
            let _ = writeln!(
                out,
                "  output '{}': cosine {:.6}, max |error| {:.3e} against FP32 on {}",
                a.name, a.cosine, a.max_abs_error, self.inputs
            );
        }
        out
    }
}

/// The input sets of a calibration folder: one per subfolder holding `<input>.npy` files, or
/// the folder itself when it holds them directly.
fn calibration_sets(exec: &Executor, dir: &Path) -> Result<Vec<Vec<Value>>> {
    let read = |p: &Path| -> Result<Vec<PathBuf>> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading calibration folder {}", p.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        Ok(entries)
    };
    let entries = read(dir)?;
    let mut folders: Vec<PathBuf> = entries.iter().filter(|p| p.is_dir()).cloned().collect();
    if entries
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "npy"))
    {
        folders.insert(0, dir.to_path_buf());
    }
    let mut sets = Vec::new();
    for folder in folders {
        let files: Vec<String> = read(&folder)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "npy"))
            .filter_map(|p| {
                let stem = p.file_stem()?.to_str()?.to_string();
                Some(format!("{stem}={}", p.display()))
            })
            .collect();
        let args = InputArgs {
            inputs: files,
            random_inputs: false,
            seed: 0,
            dims: Vec::new(),
        };
        sets.push(
            inputs::build(exec, &args)
                .with_context(|| format!("calibration set {}", folder.display()))?,
        );
    }
    if sets.is_empty() {
        bail!(
            "calibration folder {} holds no .npy input sets (one subfolder per set, one NAME.npy per input)",
            dir.display()
        );
    }
    Ok(sets)
}

/// Seeded random input sets, symbolic dims at their `--max` bound or [`RANDOM_DIM`].
fn random_sets(exec: &Executor, bounds: &BTreeMap<String, i64>) -> Result<Vec<Vec<Value>>> {
    let mut dims = Vec::new();
    for (_, ty) in exec.inputs() {
        let Some(shape) = ty.as_tensor().and_then(|t| t.shape.clone()) else {
            continue;
        };
        for d in shape.iter().filter(|d| d.as_const().is_none()) {
            let name = d.to_string();
            let size = bounds
                .get(&name)
                .map_or(RANDOM_DIM, |&b| b.clamp(1, 64) as usize);
            dims.push(format!("{name}={size}"));
        }
    }
    (0..RANDOM_SETS)
        .map(|seed| {
            let args = InputArgs {
                inputs: Vec::new(),
                random_inputs: true,
                seed,
                dims: dims.clone(),
            };
            inputs::build(exec, &args)
        })
        .collect()
}

/// Largest magnitude and the [`PERCENTILE`] magnitude of each value `graph` computes for
/// `values`, over every input set.
fn calibrate(graph: &Graph, sets: &[Vec<Value>]) -> Result<HashMap<String, Range>> {
    let observed = quantize::calibration_values(graph)?;
    if observed.is_empty() {
        return Ok(HashMap::new());
    }
    let mut probe = graph.clone();
    probe.outputs = observed.clone();
    let exec = Executor::new(&probe).map_err(|e| anyhow!("calibration: {e}"))?;
    let mut magnitudes: Vec<Vec<f32>> = vec![Vec::new(); observed.len()];
    for set in sets {
        let values = exec
            .run(set.clone())
            .map_err(|e| anyhow!("calibration: {e}"))?;
        for (m, v) in magnitudes.iter_mut().zip(values) {
            if let Value::Tensor(a) = v {
                m.extend(
                    a.data
                        .f32s()
                        .iter()
                        .map(|x| x.abs())
                        .filter(|x| x.is_finite()),
                );
            }
        }
    }
    let mut ranges = HashMap::new();
    for (v, mut m) in observed.into_iter().zip(magnitudes) {
        if m.is_empty() {
            continue;
        }
        let max = m.iter().copied().fold(0f32, f32::max);
        let at = ((m.len() - 1) as f64 * PERCENTILE).round() as usize;
        let (_, &mut percentile, _) = m.select_nth_unstable_by(at, f32::total_cmp);
        ranges.insert(graph.value(v).name.clone(), Range { max, percentile });
    }
    Ok(ranges)
}

/// What to quantize, from the command line.
pub struct Request<'a> {
    /// The format, if any (`None` still reports a model that arrived quantized).
    pub scheme: Option<Scheme>,
    /// A folder of calibration input sets.
    pub calibrate: Option<&'a Path>,
    /// Products to keep in full precision.
    pub keep: &'a [String],
    /// `--max` bounds, used for the sizes of seeded random inputs.
    pub bounds: BTreeMap<String, i64>,
    /// The cosine similarity to keep (default: the format's, see
    /// [`sensitivity::default_target`]).
    pub min_cosine: Option<f64>,
    /// NVFP4/MXFP4: round MatMul and Gemm inputs to the block format instead of BF16.
    pub block_activations: bool,
    /// The optimizer's choices (convolution layout, weight layout).
    pub options: sparkc_passes::Options,
}

/// Whether `--activations FORMAT` asks for block-scaled activations, or why it cannot be had.
pub fn block_activations(scheme: Option<Scheme>, activations: Option<&str>) -> Result<bool> {
    let Some(wanted) = activations else {
        return Ok(false);
    };
    match scheme {
        Some(s @ (Scheme::Nvfp4 | Scheme::Mxfp4)) if wanted == s.name() => Ok(true),
        Some(Scheme::Nvfp4 | Scheme::Mxfp4) if wanted == "bf16" => Ok(false),
        Some(s @ (Scheme::Nvfp4 | Scheme::Mxfp4)) => {
            bail!("--activations {wanted}: with --quantize {s}, inputs are rounded to bf16 or {s}")
        }
        Some(s) => bail!(
            "--activations {wanted}: --quantize {s} chooses its inputs' format itself ({})",
            s.activation_dtype()
        ),
        None => bail!("--activations needs --quantize nvfp4 or mxfp4"),
    }
}

impl Request<'static> {
    /// A request for `scheme` with no calibration folder, no `--keep`, no bounds, the
    /// format's default target and the CPU's pass options: what `sparkc compile --quantize
    /// FORMAT --target none` asks.
    pub fn seeded(scheme: Option<Scheme>) -> Request<'static> {
        Request {
            scheme,
            calibrate: None,
            keep: &[],
            bounds: BTreeMap::new(),
            min_cosine: None,
            block_activations: false,
            options: sparkc_passes::Options::default(),
        }
    }
}

/// Imports `path`, runs the cleanup passes, quantizes as asked, then runs the optimizing
/// passes; returns the model and, when anything is quantized, the summary.
pub fn optimize_quantized(path: &Path, request: &Request) -> Result<(Model, Option<Summary>)> {
    let mut model = sparkc_onnx::load(path)?;
    sparkc_passes::prepare().run(&mut model.graph)?;
    let reference = model.graph.clone();
    let report = match request.scheme {
        Some(scheme) => {
            let exec = Executor::new(&reference).map_err(|e| anyhow!("{e}"))?;
            let sets = match request.calibrate {
                Some(dir) => calibration_sets(&exec, dir)?,
                None => random_sets(&exec, &request.bounds)?,
            };
            let config = Config {
                scheme,
                keep: request.keep.to_vec(),
                sensitive: Vec::new(),
                ranges: calibrate(&reference, &sets)?,
                block_activations: request.block_activations,
            };
            for name in &config.keep {
                if !model.graph.dag.node_weights().any(|n| &n.name == name) {
                    bail!("--keep {name}: the model has no node of that name");
                }
            }
            let target = request
                .min_cosine
                .or_else(|| sensitivity::default_target(scheme));
            let fitted = sensitivity::fit(&reference, &config, &sets, target)?;
            model.graph = fitted.graph;
            Some((fitted.report, sets))
        }
        None => {
            let imported = quantize::qdq::imported(&model.graph)?;
            (!imported.decisions.is_empty()).then_some((imported, Vec::new()))
        }
    };
    sparkc_passes::finish_with(request.options)?.run(&mut model.graph)?;
    let Some((report, sets)) = report else {
        return Ok((model, None));
    };
    let inputs = match request.calibrate {
        _ if sets.is_empty() => {
            "nothing: the model arrived quantized, with no FP32 original".into()
        }
        Some(dir) => format!("{} calibration set(s) from {}", sets.len(), dir.display()),
        None => format!("{} seeded random input set(s)", sets.len()),
    };
    let accuracy = if sets.is_empty() {
        Vec::new()
    } else {
        sensitivity::compare(&reference, &model.graph, &sets)?
    };
    Ok((
        model,
        Some(Summary {
            scheme: request.scheme,
            report,
            accuracy,
            inputs,
        }),
    ))
}
