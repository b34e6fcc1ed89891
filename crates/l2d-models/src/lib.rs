//! `l2d-models`: Llama, Qwen2 and Mistral adapters loaded from Hugging Face checkpoints,
//! the L2D diffusion path, and generation with both ([`generation::Generator`]).
//!
//! # Feature flags
//! | feature | what |
//! | --- | --- |
//! | `vulkan` | GPU through Vulkan (forwards to `l2d-core`; builds offline) |
//! | `wgpu` | GPU through wgpu |
//! | `cuda` | CUDA (builds offline after `scripts/setup-cuda-build.sh`, see `docs/gpu.md`; CI checks that it compiles) |
//!
//! The library itself is device-generic; the features only add backends to `burn` and the
//! device choices of `examples/bench_generation.rs`.
#![warn(missing_docs)]

pub mod chat_template;
pub mod config;
pub mod decoder;
pub mod detokenize;
pub mod diffusion;
pub mod generation;
pub mod gguf;
pub mod l2d_config;
pub mod loading;
pub mod lora;
pub mod presets;
pub mod pretrained;
pub mod sampling;
pub mod stops;
pub mod tokenizer;
pub mod weights;
