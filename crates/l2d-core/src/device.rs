//! Devices by name, for command lines and examples: `cpu` (or `flex`) always, and `vulkan`,
//! `wgpu`, `cuda` when the crate feature of that name is on.

use burn::tensor::Device;

/// The device names this build accepts, `cpu` first.
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
    }
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
/// adapter) or `cuda` (GPU 0), the last three when compiled in.
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
        #[cfg(feature = "vulkan")]
        "vulkan" => Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        other => Err(UnknownDevice { name: other.into() }),
    }
}
