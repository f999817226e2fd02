//! The C ABI of the sparkc runtime: the functions `include/sparkc.h` declares.
//!
//! Every entry point catches panics and reports failures through `sparkc_last_error`, so no
//! Rust unwinding crosses into C.

use sparkc_runtime::{Artifact, Device, Session, Tensor};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// A session with the C strings and output shapes its views point into.
pub struct SparkcSession {
    session: Session,
    device: CString,
    input_names: Vec<CString>,
    output_names: Vec<CString>,
    outputs: Vec<(Tensor, Vec<i64>)>,
}

/// A tensor passed in or viewed out, as `sparkc_tensor` in `sparkc.h`.
#[repr(C)]
pub struct SparkcTensor {
    /// The tensor's name (NUL-terminated).
    pub name: *const c_char,
    /// ONNX element type code.
    pub dtype: i32,
    /// Number of axes.
    pub rank: usize,
    /// `rank` sizes.
    pub shape: *const i64,
    /// The element bytes.
    pub data: *const u8,
    /// Length of `data` in bytes.
    pub bytes: usize,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: String) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Runs `body`, turning an error or a panic into the thread's last error and `failed`.
fn guard<T>(failed: T, body: impl FnOnce() -> Result<T, String>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(message)) => {
            set_error(message);
            failed
        }
        Err(_) => {
            set_error("internal error (a panic in the sparkc runtime)".into());
            failed
        }
    }
}

fn c_names(names: impl Iterator<Item = String>) -> Vec<CString> {
    names
        .map(|n| CString::new(n.replace('\0', " ")).unwrap_or_default())
        .collect()
}

/// Opens an artifact and prepares it for a device; NULL on error.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_open(
    path: *const c_char,
    device: c_int,
) -> *mut SparkcSession {
    guard(std::ptr::null_mut(), || {
        if path.is_null() {
            return Err("the artifact path is NULL".into());
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let path = unsafe { CStr::from_ptr(path) }
            .to_str()
            .map_err(|_| "the artifact path is not UTF-8".to_string())?;
        let device = match device {
            0 => Device::Auto,
            1 => Device::Cpu,
            2 => Device::Cuda,
            other => {
                return Err(format!(
                    "unknown device {other}; use SPARKC_DEVICE_AUTO, _CPU or _CUDA"
                ))
            }
        };
        let artifact = Artifact::open(Path::new(path)).map_err(|e| e.to_string())?;
        let session = Session::new(&artifact, device).map_err(|e| e.to_string())?;
        let boxed = SparkcSession {
            device: CString::new(session.device()).unwrap_or_default(),
            input_names: c_names(session.inputs().iter().map(|s| s.name.clone())),
            output_names: c_names(session.outputs().iter().map(|s| s.name.clone())),
            outputs: Vec::new(),
            session,
        };
        Ok(Box::into_raw(Box::new(boxed)))
    })
}

/// Releases a session (NULL is allowed).
///
/// # Safety
/// `session` must be NULL or a pointer from `sparkc_session_open` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_free(session: *mut SparkcSession) {
    if !session.is_null() {
        // SAFETY: the pointer came from Box::into_raw and is freed once.
        drop(unsafe { Box::from_raw(session) });
    }
}

/// The device the session runs on.
///
/// # Safety
/// `session` must be a live session.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_device(session: *const SparkcSession) -> *const c_char {
    // SAFETY: the caller passes a live session.
    match unsafe { session.as_ref() } {
        Some(s) => s.device.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// Number of graph inputs.
///
/// # Safety
/// `session` must be a live session.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_input_count(session: *const SparkcSession) -> usize {
    // SAFETY: the caller passes a live session.
    unsafe { session.as_ref() }.map_or(0, |s| s.input_names.len())
}

/// Number of graph outputs.
///
/// # Safety
/// `session` must be a live session.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_output_count(session: *const SparkcSession) -> usize {
    // SAFETY: the caller passes a live session.
    unsafe { session.as_ref() }.map_or(0, |s| s.output_names.len())
}

/// Name of input `i`, or NULL.
///
/// # Safety
/// `session` must be a live session.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_input_name(
    session: *const SparkcSession,
    i: usize,
) -> *const c_char {
    // SAFETY: the caller passes a live session.
    unsafe { session.as_ref() }
        .and_then(|s| s.input_names.get(i))
        .map_or(std::ptr::null(), |n| n.as_ptr())
}

