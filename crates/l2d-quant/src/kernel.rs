//! The products: one output row's dot with a few input rows, block by block, on AVX2 + FMA
//! where the CPU has it and in portable Rust elsewhere.
//!
//! Each block's quants are widened to f32 in registers, multiplied with the input's 32 values
//! and summed into a per-block vector; the block's scale multiplies that vector once into the
//! row's accumulator (and `Q4_1`'s minimum multiplies the input block's sum). Nothing of the
//! matrix is written anywhere. The two variants sum in different orders (FMA against separate
//! multiplies and adds), so they agree to rounding, not to the bit.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::format::{BLOCK, BlockFormat, f16_bits_to_f32};

/// The instruction set a product runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 AVX2 with FMA (explicit intrinsics).
    Avx2,
    /// Portable Rust (auto-vectorised for the target's baseline: SSE2 on x86-64, NEON on
    /// aarch64).
    Portable,
}

/// The best instruction set this CPU has (detected once).
pub fn selected_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    })
}

/// Whether this CPU can run `isa`.
pub(crate) fn available(isa: Isa) -> bool {
    match isa {
        Isa::Portable => true,
        Isa::Avx2 => selected_isa() == Isa::Avx2,
    }
}

/// Lanes of the portable accumulators.
const LANES: usize = 8;

#[inline(always)]
fn half(bytes: &[u8], at: usize) -> f32 {
    f16_bits_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// Portable: `Σ_j w_j x_j` over one row (`sums`: each input block's `Σ x`, for `Q4_1`).
fn dot_portable(format: BlockFormat, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
    let bb = format.block_bytes();
    let mut acc = [0f32; LANES];
    let mut offset = 0f32;
    for (b, (blk, xb)) in row.chunks_exact(bb).zip(x.chunks_exact(BLOCK)).enumerate() {
        let d = half(blk, 0);
        let mut w = [0f32; BLOCK];
        match format {
            BlockFormat::Q8_0 => {
                for (w, &q) in w.iter_mut().zip(&blk[2..34]) {
                    *w = q as i8 as f32;
                }
            }
            BlockFormat::Q4_0 => {
                for (j, &q) in blk[2..18].iter().enumerate() {
                    w[j] = ((q & 0x0f) as i32 - 8) as f32;
                    w[j + 16] = ((q >> 4) as i32 - 8) as f32;
                }
            }
            BlockFormat::Q4_1 => {
                for (j, &q) in blk[4..20].iter().enumerate() {
                    w[j] = (q & 0x0f) as f32;
                    w[j + 16] = (q >> 4) as f32;
                }
                offset += half(blk, 2) * sums[b];
            }
        }
        let mut s = [0f32; LANES];
        for (wc, xc) in w.chunks_exact(LANES).zip(xb.chunks_exact(LANES)) {
            for l in 0..LANES {
                s[l] += wc[l] * xc[l];
            }
        }
        for l in 0..LANES {
            acc[l] += d * s[l];
        }
    }
    acc.iter().sum::<f32>() + offset
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, BlockFormat, half};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Eight bytes at `p` widened to f32 (signed when `SIGNED`), minus `bias`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn widen8<const SIGNED: bool>(bytes: __m128i, bias: __m256i) -> __m256 {
        let i = if SIGNED {
            _mm256_cvtepi8_epi32(bytes)
        } else {
            _mm256_cvtepu8_epi32(bytes)
        };
        _mm256_cvtepi32_ps(_mm256_sub_epi32(i, bias))
    }

    /// `Σ_j w_j x_j` over one row.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `row` holds `x.len() / 32` blocks of `format`, and `sums`
    /// (for `Q4_1`) one value per block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(format: BlockFormat, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        let bb = format.block_bytes();
        let blocks = x.len() / BLOCK;
        debug_assert!(row.len() == blocks * bb);
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0f32;
        let (zero, eight) = (_mm256_setzero_si256(), _mm256_set1_epi32(8));
        let low = _mm_set1_epi8(0x0f);
        for b in 0..blocks {
            let blk = &row[b * bb..(b + 1) * bb];
            // SAFETY: `xp` points at 32 floats of `x` (b < blocks); the byte loads below read
            // inside `blk` (8 or 16 bytes from offsets that leave room in the block).
            let xp = unsafe { x.as_ptr().add(b * BLOCK) };
            let xv = |h: usize| unsafe { _mm256_loadu_ps(xp.add(8 * h)) };
            let d = _mm256_set1_ps(half(blk, 0));
            let mut s;
            match format {
                BlockFormat::Q8_0 => {
                    let q = unsafe { blk.as_ptr().add(2) };
                    let w = |h: usize| unsafe {
                        widen8::<true>(_mm_loadl_epi64(q.add(8 * h) as *const __m128i), zero)
                    };
                    s = _mm256_mul_ps(w(0), xv(0));
                    s = _mm256_fmadd_ps(w(1), xv(1), s);
                    s = _mm256_fmadd_ps(w(2), xv(2), s);
                    s = _mm256_fmadd_ps(w(3), xv(3), s);
                }
                BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                    let (at, bias) = if format == BlockFormat::Q4_0 {
                        (2, eight)
                    } else {
                        offset += half(blk, 2) * sums[b];
                        (4, zero)
                    };
                    let bytes = unsafe { _mm_loadu_si128(blk.as_ptr().add(at) as *const __m128i) };
                    let lo = _mm_and_si128(bytes, low);
                    let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low);
                    let w = |v: __m128i| unsafe { widen8::<false>(v, bias) };
                    s = _mm256_mul_ps(w(lo), xv(0));
                    s = _mm256_fmadd_ps(w(_mm_unpackhi_epi64(lo, lo)), xv(1), s);
                    s = _mm256_fmadd_ps(w(hi), xv(2), s);
                    s = _mm256_fmadd_ps(w(_mm_unpackhi_epi64(hi, hi)), xv(3), s);
                }
            }
            acc = _mm256_fmadd_ps(d, s, acc);
        }
        hsum(acc) + offset
    }
}

