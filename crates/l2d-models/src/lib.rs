//! `l2d-models`: Llama, Qwen2 and Mistral adapters loaded from Hugging Face checkpoints,
//! and the L2D diffusion path.
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
pub mod pretrained;
pub mod sampling;
pub mod stops;
pub mod tokenizer;
pub mod weights;