/// Name of output `i`, or NULL.
///
/// # Safety
/// `session` must be a live session.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_output_name(
    session: *const SparkcSession,
    i: usize,
) -> *const c_char {
    // SAFETY: the caller passes a live session.
    unsafe { session.as_ref() }
        .and_then(|s| s.output_names.get(i))
        .map_or(std::ptr::null(), |n| n.as_ptr())
}

/// Copies one C tensor into a runtime tensor, checking what can be checked.
///
/// # Safety
/// The tensor's pointers must be valid for the sizes it states.
unsafe fn tensor_in(t: &SparkcTensor) -> Result<(String, Tensor), String> {
    if t.name.is_null() {
        return Err("an input has a NULL name".into());
    }
    // SAFETY: the caller passes NUL-terminated names.
    let name = unsafe { CStr::from_ptr(t.name) }
        .to_string_lossy()
        .into_owned();
    let dtype =
        sparkc_onnx::dtype_from_onnx(t.dtype).map_err(|e| format!("input '{name}': {e}"))?;
    if t.rank > 0 && t.shape.is_null() {
        return Err(format!("input '{name}': shape is NULL"));
    }
    let dims: &[i64] = if t.rank == 0 {
        &[]
    } else {
        // SAFETY: `shape` holds `rank` sizes.
        unsafe { std::slice::from_raw_parts(t.shape, t.rank) }
    };
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("input '{name}': negative size {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    if t.bytes > 0 && t.data.is_null() {
        return Err(format!("input '{name}': data is NULL"));
    }
    let bytes = if t.bytes == 0 {
        Vec::new()
    } else {
        // SAFETY: `data` holds `bytes` bytes.
        unsafe { std::slice::from_raw_parts(t.data, t.bytes) }.to_vec()
    };
    let tensor = Tensor::new(dtype, shape, bytes).map_err(|e| format!("input '{name}': {e}"))?;
    Ok((name, tensor))
}

/// Runs on `n` named inputs; 0 on success, -1 on error.
///
/// # Safety
/// `session` must be a live session and `inputs` must point to `n` valid tensors.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_run(
    session: *mut SparkcSession,
    inputs: *const SparkcTensor,
    n: usize,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller passes a live session.
        let s = unsafe { session.as_mut() }.ok_or("the session is NULL")?;
        if n > 0 && inputs.is_null() {
            return Err("inputs is NULL".into());
        }
        let given: &[SparkcTensor] = if n == 0 {
            &[]
        } else {
            // SAFETY: `inputs` points to `n` tensors.
            unsafe { std::slice::from_raw_parts(inputs, n) }
        };
        let mut named = Vec::with_capacity(n);
        for t in given {
            // SAFETY: each tensor's pointers are valid, as the caller promises.
            named.push(unsafe { tensor_in(t) }?);
        }
        let refs: Vec<(&str, Tensor)> =
            named.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let outputs = s.session.run(&refs).map_err(|e| e.to_string())?;
        s.outputs = outputs
            .into_iter()
            .map(|(_, t)| {
                let shape = t.shape().iter().map(|&d| d as i64).collect();
                (t, shape)
            })
            .collect();
        Ok(0)
    })
}

/// A view of output `i` of the last run; 0 on success, -1 when there is none.
///
/// # Safety
/// `session` must be a live session and `out` a writable tensor.
#[no_mangle]
pub unsafe extern "C" fn sparkc_session_output(
    session: *const SparkcSession,
    i: usize,
    out: *mut SparkcTensor,
) -> c_int {
    guard(-1, || {
        // SAFETY: the caller passes a live session.
        let s = unsafe { session.as_ref() }.ok_or("the session is NULL")?;
        let (t, shape) = s.outputs.get(i).ok_or_else(|| {
            format!(
                "no output {i} (run first; the model has {})",
                s.output_names.len()
            )
        })?;
        // SAFETY: the caller passes a writable tensor.
        let out = unsafe { out.as_mut() }.ok_or("out is NULL")?;
        *out = SparkcTensor {
            name: s.output_names[i].as_ptr(),
            dtype: sparkc_onnx::dtype_to_onnx(t.dtype()),
            rank: shape.len(),
            shape: shape.as_ptr(),
            data: t.bytes().as_ptr(),
            bytes: t.bytes().len(),
        };
        Ok(0)
    })
}

/// The calling thread's last error message.
#[no_mangle]
pub extern "C" fn sparkc_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
