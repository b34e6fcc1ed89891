//! `l2d-guidance`: classifier-free guidance for L2D's flow-matching sampler, on burn tensors.
//!
//! L2D (Cetin, Zhao, Tang, ICML 2025) conditions its diffusion path on a task class (math,
//! coding, general knowledge) and, at inference, mixes the conditional velocity `v_c` with the
//! unconditional one `v_u` (null class) as the reference code does:
//! `v = w · v_c + (1 - w) · v_u`, where `w = 1` is no guidance. This crate provides
//!
//! | item | what |
//! | --- | --- |
//! | [`cfg()`] | the combination itself |
//! | [`cfg_rescale`] | CFG-rescale (Lin et al. 2023) against over-saturated guided velocities |
//! | [`GuidanceInterval`] | guidance only for `t` in `[a, b]` (Kynkäänniemi et al. 2024) |
//! | [`Guidance`] | all of the above, plus [`Guidance::needs_unconditional`] to skip the second branch |
//! | [`stack_branches`], [`stack_labels`], [`split_branches`] | one batched forward for both branches |
//!
//! Tensors carry the batch on dimension 0 and may have any rank.
//!
//! # Feature flags
//!
//! None of its own; the backend features (`vulkan`, `wgpu`, `cuda`) live on `l2d-core` and the
//! `l2d` facade.
//!
//! # Example
//! ```
//! use burn::tensor::{Device, Tensor};
//! use l2d_guidance::Guidance;
//!
//! let device = Device::flex();
//! let guidance = Guidance::new(3.0)?.with_rescale(0.7)?;
//! let v_c = Tensor::<2>::from_floats([[1.0, -1.0, 2.0]], &device);
//! let v_u = Tensor::<2>::from_floats([[0.5, -0.5, 1.0]], &device);
//! let v = guidance.combine(0.5, v_c, Some(v_u))?;
//! assert_eq!(v.dims(), [1, 3]);
//! # Ok::<(), l2d_guidance::Error>(())
//! ```
#![warn(missing_docs)]

pub mod batch;
pub mod cfg;
pub mod error;
pub mod guidance;
pub mod interval;

pub use batch::{split_branches, stack_branches, stack_labels};
pub use cfg::{cfg, cfg_rescale};
pub use error::{Error, Result};
pub use guidance::Guidance;
pub use interval::GuidanceInterval;
