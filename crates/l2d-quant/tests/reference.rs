//! The crate against the `gguf` package (llama.cpp's reference algorithms in numpy):
//! `tests/fixtures/reference.safetensors`, made by `scripts/make_quant_fixtures.py`.

use l2d_quant::{BlockFormat, Isa, QuantError, QuantMatrix};
use safetensors::SafeTensors;

const FORMATS: [(BlockFormat, &str); 3] = [
    (BlockFormat::Q8_0, "q8_0"),
    (BlockFormat::Q4_0, "q4_0"),
    (BlockFormat::Q4_1, "q4_1"),
];

struct Fixture {
    bytes: Vec<u8>,
}

impl Fixture {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/reference.safetensors"
        );
        Fixture {
            bytes: std::fs::read(path).expect("the reference fixture"),
        }
    }

    fn raw(&self, name: &str) -> (Vec<u8>, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        (t.data().to_vec(), t.shape().to_vec())
    }

    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let (b, s) = self.raw(name);
        let v = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (v, s)
    }

    fn f64s(&self, name: &str) -> Vec<f64> {
        let (b, _) = self.raw(name);
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

#[test]
fn quantization_gives_the_reference_bytes() {
    let f = Fixture::load();
    let (values, shape) = f.f32s("values");
    for (format, name) in FORMATS {
        let q = QuantMatrix::quantize(format, &values, shape[0], shape[1]).unwrap();
        let (blocks, _) = f.raw(&format!("{name}.blocks"));
        assert_eq!(q.as_bytes(), &blocks[..], "{name}");
    }
}

#[test]
fn dequantization_equals_the_reference() {
    let f = Fixture::load();
    let (_, shape) = f.f32s("values");
    for (format, name) in FORMATS {
        let (blocks, _) = f.raw(&format!("{name}.blocks"));
        let q = QuantMatrix::from_bytes(format, shape[0], shape[1], blocks).unwrap();
        let (deq, _) = f.f32s(&format!("{name}.dequantized"));
        assert_eq!(q.dequantize(), deq, "{name}");
    }
}

#[test]
fn products_match_the_float64_reference_with_each_instruction_set() {
    let f = Fixture::load();
    let (_, shape) = f.f32s("values");
    let (x, xs) = f.f32s("x");
    let m = xs[0];
    for (format, name) in FORMATS {
        let (blocks, _) = f.raw(&format!("{name}.blocks"));
        let q = QuantMatrix::from_bytes(format, shape[0], shape[1], blocks).unwrap();
        let want = f.f64s(&format!("{name}.product"));
        let (deq, _) = f.f32s(&format!("{name}.dequantized"));
        for isa in [Isa::Portable, Isa::Avx2] {
            let got = match q.matmul_with(isa, &x, m) {
                Ok(y) => y,
                Err(QuantError::IsaUnavailable(_)) => continue,
                Err(e) => panic!("{e}"),
            };
            for i in 0..m {
                for r in 0..shape[0] {
                    // f32 rounding bound: |Σ w x| error ≤ cols·ε·Σ|w x|.
                    let scale: f64 = (0..shape[1])
                        .map(|c| (deq[r * shape[1] + c] as f64 * x[i * shape[1] + c] as f64).abs())
                        .sum();
                    let err = (got[i * shape[0] + r] as f64 - want[i * shape[0] + r]).abs();
                    assert!(
                        err <= 1e-6 * scale + 1e-12,
                        "{name} row {r} input {i}: {} vs {} (scale {scale})",
                        got[i * shape[0] + r],
                        want[i * shape[0] + r]
                    );
                }
            }
        }
    }
}
