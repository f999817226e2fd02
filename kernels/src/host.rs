//! Runs a kernel's host build ([`crate::Target::Host`]) in-process with LLVM's JIT: one block of
//! one thread, which the thread-strided kernels handle like any launch. Tests use it to check
//! generated code against the CPU reference without a GPU.

use crate::{Generated, KernelError};
use inkwell::targets::{InitializationConfig, Target as LlvmTarget};
use inkwell::values::BasicMetadataValueEnum;
use inkwell::{AddressSpace, OptimizationLevel};
use std::sync::Once;

static NATIVE: Once = Once::new();

/// Runs a host-built kernel once over `buffers` (in the kernel's parameter order) with the
/// values of its symbols.
///
/// # Safety
/// Each buffer must be large enough for the shape its parameter was generated for, under
/// `symbols`.
pub unsafe fn run(
    kernel: &Generated<'_>,
    buffers: &mut [&mut [u8]],
    symbols: &[i64],
) -> Result<(), KernelError> {
    let mut words: Vec<u64> = buffers.iter_mut().map(|b| b.as_mut_ptr() as u64).collect();
    words.extend(symbols.iter().map(|&s| s as u64));
    // SAFETY: the caller vouches for the buffers.
    unsafe { run_words(kernel, &words) }
}

/// Runs a host-built kernel once with its parameters as 64-bit words, in order: buffer
/// addresses, then symbol values (how a runtime passes them, buffers possibly shared).
///
/// # Safety
/// Each address must point to memory large enough for its parameter's shape under the
/// symbols, and aligned for the kernel's vector accesses (16 bytes).
pub unsafe fn run_words(kernel: &Generated<'_>, words: &[u64]) -> Result<(), KernelError> {
    NATIVE.call_once(|| {
        let _ = LlvmTarget::initialize_native(&InitializationConfig::default());
    });
    let module = &kernel.module;
    let cx = module.get_context();
    let name = &kernel.info.name;
    let func = module
        .get_function(name)
        .ok_or_else(|| KernelError::Llvm(format!("no function `{name}`")))?;
    // A wrapper taking every parameter from one array of 64-bit words.
    let ptr = cx.ptr_type(AddressSpace::default());
    let i64t = cx.i64_type();
    let wrapper_name = format!("{name}_host_entry");
    let wrapper = module.add_function(
        &wrapper_name,
        cx.void_type().fn_type(&[ptr.into()], false),
        None,
    );
    let b = cx.create_builder();
    b.position_at_end(cx.append_basic_block(wrapper, "entry"));
    let array = wrapper
        .get_nth_param(0)
        .expect("one parameter")
        .into_pointer_value();
    let mut args: Vec<BasicMetadataValueEnum> = Vec::new();
    for (i, param) in func.get_param_iter().enumerate() {
        // SAFETY: the array holds one word per kernel parameter.
        let slot =
            unsafe { b.build_in_bounds_gep(i64t, array, &[i64t.const_int(i as u64, false)], "") }?;
        let word = b.build_load(i64t, slot, "")?.into_int_value();
        if param.is_pointer_value() {
            args.push(b.build_int_to_ptr(word, ptr, "")?.into());
        } else {
            args.push(word.into());
        }
    }
    b.build_call(func, &args, "")?;
    b.build_return(None)?;
    let engine = module
        .create_jit_execution_engine(OptimizationLevel::Default)
        .map_err(|e| KernelError::Llvm(e.to_string()))?;
    if words.len() != func.count_params() as usize {
        return Err(KernelError::Llvm(format!(
            "`{name}` takes {} parameters, given {}",
            func.count_params(),
            words.len()
        )));
    }
    // SAFETY: the wrapper's signature is `void(ptr)`; the caller vouches for the buffers.
    let entry = unsafe {
        engine
            .get_function::<unsafe extern "C" fn(*const u64)>(&wrapper_name)
            .map_err(|e| KernelError::Llvm(e.to_string()))?
    };
    // SAFETY: as above.
    unsafe { entry.call(words.as_ptr()) };
    engine
        .remove_module(module)
        .map_err(|e| KernelError::Llvm(format!("{e:?}")))?;
    Ok(())
}
