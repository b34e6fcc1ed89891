//! # l2d
//!
//! Large Language Models to Diffusion Finetuning (Cetin, Zhao, Tang; ICML 2025) in Rust.
//! This facade re-exports the workspace crates. Its default feature `cli` adds the modules
//! the `l2d` command runs (`cli`, `eval`, `demo`, `plot`); a library user who needs only the
//! crates depends on it with `default-features = false` and does not build them.
#![warn(missing_docs)]

pub use l2d_core as core;
pub use l2d_guidance as guidance;
pub use l2d_models as models;
pub use l2d_quant as quant;
pub use l2d_solvers as solvers;
pub use l2d_train as train;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod demo;
#[cfg(feature = "cli")]
pub mod eval;
#[cfg(feature = "cli")]
pub mod plot;
