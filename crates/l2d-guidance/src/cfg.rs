//! The guidance combinations themselves, as pure tensor functions.

use burn::tensor::Tensor;

/// Classifier-free guidance in the reference's convention: `w · v_c + (1 - w) · v_u`.
///
/// `w = 1` returns `v_c` (no guidance), `w = 0` returns `v_u`, and `w > 1` extrapolates away
/// from the unconditional velocity. This equals the Imagen/diffusers form `v_u + w (v_c - v_u)`
/// and Ho & Salimans' `(1 + ω) v_c - ω v_u` with `ω = w - 1`. Because L2D's velocity is affine
/// in the x1 estimate with the same `x_t` and `t` in both branches, guiding velocities equals
/// guiding the x1 estimates.
///
/// # Shapes
/// - `v_c`, `v_u`: `[b, ...]` (equal shapes); output: the same shape
///
/// # Panics
/// If the shapes do not agree (burn's broadcasting rules).
///
/// # Example
/// ```
/// use burn::tensor::{Device, Tensor};
/// use l2d_guidance::cfg::cfg;
///
/// let device = Device::flex();
/// let v_c = Tensor::<2>::from_floats([[1.0, 2.0]], &device);
/// let v_u = Tensor::<2>::from_floats([[0.0, 4.0]], &device);
/// let v = cfg(v_c, v_u, 2.0); // 2·v_c − v_u
/// assert_eq!(v.into_data().to_vec::<f32>().unwrap(), vec![2.0, 0.0]);
/// ```
pub fn cfg<const D: usize>(v_c: Tensor<D>, v_u: Tensor<D>, weight: f64) -> Tensor<D> {
    v_c.mul_scalar(weight).add(v_u.mul_scalar(1.0 - weight))
}

/// CFG-rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
/// Flawed", §3.4): `v_rs = v_cfg · std(v_c) / std(v_cfg)`, then `phi · v_rs + (1 - phi) · v_cfg`.
///
/// The standard deviations are taken per sample over all non-batch dimensions (batch on
/// dimension 0); the ratio does not depend on Bessel's correction. A sample whose `v_cfg` is
/// constant (zero deviation) is left unrescaled. `phi = 0` returns `v_cfg`; the paper uses 0.7.
///
/// # Shapes
/// - `v_cfg`, `v_c`: `[b, ...]` (equal shapes); output: the same shape
///
/// # Panics
/// If the shapes do not agree.
pub fn cfg_rescale<const D: usize>(v_cfg: Tensor<D>, v_c: Tensor<D>, phi: f64) -> Tensor<D> {
    let dims = v_cfg.dims();
    let batch = dims[0];
    let per_sample = dims[1..].iter().product::<usize>();
    let flat_cfg: Tensor<2> = v_cfg.clone().reshape([batch, per_sample]);
    let flat_c: Tensor<2> = v_c.reshape([batch, per_sample]);
    let std_c = flat_c.var_bias(1).sqrt();
    let std_cfg = flat_cfg.clone().var_bias(1).sqrt();
    let degenerate = std_cfg.clone().equal_elem(0.0);
    let ratio = std_c
        .div(std_cfg.mask_fill(degenerate.clone(), 1.0))
        .mask_fill(degenerate, 1.0);
    let rescaled = flat_cfg.clone().mul(ratio);
    rescaled
        .mul_scalar(phi)
        .add(flat_cfg.mul_scalar(1.0 - phi))
        .reshape(dims)
}
