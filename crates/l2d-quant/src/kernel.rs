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
    /// x86-64 AVX2 with FMA and F16C (explicit intrinsics).
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
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
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

    use super::{BLOCK, BlockFormat};

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// The block's half-precision header at `p` (2 halves: scale and minimum) as f32 lanes
    /// 0 and 1.
    ///
    /// # Safety
    /// `p` points at 4 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn halves(p: *const u8) -> __m128 {
        // SAFETY: 4 bytes at `p` (the caller's contract); unaligned read.
        let bits = unsafe { (p as *const i32).read_unaligned() };
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
    }

    /// The block's 16 bytes of nibbles as four vectors of 8 f32 quants (weights 0–7, 8–15,
    /// 16–23, 24–31), less `bias`.
    ///
    /// # Safety
    /// `p` points at 16 readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8, bias: __m256) -> [__m256; 4] {
        // SAFETY: 16 bytes at `p` (the caller's contract).
        let bytes = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let low = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(bytes, low);
        let hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), low);
        let f = |v: __m128i| _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), bias);
        [
            f(lo),
            f(_mm_unpackhi_epi64(lo, lo)),
            f(hi),
            f(_mm_unpackhi_epi64(hi, hi)),
        ]
    }

    /// `Σ_j w_j x_j` over one row.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `row` holds `x.len() / 32` blocks of `format`, and
    /// `sums` (for `Q4_1`) one value per block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(format: BlockFormat, row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        // SAFETY: forwarded contract; one loop per format, so no branch inside it.
        unsafe {
            match format {
                BlockFormat::Q8_0 => dot_format::<0>(row, x, sums),
                BlockFormat::Q4_0 => dot_format::<1>(row, x, sums),
                BlockFormat::Q4_1 => dot_format::<2>(row, x, sums),
            }
        }
    }

    /// [`dot`] for format `F` (0: Q8_0, 1: Q4_0, 2: Q4_1).
    ///
    /// # Safety
    /// As [`dot`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_format<const F: u8>(row: &[u8], x: &[f32], sums: &[f32]) -> f32 {
        let format = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1][F as usize];
        let bb = format.block_bytes();
        let blocks = x.len() / BLOCK;
        assert!(row.len() >= blocks * bb && (format != BlockFormat::Q4_1 || sums.len() >= blocks));
        let mut offset = _mm_setzero_ps();
        let eight = _mm256_set1_ps(8.0);
        let zero = _mm256_setzero_ps();
        // Block `b`'s scale (broadcast) and its `Σ q x` per lane.
        let mut block = |b: usize| {
            // SAFETY: block `b` lies inside `row` and its 32 inputs inside `x` (asserted
            // above); every load below reads within them.
            unsafe {
                let blk = row.as_ptr().add(b * bb);
                let xp = x.as_ptr().add(b * BLOCK);
                let xv = |h: usize| _mm256_loadu_ps(xp.add(8 * h));
                let head = halves(blk);
                let w = match F {
                    0 => {
                        let q = |h: usize| {
                            let v = _mm_loadl_epi64(blk.add(2 + 8 * h) as *const __m128i);
                            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
                        };
                        [q(0), q(1), q(2), q(3)]
                    }
                    1 => nibbles(blk.add(2), eight),
                    _ => {
                        // m · Σx of the block, in lane 1 of `offset`.
                        let sum = _mm_set1_ps(*sums.get_unchecked(b));
                        offset = _mm_fmadd_ps(head, sum, offset);
                        nibbles(blk.add(4), zero)
                    }
                };
                let mut s = _mm256_mul_ps(w[0], xv(0));
                s = _mm256_fmadd_ps(w[1], xv(1), s);
                s = _mm256_fmadd_ps(w[2], xv(2), s);
                s = _mm256_fmadd_ps(w[3], xv(3), s);
                (_mm256_broadcastss_ps(head), s)
            }
        };
        // Two accumulators (even and odd blocks) so consecutive blocks do not wait on each
        // other's fused multiply-add.
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = 0;
        while b + 1 < blocks {
            let (d0, s0) = block(b);
            let (d1, s1) = block(b + 1);
            acc0 = _mm256_fmadd_ps(d0, s0, acc0);
            acc1 = _mm256_fmadd_ps(d1, s1, acc1);
            b += 2;
        }
        if b < blocks {
            let (d0, s0) = block(b);
            acc0 = _mm256_fmadd_ps(d0, s0, acc0);
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let minimums = _mm_cvtss_f32(_mm_shuffle_ps(offset, offset, 1));
        hsum(acc) + minimums
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
