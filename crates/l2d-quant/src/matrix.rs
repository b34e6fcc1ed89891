//! [`QuantMatrix`]: a matrix of quantized blocks, validated once, multiplied many times.

use crate::format::{BLOCK, BlockFormat, f16_bits_to_f32};
use crate::kernel::{self, Isa, Product};

/// Why a matrix or a product was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// Rows of a block format hold whole blocks.
    #[error("{format} needs a column count divisible by 32, got {cols}")]
    ColumnsNotBlockMultiple {
        /// The format.
        format: BlockFormat,
        /// The columns asked for.
        cols: usize,
    },
    /// The bytes do not hold `rows × cols` weights of the format.
    #[error("{format} data for {rows} x {cols} needs {expected} bytes, got {found}")]
    ByteLength {
        /// The format.
        format: BlockFormat,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// A block's scale or minimum is an infinity or NaN.
    #[error("{format} block {block} of row {row} has a non-finite scale or minimum")]
    NonFiniteScale {
        /// The format.
        format: BlockFormat,
        /// The row.
        row: usize,
        /// The block within the row.
        block: usize,
    },
    /// A value to quantize is an infinity or NaN.
    #[error("value {index} to quantize is not finite")]
    NonFiniteValue {
        /// Its index (row-major).
        index: usize,
    },
    /// Inputs whose length is not `m × cols` (or values not `rows × cols`).
    #[error("expected {expected} values, got {found}")]
    Length {
        /// Values the shapes need.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The instruction set asked for is not on this CPU.
    #[error("this CPU cannot run {0:?}")]
    IsaUnavailable(Isa),
}

/// A `rows × cols` matrix of quantized blocks in GGUF's layout: row-major, each row
/// `cols / 32` blocks. Rows are a linear layer's outputs, columns its inputs, as in a
/// checkpoint's `[out, in]` weight.
#[derive(Clone, PartialEq, Eq)]
pub struct QuantMatrix {
    format: BlockFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QuantMatrix({}, {} x {}, {} bytes)",
            self.format,
            self.rows,
            self.cols,
            self.data.len()
        )
    }
}

