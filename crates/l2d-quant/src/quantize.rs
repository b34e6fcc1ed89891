//! Quantizers: llama.cpp's reference rounding for each format (`quantize_row_*_ref`).

use crate::format::{BLOCK, BlockFormat, f32_to_f16_bits};
use crate::matrix::{QuantError, QuantMatrix};

fn push_half(out: &mut Vec<u8>, x: f32) {
    out.extend_from_slice(&f32_to_f16_bits(x).to_le_bytes());
}

fn block_q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    push_half(out, d);
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

fn block_q4_0(x: &[f32], out: &mut Vec<u8>) {
    // The value of largest magnitude, with its sign, maps to -8.
    let max = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    push_half(out, d);
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    out.extend((0..BLOCK / 2).map(|j| q(x[j]) | (q(x[j + BLOCK / 2]) << 4)));
}

fn block_q4_1(x: &[f32], out: &mut Vec<u8>) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    push_half(out, d);
    push_half(out, min);
    let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
    out.extend((0..BLOCK / 2).map(|j| q(x[j]) | (q(x[j + BLOCK / 2]) << 4)));
}

impl QuantMatrix {
    /// Quantizes `values` (`[rows, cols]`, row-major) to `format` block by block, with
    /// llama.cpp's reference rounding. Values must be finite, and `cols` a multiple of 32.
    pub fn quantize(
        format: BlockFormat,
        values: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self, QuantError> {
        if !cols.is_multiple_of(BLOCK) {
            return Err(QuantError::ColumnsNotBlockMultiple { format, cols });
        }
        let expected = rows.saturating_mul(cols);
        if values.len() != expected {
            return Err(QuantError::Length {
                expected,
                found: values.len(),
            });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(QuantError::NonFiniteValue { index });
        }
        let mut data = Vec::with_capacity(values.len() / BLOCK * format.block_bytes());
        for block in values.chunks_exact(BLOCK) {
            match format {
                BlockFormat::Q8_0 => block_q8_0(block, &mut data),
                BlockFormat::Q4_0 => block_q4_0(block, &mut data),
                BlockFormat::Q4_1 => block_q4_1(block, &mut data),
            }
        }
        // Scales of finite values are finite unless they overflow a half (|w| > 65504·127):
        // refused by the check in `from_bytes`.
        QuantMatrix::from_bytes(format, rows, cols, data)
    }
}
