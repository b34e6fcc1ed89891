//! `l2d-core`: the device-generic math of L2D ("Large Language Models to Diffusion
//! Finetuning", Cetin, Zhao, Tang, ICML 2025), on burn tensors.
//!
//! L2D gives a frozen language model a diffusion path: for the next token it integrates a
//! rectified-flow ODE in a small "flow representation" space from noise (`t = 0`) to a token
//! embedding (`t = 1`). This crate holds the pieces that do not depend on a model, each in its
//! own module and each matching the authors' reference code (SakanaAI/L2D):
//!
//! | module | what |
//! | --- | --- |
//! | [`schedule`] | noise schedules: identity, the reference's `cosmap`, shifted |
//! | [`interpolant`] | the flow state `x_t = (1-t) x0 + t x1` and its target velocity |
//! | [`velocity`] | velocity schedules `constant` and `edm` from an x1 estimate |
//! | [`timestep`] | the sinusoidal timestep embedding (raw `t`, cosines first) |
//! | [`flow_repr`] | flow-representation normalisation and the `div`/`mult`/`none` rescaling |
//! | [`input_norm`] | the diffusion path's time-dependent input normalisation |
//! | [`x1_estimate`] | x1 from logits: average, sample, argmax at `T <= 0`, clamp |
//! | [`temperature`] | temperature schedules: constant, `polynomial_p_end`, `1 - t` |
//! | [`rng`] | a seeded host RNG giving identical noise on every backend |
//! | [`time`] | scalar or per-element time arguments |
//! | [`error`] | the crate's typed errors |
//!
//! Everything takes burn 0.22 tensors (`Tensor<D>`, no backend type parameter): the device a
//! tensor lives on picks the backend, and the dtype of the inputs is kept (`f32` as the
//! reference's model, `f64` as its velocity computation).
//!
//! # Feature flags
//!
//! | feature | effect |
//! | --- | --- |
//! | *(default)* | CPU through burn's `flex` backend (`Device::flex()`), pure Rust |
//! | `vulkan` | burn's Vulkan backend (builds offline) with fusion and autotune |
//! | `wgpu` | burn's wgpu backend (WebGPU / Metal / DX12 / Vulkan) with fusion and autotune |
//! | `cuda` | burn's CUDA backend; needs a network download at build time |
//!
//! # Example
//!
//! One Euler step of the L2D ODE on a toy vocabulary of three tokens:
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use l2d_core::{
//!     flow_repr::{normalize_flow_representation, Rescaling},
//!     rng::HostRng,
//!     temperature::TemperatureSchedule,
//!     velocity::VelocitySchedule,
//!     x1_estimate::{X1Estimation, X1Estimator},
//! };
//!
//! let device = Device::flex();
//! // Flow representations of the vocabulary: unit rows times sqrt(d) ("mult").
//! let raw = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], &device);
//! let table = normalize_flow_representation(raw, Rescaling::Mult);
//!
//! let mut rng = HostRng::new(7);
//! let noise_scale = 64.0;
//! let x = rng.normal([1, 2], &device).mul_scalar(noise_scale); // x_0 ~ N(0, 64²)
//!
//! let t = 0.0;
//! let logits = Tensor::<2>::from_floats([[2.0, 0.5, -1.0]], &device); // from the model
//! let temperature = "polynomial_1_1.0".parse::<TemperatureSchedule>()?.at(t);
//! let x1_hat = X1Estimation::new(X1Estimator::Sample).estimate(logits, &table, temperature, &mut rng)?;
//! let v = VelocitySchedule::Constant.velocity(x1_hat, x.clone(), t);
//! let x_next = x + v.mul_scalar(0.5); // Euler step to t = 0.5
//! assert_eq!(x_next.dims(), [1, 2]);
//! # Ok::<(), l2d_core::Error>(())
//! ```
#![warn(missing_docs)]

pub mod device;
pub mod error;
pub mod flow_repr;
pub mod input_norm;
pub mod interpolant;
pub mod rng;
pub mod schedule;
pub mod temperature;
pub mod time;
pub mod timestep;
pub mod velocity;
pub mod x1_estimate;

pub use device::{UnknownDevice, available_devices, device_by_name};
pub use error::{Error, Result};
pub use flow_repr::{Rescaling, normalize_flow_representation};
pub use input_norm::InputNormalization;
pub use interpolant::{flow_state, target_velocity};
pub use rng::HostRng;
pub use schedule::NoiseSchedule;
pub use temperature::TemperatureSchedule;
pub use time::Time;
pub use timestep::timestep_embedding;
pub use velocity::VelocitySchedule;
pub use x1_estimate::{X1Estimation, X1Estimator};