impl QuantMatrix {
    /// A matrix of the blocks in `data` (a GGUF tensor's bytes), checked: whole blocks per
    /// row, the exact byte count, finite scales and minima. Nothing is copied.
    pub fn from_bytes(
        format: BlockFormat,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
    ) -> Result<Self, QuantError> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(QuantError::ColumnsNotBlockMultiple { format, cols });
        }
        let expected = rows
            .checked_mul(cols / BLOCK)
            .and_then(|b| b.checked_mul(format.block_bytes()))
            .ok_or(QuantError::ByteLength {
                format,
                rows,
                cols,
                expected: usize::MAX,
                found: data.len(),
            })?;
        if data.len() != expected {
            return Err(QuantError::ByteLength {
                format,
                rows,
                cols,
                expected,
                found: data.len(),
            });
        }
        let (bb, blocks) = (format.block_bytes(), cols / BLOCK);
        for (i, blk) in data.chunks_exact(bb).enumerate() {
            for h in blk[..format.header_bytes()].chunks_exact(2) {
                if (u16::from_le_bytes([h[0], h[1]]) >> 10) & 0x1f == 0x1f {
                    return Err(QuantError::NonFiniteScale {
                        format,
                        row: i / blocks,
                        block: i % blocks,
                    });
                }
            }
        }
        Ok(QuantMatrix {
            format,
            rows,
            cols,
            data,
        })
    }

    /// A matrix of random blocks (for benchmarks and tests of memory and speed at sizes
    /// whose f32 weights would not fit): every block's scale is `scale` (its minimum
    /// `-8·scale` for `Q4_1`), its quants uniform, drawn from `seed`. Never holds an f32
    /// copy.
    ///
    /// # Panics
    /// If `cols` is not a multiple of 32 or `scale` is not a finite half.
    pub fn random(format: BlockFormat, rows: usize, cols: usize, seed: u64, scale: f32) -> Self {
        assert!(cols.is_multiple_of(BLOCK), "cols {cols}");
        let d = crate::format::f32_to_f16_bits(scale).to_le_bytes();
        let m = crate::format::f32_to_f16_bits(-8.0 * scale).to_le_bytes();
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let (bb, hb) = (format.block_bytes(), format.header_bytes());
        let mut data = vec![0u8; rows * (cols / BLOCK) * bb];
        for blk in data.chunks_exact_mut(bb) {
            blk[..2].copy_from_slice(&d);
            if hb == 4 {
                blk[2..4].copy_from_slice(&m);
            }
            for chunk in blk[hb..].chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let bytes = state.to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }
        Self::from_bytes(format, rows, cols, data).expect("finite scales")
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
    }

    /// The blocks, in GGUF's layout.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.format.block_bytes()
    }

    /// The weight at `(r, c)` as f32 (decoded alone; for sampling a few values).
    ///
    /// # Panics
    /// If `r >= rows` or `c >= cols`.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        assert!(r < self.rows && c < self.cols, "({r}, {c}) of {self:?}");
        let bb = self.format.block_bytes();
        let start = r * self.row_bytes() + (c / BLOCK) * bb;
        let blk = &self.data[start..start + bb];
        let d = f16_bits_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
        let j = c % BLOCK;
        match self.format {
            BlockFormat::Q8_0 => d * (blk[2 + j] as i8 as f32),
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let at = self.format.header_bytes() + j % 16;
                let q = if j < 16 { blk[at] & 0x0f } else { blk[at] >> 4 };
                if self.format == BlockFormat::Q4_0 {
                    d * (q as i32 - 8) as f32
                } else {
                    d * q as f32 + f16_bits_to_f32(u16::from_le_bytes([blk[2], blk[3]]))
                }
            }
        }
    }

    /// Row `r`'s weights as f32, into `out` (`cols` long).
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() != cols`.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert!(
            r < self.rows && out.len() == self.cols,
            "row {r} of {self:?}"
        );
        let row = &self.data[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        let bb = self.format.block_bytes();
        for (blk, o) in row.chunks_exact(bb).zip(out.chunks_exact_mut(BLOCK)) {
            let d = f16_bits_to_f32(u16::from_le_bytes([blk[0], blk[1]]));
            match self.format {
                BlockFormat::Q8_0 => {
                    for (o, &q) in o.iter_mut().zip(&blk[2..]) {
                        *o = d * (q as i8 as f32);
                    }
                }
                BlockFormat::Q4_0 => {
                    for (j, &q) in blk[2..].iter().enumerate() {
                        o[j] = d * ((q & 0x0f) as i32 - 8) as f32;
                        o[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                    }
                }
                BlockFormat::Q4_1 => {
                    let m = f16_bits_to_f32(u16::from_le_bytes([blk[2], blk[3]]));
                    for (j, &q) in blk[4..].iter().enumerate() {
                        o[j] = d * (q & 0x0f) as f32 + m;
                        o[j + 16] = d * (q >> 4) as f32 + m;
                    }
                }
            }
        }
    }

    /// Every weight as f32, `[rows, cols]` row-major (rows split over rayon's threads).
    pub fn dequantize(&self) -> Vec<f32> {
        use rayon::prelude::*;
        let mut out = vec![0f32; self.rows * self.cols];
        if self.cols > 0 {
            out.par_chunks_mut(self.cols)
                .enumerate()
                .for_each(|(r, o)| self.dequantize_row(r, o));
        }
        out
    }

    /// `x · Wᵀ` for `m` input rows: `x` is `[m, cols]`, the result `[m, rows]` (row-major),
    /// with the best instruction set of this CPU ([`selected_isa`](crate::selected_isa)).
    ///
    /// Meant for a few rows (decoding); each row re-reads the matrix's blocks from cache, so
    /// for long prompts [`dequantize`](Self::dequantize) into a GEMM is faster.
    pub fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>, QuantError> {
        self.matmul_with(kernel::selected_isa(), x, m)
    }

    /// [`matmul`](Self::matmul) with a given instruction set (benchmarks and tests compare
    /// them; they agree to rounding).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize) -> Result<Vec<f32>, QuantError> {
        if !kernel::available(isa) {
            return Err(QuantError::IsaUnavailable(isa));
        }
        let expected = m.saturating_mul(self.cols);
        if x.len() != expected {
            return Err(QuantError::Length {
                expected,
                found: x.len(),
            });
        }
        if m == 0 || self.rows == 0 {
            return Ok(vec![0f32; m * self.rows]);
        }
        let sums: Vec<f32> = if self.format == BlockFormat::Q4_1 {
            x.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect()
        } else {
            Vec::new()
        };
        let p = Product {
            format: self.format,
            data: &self.data,
            row_bytes: self.row_bytes(),
            cols: self.cols,
            x,
            sums: &sums,
            m,
        };
        let mut out_t = vec![0f32; self.rows * m];
        kernel::product(isa, &p, &mut out_t);
        if m == 1 {
            return Ok(out_t);
        }
        let mut out = vec![0f32; m * self.rows];
        for (r, row) in out_t.chunks_exact(m).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                out[i * self.rows + r] = v;
            }
        }
        Ok(out)
    }
}
