//! The mixed-precision policy: which products keep full precision.
//!
//! Before quantizing: products the user named (`--keep`), the first and last product of the
//! graph (their errors reach the output undiluted), products too small to gain from it, and
//! reductions shorter than a block, and the products [`super::sensitivity::fit`] found most
//! sensitive. After quantizing: products whose weight error is above the format's threshold.
//! Normalizations, softmax and reductions are never quantized.

use super::{Config, Decision, Product, Scheme};

/// Weights with fewer elements than this stay in full precision.
pub const MIN_WEIGHT_ELEMENTS: usize = 4096;

/// Where a product sits among the graph's products.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    /// Its index in execution order.
    pub index: usize,
    /// How many products there are.
    pub count: usize,
}

/// The relative RMS weight error above which a product keeps full precision.
pub fn error_threshold(scheme: Scheme) -> f64 {
    match scheme {
        Scheme::Bf16 | Scheme::Fp16 => f64::INFINITY,
        Scheme::Int8 => 0.02,
        Scheme::Fp8 => 0.05,
        Scheme::Nvfp4 => 0.15,
        Scheme::Mxfp4 => 0.2,
    }
}

fn narrow(scheme: Scheme) -> bool {
    !matches!(scheme, Scheme::Bf16 | Scheme::Fp16)
}

/// Why a product keeps full precision before its weight is even quantized, if it does.
pub fn keep_before(
    config: &Config,
    decision: &Decision,
    product: &Product,
    position: Position,
) -> Option<String> {
    if config.keep.contains(&decision.node) {
        return Some("--keep".into());
    }
    if let Some((_, cosine)) = config.sensitive.iter().find(|(n, _)| n == &decision.node) {
        return Some(format!("sensitive (alone it leaves cosine {cosine:.5})"));
    }
    if !narrow(config.scheme) {
        return None;
    }
    if position.index == 0 {
        return Some("first product".into());
    }
    if position.index + 1 == position.count {
        return Some("last product".into());
    }
    let elements: usize = decision.weight_shape.iter().product();
    if elements < MIN_WEIGHT_ELEMENTS {
        return Some(format!("small ({elements} weights)"));
    }
    let reduced = decision.weight_shape[product.reduce_axis];
    let block = match config.scheme {
        Scheme::Nvfp4 => 16,
        Scheme::Mxfp4 => 32,
        _ => 1,
    };
    if reduced < block.max(8) {
        return Some(format!("reduces over {reduced} channels"));
    }
    None
}

/// Why a product keeps full precision once its weight error is known, if it does.
pub fn keep_after(scheme: Scheme, error: f64) -> Option<String> {
    let threshold = error_threshold(scheme);
    (error > threshold).then(|| format!("weight error {error:.3} > {threshold}"))
}