/// What one product needs: the matrix bytes and the inputs.
pub(crate) struct Product<'a> {
    pub format: BlockFormat,
    pub data: &'a [u8],
    pub row_bytes: usize,
    pub cols: usize,
    /// `[m, cols]`.
    pub x: &'a [f32],
    /// `[m, cols / 32]`: each input block's sum (`Q4_1` only, else empty).
    pub sums: &'a [f32],
    pub m: usize,
}

/// Rows `row0 ..` of the product into `out`, `[rows of the chunk, m]`.
fn rows_of(isa: Isa, p: &Product<'_>, row0: usize, out: &mut [f32]) {
    let blocks = p.cols / BLOCK;
    for (r, out_row) in out.chunks_exact_mut(p.m).enumerate() {
        let start = (row0 + r) * p.row_bytes;
        let row = &p.data[start..start + p.row_bytes];
        for (i, o) in out_row.iter_mut().enumerate() {
            let x = &p.x[i * p.cols..(i + 1) * p.cols];
            let sums = if p.sums.is_empty() {
                &[][..]
            } else {
                &p.sums[i * blocks..(i + 1) * blocks]
            };
            *o = match isa {
                // SAFETY: `available(Isa::Avx2)` was checked by `QuantMatrix::matmul_with`;
                // `row` holds `blocks` blocks (`row_bytes` = blocks × block bytes), `x` is
                // `cols` long and `sums` has one value per block for Q4_1.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { avx2::dot(p.format, row, x, sums) },
                _ => dot_portable(p.format, row, x, sums),
            };
        }
    }
}

/// Weights below which a product runs on the calling thread (waking workers costs more).
const SERIAL_WEIGHTS: usize = 1 << 16;

/// The product into `out_t`, `[rows, m]` (row-major), rows split over rayon's threads in
/// two tasks per thread (few tasks: a decode step makes hundreds of small products, and each
/// task costs a wake-up).
pub(crate) fn product(isa: Isa, p: &Product<'_>, out_t: &mut [f32]) {
    let rows = out_t.len() / p.m;
    if rows * p.cols * p.m <= SERIAL_WEIGHTS {
        return rows_of(isa, p, 0, out_t);
    }
    let tasks = 2 * rayon::current_num_threads();
    let chunk = rows.div_ceil(tasks).max(8);
    out_t
        .par_chunks_mut(chunk * p.m)
        .enumerate()
        .for_each(|(c, part)| rows_of(isa, p, c * chunk, part));
}
