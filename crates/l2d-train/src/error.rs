//! The crate's typed errors. Each variant names the file, line, field or tensor at fault.

use std::path::PathBuf;

/// Every failure of data loading, configuration, training and checkpointing.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or folder could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done (`read`, `write`, `create`, `rename`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The run folder holds a previous run and neither resuming nor overwriting was asked.
    #[error(
        "the run folder `{path}` holds a previous run ({found}): pass --resume to continue it \
         or --overwrite to replace it"
    )]
    RunFolderInUse {
        /// The run folder.
        path: PathBuf,
        /// The run outputs found in it.
        found: String,
    },
    /// A record of a chat file is malformed (bad JSON, a missing `messages` field, ...).
    #[error("`{path}`, {location}: {reason}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// `line N` (JSONL) or `row N` (Parquet).
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A data file's format is not supported (unknown extension, compression codec, ...).
    #[error("`{path}`: {reason}")]
    Format {
        /// The data file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A class label is not in the configured class list.
    #[error("`{path}`, {location}: class {class} is not one of the configured classes {known:?}")]
    UnknownClass {
        /// The data file.
        path: PathBuf,
        /// `line N` or `row N`.
        location: String,
        /// The label found (a name or an index).
        class: String,
        /// The configured class names.
        known: Vec<String>,
    },
    /// The tokenizer produced an id with no row in the model's embedding (a tokenizer that
    /// does not belong to the model).
    #[error(
        "{what}: token id {id} is outside the model's vocabulary of {vocab} (the tokenizer does \
         not belong to this model)"
    )]
    TokenOutOfVocabulary {
        /// Where the id came from (`conversation 3 of the training data`, `the padding id`).
        what: String,
        /// The id.
        id: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// No training example is left after encoding and truncation.
    #[error("no usable example in {what}: {reason}")]
    NoData {
        /// The data set (`training data`, `validation data`).
        what: String,
        /// Why (e.g. every conversation longer than `max_seq_len`).
        reason: String,
    },
    /// The configuration file or a flag is invalid.
    #[error("invalid configuration{}: {reason}", field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    Config {
        /// The field at fault (dotted, e.g. `optim.peak_lr`), if one.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// The TOML configuration file does not parse (unknown key, wrong type, ...).
    #[error("cannot parse the configuration `{path}`: {reason}")]
    ConfigParse {
        /// The TOML file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        reason: String,
    },
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] l2d_models::chat_template::ChatTemplateError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] l2d_models::tokenizer::TokenizerError),
    /// The rendered conversation cannot be split into turns (a template that rewrites earlier
    /// turns when later ones are added).
    #[error("{what}: {reason}")]
    TurnSplit {
        /// Which conversation.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The base model could not be loaded.
    #[error("cannot load the model from `{path}`: {reason}")]
    Model {
        /// The model folder or GGUF file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Too many steps had a non-finite loss or gradient.
    #[error(
        "stopped at step {step}: {count} micro-batches had a non-finite loss or gradient \
         (limit {limit}); lower the learning rate or check the data"
    )]
    NonFinite {
        /// The optimizer step at which the limit was reached.
        step: usize,
        /// How many were skipped.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A checkpoint is missing, incomplete or does not match the run.
    #[error("checkpoint `{path}`: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The diffusion path failed (configuration, shapes, adapter file).
    #[error("diffusion path: {0}")]
    Diffusion(String),
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// An [`TrainError::Io`] error.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A [`TrainError::Config`] error on a field.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TrainError::Config {
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
}
