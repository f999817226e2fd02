//! sparkc's optimizer: graph passes and the e-graph rewrites, run by a [`PassManager`].
//!
//! The standard pipeline ([`standard`]) cleans the imported graph up (`Einsum` lowered to
//! products, recurrent layers unrolled, no-op removal, integer products read as floats
//! rewritten as products of dequantized codes, constant folding, batch-norm folding,
//! CSE, DCE), saturates it with the rule files of `passes/rules/` in stages (algebra, fusion,
//! layout) and extracts the cheapest equivalent under the GB10 cost model, then groups what is
//! left into fused nodes with expression bodies, and folds quantize/dequantize nodes into the
//! products that read them.

pub mod batchnorm;
pub mod cleanup;
pub mod cost;
pub mod cse;
pub mod dce;
pub mod edit;
pub mod egraph;
pub mod einsum;
pub mod fold;
pub mod fuse;
pub mod integer;
pub mod layout;
pub mod manager;
pub mod qfold;
pub mod quantize;
pub mod recurrent;
pub mod stats;
#[cfg(test)]
mod testing;
pub mod weights;

pub use manager::{Pass, PassError, PassManager, PassReport};

/// Choices the optimizing half of the pipeline takes from the user.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The layout convolutions run in (channels first, as ONNX has them, by default).
    pub layout: sparkc_ir::op::Layout,
    /// Store products' constant FP32 weights `[N, K]`, as GPU tensor-core kernels copy them
    /// ([`weights`]); off for the CPU.
    pub transposed_weights: bool,
}

/// The standard optimization pipeline: [`prepare`], then [`finish`].
pub fn standard() -> Result<PassManager, PassError> {
    standard_with(Options::default())
}

/// The standard pipeline with `options`: [`prepare`], then [`finish_with`].
pub fn standard_with(options: Options) -> Result<PassManager, PassError> {
    Ok(prepare().append(finish_with(options)?))
}

/// The cleanup half of the pipeline: `Einsum` lowering, recurrent layers unrolled, no-op
/// removal, integer products read as floats, folding, batch-norm folding, CSE, DCE. Quantization ([`quantize::quantize`]) runs
/// on the graph it leaves.
pub fn prepare() -> PassManager {
    PassManager::new()
        .then(einsum::LowerEinsum)
        .then(recurrent::UnrollRecurrent)
        .then(cleanup::Cleanup)
        .then(integer::IntegerProducts)
        .then(fold::ConstantFold)
        .then(batchnorm::FoldBatchNorm)
        .then(cse::CommonSubexpressions)
        .then(dce::DeadCode)
}

/// The optimizing half with the default options.
pub fn finish() -> Result<PassManager, PassError> {
    finish_with(Options::default())
}

/// The optimizing half: the layout change when asked for, e-graph saturation and extraction,
/// folding, FP32 weights stored `[N, K]` when asked for, fusion into bodies, quantization
/// folded into products, DCE.
pub fn finish_with(options: Options) -> Result<PassManager, PassError> {
    let mut passes = PassManager::new();
    if options.layout == sparkc_ir::op::Layout::Nhwc {
        passes = passes
            .then(layout::ChannelsLast)
            .then(fold::ConstantFold)
            .then(dce::DeadCode);
    }
    passes = passes
        .then(egraph::Saturate::new()?)
        .then(fold::ConstantFold);
    if options.transposed_weights {
        passes = passes.then(weights::TransposeWeights);
    }
    Ok(passes
        .then(fuse::FuseBodies)
        .then(qfold::FoldQuantized)
        .then(dce::DeadCode))
}
