//! Finding a GPU through the CUDA driver, without panicking where there is none.

use cudarc::driver::{result, sys};

/// What the runtime learns about a GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    /// The device's name (`NVIDIA GB10`, `NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability times ten (121 for 12.1).
    pub compute_capability: u32,
    /// An integrated GPU sharing the CPU's memory (GB10).
    pub integrated: bool,
    /// The GPU reads pageable host memory coherently through the host's page tables, so
    /// memory-mapped weights need no copy.
    pub coherent_host_memory: bool,
}

/// The first GPU, `Ok(None)` when the driver library is absent or sees no device, or the
/// driver's error.
pub fn detect() -> Result<Option<GpuInfo>, String> {
    // SAFETY: only probes whether the driver library can be opened.
    if !unsafe { sys::is_culib_present() } {
        return Ok(None);
    }
    let err = |e: cudarc::driver::DriverError| format!("CUDA driver: {e}");
    result::init().map_err(err)?;
    if result::device::get_count().map_err(err)? == 0 {
        return Ok(None);
    }
    let dev = result::device::get(0).map_err(err)?;
    let attr = |a| {
        // SAFETY: `dev` came from `device::get`.
        unsafe { result::device::get_attribute(dev, a) }.map_err(err)
    };
    use sys::CUdevice_attribute as A;
    let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let integrated = attr(A::CU_DEVICE_ATTRIBUTE_INTEGRATED)? != 0;
    let pageable = attr(A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS)? != 0;
    let host_tables =
        attr(A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES)? != 0;
    let managed = attr(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)? != 0;
    Ok(Some(GpuInfo {
        name: result::device::get_name(dev).map_err(err)?,
        compute_capability: (major * 10 + minor) as u32,
        integrated,
        coherent_host_memory: pageable && host_tables && managed,
    }))
}

/// Compute capability times ten of a target name (`sm_121a` → 121, `sm_90a` → 90).
pub fn target_capability(target: &str) -> Option<u32> {
    target
        .strip_prefix("sm_")?
        .trim_end_matches(['a', 'f'])
        .parse()
        .ok()
}

/// The target whose PTX a GPU of compute capability `cc` should load: an exact
/// architecture-specific match, else the newest plain target not above it. `sm_XYa` PTX runs
/// only on exactly XY, so `sm_90a` does not serve a 10.0 part.
pub fn pick_target(targets: &[String], cc: u32) -> Option<&str> {
    targets
        .iter()
        .filter_map(|t| Some((t.as_str(), target_capability(t)?)))
        .filter(|&(t, c)| c == cc || (c < cc && !t.ends_with('a') && !t.ends_with('f')))
        .max_by_key(|&(_, c)| c)
        .map(|(t, _)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_specific_targets_serve_only_their_own_part() {
        let targets: Vec<String> = ["sm_121a", "sm_120a", "sm_100a", "sm_90a", "sm_80"]
            .map(String::from)
            .to_vec();
        assert_eq!(pick_target(&targets, 121), Some("sm_121a"));
        assert_eq!(pick_target(&targets, 90), Some("sm_90a"));
        assert_eq!(pick_target(&targets, 89), Some("sm_80"));
        assert_eq!(pick_target(&targets, 103), Some("sm_80"));
        assert_eq!(pick_target(&targets, 75), None);
        assert_eq!(pick_target(&["sm_121a".to_string()], 90), None);
    }

    #[test]
    fn no_driver_means_no_gpu() {
        // SAFETY: only probes whether the driver library can be opened.
        if !unsafe { sys::is_culib_present() } {
            assert_eq!(detect(), Ok(None));
        }
    }
}
