//! Properties of any matrix: products against float64 dots of the dequantized weights, the
//! quantization error bound of each format, and typed refusals of bad shapes and bytes.

use l2d_quant::{BlockFormat, Isa, QuantError, QuantMatrix};
use proptest::prelude::*;

const FORMATS: [BlockFormat; 3] = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1];

fn check_product(q: &QuantMatrix, x: &[f32], m: usize) {
    let (rows, cols) = (q.rows(), q.cols());
    let w = q.dequantize();
    for isa in [Isa::Portable, Isa::Avx2] {
        match q.matmul_with(isa, x, m) {
            Ok(y) => check_against_f64(&w, rows, cols, x, m, &y),
            Err(QuantError::IsaUnavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

fn check_against_f64(w: &[f32], rows: usize, cols: usize, x: &[f32], m: usize, y: &[f32]) {
    for i in 0..m {
        for r in 0..rows {
            let (mut exact, mut scale) = (0f64, 0f64);
            for c in 0..cols {
                let p = w[r * cols + c] as f64 * x[i * cols + c] as f64;
                exact += p;
                scale += p.abs();
            }
            let err = (y[i * rows + r] as f64 - exact).abs();
            assert!(
                err <= 4e-7 * scale * (cols as f64).sqrt() + 1e-30,
                "{err} vs {scale}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn products_and_rounding(
        format in 0usize..3,
        rows in 1usize..80,
        blocks in 1usize..6,
        m in 1usize..5,
        seed in any::<u64>(),
        magnitude in -6i32..6,
    ) {
        let format = FORMATS[format];
        let cols = blocks * 32;
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        };
        let scale = 10f32.powi(magnitude);
        let values: Vec<f32> = (0..rows * cols).map(|_| next() * scale).collect();
        let x: Vec<f32> = (0..m * cols).map(|_| next()).collect();
        let q = match QuantMatrix::quantize(format, &values, rows, cols) {
            Ok(q) => q,
            Err(QuantError::NonFiniteScale { .. }) => {
                // Only where a scale or minimum exceeds a half's range (Q4_1 stores the
                // minimum itself).
                prop_assert!(values.iter().any(|v| v.abs() > 65504.0));
                return Ok(());
            }
            Err(e) => panic!("{e}"),
        };
        check_product(&q, &x, m);
        // Single weights decode as the whole matrix does.
        let all = q.dequantize();
        for (r, c) in [(0, 0), (rows - 1, cols - 1), (rows / 2, cols / 3), (rows / 3, 17)] {
            prop_assert_eq!(q.get(r, c), all[r * cols + c]);
        }
        // Each weight within a step of its value (half a step where nothing is clamped),
        // a step being the block's range over the levels, plus the half-precision scale's
        // rounding: relative 2^-11, or absolute 2^-25 where the scale is a subnormal half,
        // times at most 128 levels.
        let w = q.dequantize();
        for (b, (wb, vb)) in w.chunks(32).zip(values.chunks(32)).enumerate() {
            let amax = vb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let (lo, hi) = vb.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
            let bound = match format {
                BlockFormat::Q8_0 => 0.5 * amax / 127.0,
                BlockFormat::Q4_0 => amax / 8.0,
                BlockFormat::Q4_1 => 0.5 * (hi - lo) / 15.0,
            } + amax * 2e-3 + 128.0 * 2f32.powi(-25);
            for (a, v) in wb.iter().zip(vb) {
                prop_assert!((a - v).abs() <= bound, "block {b}: {a} vs {v} (bound {bound})");
            }
        }
    }
}

#[test]
fn bad_shapes_and_bytes_are_typed_errors() {
    let f = BlockFormat::Q8_0;
    assert_eq!(
        QuantMatrix::from_bytes(f, 2, 40, vec![0; 68]).unwrap_err(),
        QuantError::ColumnsNotBlockMultiple {
            format: f,
            cols: 40
        }
    );
    assert!(matches!(
        QuantMatrix::from_bytes(f, 2, 32, vec![0; 67]).unwrap_err(),
        QuantError::ByteLength {
            expected: 68,
            found: 67,
            ..
        }
    ));
    // A shape whose byte count overflows is refused, not allocated.
    assert!(matches!(
        QuantMatrix::from_bytes(f, usize::MAX, 64, vec![]).unwrap_err(),
        QuantError::ByteLength { .. }
    ));
    // An infinite scale in row 1, block 0 (f16 0x7c00).
    let mut bytes = vec![0u8; 68];
    bytes[34..36].copy_from_slice(&0x7c00u16.to_le_bytes());
    assert_eq!(
        QuantMatrix::from_bytes(f, 2, 32, bytes).unwrap_err(),
        QuantError::NonFiniteScale {
            format: f,
            row: 1,
            block: 0
        }
    );
    // A NaN minimum of Q4_1.
    let mut bytes = vec![0u8; 20];
    bytes[2..4].copy_from_slice(&0x7e00u16.to_le_bytes());
    assert!(matches!(
        QuantMatrix::from_bytes(BlockFormat::Q4_1, 1, 32, bytes).unwrap_err(),
        QuantError::NonFiniteScale { .. }
    ));
    let mut v = vec![0.5f32; 64];
    v[33] = f32::NAN;
    assert_eq!(
        QuantMatrix::quantize(f, &v, 1, 64).unwrap_err(),
        QuantError::NonFiniteValue { index: 33 }
    );
    let q = QuantMatrix::quantize(f, &[0.5; 64], 2, 32).unwrap();
    assert_eq!(
        q.matmul(&[1.0; 33], 1).unwrap_err(),
        QuantError::Length {
            expected: 32,
            found: 33
        }
    );
    // Zero rows of input: an empty product.
    assert!(q.matmul(&[], 0).unwrap().is_empty());
}

#[test]
fn a_hand_made_q4_1_block_decodes_by_the_format_rule() {
    // d = 0.5, m = -1; byte j holds weight j (low nibble = j) and weight j + 16 (high = 15 - j).
    let mut block = Vec::new();
    block.extend_from_slice(&0x3800u16.to_le_bytes()); // 0.5
    block.extend_from_slice(&0xbc00u16.to_le_bytes()); // -1.0
    block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let q = QuantMatrix::from_bytes(BlockFormat::Q4_1, 1, 32, block).unwrap();
    let w = q.dequantize();
    for j in 0..16 {
        assert_eq!(w[j], 0.5 * j as f32 - 1.0);
        assert_eq!(w[j + 16], 0.5 * (15 - j) as f32 - 1.0);
    }
}
