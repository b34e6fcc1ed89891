//! GGML tensor encodings and their dequantisation to f32.
//!
//! Blocks hold 32 consecutive elements along the fastest dimension (`ne0`):
//! * `Q8_0`: 34 bytes = f16 scale `d` + 32 × i8 `q`; `x = q · d`.
//! * `Q4_0`: 18 bytes = f16 `d` + 16 bytes of nibbles; the low nibbles are elements 0–15,
//!   the high nibbles 16–31; `x = (q − 8) · d`.
//! * `Q4_1`: 20 bytes = f16 `d`, f16 `m` + 16 bytes of nibbles (same order); `x = q · d + m`.
//!
//! The arithmetic (f16 → f32, one multiply, one add, no fused multiply-add) is the one of the
//! `gguf` Python package, so results are bit-identical to it.

use std::fmt;

use burn::tensor::{DType, TensorData};
use half::{bf16, f16};

/// A GGML element encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float (id 0).
    F32,
    /// IEEE half (id 1).
    F16,
    /// 4-bit blocks with a scale (id 2).
    Q4_0,
    /// 4-bit blocks with a scale and a minimum (id 3).
    Q4_1,
    /// 8-bit blocks with a scale (id 8).
    Q8_0,
    /// bfloat16 (id 30).
    BF16,
    /// Any other id: readable as metadata, not dequantised.
    Other(u32),
}

impl GgmlType {
    /// The encoding for a GGML type id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The GGML type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// `(elements per block, bytes per block)`, for the types whose layout is known
    /// (also some that are not dequantised here, so that their extent can be checked).
    pub fn block(self) -> Option<(u64, u64)> {
        Some(match self.id() {
            0 => (1, 4),
            1 | 30 => (1, 2),
            2 => (32, 18),
            3 => (32, 20),
            6 => (32, 22),     // Q5_0
            7 => (32, 24),     // Q5_1
            8 => (32, 34),     // Q8_0
            9 => (32, 36),     // Q8_1
            10 => (256, 84),   // Q2_K
            11 => (256, 110),  // Q3_K
            12 => (256, 144),  // Q4_K
            13 => (256, 176),  // Q5_K
            14 => (256, 210),  // Q6_K
            15 => (256, 292),  // Q8_K
            24 => (1, 1),      // I8
            25 => (1, 2),      // I16
            26 => (1, 4),      // I32
            27 | 28 => (1, 8), // I64, F64
            _ => return None,
        })
    }

    /// The number of bytes `n` elements take, if the layout is known and `n` fills whole
    /// blocks.
    pub fn byte_size(self, n: u64) -> Option<u64> {
        let (block, bytes) = self.block()?;
        n.is_multiple_of(block)
            .then(|| (n / block).checked_mul(bytes))
            .flatten()
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.id() {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            6 => "Q5_0",
            7 => "Q5_1",
            8 => "Q8_0",
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            12 => "Q4_K",
            13 => "Q5_K",
            14 => "Q6_K",
            15 => "Q8_K",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            30 => "BF16",
            id => return write!(f, "ggml type {id}"),
        };
        f.write_str(name)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantises the bytes of a tensor to f32 (row-major, fastest dimension last in PyTorch
/// order); `None` if the type is not one of F32, F16, BF16, Q8_0, Q4_0, Q4_1 or the byte
/// count is not a whole number of blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let (_, block_bytes) = ty.block()?;
    if !(bytes.len() as u64).is_multiple_of(block_bytes) {
        return None;
    }
    Some(match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlType::F16 => bytes.chunks_exact(2).map(|c| f16_at(c, 0)).collect(),
        GgmlType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        GgmlType::Q8_0 => {
            let mut out = Vec::with_capacity(bytes.len() / 34 * 32);
            for block in bytes.chunks_exact(34) {
                let d = f16_at(block, 0);
                out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
            out
        }
        GgmlType::Q4_0 => {
            let mut out = vec![0f32; bytes.len() / 18 * 32];
            for (block, dst) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(block, 0);
                for (j, &q) in block[2..].iter().enumerate() {
                    dst[j] = d * f32::from((q & 0x0F) as i8 - 8);
                    dst[j + 16] = d * f32::from((q >> 4) as i8 - 8);
                }
            }
            out
        }
        GgmlType::Q4_1 => {
            let mut out = vec![0f32; bytes.len() / 20 * 32];
            for (block, dst) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
                let d = f16_at(block, 0);
                let m = f16_at(block, 2);
                for (j, &q) in block[4..].iter().enumerate() {
                    dst[j] = d * f32::from(q & 0x0F) + m;
                    dst[j + 16] = d * f32::from(q >> 4) + m;
                }
            }
            out
        }
        GgmlType::Other(_) => return None,
    })
}

/// The tensor as burn data of the given PyTorch `shape`: F32, F16 and BF16 keep their dtype
/// (the bytes are copied as they are), the quantised types are dequantised to f32. `None`
/// for other types.
pub fn tensor_data(ty: GgmlType, bytes: &[u8], shape: Vec<usize>) -> Option<TensorData> {
    match ty {
        GgmlType::F16 => Some(TensorData::from_bytes_vec(
            le_u16_bytes(bytes),
            shape,
            DType::F16,
        )),
        GgmlType::BF16 => Some(TensorData::from_bytes_vec(
            le_u16_bytes(bytes),
            shape,
            DType::BF16,
        )),
        _ => dequantize(ty, bytes).map(|v| TensorData::new(v, shape)),
    }
}

/// Little-endian 16-bit words re-encoded in native order (a plain copy on little-endian
/// machines).
fn le_u16_bytes(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(2)
        .flat_map(|c| u16::from_le_bytes([c[0], c[1]]).to_ne_bytes())
        .collect()
}
