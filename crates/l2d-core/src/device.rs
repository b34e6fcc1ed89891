//! Devices by name, for command lines and examples: `cpu` (or `flex`) always, and `vulkan`,
//! `wgpu`, `cuda` when the crate feature of that name is on.

use burn::tensor::Device;

/// The device names this build accepts, `cpu` first, `default` last.
pub fn available_devices() -> Vec<&'static str> {
    let mut names = vec!["cpu"];
    if cfg!(feature = "vulkan") {
        names.push("vulkan");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
        names.push("cuda:N");
    }
    names.push("default");
    names
}

/// A device name this build does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "device {name:?} is not available in this build (available: {}; GPU backends come with \
     the crate features vulkan, wgpu, cuda)",
    available_devices().join(", ")
)]
pub struct UnknownDevice {
    /// The name asked for.
    pub name: String,
}

/// The device called `name`: `cpu` / `flex` (the CPU backend), `vulkan` / `wgpu` (the default
/// adapter) or `cuda` (GPU 0) / `cuda:N` (GPU `N`), the last three when compiled in, or
/// `default` (burn's default device: the first backend compiled in).
///
/// ```
/// assert!(l2d_core::device_by_name("cpu").is_ok());
/// let e = l2d_core::device_by_name("tpu").unwrap_err();
/// assert!(e.to_string().contains("\"tpu\" is not available"));
/// ```
///
/// # Errors
/// [`UnknownDevice`] for any other name.
pub fn device_by_name(name: &str) -> Result<Device, UnknownDevice> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        "default" => Ok(Device::default()),
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "cuda")]
        other if cuda_index(other).is_some() => Ok(Device::cuda(cuda_index(other).unwrap_or(0))),
        other => Err(UnknownDevice { name: other.into() }),
    }
}

/// `N` of a `cuda:N` device name (a GPU index below 1024).
pub fn cuda_index(name: &str) -> Option<usize> {
    name.strip_prefix("cuda:")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n < 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_indices_parse_and_other_names_do_not() {
        assert_eq!(cuda_index("cuda:0"), Some(0));
        assert_eq!(cuda_index("cuda:7"), Some(7));
        for bad in [
            "cuda",
            "cuda:",
            "cuda:-1",
            "cuda:x",
            "cuda:99999",
            "vulkan:0",
        ] {
            assert_eq!(cuda_index(bad), None, "{bad}");
        }
        // Without the cuda feature (CI's default build) a CUDA name is an unknown device.
        if !cfg!(feature = "cuda") {
            assert!(device_by_name("cuda:1").is_err());
        }
    }
}
