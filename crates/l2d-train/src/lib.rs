//! `l2d-train`: training the L2D diffusion path of a frozen language model.
//!
//! L2D ("Large Language Models to Diffusion Finetuning", Cetin, Zhao, Tang, ICML 2025) trains
//! only a small parallel diffusion path on top of a frozen base model, with plain
//! cross-entropy on the next token while the token's flow state is noised to a per-position
//! timestep `t ~ U[0, 1]`. This crate holds what that training needs beyond the model:
//!
//! | module | what |
//! | --- | --- |
//! | [`data`] | chat files (JSONL, Parquet), template rendering with assistant-only loss masks, batching, the validation split, `data inspect` |
//! | [`step`] | one micro-batch: timesteps, noise, class dropout, loss and backward on the diffusion path only |
//! | [`objective`] | what a run trains: the diffusion path, or the LoRA baseline (`method = "lora"`), behind one trait |
//! | [`stepper`] | one optimizer step of any objective: micro-batches summed, then AdamW |
//! | [`optim`] | AdamW by parameter name, gradient accumulation, global-norm clipping |
//! | [`schedule`] | warmup then linear / cosine decay of the learning rate |
//! | [`validation`] | held-out loss (also per `t` bin) and n-step accuracy |
//! | [`checkpoint`] | atomic checkpoints and exact resume |
//! | [`trainer`] | the training run (its progress as `tracing` events) |
//! | [`config`] | the TOML configuration of `l2d train` |
//! | [`memory`] | peak RSS and the analytic memory of a step |
//! | [`error`] | the crate's typed errors |
//!
//! The frozen base runs on a device without autodiff and the diffusion path on its autodiff
//! form, so the base records no graph, receives no gradient and holds no optimizer state.
//!
//! # Feature flags
//!
//! | feature | effect |
//! | --- | --- |
//! | `parquet` *(default)* | read chat data from Parquet files (pure Rust; snappy, gzip, lz4) |
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod memory;
pub mod objective;
pub mod optim;
pub mod schedule;
pub mod step;
pub mod stepper;
pub mod trainer;
pub mod validation;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use trainer::{PROGRESS_TARGET, RunOptions, TrainSummary, train};
