//! [`WeightFormat`]: how a frozen model's weights are held, and its one parser.

use std::fmt;
use std::str::FromStr;

use burn::tensor::DType;
use l2d_quant::BlockFormat;

/// How a frozen model's weights are held: every tensor in one float dtype, or the projections
/// (and the head) in a GGUF block format with everything else in f32.
///
/// Parses from `f32` / `float32`, `bf16` / `bfloat16`, `f16` / `float16`, `q8_0`, `q4_0` and
/// `q4_1` (the command line's `--dtype`).
///
/// ```
/// use l2d_models::loading::WeightFormat;
/// let f: WeightFormat = "q8_0".parse()?;
/// assert_eq!(f.to_string(), "q8_0");
/// assert_eq!(f.dtype(), burn::tensor::DType::F32); // activations and the other weights
/// assert!("f64".parse::<WeightFormat>().is_err());
/// # Ok::<(), l2d_models::loading::UnknownWeightFormat>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Every weight in this float dtype (F32, F16 or BF16); GGUF blocks are expanded.
    Float(DType),
    /// Projections held in blocks: GGUF tensors already stored in a block format keep their
    /// own blocks (never quantized twice), float ones are quantized to this format; the
    /// embedding, norms and biases stay f32, and a tied head gets blocks of its own. Blocks
    /// live in CPU memory and are multiplied there; on another device each product goes
    /// through a float copy of its matrix (correct, not fast).
    Quantized(BlockFormat),
}

impl WeightFormat {
    /// The dtype of the float tensors (and of activations): F32 when quantized.
    pub fn dtype(self) -> DType {
        match self {
            WeightFormat::Float(d) => d,
            WeightFormat::Quantized(_) => DType::F32,
        }
    }

    /// The block format of the projections, when quantized.
    pub fn block_format(self) -> Option<BlockFormat> {
        match self {
            WeightFormat::Float(_) => None,
            WeightFormat::Quantized(f) => Some(f),
        }
    }
}

impl Default for WeightFormat {
    /// f32.
    fn default() -> Self {
        WeightFormat::Float(DType::F32)
    }
}

/// A weight format name that is not one of those [`WeightFormat`] parses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?}: expected f32, bf16, f16, q8_0, q4_0 or q4_1")]
pub struct UnknownWeightFormat(pub String);

impl FromStr for WeightFormat {
    type Err = UnknownWeightFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => WeightFormat::Float(DType::F32),
            "bf16" | "bfloat16" => WeightFormat::Float(DType::BF16),
            "f16" | "float16" => WeightFormat::Float(DType::F16),
            other => WeightFormat::Quantized(
                other
                    .parse::<BlockFormat>()
                    .map_err(|_| UnknownWeightFormat(s.to_string()))?,
            ),
        })
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightFormat::Float(DType::F32) => f.write_str("f32"),
            WeightFormat::Float(DType::BF16) => f.write_str("bf16"),
            WeightFormat::Float(DType::F16) => f.write_str("f16"),
            WeightFormat::Float(other) => write!(f, "{other:?}"),
            WeightFormat::Quantized(b) => write!(f, "{b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for name in ["f32", "bf16", "f16", "q8_0", "q4_0", "q4_1"] {
            let f: WeightFormat = name.parse().unwrap();
            assert_eq!(f.to_string(), name);
        }
        assert_eq!(
            "BFloat16".parse::<WeightFormat>().unwrap(),
            WeightFormat::Float(DType::BF16)
        );
        let err = "q5_k".parse::<WeightFormat>().unwrap_err();
        assert!(err.to_string().contains("q5_k") && err.to_string().contains("q8_0"));
    }
}
