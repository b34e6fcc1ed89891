//! # l2d
//!
//! Large Language Models to Diffusion Finetuning (Cetin, Zhao, Tang; ICML 2025) in Rust.
//! This facade re-exports the workspace crates.
#![warn(missing_docs)]

pub use l2d_core as core;
pub use l2d_guidance as guidance;
pub use l2d_models as models;
pub use l2d_quant as quant;
pub use l2d_solvers as solvers;
pub use l2d_train as train;

pub mod cli;
pub mod demo;
pub mod eval;
pub mod plot;
