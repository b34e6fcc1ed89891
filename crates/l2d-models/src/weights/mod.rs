//! Sources of named weight tensors in Hugging Face naming and layout.
//!
//! A model loader asks a [`WeightSource`] for tensors by their Hugging Face name
//! (`model.layers.0.self_attn.q_proj.weight`, shape `[out, in]` as PyTorch stores it).
//! Safetensors folders (single or sharded) and GGUF files both implement it, so one
//! loader serves every format.

use std::path::PathBuf;

use burn::tensor::TensorData;

mod safetensors;
mod write;
pub use self::safetensors::{INDEX_FILE, SINGLE_FILE, SafetensorsSource};
pub use self::write::{serialize_f32, write_atomically};

/// Errors raised while reading weights. Every variant names the tensor and/or file.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The tensor is not present in any file of the source.
    #[error("tensor `{name}` is missing from {location}")]
    Missing {
        /// Hugging Face name of the tensor.
        name: String,
        /// Human-readable description of where it was looked for.
        location: String,
    },
    /// The file could not be read or parsed.
    #[error("cannot read `{path}`: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A weight file could not be written.
    #[error("cannot write `{path}`: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The tensor's element type cannot be converted to a float tensor.
    #[error("tensor `{name}` in `{path}` has unsupported dtype {dtype}")]
    UnsupportedDType {
        /// Hugging Face name of the tensor.
        name: String,
        /// The file holding it.
        path: PathBuf,
        /// The dtype found.
        dtype: String,
    },
    /// A shard named by a sharded checkpoint's index does not exist.
    #[error("shard `{shard}` listed in `{index}` does not exist")]
    MissingShard {
        /// The missing file.
        shard: PathBuf,
        /// The index naming it.
        index: PathBuf,
    },
    /// The same tensor is stored in several files.
    #[error("tensor `{name}` is stored in several files: {}", list(.files))]
    Duplicate {
        /// Hugging Face name of the tensor.
        name: String,
        /// Every file holding it.
        files: Vec<PathBuf>,
    },
    /// A shard holds a tensor that the index's `weight_map` does not list.
    #[error("tensor `{name}` in `{file}` is not listed in `{index}`")]
    NotInIndex {
        /// Hugging Face name of the tensor.
        name: String,
        /// The shard holding it.
        file: PathBuf,
        /// The index.
        index: PathBuf,
    },
    /// The index lists a tensor in a shard that does not hold it.
    #[error(
        "`{index}` lists tensor `{name}` in `{listed}`, but {}",
        match .found { Some(f) => format!("it is in `{}`", f.display()), None => "no shard holds it".into() }
    )]
    IndexMismatch {
        /// Hugging Face name of the tensor.
        name: String,
        /// The index.
        index: PathBuf,
        /// The shard the index names.
        listed: PathBuf,
        /// The shard actually holding it, if any.
        found: Option<PathBuf>,
    },
}

fn list(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| format!("`{}`", f.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A set of named tensors in Hugging Face naming and PyTorch layout.
pub trait WeightSource {
    /// Every tensor name the source holds.
    fn names(&self) -> Vec<String>;

    /// The shape of a tensor as stored (PyTorch order), or `None` if absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;

    /// The tensor's values, in the dtype stored in the file (f32, f16 or bf16)
    /// or f32 where the source had to dequantise.
    fn tensor_data(&self, name: &str) -> Result<TensorData, WeightError>;

    /// A 2-D tensor's blocks (`[rows, cols]` as [`shape`](Self::shape) gives, in the
    /// model's layout) when the source stores it in a block format the crate multiplies
    /// without expanding (GGUF `Q8_0`, `Q4_0`, `Q4_1`); `None` for float tensors. The
    /// default: none.
    fn quantized(&self, name: &str) -> Result<Option<l2d_quant::QuantMatrix>, WeightError> {
        let _ = name;
        Ok(None)
    }

    /// Where a tensor lives (its file), for error messages.
    fn location(&self, name: &str) -> String;
}
