//! Read-only GGUF support: the container, dequantisation, and the mapping of a llama.cpp
//! model to what the rest of the crate expects from a Hugging Face folder.
//!
//! * [`GgufFile`]: header (v2/v3), metadata of every value type, tensor infos, alignment;
//!   tensors dequantised from F32, F16, BF16, Q8_0, Q4_0, Q4_1 ([`dequant`]).
//! * [`GgufFile::config_json`]: the `llama` (and `qwen2`) architecture metadata as a Hugging
//!   Face `config.json` value, as transformers' GGUF loader maps it.
//! * [`GgufWeights`]: a [`WeightSource`](crate::weights::WeightSource) with Hugging Face
//!   tensor names and layouts; llama q/k projections are permuted back from llama.cpp's
//!   interleaved RoPE layout to Hugging Face's rotate-half layout.
//! * [`GgufFile::tokenizer`], [`GgufFile::chat_template`], [`GgufFile::stop_set`]: the
//!   tokenizer rebuilt from the vocabulary and merges, the template and the EOS ids.
//!
//! ```
//! use l2d_models::gguf::{GgufFile, GgufWeights};
//! use l2d_models::weights::WeightSource;
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/gguf/tiny-llama.gguf");
//! let file = std::sync::Arc::new(GgufFile::open(path)?);
//! let config = file.config_json()?;
//! assert_eq!(config["hidden_size"], 64);
//! let weights = GgufWeights::new(file.clone())?;
//! // `blk.0.attn_q.weight`, un-permuted to the Hugging Face layout and dequantised.
//! let q = weights.tensor_data("model.layers.0.self_attn.q_proj.weight")?;
//! assert_eq!(q.shape().to_vec(), vec![64, 64]);
//! let tokenizer = file.tokenizer()?;
//! assert_eq!(tokenizer.eos_token().unwrap().content, "<|im_end|>");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::PathBuf;

pub mod dequant;
pub mod mapping;
pub mod reader;
pub mod tokenizer;

pub use dequant::GgmlType;
pub use mapping::{GgufWeights, unpermute_rows};
pub use reader::{DEFAULT_ALIGNMENT, GgufFile, GgufTensorInfo, GgufValue};

/// Errors raised while reading a GGUF file. Every variant names the file, and the key or
/// tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a well-formed GGUF v2/v3 file.
    #[error("`{path}` is not a valid GGUF file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor's info is inconsistent (dims, offset, extent).
    #[error("tensor `{tensor}` in `{path}`: {reason}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A required metadata key is absent.
    #[error("`{path}` has no metadata key `{key}`")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value has the wrong type.
    #[error("metadata `{key}` in `{path}` should be {expected}, found {found}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The expected type.
        expected: String,
        /// The type found.
        found: String,
    },
    /// A metadata value is out of its valid range or inconsistent with another.
    #[error("metadata `{key}` in `{path}`: {reason}")]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The tensor is not in the file.
    #[error("`{path}` has no tensor `{tensor}`")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        tensor: String,
    },
    /// The tensor's encoding is not one this reader dequantises.
    #[error(
        "tensor `{tensor}` in `{path}` is {ggml_type}; only F32, F16, BF16, Q8_0, Q4_0 and \
         Q4_1 are supported"
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The GGUF tensor name.
        tensor: String,
        /// The encoding found.
        ggml_type: String,
    },
    /// The model (architecture, tokenizer kind, tensor, RoPE variant) is not supported.
    #[error("`{path}`: {what} is not supported")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
    /// The tokenizer could not be rebuilt from the vocabulary.
    #[error("cannot rebuild the tokenizer of `{path}`: {reason}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl From<GgufError> for crate::weights::WeightError {
    fn from(e: GgufError) -> Self {
        use crate::weights::WeightError;
        match e {
            GgufError::UnsupportedType {
                path,
                tensor,
                ggml_type,
            } => WeightError::UnsupportedDType {
                name: tensor,
                path,
                dtype: ggml_type,
            },
            GgufError::MissingTensor { path, tensor } => WeightError::Missing {
                name: tensor,
                location: path.display().to_string(),
            },
            other => {
                let path = match &other {
                    GgufError::Io { path, .. }
                    | GgufError::Format { path, .. }
                    | GgufError::Tensor { path, .. }
                    | GgufError::MissingKey { path, .. }
                    | GgufError::WrongType { path, .. }
                    | GgufError::InvalidValue { path, .. }
                    | GgufError::Unsupported { path, .. }
                    | GgufError::Tokenizer { path, .. } => path.clone(),
                    GgufError::UnsupportedType { path, .. }
                    | GgufError::MissingTensor { path, .. } => path.clone(),
                };
                WeightError::File {
                    path,
                    reason: other.to_string(),
                }
            }
        }
    }
}
