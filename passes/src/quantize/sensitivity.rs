//! The accuracy-driven half of the policy: when the quantized model misses the format's
//! cosine-similarity target on the calibration inputs, each quantized product is tried alone,
//! and the most sensitive ones keep full precision until the target is met.

use super::{quantize, Config, QuantReport, Scheme};
use crate::manager::PassError;
use sparkc_cpu::{Executor, Value};
use sparkc_ir::Graph;

/// The cosine similarity each format must keep against FP32 by default (`None`: no search).
pub fn default_target(scheme: Scheme) -> Option<f64> {
    match scheme {
        Scheme::Fp8 | Scheme::Int8 => Some(0.999),
        Scheme::Nvfp4 | Scheme::Mxfp4 => Some(0.99),
        Scheme::Bf16 | Scheme::Fp16 => None,
    }
}

/// How one output of a graph compares with the reference's.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    /// The output's name.
    pub name: String,
    /// Cosine similarity over every input set's values.
    pub cosine: f64,
    /// Largest absolute difference.
    pub max_abs_error: f64,
}

fn exec_error(what: &str, e: impl std::fmt::Display) -> PassError {
    PassError::Graph(format!("{what}: {e}"))
}

/// Cosine similarity and largest absolute difference of each output of `graph` against
/// `reference`, over every input set.
pub fn compare(
    reference: &Graph,
    graph: &Graph,
    sets: &[Vec<Value>],
) -> Result<Vec<Agreement>, PassError> {
    let want = Executor::new(reference).map_err(|e| exec_error("FP32 reference", e))?;
    let got = Executor::new(graph).map_err(|e| exec_error("quantized model", e))?;
    let names = want.output_names();
    let mut sums = vec![(0f64, 0f64, 0f64, 0f64); names.len()];
    for set in sets {
        let a = want
            .run(set.clone())
            .map_err(|e| exec_error("FP32 reference", e))?;
        let b = got
            .run(set.clone())
            .map_err(|e| exec_error("quantized model", e))?;
        for ((s, a), b) in sums.iter_mut().zip(a).zip(b) {
            let (Value::Tensor(a), Value::Tensor(b)) = (a, b) else {
                continue;
            };
            for (&x, &y) in a.data.f32s().iter().zip(b.data.f32s().iter()) {
                let (x, y) = (f64::from(x), f64::from(y));
                s.0 += x * y;
                s.1 += x * x;
                s.2 += y * y;
                s.3 = s.3.max((x - y).abs());
            }
        }
    }
    Ok(names
        .into_iter()
        .zip(sums)
        .map(|(name, (dot, aa, bb, err))| Agreement {
            name,
            cosine: if aa == 0.0 && bb == 0.0 {
                1.0
            } else {
                dot / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
            },
            max_abs_error: err,
        })
        .collect())
}

/// The worst output's cosine similarity.
fn worst(agreement: &[Agreement]) -> f64 {
    agreement.iter().map(|a| a.cosine).fold(1.0, f64::min)
}

/// A quantized graph and its account.
pub struct Fitted {
    /// The graph.
    pub graph: Graph,
    /// What the quantizer did.
    pub report: QuantReport,
}

/// Quantizes a copy of `reference` as `config` asks; if the worst output's cosine similarity
/// on `sets` falls below `target`, keeps the most sensitive products in full precision, one
/// at a time, until it does not (or none is left).
pub fn fit(
    reference: &Graph,
    config: &Config,
    sets: &[Vec<Value>],
    target: Option<f64>,
) -> Result<Fitted, PassError> {
    let attempt = |config: &Config| -> Result<(Fitted, f64), PassError> {
        let mut graph = reference.clone();
        let report = quantize(&mut graph, config)?;
        let cosine = match target {
            Some(_) => worst(&compare(reference, &graph, sets)?),
            None => 1.0,
        };
        Ok((Fitted { graph, report }, cosine))
    };
    let (first, cosine) = attempt(config)?;
    let Some(target) = target else {
        return Ok(first);
    };
    if cosine >= target {
        return Ok(first);
    }
    let quantized: Vec<String> = first
        .report
        .decisions
        .iter()
        .filter(|d| d.kept_because.is_none())
        .map(|d| d.node.clone())
        .collect();
    // Each product alone: the cosine the model keeps when only it is quantized.
    let mut alone: Vec<(String, f64)> = Vec::with_capacity(quantized.len());
    for node in &quantized {
        let mut only = config.clone();
        only.keep
            .extend(quantized.iter().filter(|n| *n != node).cloned());
        alone.push((node.clone(), attempt(&only)?.1));
    }
    alone.sort_by(|a, b| a.1.total_cmp(&b.1));
    let budget = 1.0 - target;
    let mut best = first;
    let mut fitted = config.clone();
    for (k, (node, cosine)) in alone.iter().enumerate() {
        fitted.sensitive.push((node.clone(), *cosine));
        // Losses roughly add up: try once what is left fits the budget.
        let left: f64 = alone[k + 1..].iter().map(|(_, c)| 1.0 - c).sum();
        if left > budget && k + 1 < alone.len() {
            continue;
        }
        let (candidate, cosine) = attempt(&fitted)?;
        best = candidate;
        if cosine >= target {
            break;
        }
    }
    Ok(best)
}
