//! Block-quantized matrices kept quantized, and multiplied without expanding them.
//!
//! A frozen language model decoding one token at a time reads every weight once per token:
//! its speed is the speed of streaming the weights from memory. Keeping GGUF's block formats
//! (`Q8_0`: 8.5 bits per weight, `Q4_0`: 4.5, `Q4_1`: 5) in memory cuts both the bytes held
//! and the bytes read, provided the product never materialises an f32 copy. This crate holds
//! such matrices ([`QuantMatrix`], in GGUF's own byte layout, rows = output features) and
//! multiplies a few f32 rows by them ([`QuantMatrix::matmul`]): each block's quants are
//! decoded in registers and dotted with the input, one scale multiply per block, rows split
//! over rayon's threads. The inner loop is written for AVX2 + FMA (picked at run time where
//! the CPU has it) and in portable Rust for every other target.
//!
//! ```
//! use l2d_quant::{BlockFormat, QuantMatrix};
//!
//! // A 2 x 64 matrix, quantized to Q8_0, times one input row.
//! let w: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 64.0).collect();
//! let q = QuantMatrix::quantize(BlockFormat::Q8_0, &w, 2, 64)?;
//! let x = vec![1.0f32; 64];
//! let y = q.matmul(&x, 1)?; // [1, 2]
//! // The product of the quantized weights, which are within half a step of the originals.
//! let wq = q.dequantize();
//! for r in 0..2 {
//!     let exact: f32 = wq[r * 64..(r + 1) * 64].iter().sum();
//!     assert!((y[r] - exact).abs() < 1e-5);
//!     let step = 1.0 / 127.0; // the largest magnitude (1.0) maps to 127
//!     assert!((0..64).all(|c| (wq[r * 64 + c] - w[r * 64 + c]).abs() <= 0.5 * step + 1e-3));
//! }
//! assert_eq!(q.size_bytes(), 2 * 2 * 34); // two blocks of 34 bytes per row
//! # Ok::<(), l2d_quant::QuantError>(())
//! ```
#![warn(missing_docs)]

mod format;
mod kernel;
mod matrix;
mod quantize;

pub use format::{BLOCK, BlockFormat, f16_bits_to_f32};
pub use kernel::{Isa, selected_isa};
pub use matrix::{QuantError, QuantMatrix};
