//! `l2d eval`: a steps-vs-accuracy sweep of a model and its diffusion adapter on a local JSONL
//! task file, with a JSON report and an SVG plot.
//!
//! - [`task_file`]: `{"prompt", "answer"}` JSONL files.
//! - [`extract`]: exact-match, last-number and multiple-choice-letter extraction.
//! - [`setting`]: `base`, fixed-step and adaptive diffusion settings.
//! - [`run`]: the command's arguments ([`EvalArgs`]) and the sweep ([`run_eval`]).
//! - [`report`]: the report ([`EvalReport`]) and its plot.
//!
//! The `base` setting generates with the frozen model (greedy). Diffusion settings generate
//! through the diffusion [`Generator`](l2d_models::generation::Generator) with the adapter
//! (greedy final token, the sweep's seed for the noise) and report the NFE per token; without
//! an adapter they are [`EvalError::AdapterRequired`].

pub mod extract;
pub mod report;
pub mod run;
pub mod setting;
pub mod task_file;

use std::path::PathBuf;

use l2d_models::pretrained::PretrainedError;

pub use extract::Extraction;
pub use report::{EvalReport, ItemResult, SettingResult};
pub use run::{EvalArgs, run_eval};
pub use setting::Setting;
pub use task_file::{TaskItem, load_tasks};

/// Errors of `l2d eval`.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A task file line is malformed (`line` is 1-based; 0 for the file as a whole).
    #[error("task file `{path}` line {line}: {reason}")]
    TaskFile {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A report file is not valid report JSON.
    #[error("report `{path}`: {source}")]
    Report {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// An argument is invalid.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The argument.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The model could not be loaded or a prompt could not be built.
    #[error(transparent)]
    Model(#[from] PretrainedError),
    /// Generation failed.
    #[error("generation failed: {0}")]
    Generation(Box<dyn std::error::Error + Send + Sync>),
    /// A diffusion setting without an adapter, or `lora` without `--lora`.
    #[error(
        "`{setting}` needs a trained adapter (`--adapter FILE` for diffusion settings, `--lora FILE` for `lora`)"
    )]
    AdapterRequired {
        /// The setting.
        setting: String,
    },
    /// The adapter could not be loaded or does not fit the model.
    #[error("adapter `{path}`: {source}")]
    Adapter {
        /// The adapter file.
        path: PathBuf,
        /// What went wrong.
        source: Box<l2d_models::diffusion::DiffusionError>,
    },
    /// The LoRA adapter could not be loaded or does not fit the model.
    #[error("LoRA adapter `{path}`: {source}")]
    Lora {
        /// The adapter file.
        path: PathBuf,
        /// What went wrong.
        source: Box<l2d_models::lora::LoraError>,
    },
    /// A setting's diffusion options do not fit the adapter.
    #[error("`{setting}`: {source}")]
    Diffusion {
        /// The setting.
        setting: String,
        /// What is wrong.
        source: Box<l2d_models::generation::DiffusionGenerationError>,
    },
}

impl From<l2d_models::tokenizer::TokenizerError> for EvalError {
    fn from(e: l2d_models::tokenizer::TokenizerError) -> Self {
        EvalError::Model(e.into())
    }
}

impl EvalError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        EvalError::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}
