//! GGUF's block formats: 32 weights per block, a half-precision scale (and minimum).

/// Weights per block in every format here.
pub const BLOCK: usize = 32;

/// A GGUF block format.
///
/// - `Q8_0`: 34 bytes = f16 scale `d` + 32 × i8 `q`; `w = d·q`.
/// - `Q4_0`: 18 bytes = f16 `d` + 16 bytes of nibbles; byte `j`'s low nibble is weight `j`,
///   its high nibble weight `j + 16`; `w = d·(q − 8)`.
/// - `Q4_1`: 20 bytes = f16 `d`, f16 `m` + 16 bytes of nibbles (same order); `w = d·q + m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// 8-bit, symmetric.
    Q8_0,
    /// 4-bit, symmetric around 8.
    Q4_0,
    /// 4-bit with a minimum.
    Q4_1,
}

impl BlockFormat {
    /// Bytes per block of 32 weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
        }
    }

    /// The format of a GGML type id (8, 2, 3), if it is one of these.
    pub fn from_ggml_id(id: u32) -> Option<Self> {
        match id {
            8 => Some(BlockFormat::Q8_0),
            2 => Some(BlockFormat::Q4_0),
            3 => Some(BlockFormat::Q4_1),
            _ => None,
        }
    }

    /// The GGML type id.
    pub const fn ggml_id(self) -> u32 {
        match self {
            BlockFormat::Q8_0 => 8,
            BlockFormat::Q4_0 => 2,
            BlockFormat::Q4_1 => 3,
        }
    }

    /// Bytes of the half-precision header (scale, and minimum for `Q4_1`).
    pub(crate) const fn header_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_1 => 4,
            _ => 2,
        }
    }
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BlockFormat::Q8_0 => "q8_0",
            BlockFormat::Q4_0 => "q4_0",
            BlockFormat::Q4_1 => "q4_1",
        })
    }
}

impl std::str::FromStr for BlockFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" => Ok(BlockFormat::Q8_0),
            "q4_0" => Ok(BlockFormat::Q4_0),
            "q4_1" => Ok(BlockFormat::Q4_1),
            _ => Err(format!(
                "unknown block format `{s}`: expected q8_0, q4_0 or q4_1"
            )),
        }
    }
}

/// An IEEE half's bits as f32: exact for every finite half (normal or subnormal), branch-free.
/// Infinities and NaNs come out finite and wrong; [`QuantMatrix`](crate::QuantMatrix) refuses
/// them when it is built.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    // Exponent and mantissa moved into f32's fields; the exponent bias differs by
    // 127 - 15 = 112, fixed by one exact multiply (which also normalises subnormals).
    let magnitude = f32::from_bits(((h as u32) & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(magnitude.to_bits() | sign)
}

/// `f32 -> f16` bits, rounding to nearest even (for the quantizers; scales are finite).
pub(crate) fn f32_to_f16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = x.abs();
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < f32::from_bits(0x3880_0000) {
        // Subnormal half (below 2^-14): a multiple of 2^-24, rounded to nearest even.
        let m = (a * f32::from_bits(0x4b80_0000)).round_ties_even(); // a * 2^24
        return sign | m as u16;
    }
    let e = ((a.to_bits() >> 23) as i32) - 127 + 15;
    let mant = a.to_bits() & 0x7f_ffff;
    let mut h = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1; // may carry into the exponent, which is the right rounding
    }
    sign | h as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference conversion through the formula `(-1)^s 2^(e-15) (1 + m/1024)`.
    fn reference(h: u16) -> f64 {
        let s = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        let e = ((h >> 10) & 0x1f) as i32;
        let m = (h & 0x3ff) as f64;
        if e == 0 {
            s * m * 2f64.powi(-24)
        } else {
            s * (1.0 + m / 1024.0) * 2f64.powi(e - 15)
        }
    }

    #[test]
    fn every_finite_half_converts_exactly_and_back() {
        for h in 0..=u16::MAX {
            if (h >> 10) & 0x1f == 0x1f {
                continue; // inf / nan
            }
            let f = f16_bits_to_f32(h);
            assert_eq!(f as f64, reference(h), "bits {h:#06x}");
            let back = f32_to_f16_bits(f);
            // -0 and +0 both round-trip to themselves.
            assert_eq!(back, h, "round trip of {h:#06x}");
        }
    }

    #[test]
    fn rounding_to_half_is_to_nearest_even() {
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(f32_to_f16_bits(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3·2^-11 lies halfway between 1 + 2^-10 and 1 + 2^-9: to even (1 + 2^-9).
        assert_eq!(f32_to_f16_bits(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16_bits(1e6), 0x7c00);
    }

    #[test]
    fn names_parse_and_print() {
        for f in [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1] {
            assert_eq!(f.to_string().parse::<BlockFormat>().unwrap(), f);
            assert_eq!(BlockFormat::from_ggml_id(f.ggml_id()), Some(f));
        }
        assert!("q5_k".parse::<BlockFormat>().unwrap_err().contains("q5_k"));
    }
}
