//! One decode-sized product (one input row) with each block format, against f32 weights and
//! against streaming the same bytes: SmolLM2-135M's MLP up projection (1536 x 576) and its
//! 49152 x 576 head, random weights.
//!
//! `cargo bench -p l2d-quant --bench quant_matvec`. Each format's time is divan's; the
//! instruction set in use is printed first.

use l2d_quant::{BlockFormat, Isa, QuantMatrix, selected_isa};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SHAPES: [(usize, usize); 2] = [(1536, 576), (49152, 576)];

fn values(n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn main() {
    println!("instruction set: {:?}", selected_isa());
    divan::main();
}

#[divan::bench(args = SHAPES, consts = [0, 1, 2])]
fn quantized<const F: usize>(bencher: divan::Bencher, (rows, cols): (usize, usize)) {
    let format = [BlockFormat::Q8_0, BlockFormat::Q4_0, BlockFormat::Q4_1][F];
    let q = QuantMatrix::quantize(format, &values(rows * cols), rows, cols).unwrap();
    let x = values(cols);
    bencher.bench(|| q.matmul(divan::black_box(&x), 1).unwrap());
}

#[divan::bench(args = SHAPES)]
fn portable_q4_1(bencher: divan::Bencher, (rows, cols): (usize, usize)) {
    let q = QuantMatrix::quantize(BlockFormat::Q4_1, &values(rows * cols), rows, cols).unwrap();
    let x = values(cols);
    bencher.bench(|| {
        q.matmul_with(Isa::Portable, divan::black_box(&x), 1)
            .unwrap()
    });
}
