//! Modules to text: PTX through LLVM's NVPTX backend, or LLVM IR.

use crate::target::Sm;
use crate::KernelError;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target as LlvmTarget, TargetMachine,
    TargetTriple,
};
use inkwell::OptimizationLevel;
use std::sync::Once;

static NVPTX: Once = Once::new();

/// The NVPTX target machine for an architecture.
pub fn target_machine(sm: Sm) -> Result<TargetMachine, KernelError> {
    NVPTX.call_once(|| LlvmTarget::initialize_nvptx(&InitializationConfig::default()));
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let target = LlvmTarget::from_triple(&triple).map_err(|e| KernelError::Llvm(e.to_string()))?;
    target
        .create_target_machine(
            &triple,
            sm.name(),
            sm.ptx_features(),
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| KernelError::Llvm(format!("LLVM has no NVPTX machine for {sm}")))
}

/// Optimizes a kernel's module for an architecture (LLVM's `O3` pipeline).
pub fn optimize(module: &Module, sm: Sm) -> Result<(), KernelError> {
    let machine = target_machine(sm)?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| KernelError::Llvm(e.to_string()))
}

/// The module as PTX for an architecture, after optimization.
pub fn ptx(module: &Module, sm: Sm) -> Result<String, KernelError> {
    optimize(module, sm)?;
    let machine = target_machine(sm)?;
    let buffer = machine
        .write_to_memory_buffer(module, FileType::Assembly)
        .map_err(|e| KernelError::Llvm(e.to_string()))?;
    String::from_utf8(buffer.as_slice().to_vec())
        .map_err(|e| KernelError::Llvm(format!("PTX is not UTF-8: {e}")))
}

/// The module as LLVM IR text.
pub fn llvm(module: &Module) -> String {
    module.print_to_string().to_string()
}
